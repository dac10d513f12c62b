//! Domain types of WebHost: identifiers, values parsed at the edge of the
//! system, and the plan/pool/region catalog with the placement rules of
//! SPEC §1. No I/O lives here; every other crate takes these types.

mod catalog;
mod ids;
mod position;
mod usage;
mod values;

pub use catalog::{
    Catalog, CellTemplate, Placement, PlacementError, Plan, Pool, ProviderKind, RegionRule,
    RegionSettings, ServerKind,
};
pub use ids::{ApiKeyId, CellId, EventId, GeofenceId, JobId, TenantId, UserId, VehicleId};
pub use position::{Fix, Position, RawFix, MAX_FUTURE};
pub use usage::Usage;
pub use values::{
    Attributes, CompanyName, CountryCode, DeviceId, Email, Password, PlanName, PoolName,
    RegionCode, ShortText, ValidationError, VehicleName,
};
