//! The device test vectors (`test-vectors/` in this crate, a copy of the
//! team's shared set), decoded and checked against values worked out by hand
//! from the bytes.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use webhost_protocols::osmand::{self, Form};
use webhost_protocols::teltonika::{self, Codec, Decoded, Error, IoValue};

fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/test-vectors"))
}

fn read_vectors(name: &str) -> String {
    let path = vectors_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the device test vectors at {}: {e}",
            path.display()
        )
    })
}

/// Non-comment, non-blank lines.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

struct TeltonikaVector {
    name: String,
    records: usize,
    bytes: Vec<u8>,
}

fn teltonika_vectors() -> Vec<TeltonikaVector> {
    let text = read_vectors("teltonika.txt");
    let vectors: Vec<_> = lines(&text)
        .map(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [name, records, hex] = fields.as_slice() else {
                panic!("teltonika.txt: expected 'name | records | hex', got {line}")
            };
            TeltonikaVector {
                name: name.to_string(),
                records: records.parse().expect("record count"),
                bytes: unhex(hex),
            }
        })
        .collect();
    assert!(vectors.len() >= 3, "teltonika.txt has too few vectors");
    vectors
}

fn is_handshake(v: &TeltonikaVector) -> bool {
    !v.bytes.starts_with(&[0, 0, 0, 0])
}

fn utc_ms(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap()
}

