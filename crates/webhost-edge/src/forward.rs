//! Classify, authenticate, forward.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;
use webhost_domain::TenantId;
use webhost_http::auth::{Subject, INTERNAL_HEADER};
use webhost_http::{ApiError, MAX_BODY_BYTES};
use webhost_storage::{StorageError, TenantStatus};

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

    let (base_url, audience, tenant, subject) = match destination {
        Destination::ControlPublic => (
            state.control_url.to_string(),
            webhost_contract::CONTROL.to_string(),
            None,
            None,
        ),
        Destination::Admin => {
            let operator = authenticate_operator(state, &parts.headers, &parts.uri).await?;
            (
                state.control_url.to_string(),
                webhost_contract::CONTROL.to_string(),
                None,
                Some(operator),
            )
        }
        Destination::Control => {
            let who = authenticate(state, &parts.headers, &parts.uri).await?;
            (
                state.control_url.to_string(),
                webhost_contract::CONTROL.to_string(),
                Some(who.tenant),
                Some(who.subject),
            )
        }
        Destination::Cell => {
            let who = authenticate(state, &parts.headers, &parts.uri).await?;
            let route = match state.store.route(who.tenant).await {
                Ok(route) => route,
                Err(StorageError::NotFound(_)) => {
                    return Err(ApiError::unauthorized(
                        "the credential's tenant no longer exists",
                    ))
                }
                Err(err) => return Err(err.into()),
            };
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
                && !matches!(parts.method, Method::GET | Method::HEAD)
            {
                // Suspended by billing (unpaid past the grace period, or the
                // subscription ended): the customer keeps reading their data
                // (and WebSocket upgrades, which are GETs); writes wait for
                // the payment. Device fixes are still stored (devices.rs
                // does not look at the status): no hole in the history.
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_required",
                    "the account is suspended for non-payment: update the payment method \
                     (or renew the subscription) to make changes again; reading data still works",
                ));
            }
            (
                route.cell_url,
                webhost_contract::cell_audience(route.cell_id),
                Some(who.tenant),
                Some(who.subject),
            )
        }
    };

    let upgrade = is_upgrade(&parts.headers);
    let body = if upgrade {
        bytes::Bytes::new()
    } else {
        read_body(body).await?
    };

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
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or(&path);
    let uri: Uri = format!("{}{}", base_url.trim_end_matches('/'), path_and_query)
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| ApiError::unexpected(e.into()))?;

    let mut upstream = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| ApiError::unexpected(e.into()))?;
    *upstream.headers_mut() = forwardable(&parts.headers);
    let headers = upstream.headers_mut();
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = parts.headers.get(header::UPGRADE) {
            headers.insert(header::UPGRADE, protocol.clone());
        }
    }
    headers.insert(
        INTERNAL_HEADER,
        HeaderValue::from_str(&credential).map_err(|e| ApiError::unexpected(e.into()))?,
    );
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
    let mut response = state.client.http().request(upstream).await.map_err(|err| {
        tracing::error!(error = %err, %base_url, "upstream unreachable");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "the service for this account is not reachable right now; try again shortly",
        )
    })?;
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
}
