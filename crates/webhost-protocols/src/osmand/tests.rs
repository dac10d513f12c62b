use super::*;
use chrono::TimeZone;
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 11, 21, 12, 30, 0).unwrap()
}

fn query(q: &str) -> Result<Request, Error> {
    parse(Some(q), None, b"", now())
}

fn fix(q: &str) -> Fix {
    match query(q) {
        Ok(request) => {
            assert_eq!(request.form, Form::Query);
            request.fix
        }
        Err(e) => panic!("{q}: {e}"),
    }
}

fn json_fix(body: &str) -> Result<Fix, Error> {
    parse(None, Some("application/json"), body.as_bytes(), now()).map(|r| {
        assert_eq!(r.form, Form::Json);
        r.fix
    })
}

fn ts(value: &str) -> DateTime<Utc> {
    parse_timestamp(value).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn minimal_query() {
    let f = fix("id=abc&lat=52.5&lon=13.4");
    assert_eq!(f.device_id, "abc");
    assert_eq!((f.lat, f.lon), (52.5, 13.4));
    assert_eq!(f.time, now());
    assert_eq!(
        (f.speed_kmh, f.heading, f.altitude, f.accuracy),
        (None, None, None, None)
    );
    assert!(f.valid);
    assert!(f.attributes.is_empty());
}

#[test]
fn speed_in_knots_becomes_kmh() {
    let f = fix("id=a&lat=0&lon=0&speed=10");
    assert!(close(f.speed_kmh.unwrap(), 18.52));
    let f = fix("id=a&lat=0&lon=0&speed=0");
    assert_eq!(f.speed_kmh, Some(0.0));
    // Negative is Android's "unknown".
    assert_eq!(fix("id=a&lat=0&lon=0&speed=-1").speed_kmh, None);
}

#[test]
fn all_fields_of_the_query_form() {
    let f = fix(
        "deviceid=d1&lat=-33.5&lon=151.25&timestamp=1732190400&speed=1&heading=90.5\
         &altitude=-3.5&accuracy=12&hdop=0.9&batt=76&valid=false",
    );
    assert_eq!(f.device_id, "d1");
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 0).unwrap()
    );
    assert_eq!(f.heading, Some(90.5));
    assert_eq!(f.altitude, Some(-3.5));
    assert_eq!(f.accuracy, Some(12.0));
    assert!(!f.valid);
    assert_eq!(
        Value::Object(f.attributes),
        json!({"hdop": 0.9, "batt": 76})
    );
    // `bearing` wins over `heading`; `id` over `deviceid`.
    let f = fix("id=x&deviceid=y&lat=0&lon=0&bearing=10&heading=20");
    assert_eq!(f.device_id, "x");
    assert_eq!(f.heading, Some(10.0));
    assert_eq!(fix("id=x&lat=0&lon=0&bearing=-1").heading, None);
    assert_eq!(fix("id=x&lat=0&lon=0&accuracy=-1").accuracy, None);
    assert!(fix("id=x&lat=0&lon=0&valid=1").valid);
    assert!(fix("id=x&lat=0&lon=0&valid=TRUE").valid);
    assert!(!fix("id=x&lat=0&lon=0&valid=0").valid);
}

#[test]
fn location_parameter() {
    let f = fix("id=a&location=52.521%2C13.405");
    assert_eq!((f.lat, f.lon), (52.521, 13.405));
    let f = fix("id=a&location=-1.5,-2.5");
    assert_eq!((f.lat, f.lon), (-1.5, -2.5));
    // Explicit lat/lon win.
    let f = fix("id=a&location=1,2&lat=3&lon=4");
    assert_eq!((f.lat, f.lon), (3.0, 4.0));
    for bad in ["1", "1;2", "a,b", "1,", ",2", "NaN,1"] {
        match query(&format!("id=a&location={bad}")) {
            Err(Error::BadLocation(_)) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        query("id=a&location=91,0"),
        Err(Error::BadLatitude { .. })
    ));
    assert!(matches!(
        query("id=a&location=0,181"),
        Err(Error::BadLongitude { .. })
    ));
}

