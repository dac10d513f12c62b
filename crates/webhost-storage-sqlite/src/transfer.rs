//! A tenant's rows out and in for a move (`webhost_storage::transfer`):
//! keyset reads on the reader pool, and upserts in one transaction on the
//! writer connection. Every statement is scoped to the tenant, and an
//! upsert never overwrites a row of the same key held by another tenant.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};
use webhost_domain::{DeviceId, ShortText, TenantId, VehicleId};
use webhost_geofence::VehicleState;
use webhost_storage::fetch_limit;
use webhost_storage::transfer::{
    chunk_size, EventRecord, GeofenceRecord, ImportBatch, PositionRecord, TrackerStateRecord,
    VehicleRecord, WebhookAttemptRecord, WebhookRecord,
};
use webhost_storage::{
    Chunk, Cursor, Record, StorageError, StorageResult, TransferTable, WebhookAttempt,
};

use crate::cell::{attributes_json, device_conflict, vehicle_from_row, VEHICLE_COLUMNS};
use crate::fleet::{
    event_from_row, geofence_from_row, json_error, EVENT_COLUMNS, GEOFENCE_COLUMNS,
};
use crate::positions::{attributes_text, position_from_row, FIX_COLUMNS};
use crate::webhooks::{
    attempt_from_row, events_text, webhook_from_row, ATTEMPT_COLUMNS, WEBHOOK_COLUMNS,
};
use crate::{corrupt, map_err, parse_uuid, unexpected, SqliteCellStore};

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// A write that matched no row of the tenant: the key is another tenant's.
fn held_elsewhere(table: TransferTable, key: impl std::fmt::Display) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!(
        "{table} {key} is held by another tenant of this cell (or its parent is not this \
         tenant's); nothing was imported"
    ))
}

fn written(
    done: sqlx::sqlite::SqliteQueryResult,
    table: TransferTable,
    key: impl std::fmt::Display,
) -> StorageResult<u64> {
    match done.rows_affected() {
        0 => Err(held_elsewhere(table, key)),
        n => Ok(n),
    }
}

