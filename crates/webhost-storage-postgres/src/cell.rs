use async_trait::async_trait;
use chrono::Utc;
use chrono::{DateTime, NaiveDate};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use webhost_domain::Position;
use webhost_domain::{
    Attributes, DeviceId, GeofenceId, PlanName, ShortText, TenantId, VehicleId, VehicleName,
};
use webhost_storage::{
    fetch_limit, AttemptVerdict, CreateWebhookError, NewWebhook, Quota, TenantUsageRecord,
    UsageCount, Webhook, WebhookAttempt, WebhookAttemptId, WebhookId, WebhookPatch,
};
use webhost_storage::{
    CellStats, CellStore, CellTenant, Conflict, CreateGeofenceError, Event, EventCursor,
    EventQuery, Geofence, GeofencePatch, HistoryQuery, IngestBatch, NewGeofence, NewVehicle, Page,
    PageRequest, PositionBucket, SilentVehicle, StorageError, StorageResult, Vehicle, VehiclePatch,
    VehicleRef, VehicleTracking,
};
use webhost_storage::{ChangeChunk, Chunk, Cursor, Record, TransferTable};

use crate::{corrupt, map_err, open_pool, unexpected};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/cell");

/// A cell's store on PostgreSQL.
#[derive(Clone)]
pub struct PgCellStore {
    pub(crate) pool: PgPool,
    /// Days whose partition is known to exist.
    pub(crate) partitions:
        std::sync::Arc<std::sync::Mutex<std::collections::HashSet<chrono::NaiveDate>>>,
}

impl PgCellStore {
    pub async fn open(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let store = Self {
            pool: open_pool(url, pool_size, &MIGRATOR).await?,
            partitions: Default::default(),
        };
        // Today and the week ahead, so the first writes do not wait on DDL.
        let today = Utc::now().date_naive();
        store
            .ensure_partitions((0..8).map(|d| today + chrono::TimeDelta::days(d)))
            .await?;
        Ok(store)
    }
}

pub(crate) const VEHICLE_COLUMNS: &str =
    "id, name, device_id, plate, \"group\", attributes, created_at, updated_at";

