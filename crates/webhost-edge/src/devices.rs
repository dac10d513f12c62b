//! Device listeners. Decoding is the sans-IO `webhost-protocols` crate; this
//! module does the I/O: it finds the device's tenant in the control plane's
//! device registry, the tenant's cell in the routing table, posts the fixes
//! to the cell, and tells the device only what the cell stored.
//!
//! - **OsmAnd** (HTTP, any method and path): 200 once stored; a malformed
//!   report 400; an unknown device 400 (query/form) or 404 (JSON), as
//!   Traccar Client expects.
//! - **Teltonika** (TCP): IMEI handshake answered `01` for a registered
//!   device and `00` (then close) otherwise; each AVL packet is acknowledged
//!   with the number of records stored, after the cell's commit. A packet
//!   that cannot be stored is not acknowledged and the connection is closed,
//!   so the device resends it; malformed or bad-CRC input closes it too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use webhost_cell::DeviceIngestAnswer;
use webhost_domain::{DeviceId, TenantId};
use webhost_http::client::InternalRequest;
use webhost_http::ApiError;
use webhost_protocols::{osmand, teltonika, Fix};
use webhost_storage::StorageError;

use crate::EdgeState;

/// Concurrent Teltonika connections; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 10_000;
/// A device silent this long is disconnected (devices reconnect on their own).
const IDLE: Duration = Duration::from_secs(15 * 60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why fixes could not be handed over.
#[derive(Debug, thiserror::Error)]
enum DeviceError {
    #[error("unknown device")]
    Unknown,
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

impl EdgeState {
    /// The tenant that registered `device`, if any.
    async fn device_tenant(&self, device: &str) -> Result<Option<TenantId>, DeviceError> {
        let Ok(device) = DeviceId::parse(device) else {
            return Ok(None);
        };
        match self.store.device(&device).await {
            Ok(registration) => Ok(Some(registration.tenant_id)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(err) => Err(DeviceError::Unavailable(err.into())),
        }
    }

    /// Posts fixes to the tenant's cell; the answer says what is stored.
    async fn deliver(
        &self,
        tenant: TenantId,
        fixes: &[Fix],
    ) -> Result<DeviceIngestAnswer, DeviceError> {
        let route = match self.store.route(tenant).await {
            Ok(route) => route,
            Err(StorageError::NotFound(_)) => return Err(DeviceError::Unknown),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        let answer = self
            .client
            .call(
                InternalRequest {
                    method: Method::POST,
                    base_url: &route.cell_url,
                    path: "/internal/v1/device-positions",
                    audience: &webhost_cell::audience(route.cell_id),
                    tenant: Some(tenant),
                    subject: None,
                },
                Some(&fixes),
            )
            .await?
            .success()?
            .json()?;
        Ok(answer)
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
    let unknown = || {
        let status = StatusCode::from_u16(report.form.unknown_device_status())
            .unwrap_or(StatusCode::BAD_REQUEST);
        device_error(
            status,
            "unknown_device",
            format!(
                "device '{}' is not registered; add it to a vehicle first",
                report.fix.device_id
            ),
        )
    };
    let tenant = match state.device_tenant(&report.fix.device_id).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => return unknown(),
        Err(err) => return unavailable(err),
    };
    match state
        .deliver(tenant, std::slice::from_ref(&report.fix))
        .await
    {
        Ok(answer) if answer.accepted == 1 => StatusCode::OK.into_response(),
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
    tracing::error!(error = format!("{err:#}"), "device report not delivered");
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
    let mut tenant: Option<TenantId> = None;
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = match tokio::time::timeout(IDLE, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(err)) => return Err(err),
        };
        for event in session.feed(&buffer[..read]) {
            match event {
                teltonika::Event::Handshake(imei) => match state.device_tenant(&imei).await {
                    Ok(Some(found)) => {
                        tenant = Some(found);
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
                    let (Some(tenant), Some(imei)) = (tenant, session.imei()) else {
                        return Ok(());
                    };
                    let fixes = packet.to_fixes(imei);
                    match state.deliver(tenant, &fixes).await {
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
