//! Device listeners. Decoding is the sans-IO `webhost-protocols` crate; this
//! module does the I/O: it finds the device's tenant in the control plane's
//! device registry, the tenant's cell in the routing table (both remembered
//! for a few minutes, [`cache`]), posts the fixes to the cell together with
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
//! - **A tenant being moved** (SPEC §6): fixes the cell refuses as
//!   read-only are held while the tenant's route is frozen and sent where
//!   it then points (`routes.rs`); the device waits meanwhile — a Teltonika
//!   connection stays open — and is answered with what the new cell stored.
//!   Fixes that find no writable cell (a move aborted just then) are not
//!   acknowledged (OsmAnd 503, Teltonika: no ack, connection closed).

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
use self::cache::{DeviceRoute, RouteCache};
use crate::routes::HoldError;
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
    /// The tenant is read-only where its route points (a move was just
    /// aborted, or is not settled yet): nothing was stored.
    #[error("the device's tenant is being moved; its fixes were not stored")]
    Moving,
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

/// Whether a lookup may wait out a moving tenant's freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Fixes are about to be sent: held while the route is frozen.
    Writes,
    /// Only the owner matters (Teltonika's handshake): never held.
    No,
}

/// Fixes are sent at most this many times: the cached cell, then where the
/// route points after a refusal (a moved tenant's new cell, a device's new
/// owner; once more if a rollback moved it again).
const MAX_SENDS: usize = 3;

