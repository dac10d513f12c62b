//! Internal paths (`/internal/v1/*`). Routers and callers both use these,
//! so a path cannot be renamed on one side only.

use webhost_domain::{DeviceId, TenantId};

/// Where GraphQL requests go (public, served by cells through the edge).
pub const GRAPHQL: &str = "/api/graphql";

/// Cell: one tenant's limits (`PUT`), usage (`GET`), removal (`DELETE`).
pub const TENANT_ROUTE: &str = "/internal/v1/tenants/{id}";
pub fn tenant(id: TenantId) -> String {
    format!("/internal/v1/tenants/{id}")
}

/// Cell: storage statistics.
pub const STATS: &str = "/internal/v1/stats";
/// Cell: every tenant's measured use (`CellUsageReport`).
pub const USAGE: &str = "/internal/v1/usage";
/// Cell: one tenant's device fixes (edge of the previous version).
pub const DEVICE_POSITIONS: &str = "/internal/v1/device-positions";
/// Cell: many device requests' fixes in one call (the edge batches).
pub const DEVICE_POSITIONS_BATCH: &str = "/internal/v1/device-positions/batch";
/// Cell: run the offline sweep now.
pub const OFFLINE_SWEEP: &str = "/internal/v1/sweeps/offline";
/// Cell: run retention now.
pub const RETENTION: &str = "/internal/v1/maintenance/retention";

/// Control plane: claim (`PUT`) or release (`DELETE`) a device.
pub const DEVICE_ROUTE: &str = "/internal/v1/devices/{device_id}";
pub fn device(id: &DeviceId) -> String {
    format!("/internal/v1/devices/{id}")
}

/// Cell: the tenant's data moving to or from another cell (SPEC §6),
/// driven by the control plane: `…/watermark` (`GET`, [`crate::Watermark`]),
/// `…/export` and `…/changes` (`POST`, [`crate::ExportRequest`] /
/// [`crate::ChangesRequest`] → [`crate::ExportedRecords`]), `…/import`
/// (`POST`, [`crate::ImportRequest`] → [`crate::Imported`]), `…/digest`
/// (`POST`, [`crate::DigestRequest`] → [`crate::TenantDigest`]).
pub const TRANSFER_ROUTE: &str = "/internal/v1/tenants/{id}/transfer/{action}";
pub fn transfer(id: TenantId, action: &str) -> String {
    format!("/internal/v1/tenants/{id}/transfer/{action}")
}

/// Cell: the tenant's write fence (`PUT`, [`crate::WriteFence`]).
pub const FENCE_ROUTE: &str = "/internal/v1/tenants/{id}/fence";
pub fn fence(id: TenantId) -> String {
    format!("/internal/v1/tenants/{id}/fence")
}
