//! Classify, authenticate, forward.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;
use webhost_contract::READ_ONLY_HEADER;
use webhost_domain::TenantId;
use webhost_http::auth::{Subject, INTERNAL_HEADER};
use webhost_http::{ApiError, MAX_BODY_BYTES};
use webhost_storage::{Route, StorageError, TenantStatus};

use crate::routes::HoldError;
use crate::EdgeState;

/// Where a public path goes.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// Control plane, no credentials needed (signup, login, and Stripe's
    /// webhook, which its signature authenticates).
    ControlPublic,
    /// Control plane, for an authenticated tenant.
    Control,
    /// The tenant's cell.
    Cell,
    /// Control plane, for the operator (`/api/admin/*`).
    Admin,
}

fn classify(path: &str) -> Option<Destination> {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/api/admin") {
        Some(Destination::Admin)
    } else if path == "/api/v1/signup"
        || path == "/api/v1/login"
        || path == "/api/v1/billing/stripe/webhook"
    {
        Some(Destination::ControlPublic)
    } else if under("/api/v1/api-keys") || under("/api/v1/subscription") {
        Some(Destination::Control)
    } else if under("/api/v1") || under("/api/graphql") || under("/sync") {
        Some(Destination::Cell)
    } else {
        None
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and what the edge alone may set.
const STRIPPED: [HeaderName; 9] = [
    header::CONNECTION,
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The edge compresses for the client; hops behind it stay plain.
    header::ACCEPT_ENCODING,
];

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if STRIPPED.contains(name)
            || name.as_str() == "keep-alive"
            || name.as_str().starts_with("x-webhost-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

struct Authenticated {
    tenant: TenantId,
    subject: Subject,
}

/// An HTTP/1.1 upgrade (WebSocket) request.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Browsers cannot set headers on a WebSocket, so upgrades may carry the
/// credential as `?access_token=`.
fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token" && !value.is_empty()).then(|| value.to_string())
    })
}

/// The bearer credential of a request (or of an upgrade's `access_token`).
fn credential<'r>(
    headers: &'r HeaderMap,
    from_query: &'r Option<String>,
) -> Result<&'r str, ApiError> {
    match from_query {
        Some(token) => Ok(token.as_str()),
        None => {
            let value = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::unauthorized("send 'Authorization: Bearer <token or API key>'")
                })?;
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "the Authorization header must be 'Bearer <token or API key>'",
                    )
                })
        }
    }
}

