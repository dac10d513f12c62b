//! A cell's data. Every method takes the tenant: no query crosses tenants.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use webhost_domain::{
    Attributes, DeviceId, PlanName, Position, ShortText, TenantId, VehicleId, VehicleName,
};

use crate::StorageResult;

/// What a cell knows of a tenant: enough to enforce the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellTenant {
    pub id: TenantId,
    pub plan: PlanName,
    pub max_vehicles: u32,
    pub retention_days: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CellStats {
    pub tenants: u64,
    pub vehicles: u64,
}

#[async_trait]
pub trait CellStore: Send + Sync + 'static {
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

    /// Stores positions (of any tenants) in one transaction, so concurrent
    /// requests share one commit. A position whose (vehicle, time) is already
    /// stored, or repeats an earlier one of the same call, is skipped: the
    /// answer says, per input, whether it was newly stored. Valid positions
    /// newer than a vehicle's latest become its latest.
    async fn insert_positions(&self, positions: &[NewPosition]) -> StorageResult<Vec<bool>>;
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
