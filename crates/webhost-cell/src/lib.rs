//! The cell: one running deployment of the fleet-tracking application with
//! its own database, hosting many tenants. It serves the tenant API (reached
//! only through the edge) and an internal API for the control plane, and
//! accepts nothing without a valid internal credential.

mod devices;
mod directory;
mod events;
mod geofences;
mod ingest;
mod internal;
mod live;
pub mod maintenance;
mod positions;
pub mod trips;
mod vehicles;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::Router;
use webhost_api::Api;
use webhost_domain::CellId;
use webhost_http::auth::{InternalAuth, InternalKeys};
use webhost_http::client::InternalClient;
use webhost_http::health::{HealthReport, ServiceHealth};
use webhost_http::serve::Shutdown;
use webhost_storage::CellStore;

#[derive(Clone)]
pub struct CellConfig {
    pub cell_id: CellId,
    pub region: String,
    /// Where the control plane's internal API is (device registry).
    pub control_url: String,
}

#[derive(Clone)]
pub struct CellState {
    store: Arc<dyn CellStore>,
    ingest: ingest::Ingest,
    bus: live::Bus,
    directory: directory::Directory,
    auth: InternalAuth,
    control: InternalClient,
    config: Arc<CellConfig>,
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
}

/// The cell's router. Its background work (the ingest writer, the offline
/// sweeper, daily maintenance) runs on `tasks`: cancelled with it, and the
/// writer commits everything it accepted before it ends.
pub fn router(
    store: Arc<dyn CellStore>,
    keys: Arc<InternalKeys>,
    config: CellConfig,
    tasks: &Shutdown,
) -> Router {
    let bus = live::Bus::default();
    maintenance::spawn_daily(store.clone(), tasks);
    let state = CellState {
        ingest: ingest::Ingest::start(store.clone(), bus.clone(), tasks),
        bus,
        directory: directory::Directory::new(store.clone()),
        store,
        auth: InternalAuth {
            keys: keys.clone(),
            audience: webhost_contract::cell_audience(config.cell_id),
        },
        control: InternalClient::new(keys, webhost_contract::CELL),
        config: Arc::new(config),
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
        .fallback(webhost_http::fallback)
        .method_not_allowed_fallback(webhost_http::method_not_allowed)
        .with_state(state);
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
