//! `osmand::parse` on arbitrary requests: the input is split at 0xFF bytes
//! into query string, body and content type (the first byte of the third
//! part picks a usual content type, or the part is used as is). Whatever
//! parses is in range and bounded.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use webhost_protocols::osmand::{self, MAX_ATTRIBUTES};

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let query = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let content_type = match parts.next() {
        Some([selector]) => {
            CONTENT_TYPES[usize::from(*selector) % CONTENT_TYPES.len()].map(str::to_owned)
        }
        Some(raw) => Some(String::from_utf8_lossy(raw).into_owned()),
        None => None,
    };
    let now = Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 0).unwrap();
    if let Ok(request) = osmand::parse(query.as_deref(), content_type.as_deref(), body, now) {
        let fix = request.fix;
        assert!(!fix.device_id.trim().is_empty());
        assert!((-90.0..=90.0).contains(&fix.lat) && (-180.0..=180.0).contains(&fix.lon));
        for v in [fix.speed_kmh, fix.heading, fix.altitude, fix.accuracy]
            .into_iter()
            .flatten()
        {
            assert!(v.is_finite());
        }
        assert!(fix.attributes.len() <= MAX_ATTRIBUTES);
    }
});
