//! The `local` provider: cells inside this process, each with its own
//! database (a SQLite file, or a PostgreSQL database on the configured
//! server) and its own loopback listener, reached over HTTP exactly like a
//! remote cell. The embedded default and the tests use it.
//!
//! Invariant: this is the only crate besides the binary that depends on
//! `webhost-cell`; the control plane sees cells through [`Provider`] and
//! HTTP only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Mutex;
use webhost_domain::{CellId, CellTemplate, ProviderKind, RegionCode, ServerKind};
use webhost_http::auth::InternalKeys;
use webhost_http::serve::{Server, Shutdown};
use webhost_provider::{CellSpec, Progress, Provider, Resource};
use webhost_storage::CellStore;

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
    let name = format!("{database}_cell_{suffix}");
    // PostgreSQL cuts identifiers at 63 bytes: two cells would silently
    // share one database.
    anyhow::ensure!(
        name.len() <= 63,
        "the cell database name {name} is longer than PostgreSQL's 63 bytes: use a shorter \
         database name in DATABASE_URL"
    );
    let mut url = format!("{server}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

struct Running {
    server: Server,
    stop: Shutdown,
    started: std::time::Instant,
}

/// Runs cells inside this process.
pub struct LocalProvider {
    database: LocalDatabase,
    keys: Arc<InternalKeys>,
    control_url: String,
    shutdown: Shutdown,
    running: Mutex<HashMap<CellId, Running>>,
    boot_delay: std::time::Duration,
    /// How long a cell from a `dedicated` template takes to deliver.
    dedicated_delay: std::time::Duration,
    tuning: CellTuning,
}

/// What every local cell is started with besides its identity.
#[derive(Clone, Debug)]
pub struct CellTuning {
    /// Webhooks may target private addresses (see `CellConfig`).
    pub allow_private_webhooks: bool,
    pub job_backoff_scale: f64,
    pub job_poll_interval: std::time::Duration,
}

impl Default for CellTuning {
    fn default() -> Self {
        Self {
            allow_private_webhooks: false,
            job_backoff_scale: 1.0,
            job_poll_interval: std::time::Duration::from_secs(1),
        }
    }
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
            boot_delay: std::time::Duration::ZERO,
            dedicated_delay: std::time::Duration::ZERO,
            tuning: CellTuning::default(),
        }
    }

    /// How the cells run their jobs and webhooks.
    pub fn with_tuning(mut self, tuning: CellTuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// A cell reports ready only this long after it started, like a real
    /// machine booting (demos, and tests of provisioning in the background).
    pub fn with_boot_delay(mut self, delay: std::time::Duration) -> Self {
        self.boot_delay = delay;
        self
    }

    /// Cells from `dedicated` templates report ready only this long after
    /// they started, like a dedicated server being delivered; placement then
    /// uses the pool's stop-gap template meanwhile (demos, and tests of the
    /// two-speed capacity of the hetzner pool).
    pub fn with_dedicated_delivery(mut self, delay: std::time::Duration) -> Self {
        self.dedicated_delay = delay;
        self
    }

    /// Starts the cell (opening or creating its database) unless it is
    /// running already; answers its URL. Its port changes on every start.
    pub async fn start(
        &self,
        id: CellId,
        name: &str,
        region: &RegionCode,
    ) -> anyhow::Result<String> {
        let mut running = self.running.lock().await;
        if let Some(cell) = running.get(&id) {
            return Ok(cell.server.url());
        }
        let store = self
            .database
            .open(name)
            .await
            .with_context(|| format!("opening the database of cell {name}"))?;
        let stop = self.shutdown.child();
        let router = webhost_cell::router(
            store,
            self.keys.clone(),
            webhost_cell::CellConfig {
                allow_private_webhooks: self.tuning.allow_private_webhooks,
                job_backoff_scale: self.tuning.job_backoff_scale,
                job_poll_interval: self.tuning.job_poll_interval,
                ..webhost_cell::CellConfig::new(id, region.to_string(), self.control_url.clone())
            },
            &stop,
        );
        let listener = webhost_http::serve::bind("127.0.0.1:0").await?;
        let server = webhost_http::serve::spawn(listener, router, &stop)?;
        let url = server.url();
        tracing::info!(cell = name, %url, "local cell listening");
        running.insert(
            id,
            Running {
                server,
                stop,
                started: std::time::Instant::now(),
            },
        );
        Ok(url)
    }

    /// How many cells run in this process.
    pub async fn running(&self) -> usize {
        self.running.lock().await.len()
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn slow_to_deliver(&self, template: &CellTemplate) -> bool {
        template.kind == Some(ServerKind::Dedicated) && !self.dedicated_delay.is_zero()
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        let url = self.start(spec.id, &spec.name, &spec.region).await?;
        tracing::info!(cell = %spec.name, pool = %spec.pool, region = %spec.region, "local cell created");
        Ok(Resource {
            provider: ProviderKind::Local,
            external_id: spec.name.clone(),
            detail: serde_json::json!({ "url": url }),
        })
    }

    /// Starts the cell again if this process does not run it (a restart
    /// between create and ready), so provisioning resumes.
    async fn poll(&self, spec: &CellSpec, _: &Resource) -> anyhow::Result<Progress> {
        let url = self.start(spec.id, &spec.name, &spec.region).await?;
        let booted = self
            .running
            .lock()
            .await
            .get(&spec.id)
            .map(|cell| cell.started.elapsed());
        let delay = if spec.template.kind == Some(ServerKind::Dedicated) {
            self.boot_delay.max(self.dedicated_delay)
        } else {
            self.boot_delay
        };
        Ok(match booted {
            Some(up) if up < delay => Progress::Pending {
                step: "booting".into(),
                percent: u8::try_from(up.as_millis() * 100 / delay.as_millis().max(1))
                    .unwrap_or(99)
                    .min(99),
            },
            _ => Progress::Ready { url },
        })
    }

    /// Stops the cell's listener; its database stays (a retired cell's data
    /// is removed by the operator, never by a retry).
    async fn destroy(&self, spec: &CellSpec, _: &Resource) -> anyhow::Result<()> {
        if let Some(cell) = self.running.lock().await.remove(&spec.id) {
            cell.stop.trigger();
            let _ = cell.server.handle.await;
        }
        Ok(())
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
