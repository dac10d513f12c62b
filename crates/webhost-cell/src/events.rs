//! `GET /api/v1/events?from&to&type&vehicle_id&limit&cursor`: the tenant's
//! events (`geofence_enter`, `geofence_exit`, `overspeed`, `device_online`,
//! `device_offline`; how each arises is documented in `ingest.rs`), oldest
//! first, as `{"data": [{id, type, vehicle_id, geofence_id?, time,
//! position?}], "next_cursor"}`. `from` is inclusive and `to` exclusive
//! (RFC 3339; either may be left out); `type` takes one type or several
//! separated by commas.
//!
//! `POST /internal/v1/sweeps/offline` (control plane only) runs the offline
//! sweep at once instead of waiting for its next minute.

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webhost_api::{Endpoint, NoBody, Operation, Verb};
use webhost_domain::VehicleId;
use webhost_http::auth::{ControlCaller, TenantCaller};
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{Event, EventCursor, EventQuery, EventType, Page};

use crate::positions::query_time;
use crate::CellState;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

pub(crate) fn routes() -> Router<CellState> {
    Router::new().route(webhost_contract::paths::OFFLINE_SWEEP, post(sweep))
}

/// Which events, a page at a time.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// Inclusive, RFC 3339.
    #[schema(format = DateTime)]
    from: Option<String>,
    /// Exclusive, RFC 3339.
    #[schema(format = DateTime)]
    to: Option<String>,
    /// One type or several separated by commas (`geofence_enter,overspeed`).
    #[serde(rename = "type")]
    kind: Option<String>,
    #[schema(format = Uuid)]
    vehicle_id: Option<String>,
    /// 1 to 1,000; 100 when left out.
    limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    cursor: Option<String>,
}

webhost_api::list_page!(
    /// A page of events, oldest first.
    pub(crate) struct EventPage of Event
);

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// `geofence_enter,overspeed` → the types; an unknown one names the allowed.
fn parse_types(raw: &str) -> Result<Vec<EventType>, ApiError> {
    let mut types = Vec::new();
    for name in raw.split(',').map(str::trim) {
        let kind = EventType::parse(name).ok_or_else(|| {
            let allowed: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            invalid(format!(
                "type '{name}' is not one of {}",
                allowed.join(", ")
            ))
        })?;
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    Ok(types)
}

pub(crate) struct ListEvents;

impl Operation<CellState> for ListEvents {
    type Params = EventParams;
    type Body = NoBody;
    type Output = EventPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/events",
        "events",
        "events",
        "The tenant's events (geofence_enter, geofence_exit, overspeed, device_online, device_offline), oldest first",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: EventParams,
        _: NoBody,
    ) -> Result<EventPage, ApiError> {
        let from = query_time("from", &params.from)?;
        let to = query_time("to", &params.to)?;
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(invalid("from must be before to"));
            }
        }
        let limit = params.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        let types = params
            .kind
            .as_deref()
            .map(parse_types)
            .transpose()?
            .unwrap_or_default();
        let vehicle = params
            .vehicle_id
            .as_deref()
            .map(|raw| {
                raw.parse::<VehicleId>()
                    .map_err(|_| invalid("vehicle_id must be the id of a vehicle"))
            })
            .transpose()?;
        let after = params
            .cursor
            .as_deref()
            .map(|raw| {
                raw.parse::<EventCursor>()
                    .map_err(|_| invalid("cursor must be a next_cursor from a previous page"))
            })
            .transpose()?;
        let Page { data, next_cursor } = state
            .store
            .events(
                caller.tenant,
                EventQuery {
                    from,
                    to,
                    types,
                    vehicle,
                    after,
                    limit,
                },
            )
            .await?;
        Ok(EventPage {
            data,
            next_cursor: next_cursor.map(|c| c.to_string()),
        })
    }
}

#[derive(Serialize)]
struct SweepBody {
    /// `device_offline` events emitted.
    device_offline: usize,
}

async fn sweep(
    _: ControlCaller,
    State(state): State<CellState>,
) -> Result<ApiJson<SweepBody>, ApiError> {
    let device_offline = state.ingest.sweep_offline().await?;
    Ok(ApiJson(SweepBody { device_offline }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_a_comma_separated_list() {
        assert_eq!(
            parse_types("geofence_enter, overspeed,geofence_enter").expect("types"),
            [EventType::GeofenceEnter, EventType::Overspeed]
        );
        let err = parse_types("geofence_enter,speeding").expect_err("unknown");
        assert!(err.message.contains("'speeding'"), "{}", err.message);
        assert!(err.message.contains("device_offline"), "{}", err.message);
    }
}
