//! The control plane: customers, users, API keys, the catalog, cells and
//! placement, the routing table and the global device registry. It reaches
//! every cell, local or remote, through the cell's HTTP API only.

mod devices;
mod identity;
pub mod provider;
mod subscription;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::{delete, get, post, put};
use axum::Router;
use webhost_http::auth::{InternalAuth, InternalKeys, UserTokens};
use webhost_http::client::InternalClient;
use webhost_http::health::{HealthReport, ServiceHealth};
use webhost_storage::ControlStore;

pub use identity::ApiKeySecret;
pub use provider::{ensure_cells, provision_cell, Providers};

#[derive(Clone)]
pub struct ControlState {
    store: Arc<dyn ControlStore>,
    tokens: UserTokens,
    auth: InternalAuth,
    cells: InternalClient,
    providers: Providers,
    login_limiter: Arc<identity::LoginLimiter>,
    region: String,
}

impl FromRef<ControlState> for InternalAuth {
    fn from_ref(state: &ControlState) -> Self {
        state.auth.clone()
    }
}

pub struct ControlParts {
    pub store: Arc<dyn ControlStore>,
    pub tokens: UserTokens,
    pub keys: Arc<InternalKeys>,
    pub providers: Providers,
    pub region: String,
}

pub fn router(parts: ControlParts) -> Router {
    let state = ControlState {
        store: parts.store,
        tokens: parts.tokens,
        auth: InternalAuth {
            keys: parts.keys.clone(),
            audience: webhost_contract::CONTROL.into(),
        },
        cells: InternalClient::new(parts.keys, webhost_contract::CONTROL),
        providers: parts.providers,
        login_limiter: Arc::new(identity::LoginLimiter::new()),
        region: parts.region,
    };
    let router = Router::new()
        .route("/api/health", get(health))
        .route("/api/v1/signup", post(identity::signup))
        .route("/api/v1/login", post(identity::login))
        .route(
            "/api/v1/api-keys",
            get(identity::list_api_keys).post(identity::create_api_key),
        )
        .route("/api/v1/api-keys/{id}", delete(identity::revoke_api_key))
        .route("/api/v1/subscription", get(subscription::show))
        .route(
            webhost_contract::paths::DEVICE_ROUTE,
            put(devices::claim).delete(devices::release),
        )
        .fallback(webhost_http::fallback)
        .method_not_allowed_fallback(webhost_http::method_not_allowed)
        .with_state(state);
    webhost_http::common_layers(router)
}

async fn health(State(state): State<ControlState>) -> HealthReport {
    let database = match state.store.ping().await {
        Ok(()) => ServiceHealth::Healthy,
        Err(err) => {
            tracing::error!(error = %err, "control database unhealthy");
            ServiceHealth::Unhealthy
        }
    };
    HealthReport::new(
        BTreeMap::from([("database", database)]),
        state.region.clone(),
    )
}