impl SqliteCellStore {
    pub(crate) async fn export_chunk_impl(
        &self,
        tenant: TenantId,
        table: TransferTable,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<Chunk> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let size = chunk_size(limit);
        let fetch = fetch_limit(size);
        let tenant_id = tenant.to_string();
        let after_id = || -> StorageResult<String> {
            Ok(after
                .map(|c| c.id(table))
                .transpose()?
                .map(|id| id.to_string())
                .unwrap_or_default())
        };
        let after_time_id = || -> StorageResult<(Option<i64>, String)> {
            Ok(match after.map(|c| c.time_id(table)).transpose()? {
                Some((time, id)) => (Some(millis(time)), id.to_string()),
                None => (None, String::new()),
            })
        };
        let since = history_since.map(millis).unwrap_or(i64::MIN);
        let reader = &self.pools.reader;
        let records = match table {
            TransferTable::Vehicles => sqlx::query(&format!(
                "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Vehicle(vehicle_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Geofences => sqlx::query(&format!(
                "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Geofence(geofence_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Webhooks => sqlx::query(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Webhook(webhook_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::WebhookAttempts => sqlx::query(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE tenant_id = ? \
                 AND id > ? ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::WebhookAttempt(attempt_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::TrackerStates => sqlx::query(
                "SELECT vehicle_id, state, last_seen, online, updated_at FROM vehicle_states \
                 WHERE tenant_id = ? AND vehicle_id > ? ORDER BY vehicle_id LIMIT ?",
            )
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(unexpected)?;
                let state: VehicleState =
                    serde_json::from_str(&state).map_err(|_| corrupt("vehicle state", &state))?;
                let last_seen = row
                    .try_get::<Option<i64>, _>("last_seen")
                    .map_err(unexpected)?
                    .map(|ms| {
                        DateTime::from_timestamp_millis(ms)
                            .ok_or_else(|| corrupt("time", &ms.to_string()))
                    })
                    .transpose()?;
                Ok(Record::TrackerState(TrackerStateRecord {
                    vehicle_id: VehicleId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
                    )?),
                    state,
                    last_seen,
                    online: row.try_get("online").map_err(unexpected)?,
                    updated_at: webhost_storage::transfer::micros(
                        row.try_get("updated_at").map_err(unexpected)?,
                    ),
                }))
            })
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::LatestPositions => sqlx::query(&format!(
                "SELECT vehicle_id, {FIX_COLUMNS} FROM latest_positions WHERE tenant_id = ? \
                 AND vehicle_id > ? ORDER BY vehicle_id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::LatestPosition(position_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Positions => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT vehicle_id, {FIX_COLUMNS} FROM positions WHERE tenant_id = ?1 \
                     AND time >= ?2 AND (?3 IS NULL OR time > ?3 OR (time = ?3 AND vehicle_id > ?4)) \
                     ORDER BY time, vehicle_id LIMIT ?5"
                ))
                .bind(&tenant_id)
                .bind(since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(reader)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Position(position_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?
            }
            TransferTable::Events => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS}, created_at FROM events WHERE tenant_id = ?1 \
                     AND time >= ?2 AND (?3 IS NULL OR time > ?3 OR (time = ?3 AND id > ?4)) \
                     ORDER BY time, id LIMIT ?5"
                ))
                .bind(&tenant_id)
                .bind(since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(reader)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| {
                    Ok(Record::Event(EventRecord::of(
                        event_from_row(row)?,
                        row.try_get("created_at").map_err(unexpected)?,
                    )))
                })
                .collect::<StorageResult<Vec<_>>>()?
            }
        };
        Ok(Chunk::from_overfetch(records, size))
    }

    pub(crate) async fn import_impl(
        &self,
        tenant: TenantId,
        records: &[Record],
    ) -> StorageResult<u64> {
        let batch = ImportBatch::of(records);
        // The single writer connection: nothing interleaves with the batch.
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let t = tenant.to_string();
        let mut n = 0;
        for r in &batch.vehicles {
            n += upsert_vehicle(&mut tx, &t, r).await?;
        }
        for r in &batch.geofences {
            n += upsert_geofence(&mut tx, &t, r).await?;
        }
        for r in &batch.webhooks {
            n += upsert_webhook(&mut tx, &t, r).await?;
        }
        for r in &batch.webhook_attempts {
            n += upsert_attempt(&mut tx, &t, r).await?;
        }
        for r in &batch.tracker_states {
            n += upsert_state(&mut tx, &t, r).await?;
        }
        for r in &batch.latest_positions {
            n += upsert_position(&mut tx, &t, r, TransferTable::LatestPositions).await?;
        }
        for r in &batch.positions {
            n += upsert_position(&mut tx, &t, r, TransferTable::Positions).await?;
        }
        for r in &batch.events {
            n += upsert_event(&mut tx, &t, r).await?;
        }
        tx.commit().await.map_err(unexpected)?;
        Ok(n)
    }
}

async fn upsert_vehicle(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &VehicleRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicles (id, tenant_id, name, device_id, plate, \"group\", attributes, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, device_id = excluded.device_id, \
         plate = excluded.plate, \"group\" = excluded.\"group\", \
         attributes = excluded.attributes, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE vehicles.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(r.device_id.as_ref().map(DeviceId::as_str))
    .bind(r.plate.as_ref().map(ShortText::as_str))
    .bind(r.group.as_ref().map(ShortText::as_str))
    .bind(attributes_json(&r.attributes)?)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_err(e, device_conflict(r.device_id.as_ref())))?;
    written(done, TransferTable::Vehicles, r.id)
}

async fn upsert_geofence(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &GeofenceRecord,
) -> StorageResult<u64> {
    let c = r.columns()?;
    let done = sqlx::query(
        "INSERT INTO geofences (id, tenant_id, name, kind, geometry, center_lat, center_lon, \
         radius_m, min_lat, min_lon, max_lat, max_lon, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
         geometry = excluded.geometry, center_lat = excluded.center_lat, \
         center_lon = excluded.center_lon, radius_m = excluded.radius_m, \
         min_lat = excluded.min_lat, min_lon = excluded.min_lon, max_lat = excluded.max_lat, \
         max_lon = excluded.max_lon, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE geofences.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(c.kind)
    .bind(c.geometry.as_ref().map(ToString::to_string))
    .bind(c.center_lat)
    .bind(c.center_lon)
    .bind(c.radius_m)
    .bind(c.bbox.min_lat)
    .bind(c.bbox.min_lon)
    .bind(c.bbox.max_lat)
    .bind(c.bbox.max_lon)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Geofences, r.id)
}

