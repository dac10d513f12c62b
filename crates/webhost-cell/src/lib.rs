//! The cell: one running deployment of the fleet-tracking application with
//! its own database, hosting many tenants. It serves the tenant API (reached
//! only through the edge) and an internal API for the control plane, and
//! accepts nothing without a valid internal credential.

mod devices;
mod directory;
mod events;
mod fence;
mod geofences;
mod ingest;
mod internal;
mod live;
pub mod maintenance;
mod positions;
mod transfer;
pub mod trips;
mod usage;
mod vehicles;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::Router;
use webhost_api::Api;
use webhost_domain::CellId;
use webhost_http::auth::{InternalAuth, InternalKeys, TenantRequests};
use webhost_http::client::InternalClient;
use webhost_http::health::{HealthReport, ServiceHealth};
use webhost_http::serve::Shutdown;
use webhost_jobs::{queues, Jobs, QueueConfig};
use webhost_storage::{CellStore, JobStore};

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the
/// `WebHost-Signature` of a webhook delivery (docs/WEBHOOKS.md).
pub use webhooks::deliver::signature as webhook_signature;

#[derive(Clone, Debug)]
pub struct CellConfig {
    pub cell_id: CellId,
    pub region: String,
    /// Where the control plane's internal API is (device registry).
    pub control_url: String,
    /// Webhooks may target loopback, private and link-local addresses and
    /// local names (tests, a receiver on the same network). Off by
    /// default: a tenant could otherwise make the cell call its neighbours.
    pub allow_private_webhooks: bool,
    /// Multiplies the retry delays of the cell's jobs (webhook deliveries);
    /// 1 in production, tiny in tests.
    pub job_backoff_scale: f64,
    /// How often idle job workers look for due jobs.
    pub job_poll_interval: Duration,
}

impl CellConfig {
    /// The defaults: no private webhook targets, the real retry schedule,
    /// jobs polled every second.
    pub fn new(cell_id: CellId, region: String, control_url: String) -> Self {
        Self {
            cell_id,
            region,
            control_url,
            allow_private_webhooks: false,
            job_backoff_scale: 1.0,
            job_poll_interval: Duration::from_secs(1),
        }
    }
}

/// Concurrent webhook deliveries per cell.
const DELIVERY_CONCURRENCY: usize = 10;
/// How long running deliveries may finish at shutdown (one attempt times
/// out after 10 s).
const JOBS_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct CellState {
    store: Arc<dyn CellStore>,
    ingest: ingest::Ingest,
    bus: live::Bus,
    directory: directory::Directory,
    auth: InternalAuth,
    control: InternalClient,
    config: Arc<CellConfig>,
    meter: usage::Meter,
    fence: fence::Fence,
}

impl FromRef<CellState> for InternalAuth {
    fn from_ref(state: &CellState) -> Self {
        state.auth.clone()
    }
}

/// The tenant API: every resource's operations, declared once each; REST,
/// OpenAPI and GraphQL are derived from this list.
pub fn api() -> Api<CellState> {
    Api::new("WebHost fleet API", env!("CARGO_PKG_VERSION"))
        .operation::<vehicles::ListVehicles>()
        .operation::<vehicles::ShowVehicle>()
        .operation::<vehicles::CreateVehicle>()
        .operation::<vehicles::UpdateVehicle>()
        .operation::<vehicles::DeleteVehicle>()
        .operation::<positions::IngestPositions>()
        .operation::<positions::LatestPositions>()
        .operation::<positions::History>()
        .operation::<positions::PositionBuckets>()
        .operation::<positions::Trips>()
        .operation::<positions::Stops>()
        .operation::<geofences::ListGeofences>()
        .operation::<geofences::ShowGeofence>()
        .operation::<geofences::CreateGeofence>()
        .operation::<geofences::UpdateGeofence>()
        .operation::<geofences::DeleteGeofence>()
        .operation::<events::ListEvents>()
        .operation::<webhooks::ListWebhooks>()
        .operation::<webhooks::ShowWebhook>()
        .operation::<webhooks::CreateWebhook>()
        .operation::<webhooks::UpdateWebhook>()
        .operation::<webhooks::DeleteWebhook>()
        .operation::<webhooks::ListWebhookDeliveries>()
}

/// The cell's job queue (its own database) with its handlers; workers run
/// the `default` queue only.
fn jobs(store: &Arc<dyn CellStore>, config: &CellConfig) -> Jobs {
    let queue: Arc<dyn JobStore> = store.clone();
    Jobs::new(queue)
        .with_queues(vec![QueueConfig::new(
            queues::DEFAULT,
            DELIVERY_CONCURRENCY,
        )])
        .with_backoff_scale(config.job_backoff_scale)
        .register(webhooks::deliver::DeliverWebhook::new(
            store.clone(),
            webhooks::deliver::Outbound::new(config.allow_private_webhooks),
        ))
}

/// The cell's router. Its background work (the ingest writer, the offline
/// sweeper, daily maintenance, the job workers that deliver webhooks) runs
/// on `tasks`: cancelled with it, and the writer commits everything it
/// accepted before it ends.
pub fn router(
    store: Arc<dyn CellStore>,
    keys: Arc<InternalKeys>,
    config: CellConfig,
    tasks: &Shutdown,
) -> Router {
    let bus = live::Bus::default();
    jobs(&store, &config).spawn_workers(
        tasks.tracker(),
        tasks.token(),
        config.job_poll_interval,
        JOBS_GRACE,
    );
    let meter = usage::Meter::default();
    tasks.spawn(
        meter
            .clone()
            .flush_periodically(store.clone(), tasks.wait()),
    );
    let fence = fence::Fence::new(store.clone());
    let state = CellState {
        ingest: ingest::Ingest::start(
            store.clone(),
            bus.clone(),
            meter.clone(),
            fence.clone(),
            tasks,
        ),
        bus,
        directory: directory::Directory::new(store.clone()),
        store,
        auth: InternalAuth {
            keys: keys.clone(),
            audience: webhost_contract::cell_audience(config.cell_id),
        },
        control: InternalClient::new(keys, webhost_contract::CELL),
        config: Arc::new(config),
        meter: meter.clone(),
        fence,
    };
    let api = api();
    let graphql = api
        .graphql_router(webhost_contract::paths::GRAPHQL)
        .expect("the declared operations make a valid GraphQL schema");
    let router = Router::new()
        .route("/api/health", get(health))
        .merge(api.router())
        .merge(graphql)
        .merge(live::routes())
        .merge(devices::routes())
        .merge(maintenance::routes())
        .merge(events::routes())
        .merge(internal::routes())
        .merge(transfer::routes())
        .fallback(webhost_http::fallback)
        .method_not_allowed_fallback(webhost_http::method_not_allowed)
        // A tenant being moved writes nothing here (fence.rs).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            fence::guard_writes,
        ))
        .with_state(state)
        // Every tenant request counts towards its usage.
        .layer(axum::Extension(TenantRequests::new(move |tenant| {
            meter.request(tenant)
        })));
    webhost_http::common_layers(router)
}

async fn health(State(state): State<CellState>) -> HealthReport {
    let database = match state.store.ping().await {
        Ok(()) => ServiceHealth::Healthy,
        Err(err) => {
            tracing::error!(error = %err, "cell database unhealthy");
            ServiceHealth::Unhealthy
        }
    };
    HealthReport::new(
        BTreeMap::from([("database", database)]),
        state.config.region.clone(),
    )
}
