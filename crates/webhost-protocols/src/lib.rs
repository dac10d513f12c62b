//! Decoders for the device protocols of SPEC §5, sans-IO: pure functions
//! (and one small state machine) over bytes and strings, with no sockets, no
//! async and no clock. The server owns the listeners, passes in what it read
//! (and the current time where a protocol needs it) and acts on the result;
//! that keeps every decoder unit-testable and fuzzable on its own
//! (see `fuzz/`).
//!
//! - [`osmand`]: the HTTP protocol of Traccar Client and compatible phone
//!   apps (query string, form body or JSON body).
//! - [`teltonika`]: Codec 8 / Codec 8 Extended over TCP (IMEI handshake,
//!   AVL packets with CRC-16/IBM, acknowledgements).
//!
//! Both produce [`Fix`]es in one set of units: degrees, km/h, metres, UTC.
//!
//! Invariants: no input makes a decoder panic, allocate without bound or
//! wait without bound for more bytes; a frame that fails its checksum is
//! never decoded into positions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod osmand;
pub mod teltonika;

/// One position report from a device, protocol-independent.
///
/// Units: degrees (WGS 84), km/h, degrees clockwise from north, metres, UTC.
/// Decoders check that numbers are finite and coordinates in range; the rest
/// of the domain rules (clock skew, plausible speeds) belong to the caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// The identifier the device sent (OsmAnd `id`, Teltonika IMEI).
    pub device_id: String,
    pub time: DateTime<Utc>,
    /// Degrees, [-90, 90].
    pub lat: f64,
    /// Degrees, [-180, 180].
    pub lon: f64,
    /// km/h, whatever unit the protocol uses on the wire.
    pub speed_kmh: Option<f64>,
    /// Degrees clockwise from north.
    pub heading: Option<f64>,
    /// Metres above sea level.
    pub altitude: Option<f64>,
    /// Metres.
    pub accuracy: Option<f64>,
    /// False when the device had no GPS fix: keep it, but it does not move
    /// the vehicle.
    pub valid: bool,
    /// Everything else the device said: battery, hdop, unknown OsmAnd keys,
    /// Teltonika IO elements (`io<id>`), priority, satellites, event id…
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// At most 40 characters of `value`, escaped, for an error message: input
/// is echoed back to whoever sent it, so it is bounded and printable.
pub(crate) fn snippet(value: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
