//! Placement onto cells, and making cells through the pool's provider.
//!
//! The control plane never runs a cell itself: it asks a [`Provider`]
//! (`webhost-provider`) to make one, records what the provider made, and
//! reaches the cell over HTTP like any other.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use webhost_domain::{Catalog, CellId, CellTemplate, PoolName, ProviderKind, RegionCode};
use webhost_provider::{CellSpec, Progress, Provider};
use webhost_storage::{Cell, CellStatus, ControlStore, NewCell};

/// The providers this control plane can use. A pool uses its catalog
/// provider when that provider is configured (its credentials are set),
/// and the fallback (`local`) otherwise.
#[derive(Clone)]
pub struct Providers {
    fallback: Arc<dyn Provider>,
    configured: HashMap<ProviderKind, Arc<dyn Provider>>,
}

impl Providers {
    pub fn new(fallback: Arc<dyn Provider>) -> Self {
        Self {
            fallback,
            configured: HashMap::new(),
        }
    }

    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.configured.insert(provider.kind(), provider);
        self
    }

    /// The provider that makes `pool`'s cells.
    pub fn for_pool(&self, catalog: &Catalog, pool: &PoolName) -> Arc<dyn Provider> {
        catalog
            .pool(pool)
            .and_then(|p| self.configured.get(&p.provider))
            .unwrap_or(&self.fallback)
            .clone()
    }

    /// The provider that made a recorded cell.
    pub fn for_kind(&self, kind: ProviderKind) -> Option<Arc<dyn Provider>> {
        if self.fallback.kind() == kind {
            return Some(self.fallback.clone());
        }
        self.configured.get(&kind).cloned()
    }
}

/// Makes a cell in `pool`/`region` from `template` through the pool's
/// provider, waiting for it, and records it: for the cells a first start
/// needs (no request waits on this; signups queue `cells::ProvisionCell`).
pub async fn provision_cell(
    store: &dyn ControlStore,
    providers: &Providers,
    catalog: &Catalog,
    pool: &PoolName,
    region: &RegionCode,
    template: &CellTemplate,
) -> anyhow::Result<Cell> {
    let same_place = store
        .cells()
        .await?
        .iter()
        .filter(|c| &c.pool == pool && &c.region == region)
        .count();
    let spec = CellSpec {
        id: CellId::new(),
        name: format!("{pool}-{region}-{}", same_place + 1),
        pool: pool.clone(),
        region: region.clone(),
        template: template.clone(),
    };
    let provider = providers.for_pool(catalog, pool);
    let resource = provider.create(&spec).await?;
    let url = loop {
        match provider.poll(&spec, &resource).await? {
            Progress::Ready { url } => break url,
            Progress::Pending { step, percent } => {
                tracing::info!(cell = %spec.name, %step, percent, "waiting for the cell");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Progress::Failed { reason } => anyhow::bail!("cell {} failed: {reason}", spec.name),
        }
    };
    let monthly_cost_cents = provider.monthly_cost_cents(&spec).await?;
    let cell = store
        .create_cell(NewCell {
            id: spec.id,
            name: spec.name,
            pool: pool.clone(),
            region: region.clone(),
            provider: provider.kind(),
            url,
            status: CellStatus::Active,
            capacity: template.capacity,
            monthly_cost_cents,
        })
        .await?;
    let cell = store
        .update_cell(
            cell.id,
            webhost_storage::CellUpdate {
                resource: Some(serde_json::to_value(&resource)?),
                ..webhost_storage::CellUpdate::default()
            },
        )
        .await?;
    tracing::info!(cell = %cell.name, %pool, %region, provider = provider.kind().as_str(), "provisioned cell");
    Ok(cell)
}

/// Makes sure each (pool, region) has at least one cell (first start).
pub async fn ensure_cells(
    store: &dyn ControlStore,
    providers: &Providers,
    wanted: &[(PoolName, RegionCode)],
) -> anyhow::Result<Vec<Cell>> {
    let catalog = store.catalog().await?;
    for (pool, region) in wanted {
        let cells = store.cells().await?;
        if !cells.iter().any(|c| &c.pool == pool && &c.region == region) {
            let template = catalog
                .cell_templates
                .iter()
                .find(|t| &t.pool == pool)
                .with_context(|| format!("the catalog has no cell template for pool {pool}"))?;
            provision_cell(store, providers, &catalog, pool, region, template).await?;
        }
    }
    Ok(store.cells().await?)
}
