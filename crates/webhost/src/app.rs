//! Assembling the parts. `Application::build` binds every listener first and
//! reports the ports, so tests can boot it on port 0.

use std::sync::Arc;

use anyhow::Context;
use webhost_control::{LocalDatabase, LocalProvider};
use webhost_domain::{CellId, PoolName, RegionCode};
use webhost_http::auth::{InternalKeys, UserTokens};
use webhost_http::serve::{self, Server, Shutdown};
use webhost_storage::{Cell, CellStore, ControlStore};

use crate::settings::Settings;

/// Opens the control plane's store named by the settings.
pub async fn open_control_store(settings: &Settings) -> anyhow::Result<Arc<dyn ControlStore>> {
    Ok(match &settings.database_url {
        Some(url) if settings.is_postgres() => {
            Arc::new(webhost_storage_postgres::PgControlStore::open(url, settings.pool_size).await?)
        }
        Some(url) => Arc::new(webhost_storage_sqlite::SqliteControlStore::open(url).await?),
        None => {
            let path = settings.data_dir.join("control.db");
            Arc::new(
                webhost_storage_sqlite::SqliteControlStore::open(
                    path.to_str().context("data dir path is not UTF-8")?,
                )
                .await?,
            )
        }
    })
}

/// The edge reads API keys and routes from a read replica when there is one.
async fn open_edge_store(
    settings: &Settings,
    primary: &Arc<dyn ControlStore>,
) -> anyhow::Result<Arc<dyn ControlStore>> {
    match &settings.database_read_url {
        Some(url) if url.starts_with("postgres") => Ok(Arc::new(
            webhost_storage_postgres::PgControlStore::open(url, settings.pool_size).await?,
        )),
        _ => Ok(primary.clone()),
    }
}

fn keys(settings: &Settings) -> anyhow::Result<(Arc<InternalKeys>, UserTokens)> {
    Ok((
        Arc::new(InternalKeys::derive(settings.secret_key_base()?.as_bytes())),
        UserTokens::new(
            settings.token_signing_secret()?.as_bytes(),
            settings.token_ttl_secs,
        ),
    ))
}

async fn redis(settings: &Settings) -> anyhow::Result<Option<redis::aio::ConnectionManager>> {
    match &settings.redis_url {
        Some(url) => Ok(Some(webhost_edge::connect_redis(url).await?)),
        None => Ok(None),
    }
}

/// The cells `webhost serve` always has: hobby's pool in Germany, and the
/// paid pool's default region.
pub fn default_cells() -> Vec<(PoolName, RegionCode)> {
    vec![
        (
            PoolName::from_trusted("hetzner"),
            RegionCode::from_trusted("fsn1"),
        ),
        (
            PoolName::from_trusted("fly"),
            RegionCode::from_trusted("iad"),
        ),
    ]
}

/// The device listeners of an edge.
pub struct Devices {
    pub osmand: Server,
    pub teltonika: std::net::SocketAddr,
}

impl Devices {
    async fn start(
        settings: &Settings,
        edge: &webhost_edge::EdgeState,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Self> {
        let osmand = serve::spawn(
            serve::bind(&settings.osmand_listen).await?,
            webhost_edge::osmand_router(edge.clone()),
            shutdown.wait(),
        )?;
        let teltonika = serve::bind(&settings.teltonika_listen).await?;
        let teltonika_addr = teltonika.local_addr()?;
        tokio::spawn(webhost_edge::serve_teltonika(
            teltonika,
            edge.clone(),
            shutdown.wait(),
        ));
        tracing::info!(osmand = %osmand.addr, teltonika = %teltonika_addr, "device listeners ready");
        Ok(Self {
            osmand,
            teltonika: teltonika_addr,
        })
    }
}

/// `webhost serve`: control plane, local cells and edge in one process.
pub struct Application {
    pub edge: Server,
    pub devices: Devices,
    pub control: Server,
    pub cells: Vec<Cell>,
    pub store: Arc<dyn ControlStore>,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let shutdown = Shutdown::new();
        let (keys, tokens) = keys(settings)?;
        let store = open_control_store(settings).await?;
        let redis = redis(settings).await?;

        let control_listener = serve::bind("127.0.0.1:0").await?;
        let control_url = format!("http://{}", control_listener.local_addr()?);
        let database = if let Some(url) = settings
            .database_url
            .as_ref()
            .filter(|_| settings.is_postgres())
        {
            LocalDatabase::Postgres {
                base_url: url.clone(),
                pool_size: settings.pool_size,
            }
        } else {
            LocalDatabase::Sqlite {
                dir: settings.data_dir.join("cells"),
            }
        };
        let provider = Arc::new(LocalProvider::new(
            database,
            keys.clone(),
            control_url,
            shutdown.clone(),
        ));
        let control_router = webhost_control::router(webhost_control::ControlParts {
            store: store.clone(),
            tokens: tokens.clone(),
            keys: keys.clone(),
            provisioner: provider.clone(),
            region: settings.region(),
        });
        let control = serve::spawn(control_listener, control_router, shutdown.wait())?;
        let cells = provider.resume(store.as_ref(), &default_cells()).await?;

