//! Placement onto cells, and the providers that create cells.
//!
//! `local` runs cells inside this process, each with its own database and
//! listener, reached over HTTP exactly like a remote cell. `hetzner` and
//! `fly` create remote cells through their APIs (not built yet).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Mutex;
use webhost_domain::{
    Catalog, CellId, CellTemplate, Placement, Plan, PoolName, ProviderKind, RegionCode,
};
use webhost_http::auth::InternalKeys;
use webhost_http::serve::{Server, Shutdown};
use webhost_http::ApiError;
use webhost_storage::{Cell, CellStatus, CellStore, ControlStore, NewCell};

use crate::ControlState;

/// Creates cells in a pool.
#[async_trait]
pub trait Provisioner: Send + Sync + 'static {
    /// Creates and starts a cell and records it in the catalog of cells.
    async fn provision(
        &self,
        store: &dyn ControlStore,
        pool: &PoolName,
        region: &RegionCode,
        template: &CellTemplate,
    ) -> anyhow::Result<Cell>;
}

/// Picks the least-loaded active cell of the placement's pool and region
/// with room left, provisioning one when there is none.
pub(crate) async fn place_tenant(
    state: &ControlState,
    catalog: &Catalog,
    plan: &Plan,
    placement: &Placement,
) -> Result<Cell, ApiError> {
    let cells = state.store.cells().await?;
    let candidate = cells
        .into_iter()
        .filter(|c| {
            c.pool == placement.pool
                && c.region == placement.region
                && c.status == CellStatus::Active
                && c.tenants < c.capacity
        })
        .min_by(|a, b| {
            let load = |c: &Cell| f64::from(c.tenants) / f64::from(c.capacity.max(1));
            load(a).total_cmp(&load(b))
        });
    if let Some(cell) = candidate {
        return Ok(cell);
    }
    let template = catalog
        .template_for(&placement.pool, &plan.name)
        .ok_or_else(|| {
            ApiError::unexpected(anyhow::anyhow!(
                "no cell template for pool {}",
                placement.pool
            ))
        })?;
    state
        .provisioner
        .provision(state.store.as_ref(), &placement.pool, &placement.region, template)
        .await
        .map_err(|err| {
            tracing::error!(error = format!("{err:#}"), pool = %placement.pool, region = %placement.region, "provisioning failed");
            ApiError::unavailable(format!(
                "no capacity in region {} right now; try again shortly",
                placement.region
            ))
        })
}

/// Where local cells keep their data.
#[derive(Clone, Debug)]
pub enum LocalDatabase {
    /// One SQLite file per cell under this directory.
    Sqlite { dir: PathBuf },
    /// One database per cell on this server: `<base>_cell_<name>`.
    Postgres { base_url: String, pool_size: u32 },
}

impl LocalDatabase {
    async fn open(&self, cell_name: &str) -> anyhow::Result<Arc<dyn CellStore>> {
        match self {
            Self::Sqlite { dir } => {
                let path = dir.join(format!("{cell_name}.db"));
                let store = webhost_storage_sqlite::SqliteCellStore::open(
                    path.to_str().context("data directory path is not UTF-8")?,
                )
                .await?;
                Ok(Arc::new(store))
            }
            Self::Postgres {
                base_url,
                pool_size,
            } => {
                let url = cell_database_url(base_url, cell_name)?;
                webhost_storage_postgres::create_database_if_missing(&url).await?;
                Ok(Arc::new(
                    webhost_storage_postgres::PgCellStore::open(&url, *pool_size).await?,
                ))
            }
        }
    }
}

fn cell_database_url(base_url: &str, cell_name: &str) -> anyhow::Result<String> {
    let (before_query, query) = match base_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (base_url, None),
    };
    let (server, database) = before_query
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
        .context("DATABASE_URL must name a database, like postgres://host/webhost")?;
    let suffix: String = cell_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let database = if database.is_empty() {
        "webhost"
    } else {
        database
    };
    let mut url = format!("{server}/{database}_cell_{suffix}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// Runs cells inside this process.
pub struct LocalProvider {
    database: LocalDatabase,
    keys: Arc<InternalKeys>,
    control_url: String,
    shutdown: Shutdown,
    running: Mutex<HashMap<CellId, Server>>,
}

impl LocalProvider {
    pub fn new(
        database: LocalDatabase,
        keys: Arc<InternalKeys>,
        control_url: String,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            database,
            keys,
            control_url,
            shutdown,
            running: Mutex::new(HashMap::new()),
        }
    }

    async fn start(&self, id: CellId, name: &str, region: &RegionCode) -> anyhow::Result<String> {
        let mut running = self.running.lock().await;
        if let Some(server) = running.get(&id) {
            return Ok(server.url());
        }
        let store = self
            .database
            .open(name)
            .await
            .with_context(|| format!("opening the database of cell {name}"))?;
        let router = webhost_cell::router(
            store,
            self.keys.clone(),
            webhost_cell::CellConfig {
                cell_id: id,
                region: region.to_string(),
                control_url: self.control_url.clone(),
            },
        );
        let listener = webhost_http::serve::bind("127.0.0.1:0").await?;
        let server = webhost_http::serve::spawn(listener, router, self.shutdown.wait())?;
        let url = server.url();
        tracing::info!(cell = name, %url, "local cell listening");
        running.insert(id, server);
        Ok(url)
    }

    /// Starts every local cell the catalog knows (their ports change on
    /// each start), then makes sure `wanted` (pool, region) pairs have one.
    pub async fn resume(
        &self,
        store: &dyn ControlStore,
        wanted: &[(PoolName, RegionCode)],
    ) -> anyhow::Result<Vec<Cell>> {
        for cell in store.cells().await? {
            if cell.provider == ProviderKind::Local {
                let url = self.start(cell.id, &cell.name, &cell.region).await?;
                store.set_cell_url(cell.id, &url).await?;
            }
        }
        let catalog = store.catalog().await?;
        for (pool, region) in wanted {
            let cells = store.cells().await?;
            if !cells.iter().any(|c| &c.pool == pool && &c.region == region) {
                let template = catalog
                    .cell_templates
                    .iter()
                    .find(|t| &t.pool == pool)
                    .with_context(|| format!("the catalog has no cell template for pool {pool}"))?;
                self.provision(store, pool, region, template).await?;
            }
        }
        Ok(store.cells().await?)
    }
}

#[async_trait]
impl Provisioner for LocalProvider {
    async fn provision(
        &self,
        store: &dyn ControlStore,
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
        let name = format!("{pool}-{region}-{}", same_place + 1);
        let id = CellId::new();
        let url = self.start(id, &name, region).await?;
        let cell = store
            .create_cell(NewCell {
                id,
                name,
                pool: pool.clone(),
                region: region.clone(),
                provider: ProviderKind::Local,
                url,
                capacity: template.capacity,
                monthly_cost_cents: template.monthly_cost_cents,
            })
            .await?;
        tracing::info!(cell = %cell.name, %pool, %region, "provisioned local cell");
        Ok(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_database_urls_derive_from_the_base() {
        assert_eq!(
            cell_database_url("postgres://u@h:5432/webhost", "fly-iad-1").unwrap(),
            "postgres://u@h:5432/webhost_cell_fly_iad_1"
        );
        assert_eq!(
            cell_database_url("postgres://h/db?sslmode=disable", "x").unwrap(),
            "postgres://h/db_cell_x?sslmode=disable"
        );
        assert!(cell_database_url("postgres:", "x").is_err());
    }
}
