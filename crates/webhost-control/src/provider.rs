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
    /// How the control plane reaches remote cells when not at the public
    /// URL their provider gives (`WEBHOST_CELL_URL`, `{name}` = the cell's
    /// name): a private network (`http://{name}.internal:8080`), a proxy.
    cell_url: Option<String>,
}

impl Providers {
    pub fn new(fallback: Arc<dyn Provider>) -> Self {
        Self {
            fallback,
            configured: HashMap::new(),
            cell_url: None,
        }
    }

    /// See `cell_url`: remote cells are reached at `template` with `{name}`
    /// replaced by the cell's name.
    pub fn reach_cells_at(mut self, template: Option<String>) -> Self {
        self.cell_url = template.filter(|t| !t.trim().is_empty());
        self
    }

    /// The URL the control plane records for a cell its provider says is
    /// ready at `public_url`.
    pub fn cell_url(&self, kind: ProviderKind, name: &str, public_url: String) -> String {
        match &self.cell_url {
            Some(template) if kind != ProviderKind::Local => template.replace("{name}", name),
            _ => public_url,
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
            template: Some(template.name.clone()),
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
/// A `local` cell is made at once (it is this process); a remote
/// provider's is recorded and queued like any other (`cells::ProvisionCell`:
/// resumable, health-checked before it turns active) — a first start never
/// waits minutes for a server.
pub async fn ensure_cells(
    store: &dyn ControlStore,
    providers: &Providers,
    jobs: &webhost_jobs::Jobs,
    wanted: &[(PoolName, RegionCode)],
) -> anyhow::Result<Vec<Cell>> {
    let catalog = store.catalog().await?;
    for (pool, region) in wanted {
        let cells = store.cells().await?;
        let live = |c: &&Cell| !matches!(c.status, CellStatus::Failed | CellStatus::Retired);
        if cells
            .iter()
            .filter(live)
            .any(|c| &c.pool == pool && &c.region == region)
        {
            continue;
        }
        let provider = providers.for_pool(&catalog, pool);
        // The pool's regular template, or its stop-gap when the provider
        // cannot make the regular one here.
        let of_pool = || catalog.cell_templates.iter().filter(|t| &t.pool == pool);
        let template = of_pool()
            .filter(|t| provider.offers(t))
            .min_by_key(|t| t.stop_gap)
            .with_context(|| {
                format!(
                    "the catalog has no cell template for pool {pool} that its provider can make"
                )
            })?;
        if provider.kind() == ProviderKind::Local && !provider.slow_to_deliver(template) {
            provision_cell(store, providers, &catalog, pool, region, template).await?;
        } else {
            let maker = crate::cells::CellMaker {
                store,
                providers,
                jobs,
            };
            crate::cells::queue_cell(maker, &catalog, pool, region, template, None, None).await?;
        }
    }
    Ok(store.cells().await?)
}
