//! `/api/v1/positions` and a vehicle's history.

use std::fmt::Write as _;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use webhost_api::{Endpoint, Json, NoBody, NoParams, Operation, RestRequest, Verb};
use webhost_domain::{Attributes, DeviceId, Fix, Position, RawFix, TenantId, VehicleId};
use webhost_http::auth::TenantCaller;
use webhost_http::ApiError;
use webhost_storage::{HistoryQuery, NewPosition, PositionBucket};

use crate::trips::{Stop, Trip};

use crate::directory::TenantDirectory;
use crate::ingest::IngestError;
use crate::vehicles::vehicle_id;
use crate::CellState;

/// Items one `POST /api/v1/positions` may carry.
pub const MAX_BATCH: usize = 10_000;
const DEFAULT_HISTORY_LIMIT: u32 = 1_000;
const MAX_HISTORY_LIMIT: u32 = 10_000;
/// Rows an export may hold.
const MAX_EXPORT: usize = 1_000_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeInput {
    Text(String),
    /// Epoch milliseconds.
    Millis(i64),
}

/// One position to store; `vehicle_id` or `device_id` says whose.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PositionInput {
    #[serde(default)]
    #[schema(format = Uuid)]
    vehicle_id: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    /// RFC 3339 (REST also takes epoch milliseconds); now when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    time: Option<TimeInput>,
    lat: f64,
    lon: f64,
    /// km/h.
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
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Batch {
    Items(Vec<Value>),
    Wrapped { positions: Vec<Value> },
}

/// Up to 10,000 positions: a bare array or `{"positions": [...]}`. Items
/// stay JSON until each is parsed, so one bad item is one rejection.
#[derive(Deserialize)]
#[serde(from = "Batch")]
pub(crate) struct PositionBatch(Vec<Value>);

impl From<Batch> for PositionBatch {
    fn from(batch: Batch) -> Self {
        match batch {
            Batch::Items(items) | Batch::Wrapped { positions: items } => Self(items),
        }
    }
}

impl utoipa::PartialSchema for PositionBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("PositionInput"))
            .max_items(Some(MAX_BATCH))
            .into()
    }
}

impl ToSchema for PositionBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "PositionInput".into(),
            <PositionInput as utoipa::PartialSchema>::schema(),
        ));
        <PositionInput as ToSchema>::schemas(schemas);
    }
}

/// Why one item of a batch was refused.
#[derive(Serialize, ToSchema)]
pub(crate) struct Rejected {
    /// The item's position in the batch, from 0.
    index: usize,
    error: String,
}

/// What a batch came to. Accepted positions are durably stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct IngestAnswer {
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

pub(crate) struct IngestPositions;

impl Operation<CellState> for IngestPositions {
    type Params = NoParams;
    type Body = Json<PositionBatch>;
    type Output = IngestAnswer;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/positions",
        "ingestPositions",
        "positions",
        "Stores up to 10,000 positions; answers once they are durable",
    )
    .body_argument("positions");

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        Json(PositionBatch(items)): Json<PositionBatch>,
    ) -> Result<IngestAnswer, ApiError> {
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
        Ok(IngestAnswer {
            accepted,
            duplicates,
            rejected,
        })
    }

    /// 422 when nothing was accepted, the rejections with the error.
    fn respond(answer: IngestAnswer) -> Response {
        if answer.accepted > 0 || answer.rejected.is_empty() {
            return webhost_api::json_answer(StatusCode::OK, &answer);
        }
        let mut body = serde_json::to_value(&answer).unwrap_or_default();
        body["error"] = serde_json::json!({
            "code": "all_rejected",
            "message": "no position was accepted; 'rejected' says why for each",
        });
        (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
    }
}

pub(crate) struct LatestPositions;

impl Operation<CellState> for LatestPositions {
    type Params = NoParams;
    type Body = NoBody;
    type Output = PositionPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/positions/latest",
        "latestPositions",
        "positions",
        "The latest position of every vehicle that has one",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<PositionPage, ApiError> {
        let positions = state.ingest.latest().get(caller.tenant).await?;
        Ok(PositionPage::whole(positions))
    }
}

webhost_api::list_page!(
    /// Positions, oldest first (serialised straight from the items: a
    /// day's track is ~2 MB).
    pub(crate) struct PositionPage of Position
);