pub(crate) fn vehicle_from_row(row: &PgRow) -> StorageResult<Vehicle> {
    let attributes: serde_json::Value = row.try_get("attributes").map_err(unexpected)?;
    let attributes = match attributes {
        serde_json::Value::Object(map) => map,
        other => return Err(corrupt("attributes", &other.to_string())),
    };
    Ok(Vehicle {
        id: VehicleId::from_uuid(row.try_get("id").map_err(unexpected)?),
        name: VehicleName::from_trusted(row.try_get::<String, _>("name").map_err(unexpected)?),
        device_id: row
            .try_get::<Option<String>, _>("device_id")
            .map_err(unexpected)?
            .map(DeviceId::from_trusted),
        plate: row
            .try_get::<Option<String>, _>("plate")
            .map_err(unexpected)?
            .map(ShortText::from_trusted),
        group: row
            .try_get::<Option<String>, _>("group")
            .map_err(unexpected)?
            .map(ShortText::from_trusted),
        attributes: Attributes::from_trusted(attributes),
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

pub(crate) fn device_conflict(
    device: Option<&DeviceId>,
) -> impl FnOnce(&str) -> Option<Conflict> + '_ {
    move |constraint| {
        (constraint == "vehicles_device_id_key")
            .then(|| Conflict::DeviceTaken(device.map(ToString::to_string).unwrap_or_default()))
    }
}

pub(crate) fn attributes_json(attributes: &Attributes) -> serde_json::Value {
    serde_json::Value::Object(attributes.as_map().clone())
}

#[async_trait]
impl CellStore for PgCellStore {
    async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    async fn put_tenant(&self, tenant: CellTenant) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO tenants (id, plan, max_vehicles, retention_days, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, \
             max_vehicles = excluded.max_vehicles, retention_days = excluded.retention_days, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant.id.as_uuid())
        .bind(tenant.plan.as_str())
        .bind(tenant.max_vehicles as i32)
        .bind(tenant.retention_days as i32)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(unexpected)?;
        Ok(())
    }

    async fn tenant(&self, id: TenantId) -> StorageResult<CellTenant> {
        let row =
            sqlx::query("SELECT plan, max_vehicles, retention_days FROM tenants WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(unexpected)?
                .ok_or(StorageError::NotFound("tenant"))?;
        Ok(CellTenant {
            id,
            plan: PlanName::from_trusted(row.try_get::<String, _>("plan").map_err(unexpected)?),
            max_vehicles: row.try_get::<i32, _>("max_vehicles").map_err(unexpected)? as u32,
            retention_days: row
                .try_get::<i32, _>("retention_days")
                .map_err(unexpected)? as u32,
        })
    }

    async fn delete_tenant(&self, id: TenantId) -> StorageResult<()> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        for table in [
            "positions",
            "latest_positions",
            "events",
            "vehicle_states",
            "geofences",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?;
        }
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        // The deletes above left tombstones; a tenant gone needs none.
        sqlx::query("DELETE FROM transfer_tombstones WHERE tenant_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(())
    }

    async fn create_vehicle(
        &self,
        tenant: TenantId,
        vehicle: NewVehicle,
    ) -> StorageResult<Vehicle> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // Locking the tenant row serialises concurrent creates of one tenant,
        // so count-then-insert cannot overshoot the plan's limit.
        let limit: i32 =
            sqlx::query_scalar("SELECT max_vehicles FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unexpected)?
                .ok_or(StorageError::NotFound("tenant"))?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vehicles WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?;
        Quota::vehicles(count, limit as u32)?;
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "INSERT INTO vehicles (id, tenant_id, name, device_id, plate, \"group\", attributes, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             RETURNING {VEHICLE_COLUMNS}"
        ))
        .bind(vehicle.id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(vehicle.name.as_str())
        .bind(vehicle.device_id.as_ref().map(DeviceId::as_str))
        .bind(vehicle.plate.as_ref().map(ShortText::as_str))
        .bind(vehicle.group.as_ref().map(ShortText::as_str))
        .bind(attributes_json(&vehicle.attributes))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_err(e, device_conflict(vehicle.device_id.as_ref())))?;
        let created = vehicle_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(created)
    }

    async fn vehicles(
        &self,
        tenant: TenantId,
        page: PageRequest<VehicleId>,
    ) -> StorageResult<Page<Vehicle, VehicleId>> {
        let limit = page.limit.max(1);
        let rows = sqlx::query(&format!(
            "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE tenant_id = $1 \
             AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_uuid())
        .bind(page.after.map(|c| c.as_uuid()))
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        let data = rows
            .iter()
            .map(vehicle_from_row)
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(data, limit, |v| v.id))
    }

    async fn vehicle(&self, tenant: TenantId, id: VehicleId) -> StorageResult<Vehicle> {
        let row = sqlx::query(&format!(
            "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("vehicle"))?;
        vehicle_from_row(&row)
    }

    async fn update_vehicle(
        &self,
        tenant: TenantId,
        id: VehicleId,
        patch: VehiclePatch,
    ) -> StorageResult<Vehicle> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let row = sqlx::query(&format!(
            "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("vehicle"))?;
        let merged = patch.merge(vehicle_from_row(&row)?);
        let row = sqlx::query(&format!(
            "UPDATE vehicles SET name = $1, device_id = $2, plate = $3, \"group\" = $4, \
             attributes = $5, updated_at = $6 WHERE tenant_id = $7 AND id = $8 \
             RETURNING {VEHICLE_COLUMNS}"
        ))
        .bind(merged.name.as_str())
        .bind(merged.device_id.as_ref().map(DeviceId::as_str))
        .bind(merged.plate.as_ref().map(ShortText::as_str))
        .bind(merged.group.as_ref().map(ShortText::as_str))
        .bind(attributes_json(&merged.attributes))
        .bind(Utc::now())
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_err(e, device_conflict(merged.device_id.as_ref())))?;
        let updated = vehicle_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(updated)
    }

    async fn count_vehicles(&self, tenant: TenantId) -> StorageResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vehicles WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(unexpected)?;
        Ok(count as u64)
    }

    async fn delete_vehicle(&self, tenant: TenantId, id: VehicleId) -> StorageResult<Vehicle> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let row = sqlx::query(&format!(
            "DELETE FROM vehicles WHERE tenant_id = $1 AND id = $2 RETURNING {VEHICLE_COLUMNS}"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("vehicle"))?;
        for table in ["positions", "latest_positions"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND vehicle_id = $2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        }
        crate::fleet::delete_vehicle_tracking(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(unexpected)?;
        vehicle_from_row(&row)
    }

    async fn stats(&self) -> StorageResult<CellStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tenants) AS tenants, \
             (SELECT COUNT(*) FROM vehicles) AS vehicles",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unexpected)?;
        Ok(CellStats {
            tenants: row.try_get::<i64, _>("tenants").map_err(unexpected)? as u64,
            vehicles: row.try_get::<i64, _>("vehicles").map_err(unexpected)? as u64,
        })
    }

    async fn tenants(&self) -> StorageResult<Vec<CellTenant>> {
        let rows =
            sqlx::query("SELECT id, plan, max_vehicles, retention_days FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(CellTenant {
                    id: TenantId::from_uuid(row.try_get("id").map_err(unexpected)?),
                    plan: PlanName::from_trusted(
                        row.try_get::<String, _>("plan").map_err(unexpected)?,
                    ),
                    max_vehicles: row.try_get::<i32, _>("max_vehicles").map_err(unexpected)? as u32,
                    retention_days: row
                        .try_get::<i32, _>("retention_days")
                        .map_err(unexpected)? as u32,
                })
            })
            .collect()
    }

    async fn expire_positions(
        &self,
        cutoffs: &[(TenantId, DateTime<Utc>)],
    ) -> StorageResult<webhost_storage::RetentionReport> {
        self.expire_positions_impl(cutoffs).await
    }

    async fn prepare_ahead(&self, now: DateTime<Utc>) -> StorageResult<()> {
        let today = now.date_naive();
        self.ensure_partitions((0..8).map(|d| today + chrono::TimeDelta::days(d)))
            .await
    }

    async fn purge_webhook_attempts(&self, before: DateTime<Utc>) -> StorageResult<u64> {
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE id IN \
                 (SELECT id FROM webhook_deliveries WHERE at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(5_000_i64)
            .execute(&self.pool)
            .await
            .map_err(unexpected)?;
            purged += done.rows_affected();
            if done.rows_affected() < 5_000 {
                return Ok(purged);
            }
        }
    }

    async fn add_usage(&self, day: NaiveDate, counts: &[UsageCount]) -> StorageResult<()> {
        self.add_usage_impl(day, counts).await
    }

    async fn usage(&self, since: NaiveDate) -> StorageResult<Vec<TenantUsageRecord>> {
        self.usage_impl(since).await
    }

    async fn vehicle_refs(&self, tenant: TenantId) -> StorageResult<Vec<VehicleRef>> {
        let rows =
            sqlx::query("SELECT id, device_id FROM vehicles WHERE tenant_id = $1 ORDER BY id")
                .bind(tenant.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(VehicleRef {
                    id: VehicleId::from_uuid(row.try_get("id").map_err(unexpected)?),
                    device_id: row
                        .try_get::<Option<String>, _>("device_id")
                        .map_err(unexpected)?
                        .map(DeviceId::from_trusted),
                })
            })
            .collect()
    }

    async fn vehicles_with_ids(
        &self,
        tenant: TenantId,
        ids: &[VehicleId],
    ) -> StorageResult<Vec<Vehicle>> {
        self.vehicles_with_ids_impl(tenant, ids).await
    }

    async fn insert_positions(&self, batch: IngestBatch<'_>) -> StorageResult<Vec<bool>> {
        self.insert_positions_impl(batch).await
    }

    async fn latest_positions(&self, tenant: TenantId) -> StorageResult<Vec<Position>> {
        self.latest_positions_impl(tenant).await
    }

    async fn positions(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        query: HistoryQuery,
    ) -> StorageResult<Page<Position, DateTime<Utc>>> {
        self.positions_impl(tenant, vehicle, query).await
    }

    async fn position_buckets(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_secs: u32,
    ) -> StorageResult<Vec<PositionBucket>> {
        self.position_buckets_impl(tenant, vehicle, from, to, bucket_secs)
            .await
    }

    async fn create_geofence(
        &self,
        tenant: TenantId,
        geofence: NewGeofence,
    ) -> Result<Geofence, CreateGeofenceError> {
        self.create_geofence_impl(tenant, geofence).await
    }

    async fn geofences(&self, tenant: TenantId) -> StorageResult<Vec<Geofence>> {
        self.geofences_impl(tenant).await
    }

    async fn geofence(&self, tenant: TenantId, id: GeofenceId) -> StorageResult<Geofence> {
        self.geofence_impl(tenant, id).await
    }

    async fn update_geofence(
        &self,
        tenant: TenantId,
        id: GeofenceId,
        patch: GeofencePatch,
    ) -> StorageResult<Geofence> {
        self.update_geofence_impl(tenant, id, patch).await
    }

    async fn delete_geofence(&self, tenant: TenantId, id: GeofenceId) -> StorageResult<()> {
        self.delete_geofence_impl(tenant, id).await
    }

    async fn events(
        &self,
        tenant: TenantId,
        query: EventQuery,
    ) -> StorageResult<Page<Event, EventCursor>> {
        self.events_impl(tenant, query).await
    }

    async fn vehicle_tracking(&self, tenant: TenantId) -> StorageResult<Vec<VehicleTracking>> {
        self.vehicle_tracking_impl(tenant).await
    }

    async fn silent_vehicles(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StorageResult<Vec<SilentVehicle>> {
        self.silent_vehicles_impl(before, limit).await
    }

    async fn create_webhook(
        &self,
        tenant: TenantId,
        webhook: NewWebhook,
    ) -> Result<Webhook, CreateWebhookError> {
        self.create_webhook_impl(tenant, webhook).await
    }

    async fn webhooks(&self, tenant: TenantId) -> StorageResult<Vec<Webhook>> {
        self.webhooks_impl(tenant).await
    }

    async fn webhook(&self, tenant: TenantId, id: WebhookId) -> StorageResult<Webhook> {
        self.webhook_impl(tenant, id).await
    }

    async fn update_webhook(
        &self,
        tenant: TenantId,
        id: WebhookId,
        patch: WebhookPatch,
    ) -> StorageResult<Webhook> {
        self.update_webhook_impl(tenant, id, patch).await
    }

    async fn delete_webhook(&self, tenant: TenantId, id: WebhookId) -> StorageResult<()> {
        self.delete_webhook_impl(tenant, id).await
    }

    async fn record_webhook_attempt(
        &self,
        tenant: TenantId,
        attempt: WebhookAttempt,
        verdict: AttemptVerdict,
    ) -> StorageResult<Webhook> {
        self.record_webhook_attempt_impl(tenant, attempt, verdict)
            .await
    }

    async fn webhook_attempts(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        page: PageRequest<WebhookAttemptId>,
    ) -> StorageResult<Page<WebhookAttempt, WebhookAttemptId>> {
        self.webhook_attempts_impl(tenant, webhook, page).await
    }

    async fn export_chunk(
        &self,
        tenant: TenantId,
        table: TransferTable,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<Chunk> {
        self.export_chunk_impl(tenant, table, after, limit, history_since)
            .await
    }

    async fn import(&self, tenant: TenantId, records: &[Record]) -> StorageResult<u64> {
        self.import_impl(tenant, records).await
    }

    async fn change_watermark(&self) -> StorageResult<u64> {
        self.change_watermark_impl().await
    }

    async fn export_changes(
        &self,
        tenant: TenantId,
        table: TransferTable,
        since: u64,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<ChangeChunk> {
        self.export_changes_impl(tenant, table, since, after, limit, history_since)
            .await
    }

    async fn remove_records(
        &self,
        tenant: TenantId,
        table: TransferTable,
        keys: &[Cursor],
    ) -> StorageResult<u64> {
        self.remove_records_impl(tenant, table, keys).await
    }

    async fn set_read_only(&self, tenant: TenantId, read_only: bool) -> StorageResult<()> {
        self.set_read_only_impl(tenant, read_only).await
    }

    async fn read_only_tenants(&self) -> StorageResult<Vec<TenantId>> {
        self.read_only_tenants_impl().await
    }
}