        let edge_state = webhost_edge::EdgeState::new(webhost_edge::EdgeParts {
            store: open_edge_store(settings, &store).await?,
            tokens,
            keys,
            control_url: control.url(),
            region: settings.region(),
            redis,
        });
        let devices = Devices::start(settings, &edge_state, &shutdown).await?;
        let edge_listener = serve::bind(&settings.edge_listen()).await?;
        let edge = serve::spawn(
            edge_listener,
            webhost_edge::router(edge_state),
            shutdown.wait(),
        )?;
        Ok(Self {
            edge,
            devices,
            control,
            cells,
            store,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.edge.addr.port()
    }

    pub fn url(&self) -> String {
        self.edge.url()
    }

    /// Stops every server gracefully (in-flight requests finish).
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.edge.handle.await;
        let _ = self.control.handle.await;
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        serve::shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await;
        Ok(())
    }
}

/// `webhost control`: the control plane alone; with the `local` provider it
/// runs the local cells too.
pub async fn run_control(settings: &Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let (keys, tokens) = keys(settings)?;
    let store = open_control_store(settings).await?;
    let listener = serve::bind(&settings.edge_listen()).await?;
    let control_url = format!("http://{}", listener.local_addr()?);
    let database = match settings
        .database_url
        .as_ref()
        .filter(|_| settings.is_postgres())
    {
        Some(url) => LocalDatabase::Postgres {
            base_url: url.clone(),
            pool_size: settings.pool_size,
        },
        None => LocalDatabase::Sqlite {
            dir: settings.data_dir.join("cells"),
        },
    };
    let provider = Arc::new(LocalProvider::new(
        database,
        keys.clone(),
        control_url,
        shutdown.clone(),
    ));
    let router = webhost_control::router(webhost_control::ControlParts {
        store: store.clone(),
        tokens,
        keys,
        provisioner: provider.clone(),
        region: settings.region(),
    });
    let server = serve::spawn(listener, router, shutdown.wait())?;
    provider.resume(store.as_ref(), &default_cells()).await?;
    tracing::info!(url = %server.url(), "control plane listening");
    serve::shutdown_signal().await;
    shutdown.trigger();
    let _ = server.handle.await;
    Ok(())
}

/// `webhost edge`: the public entry alone, reading the control database.
pub async fn run_edge(settings: &Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let (keys, tokens) = keys(settings)?;
    let control_url = settings
        .control_url
        .clone()
        .context("webhost edge needs --control-url (or WEBHOST_CONTROL_URL)")?;
    let store = open_control_store(settings).await?;
    let state = webhost_edge::EdgeState::new(webhost_edge::EdgeParts {
        store: open_edge_store(settings, &store).await?,
        tokens,
        keys,
        control_url,
        region: settings.region(),
        redis: redis(settings).await?,
    });
    let _devices = Devices::start(settings, &state, &shutdown).await?;
    let server = serve::spawn(
        serve::bind(&settings.edge_listen()).await?,
        webhost_edge::router(state),
        shutdown.wait(),
    )?;
    tracing::info!(url = %server.url(), "edge listening");
    serve::shutdown_signal().await;
    shutdown.trigger();
    let _ = server.handle.await;
    Ok(())
}

/// `webhost cell`: one cell alone, with its own database.
pub async fn run_cell(settings: &Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let (keys, _) = keys(settings)?;
    let cell_id: CellId = settings
        .cell_id
        .as_deref()
        .context("webhost cell needs --cell-id (or WEBHOST_CELL_ID)")?
        .parse()
        .context("--cell-id must be a UUID")?;
    let control_url = settings
        .control_url
        .clone()
        .context("webhost cell needs --control-url (or WEBHOST_CONTROL_URL)")?;
    let store: Arc<dyn CellStore> = match &settings.database_url {
        Some(url) if settings.is_postgres() => {
            Arc::new(webhost_storage_postgres::PgCellStore::open(url, settings.pool_size).await?)
        }
        Some(url) => Arc::new(webhost_storage_sqlite::SqliteCellStore::open(url).await?),
        None => {
            let path = settings.data_dir.join(format!("cell-{cell_id}.db"));
            Arc::new(
                webhost_storage_sqlite::SqliteCellStore::open(
                    path.to_str().context("data dir path is not UTF-8")?,
                )
                .await?,
            )
        }
    };
    let router = webhost_cell::router(
        store,
        keys,
        webhost_cell::CellConfig {
            cell_id,
            region: settings.region(),
            control_url,
        },
    );
    let server = serve::spawn(
        serve::bind(&settings.edge_listen()).await?,
        router,
        shutdown.wait(),
    )?;
    tracing::info!(url = %server.url(), %cell_id, "cell listening");
    serve::shutdown_signal().await;
    shutdown.trigger();
    let _ = server.handle.await;
    Ok(())
}