#[test]
fn teltonika_vectors_decode_to_hand_decoded_values() {
    let mut checked = 0;
    for v in teltonika_vectors() {
        if is_handshake(&v) {
            assert_eq!(v.records, 0, "{}", v.name);
            let Ok(Decoded::Frame { value, consumed }) = teltonika::decode_imei(&v.bytes) else {
                panic!("{}: handshake does not decode", v.name)
            };
            assert_eq!(consumed, v.bytes.len(), "{}", v.name);
            if v.name == "login_imei_123456789012345" {
                // 000F = 15 bytes, then ASCII "123456789012345".
                assert_eq!(value, "123456789012345");
                checked += 1;
            }
            continue;
        }
        let packet = match teltonika::decode_avl(&v.bytes) {
            Ok(Decoded::Frame { value, consumed }) => {
                assert_eq!(consumed, v.bytes.len(), "{}", v.name);
                value
            }
            other => panic!("{}: {other:?}", v.name),
        };
        assert_eq!(packet.records.len(), v.records, "{}", v.name);
        let fixes = packet.to_fixes("356307042441013");
        match v.name.as_str() {
            "codec8_example" => {
                // 00000000 preamble, 00000036 = 54 bytes, 08 codec, 01 record;
                // 0000016B40D8EA30 = 1560161086000 ms = 2019-06-10T10:04:46Z,
                // 01 priority, lon/lat 0, alt 0, angle 0, 0 satellites,
                // speed 0; event 01, 05 IO: N1 = 2 (15→03, 01→01),
                // N2 = 1 (42→5E0F), N4 = 1 (F1→0000601A), N8 = 1 (4E→0);
                // 01 record, CRC 0000C7CF.
                assert_eq!(packet.codec, Codec::Codec8);
                let r = &packet.records[0];
                assert_eq!(r.time, utc_ms(1_560_161_086_000));
                assert_eq!(
                    r.time,
                    Utc.with_ymd_and_hms(2019, 6, 10, 10, 4, 46).unwrap()
                );
                assert_eq!(r.priority, 1);
                assert_eq!((r.lat, r.lon), (0.0, 0.0));
                assert_eq!(
                    (r.altitude, r.angle, r.satellites, r.speed_kmh),
                    (0, 0, 0, 0)
                );
                assert_eq!(r.event_id, 1);
                assert_eq!(
                    r.io,
                    vec![
                        (21, IoValue::U8(3)),
                        (1, IoValue::U8(1)),
                        (66, IoValue::U16(24_079)),
                        (241, IoValue::U32(24_602)),
                        (78, IoValue::U64(0)),
                    ]
                );
                let f = &fixes[0];
                assert!(!f.valid, "0 satellites: no fix");
                assert_eq!(f.speed_kmh, Some(0.0));
                assert_eq!(
                    Value::Object(f.attributes.clone()),
                    json!({"io21": 3, "io1": 1, "io66": 24079, "io241": 24602, "io78": 0,
                           "priority": 1, "satellites": 0, "event_id": 1})
                );
                checked += 1;
            }
            "codec8e_example" => {
                // 0000004A = 74 bytes, 8E codec, 01 record;
                // 0000016B412CEE00 = 1560166592000 ms = 2019-06-10T11:36:32Z,
                // 01 priority, GPS all 0; event 0001, 0005 IO:
                // N1 = 1 (0001→01), N2 = 1 (0011→001D), N4 = 1
                // (0010→015E2C88), N8 = 2 (000B→3544C87A, 000E→1DD7E06A),
                // NX = 0; 01 record, CRC 00002994.
                assert_eq!(packet.codec, Codec::Codec8Extended);
                let r = &packet.records[0];
                assert_eq!(r.time, utc_ms(1_560_166_592_000));
                assert_eq!(
                    r.time,
                    Utc.with_ymd_and_hms(2019, 6, 10, 11, 36, 32).unwrap()
                );
                assert_eq!(r.priority, 1);
                assert_eq!((r.lat, r.lon), (0.0, 0.0));
                assert_eq!(
                    (r.altitude, r.angle, r.satellites, r.speed_kmh),
                    (0, 0, 0, 0)
                );
                assert_eq!(r.event_id, 1);
                assert_eq!(
                    r.io,
                    vec![
                        (1, IoValue::U8(1)),
                        (17, IoValue::U16(29)),
                        (16, IoValue::U32(22_949_000)),
                        (11, IoValue::U64(893_700_218)),
                        (14, IoValue::U64(500_686_954)),
                    ]
                );
                assert!(!fixes[0].valid);
                assert_eq!(fixes[0].attributes["io16"], 22_949_000);
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 3, "a known vector went missing from teltonika.txt");
}

#[test]
fn teltonika_vector_prefixes_need_more() {
    for v in teltonika_vectors() {
        for end in 0..v.bytes.len() {
            let prefix = &v.bytes[..end];
            let result = if is_handshake(&v) {
                teltonika::decode_imei(prefix).map(|d| matches!(d, Decoded::NeedMore))
            } else {
                teltonika::decode_avl(prefix).map(|d| matches!(d, Decoded::NeedMore))
            };
            assert_eq!(result, Ok(true), "{} prefix of {end} bytes", v.name);
        }
    }
}

#[test]
fn teltonika_vector_flipped_bytes_fail_the_crc() {
    for v in teltonika_vectors().iter().filter(|v| !is_handshake(v)) {
        // Every byte of codec id .. second count is covered by the CRC.
        for at in 8..v.bytes.len() - 4 {
            let mut bad = v.bytes.clone();
            bad[at] ^= 0x5A;
            match teltonika::decode_avl(&bad) {
                Err(Error::BadCrc { .. }) => {}
                // A flipped codec id is refused before the CRC is read.
                Err(Error::UnknownCodec(_)) if at == 8 => {}
                other => panic!("{}: byte {at} flipped: {other:?}", v.name),
            }
        }
        let mut bad = v.bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            matches!(teltonika::decode_avl(&bad), Err(Error::BadCrc { .. })),
            "{}",
            v.name
        );
    }
}

#[test]
fn teltonika_vectors_back_to_back_and_in_a_session() {
    let vectors = teltonika_vectors();
    let packets: Vec<&TeltonikaVector> = vectors.iter().filter(|v| !is_handshake(v)).collect();
    let mut stream = Vec::new();
    for v in &packets {
        stream.extend_from_slice(&v.bytes);
    }
    let mut at = 0;
    for v in &packets {
        match teltonika::decode_avl(&stream[at..]) {
            Ok(Decoded::Frame { value, consumed }) => {
                assert_eq!(consumed, v.bytes.len(), "{}", v.name);
                assert_eq!(value.records.len(), v.records, "{}", v.name);
                at += consumed;
            }
            other => panic!("{}: {other:?}", v.name),
        }
    }
    assert_eq!(at, stream.len());

    let login = vectors
        .iter()
        .find(|v| is_handshake(v))
        .expect("a handshake vector");
    let mut session = teltonika::Session::new();
    let mut events = session.feed(&login.bytes);
    for chunk in stream.chunks(7) {
        events.extend(session.feed(chunk));
    }
    assert_eq!(events.len(), 1 + packets.len());
    assert_eq!(
        events[0],
        teltonika::Event::Handshake("123456789012345".into())
    );
    assert_eq!(session.buffered(), 0);
}

struct OsmandLine {
    method: String,
    query: Option<String>,
    body: Option<String>,
}

fn osmand_lines() -> Vec<OsmandLine> {
    let text = read_vectors("osmand.txt");
    let lines: Vec<_> = lines(&text)
        .map(|line| {
            let (request, body) = match line.split_once(" | ") {
                Some((request, body)) => (request, Some(body.trim().to_owned())),
                None => (line, None),
            };
            let (method, target) = request
                .trim()
                .split_once(' ')
                .unwrap_or_else(|| panic!("osmand.txt: expected 'METHOD path', got {line}"));
            OsmandLine {
                method: method.to_owned(),
                query: target.split_once('?').map(|(_, q)| q.to_owned()),
                body,
            }
        })
        .collect();
    assert!(lines.len() >= 5, "osmand.txt has too few requests");
    lines
}

fn osmand_parse(line: &OsmandLine, now: DateTime<Utc>) -> Result<osmand::Request, osmand::Error> {
    let body = line.body.as_deref().unwrap_or("");
    let content_type = match body.trim_start().chars().next() {
        None => None,
        Some('{') => Some("application/json"),
        Some(_) => Some("application/x-www-form-urlencoded"),
    };
    osmand::parse(line.query.as_deref(), content_type, body.as_bytes(), now)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn osmand_vectors_parse_to_hand_decoded_values() {
    let now = Utc.with_ymd_and_hms(2024, 11, 21, 13, 0, 0).unwrap();
    let lines = osmand_lines();
    for line in &lines {
        let r = osmand_parse(line, now)
            .unwrap_or_else(|e| panic!("{} {:?} {:?}: {e}", line.method, line.query, line.body));
        assert!(!r.fix.device_id.is_empty());
    }
    let fixes: Vec<_> = lines
        .iter()
        .map(|l| osmand_parse(l, now).unwrap())
        .collect();

    // GET /?id=868683020000001&lat=52.520008&lon=13.404954&timestamp=1732190400
    //   &speed=12.5&bearing=270&altitude=34&accuracy=8&batt=76
    let r = &fixes[0];
    assert_eq!(r.form, Form::Query);
    let f = &r.fix;
    assert_eq!(f.device_id, "868683020000001");
    assert_eq!((f.lat, f.lon), (52.520008, 13.404954));
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 0).unwrap()
    );
    assert!(
        close(f.speed_kmh, 23.15),
        "12.5 kn = 23.15 km/h: {:?}",
        f.speed_kmh
    );
    assert_eq!(f.heading, Some(270.0));
    assert_eq!(f.altitude, Some(34.0));
    assert_eq!(f.accuracy, Some(8.0));
    assert!(f.valid);
    assert_eq!(Value::Object(f.attributes.clone()), json!({"batt": 76}));

    // GET /?deviceid=868683020000001&location=52.521,13.405&timestamp=2024-11-21T12:00:05Z
    let f = &fixes[1].fix;
    assert_eq!(fixes[1].form, Form::Query);
    assert_eq!(f.device_id, "868683020000001");
    assert_eq!((f.lat, f.lon), (52.521, 13.405));
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 5).unwrap()
    );
    assert_eq!(f.speed_kmh, None);
    assert!(f.attributes.is_empty());

    // POST / | id=868683020000001&lat=52.522&lon=13.406&timestamp=1732190410000
    let f = &fixes[2].fix;
    assert_eq!(fixes[2].form, Form::Form);
    assert_eq!(f.device_id, "868683020000001");
    assert_eq!((f.lat, f.lon), (52.522, 13.406));
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 10).unwrap()
    );

    // GET /?id=unknown-device&lat=1&lon=2: parses; refusing it is the
    // server's job (400 for this form).
    let f = &fixes[3].fix;
    assert_eq!(f.device_id, "unknown-device");
    assert_eq!((f.lat, f.lon), (1.0, 2.0));
    assert_eq!(f.time, now, "no timestamp: now");
    assert_eq!(fixes[3].form.unknown_device_status(), 400);

    // POST / | {"device_id":"868683020000001","location":{"timestamp":
    //   "2024-11-21T12:00:20.000Z","coords":{"latitude":52.523,"longitude":13.407,
    //   "speed":4.2,"heading":91,"altitude":35,"accuracy":6},"is_moving":true,
    //   "battery":{"level":0.71,"is_charging":false}}}
    let r = &fixes[4];
    assert_eq!(r.form, Form::Json);
    assert_eq!(r.form.unknown_device_status(), 404);
    let f = &r.fix;
    assert_eq!(f.device_id, "868683020000001");
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 20).unwrap()
    );
    assert_eq!((f.lat, f.lon), (52.523, 13.407));
    assert!(
        close(f.speed_kmh, 15.12),
        "4.2 m/s = 15.12 km/h: {:?}",
        f.speed_kmh
    );
    assert_eq!(f.heading, Some(91.0));
    assert_eq!(f.altitude, Some(35.0));
    assert_eq!(f.accuracy, Some(6.0));
    assert_eq!(
        Value::Object(f.attributes.clone()),
        json!({"batt": 71, "charge": false, "is_moving": true})
    );
}
