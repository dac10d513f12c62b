//! `/api/v1/positions` and a vehicle's history.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webhost_domain::{Attributes, DeviceId, Fix, Position, RawFix, VehicleId};
use webhost_http::auth::TenantCaller;
use webhost_http::{ApiError, ApiJson, ApiQuery};
use webhost_storage::{HistoryQuery, NewPosition, PositionBucket};

use crate::directory::TenantDirectory;
use crate::ingest::IngestError;
use crate::CellState;

/// Items one `POST /api/v1/positions` may carry.
pub const MAX_BATCH: usize = 10_000;
const DEFAULT_HISTORY_LIMIT: u32 = 1_000;
const MAX_HISTORY_LIMIT: u32 = 10_000;
/// Rows an export may hold.
const MAX_EXPORT: usize = 1_000_000;

pub(crate) fn routes() -> Router<CellState> {
    Router::new()
        .route("/api/v1/positions", post(ingest))
        .route("/api/v1/positions/latest", get(latest))
        .route("/api/v1/vehicles/{id}/positions", get(history))
        .route("/api/v1/vehicles/{id}/trips", get(trips))
        .route("/api/v1/vehicles/{id}/stops", get(stops))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeInput {
    Text(String),
    /// Epoch milliseconds.
    Millis(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionInput {
    #[serde(default)]
    vehicle_id: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    time: Option<TimeInput>,
    lat: f64,
    lon: f64,
    #[serde(default)]
    speed: Option<f64>,
    #[serde(default)]
    heading: Option<f64>,
    #[serde(default)]
    altitude: Option<f64>,
    #[serde(default)]
    accuracy: Option<f64>,
    #[serde(default)]
    valid: Option<bool>,
    #[serde(default)]
    attributes: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Batch {
    Items(Vec<Value>),
    Wrapped { positions: Vec<Value> },
}

#[derive(Serialize)]
struct Rejected {
    index: usize,
    error: String,
}

#[derive(Serialize)]
struct IngestAnswer {
    /// Stored now or already stored (a resend): either way, durable.
    accepted: usize,
    /// How many of the accepted were already stored.
    duplicates: usize,
    rejected: Vec<Rejected>,
}

/// Which of the tenant's vehicles a batch item names.
fn resolve(directory: &TenantDirectory, input: &PositionInput) -> Result<VehicleId, String> {
    match (&input.vehicle_id, &input.device_id) {
        (Some(id), _) => id
            .parse::<VehicleId>()
            .ok()
            .filter(|id| directory.vehicles.contains(id))
            .ok_or_else(|| format!("vehicle_id '{id}' is not a vehicle of this account")),
        (None, Some(device)) => {
            let parsed = DeviceId::parse(device).map_err(|e| e.to_string())?;
            directory.devices.get(&parsed).copied().ok_or_else(|| {
                format!("device_id '{device}' is not registered to a vehicle of this account")
            })
        }
        (None, None) => Err("each position needs vehicle_id or device_id".into()),
    }
}

fn parse_time(input: &Option<TimeInput>) -> Result<Option<DateTime<Utc>>, String> {
    match input {
        None => Ok(None),
        Some(TimeInput::Text(text)) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("time '{text}' is not RFC 3339 (like 2024-11-21T12:00:00Z)")),
        Some(TimeInput::Millis(ms)) => DateTime::from_timestamp_millis(*ms)
            .map(Some)
            .ok_or_else(|| format!("time {ms} is out of range")),
    }
}

fn parse_item(
    value: Value,
    directory: &TenantDirectory,
    now: DateTime<Utc>,
    oldest: DateTime<Utc>,
    retention_days: u32,
) -> Result<Position, String> {
    let input: PositionInput = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let vehicle_id = resolve(directory, &input)?;
    let raw = RawFix {
        time: parse_time(&input.time)?,
        lat: input.lat,
        lon: input.lon,
        speed: input.speed,
        heading: input.heading,
        altitude: input.altitude,
        accuracy: input.accuracy,
        valid: input.valid,
        attributes: Attributes::parse(input.attributes.unwrap_or(Value::Null))
            .map_err(|e| e.to_string())?,
    };
    let fix = Fix::parse(raw, now).map_err(|e| e.to_string())?;
    if fix.time < oldest {
        return Err(format!(
            "time {} is older than the plan keeps history ({retention_days} days)",
            fix.time.to_rfc3339()
        ));
    }
    Ok(Position { vehicle_id, fix })
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Overloaded | IngestError::Stopped => {
                ApiError::unavailable(err.to_string())
            }
            IngestError::Storage(err) => err.into(),
        }
    }
}

async fn ingest(
    caller: TenantCaller,
    State(state): State<CellState>,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<Response, ApiError> {
    let items = match batch {
        Batch::Items(items) | Batch::Wrapped { positions: items } => items,
    };
    if items.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} positions; this one has {}",
                items.len()
            ),
        ));
    }
    let directory = state.directory.get(caller.tenant).await?;
    let now = Utc::now();
    let oldest = now - Duration::days(i64::from(directory.retention_days));
    let mut rows = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_item(item, &directory, now, oldest, directory.retention_days) {
            Ok(position) => rows.push(NewPosition {
                tenant_id: caller.tenant,
                position,
            }),
            Err(error) => rejected.push(Rejected { index, error }),
        }
    }
    let accepted = rows.len();
    let stored = state.ingest.store(rows).await?;
    let duplicates = stored.iter().filter(|s| !**s).count();
    let answer = IngestAnswer {
        accepted,
        duplicates,
        rejected,
    };
    if accepted == 0 && !answer.rejected.is_empty() {
        let mut body = serde_json::to_value(&answer).map_err(|e| ApiError::unexpected(e.into()))?;
        body["error"] = serde_json::json!({
            "code": "all_rejected",
            "message": "no position was accepted; 'rejected' says why for each",
        });
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response());
    }
    Ok(ApiJson(answer).into_response())
}

