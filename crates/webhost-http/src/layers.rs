use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::ApiError;

/// Request bodies above this answer 413 (SPEC §4).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// What every WebHost router gets: body limit, security headers,
/// compression when the client accepts it, a tracing span per request, and a
/// JSON 500 instead of a dropped connection when a handler panics.
pub fn common_layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let mut router = router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::unexpected(anyhow::anyhow!("handler panicked")).into_response()
            },
        ));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router.layer(
        TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
            )
        }),
    )
}

/// JSON 404 for unknown routes.
pub async fn fallback() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such endpoint; see /api/openapi.json",
    )
    .into_response()
}

/// JSON 405 for a known path with the wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
    .into_response()
}
