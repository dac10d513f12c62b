//! Fakes for the edge's tests: a routing directory the test rewrites (as
//! the control plane would during a move), and cells listening on loopback
//! that record what reached them and can fence their tenants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use webhost_contract::{DeviceIngestAnswer, READ_ONLY_HEADER};
use webhost_domain::{ApiKeyId, CellId, DeviceId, TenantId, VehicleId};
use webhost_http::auth::{InternalKeys, UserTokens};
use webhost_storage::{
    ApiKeyPrincipal, DeviceRegistration, Route, RoutingDirectory, StorageError, StorageResult,
    TenantStatus,
};

use crate::routes::Timing;
use crate::{ApiDocs, EdgeParts, EdgeState};

/// The API key every test request carries.
pub const KEY: &str = "whk_test_key";
/// A fix with this latitude is refused by a fake cell as invalid.
pub const INVALID_LAT: f64 = 89.5;

/// Fast polls; holds long enough that a held read would hang a test.
pub const TIMING: Timing = Timing {
    poll: Duration::from_millis(5),
    max_hold: Duration::from_secs(60),
    settle: Duration::from_millis(200),
};

/// Generous: only keeps a broken test from hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct Directory {
    pub tenant: Mutex<Option<TenantId>>,
    routes: Mutex<HashMap<TenantId, Route>>,
    devices: Mutex<HashMap<String, TenantId>>,
    /// `route()` calls so far.
    pub route_reads: AtomicUsize,
}

impl Directory {
    pub fn set(&self, route: Route) {
        self.routes
            .lock()
            .expect("lock")
            .insert(route.tenant_id, route);
    }

    pub fn get(&self, tenant: TenantId) -> Route {
        self.routes.lock().expect("lock")[&tenant].clone()
    }

    /// What `freeze_route` does.
    pub fn freeze(&self, tenant: TenantId, until: DateTime<Utc>) {
        let mut route = self.get(tenant);
        route.frozen_until = Some(until);
        self.set(route);
    }

    /// What `switch_route` then `unfreeze_route` do.
    pub fn switch_and_unfreeze(&self, tenant: TenantId, to: &FakeCell) {
        let mut route = self.get(tenant);
        route.cell_id = to.id;
        route.cell_url = to.url.clone();
        route.version += 1;
        self.set(route.clone());
        route.frozen_until = None;
        self.set(route);
    }

    pub fn unfreeze(&self, tenant: TenantId) {
        let mut route = self.get(tenant);
        route.frozen_until = None;
        self.set(route);
    }

    pub fn register(&self, device: &str, tenant: TenantId) {
        self.devices
            .lock()
            .expect("lock")
            .insert(device.into(), tenant);
    }

