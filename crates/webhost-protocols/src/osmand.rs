//! OsmAnd, the HTTP protocol of Traccar Client and compatible phone apps
//! (SPEC §5).
//!
//! # Framing
//!
//! One HTTP request (any method, any path) is one position report. The
//! server hands [`parse`] the raw query string, the `Content-Type` header and
//! the raw body; this module never sees a socket. Three forms:
//!
//! - **Query**: `?id=…&lat=…&lon=…&timestamp=…`, the classic OsmAnd form.
//! - **Form**: the same parameters in an `application/x-www-form-urlencoded`
//!   body (any non-JSON body is read this way, as Traccar does). Query and
//!   body parameters are merged; the body wins on a clash.
//! - **Json**: `Content-Type: application/json` (or a body that starts with
//!   `{` and is not declared as a form), the body of newer Traccar Client
//!   versions: `{"device_id": …, "location": {"timestamp": …, "coords":
//!   {…}, "battery": {…}, "is_moving": …}}`. The query string is ignored.
//!   A JSON content type with an empty body is read as the query form.
//!
//! The form decides how the server refuses an unknown device
//! ([`Form::unknown_device_status`]: 400 for query/form, 404 for JSON, as
//! Traccar Client expects); every [`Error`] is a 400 whose message says what
//! to fix.
//!
//! # Parameters and units (query and form)
//!
//! | key | meaning |
//! |-----|---------|
//! | `id` or `deviceid` | device identifier (`id` wins if both) |
//! | `lat`, `lon` | degrees; or `location=lat,lon` |
//! | `timestamp` | epoch seconds or epoch milliseconds (values ≥ 10^11 are milliseconds: seconds would be after year 5138, milliseconds before March 1973), ISO 8601 / RFC 3339 (no zone = UTC), or `yyyy-MM-dd HH:mm:ss` (UTC); absent = `now` |
//! | `speed` | **knots**, stored as km/h (× 1.852); negative = unknown |
//! | `bearing` or `heading` | degrees; negative = unknown |
//! | `altitude` | metres |
//! | `accuracy` | metres; negative = unknown |
//! | `hdop`, `batt` | numbers, kept as attributes `hdop`, `batt` (percent) |
//! | `valid` | `true`/`false`/`1`/`0`; absent = true |
//! | anything else | attribute: a JSON number if it is one, `true`/`false` as booleans, else the string |
//!
//! JSON form units: `coords.speed` is **m/s** (× 3.6 → km/h, negative =
//! unknown), `coords.heading` degrees (negative = unknown), `altitude` and
//! `accuracy` metres, `battery.level` 0..1 (stored as `batt` in percent,
//! negative = unknown), `battery.is_charging` → `charge`, `is_moving` →
//! `is_moving`. Any other scalar under the root, `location` or one of its
//! objects becomes an attribute named by its path below `location`
//! (`event`, `activity.type`, `coords.speed_accuracy`, `extras.foo`…).
//!
//! # Bounds
//!
//! A query string or body over [`MAX_INPUT`] bytes is refused, as is a
//! request with more than [`MAX_ATTRIBUTES`] attributes. Numbers must be
//! finite; latitude in [-90, 90], longitude in [-180, 180].

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Number, Value};

use crate::{snippet, Fix};

/// Largest query string, and largest body, accepted (bytes).
pub const MAX_INPUT: usize = 64 * 1024;

/// Most attributes one report may carry.
pub const MAX_ATTRIBUTES: usize = 200;

/// Knots to km/h.
const KNOTS_TO_KMH: f64 = 1.852;

/// m/s to km/h.
const MS_TO_KMH: f64 = 3.6;

/// From this value on, a numeric timestamp is epoch milliseconds.
const EPOCH_MILLIS_FROM: u64 = 100_000_000_000;

/// Parameters with a meaning of their own (never copied as attributes).
const KNOWN_KEYS: &[&str] = &[
    "id",
    "deviceid",
    "lat",
    "lon",
    "location",
    "timestamp",
    "speed",
    "bearing",
    "heading",
    "altitude",
    "accuracy",
    "hdop",
    "batt",
    "valid",
];

/// Which form the request used; decides how an unknown device is refused
/// (query/form → 400, JSON → 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    Query,
    Form,
    Json,
}