#[test]
fn timestamp_forms() {
    let noon = Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 0).unwrap();
    // Epoch seconds and milliseconds, told apart by magnitude.
    assert_eq!(ts("1732190400"), noon);
    assert_eq!(ts("1732190400000"), noon);
    assert_eq!(ts("1732190400123").timestamp_subsec_millis(), 123);
    assert_eq!(ts("1732190400.5").timestamp_subsec_millis(), 500);
    assert_eq!(ts("0"), DateTime::UNIX_EPOCH);
    assert_eq!(ts("99999999999").timestamp(), 99_999_999_999);
    assert_eq!(ts("100000000000").timestamp_millis(), 100_000_000_000);
    // ISO 8601 / RFC 3339, with or without zone.
    assert_eq!(ts("2024-11-21T12:00:00Z"), noon);
    assert_eq!(ts("2024-11-21T12:00:00.000Z"), noon);
    assert_eq!(ts("2024-11-21T14:00:00+02:00"), noon);
    assert_eq!(ts("2024-11-21T14:00:00+0200"), noon);
    assert_eq!(ts("2024-11-21T07:00:00-05:00"), noon);
    assert_eq!(ts("2024-11-21T12:00:00"), noon);
    assert_eq!(ts("2024-11-21T12:00:00.250").timestamp_subsec_millis(), 250);
    assert_eq!(ts("2024-11-21T12:00"), noon);
    // An unencoded '+' arrives as a space.
    assert_eq!(ts("2024-11-21T14:00:00 02:00"), noon);
    // yyyy-MM-dd HH:mm:ss, UTC.
    assert_eq!(ts("2024-11-21 12:00:00"), noon);
    assert_eq!(ts(" 2024-11-21 12:00:00 "), noon);

    for bad in [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "21/11/2024 12:00",
        "-5",
        "1e9",
        "99999999999999999999999",
        "9223372036854775807",
        "2024-11-21T12:00:00+99:00",
    ] {
        let err = parse_timestamp(bad).unwrap_err();
        let message = err.to_string();
        assert!(
            message
                .contains("use epoch seconds, epoch milliseconds, ISO 8601 or yyyy-MM-dd HH:mm:ss"),
            "{bad}: {message}"
        );
    }
    // Through the query string.
    let f = fix("id=a&lat=0&lon=0&timestamp=2024-11-21%2012%3A00%3A00");
    assert_eq!(f.time, noon);
    assert!(matches!(
        query("id=a&lat=0&lon=0&timestamp=soon"),
        Err(Error::BadTimestamp(v)) if v == "soon"
    ));
}

#[test]
fn form_body_merged_with_query() {
    let r = parse(
        Some("id=from-query&lat=1&lon=2&speed=1"),
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        b"id=from-body&lat=3",
        now(),
    )
    .unwrap();
    assert_eq!(r.form, Form::Form);
    assert_eq!(r.fix.device_id, "from-body");
    assert_eq!((r.fix.lat, r.fix.lon), (3.0, 2.0));
    assert!(close(r.fix.speed_kmh.unwrap(), 1.852));
    // Without a content type, a form body is still read (as Traccar does).
    let r = parse(None, None, b"id=b&lat=1&lon=1", now()).unwrap();
    assert_eq!(r.form, Form::Form);
    assert_eq!(r.fix.device_id, "b");
    // Leading '?' tolerated.
    assert_eq!(query("?id=q&lat=1&lon=1").unwrap().fix.device_id, "q");
}

