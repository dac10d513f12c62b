//! Assembling the parts. `Application::build` binds every listener first and
//! reports the ports, so tests can boot it on port 0.

use std::sync::Arc;

use anyhow::Context;
use webhost_control::Providers;
use webhost_domain::ProviderKind;
use webhost_domain::{CellId, PoolName, RegionCode};
use webhost_http::auth::{InternalKeys, UserTokens};
use webhost_http::serve::{self, Server, Shutdown};
use webhost_provider_local::{LocalDatabase, LocalProvider};
use webhost_storage::{Cell, CellStatus, CellStore, ControlStore, RoutingDirectory};

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
) -> anyhow::Result<Arc<dyn RoutingDirectory>> {
    match &settings.database_read_url {
        Some(url) if url.starts_with("postgres") => Ok(Arc::new(
            webhost_storage_postgres::PgControlStore::open(url, settings.pool_size).await?,
        )),
        _ => Ok(primary.clone()),
    }
}

/// The public API's descriptions, from the services' declarations.
pub fn api_docs() -> webhost_edge::ApiDocs {
    let api = webhost_cell::api();
    let mut documents = vec![api.openapi()];
    documents.extend(webhost_control::openapi());
    let mut openapi =
        webhost_api::merge_openapi("WebHost API", env!("CARGO_PKG_VERSION"), documents);
    openapi.info.description = Some(
        "The fleet API (a tenant's resources: `Authorization: Bearer <token or API key>`) \
         and the operator API (`/api/admin/*`: `Bearer $WEBHOST_ADMIN_TOKEN`)."
            .into(),
    );
    webhost_edge::ApiDocs {
        openapi_json: openapi.to_json().expect("the OpenAPI document serialises"),
        graphql_sdl: api
            .graphql()
            .expect("the declared operations make a valid GraphQL schema")
            .sdl(),
    }
}

/// The durable job queue on the control plane's database.
fn jobs(settings: &Settings, store: &Arc<dyn ControlStore>) -> webhost_control::Jobs {
    let queue: Arc<dyn webhost_storage::JobStore> = store.clone();
    webhost_control::Jobs::new(queue)
        .with_lease(settings.job_lease())
        .with_backoff_scale(settings.job_backoff_scale)
}

/// Starts the job workers on the process's tracker: cancelled at shutdown,
/// running jobs get a grace period to finish, then are given back.
fn start_workers(settings: &Settings, jobs: &webhost_control::Jobs, shutdown: &Shutdown) {
    jobs.spawn_workers(
        shutdown.tracker(),
        shutdown.token(),
        settings.job_poll_interval(),
        std::time::Duration::from_secs(10),
    );
}

/// How cells run their jobs and webhooks, from the settings.
fn cell_tuning(settings: &Settings) -> webhost_provider_local::CellTuning {
    webhost_provider_local::CellTuning {
        allow_private_webhooks: settings.webhook_allow_private,
        job_backoff_scale: settings.job_backoff_scale,
        job_poll_interval: settings.job_poll_interval(),
    }
}

/// Where local cells keep their data: databases beside `DATABASE_URL` on
/// PostgreSQL, SQLite files under the data dir otherwise.
fn local_database(settings: &Settings) -> LocalDatabase {
    match settings
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
    }
}

/// `local` beside the remote providers whose credentials are set.
fn providers(settings: &Settings, local: &Arc<LocalProvider>) -> anyhow::Result<Providers> {
    let local: Arc<dyn webhost_provider::Provider> = local.clone();
    Ok(crate::providers::configured(settings)?
        .into_iter()
        .fold(Providers::new(local), Providers::with)
        .reach_cells_at(settings.cell_url.clone()))
}

