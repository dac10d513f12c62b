//! The control plane: customers, users, API keys, the catalog, cells and
//! placement, the routing table and the global device registry. It reaches
//! every cell, local or remote, through the cell's HTTP API only.

mod admin;
pub mod billing;
pub mod cells;
mod devices;
pub mod economics;
mod identity;
pub mod maintenance;
pub mod migrations;
pub mod moves;
pub mod provider;
mod subscription;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::{get, post, put};
use axum::Router;
use webhost_api::{Anonymous, Api};
use webhost_http::auth::{InternalAuth, InternalKeys, UserTokens};
use webhost_http::client::InternalClient;
use webhost_http::health::{HealthReport, ServiceHealth};
use webhost_storage::ControlStore;

pub use billing::{BillingSettings, WebhookSecret};
pub use cells::{ProvisionCell, RetireCell};
pub use identity::ApiKeySecret;
pub use moves::{MoveSettings, MoveTenant, StopAt};
pub use provider::{ensure_cells, provision_cell, Providers};
pub use webhost_jobs::Jobs;

#[derive(Clone)]
pub struct ControlState {
    store: Arc<dyn ControlStore>,
    tokens: UserTokens,
    auth: InternalAuth,
    cells: InternalClient,
    providers: Providers,
    jobs: Jobs,
    /// Serialises placement decisions (see `cells::place_tenant`).
    placing: Arc<tokio::sync::Mutex<()>>,
    login_limiter: Arc<identity::LoginLimiter>,
    region: String,
    billing: BillingSettings,
    moves: Arc<moves::Moves>,
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
    /// The job queue on the control plane's database; the control plane
    /// registers its handlers on it.
    pub jobs: Jobs,
    pub region: String,
    /// Stripe: the webhook secret and the grace period of unpaid invoices.
    pub billing: BillingSettings,
    /// How tenant moves run (SPEC §6).
    pub moves: MoveSettings,
}

/// Signup and login: no credentials.
fn public_api() -> Api<ControlState, Anonymous> {
    Api::new("WebHost accounts", env!("CARGO_PKG_VERSION"))
        .operation::<identity::Signup>()
        .operation::<identity::Login>()
}

/// A tenant's own account: API keys and subscription.
fn tenant_api() -> Api<ControlState> {
    Api::new("WebHost accounts", env!("CARGO_PKG_VERSION"))
        .operation::<identity::ListApiKeys>()
        .operation::<identity::CreateApiKey>()
        .operation::<identity::RevokeApiKey>()
        .operation::<subscription::ShowSubscription>()
        .operation::<subscription::ChangeSubscription>()
}

/// The OpenAPI documents of the control plane's declared operations.
pub fn openapi() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        public_api().openapi(),
        tenant_api().openapi(),
        admin::api().openapi(),
    ]
}

/// The control plane's HTTP API and its jobs (whose workers the caller
/// starts, on the process's task tracker).
pub struct ControlPlane {
    pub router: Router,
    pub jobs: Jobs,
}

pub fn build(parts: ControlParts) -> ControlPlane {
    let cells = InternalClient::new(parts.keys.clone(), webhost_contract::CONTROL);
    let moves = moves::Moves::new(parts.store.clone(), cells.clone(), parts.moves);
    let jobs = parts
        .jobs
        .register(ProvisionCell {
            store: parts.store.clone(),
            providers: parts.providers.clone(),
            client: cells.clone(),
        })
        .register(RetireCell {
            store: parts.store.clone(),
            providers: parts.providers.clone(),
        })
        .register(MoveTenant {
            moves: moves.clone(),
        })
        .register(moves::Rebalance {
            moves: moves.clone(),
        })
        .add_cron(
            "rebalance",
            webhost_jobs::CronSchedule::Every(std::time::Duration::from_secs(300)),
            "rebalance",
            serde_json::json!({}),
        );
    let jobs = maintenance::schedule(jobs, &parts.store, &cells);
    let jobs = billing::schedule(jobs, &parts.store, parts.billing.grace, &moves);
    let state = ControlState {
        store: parts.store,
        tokens: parts.tokens,
        auth: InternalAuth {
            keys: parts.keys,
            audience: webhost_contract::CONTROL.into(),
        },
        cells,
        providers: parts.providers,
        jobs: jobs.clone(),
        placing: Arc::default(),
        login_limiter: Arc::new(identity::LoginLimiter::new()),
        region: parts.region,
        billing: parts.billing,
        moves: moves.clone(),
    };
    // The router owns the state the move jobs reach placement through.
    let shared = Arc::new(state.clone());
    moves.attach(&shared);
    let router = Router::new()
        .route("/api/health", get(health))
        .merge(public_api().router())
        // Raw bytes and a Stripe signature, not an `Operation`: the HMAC is
        // over the body exactly as sent.
        .route(billing::WEBHOOK_PATH, post(billing::stripe_webhook))
        .merge(tenant_api().router())
        .route(
            webhost_contract::paths::DEVICE_ROUTE,
            put(devices::claim).delete(devices::release),
        )
        .merge(admin::api().router())
        .fallback(webhost_http::fallback)
        .method_not_allowed_fallback(webhost_http::method_not_allowed)
        .with_state(state)
        .layer(axum::Extension(shared));
    ControlPlane {
        router: webhost_http::common_layers(router),
        jobs,
    }
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
