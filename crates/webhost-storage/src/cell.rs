//! A cell's data. Every method takes the tenant: no query crosses tenants.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use webhost_domain::{Attributes, DeviceId, PlanName, ShortText, TenantId, VehicleId, VehicleName};

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
}