/// Starts every local cell the catalog knows (their ports change on each
/// start) and records the new URLs, then makes sure the default cells
/// exist.
async fn start_local_cells(
    store: &dyn ControlStore,
    local: &LocalProvider,
    providers: &Providers,
    jobs: &webhost_control::Jobs,
) -> anyhow::Result<Vec<Cell>> {
    for cell in store.cells().await? {
        let running = matches!(
            cell.status,
            CellStatus::Active | CellStatus::Draining | CellStatus::Provisioning
        );
        if cell.provider == ProviderKind::Local && running {
            let url = local.start(cell.id, &cell.name, &cell.region).await?;
            store.set_cell_url(cell.id, &url).await?;
        }
    }
    webhost_control::ensure_cells(store, providers, jobs, &default_cells()).await
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
            shutdown,
        )?;
        let teltonika = serve::bind(&settings.teltonika_listen).await?;
        let teltonika_addr = teltonika.local_addr()?;
        shutdown.spawn(webhost_edge::serve_teltonika(
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
    /// The control plane's job queue (its workers run in this process).
    pub jobs: webhost_control::Jobs,
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
        let local = Arc::new(
            LocalProvider::new(
                local_database(settings),
                keys.clone(),
                control_url,
                shutdown.clone(),
            )
            .with_boot_delay(std::time::Duration::from_millis(
                settings.local_provision_delay_ms,
            ))
            .with_dedicated_delivery(std::time::Duration::from_millis(
                settings.local_dedicated_delay_ms,
            ))
            .with_tuning(cell_tuning(settings)),
        );
        let providers = providers(settings, &local)?;
        let plane = webhost_control::build(webhost_control::ControlParts {
            store: store.clone(),
            tokens: tokens.clone(),
            keys: keys.clone(),
            providers: providers.clone(),
            jobs: jobs(settings, &store),
            region: settings.region(),
            billing: settings.billing(),
            moves: settings.moves(),
        });
        start_workers(settings, &plane.jobs, &shutdown);
        let control = serve::spawn(control_listener, plane.router, &shutdown)?;
        let cells = start_local_cells(store.as_ref(), &local, &providers, &plane.jobs).await?;

        let edge_state = webhost_edge::EdgeState::new(webhost_edge::EdgeParts {
            store: open_edge_store(settings, &store).await?,
            tokens,
            keys,
            control_url: control.url(),
            region: settings.region(),
            redis,
            docs: api_docs(),
            admin_token: settings.admin_token().map(str::to_owned),
        });
        let devices = Devices::start(settings, &edge_state, &shutdown).await?;
        let edge_listener = serve::bind(&settings.edge_listen()).await?;
        let edge = serve::spawn(edge_listener, webhost_edge::router(edge_state), &shutdown)?;
        Ok(Self {
            jobs: plane.jobs.clone(),
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

    /// Stops every server gracefully (in-flight requests finish), then
    /// waits for every background task (cells' writers commit what they
    /// accepted).
    pub async fn stop(self) {
        self.shutdown.finish().await;
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
    let local = Arc::new(
        LocalProvider::new(
            local_database(settings),
            keys.clone(),
            control_url,
            shutdown.clone(),
        )
        .with_boot_delay(std::time::Duration::from_millis(
            settings.local_provision_delay_ms,
        ))
        .with_dedicated_delivery(std::time::Duration::from_millis(
            settings.local_dedicated_delay_ms,
        ))
        .with_tuning(cell_tuning(settings)),
    );
    let providers = providers(settings, &local)?;
    let plane = webhost_control::build(webhost_control::ControlParts {
        store: store.clone(),
        tokens,
        keys,
        providers: providers.clone(),
        jobs: jobs(settings, &store),
        region: settings.region(),
        billing: settings.billing(),
        moves: settings.moves(),
    });
    start_workers(settings, &plane.jobs, &shutdown);
    let server = serve::spawn(listener, plane.router, &shutdown)?;
    start_local_cells(store.as_ref(), &local, &providers, &plane.jobs).await?;
    tracing::info!(url = %server.url(), "control plane listening");
    serve::shutdown_signal().await;
    shutdown.finish().await;
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
        docs: api_docs(),
        admin_token: settings.admin_token().map(str::to_owned),
    });
    let _devices = Devices::start(settings, &state, &shutdown).await?;
    let server = serve::spawn(
        serve::bind(&settings.edge_listen()).await?,
        webhost_edge::router(state),
        &shutdown,
    )?;
    tracing::info!(url = %server.url(), "edge listening");
    serve::shutdown_signal().await;
    shutdown.finish().await;
    Ok(())
}

/// `webhost cell`: one cell alone, with its own database.
pub async fn run_cell(settings: &Settings) -> anyhow::Result<()> {
    let cell = CellServer::start(settings).await?;
    serve::shutdown_signal().await;
    cell.stop().await;
    Ok(())
}

/// One cell serving alone (`webhost cell`; tests start cells of another
/// engine than the control plane's with it and register them).
pub struct CellServer {
    pub server: Server,
    shutdown: Shutdown,
}

impl CellServer {
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        Self::start_inner(settings).await
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Stops serving and waits for the cell's writer to commit.
    pub async fn stop(self) {
        self.shutdown.finish().await;
    }

    async fn start_inner(settings: &Settings) -> anyhow::Result<Self> {
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
            Some(url) if settings.is_postgres() => Arc::new(
                webhost_storage_postgres::PgCellStore::open(url, settings.pool_size).await?,
            ),
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
                allow_private_webhooks: settings.webhook_allow_private,
                job_backoff_scale: settings.job_backoff_scale,
                job_poll_interval: settings.job_poll_interval(),
                ..webhost_cell::CellConfig::new(cell_id, settings.region(), control_url)
            },
            &shutdown,
        );
        let server = serve::spawn(
            serve::bind(&settings.edge_listen()).await?,
            router,
            &shutdown,
        )?;
        tracing::info!(url = %server.url(), %cell_id, "cell listening");
        Ok(Self { server, shutdown })
    }
}