webhost_api::list_page!(
    /// A vehicle's trips.
    pub(crate) struct TripPage of Trip
);

webhost_api::list_page!(
    /// A vehicle's stops.
    pub(crate) struct StopPage of Stop
);

/// Time-bucketed averages of a vehicle's history.
#[derive(Serialize, ToSchema)]
pub(crate) struct BucketPage {
    data: Vec<PositionBucket>,
    /// Always `null`: buckets come whole.
    next_cursor: Option<String>,
    bucket_seconds: u32,
}

/// A slice of a vehicle's history, a page at a time.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    #[schema(format = Uuid)]
    vehicle_id: String,
    /// Inclusive, RFC 3339; a day before `to` when left out.
    #[schema(format = DateTime)]
    from: Option<String>,
    /// Exclusive, RFC 3339; now when left out.
    #[schema(format = DateTime)]
    to: Option<String>,
    /// 1 to 10,000; 1,000 when left out.
    limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    cursor: Option<String>,
    /// REST only, taken by [`History::alternative`].
    #[serde(default)]
    #[schema(ignore)]
    format: Option<String>,
}

/// An optional RFC 3339 query parameter.
pub(crate) fn query_time(
    name: &str,
    raw: &Option<String>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
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

/// `[from, to)` with the defaults (the last day); `from` before `to`.
fn time_range(
    from: &Option<String>,
    to: &Option<String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = query_time("to", to)?.unwrap_or_else(Utc::now);
    let from = query_time("from", from)?.unwrap_or(to - Duration::days(1));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from must be before to",
        ));
    }
    Ok((from, to))
}

pub(crate) struct History;

impl Operation<CellState> for History {
    type Params = HistoryParams;
    type Body = NoBody;
    type Output = PositionPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles/{vehicle_id}/positions",
        "positions",
        "positions",
        "A vehicle's history, oldest first, a page at a time",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: HistoryParams,
        _: NoBody,
    ) -> Result<PositionPage, ApiError> {
        let vehicle_id = vehicle_id(&params.vehicle_id)?;
        state.store.vehicle(caller.tenant, vehicle_id).await?;
        let (from, to) = time_range(&params.from, &params.to)?;
        if format_of(&params.format, &HeaderMap::new())? != Format::Json {
            return Err(ApiError::bad_request(
                "invalid_query",
                "exports are REST answers: ask for format=csv or format=gpx there",
            ));
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
        Ok(PositionPage {
            data: page.data,
            next_cursor: page
                .next_cursor
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        })
    }

    /// `bucket=` answers the buckets; `format=csv|gpx` (or the matching
    /// `Accept`) the whole range as an export.
    async fn alternative(
        state: &CellState,
        caller: &TenantCaller,
        request: &RestRequest,
    ) -> Option<Result<Response, ApiError>> {
        if request.query_value("bucket").is_some() {
            return Some(
                async {
                    let params: BucketParams = request.params()?;
                    let answer = PositionBuckets::call(state, caller, params, NoBody).await?;
                    Ok(PositionBuckets::respond(answer))
                }
                .await,
            );
        }
        let format = match format_of(&request.query_value("format"), &request.headers) {
            Ok(Format::Json) => return None,
            Ok(format) => format,
            Err(err) => return Some(Err(err)),
        };
        Some(
            async {
                let params: HistoryParams = request.params()?;
                let vehicle_id = vehicle_id(&params.vehicle_id)?;
                let vehicle = state.store.vehicle(caller.tenant, vehicle_id).await?;
                let (from, to) = time_range(&params.from, &params.to)?;
                let all = all_positions(state, caller.tenant, vehicle_id, from, to).await?;
                Ok(match format {
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
                })
            }
            .await,
        )
    }

    fn document(operation: &mut utoipa::openapi::path::Operation) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Required};
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        parameters.push(
            ParameterBuilder::new()
                .name("format")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "json (default), csv or gpx: the whole range as an export \
                     (also chosen by Accept: text/csv or application/gpx+xml)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .enum_values(Some(["json", "csv", "gpx"])),
                ))
                .build(),
        );
        parameters.push(
            ParameterBuilder::new()
                .name("bucket")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Time-bucketed averages instead of positions, like 5m; \
                     the answer is positionBuckets's",
                ))
                .schema(Some(
                    ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String),
                ))
                .build(),
        );
        if let Some(utoipa::openapi::RefOr::T(response)) =
            operation.responses.responses.get_mut("200")
        {
            let text = || {
                ContentBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String),
                    ))
                    .build()
            };
            response.content.insert("text/csv".into(), text());
            response
                .content
                .insert("application/gpx+xml".into(), text());
        }
    }
}