impl EdgeState {
    /// Asks the control store where `device`'s fixes go (registry, then
    /// routing table); `None` for an unknown device. With [`Hold::Writes`]
    /// a frozen route (the tenant is being moved) is waited out first. Only
    /// an unfrozen route is remembered: a frozen one would send the next
    /// fixes to the old cell without a hold.
    async fn look_up(&self, device: &str, hold: Hold) -> Result<Option<DeviceRoute>, DeviceError> {
        let Ok(device) = DeviceId::parse(device) else {
            return Ok(None);
        };
        let registration = match self.store.device(&device).await {
            Ok(registration) => registration,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        let route = match self.routes.current(registration.tenant_id).await {
            Ok(route) => route,
            // Registered by a tenant that is gone: nobody's device.
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        let route = match hold {
            Hold::Writes => match self.routes.settle(route).await {
                Ok(route) => route,
                Err(HoldError::Gone) => return Ok(None),
                Err(err) => return Err(DeviceError::Unavailable(err.into())),
            },
            Hold::No => route,
        };
        let found = DeviceRoute::from(&route);
        if !route.is_frozen(Utc::now()) {
            self.devices
                .routes
                .insert(device.as_str(), found.clone(), Instant::now());
        }
        Ok(Some(found))
    }

    /// Where `device`'s fixes go, and whether that came from the cache. A
    /// cached entry is used only while no newer route version of its tenant
    /// has been seen and the tenant was not seen frozen.
    async fn locate(
        &self,
        device: &str,
        hold: Hold,
    ) -> Result<Option<(DeviceRoute, bool)>, DeviceError> {
        // The cache is keyed like `DeviceId::parse` spells the device.
        let key = device.trim();
        if let Some(route) = self.devices.routes.get(key, Instant::now()) {
            if self.routes.usable(route.tenant, route.version, Utc::now()) {
                return Ok(Some((route, true)));
            }
            self.devices.routes.invalidate(key, &route);
        }
        Ok(self.look_up(key, hold).await?.map(|route| (route, false)))
    }

    /// Posts `fixes`, all sent by `device`, to its tenant's cell (batched
    /// with other devices' fixes for that cell); the answer says what is
    /// stored, by index into `fixes`. Fixes the cell refused because the
    /// tenant is being moved (`read_only`: nothing stored) are held while
    /// the route is frozen and sent where it then points; so are fixes a
    /// cached route sent to a tenant that no longer owns the device
    /// (`unknown_devices`), once, after a fresh lookup. Fixes that still
    /// find their tenant read-only after that are an error: the device is
    /// told nothing was stored and sends them again.
    async fn deliver(
        &self,
        device: &str,
        fixes: Arc<[Fix]>,
    ) -> Result<DeviceIngestAnswer, DeviceError> {
        let key = device.trim();
        let (mut route, mut cached) = self
            .locate(key, Hold::Writes)
            .await?
            .ok_or(DeviceError::Unknown)?;
        let mut total = DeviceIngestAnswer::default();
        // What this send carries, and each one's index in `fixes`.
        let mut sending = fixes.clone();
        let mut indexes: Vec<usize> = (0..fixes.len()).collect();
        for sends in 1..=MAX_SENDS {
            let answer = match self
                .devices
                .batches
                .submit(&route.cell, route.tenant, sending.clone())
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
            let next = if !answer.read_only.is_empty() {
                // The tenant is being moved and this cell fences it.
                self.devices.routes.invalidate(key, &route);
                let next = if sends < MAX_SENDS {
                    self.after_read_only(key, &route).await?
                } else {
                    None
                };
                let Some(next) = next else {
                    return Err(DeviceError::Moving);
                };
                Some((answer.read_only.clone(), next))
            } else if cached && !answer.unknown_devices.is_empty() && sends < MAX_SENDS {
                // The cell checked the device against that tenant's vehicles
                // and refused it: the cached owner is out of date (moved or
                // released). Nothing was stored for it; ask once more.
                self.devices.routes.invalidate(key, &route);
                let fresh = self
                    .look_up(key, Hold::Writes)
                    .await?
                    .ok_or(DeviceError::Unknown)?;
                (fresh != route).then(|| {
                    tracing::info!(%device, tenant = %fresh.tenant, "device changed owner; resent");
                    (answer.unknown_devices.clone(), fresh)
                })
            } else {
                None
            };
            let Some((again, next)) = next else {
                merge(&mut total, answer, &indexes, &[]);
                return Ok(total);
            };
            merge(&mut total, answer, &indexes, &again);
            sending = again
                .iter()
                .filter_map(|&i| sending.get(i).cloned())
                .collect();
            indexes = again
                .iter()
                .filter_map(|&i| indexes.get(i).copied())
                .collect();
            route = next;
            cached = false;
        }
        unreachable!("the last send returns")
    }

    /// `route`'s cell refused `device`'s fixes as read-only: the route to
    /// send them to once the freeze is over (remembered) — the new cell, or
    /// the same after an aborted move — or `None` when the route shows no
    /// move at all (`Routes::after_refusal`).
    async fn after_read_only(
        &self,
        device: &str,
        route: &DeviceRoute,
    ) -> Result<Option<DeviceRoute>, DeviceError> {
        let next = match self
            .routes
            .after_refusal(route.tenant, route.cell.id, route.version)
            .await
        {
            Ok(next) => next,
            Err(HoldError::Gone) => return Err(DeviceError::Unknown),
            Err(err) => return Err(DeviceError::Unavailable(err.into())),
        };
        Ok(next.map(|next| {
            let found = DeviceRoute::from(&next);
            if !next.is_frozen(Utc::now()) {
                self.devices
                    .routes
                    .insert(device, found.clone(), Instant::now());
            }
            tracing::info!(%device, from = %route.cell.id, to = %found.cell.id, "tenant moved; fixes resent");
            found
        }))
    }
}

/// Adds `answer` (about the fixes at `indexes`) to `total`, except the
/// fixes at positions `again` (sent once more).
fn merge(
    total: &mut DeviceIngestAnswer,
    answer: DeviceIngestAnswer,
    indexes: &[usize],
    again: &[usize],
) {
    let kept = |i: &usize| !again.contains(i);
    let original = |i: usize| indexes.get(i).copied();
    total.accepted += answer.accepted;
    total.duplicates += answer.duplicates;
    total.rejected.extend(
        answer
            .rejected
            .into_iter()
            .filter(|(i, _)| kept(i))
            .filter_map(|(i, why)| Some((original(i)?, why))),
    );
    total.rejected.sort_by_key(|(i, _)| *i);
    for (from, into) in [
        (answer.unknown_devices, &mut total.unknown_devices),
        (answer.read_only, &mut total.read_only),
    ] {
        into.extend(from.into_iter().filter(kept).filter_map(original));
        into.sort_unstable();
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
    } else if matches!(err, DeviceError::Moving) {
        tracing::warn!("device report refused: its tenant is being moved");
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
                teltonika::Event::Handshake(imei) => match state.locate(&imei, Hold::No).await {
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

#[cfg(test)]
mod tests {
    //! Device fixes of a tenant being moved (SPEC §6), against a fake
    //! routing table and fake cells on loopback.

    use super::*;
    use crate::testing::{edge, far, tenant_on, until, Directory, FakeCell, INVALID_LAT, PATIENCE};

    const DEVICE: &str = "dev-1";

    fn fixes(lats: &[f64]) -> Arc<[Fix]> {
        lats.iter()
            .map(|&lat| Fix {
                device_id: DEVICE.into(),
                time: Utc::now(),
                lat,
                lon: 1.0,
                speed_kmh: None,
                heading: None,
                altitude: None,
                accuracy: None,
                valid: true,
                attributes: serde_json::Map::new(),
            })
            .collect()
    }

    struct Setup {
        directory: Arc<Directory>,
        state: EdgeState,
        old: Arc<FakeCell>,
        new: Arc<FakeCell>,
        tenant: webhost_domain::TenantId,
    }

    /// A device of a tenant on the old cell, already cached by one fix.
    async fn setup() -> Setup {
        let directory = Arc::new(Directory::default());
        let (old, new) = (FakeCell::start("old").await, FakeCell::start("new").await);
        let tenant = tenant_on(&directory, &old);
        directory.register(DEVICE, tenant);
        let state = edge(directory.clone());
        let first = state
            .deliver(DEVICE, fixes(&[1.0]))
            .await
            .expect("first fix");
        assert_eq!(first.accepted, 1);
        Setup {
            directory,
            state,
            old,
            new,
            tenant,
        }
    }

    async fn deliver(state: &EdgeState, lats: &[f64]) -> Result<DeviceIngestAnswer, DeviceError> {
        tokio::time::timeout(PATIENCE, state.deliver(DEVICE, fixes(lats)))
            .await
            .expect("answered in time")
    }

    fn lats(stored: Vec<(webhost_domain::TenantId, String, f64)>) -> Vec<f64> {
        stored.into_iter().map(|(_, _, lat)| lat).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_reads_nothing_from_the_routing_table() {
        let s = setup().await;
        let reads = s.directory.reads();
        for lat in [2.0, 3.0, 4.0] {
            assert_eq!(deliver(&s.state, &[lat]).await.expect("stored").accepted, 1);
        }
        assert_eq!(
            s.directory.reads(),
            reads,
            "every fix found its route cached"
        );
        assert_eq!(lats(s.old.stored()), [1.0, 2.0, 3.0, 4.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixes_refused_as_read_only_are_resent_to_the_new_cell_and_only_stored_ones_count() {
        let s = setup().await;
        s.old.fence(true);
        let (directory, tenant) = (s.directory.clone(), s.tenant);
        s.old.when_refusing(move || directory.freeze(tenant, far()));
        let state = s.state.clone();
        let pending = tokio::spawn(async move { deliver(&state, &[2.0, INVALID_LAT, 3.0]).await });
        until("the fixes are held", || s.state.routes.holding(s.tenant)).await;
        assert!(
            s.new.received().is_empty(),
            "nothing goes anywhere while frozen"
        );
        s.directory.switch_and_unfreeze(s.tenant, &s.new);

        let answer = pending.await.expect("joined").expect("delivered");
        // What a Teltonika ack counts, and OsmAnd's 200 needs.
        assert_eq!(answer.accepted, 2, "{answer:?}");
        assert_eq!(answer.rejected.len(), 1, "{answer:?}");
        assert_eq!(answer.rejected[0].0, 1, "indexes are the packet's own");
        assert!(answer.read_only.is_empty(), "{answer:?}");
        assert_eq!(
            lats(s.old.stored()),
            [1.0],
            "the old cell stored nothing more"
        );
        assert_eq!(
            lats(s.new.stored()),
            [2.0, 3.0],
            "resent once, to the new cell"
        );

        // The cache now points at the new cell.
        let reads = s.directory.reads();
        assert_eq!(deliver(&s.state, &[4.0]).await.expect("stored").accepted, 1);
        assert_eq!(lats(s.new.stored()), [2.0, 3.0, 4.0]);
        assert_eq!(s.directory.reads(), reads);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixes_still_refused_after_an_aborted_move_are_not_acknowledged() {
        let s = setup().await;
        s.old.fence(true);
        let (directory, tenant) = (s.directory.clone(), s.tenant);
        s.old.when_refusing(move || directory.freeze(tenant, far()));
        let state = s.state.clone();
        let pending = tokio::spawn(async move { deliver(&state, &[2.0]).await });
        until("the fixes are held", || s.state.routes.holding(s.tenant)).await;
        s.directory.unfreeze(s.tenant);
        let answer = pending.await.expect("joined");
        assert!(matches!(answer, Err(DeviceError::Moving)), "{answer:?}");
        assert_eq!(lats(s.old.stored()), [1.0]);
        assert!(s.new.stored().is_empty());

        // Once the old cell takes writes again, the device's resend lands.
        s.old.fence(false);
        assert_eq!(deliver(&s.state, &[2.0]).await.expect("stored").accepted, 1);
        assert_eq!(lats(s.old.stored()), [1.0, 2.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn osmand_answers_200_only_for_a_stored_fix() {
        let s = setup().await;
        s.old.fence(true);
        let (directory, tenant, new) = (s.directory.clone(), s.tenant, s.new.clone());
        s.old
            .when_refusing(move || directory.switch_and_unfreeze(tenant, &new));
        let report = |lat: f64| {
            Request::builder()
                .uri(format!(
                    "/?id={DEVICE}&lat={lat}&lon=1&timestamp=1700000000"
                ))
                .body(Body::empty())
                .expect("request")
        };
        let response = osmand(State(s.state.clone()), report(2.0)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(lats(s.new.stored()), [2.0]);

        // The new cell fences too (a rollback under way, not visible yet):
        // nothing stored, not 200.
        s.new.fence(true);
        let response = osmand(State(s.state.clone()), report(3.0)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(lats(s.new.stored()), [2.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_route_older_than_a_version_seen_is_not_used() {
        let s = setup().await;
        // Switched while this edge's cache still says version 1, and the
        // old copy still takes writes (were the entry used, it would land
        // there).
        s.directory.switch_and_unfreeze(s.tenant, &s.new);
        // Something else (an API request, another device) reads version 2.
        let route = s.state.routes.current(s.tenant).await.expect("route");
        assert_eq!(route.version, 2);

        assert_eq!(deliver(&s.state, &[2.0]).await.expect("stored").accepted, 1);
        assert_eq!(lats(s.old.stored()), [1.0]);
        assert_eq!(lats(s.new.stored()), [2.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_route_is_not_remembered() {
        let s = setup().await;
        s.directory.freeze(s.tenant, far());
        // The handshake looks the device up without holding.
        s.devices_forget();
        let found = s.state.locate(DEVICE, Hold::No).await.expect("lookup");
        assert!(found.is_some_and(|(route, cached)| !cached && route.cell.id == s.old.id));
        assert_eq!(s.state.devices.routes.get(DEVICE, Instant::now()), None);
        // And a tenant seen frozen does not use its cached entries.
        s.directory.unfreeze(s.tenant);
        let cached = DeviceRoute::from(&s.old.route(s.tenant, 1));
        s.state
            .devices
            .routes
            .insert(DEVICE, cached.clone(), Instant::now());
        s.directory.freeze(s.tenant, far());
        s.state.routes.current(s.tenant).await.expect("seen frozen");
        let state = s.state.clone();
        let pending = tokio::spawn(async move { deliver(&state, &[2.0]).await });
        until("the fix is held", || s.state.routes.holding(s.tenant)).await;
        s.directory.unfreeze(s.tenant);
        assert_eq!(pending.await.expect("joined").expect("stored").accepted, 1);
        assert_eq!(lats(s.old.stored()), [1.0, 2.0]);
    }

    impl Setup {
        fn devices_forget(&self) {
            if let Some(route) = self.state.devices.routes.get(DEVICE, Instant::now()) {
                self.state.devices.routes.invalidate(DEVICE, &route);
            }
        }
    }

    #[test]
    fn merged_answers_keep_the_original_indexes() {
        let mut total = DeviceIngestAnswer::default();
        let first = DeviceIngestAnswer {
            accepted: 1,
            rejected: vec![
                (1, "moving".into()),
                (2, "moving".into()),
                (3, "bad".into()),
            ],
            read_only: vec![1, 2],
            ..DeviceIngestAnswer::default()
        };
        merge(&mut total, first, &[0, 1, 2, 3], &[1, 2]);
        let second = DeviceIngestAnswer {
            accepted: 1,
            rejected: vec![(0, "bad".into())],
            ..DeviceIngestAnswer::default()
        };
        merge(&mut total, second, &[1, 2], &[]);
        assert_eq!(total.accepted, 2);
        assert_eq!(
            total.rejected,
            [(1, "bad".to_string()), (3, "bad".to_string())]
        );
        assert!(total.read_only.is_empty());
    }
}
