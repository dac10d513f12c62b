//! `GET /api/health` as SPEC §4 describes it.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealth {
    Healthy,
    Unhealthy,
    /// Not configured (Redis without `REDIS_URL`).
    Disabled,
}

#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub services: BTreeMap<&'static str, ServiceHealth>,
    pub version: &'static str,
    pub region: String,
}

impl HealthReport {
    /// Healthy unless a configured service is down.
    pub fn new(services: BTreeMap<&'static str, ServiceHealth>, region: String) -> Self {
        let healthy = services.values().all(|s| *s != ServiceHealth::Unhealthy);
        Self {
            status: if healthy { "healthy" } else { "unhealthy" },
            timestamp: chrono::Utc::now(),
            services,
            version: env!("CARGO_PKG_VERSION"),
            region,
        }
    }
}

impl IntoResponse for HealthReport {
    fn into_response(self) -> Response {
        let status = if self.status == "healthy" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, axum::Json(self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_service_makes_the_report_unhealthy_503() {
        let ok = HealthReport::new(
            BTreeMap::from([
                ("database", ServiceHealth::Healthy),
                ("redis", ServiceHealth::Disabled),
            ]),
            "fsn1".into(),
        );
        assert_eq!(ok.status, "healthy");
        assert_eq!(ok.into_response().status(), StatusCode::OK);

        let down = HealthReport::new(
            BTreeMap::from([
                ("database", ServiceHealth::Healthy),
                ("redis", ServiceHealth::Unhealthy),
            ]),
            "fsn1".into(),
        );
        assert_eq!(down.status, "unhealthy");
        assert_eq!(
            down.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
