//! The contract between the three services. Cells, the control plane and
//! the edge never import one another: what crosses between them is HTTP,
//! and everything both sides of a call must agree on lives here — internal
//! paths, request and answer bodies, who may mint credentials for whom
//! (audiences and issuers), the credentials' claims, and the API-key format
//! the control plane issues and the edge recognises.
//!
//! Invariant: plain data and pure functions only; no HTTP stack, no storage.

pub mod claims;
pub mod paths;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webhost_domain::{CellId, TenantId, VehicleId};

/// The control plane's audience, and the issuer name it mints with.
pub const CONTROL: &str = "control";
/// The edge's issuer name: the only issuer allowed to speak for a device's
/// tenant (it decides which tenant a device belongs to).
pub const EDGE: &str = "edge";
/// The issuer name cells mint with (device-registry calls).
pub const CELL: &str = "cell";

/// The audience a cell's internal credentials are minted for.
pub fn cell_audience(cell: CellId) -> String {
    format!("cell:{cell}")
}

/// Every API key starts with this, so a key is recognisable in a config
/// file or a leak scanner, and the edge tells keys from JWTs at a glance.
pub const API_KEY_PREFIX: &str = "whk_";

/// Keys are 192 random bits, so a fast hash is enough (no guessing to slow
/// down), and lookup by hash never compares secrets byte by byte.
pub fn hash_api_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// `PUT /internal/v1/tenants/{id}`: what the control plane tells a cell
/// about a tenant (creating it there when new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    pub plan: String,
    pub max_vehicles: u32,
    pub retention_days: u32,
}

/// `GET /internal/v1/tenants/{id}`: what a cell reports about a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantUsage {
    pub id: TenantId,
    pub plan: String,
    pub max_vehicles: u32,
    pub retention_days: u32,
    pub vehicles: u64,
}

/// `GET /internal/v1/usage`: what a cell measured of every tenant on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellUsageReport {
    pub measured_at: chrono::DateTime<chrono::Utc>,
    /// The days the ingest and request counts cover, today included.
    pub window_days: u32,
    pub tenants: Vec<TenantUsageReport>,
}

/// One tenant's line of a [`CellUsageReport`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TenantUsageReport {
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub usage: webhost_domain::Usage,
}

/// `PUT /internal/v1/devices/{device_id}` (control plane): a cell claims a
/// device for one of its tenant's vehicles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClaim {
    pub vehicle_id: VehicleId,
}

/// A cell's answer to one device request's fixes
/// (`POST /internal/v1/device-positions`, and per item of the batch).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceIngestAnswer {
    /// Stored now or already stored: what the device may be told.
    pub accepted: usize,
    pub duplicates: usize,
    /// Per fix that was not stored: its index and why.
    pub rejected: Vec<(usize, String)>,
    /// The fixes (indexes, also in `rejected`) refused because their device
    /// is not one of this tenant's vehicles here, or the tenant is not on
    /// this cell: the sender's idea of the device's owner is out of date.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_devices: Vec<usize>,
    /// The fixes (indexes, also in `rejected`) refused because their tenant
    /// is read-only on this cell: it is being moved (SPEC §6). Nothing was
    /// stored for them; the sender holds them while the tenant's route is
    /// frozen and sends them where the route then points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<usize>,
}

impl DeviceIngestAnswer {
    /// Fixes one call may carry, over all its items (a Teltonika packet
    /// holds at most 255). The edge sizes its batches with this.
    pub const MAX_FIXES: usize = 1_000;

    /// Every fix refused because the tenant is read-only on the cell (being
    /// moved): the sender resends them once the route has settled.
    pub fn all_read_only(fixes: usize) -> Self {
        Self {
            rejected: (0..fixes)
                .map(|i| (i, "the account is being moved".to_string()))
                .collect(),
            read_only: (0..fixes).collect(),
            ..Self::default()
        }
    }

    /// Every fix refused as not this tenant's (the answer to a stale route).
    pub fn all_unknown(fixes: usize, why: &str) -> Self {
        Self {
            rejected: (0..fixes).map(|i| (i, why.to_string())).collect(),
            unknown_devices: (0..fixes).collect(),
            ..Self::default()
        }
    }
}

/// A cell's answer header on a tenant API write it refused because the
/// tenant is read-only there (being moved): nothing was written, and the
/// edge holds the request while the route is frozen and sends it where the
/// route then points. The edge never passes it to the client.
pub const READ_ONLY_HEADER: &str = "x-webhost-read-only";

/// `GET …/transfer/watermark`: the cell's change clock
/// (`CellStore::change_watermark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub watermark: u64,
}

/// `POST …/transfer/export`: one chunk of a table after a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub table: String,
    #[serde(default)]
    pub after: Option<String>,
    pub limit: u32,
    #[serde(default)]
    pub history_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST …/transfer/changes`: one page of a table's changes since a
/// watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesRequest {
    pub table: String,
    pub since: u64,
    #[serde(default)]
    pub after: Option<String>,
    pub limit: u32,
    #[serde(default)]
    pub history_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The answer to `export` and `changes`: full row images (the storage
/// layer's `Record`s, passed through by the control plane untouched), keys
/// deleted (changes only), and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportedRecords {
    pub records: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    pub next: Option<String>,
}

/// `POST …/transfer/import`: upserts `records`, then deletes `deleted`
/// keys of `table` (when given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub records: Vec<serde_json::Value>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
}

/// What an import wrote and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub written: u64,
    pub deleted: u64,
}

/// `POST …/transfer/digest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    #[serde(default)]
    pub history_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// One table's row count and order-independent checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub rows: u64,
    pub checksum: String,
}

/// The digest of every table a move carries, by table name, and the
/// cell's change clock when it was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDigest {
    pub tables: std::collections::BTreeMap<String, TableDigest>,
    pub watermark: u64,
}

/// `PUT /internal/v1/tenants/{id}/fence`: whether the cell refuses the
/// tenant's writes (API and devices; the move's imports still apply).
/// Turning it on waits until every write already accepted has committed,
/// so what the answer follows is all there is to catch up. `moved`: the
/// tenant now lives on another cell — its live sockets here are closed
/// (code 1012), so clients reconnect through the edge to the new cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFence {
    pub read_only: bool,
    #[serde(default)]
    pub moved: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_is_sha256_of_the_whole_secret() {
        let hash = hash_api_key("whk_abc");
        assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(b"whk_abc")));
        assert_ne!(hash, hash_api_key("whk_abd"));
    }

    #[test]
    fn cell_audiences_name_the_cell() {
        let id = CellId::new();
        assert_eq!(cell_audience(id), format!("cell:{id}"));
        assert_ne!(cell_audience(id), CONTROL);
    }
}