/// The operator: `Bearer $WEBHOST_ADMIN_TOKEN`, compared in constant time.
/// A tenant's valid credential is refused with 403 (it is someone, just
/// not the operator); anything else with 401.
async fn authenticate_operator(
    state: &EdgeState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Subject, ApiError> {
    let presented = credential(headers, &None)?;
    if let Some(expected) = &state.admin_token_hash {
        let hash = webhost_contract::hash_api_key(presented);
        if bool::from(subtle::ConstantTimeEq::ct_eq(&hash[..], &expected[..])) {
            return Ok(Subject::Operator);
        }
    }
    match authenticate(state, headers, uri).await {
        Ok(_) => Err(ApiError::forbidden(
            "this is the operator API; a tenant's credentials cannot use it",
        )),
        Err(_) => Err(ApiError::unauthorized(
            "send 'Authorization: Bearer <WEBHOST_ADMIN_TOKEN>'",
        )),
    }
}

async fn authenticate(
    state: &EdgeState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Authenticated, ApiError> {
    let from_query = if headers.contains_key(header::AUTHORIZATION) || !is_upgrade(headers) {
        None
    } else {
        query_token(uri)
    };
    let credential = credential(headers, &from_query)?;
    if credential.starts_with(webhost_contract::API_KEY_PREFIX) {
        let hash = webhost_contract::hash_api_key(credential);
        match state.store.authenticate_api_key(&hash).await {
            Ok(principal) => Ok(Authenticated {
                tenant: principal.tenant_id,
                subject: Subject::ApiKey(principal.key_id),
            }),
            Err(StorageError::NotFound(_)) => Err(ApiError::unauthorized(
                "the API key is not valid (unknown or revoked)",
            )),
            Err(err) => Err(err.into()),
        }
    } else {
        let claims = state.tokens.verify(credential)?;
        Ok(Authenticated {
            tenant: claims.tid,
            subject: Subject::User(claims.sub),
        })
    }
}

pub(crate) async fn forward(State(state): State<EdgeState>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    match try_forward(&state, peer, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// Where a request is sent: a fixed service, or the tenant's cell as its
/// route says (which may change while the request is held).
enum Target {
    Fixed { base_url: String, audience: String },
    Cell(Route),
}

impl Target {
    fn address(&self) -> (&str, String) {
        match self {
            Self::Fixed { base_url, audience } => (base_url, audience.clone()),
            Self::Cell(route) => (
                &route.cell_url,
                webhost_contract::cell_audience(route.cell_id),
            ),
        }
    }
}

/// A write to the tenant API: what a moving tenant's freeze holds. Reads
/// (and WebSocket upgrades, which are GETs) are never held.
fn is_write(method: &Method, upgrade: bool) -> bool {
    !upgrade && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A write is sent at most this many times: the first cell, then where the
/// route points after each read-only refusal (the new cell; once more if a
/// rollback moved it again).
const MAX_SENDS: usize = 3;

/// The answer to a write the edge could not place: the tenant is being
/// moved (or a move was just aborted) and nothing was written.
fn moving() -> ApiError {
    ApiError {
        retry_after_secs: Some(2),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "account_moving",
            "the account is being moved to another server and nothing was changed; send the \
             request again in a few seconds (reading data keeps working meanwhile)",
        )
    }
}

fn hold_error(err: HoldError) -> ApiError {
    match err {
        HoldError::Gone => ApiError::unauthorized("the credential's tenant no longer exists"),
        HoldError::Unavailable(why) => {
            tracing::error!(error = %why, "a held write could not be placed");
            moving()
        }
    }
}

/// The tenant's route as the routing table says now.
async fn tenant_route(state: &EdgeState, tenant: TenantId) -> Result<Route, ApiError> {
    match state.routes.current(tenant).await {
        Ok(route) => Ok(route),
        Err(StorageError::NotFound(_)) => Err(ApiError::unauthorized(
            "the credential's tenant no longer exists",
        )),
        Err(err) => Err(err.into()),
    }
}

/// Whether the tenant's status lets `method` through.
fn admit(route: &Route, method: &Method) -> Result<(), ApiError> {
    if route.tenant_status == TenantStatus::Provisioning {
        return Err(ApiError {
            retry_after_secs: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provisioning",
                "the account's cell is still being set up; GET /api/v1/subscription shows \
                 the progress; try again shortly",
            )
        });
    }
    if route.tenant_status == TenantStatus::Suspended
        && !matches!(*method, Method::GET | Method::HEAD)
    {
        // Suspended by billing (unpaid past the grace period, or the
        // subscription ended): the customer keeps reading their data (and
        // WebSocket upgrades, which are GETs); writes wait for the payment.
        // Device fixes are still stored (devices.rs does not look at the
        // status): no hole in the history.
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment_required",
            "the account is suspended for non-payment: update the payment method \
             (or renew the subscription) to make changes again; reading data still works",
        ));
    }
    Ok(())
}

async fn try_forward(
    state: &EdgeState,
    peer: Option<std::net::SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let destination = classify(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such endpoint; see /api/openapi.json",
        )
    })?;
    let control = || Target::Fixed {
        base_url: state.control_url.to_string(),
        audience: webhost_contract::CONTROL.to_string(),
    };

    let (mut target, tenant, subject) = match destination {
        Destination::ControlPublic => (control(), None, None),
        Destination::Admin => {
            let operator = authenticate_operator(state, &parts.headers, &parts.uri).await?;
            (control(), None, Some(operator))
        }
        Destination::Control => {
            let who = authenticate(state, &parts.headers, &parts.uri).await?;
            (control(), Some(who.tenant), Some(who.subject))
        }
        Destination::Cell => {
            let who = authenticate(state, &parts.headers, &parts.uri).await?;
            let route = tenant_route(state, who.tenant).await?;
            admit(&route, &parts.method)?;
            (Target::Cell(route), Some(who.tenant), Some(who.subject))
        }
    };

    let upgrade = is_upgrade(&parts.headers);
    let body = if upgrade {
        bytes::Bytes::new()
    } else {
        read_body(body).await?
    };
    // The tenant's writes wait while it is being moved, then go wherever
    // its route then points (routes.rs).
    let holds = matches!(target, Target::Cell(_)) && is_write(&parts.method, upgrade);
    if let (true, Target::Cell(route)) = (holds, &mut target) {
        if route.is_frozen(chrono::Utc::now()) {
            let released = state
                .routes
                .settle(route.clone())
                .await
                .map_err(hold_error)?;
            admit(&released, &parts.method)?;
            *route = released;
        }
    }

    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or(&path)
        .to_string();
    let mut headers = forwardable(&parts.headers);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = parts.headers.get(header::UPGRADE) {
            headers.insert(header::UPGRADE, protocol.clone());
        }
    }
    if let Some(peer) = peer {
        // Append: a load balancer in front has already named the client.
        let chain = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }

    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let mut sends = 0;
    let mut response = loop {
        sends += 1;
        let (base_url, audience) = target.address();
        let credential = state
            .client
            .keys()
            .mint(
                state.client.issuer(),
                &audience,
                &parts.method,
                &path,
                tenant,
                subject,
            )
            .map_err(ApiError::unexpected)?;
        let uri: Uri = format!("{}{}", base_url.trim_end_matches('/'), path_and_query)
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| ApiError::unexpected(e.into()))?;
        let mut upstream = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Full::new(body.clone()))
            .map_err(|e| ApiError::unexpected(e.into()))?;
        *upstream.headers_mut() = headers.clone();
        upstream.headers_mut().insert(
            INTERNAL_HEADER,
            HeaderValue::from_str(&credential).map_err(|e| ApiError::unexpected(e.into()))?,
        );
        let response = state.client.http().request(upstream).await.map_err(|err| {
            tracing::error!(error = %err, %base_url, "upstream unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the service for this account is not reachable right now; try again shortly",
            )
        })?;
        let refused = response.headers().contains_key(READ_ONLY_HEADER);
        let (true, true, Target::Cell(sent), Some(tenant)) = (holds, refused, &target, tenant)
        else {
            break response;
        };
        // The cell fences the tenant: it is being moved, and nothing was
        // written. Held while the route is frozen, then sent where it
        // points; the body is buffered, so it can go again.
        drop(response);
        let next = state
            .routes
            .after_refusal(tenant, sent.cell_id, sent.version)
            .await
            .map_err(hold_error)?;
        match next {
            Some(next) if sends < MAX_SENDS => {
                admit(&next, &parts.method)?;
                tracing::info!(
                    from = %sent.cell_id,
                    to = %next.cell_id,
                    version = next.version,
                    "write refused by a read-only cell; resent where the route points"
                );
                target = Target::Cell(next);
            }
            _ => return Err(moving()),
        }
    };
    response.headers_mut().remove(READ_ONLY_HEADER);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::bad_request(
                "upgrade_refused",
                "this connection cannot be upgraded",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let mut client = hyper_util::rt::TokioIo::new(client);
                    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(err) => tracing::warn!(error = %err, "upgrade failed"),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = response.into_parts();
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TRAILER,
        header::UPGRADE,
    ] {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// How much of an oversized body is read and thrown away so the client,
/// still sending, gets to read the 413 instead of a reset connection.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Buffers the body up to the limit. Past it, drains what follows (bounded
/// in bytes and time) and answers 413: an early answer with the request
/// half-read would make most clients report a broken connection instead.
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is larger than {} MiB; split it into smaller requests",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        )
    };
    let unreadable =
        || ApiError::bad_request("unreadable_body", "the request body could not be read");
    let mut body = body;
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else {
            continue;
        };
        if buffer.len() + data.len() > MAX_BODY_BYTES {
            let mut drained = buffer.len() + data.len();
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while drained < DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            drained += frame.data_ref().map_or(0, |d| d.len());
                        }
                        _ => break,
                    }
                }
            })
            .await;
            return Err(too_large());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(classify("/api/v1/signup"), Some(Destination::ControlPublic));
        assert_eq!(
            classify("/api/v1/billing/stripe/webhook"),
            Some(Destination::ControlPublic)
        );
        assert_eq!(
            classify("/api/v1/billing/stripe/webhook/x"),
            Some(Destination::Cell),
            "only the exact path is public"
        );
        assert_eq!(classify("/api/v1/api-keys/x"), Some(Destination::Control));
        assert_eq!(classify("/api/v1/subscription"), Some(Destination::Control));
        assert_eq!(classify("/api/v1/vehicles"), Some(Destination::Cell));
        assert_eq!(classify("/api/graphql"), Some(Destination::Cell));
        assert_eq!(classify("/internal/v1/stats"), None);
        assert_eq!(classify("/api/admin/cells"), Some(Destination::Admin));
        assert_eq!(classify("/api/admin"), Some(Destination::Admin));
        assert_eq!(classify("/api/administrator"), None);
        assert_eq!(classify("/api/v1signup"), None);
        assert_eq!(classify("/"), None);
    }

    mod moving {
        //! A tenant being moved (SPEC §6), against a fake routing table and
        //! fake cells on loopback.

        use std::sync::Arc;

        use axum::body::Body;
        use axum::extract::{Request, State};
        use axum::http::{header, Method, StatusCode};
        use axum::response::Response;
        use http_body_util::BodyExt;
        use webhost_contract::READ_ONLY_HEADER;

        use crate::testing::{edge, far, tenant_on, until, Directory, FakeCell, KEY, PATIENCE};
        use crate::EdgeState;

        fn request(method: Method, path: &str, body: &'static str) -> Request {
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
                .body(Body::from(body))
                .expect("request")
        }

        async fn send(state: &EdgeState, request: Request) -> Response {
            tokio::time::timeout(
                PATIENCE,
                super::super::forward(State(state.clone()), request),
            )
            .await
            .expect("answered in time")
        }

        fn spawn_send(state: &EdgeState, request: Request) -> tokio::task::JoinHandle<Response> {
            let state = state.clone();
            tokio::spawn(async move { send(&state, request).await })
        }

        async fn json(response: Response) -> serde_json::Value {
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            serde_json::from_slice(&bytes).expect("JSON body")
        }

        struct Setup {
            directory: Arc<Directory>,
            state: EdgeState,
            old: Arc<FakeCell>,
            new: Arc<FakeCell>,
            tenant: webhost_domain::TenantId,
        }

        async fn setup() -> Setup {
            let directory = Arc::new(Directory::default());
            let (old, new) = (FakeCell::start("old").await, FakeCell::start("new").await);
            let tenant = tenant_on(&directory, &old);
            Setup {
                state: edge(directory.clone()),
                directory,
                old,
                new,
                tenant,
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_write_during_a_freeze_is_held_then_delivered_once_to_the_new_cell() {
            let s = setup().await;
            s.directory.freeze(s.tenant, far());
            let held: Vec<_> = ["one", "two", "three"]
                .into_iter()
                .map(|body| spawn_send(&s.state, request(Method::POST, "/api/v1/vehicles", body)))
                .collect();
            until("the writes are held", || s.state.routes.holding(s.tenant)).await;
            assert!(s.old.received().is_empty(), "nothing reaches the old cell");
            assert!(
                s.new.received().is_empty(),
                "nothing goes anywhere while frozen"
            );

            s.directory.switch_and_unfreeze(s.tenant, &s.new);
            for pending in held {
                let response = pending.await.expect("joined");
                assert_eq!(response.status(), StatusCode::CREATED);
                assert_eq!(json(response).await["cell"], "new");
            }
            assert!(s.old.received().is_empty());
            let mut bodies: Vec<_> = s.new.received().into_iter().map(|r| r.body).collect();
            bodies.sort();
            assert_eq!(bodies, ["one", "three", "two"], "each write exactly once");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reads_and_upgrades_are_not_held() {
            let s = setup().await;
            s.directory.freeze(s.tenant, far());
            let response = send(&s.state, request(Method::GET, "/api/v1/vehicles", "")).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(json(response).await["cell"], "old");

            // A WebSocket upgrade is a GET: forwarded at once as well (the
            // fake answers it like any request).
            let upgrade = Request::builder()
                .method(Method::GET)
                .uri("/api/v1/socket")
                .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .body(Body::empty())
                .expect("request");
            assert_eq!(send(&s.state, upgrade).await.status(), StatusCode::OK);
            assert!(!s.state.routes.holding(s.tenant), "no hold was started");
            let paths: Vec<_> = s.old.received().into_iter().map(|r| r.path).collect();
            assert_eq!(paths, ["/api/v1/vehicles", "/api/v1/socket"]);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_write_the_old_cell_refuses_as_read_only_is_resent_to_the_new_cell() {
            let s = setup().await;
            // The edge read the route before the freeze; the fenced cell
            // refuses, and the freeze is in the routing table by then.
            s.old.fence(true);
            let (directory, tenant) = (s.directory.clone(), s.tenant);
            s.old.when_refusing(move || directory.freeze(tenant, far()));
            let pending = spawn_send(
                &s.state,
                request(Method::PATCH, "/api/v1/vehicles/x", "patch"),
            );
            until("the refused write is held", || {
                s.state.routes.holding(s.tenant)
            })
            .await;
            s.directory.switch_and_unfreeze(s.tenant, &s.new);

            let response = pending.await.expect("joined");
            assert_eq!(response.status(), StatusCode::CREATED);
            assert!(!response.headers().contains_key(READ_ONLY_HEADER));
            assert_eq!(json(response).await["cell"], "new");
            let old = s.old.received();
            assert_eq!(old.len(), 1);
            assert!(old[0].refused, "the old cell stored nothing");
            let new = s.new.received();
            assert_eq!(new.len(), 1, "resent exactly once");
            assert_eq!(
                (new[0].method.clone(), new[0].body.clone()),
                (Method::PATCH, "patch".into())
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_route_switched_without_a_visible_freeze_is_followed() {
            let s = setup().await;
            s.old.fence(true);
            let (directory, tenant, new) = (s.directory.clone(), s.tenant, s.new.clone());
            s.old
                .when_refusing(move || directory.switch_and_unfreeze(tenant, &new));
            let response = send(&s.state, request(Method::DELETE, "/api/v1/vehicles/x", "")).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            assert!(!response.headers().contains_key(READ_ONLY_HEADER));
            assert_eq!(s.new.received().len(), 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_freeze_that_expires_without_a_switch_releases_writes_to_the_same_cell() {
            let s = setup().await;
            s.directory.freeze(s.tenant, far());
            let pending = spawn_send(&s.state, request(Method::POST, "/api/v1/vehicles", "kept"));
            until("the write is held", || s.state.routes.holding(s.tenant)).await;
            assert!(s.old.received().is_empty(), "held, not sent");
            // The control plane never comes back: the deadline passes with
            // the freeze still written in the routing table.
            s.directory.freeze(s.tenant, chrono::Utc::now());
            let response = pending.await.expect("joined");
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(json(response).await["cell"], "old");
            let old = s.old.received();
            assert_eq!(old.len(), 1, "delivered exactly once");
            assert_eq!(old[0].body, "kept");
            assert!(s.new.received().is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_write_refused_during_an_aborted_move_lands_on_the_old_cell_once() {
            let s = setup().await;
            s.old.fence(true);
            let (directory, tenant) = (s.directory.clone(), s.tenant);
            s.old.when_refusing(move || directory.freeze(tenant, far()));
            let pending = spawn_send(&s.state, request(Method::POST, "/api/v1/vehicles", "x"));
            until("the refused write is held", || {
                s.state.routes.holding(s.tenant)
            })
            .await;
            // Aborted: the source writable again, then unfrozen, no switch.
            s.old.fence(false);
            s.directory.unfreeze(s.tenant);
            let response = pending.await.expect("joined");
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(json(response).await["cell"], "old");
            let refused: Vec<bool> = s.old.received().into_iter().map(|r| r.refused).collect();
            assert_eq!(refused, [true, false], "stored once, on the second try");
            assert!(s.new.received().is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_write_still_refused_after_an_aborted_move_is_a_clean_503() {
            let s = setup().await;
            s.old.fence(true);
            let (directory, tenant) = (s.directory.clone(), s.tenant);
            s.old.when_refusing(move || directory.freeze(tenant, far()));
            let pending = spawn_send(&s.state, request(Method::POST, "/api/v1/vehicles", "x"));
            until("the refused write is held", || {
                s.state.routes.holding(s.tenant)
            })
            .await;
            // Unfrozen, still on the old cell, which still refuses (the
            // control plane died before making it writable).
            s.directory.unfreeze(s.tenant);
            let response = pending.await.expect("joined");
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(!response.headers().contains_key(READ_ONLY_HEADER));
            assert!(response.headers().contains_key(header::RETRY_AFTER));
            let body = json(response).await;
            assert_eq!(body["error"]["code"], "account_moving", "{body}");
            assert!(s.old.received().iter().all(|r| r.refused));
            assert!(s.new.received().is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_read_only_header_never_reaches_a_client() {
            let s = setup().await;
            s.old.fence(true);
            let response = send(&s.state, request(Method::GET, "/api/v1/vehicles", "")).await;
            assert_eq!(response.status(), StatusCode::OK, "reads keep working");
            assert!(!response.headers().contains_key(READ_ONLY_HEADER));
            // Not frozen, never moved: after watching the route for a moment
            // the edge gives up on the write and says why.
            let response = send(&s.state, request(Method::PUT, "/api/v1/vehicles/x", "x")).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(!response.headers().contains_key(READ_ONLY_HEADER));
            assert_eq!(json(response).await["error"]["code"], "account_moving");
            let writes = s.old.received().into_iter().filter(|r| r.refused).count();
            assert_eq!(writes, 1, "sent once: the route never moved");
        }
    }
}