#[test]
fn unknown_keys_become_typed_attributes() {
    let f = fix(
        "id=a&lat=0&lon=0&charge=true&motion=false&odometer=1234&temp=-3.5&cell=0123\
         &driver=J%C3%BCrgen+M&big=1e3&weird=1.&empty=&=ignored&inf=inf",
    );
    assert_eq!(
        Value::Object(f.attributes),
        json!({
            "charge": true,
            "motion": false,
            "odometer": 1234,
            "temp": -3.5,
            "cell": "0123",
            "driver": "Jürgen M",
            "big": 1000.0,
            "weird": "1.",
            "empty": "",
            "inf": "inf",
        })
    );
}

#[test]
fn missing_and_bad_values_say_what_to_fix() {
    let cases = [
        ("lat=1&lon=2", "missing id or deviceid"),
        ("id=&lat=1&lon=2", "missing id or deviceid"),
        ("id=%20&lat=1&lon=2", "missing id or deviceid"),
        ("id=a&lon=2", "missing lat (or location=lat,lon)"),
        ("id=a&lat=2", "missing lon (or location=lat,lon)"),
        (
            "id=a&lat=91&lon=0",
            "lat must be a number between -90 and 90 (got '91')",
        ),
        (
            "id=a&lat=-90.0001&lon=0",
            "lat must be a number between -90 and 90",
        ),
        (
            "id=a&lat=NaN&lon=0",
            "lat must be a number between -90 and 90 (got 'NaN')",
        ),
        (
            "id=a&lat=inf&lon=0",
            "lat must be a number between -90 and 90",
        ),
        (
            "id=a&lat=1e999&lon=0",
            "lat must be a number between -90 and 90",
        ),
        (
            "id=a&lat=52,5&lon=0",
            "lat must be a number between -90 and 90 (got '52,5')",
        ),
        (
            "id=a&lat=0&lon=180.5",
            "lon must be a number between -180 and 180 (got '180.5')",
        ),
        (
            "id=a&lat=0&lon=-infinity",
            "lon must be a number between -180 and 180",
        ),
        (
            "id=a&lat=0&lon=0&speed=fast",
            "speed must be a finite number (got 'fast')",
        ),
        (
            "id=a&lat=0&lon=0&speed=NaN",
            "speed must be a finite number",
        ),
        (
            "id=a&lat=0&lon=0&altitude=inf",
            "altitude must be a finite number",
        ),
        (
            "id=a&lat=0&lon=0&bearing=north",
            "bearing must be a finite number",
        ),
        ("id=a&lat=0&lon=0&batt=full", "batt must be a finite number"),
        ("id=a&lat=0&lon=0&hdop=x", "hdop must be a finite number"),
        (
            "id=a&lat=0&lon=0&valid=maybe",
            "valid must be true, false, 1 or 0 (got 'maybe')",
        ),
    ];
    for (q, expected) in cases {
        match query(q) {
            Ok(r) => panic!("{q}: accepted {r:?}"),
            Err(e) => assert!(e.to_string().contains(expected), "{q}: {e}"),
        }
    }
    assert_eq!(
        query("lat=1&lon=2"),
        Err(Error::MissingField {
            field: "id or deviceid"
        })
    );
    // Edges are in range.
    let f = fix("id=a&lat=-90&lon=180");
    assert_eq!((f.lat, f.lon), (-90.0, 180.0));
}

#[test]
fn echoed_values_are_bounded_and_escaped() {
    let long = "x".repeat(1000);
    let message = query(&format!("id=a&lat={long}&lon=0"))
        .unwrap_err()
        .to_string();
    assert!(message.len() < 150, "{message}");
    let message = query("id=a&lat=%0A%1B&lon=0").unwrap_err().to_string();
    assert!(
        !message.contains('\n') && !message.contains('\u{1b}'),
        "{message}"
    );
}