async fn upsert_webhook(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &WebhookRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, enabled, description, secret, \
         consecutive_failures, disabled_reason, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, events = excluded.events, \
         enabled = excluded.enabled, description = excluded.description, \
         secret = excluded.secret, consecutive_failures = excluded.consecutive_failures, \
         disabled_reason = excluded.disabled_reason, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE webhooks.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(&r.url)
    .bind(events_text(&r.events))
    .bind(r.enabled)
    .bind(r.description.as_ref().map(ShortText::as_str))
    .bind(&r.secret)
    .bind(i64::from(r.consecutive_failures))
    .bind(&r.disabled_reason)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Webhooks, r.id)
}

async fn upsert_attempt(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &WebhookAttemptRecord,
) -> StorageResult<u64> {
    let a = WebhookAttempt::from(r.clone());
    // Only under one of the tenant's own webhooks.
    let done = sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (tenant_id, {ATTEMPT_COLUMNS}) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?3 AND tenant_id = ?1) \
         ON CONFLICT (id) DO UPDATE SET webhook_id = excluded.webhook_id, \
         delivery_id = excluded.delivery_id, event_id = excluded.event_id, \
         event_type = excluded.event_type, attempt = excluded.attempt, \
         status_code = excluded.status_code, error = excluded.error, \
         duration_ms = excluded.duration_ms, at = excluded.at \
         WHERE webhook_deliveries.tenant_id = excluded.tenant_id"
    ))
    .bind(tenant)
    .bind(a.id.to_string())
    .bind(a.webhook_id.to_string())
    .bind(a.delivery_id.to_string())
    .bind(a.event_id.to_string())
    .bind(a.event_type.as_str())
    .bind(i64::from(a.attempt))
    .bind(a.status_code.map(i64::from))
    .bind(&a.error)
    .bind(i64::from(a.duration_ms))
    .bind(a.at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::WebhookAttempts, a.id)
}

async fn upsert_state(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &TrackerStateRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicle_states (tenant_id, vehicle_id, state, last_seen, online, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, vehicle_id) DO UPDATE SET state = excluded.state, \
         last_seen = excluded.last_seen, online = excluded.online, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(r.vehicle_id.to_string())
    .bind(serde_json::to_string(&r.state).map_err(json_error)?)
    .bind(r.last_seen.map(millis))
    .bind(r.online)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::TrackerStates, r.vehicle_id)
}

async fn upsert_position(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &PositionRecord,
    table: TransferTable,
) -> StorageResult<u64> {
    let (name, key) = match table {
        TransferTable::LatestPositions => ("latest_positions", "vehicle_id"),
        _ => ("positions", "vehicle_id, time"),
    };
    let f = &r.fix;
    let done = sqlx::query(&format!(
        "INSERT INTO {name} (vehicle_id, time, tenant_id, lat, lon, speed, heading, altitude, \
         accuracy, valid, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT ({key}) DO UPDATE SET time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes WHERE {name}.tenant_id = excluded.tenant_id"
    ))
    .bind(r.vehicle_id.to_string())
    .bind(millis(r.time))
    .bind(tenant)
    .bind(f.lat)
    .bind(f.lon)
    .bind(f.speed)
    .bind(f.heading)
    .bind(f.altitude)
    .bind(f.accuracy)
    .bind(f.valid)
    .bind(attributes_text(&f.attributes))
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, table, r.vehicle_id)
}

async fn upsert_event(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &EventRecord,
) -> StorageResult<u64> {
    let f = r.position.as_ref();
    let done = sqlx::query(
        "INSERT INTO events (id, tenant_id, type, vehicle_id, geofence_id, time, lat, lon, \
         speed, heading, altitude, accuracy, valid, attributes, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET type = excluded.type, vehicle_id = excluded.vehicle_id, \
         geofence_id = excluded.geofence_id, time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes, created_at = excluded.created_at \
         WHERE events.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.kind.as_str())
    .bind(r.vehicle_id.to_string())
    .bind(r.geofence_id.map(|g| g.to_string()))
    .bind(millis(r.time))
    .bind(f.map(|f| f.lat))
    .bind(f.map(|f| f.lon))
    .bind(f.and_then(|f| f.speed))
    .bind(f.and_then(|f| f.heading))
    .bind(f.and_then(|f| f.altitude))
    .bind(f.and_then(|f| f.accuracy))
    .bind(f.map(|f| f.valid))
    .bind(f.and_then(|f| attributes_text(&f.attributes)))
    .bind(r.created_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Events, r.id)
}
