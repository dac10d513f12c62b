//! Per-tenant directory of vehicles and devices, for resolving position
//! batches and device fixes without a storage round trip per request.
//!
//! The cell is the only writer of its tenants' vehicles and limits, so an
//! in-process cache is coherent: every write path invalidates the tenant.
//! A generation counter keeps a load that raced with an invalidation from
//! installing what it read before the write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::RwLock;
use webhost_domain::{DeviceId, TenantId, VehicleId};
use webhost_storage::{CellStore, StorageResult};

/// What a batch needs to know about a tenant.
#[derive(Debug)]
pub struct TenantDirectory {
    pub retention_days: u32,
    pub vehicles: HashSet<VehicleId>,
    pub devices: HashMap<DeviceId, VehicleId>,
}

#[derive(Default)]
struct Entries {
    loaded: HashMap<TenantId, Arc<TenantDirectory>>,
    generation: HashMap<TenantId, u64>,
}

#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn CellStore>,
    entries: Arc<RwLock<Entries>>,
}

impl Directory {
    pub fn new(store: Arc<dyn CellStore>) -> Self {
        Self {
            store,
            entries: Arc::default(),
        }
    }

    pub async fn get(&self, tenant: TenantId) -> StorageResult<Arc<TenantDirectory>> {
        let generation = {
            let entries = self.entries.read().await;
            if let Some(found) = entries.loaded.get(&tenant) {
                return Ok(found.clone());
            }
            entries.generation.get(&tenant).copied().unwrap_or(0)
        };
        let limits = self.store.tenant(tenant).await?;
        let refs = self.store.vehicle_refs(tenant).await?;
        let directory = Arc::new(TenantDirectory {
            retention_days: limits.retention_days,
            vehicles: refs.iter().map(|r| r.id).collect(),
            devices: refs
                .into_iter()
                .filter_map(|r| r.device_id.map(|d| (d, r.id)))
                .collect(),
        });
        let mut entries = self.entries.write().await;
        if entries.generation.get(&tenant).copied().unwrap_or(0) == generation {
            entries.loaded.insert(tenant, directory.clone());
        }
        Ok(directory)
    }

    /// After any change to the tenant's vehicles, devices or limits.
    pub async fn invalidate(&self, tenant: TenantId) {
        let mut entries = self.entries.write().await;
        entries.loaded.remove(&tenant);
        *entries.generation.entry(tenant).or_default() += 1;
    }
}
