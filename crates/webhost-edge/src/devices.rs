//! Device listeners. Decoding is the sans-IO `webhost-protocols` crate; this
//! module does the I/O: it finds the device's tenant in the control plane's
//! device registry, the tenant's cell in the routing table (both remembered
//! for a few seconds, [`cache`]), posts the fixes to the cell together with
//! other devices' fixes for that cell ([`batch`]), and tells the device only
//! what the cell stored.
//!
//! - **OsmAnd** (HTTP, any method and path): 200 once stored; a malformed
//!   report 400; an unknown device 400 (query/form) or 404 (JSON), as
//!   Traccar Client expects.
//! - **Teltonika** (TCP): IMEI handshake answered `01` for a registered
//!   device and `00` (then close) otherwise; each AVL packet is acknowledged
//!   with the number of records stored, after the cell's commit. A packet
//!   that cannot be stored is not acknowledged and the connection is closed,
//!   so the device resends it; malformed or bad-CRC input closes it too.

mod batch;
mod cache;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use webhost_contract::DeviceIngestAnswer;
use webhost_domain::DeviceId;
use webhost_http::client::InternalClient;
use webhost_http::ApiError;
use webhost_protocols::{osmand, teltonika, Fix};
use webhost_storage::StorageError;

use self::batch::{BatchError, Batches, Limits};
use self::cache::{CellTarget, DeviceRoute, RouteCache};
use crate::EdgeState;