    pub fn reads(&self) -> usize {
        self.route_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RoutingDirectory for Directory {
    async fn ping(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn authenticate_api_key(&self, hash: &[u8; 32]) -> StorageResult<ApiKeyPrincipal> {
        let tenant = self
            .tenant
            .lock()
            .expect("lock")
            .ok_or(StorageError::NotFound("key"))?;
        if *hash != webhost_contract::hash_api_key(KEY) {
            return Err(StorageError::NotFound("api key"));
        }
        Ok(ApiKeyPrincipal {
            key_id: ApiKeyId::new(),
            tenant_id: tenant,
        })
    }

    async fn route(&self, tenant: TenantId) -> StorageResult<Route> {
        self.route_reads.fetch_add(1, Ordering::SeqCst);
        self.routes
            .lock()
            .expect("lock")
            .get(&tenant)
            .cloned()
            .ok_or(StorageError::NotFound("route"))
    }

    async fn device(&self, device: &DeviceId) -> StorageResult<DeviceRegistration> {
        let tenant = *self
            .devices
            .lock()
            .expect("lock")
            .get(device.as_str())
            .ok_or(StorageError::NotFound("device"))?;
        Ok(DeviceRegistration {
            device_id: device.clone(),
            tenant_id: tenant,
            vehicle_id: VehicleId::new(),
        })
    }
}

/// A request as a fake cell saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
    /// Refused as read-only (nothing stored).
    pub refused: bool,
}

type Hook = Box<dyn FnOnce() + Send>;

/// A cell on loopback: answers tenant API requests `200` with its name
/// (`201` for writes), device batches by storing every fix but those at
/// [`INVALID_LAT`]; while `fenced`, refuses writes and fixes as read-only
/// (and marks reads with the read-only header).
pub struct FakeCell {
    pub id: CellId,
    pub name: &'static str,
    pub url: String,
    pub fenced: Mutex<bool>,
    pub received: Mutex<Vec<Received>>,
    /// Fixes stored: (tenant, device, latitude).
    pub stored: Mutex<Vec<(TenantId, String, f64)>>,
    /// Run once, on the first refusal (e.g. the freeze becoming visible).
    pub on_refusal: Mutex<Option<Hook>>,
}

impl FakeCell {
    pub async fn start(name: &'static str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let cell = Arc::new(Self {
            id: CellId::new(),
            name,
            url: format!("http://{}", listener.local_addr().expect("address")),
            fenced: Mutex::new(false),
            received: Mutex::default(),
            stored: Mutex::default(),
            on_refusal: Mutex::default(),
        });
        let router = axum::Router::new()
            .route(
                webhost_contract::paths::DEVICE_POSITIONS_BATCH,
                axum::routing::post(batch),
            )
            .fallback(api)
            .with_state(cell.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        cell
    }

    pub fn fence(&self, fenced: bool) {
        *self.fenced.lock().expect("lock") = fenced;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub fn stored(&self) -> Vec<(TenantId, String, f64)> {
        self.stored.lock().expect("lock").clone()
    }

    pub fn when_refusing(&self, hook: impl FnOnce() + Send + 'static) {
        *self.on_refusal.lock().expect("lock") = Some(Box::new(hook));
    }

    fn refusing(&self) -> bool {
        let fenced = *self.fenced.lock().expect("lock");
        if fenced {
            if let Some(hook) = self.on_refusal.lock().expect("lock").take() {
                hook();
            }
        }
        fenced
    }

    pub fn route(&self, tenant: TenantId, version: i64) -> Route {
        Route {
            tenant_id: tenant,
            cell_id: self.id,
            cell_url: self.url.clone(),
            version,
            tenant_status: TenantStatus::Active,
            frozen_until: None,
        }
    }
}

async fn api(State(cell): State<Arc<FakeCell>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let write = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = write && cell.refusing();
    cell.received.lock().expect("lock").push(Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        body,
        refused,
    });
    if refused {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": { "code": "read_only" } })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(READ_ONLY_HEADER, HeaderValue::from_static("1"));
        return response;
    }
    let status = if write {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(serde_json::json!({ "cell": cell.name }))).into_response();
    if *cell.fenced.lock().expect("lock") {
        // Reads of a fenced tenant carry the mark too: the edge must never
        // pass it on, whatever it is on.
        response
            .headers_mut()
            .insert(READ_ONLY_HEADER, HeaderValue::from_static("1"));
    }
    response
}

async fn batch(
    State(cell): State<Arc<FakeCell>>,
    Json(items): Json<Vec<(TenantId, Vec<webhost_protocols::Fix>)>>,
) -> Json<Vec<DeviceIngestAnswer>> {
    let fenced = cell.refusing();
    let answers = items
        .into_iter()
        .map(|(tenant, fixes)| {
            cell.received.lock().expect("lock").push(Received {
                method: Method::POST,
                path: webhost_contract::paths::DEVICE_POSITIONS_BATCH.into(),
                body: Bytes::from(fixes.len().to_string()),
                refused: fenced,
            });
            if fenced {
                return DeviceIngestAnswer::all_read_only(fixes.len());
            }
            let mut answer = DeviceIngestAnswer::default();
            for (i, fix) in fixes.into_iter().enumerate() {
                if fix.lat == INVALID_LAT {
                    answer.rejected.push((i, "invalid".into()));
                } else {
                    answer.accepted += 1;
                    cell.stored
                        .lock()
                        .expect("lock")
                        .push((tenant, fix.device_id, fix.lat));
                }
            }
            answer
        })
        .collect();
    Json(answers)
}

/// An edge on `directory`, with the fast [`TIMING`].
pub fn edge(directory: Arc<Directory>) -> EdgeState {
    EdgeState::with_timing(
        EdgeParts {
            store: directory,
            docs: ApiDocs::default(),
            admin_token: None,
            tokens: UserTokens::new(b"test user token secret, long enough", 3600),
            keys: Arc::new(InternalKeys::derive(b"test secret key base")),
            control_url: "http://127.0.0.1:9".into(),
            region: "test".into(),
            redis: None,
        },
        TIMING,
    )
}

/// One tenant routed to `cell` (version 1), authenticated by [`KEY`].
pub fn tenant_on(directory: &Directory, cell: &FakeCell) -> TenantId {
    let tenant = TenantId::new();
    *directory.tenant.lock().expect("lock") = Some(tenant);
    directory.set(cell.route(tenant, 1));
    tenant
}

/// Waits (polling, bounded by [`PATIENCE`]) until `done` holds.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting until {what}");
}

/// A far freeze deadline: only the test lifts it.
pub fn far() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(600)
}