#[test]
fn bounds() {
    let big = format!("id=a&lat=0&lon=0&pad={}", "x".repeat(MAX_INPUT));
    assert!(matches!(
        query(&big),
        Err(Error::TooLarge {
            what: "query string",
            ..
        })
    ));
    let body = vec![b'a'; MAX_INPUT + 1];
    assert!(matches!(
        parse(None, None, &body, now()),
        Err(Error::TooLarge { what: "body", .. })
    ));
    // Exactly the limit is fine.
    let mut q = "id=a&lat=0&lon=0&pad=".to_owned();
    q.push_str(&"x".repeat(MAX_INPUT - q.len()));
    assert!(query(&q).is_ok());

    let mut q = "id=a&lat=0&lon=0".to_owned();
    for i in 0..MAX_ATTRIBUTES {
        q.push_str(&format!("&k{i}=1"));
    }
    assert_eq!(fix(&q).attributes.len(), MAX_ATTRIBUTES);
    q.push_str("&one=more");
    assert_eq!(
        query(&q),
        Err(Error::TooManyAttributes {
            max: MAX_ATTRIBUTES
        })
    );
    // Many repeats of one key are one attribute.
    let q = format!("id=a&lat=0&lon=0{}", "&k=1".repeat(5000));
    assert_eq!(fix(&q).attributes.len(), 1);
}

const TRACCAR_CLIENT_JSON: &str = r#"{"device_id":"868683020000001","location":{"timestamp":"2024-11-21T12:00:20.000Z","coords":{"latitude":52.523,"longitude":13.407,"speed":4.2,"heading":91,"altitude":35,"accuracy":6},"is_moving":true,"battery":{"level":0.71,"is_charging":false}}}"#;

#[test]
fn json_form() {
    let f = json_fix(TRACCAR_CLIENT_JSON).unwrap();
    assert_eq!(f.device_id, "868683020000001");
    assert_eq!(
        f.time,
        Utc.with_ymd_and_hms(2024, 11, 21, 12, 0, 20).unwrap()
    );
    assert_eq!((f.lat, f.lon), (52.523, 13.407));
    // 4.2 m/s = 15.12 km/h.
    assert!(close(f.speed_kmh.unwrap(), 15.12));
    assert_eq!(f.heading, Some(91.0));
    assert_eq!(f.altitude, Some(35.0));
    assert_eq!(f.accuracy, Some(6.0));
    assert!(f.valid);
    assert_eq!(
        Value::Object(f.attributes),
        json!({"batt": 71, "charge": false, "is_moving": true})
    );
    assert_eq!(Form::Json.unknown_device_status(), 404);
    assert_eq!(Form::Query.unknown_device_status(), 400);
    assert_eq!(Form::Form.unknown_device_status(), 400);
}

#[test]
fn json_negative_speed_and_heading_are_unknown() {
    let f = json_fix(
        r#"{"device_id":"d","location":{"coords":{"latitude":1,"longitude":2,"speed":-1,"heading":-1,"accuracy":-1,"altitude":null}}}"#,
    )
    .unwrap();
    assert_eq!(
        (f.speed_kmh, f.heading, f.accuracy, f.altitude),
        (None, None, None, None)
    );
    assert_eq!(f.time, now());
    assert!(f.attributes.is_empty());
}

#[test]
fn json_extras_become_attributes() {
    let f = json_fix(
        r#"{"device_id":"d","location":{"uuid":"u-1","event":"motionchange","odometer":12.5,
            "activity":{"type":"walking","confidence":100},
            "coords":{"latitude":1,"longitude":2,"speed_accuracy":0.5},
            "battery":{"level":-1},
            "extras":{"trip":7,"deep":{"ignored":1}},"geofence":[1,2],"mock":null},
            "source":"app"}"#,
    )
    .unwrap();
    assert_eq!(
        Value::Object(f.attributes),
        json!({
            "uuid": "u-1",
            "event": "motionchange",
            "odometer": 12.5,
            "activity.type": "walking",
            "activity.confidence": 100,
            "coords.speed_accuracy": 0.5,
            "extras.trip": 7,
            "source": "app",
        })
    );
}