async fn latest(
    caller: TenantCaller,
    State(state): State<CellState>,
) -> Result<Response, ApiError> {
    let positions = state.ingest.latest().get(caller.tenant).await?;
    Ok(ApiJson(ListPage::whole(positions)).into_response())
}

/// `{"data": [...], "next_cursor": ...}`, serialized straight from the
/// items (no intermediate JSON tree: a day's track is ~2 MB).
#[derive(Serialize)]
struct ListPage<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> ListPage<T> {
    fn whole(data: Vec<T>) -> Self {
        Self {
            data,
            next_cursor: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    bucket: Option<String>,
    format: Option<String>,
}

fn query_time(name: &str, raw: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.as_deref()
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("{name} must be an RFC 3339 time like 2024-11-21T00:00:00Z"),
                    )
                })
        })
        .transpose()
}

/// `30s`, `5m`, `1h`, `1d` → seconds, between 1 s and 1 day.
pub(crate) fn parse_bucket(raw: &str) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_query",
            "bucket must be a number and a unit (s, m, h, d) between 1s and 1d, like 5m",
        )
    };
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let number: u32 = number.parse().map_err(|_| invalid())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    let seconds = number.checked_mul(unit).ok_or_else(invalid)?;
    if seconds == 0 || seconds > 86_400 {
        return Err(invalid());
    }
    Ok(seconds)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Gpx,
}

fn format_of(param: &Option<String>, headers: &HeaderMap) -> Result<Format, ApiError> {
    match param.as_deref() {
        Some("json") => return Ok(Format::Json),
        Some("csv") => return Ok(Format::Csv),
        Some("gpx") => return Ok(Format::Gpx),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format '{other}' is not one of json, csv, gpx"),
            ))
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains("application/gpx+xml") {
        Format::Gpx
    } else {
        Format::Json
    })
}

