//! The edge: the single public entry. It authenticates each request (user
//! JWT or API key), finds the tenant's cell in the routing table, and
//! forwards the request over HTTP with an internal credential bound to that
//! cell, method and path. Only the edge knows where a tenant lives.

mod devices;
mod forward;
mod routes;
#[cfg(test)]
mod testing;

pub use devices::{osmand_router, serve_teltonika};

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use webhost_http::auth::{InternalKeys, UserTokens};
use webhost_http::client::InternalClient;
use webhost_http::health::{HealthReport, ServiceHealth};
use webhost_storage::RoutingDirectory;

pub struct EdgeParts {
    /// API keys, the routing table and the device registry: the control
    /// plane's store, a read replica of it, or a cache in front.
    pub store: Arc<dyn RoutingDirectory>,
    /// The public API's descriptions, served as they are.
    pub docs: ApiDocs,
    /// `WEBHOST_ADMIN_TOKEN`, the operator's credential; `None` disables
    /// the operator API at this edge.
    pub admin_token: Option<String>,
    pub tokens: UserTokens,
    pub keys: Arc<InternalKeys>,
    pub control_url: String,
    pub region: String,
    pub redis: Option<redis::aio::ConnectionManager>,
}

/// The edge's shared state. axum clones it for every request (twice on the
/// device listener), so all of it sits behind one `Arc`: a clone is a
/// reference count, not copies of the token keys and validation rules.
#[derive(Clone)]
pub struct EdgeState(Arc<Shared>);

/// What [`EdgeState`] holds; nothing of it is public.
pub struct Shared {
    store: Arc<dyn RoutingDirectory>,
    /// Tenant routes with the version rule, and the hold of a moving
    /// tenant's writes.
    routes: routes::Routes,
    tokens: UserTokens,
    client: InternalClient,
    control_url: String,
    region: String,
    redis: Option<redis::aio::ConnectionManager>,
    devices: devices::Devices,
    docs: ApiDocs,
    /// SHA-256 of the admin token: compared in constant time, and the
    /// token itself is not kept.
    admin_token_hash: Option<[u8; 32]>,
}

impl std::ops::Deref for EdgeState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl EdgeState {
    pub fn new(parts: EdgeParts) -> Self {
        Self::with_timing(parts, routes::Timing::DEFAULT)
    }

    fn with_timing(parts: EdgeParts, timing: routes::Timing) -> Self {
        let client = InternalClient::new(parts.keys, "edge");
        Self(Arc::new(Shared {
            devices: devices::Devices::new(client.clone()),
            routes: routes::Routes::new(parts.store.clone(), timing),
            store: parts.store,
            tokens: parts.tokens,
            client,
            control_url: parts.control_url,
            region: parts.region,
            redis: parts.redis,
            docs: parts.docs,
            admin_token_hash: parts
                .admin_token
                .filter(|t| !t.is_empty())
                .map(|t| webhost_contract::hash_api_key(&t)),
        }))
    }
}

/// The public API's descriptions. They are built from the services'
/// declarations by whoever wires the edge (the binary), so the edge need
/// not link the services it fronts.
#[derive(Clone, Debug, Default)]
pub struct ApiDocs {
    /// `GET /api/openapi.json`.
    pub openapi_json: String,
    /// `GET /api/graphql/schema.graphql`.
    pub graphql_sdl: String,
}

pub fn router(state: EdgeState) -> Router {
    let router = Router::new()
        .route("/api/health", get(health))
        .merge(docs(&state.docs))
        .route(
            webhost_contract::paths::GRAPHQL,
            get(|| async { webhost_api::graphiql_page(webhost_contract::paths::GRAPHQL) })
                .fallback(forward::forward),
        )
        .fallback(forward::forward)
        .method_not_allowed_fallback(webhost_http::method_not_allowed)
        .with_state(state);
    webhost_http::common_layers(router)
}

/// The API's descriptions, public: `GET /api/openapi.json` and the
/// GraphQL schema as SDL at `GET /api/graphql/schema.graphql`.
fn docs(docs: &ApiDocs) -> Router<EdgeState> {
    let openapi = bytes::Bytes::from(docs.openapi_json.clone());
    let sdl = bytes::Bytes::from(docs.graphql_sdl.clone());
    Router::new()
        .route(
            "/api/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }
            }),
        )
        .route(
            "/api/graphql/schema.graphql",
            get(move || {
                let sdl = sdl.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sdl) }
            }),
        )
}

async fn health(State(state): State<EdgeState>) -> HealthReport {
    let database = match state.store.ping().await {
        Ok(()) => ServiceHealth::Healthy,
        Err(err) => {
            tracing::error!(error = %err, "database unhealthy");
            ServiceHealth::Unhealthy
        }
    };
    let redis = match state.redis.clone() {
        None => ServiceHealth::Disabled,
        Some(mut conn) => {
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<String>(&mut conn);
            match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => ServiceHealth::Healthy,
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "redis unhealthy");
                    ServiceHealth::Unhealthy
                }
                Err(_) => {
                    tracing::error!("redis ping timed out");
                    ServiceHealth::Unhealthy
                }
            }
        }
    };
    HealthReport::new(
        BTreeMap::from([("database", database), ("redis", redis)]),
        state.region.to_string(),
    )
}

/// Connects to Redis, failing fast when it is configured but unreachable.
pub async fn connect_redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    use anyhow::Context;
    let client = redis::Client::open(url).context("invalid REDIS_URL")?;
    let manager = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        redis::aio::ConnectionManager::new(client),
    )
    .await
    .context("connecting to Redis timed out")?
    .context("connecting to Redis")?;
    Ok(manager)
}