#[test]
fn json_battery_level_is_percent() {
    let body = |level: &str| {
        format!(
            r#"{{"device_id":"d","location":{{"coords":{{"latitude":1,"longitude":2}},"battery":{{"level":{level}}}}}}}"#
        )
    };
    assert_eq!(json_fix(&body("0.57")).unwrap().attributes["batt"], 57);
    assert_eq!(json_fix(&body("1")).unwrap().attributes["batt"], 100);
    assert_eq!(json_fix(&body("0.125")).unwrap().attributes["batt"], 12.5);
    assert_eq!(json_fix(&body("1.5")), Err(Error::BadBatteryLevel(1.5)));
}

#[test]
fn json_errors_say_what_to_fix() {
    let cases = [
        ("", "missing id or deviceid"),
        ("{", "the body is not valid JSON"),
        (
            "[1]",
            "the JSON body must be an object with device_id and location",
        ),
        (r#"{"location":{}}"#, "missing device_id"),
        (r#"{"device_id":"  ","location":{}}"#, "missing device_id"),
        (
            r#"{"device_id":true,"location":{}}"#,
            "device_id must be a string",
        ),
        (r#"{"device_id":"d"}"#, "missing location"),
        (
            r#"{"device_id":"d","location":[{}]}"#,
            "location must be one object",
        ),
        (
            r#"{"device_id":"d","location":{}}"#,
            "missing location.coords",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"longitude":1}}}"#,
            "missing location.coords.latitude",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":95,"longitude":1}}}"#,
            "location.coords.latitude must be a number between -90 and 90 (got '95')",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":"1","longitude":1}}}"#,
            "location.coords.latitude must be a number between -90 and 90",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":1,"longitude":-181}}}"#,
            "location.coords.longitude must be a number between -180 and 180",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":NaN,"longitude":1}}}"#,
            "the body is not valid JSON",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":1e999,"longitude":1}}}"#,
            "the body is not valid JSON",
        ),
        (
            r#"{"device_id":"d","location":{"coords":{"latitude":1,"longitude":1,"speed":"1"}}}"#,
            "location.coords.speed must be a finite number",
        ),
        (
            r#"{"device_id":"d","location":{"timestamp":"later","coords":{"latitude":1,"longitude":1}}}"#,
            "unrecognised timestamp 'later'",
        ),
        (
            r#"{"device_id":"d","location":{"timestamp":true,"coords":{"latitude":1,"longitude":1}}}"#,
            "location.timestamp must be an ISO 8601 string or epoch milliseconds",
        ),
        (
            r#"{"device_id":"d","location":{"is_moving":"yes","coords":{"latitude":1,"longitude":1}}}"#,
            "location.is_moving must be true or false",
        ),
    ];
    for (body, expected) in cases {
        match json_fix(body) {
            Ok(f) => panic!("{body}: accepted {f:?}"),
            Err(e) => assert!(e.to_string().contains(expected), "{body}: {e}"),
        }
    }
}

#[test]
fn json_detection() {
    // Numeric device ids and epoch timestamps are accepted too.
    let body = r#"{"device_id":42,"location":{"timestamp":1732190400000,"coords":{"latitude":1,"longitude":2}}}"#;
    let r = parse(None, None, body.as_bytes(), now()).unwrap();
    assert_eq!(r.form, Form::Json);
    assert_eq!(r.fix.device_id, "42");
    assert_eq!(r.fix.time.timestamp(), 1_732_190_400);
    let r = parse(
        None,
        Some("Application/JSON; charset=utf-8"),
        body.as_bytes(),
        now(),
    )
    .unwrap();
    assert_eq!(r.form, Form::Json);
    // A JSON content type with no body: the query form.
    let r = parse(
        Some("id=q&lat=1&lon=1"),
        Some("application/json"),
        b" \r\n",
        now(),
    )
    .unwrap();
    assert_eq!(r.form, Form::Query);
    // A form declared as such is read as a form even if it starts with '{'.
    let err = parse(
        None,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::MissingField {
            field: "id or deviceid"
        }
    );
}