async fn history(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let vehicle_id: VehicleId = id.parse().map_err(|_| ApiError::not_found("vehicle"))?;
    let vehicle = state.store.vehicle(caller.tenant, vehicle_id).await?;
    let to = query_time("to", &params.to)?.unwrap_or_else(Utc::now);
    let from = query_time("from", &params.from)?.unwrap_or(to - Duration::days(1));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from must be before to",
        ));
    }
    let format = format_of(&params.format, &headers)?;

    if let Some(bucket) = &params.bucket {
        let seconds = parse_bucket(bucket)?;
        let buckets: Vec<PositionBucket> = state
            .store
            .position_buckets(caller.tenant, vehicle_id, from, to, seconds)
            .await?;
        return Ok(ApiJson(
            serde_json::json!({ "data": buckets, "next_cursor": null, "bucket_seconds": seconds }),
        )
        .into_response());
    }

    if format != Format::Json {
        let all = all_positions(&state, caller.tenant, vehicle_id, from, to).await?;
        return Ok(match format {
            Format::Csv => (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                to_csv(&all),
            )
                .into_response(),
            _ => (
                [(header::CONTENT_TYPE, "application/gpx+xml")],
                to_gpx(vehicle.name.as_str(), &all),
            )
                .into_response(),
        });
    }

    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_HISTORY_LIMIT}"),
        ));
    }
    let after = query_time("cursor", &params.cursor)?;
    let page = state
        .store
        .positions(
            caller.tenant,
            vehicle_id,
            HistoryQuery {
                from,
                to,
                after,
                limit,
            },
        )
        .await?;
    Ok(ApiJson(ListPage {
        data: page.data,
        next_cursor: page
            .next_cursor
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

/// A vehicle's valid positions over `[from, to)` (default: the last day).
async fn range(
    state: &CellState,
    caller: &TenantCaller,
    id: &str,
    params: &RangeParams,
) -> Result<Vec<Position>, ApiError> {
    let vehicle_id: VehicleId = id.parse().map_err(|_| ApiError::not_found("vehicle"))?;
    state.store.vehicle(caller.tenant, vehicle_id).await?;
    let to = query_time("to", &params.to)?.unwrap_or_else(Utc::now);
    let from = query_time("from", &params.from)?.unwrap_or(to - Duration::days(1));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from must be before to",
        ));
    }
    if to - from > Duration::days(31) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "trips and stops cover at most 31 days per request; narrow from/to",
        ));
    }
    all_positions(state, caller.tenant, vehicle_id, from, to).await
}

/// Every position of a vehicle in `[from, to)`, page by page, refusing
/// more than `MAX_EXPORT` (exports, trips and stops need the whole range).
async fn all_positions(
    state: &CellState,
    tenant: webhost_domain::TenantId,
    vehicle_id: VehicleId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Position>, ApiError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let query = HistoryQuery {
            from,
            to,
            after,
            limit: MAX_HISTORY_LIMIT,
        };
        let page = state.store.positions(tenant, vehicle_id, query).await?;
        all.extend(page.data);
        if all.len() > MAX_EXPORT {
            return Err(ApiError::bad_request(
                "range_too_large",
                format!("at most {MAX_EXPORT} positions per request; narrow from/to"),
            ));
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => return Ok(all),
        }
    }
}

async fn trips(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Response, ApiError> {
    let positions = range(&state, &caller, &id, &params).await?;
    let (trips, _) = crate::trips::analyze(&positions, &crate::trips::Thresholds::default());
    Ok(ApiJson(ListPage::whole(trips)).into_response())
}

async fn stops(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Response, ApiError> {
    let positions = range(&state, &caller, &id, &params).await?;
    let (_, stops) = crate::trips::analyze(&positions, &crate::trips::Thresholds::default());
    Ok(ApiJson(ListPage::whole(stops)).into_response())
}

fn opt(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn to_csv(positions: &[Position]) -> String {
    let mut out = String::from("time,lat,lon,speed_kmh,heading,altitude,accuracy,valid\n");
    for p in positions {
        let f = &p.fix;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            f.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            f.lat,
            f.lon,
            opt(f.speed),
            opt(f.heading),
            opt(f.altitude),
            opt(f.accuracy),
            f.valid
        );
    }
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// GPX 1.1: one track, one segment, valid fixes only.
fn to_gpx(name: &str, positions: &[Position]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"WebHost\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk>\n",
    );
    let _ = writeln!(out, "<name>{}</name>\n<trkseg>", xml_escape(name));
    for p in positions.iter().filter(|p| p.fix.valid) {
        let f = &p.fix;
        let _ = write!(out, "<trkpt lat=\"{}\" lon=\"{}\">", f.lat, f.lon);
        if let Some(ele) = f.altitude {
            let _ = write!(out, "<ele>{ele}</ele>");
        }
        let _ = writeln!(
            out,
            "<time>{}</time></trkpt>",
            f.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    out.push_str("</trkseg>\n</trk>\n</gpx>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_parse_within_bounds() {
        assert_eq!(parse_bucket("5m").unwrap(), 300);
        assert_eq!(parse_bucket("30s").unwrap(), 30);
        assert_eq!(parse_bucket("1d").unwrap(), 86_400);
        for bad in ["", "m", "5", "0m", "2d", "5x", "-5m", "99999999999h"] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gpx_escapes_names() {
        let gpx = to_gpx("<Van & Co>", &[]);
        assert!(gpx.contains("<name>&lt;Van &amp; Co&gt;</name>"));
    }
}