impl Form {
    /// The HTTP status that tells this kind of client "unknown device".
    pub fn unknown_device_status(self) -> u16 {
        match self {
            Form::Query | Form::Form => 400,
            Form::Json => 404,
        }
    }
}

/// A parsed OsmAnd request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub form: Form,
    pub fix: Fix,
}

/// Why a request was refused; each message says what to fix. All are client
/// errors (HTTP 400).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the {what} is {len} bytes: at most {max} are accepted")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("too many parameters: at most {max} attributes are accepted")]
    TooManyAttributes { max: usize },
    #[error("missing {field}")]
    MissingField { field: &'static str },
    #[error("{field} must be a number between -90 and 90 (got '{value}')")]
    BadLatitude { field: &'static str, value: String },
    #[error("{field} must be a number between -180 and 180 (got '{value}')")]
    BadLongitude { field: &'static str, value: String },
    #[error("location must be 'lat,lon', two numbers separated by a comma (got '{0}')")]
    BadLocation(String),
    #[error(
        "unrecognised timestamp '{0}': use epoch seconds, epoch milliseconds, ISO 8601 \
         or yyyy-MM-dd HH:mm:ss"
    )]
    BadTimestamp(String),
    #[error("{field} must be a finite number (got '{value}')")]
    BadNumber { field: &'static str, value: String },
    #[error("valid must be true, false, 1 or 0 (got '{0}')")]
    BadValid(String),
    #[error("the body is not valid JSON ({0}); send a JSON object or a form")]
    BadJson(String),
    #[error("{field} must be {expected}")]
    JsonType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("location.battery.level must be between 0 and 1 (got {0})")]
    BadBatteryLevel(f64),
}

/// Parses one OsmAnd request.
///
/// `query`: the raw query string (without the `?`); `content_type`: the
/// `Content-Type` header value; `body`: the raw body. `now` is used when the
/// device sent no timestamp.
pub fn parse(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Request, Error> {
    let query = query.unwrap_or("");
    let query = query.strip_prefix('?').unwrap_or(query);
    if query.len() > MAX_INPUT {
        return Err(Error::TooLarge {
            what: "query string",
            len: query.len(),
            max: MAX_INPUT,
        });
    }
    if body.len() > MAX_INPUT {
        return Err(Error::TooLarge {
            what: "body",
            len: body.len(),
            max: MAX_INPUT,
        });
    }

    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body_blank = body.iter().all(u8::is_ascii_whitespace);
    let declared_json = media == "application/json" || media.ends_with("+json");
    let declared_form = media == "application/x-www-form-urlencoded";
    let looks_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');

    if !body_blank && (declared_json || (!declared_form && looks_json)) {
        let fix = parse_json(body, now)?;
        return Ok(Request {
            form: Form::Json,
            fix,
        });
    }

    let mut params = Params::default();
    params.extend(query.as_bytes())?;
    let form = if body_blank {
        Form::Query
    } else {
        params.extend(body)?;
        Form::Form
    };
    let fix = parse_params(params.0, now)?;
    Ok(Request { form, fix })
}

/// Query and body parameters, merged: a later value replaces an earlier one.
#[derive(Default)]
struct Params(BTreeMap<String, String>);

impl Params {
    fn extend(&mut self, raw: &[u8]) -> Result<(), Error> {
        for (key, value) in form_urlencoded::parse(raw) {
            if key.is_empty() {
                continue;
            }
            self.0.insert(key.into_owned(), value.into_owned());
            // Bounds the work as well as the result: with the known keys
            // counted in, no larger map can pass the attribute limit.
            if self.0.len() > MAX_ATTRIBUTES + KNOWN_KEYS.len() {
                return Err(Error::TooManyAttributes {
                    max: MAX_ATTRIBUTES,
                });
            }
        }
        Ok(())
    }
}

fn parse_params(mut params: BTreeMap<String, String>, now: DateTime<Utc>) -> Result<Fix, Error> {
    let device_id = ["id", "deviceid"]
        .iter()
        .filter_map(|k| params.get(*k))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .ok_or(Error::MissingField {
            field: "id or deviceid",
        })?
        .to_owned();

    let location = params
        .get("location")
        .map(|v| parse_location(v))
        .transpose()?;
    let lat = match params.get("lat") {
        Some(v) => latitude("lat", v)?,
        None => location.map(|(lat, _)| lat).ok_or(Error::MissingField {
            field: "lat (or location=lat,lon)",
        })?,
    };
    let lon = match params.get("lon") {
        Some(v) => longitude("lon", v)?,
        None => location.map(|(_, lon)| lon).ok_or(Error::MissingField {
            field: "lon (or location=lat,lon)",
        })?,
    };

    let time = match params.get("timestamp") {
        Some(v) => parse_timestamp(v)?,
        None => now,
    };
    let speed_kmh = optional_number(&params, "speed")?
        .filter(|s| *s >= 0.0)
        .map(|knots| knots * KNOTS_TO_KMH);
    let heading = match optional_number(&params, "bearing")? {
        Some(h) => Some(h),
        None => optional_number(&params, "heading")?,
    }
    .filter(|h| *h >= 0.0);
    let altitude = optional_number(&params, "altitude")?;
    let accuracy = optional_number(&params, "accuracy")?.filter(|a| *a >= 0.0);
    let valid = match params.get("valid") {
        Some(v) => parse_bool(v).ok_or_else(|| Error::BadValid(snippet(v)))?,
        None => true,
    };

    let mut attributes = Map::new();
    for key in ["hdop", "batt"] {
        if let Some(value) = optional_number(&params, key)? {
            attributes.insert(key.to_owned(), number_value(value));
        }
    }
    for key in KNOWN_KEYS {
        params.remove(*key);
    }
    if params.len() + attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::TooManyAttributes {
            max: MAX_ATTRIBUTES,
        });
    }
    for (key, value) in params {
        let value = attribute_value(&value);
        attributes.insert(key, value);
    }

    Ok(Fix {
        device_id,
        time,
        lat,
        lon,
        speed_kmh,
        heading,
        altitude,
        accuracy,
        valid,
        attributes,
    })
}