#[test]
fn json_attribute_limit() {
    let extras: Vec<String> = (0..=MAX_ATTRIBUTES)
        .map(|i| format!(r#""k{i}":1"#))
        .collect();
    let body = format!(
        r#"{{"device_id":"d","location":{{"coords":{{"latitude":1,"longitude":2}},"extras":{{{}}}}}}}"#,
        extras.join(",")
    );
    assert_eq!(
        json_fix(&body),
        Err(Error::TooManyAttributes {
            max: MAX_ATTRIBUTES
        })
    );
    // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse(
        None,
        Some("application/json"),
        &deep.as_bytes()[..MAX_INPUT],
        now()
    )
    .is_err());
}

#[test]
fn json_number_grammar() {
    for good in ["0", "-0", "12", "-12.5", "1e3", "1E-3", "0.5e+2"] {
        assert!(is_json_number(good), "{good}");
    }
    for bad in [
        "", "-", "01", "1.", ".5", "1e", "+1", "1 ", " 1", "0x10", "1_000", "NaN",
    ] {
        assert!(!is_json_number(bad), "{bad}");
    }
}

/// Deterministic pseudo-random inputs (xorshift64*, fixed seed): mutated
/// valid requests, query/body/content-type chosen at random. Never a panic,
/// and whatever parses is in range.
#[test]
fn robustness_against_random_and_mutated_input() {
    let seeds: [&[u8]; 4] = [
        b"id=868683020000001&lat=52.520008&lon=13.404954&timestamp=1732190400&speed=12.5&bearing=270&altitude=34&accuracy=8&batt=76",
        b"deviceid=868683020000001&location=52.521,13.405&timestamp=2024-11-21T12:00:05Z",
        b"id=868683020000001&lat=52.522&lon=13.406&timestamp=1732190410000",
        TRACCAR_CLIENT_JSON.as_bytes(),
    ];
    let content_types = [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let iterations = if cfg!(debug_assertions) {
        50_000
    } else {
        500_000
    };
    for i in 0..iterations {
        let mut input = seeds[i % seeds.len()].to_vec();
        for _ in 0..=rng.below(6) {
            mutate(&mut rng, &mut input);
        }
        let ct = content_types[rng.below(4) as usize];
        let result = if rng.below(2) == 0 {
            parse(None, ct, &input, now())
        } else {
            let q = String::from_utf8_lossy(&input).into_owned();
            parse(Some(&q), ct, b"", now())
        };
        if let Ok(r) = result {
            let f = r.fix;
            assert!((-90.0..=90.0).contains(&f.lat) && (-180.0..=180.0).contains(&f.lon));
            assert!(!f.device_id.trim().is_empty());
            for v in [f.speed_kmh, f.heading, f.altitude, f.accuracy]
                .into_iter()
                .flatten()
            {
                assert!(v.is_finite());
            }
            assert!(f.attributes.len() <= MAX_ATTRIBUTES);
        }
    }
}

fn mutate(rng: &mut XorShift, v: &mut Vec<u8>) {
    const INTERESTING: &[&[u8]] = &[
        b"&", b"=", b"%", b"%2C", b",", b"{", b"}", b"\"", b":", b"NaN", b"-", b"e999", b"T", b" ",
        b"\xFF", b"null", b"[", b"0",
    ];
    let at = rng.below(v.len() as u64 + 1) as usize;
    match rng.below(4) {
        0 if at < v.len() => v[at] = rng.next() as u8,
        1 => {
            let token = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
            v.splice(at..at, token.iter().copied());
        }
        2 if at < v.len() => {
            v.remove(at);
        }
        _ => {
            if let Some(byte) = v.get(at).copied() {
                v.insert(at, byte);
            }
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
