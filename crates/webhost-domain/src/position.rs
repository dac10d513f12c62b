//! A position report, parsed: finite numbers in range, a time that is not in
//! the future beyond clock skew. Units: degrees, km/h, metres.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use crate::{Attributes, ValidationError, VehicleId};

/// How far ahead of the server's clock a report may be (device clock skew).
pub const MAX_FUTURE: Duration = Duration::minutes(10);

fn finite(field: &'static str, value: f64) -> Result<f64, ValidationError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ValidationError::new(field, "must be a finite number"))
    }
}

fn within(field: &'static str, value: f64, min: f64, max: f64) -> Result<f64, ValidationError> {
    let value = finite(field, value)?;
    if value < min || value > max {
        return Err(ValidationError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

/// Everything of a position but who it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fix {
    #[serde(serialize_with = "rfc3339")]
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// km/h.
    pub speed: Option<f64>,
    /// Degrees clockwise from north, [0, 360).
    pub heading: Option<f64>,
    /// Metres above sea level.
    pub altitude: Option<f64>,
    /// Metres.
    pub accuracy: Option<f64>,
    /// False when the device had no GPS fix: kept, but it does not move the
    /// vehicle.
    pub valid: bool,
    pub attributes: Attributes,
}

/// Serialises a time as chrono does (RFC 3339, `Z`, the fraction only when
/// there is one) without going through `fmt`: a day's track has ~9,000 of
/// them, and chrono's `Display` wrote them a character at a time.
fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    let nanos = time.nanosecond();
    let year = time.year();
    if !(0..=9999).contains(&year) || nanos % 1_000_000 != 0 || nanos >= 1_000_000_000 {
        // Sub-millisecond, leap-second or far-off times: chrono's own.
        return serializer.collect_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for i in (0..digits).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year.unsigned_abs(), 4);
    put(5, time.month(), 2);
    put(8, time.day(), 2);
    put(11, time.hour(), 2);
    put(14, time.minute(), 2);
    put(17, time.second(), 2);
    let text = if nanos == 0 {
        out[19] = b'Z';
        &out[..20]
    } else {
        put(20, nanos / 1_000_000, 3);
        &out[..]
    };
    serializer.serialize_str(std::str::from_utf8(text).unwrap_or_default())
}

/// The raw numbers of a report, before parsing.
#[derive(Clone, Debug, Default)]
pub struct RawFix {
    pub time: Option<DateTime<Utc>>,
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    pub altitude: Option<f64>,
    pub accuracy: Option<f64>,
    pub valid: Option<bool>,
    pub attributes: Attributes,
}

impl Fix {
    /// `now` is the server's clock; a missing time means "now".
    pub fn parse(raw: RawFix, now: DateTime<Utc>) -> Result<Self, ValidationError> {
        // Millisecond precision: what every protocol sends and both storage
        // engines keep exactly, so a resent report is recognised as such.
        let time = raw.time.unwrap_or(now);
        let time = time
            .duration_trunc(Duration::milliseconds(1))
            .unwrap_or(time);
        if time > now + MAX_FUTURE {
            return Err(ValidationError::new(
                "time",
                format!(
                    "is {} s in the future; check the device clock (at most {} s allowed)",
                    (time - now).num_seconds(),
                    MAX_FUTURE.num_seconds()
                ),
            ));
        }
        let heading = raw
            .heading
            .map(|h| within("heading", h, 0.0, 360.0).map(|h| h % 360.0))
            .transpose()?;
        Ok(Self {
            time,
            lat: within("lat", raw.lat, -90.0, 90.0)?,
            lon: within("lon", raw.lon, -180.0, 180.0)?,
            speed: raw
                .speed
                .map(|s| within("speed", s, 0.0, 2_000.0))
                .transpose()?,
            heading,
            altitude: raw
                .altitude
                .map(|a| within("altitude", a, -12_000.0, 100_000.0))
                .transpose()?,
            accuracy: raw
                .accuracy
                .map(|a| within("accuracy", a, 0.0, 1_000_000.0))
                .transpose()?,
            valid: raw.valid.unwrap_or(true),
            attributes: raw.attributes,
        })
    }
}

/// A stored position of a vehicle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    pub vehicle_id: VehicleId,
    #[serde(flatten)]
    pub fix: Fix,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_serialise_as_chrono_does() {
        for text in [
            "2026-11-21T08:00:00Z",
            "2026-11-21T08:00:00.120Z",
            "0001-01-01T00:00:00.001Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T12:34:56.000007Z",
        ] {
            let time: DateTime<Utc> = text.parse().expect("time");
            let fix = Fix {
                time,
                lat: 0.0,
                lon: 0.0,
                speed: None,
                heading: None,
                altitude: None,
                accuracy: None,
                valid: true,
                attributes: Attributes::default(),
            };
            let ours = serde_json::to_value(&fix).expect("json")["time"].clone();
            assert_eq!(ours, serde_json::to_value(time).expect("chrono"), "{text}");
        }
    }

    fn raw(lat: f64, lon: f64) -> RawFix {
        RawFix {
            lat,
            lon,
            ..RawFix::default()
        }
    }

    #[test]
    fn ranges_and_finiteness() {
        let now = Utc::now();
        assert!(Fix::parse(raw(52.5, 13.4), now).is_ok());
        for (lat, lon) in [
            (91.0, 0.0),
            (-91.0, 0.0),
            (0.0, 181.0),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(Fix::parse(raw(lat, lon), now).is_err(), "{lat},{lon}");
        }
        let fast = RawFix {
            speed: Some(-1.0),
            ..raw(0.0, 0.0)
        };
        assert_eq!(Fix::parse(fast, now).unwrap_err().field, "speed");
        let north = RawFix {
            heading: Some(360.0),
            ..raw(0.0, 0.0)
        };
        assert_eq!(Fix::parse(north, now).unwrap().heading, Some(0.0));
    }

    #[test]
    fn time_defaults_to_now_and_may_not_be_far_ahead() {
        let now = Utc::now();
        let parsed = Fix::parse(raw(0.0, 0.0), now).unwrap().time;
        assert_eq!(
            parsed,
            now.duration_trunc(Duration::milliseconds(1)).unwrap(),
            "now, to the millisecond"
        );
        let precise = RawFix {
            time: Some(now),
            ..raw(0.0, 0.0)
        };
        assert_eq!(
            Fix::parse(precise, now)
                .unwrap()
                .time
                .timestamp_subsec_nanos()
                % 1_000_000,
            0
        );
        let ahead = RawFix {
            time: Some(now + Duration::hours(2)),
            ..raw(0.0, 0.0)
        };
        let err = Fix::parse(ahead, now).unwrap_err();
        assert_eq!(err.field, "time");
        assert!(err.message.contains("future"));
        let skew = RawFix {
            time: Some(now + Duration::minutes(5)),
            ..raw(0.0, 0.0)
        };
        assert!(Fix::parse(skew, now).is_ok());
    }
}
