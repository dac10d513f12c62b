//! A cell's data. Every method on tenant data takes the tenant: no query
//! crosses tenants. The two cell-wide exceptions are maintenance and read
//! no tenant's data beyond ids: `stats` (counts) and `silent_vehicles` (the
//! offline sweep).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use webhost_domain::{
    Attributes, DeviceId, GeofenceId, PlanName, Position, ShortText, TenantId, Usage, VehicleId,
    VehicleName,
};

use crate::fleet::{
    CreateGeofenceError, Event, EventCursor, EventQuery, Geofence, GeofencePatch, IngestBatch,
    NewGeofence, SilentVehicle, VehicleTracking,
};
use crate::transfer::{Chunk, Cursor, Record, TenantDigest, TransferTable};
use crate::webhooks::{
    AttemptVerdict, CreateWebhookError, NewWebhook, Webhook, WebhookAttempt, WebhookAttemptId,
    WebhookId, WebhookPatch,
};
use crate::{JobStore, StorageResult};

/// What a cell knows of a tenant: enough to enforce the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellTenant {
    pub id: TenantId,
    pub plan: PlanName,
    pub max_vehicles: u32,
    pub retention_days: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Vehicle {
    pub id: VehicleId,
    pub name: VehicleName,
    pub device_id: Option<DeviceId>,
    pub plate: Option<ShortText>,
    pub group: Option<ShortText>,
    pub attributes: Attributes,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct NewVehicle {
    pub id: VehicleId,
    pub name: VehicleName,
    pub device_id: Option<DeviceId>,
    pub plate: Option<ShortText>,
    pub group: Option<ShortText>,
    pub attributes: Attributes,
}

/// A partial update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct VehiclePatch {
    pub name: Option<VehicleName>,
    pub device_id: Option<Option<DeviceId>>,
    pub plate: Option<Option<ShortText>>,
    pub group: Option<Option<ShortText>>,
    pub attributes: Option<Attributes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Items strictly after this cursor.
    pub after: Option<C>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<T, C> {
    pub data: Vec<T>,
    pub next_cursor: Option<C>,
}

/// A position to store, with its tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPosition {
    pub tenant_id: TenantId,
    pub position: Position,
}

/// A slice of a vehicle's history, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryQuery {
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// Positions strictly after this time (a `next_cursor`).
    pub after: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// Averages over one time bucket of a vehicle's history.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PositionBucket {
    /// Start of the bucket.
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// Average km/h over the positions that reported a speed.
    pub speed: Option<f64>,
    pub max_speed: Option<f64>,
    pub count: u64,
}

/// A vehicle's identity, for resolving references in a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct VehicleRef {
    pub id: VehicleId,
    pub device_id: Option<DeviceId>,
}

/// What a retention run removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Whole partitions dropped (PostgreSQL); their rows are counted below.
    pub partitions_dropped: u64,
    pub positions_removed: u64,
    pub events_removed: u64,
    /// Finished jobs past their keeping time (`policy::KEEP_*`).
    pub jobs_purged: u64,
    /// Webhook delivery attempts past their keeping time.
    pub deliveries_purged: u64,
}

/// What a cell counted for one tenant since its last flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageCount {
    pub tenant_id: TenantId,
    pub positions_ingested: u64,
    pub api_requests: u64,
}

/// One tenant's measured use, as a cell reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantUsageRecord {
    pub tenant_id: TenantId,
    pub usage: Usage,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CellStats {
    pub tenants: u64,
    pub vehicles: u64,
}