/// Buckets of a vehicle's history.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketParams {
    #[schema(format = Uuid)]
    vehicle_id: String,
    /// A number and a unit (s, m, h, d) between 1s and 1d, like 5m.
    bucket: String,
    /// Inclusive, RFC 3339; a day before `to` when left out.
    #[schema(format = DateTime)]
    from: Option<String>,
    /// Exclusive, RFC 3339; now when left out.
    #[schema(format = DateTime)]
    to: Option<String>,
}

pub(crate) struct PositionBuckets;

impl Operation<CellState> for PositionBuckets {
    type Params = BucketParams;
    type Body = NoBody;
    type Output = BucketPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles/{vehicle_id}/positions/buckets",
        "positionBuckets",
        "positions",
        "Time-bucketed averages of a vehicle's history (also ?bucket= on its positions)",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: BucketParams,
        _: NoBody,
    ) -> Result<BucketPage, ApiError> {
        let vehicle_id = vehicle_id(&params.vehicle_id)?;
        state.store.vehicle(caller.tenant, vehicle_id).await?;
        let (from, to) = time_range(&params.from, &params.to)?;
        let seconds = parse_bucket(&params.bucket)?;
        let data = state
            .store
            .position_buckets(caller.tenant, vehicle_id, from, to, seconds)
            .await?;
        Ok(BucketPage {
            data,
            next_cursor: None,
            bucket_seconds: seconds,
        })
    }
}

/// A vehicle and a range of at most 31 days.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeParams {
    #[schema(format = Uuid)]
    vehicle_id: String,
    /// Inclusive, RFC 3339; a day before `to` when left out.
    #[schema(format = DateTime)]
    from: Option<String>,
    /// Exclusive, RFC 3339; now when left out.
    #[schema(format = DateTime)]
    to: Option<String>,
}

/// A vehicle's valid positions over the range.
async fn range(
    state: &CellState,
    tenant: TenantId,
    params: &RangeParams,
) -> Result<Vec<Position>, ApiError> {
    let vehicle_id = vehicle_id(&params.vehicle_id)?;
    state.store.vehicle(tenant, vehicle_id).await?;
    let (from, to) = time_range(&params.from, &params.to)?;
    if to - from > Duration::days(31) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "trips and stops cover at most 31 days per request; narrow from/to",
        ));
    }
    all_positions(state, tenant, vehicle_id, from, to).await
}

/// Every position of a vehicle in `[from, to)`, page by page, refusing
/// more than `MAX_EXPORT` (exports, trips and stops need the whole range).
async fn all_positions(
    state: &CellState,
    tenant: TenantId,
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

pub(crate) struct Trips;

impl Operation<CellState> for Trips {
    type Params = RangeParams;
    type Body = NoBody;
    type Output = TripPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles/{vehicle_id}/trips",
        "trips",
        "trips",
        "A vehicle's trips: movement between stops (speed and dwell thresholds)",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: RangeParams,
        _: NoBody,
    ) -> Result<TripPage, ApiError> {
        let positions = range(state, caller.tenant, &params).await?;
        let (trips, _) = crate::trips::analyze(&positions, &crate::trips::Thresholds::default());
        Ok(TripPage::whole(trips))
    }
}

pub(crate) struct Stops;

impl Operation<CellState> for Stops {
    type Params = RangeParams;
    type Body = NoBody;
    type Output = StopPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles/{vehicle_id}/stops",
        "stops",
        "stops",
        "A vehicle's stops: where it stayed (below 5 km/h) for 5 minutes or more",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: RangeParams,
        _: NoBody,
    ) -> Result<StopPage, ApiError> {
        let positions = range(state, caller.tenant, &params).await?;
        let (_, stops) = crate::trips::analyze(&positions, &crate::trips::Thresholds::default());
        Ok(StopPage::whole(stops))
    }
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