/// Concurrent Teltonika connections; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 10_000;
/// A device silent this long is disconnected (devices reconnect on their own).
const IDLE: Duration = Duration::from_secs(15 * 60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the device listeners share: where devices go ([`cache`]) and the
/// per-cell batching of their fixes ([`batch`]).
pub(crate) struct Devices {
    routes: RouteCache,
    batches: Batches<InternalClient>,
}

impl Devices {
    pub(crate) fn new(client: InternalClient) -> Self {
        Self {
            routes: RouteCache::new(cache::TTL, cache::CAPACITY),
            batches: Batches::new(client, Limits::DEFAULT),
        }
    }
}

/// Why fixes could not be handed over.
#[derive(Debug, thiserror::Error)]
enum DeviceError {
    #[error("unknown device")]
    Unknown,
    #[error("too many fixes are waiting for the cell")]
    Busy,
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

impl From<BatchError> for DeviceError {
    fn from(err: BatchError) -> Self {
        match err {
            BatchError::Busy => Self::Busy,
            err => Self::Unavailable(err.into()),
        }
    }
}

impl EdgeState {
    /// Asks the control store where `device`'s fixes go (registry, then
    /// routing table) and remembers the answer; `None` for an unknown
    /// device, which is not remembered.
    async fn look_up(&self, device: &str) -> Result<Option<DeviceRoute>, DeviceError> {
        let Ok(device) = DeviceId::parse(device) else {
            return Ok(None);
        };
        let registration = match self.store.device(&device).await {
            Ok(registration) => registration,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        let route = match self.store.route(registration.tenant_id).await {
            Ok(route) => route,
            // Registered by a tenant that is gone: nobody's device.
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        let found = DeviceRoute {
            tenant: registration.tenant_id,
            cell: Arc::new(CellTarget::new(route.cell_id, route.cell_url)),
        };
        self.devices
            .routes
            .insert(device.as_str(), found.clone(), Instant::now());
        Ok(Some(found))
    }

    /// Where `device`'s fixes go, and whether that came from the cache.
    async fn locate(&self, device: &str) -> Result<Option<(DeviceRoute, bool)>, DeviceError> {
        // The cache is keyed like `DeviceId::parse` spells the device.
        let key = device.trim();
        if let Some(route) = self.devices.routes.get(key, Instant::now()) {
            return Ok(Some((route, true)));
        }
        Ok(self.look_up(key).await?.map(|route| (route, false)))
    }

    /// Posts `fixes`, all sent by `device`, to its tenant's cell (batched
    /// with other devices' fixes for that cell); the answer says what is
    /// stored.
    async fn deliver(
        &self,
        device: &str,
        fixes: Arc<[Fix]>,
    ) -> Result<DeviceIngestAnswer, DeviceError> {
        let (route, cached) = self.locate(device).await?.ok_or(DeviceError::Unknown)?;
        let key = device.trim();
        let answer = match self
            .devices
            .batches
            .submit(&route.cell, route.tenant, fixes.clone())
            .await
        {
            Ok(answer) => answer,
            Err(err @ BatchError::Failed(_)) => {
                // Perhaps an outdated cell address (a cell restarted on
                // another port): the next report reads the route again.
                self.devices.routes.invalidate(key, &route);
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        if !cached || answer.unknown_devices.is_empty() {
            return Ok(answer);
        }
        // The cell checked the device against that tenant's vehicles and
        // refused it: the cached owner is out of date (moved or released).
        // Nothing was stored for it; ask the control store once more.
        self.devices.routes.invalidate(key, &route);
        let fresh = self.look_up(key).await?.ok_or(DeviceError::Unknown)?;
        if fresh == route {
            return Ok(answer);
        }
        tracing::info!(%device, tenant = %fresh.tenant, "device changed owner; resent");
        Ok(self
            .devices
            .batches
            .submit(&fresh.cell, fresh.tenant, fixes)
            .await?)
    }
}

pub fn osmand_router(state: EdgeState) -> Router {
    let router = Router::new().fallback(osmand).with_state(state);
    webhost_http::common_layers(router)
}

fn device_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

async fn osmand(State(state): State<EdgeState>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, osmand::MAX_INPUT).await else {
        return device_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a report is at most {} bytes", osmand::MAX_INPUT),
        );
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let report = match osmand::parse(parts.uri.query(), content_type, &body, Utc::now()) {
        Ok(report) => report,
        Err(err) => {
            return device_error(StatusCode::BAD_REQUEST, "invalid_report", err.to_string())
        }
    };
    let form = report.form;
    let fixes: Arc<[Fix]> = Arc::from([report.fix]);
    let device = fixes[0].device_id.as_str();
    let unknown = || {
        let status =
            StatusCode::from_u16(form.unknown_device_status()).unwrap_or(StatusCode::BAD_REQUEST);
        device_error(
            status,
            "unknown_device",
            format!("device '{device}' is not registered; add it to a vehicle first"),
        )
    };
    match state.deliver(device, fixes.clone()).await {
        Ok(answer) if answer.accepted == 1 => StatusCode::OK.into_response(),
        // Registered, but to no vehicle of its tenant (any more).
        Ok(answer) if !answer.unknown_devices.is_empty() => unknown(),
        Ok(answer) => device_error(
            StatusCode::BAD_REQUEST,
            "invalid_report",
            answer
                .rejected
                .first()
                .map(|(_, why)| why.clone())
                .unwrap_or_else(|| "the report was not stored".into()),
        ),
        Err(DeviceError::Unknown) => unknown(),
        Err(err) => unavailable(err),
    }
}

fn unavailable(err: DeviceError) -> Response {
    if matches!(err, DeviceError::Busy) {
        tracing::warn!("device report refused: the cell's queue is full");
    } else {
        tracing::error!(error = format!("{err:#}"), "device report not delivered");
    }
    device_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the report could not be stored right now; send it again",
    )
}

/// Accepts Teltonika connections until `shutdown` resolves.
pub async fn serve_teltonika(
    listener: TcpListener,
    state: EdgeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "teltonika accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("teltonika", %peer);
            let _enter = span.enter();
            if let Err(err) = teltonika_connection(stream, state).await {
                tracing::debug!(error = %err, "teltonika connection closed");
            }
            drop(permit);
        });
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

async fn teltonika_connection(mut stream: TcpStream, state: EdgeState) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut session = teltonika::Session::new();
    let mut accepted = false;
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = match tokio::time::timeout(IDLE, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(err)) => return Err(err),
        };
        for event in session.feed(&buffer[..read]) {
            match event {
                teltonika::Event::Handshake(imei) => match state.locate(&imei).await {
                    Ok(Some(_)) => {
                        accepted = true;
                        write(&mut stream, &[teltonika::ACCEPT]).await?;
                    }
                    Ok(None) => {
                        tracing::info!(%imei, "unknown device refused");
                        write(&mut stream, &[teltonika::REJECT]).await?;
                        return Ok(());
                    }
                    Err(err) => {
                        // Neither accept nor reject: the device retries later.
                        tracing::error!(error = format!("{err:#}"), "device lookup failed");
                        return Ok(());
                    }
                },
                teltonika::Event::Packet(packet) => {
                    let (true, Some(imei)) = (accepted, session.imei()) else {
                        return Ok(());
                    };
                    // Looked up per packet (from the cache), so a device that
                    // changes owner mid-connection follows at once.
                    let fixes: Arc<[Fix]> = packet.to_fixes(imei).into();
                    match state.deliver(imei, fixes).await {
                        Ok(answer) => {
                            if !answer.rejected.is_empty() {
                                tracing::warn!(%imei, rejected = ?answer.rejected, "records refused");
                            }
                            let accepted = u32::try_from(answer.accepted).unwrap_or(u32::MAX);
                            write(&mut stream, &teltonika::encode_ack(accepted)).await?;
                        }
                        Err(err) => {
                            tracing::error!(%imei, error = format!("{err:#}"), "packet not stored; not acknowledged");
                            return Ok(());
                        }
                    }
                }
                teltonika::Event::Error(err) => {
                    tracing::info!(error = %err, "malformed input; closing");
                    return Ok(());
                }
            }
        }
    }
}