/// A cell's store is also its job queue (`jobs` table in the cell's own
/// database): webhook deliveries are enqueued in the same transaction as
/// the events they carry (`IngestBatch::jobs`).
#[async_trait]
pub trait CellStore: JobStore + Send + Sync + 'static {
    async fn ping(&self) -> StorageResult<()>;

    /// Creates the tenant or updates its plan limits.
    async fn put_tenant(&self, tenant: CellTenant) -> StorageResult<()>;
    async fn tenant(&self, id: TenantId) -> StorageResult<CellTenant>;
    /// Removes the tenant and all of its data.
    async fn delete_tenant(&self, id: TenantId) -> StorageResult<()>;

    /// `Conflict::VehicleLimit` when the plan's limit is reached,
    /// `Conflict::DeviceTaken` when the device is in use in this cell.
    async fn create_vehicle(&self, tenant: TenantId, vehicle: NewVehicle)
        -> StorageResult<Vehicle>;
    async fn vehicles(
        &self,
        tenant: TenantId,
        page: PageRequest<VehicleId>,
    ) -> StorageResult<Page<Vehicle, VehicleId>>;
    async fn vehicle(&self, tenant: TenantId, id: VehicleId) -> StorageResult<Vehicle>;
    async fn update_vehicle(
        &self,
        tenant: TenantId,
        id: VehicleId,
        patch: VehiclePatch,
    ) -> StorageResult<Vehicle>;
    async fn count_vehicles(&self, tenant: TenantId) -> StorageResult<u64>;
    /// Returns what was deleted, so its device can be released.
    async fn delete_vehicle(&self, tenant: TenantId, id: VehicleId) -> StorageResult<Vehicle>;

    async fn stats(&self) -> StorageResult<CellStats>;

    /// Every vehicle of the tenant with its device, for resolving batches.
    async fn vehicle_refs(&self, tenant: TenantId) -> StorageResult<Vec<VehicleRef>>;

    /// The tenant's vehicles among `ids` (missing ones left out), for the
    /// ingest writer: their attributes hold the speed limit.
    async fn vehicles_with_ids(
        &self,
        tenant: TenantId,
        ids: &[VehicleId],
    ) -> StorageResult<Vec<Vehicle>>;

    /// Stores positions (of any tenants), the events they triggered and the
    /// vehicles' tracking states, all in one transaction, so concurrent
    /// requests share one commit and positions never exist without their
    /// events. A position whose (vehicle, time) is already stored, or
    /// repeats an earlier one of the same call, is skipped: the answer says,
    /// per input position, whether it was newly stored. Valid positions newer
    /// than a vehicle's latest become its latest. Events are inserted as
    /// given (their ids are new); states replace the stored ones.
    async fn insert_positions(&self, batch: IngestBatch<'_>) -> StorageResult<Vec<bool>>;
    /// The latest valid position of every vehicle of the tenant that has one.
    async fn latest_positions(&self, tenant: TenantId) -> StorageResult<Vec<Position>>;
    async fn positions(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        query: HistoryQuery,
    ) -> StorageResult<Page<Position, DateTime<Utc>>>;
    /// Averages per `bucket_secs` over `[from, to)`, oldest first, empty
    /// buckets left out.
    async fn position_buckets(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_secs: u32,
    ) -> StorageResult<Vec<PositionBucket>>;

    /// `CreateGeofenceError::LimitReached` when the tenant already has
    /// [`MAX_GEOFENCES`](crate::MAX_GEOFENCES) (checked atomically with the
    /// insert).
    async fn create_geofence(
        &self,
        tenant: TenantId,
        geofence: NewGeofence,
    ) -> Result<Geofence, CreateGeofenceError>;
    /// Every geofence of the tenant (at most `MAX_GEOFENCES`), by id.
    async fn geofences(&self, tenant: TenantId) -> StorageResult<Vec<Geofence>>;
    async fn geofence(&self, tenant: TenantId, id: GeofenceId) -> StorageResult<Geofence>;
    async fn update_geofence(
        &self,
        tenant: TenantId,
        id: GeofenceId,
        patch: GeofencePatch,
    ) -> StorageResult<Geofence>;
    /// Its past events stay (with its id).
    async fn delete_geofence(&self, tenant: TenantId, id: GeofenceId) -> StorageResult<()>;

    /// The tenant's events matching `query`, oldest first (time, then id).
    async fn events(
        &self,
        tenant: TenantId,
        query: EventQuery,
    ) -> StorageResult<Page<Event, EventCursor>>;

    /// The tracking state of every vehicle of the tenant that has one.
    async fn vehicle_tracking(&self, tenant: TenantId) -> StorageResult<Vec<VehicleTracking>>;
    /// Vehicles (of every tenant: this is the cell's maintenance sweep)
    /// marked online whose newest position is older than `before`; at most
    /// `limit`, the longest silent first.
    async fn silent_vehicles(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StorageResult<Vec<SilentVehicle>>;

    /// `CreateWebhookError::LimitReached` when the tenant already has
    /// [`MAX_WEBHOOKS`](crate::MAX_WEBHOOKS) (checked atomically with the
    /// insert).
    async fn create_webhook(
        &self,
        tenant: TenantId,
        webhook: NewWebhook,
    ) -> Result<Webhook, CreateWebhookError>;
    /// Every webhook of the tenant (at most `MAX_WEBHOOKS`), by id.
    async fn webhooks(&self, tenant: TenantId) -> StorageResult<Vec<Webhook>>;
    async fn webhook(&self, tenant: TenantId, id: WebhookId) -> StorageResult<Webhook>;
    /// Enabling clears `disabled_reason` and the failure count.
    async fn update_webhook(
        &self,
        tenant: TenantId,
        id: WebhookId,
        patch: WebhookPatch,
    ) -> StorageResult<Webhook>;
    /// Its logged attempts go with it.
    async fn delete_webhook(&self, tenant: TenantId, id: WebhookId) -> StorageResult<()>;
    /// Logs an attempt of the webhook (`attempt.webhook_id`) and applies
    /// `verdict` to its failure count, in one transaction; returns the
    /// webhook after it (disabled, when the verdict made it so).
    async fn record_webhook_attempt(
        &self,
        tenant: TenantId,
        attempt: WebhookAttempt,
        verdict: AttemptVerdict,
    ) -> StorageResult<Webhook>;
    /// The webhook's logged attempts, newest first; `NotFound` for a webhook
    /// that is not the tenant's.
    async fn webhook_attempts(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        page: PageRequest<WebhookAttemptId>,
    ) -> StorageResult<Page<WebhookAttempt, WebhookAttemptId>>;

    /// Every tenant of the cell with its plan limits.
    async fn tenants(&self) -> StorageResult<Vec<CellTenant>>;
    /// Removes, per listed tenant, the positions and events older than its
    /// cutoff (exactly: `time < cutoff`), without long locks: whole
    /// partitions go only when every tenant of the cell is done with them,
    /// the rest in small batches. Tenants not listed keep everything.
    async fn expire_positions(
        &self,
        cutoffs: &[(TenantId, DateTime<Utc>)],
    ) -> StorageResult<RetentionReport>;
    /// Readies storage for the days ahead of `now` (PostgreSQL: creates the
    /// next week's partitions).
    async fn prepare_ahead(&self, now: DateTime<Utc>) -> StorageResult<()>;
    /// Deletes webhook delivery attempts logged before `before`. Returns
    /// how many went.
    async fn purge_webhook_attempts(&self, before: DateTime<Utc>) -> StorageResult<u64>;

    /// Adds `counts` to each tenant's tally of `day`. Counts of tenants no
    /// longer on the cell are dropped.
    async fn add_usage(&self, day: NaiveDate, counts: &[UsageCount]) -> StorageResult<()>;
    /// Every tenant of the cell with its use: positions and bytes stored
    /// now, positions ingested and API requests on the days from `since`
    /// (inclusive). A tenant that did nothing is listed with zeros.
    async fn usage(&self, since: NaiveDate) -> StorageResult<Vec<TenantUsageRecord>>;

    /// Up to `limit` (at most [`MAX_CHUNK`](crate::transfer::MAX_CHUNK))
    /// of the tenant's rows of `table` strictly after `after`, in the
    /// table's key order ([`Record::cursor`]), as full row images; `next`
    /// is set when more follow. `history_since` keeps only positions and
    /// events with `time >= since`; other tables are exported whole.
    /// `NotFound("tenant")` when the tenant is not on this cell.
    async fn export_chunk(
        &self,
        tenant: TenantId,
        table: TransferTable,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<Chunk>;

    /// Upserts `records` as the tenant's rows by primary key, all in one
    /// transaction: importing the same records again leaves the same rows.
    /// Rows are written as given (times included); plan limits are not
    /// checked (a copy creates nothing new). The tenant must exist here
    /// (`put_tenant`, i.e. `PUT /internal/v1/tenants/{id}`, first):
    /// `NotFound("tenant")` otherwise. A row of the same key held by another
    /// tenant is never touched; a device taken by another tenant's vehicle
    /// is `Conflict::DeviceTaken`. Returns the records written (repeats of
    /// one key within `records` count once, the last one wins).
    async fn import(&self, tenant: TenantId, records: &[Record]) -> StorageResult<u64>;

    /// The cell's change clock now (SPEC §6 catch-up). Every change to a
    /// [`TransferTable`] row (insert, update, delete) carries a sequence
    /// number; a watermark `w` read here guarantees that every change
    /// committed after this call has a sequence at or above `w`, whatever
    /// transactions were in flight — so `export_changes(since = w)` later
    /// misses nothing. A change committed before may be at or above `w` too
    /// (PostgreSQL, while an older transaction is open anywhere on the
    /// server) and is then returned again: harmless, imports are upserts.
    /// (PostgreSQL: the writing transaction's id and the snapshot's `xmin`;
    /// SQLite: a clock bumped under its single writer, exact.) Deletes
    /// made by retention (`expire_positions`, `purge_webhook_attempts`) are
    /// not tracked: a move holds the tenant's retention off.
    async fn change_watermark(&self) -> StorageResult<u64>;

    /// The tenant's rows of `table` changed at or after `since` (a value of
    /// [`CellStore::change_watermark`]) as full row images, and (on the first
    /// page, `after == None`) the keys deleted at or after `since` and
    /// absent now; at most `limit` (≤ [`MAX_CHUNK`](crate::transfer::MAX_CHUNK))
    /// records a page, `next` set when more follow. Rows deleted through
    /// their parent's cascade (a vehicle's positions, tracker state, latest
    /// position and events; a webhook's attempts) need no key of their own:
    /// the parent's deletion removes them on the receiving side too.
    /// `history_since` keeps only positions and events with `time >= since`.
    /// `NotFound("tenant")` when the tenant is not on this cell.
    async fn export_changes(
        &self,
        tenant: TenantId,
        table: TransferTable,
        since: u64,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<crate::transfer::ChangeChunk>;

    /// Deletes the tenant's rows of `table` with these keys (a missing key
    /// is a no-op), with what cascades from them, in one transaction.
    /// Answers the rows deleted.
    async fn remove_records(
        &self,
        tenant: TenantId,
        table: TransferTable,
        keys: &[Cursor],
    ) -> StorageResult<u64>;

    /// Marks the tenant read-only on this cell (`true`) or writable again,
    /// persisted so a restarted cell keeps refusing its writes; `NotFound`
    /// for a tenant not on this cell. A repeat is a no-op.
    async fn set_read_only(&self, tenant: TenantId, read_only: bool) -> StorageResult<()>;
    /// The tenants marked read-only on this cell.
    async fn read_only_tenants(&self) -> StorageResult<Vec<TenantId>>;

    /// Row count and checksum of each [`TransferTable`] of the tenant,
    /// computed over [`CellStore::export_chunk`] by
    /// [`transfer::digest`](crate::transfer::digest), so equal rows give
    /// equal digests on every engine.
    async fn digest(
        &self,
        tenant: TenantId,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<TenantDigest> {
        crate::transfer::digest(self, tenant, history_since).await
    }
}

/// Per input, whether its (vehicle, time) is among `returned` (the keys an
/// insert reported as new): the first occurrence was stored, repeats not.
pub fn mark_stored(
    rows: &[NewPosition],
    mut returned: std::collections::HashSet<(VehicleId, DateTime<Utc>)>,
) -> Vec<bool> {
    rows.iter()
        .map(|r| returned.remove(&(r.position.vehicle_id, r.position.fix.time)))
        .collect()
}

/// The newest valid position per vehicle among the stored inputs: what may
/// advance `latest_positions`.
pub fn newest_valid_per_vehicle<'a>(
    rows: &'a [NewPosition],
    stored: &[bool],
) -> Vec<&'a NewPosition> {
    let mut newest: std::collections::HashMap<VehicleId, &NewPosition> = Default::default();
    for (row, _) in rows
        .iter()
        .zip(stored)
        .filter(|(r, s)| **s && r.position.fix.valid)
    {
        newest
            .entry(row.position.vehicle_id)
            .and_modify(|current| {
                if row.position.fix.time > current.position.fix.time {
                    *current = row;
                }
            })
            .or_insert(row);
    }
    newest.into_values().collect()
}
