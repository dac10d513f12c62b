//! `POST /internal/v1/device-positions`: fixes decoded by the edge's device
//! listeners (OsmAnd, Teltonika), for one tenant. The answer says how many
//! are durably stored; the edge acknowledges the device with that.

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::{Duration, Utc};
use serde::Serialize;
use webhost_domain::{Attributes, DeviceId, Fix, Position, RawFix};
use webhost_http::auth::TenantCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_protocols::Fix as DeviceFix;
use webhost_storage::NewPosition;

use crate::CellState;

/// Fixes one call may carry (a Teltonika packet holds at most 255).
const MAX_FIXES: usize = 1_000;

pub(crate) fn routes() -> Router<CellState> {
    Router::new().route("/internal/v1/device-positions", post(ingest))
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DeviceIngestAnswer {
    /// Stored now or already stored: what the device may be told.
    pub accepted: usize,
    pub duplicates: usize,
    /// Per fix that was not stored: its index and why.
    pub rejected: Vec<(usize, String)>,
}

async fn ingest(
    caller: TenantCaller,
    State(state): State<CellState>,
    ApiJson(fixes): ApiJson<Vec<DeviceFix>>,
) -> Result<ApiJson<DeviceIngestAnswer>, ApiError> {
    if fixes.len() > MAX_FIXES {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {MAX_FIXES} fixes per call"),
        ));
    }
    let directory = state.directory.get(caller.tenant).await?;
    let now = Utc::now();
    let oldest = now - Duration::days(i64::from(directory.retention_days));
    let mut rows = Vec::with_capacity(fixes.len());
    let mut rejected = Vec::new();
    for (index, fix) in fixes.into_iter().enumerate() {
        let vehicle = DeviceId::parse(&fix.device_id)
            .ok()
            .and_then(|d| directory.devices.get(&d).copied());
        let Some(vehicle_id) = vehicle else {
            rejected.push((
                index,
                format!("device '{}' has no vehicle here", fix.device_id),
            ));
            continue;
        };
        let raw = RawFix {
            time: Some(fix.time),
            lat: fix.lat,
            lon: fix.lon,
            speed: fix.speed_kmh,
            heading: fix.heading,
            altitude: fix.altitude,
            accuracy: fix.accuracy,
            valid: Some(fix.valid),
            attributes: Attributes::from_trusted(fix.attributes),
        };
        match Fix::parse(raw, now) {
            Ok(parsed) if parsed.time >= oldest => rows.push(NewPosition {
                tenant_id: caller.tenant,
                position: Position {
                    vehicle_id,
                    fix: parsed,
                },
            }),
            Ok(_) => rejected.push((index, "older than the plan keeps history".into())),
            Err(err) => rejected.push((index, err.to_string())),
        }
    }
    let accepted = rows.len();
    let stored = state.ingest.store(rows).await?;
    Ok(ApiJson(DeviceIngestAnswer {
        accepted,
        duplicates: stored.iter().filter(|s| !**s).count(),
        rejected,
    }))
}