fn finite(value: &str) -> Option<f64> {
    // `str::parse` also accepts "NaN" and "inf": refused here.
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn latitude(field: &'static str, value: &str) -> Result<f64, Error> {
    finite(value)
        .filter(|v| (-90.0..=90.0).contains(v))
        .ok_or_else(|| Error::BadLatitude {
            field,
            value: snippet(value),
        })
}

fn longitude(field: &'static str, value: &str) -> Result<f64, Error> {
    finite(value)
        .filter(|v| (-180.0..=180.0).contains(v))
        .ok_or_else(|| Error::BadLongitude {
            field,
            value: snippet(value),
        })
}

fn parse_location(value: &str) -> Result<(f64, f64), Error> {
    let (lat, lon) = value
        .split_once(',')
        .ok_or_else(|| Error::BadLocation(snippet(value)))?;
    if finite(lat).is_none() || finite(lon).is_none() {
        return Err(Error::BadLocation(snippet(value)));
    }
    Ok((
        latitude("location latitude", lat)?,
        longitude("location longitude", lon)?,
    ))
}

fn optional_number(
    params: &BTreeMap<String, String>,
    field: &'static str,
) -> Result<Option<f64>, Error> {
    params
        .get(field)
        .map(|v| {
            finite(v).ok_or_else(|| Error::BadNumber {
                field,
                value: snippet(v),
            })
        })
        .transpose()
}

fn parse_bool(value: &str) -> Option<bool> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

/// A finite `f64` as JSON, integral values as integers (so `batt=76` stays
/// `76`, not `76.0`).
fn number_value(value: f64) -> Value {
    // Within ±2^53 every integral f64 converts to i64 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() <= EXACT {
        Value::from(value as i64)
    } else {
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// An unknown parameter's value: a number when it is written as a JSON
/// number (so "0123", a phone number or a cell id with a leading zero stays
/// a string), a boolean for `true`/`false`, else the string itself.
fn attribute_value(value: &str) -> Value {
    match value {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if is_json_number(value) {
        if let Ok(number) = serde_json::from_str::<Number>(value) {
            return Value::Number(number);
        }
    }
    Value::String(value.to_owned())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn is_json_number(s: &str) -> bool {
    fn digits(b: &[u8], mut i: usize) -> usize {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == b.len()
}

/// Parses a timestamp in any form OsmAnd clients send: epoch seconds or
/// milliseconds (told apart by magnitude, see the module doc; a fraction is
/// allowed), RFC 3339 / ISO 8601 with or without a zone (none = UTC), or
/// `yyyy-MM-dd HH:mm:ss[.fff]` (UTC).
pub fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, Error> {
    timestamp(value.trim()).ok_or_else(|| Error::BadTimestamp(snippet(value)))
}

fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return epoch_integer(s.parse::<u64>().ok()?);
    }
    if let Some((int, frac)) = s.split_once('.') {
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if all_digits(int) && all_digits(frac) {
            return epoch_fraction(s.parse::<f64>().ok()?);
        }
    }
    if let Some(t) = iso(s) {
        return Some(t);
    }
    // An unencoded `+hh:mm` zone in a query string arrives as ` hh:mm`.
    let bytes = s.as_bytes();
    for back in [6, 5, 3] {
        let Some(at) = bytes.len().checked_sub(back) else {
            continue;
        };
        if bytes.get(at) == Some(&b' ') && s.contains('T') {
            let mut fixed = s.to_owned();
            fixed.replace_range(at..=at, "+");
            if let Some(t) = iso(&fixed) {
                return Some(t);
            }
        }
    }
    None
}

fn epoch_integer(n: u64) -> Option<DateTime<Utc>> {
    let n = i64::try_from(n).ok()?;
    if n >= EPOCH_MILLIS_FROM as i64 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

fn epoch_fraction(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let seconds = if value >= EPOCH_MILLIS_FROM as f64 {
        value / 1000.0
    } else {
        value
    };
    // Far beyond chrono's range; also keeps the `as` below exact.
    if seconds > 1e15 {
        return None;
    }
    let whole = seconds.trunc();
    let nanos = ((seconds - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

fn iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.to_utc());
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    None
}

// ---------------------------------------------------------------------------
// JSON form

/// Paths (below `location`, or at the root for `device_id`) with a meaning of
/// their own, never copied as attributes.
const JSON_CONSUMED: &[&str] = &[
    "device_id",
    "location",
    "timestamp",
    "is_moving",
    "coords.latitude",
    "coords.longitude",
    "coords.speed",
    "coords.heading",
    "coords.altitude",
    "coords.accuracy",
    "battery.level",
    "battery.is_charging",
];

fn parse_json(body: &[u8], now: DateTime<Utc>) -> Result<Fix, Error> {
    let root: Value = serde_json::from_slice(body).map_err(|e| Error::BadJson(e.to_string()))?;
    let root = root.as_object().ok_or(Error::JsonType {
        field: "the JSON body",
        expected: "an object with device_id and location",
    })?;

    let device_id = match root.get("device_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(Error::MissingField { field: "device_id" })
        }
        Some(_) => {
            return Err(Error::JsonType {
                field: "device_id",
                expected: "a string",
            })
        }
    };
    let location = match root.get("location") {
        Some(Value::Object(location)) => location,
        Some(Value::Array(_)) => {
            return Err(Error::JsonType {
                field: "location",
                expected: "one object (send one request per location)",
            })
        }
        None | Some(Value::Null) => return Err(Error::MissingField { field: "location" }),
        Some(_) => {
            return Err(Error::JsonType {
                field: "location",
                expected: "an object",
            })
        }
    };

    let time = match location.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => parse_timestamp(s)?,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => epoch_integer(n),
            (None, Some(f)) => epoch_fraction(f),
            (None, None) => None,
        }
        .ok_or_else(|| Error::BadTimestamp(n.to_string()))?,
        Some(_) => {
            return Err(Error::JsonType {
                field: "location.timestamp",
                expected: "an ISO 8601 string or epoch milliseconds",
            })
        }
    };

    let coords = match location.get("coords") {
        Some(Value::Object(coords)) => coords,
        None | Some(Value::Null) => {
            return Err(Error::MissingField {
                field: "location.coords",
            })
        }
        Some(_) => {
            return Err(Error::JsonType {
                field: "location.coords",
                expected: "an object",
            })
        }
    };
    let lat = json_coordinate(coords, "latitude", "location.coords.latitude", 90.0)?;
    let lon = json_coordinate(coords, "longitude", "location.coords.longitude", 180.0)?;
    let speed_kmh = json_number(coords, "speed", "location.coords.speed")?
        .filter(|s| *s >= 0.0)
        .map(|ms| ms * MS_TO_KMH);
    let heading = json_number(coords, "heading", "location.coords.heading")?.filter(|h| *h >= 0.0);
    let altitude = json_number(coords, "altitude", "location.coords.altitude")?;
    let accuracy =
        json_number(coords, "accuracy", "location.coords.accuracy")?.filter(|a| *a >= 0.0);

    let mut attributes = Map::new();
    flatten(root, "", &mut attributes)?;
    flatten(location, "", &mut attributes)?;

    let mut own = Map::new();
    match location.get("battery") {
        None | Some(Value::Null) => {}
        Some(Value::Object(battery)) => {
            if let Some(level) = json_number(battery, "level", "location.battery.level")? {
                if level > 1.0 {
                    return Err(Error::BadBatteryLevel(level));
                }
                if level >= 0.0 {
                    // Two decimals: 0.57 * 100 is 56.99999999999999.
                    own.insert(
                        "batt".into(),
                        number_value((level * 10_000.0).round() / 100.0),
                    );
                }
            }
            match battery.get("is_charging") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(charging)) => {
                    own.insert("charge".into(), Value::Bool(*charging));
                }
                Some(_) => {
                    return Err(Error::JsonType {
                        field: "location.battery.is_charging",
                        expected: "true or false",
                    })
                }
            }
        }
        Some(_) => {
            return Err(Error::JsonType {
                field: "location.battery",
                expected: "an object",
            })
        }
    }
    match location.get("is_moving") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(moving)) => {
            own.insert("is_moving".into(), Value::Bool(*moving));
        }
        Some(_) => {
            return Err(Error::JsonType {
                field: "location.is_moving",
                expected: "true or false",
            })
        }
    }
    for (key, value) in own {
        insert_attribute(&mut attributes, key, value)?;
    }

    Ok(Fix {
        device_id,
        time,
        lat,
        lon,
        speed_kmh,
        heading,
        altitude,
        accuracy,
        valid: true,
        attributes,
    })
}

fn json_coordinate(
    coords: &Map<String, Value>,
    key: &str,
    field: &'static str,
    limit: f64,
) -> Result<f64, Error> {
    let value = coords.get(key).ok_or(Error::MissingField { field })?;
    let bad = || {
        let value = snippet(&value.to_string());
        if limit > 90.0 {
            Error::BadLongitude { field, value }
        } else {
            Error::BadLatitude { field, value }
        }
    };
    value
        .as_f64()
        .filter(|v| v.is_finite() && (-limit..=limit).contains(v))
        .ok_or_else(bad)
}

/// An optional number; `null` counts as absent.
fn json_number(
    object: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<f64>, Error> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| Error::BadNumber {
                field,
                value: n.to_string(),
            }),
        Some(other) => Err(Error::BadNumber {
            field,
            value: snippet(&other.to_string()),
        }),
    }
}

/// Copies the scalars of `object` (and of its objects, one level down, as
/// `parent.child`) into `attributes`, except the consumed paths. Arrays and
/// deeper levels are left out: attributes are flat.
fn flatten(
    object: &Map<String, Value>,
    prefix: &str,
    attributes: &mut Map<String, Value>,
) -> Result<(), Error> {
    for (key, value) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if JSON_CONSUMED.contains(&path.as_str()) {
            continue;
        }
        match value {
            Value::Null | Value::Array(_) => {}
            Value::Object(inner) => {
                if prefix.is_empty() {
                    flatten(inner, &path, attributes)?;
                }
            }
            scalar => insert_attribute(attributes, path, scalar.clone())?,
        }
    }
    Ok(())
}

fn insert_attribute(
    attributes: &mut Map<String, Value>,
    key: String,
    value: Value,
) -> Result<(), Error> {
    attributes.insert(key, value);
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::TooManyAttributes {
            max: MAX_ATTRIBUTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
