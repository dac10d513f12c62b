//! Device protocols end to end: listener → edge (device registry, routing)
//! → cell → storage, and back to the device.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhost_protocols::teltonika::{self, AvlPacket, AvlRecord, Codec, IoValue};

use crate::helpers::{device, Account, TestApp};
use crate::stories;

stories!(
    osmand_vectors_land_with_the_right_values,
    osmand_refuses_unknown_devices_and_bad_reports,
    teltonika_acks_what_was_stored,
    teltonika_refuses_unknown_devices_and_broken_packets,
    osmand_fixes_follow_a_device_to_its_new_owner,
    teltonika_fixes_follow_a_device_to_its_new_owner,
    cells_store_batched_fixes_only_for_the_tenant_that_owns_the_device,
);

const OSMAND_DEVICE: &str = "868683020000001";

fn vectors(name: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../webhost-protocols/test-vectors/"
    );
    std::fs::read_to_string(format!("{path}{name}"))
        .unwrap_or_else(|e| panic!("cannot read the device test vectors at {path}{name}: {e}"))
}

async fn vehicle(app: &TestApp, account: &Account, device: &str) -> String {
    let created = app.create_vehicle(account, "Tracker", Some(device)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

async fn history(
    app: &TestApp,
    account: &Account,
    vehicle: &str,
    from: DateTime<Utc>,
) -> Vec<Value> {
    let from = from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page = app
        .get(
            &format!("/api/v1/vehicles/{vehicle}/positions?from={from}&to={to}&limit=10000"),
            &account.token,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body["data"].as_array().expect("data").clone()
}

/// Sends one `osmand.txt` line (`METHOD path-and-query [| body]`).
async fn osmand(app: &TestApp, line: &str) -> reqwest::Response {
    let (request, body) = match line.split_once(" | ") {
        Some((request, body)) => (request, Some(body)),
        None => (line, None),
    };
    let (method, target) = request.split_once(' ').expect("METHOD target");
    let url = format!("http://{}{target}", app.app.devices.osmand.addr);
    let mut builder = app.client.request(method.parse().expect("method"), url);
    if let Some(body) = body {
        let content_type = if body.starts_with('{') {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        builder = builder
            .header("content-type", content_type)
            .body(body.to_string());
    }
    builder.send().await.expect("sent")
}

async fn osmand_vectors_land_with_the_right_values(app: TestApp) {
    // The vectors are from 2024: a plan that keeps three years of history.
    let account = app.signup("business", "US").await;
    let van = vehicle(&app, &account, OSMAND_DEVICE).await;
    let lines: Vec<String> = vectors("osmand.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 5);
    let mut statuses = Vec::new();
    for line in &lines {
        statuses.push(osmand(&app, line).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 400, 200], "{lines:?}");

    let t0 = Utc
        .with_ymd_and_hms(2024, 11, 21, 12, 0, 0)
        .single()
        .expect("time");
    let stored = history(&app, &account, &van, t0 - chrono::Duration::minutes(1)).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    let at = |i: usize, field: &str| stored[i][field].clone();
    // Query form: epoch seconds, knots → km/h.
    assert_eq!(at(0, "time"), "2024-11-21T12:00:00Z");
    assert_eq!(
        (at(0, "lat"), at(0, "lon")),
        (52.520008.into(), 13.404954.into())
    );
    let speed = at(0, "speed").as_f64().expect("speed");
    assert!((speed - 12.5 * 1.852).abs() < 1e-9, "{speed}");
    assert_eq!(at(0, "heading"), 270.0);
    assert_eq!(at(0, "altitude"), 34.0);
    assert_eq!(at(0, "attributes")["batt"], 76);
    // deviceid + location=lat,lon + ISO time.
    assert_eq!(at(1, "time"), "2024-11-21T12:00:05Z");
    assert_eq!((at(1, "lat"), at(1, "lon")), (52.521.into(), 13.405.into()));
    // Form body, epoch milliseconds.
    assert_eq!(at(2, "time"), "2024-11-21T12:00:10Z");
    // JSON body: m/s → km/h.
    assert_eq!(at(3, "time"), "2024-11-21T12:00:20Z");
    let speed = at(3, "speed").as_f64().expect("speed");
    assert!((speed - 4.2 * 3.6).abs() < 1e-9, "{speed}");
    assert_eq!(at(3, "heading"), 91.0);

    // The same through GraphQL-free REST latest, and a resend changes nothing.
    assert_eq!(osmand(&app, &lines[0]).await.status(), StatusCode::OK);
    assert_eq!(
        history(&app, &account, &van, t0 - chrono::Duration::minutes(1))
            .await
            .len(),
        4
    );
}

async fn osmand_refuses_unknown_devices_and_bad_reports(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let van = vehicle(&app, &account, "phone-42").await;
    let now = Utc::now().timestamp();
    let cases = [
        (format!("GET /?id=nobody&lat=1&lon=2&timestamp={now}"), 400),
        (
            format!("POST / | {{\"device_id\":\"nobody\",\"location\":{{\"timestamp\":\"{}\",\"coords\":{{\"latitude\":1,\"longitude\":2}}}}}}",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            404,
        ),
        ("GET /?id=phone-42&lat=abc&lon=2".to_string(), 400),
        ("GET /?id=phone-42&lat=91&lon=2".to_string(), 400),
        ("GET /?lat=1&lon=2".to_string(), 400),
        (format!("GET /?id=phone-42&lat=1&lon=2&timestamp={}", now + 7200), 400),
    ];
    for (line, status) in &cases {
        let response = osmand(&app, line).await;
        assert_eq!(response.status().as_u16(), *status, "{line}");
        let body: Value = response.json().await.expect("JSON error body");
        assert!(body["error"]["message"].is_string(), "{line}: {body}");
    }
    assert!(
        history(&app, &account, &van, Utc::now() - chrono::Duration::days(1))
            .await
            .is_empty()
    );
    let ok = osmand(
        &app,
        &format!("GET /?id=phone-42&lat=1&lon=2&timestamp={now}"),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        history(&app, &account, &van, Utc::now() - chrono::Duration::days(1))
            .await
            .len(),
        1
    );
}

fn record(time: DateTime<Utc>, lat: f64, satellites: u8) -> AvlRecord {
    AvlRecord {
        time,
        priority: 0,
        lon: 13.4,
        lat,
        altitude: 40,
        angle: 90,
        satellites,
        speed_kmh: 42,
        event_id: 0,
        io: vec![(66, IoValue::U16(12_345))],
    }
}

async fn connect(app: &TestApp, imei: &str) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(app.app.devices.teltonika)
        .await
        .expect("connect");
    stream
        .write_all(&teltonika::encode_imei(imei).expect("imei"))
        .await
        .expect("handshake");
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut answer))
        .await
        .expect("handshake answered")
        .expect("read");
    (stream, answer[0])
}

async fn ack(stream: &mut TcpStream) -> Option<u32> {
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(u32::from_be_bytes(buf)),
        Ok(Err(_)) => None,
        Err(_) => panic!("no answer and no close within 30 s"),
    }
}

async fn teltonika_acks_what_was_stored(app: TestApp) {
    let account = app.signup("business", "US").await;
    let imei = "123456789012345";
    let van = vehicle(&app, &account, imei).await;
    let (mut stream, answer) = connect(&app, imei).await;
    assert_eq!(answer, teltonika::ACCEPT);

    let base = (Utc::now() - chrono::Duration::minutes(10))
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc");
    for codec in [Codec::Codec8, Codec::Codec8Extended] {
        let offset = if codec == Codec::Codec8 { 0 } else { 100 };
        let packet = AvlPacket {
            codec,
            records: vec![
                record(base + chrono::Duration::seconds(offset), 52.50, 9),
                record(base + chrono::Duration::seconds(offset + 10), 52.51, 0),
                record(base + chrono::Duration::seconds(offset + 20), 52.52, 8),
            ],
        };
        let bytes = teltonika::encode_avl(&packet).expect("encode");
        stream.write_all(&bytes).await.expect("send");
        assert_eq!(ack(&mut stream).await, Some(3), "{codec:?}");
        // A resend (the device did not see the ack) is acknowledged again
        // and stored once.
        stream.write_all(&bytes).await.expect("resend");
        assert_eq!(ack(&mut stream).await, Some(3));
    }
    // The shared vector is from 2019, older than any plan keeps: decoded,
    // refused, acknowledged with 0 so nothing is claimed stored.
    let line = vectors("teltonika.txt")
        .lines()
        .find(|l| l.starts_with("codec8_example"))
        .expect("vector")
        .to_string();
    let hex = line.rsplit('|').next().expect("hex").trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    stream.write_all(&bytes).await.expect("send vector");
    assert_eq!(ack(&mut stream).await, Some(0));

    let stored = history(&app, &account, &van, base - chrono::Duration::minutes(1)).await;
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(stored[0]["lat"], 52.5);
    assert_eq!(stored[0]["speed"], 42.0);
    assert_eq!(stored[0]["heading"], 90.0);
    assert_eq!(stored[0]["attributes"]["io66"], 12_345);
    assert_eq!(
        stored[1]["valid"], false,
        "0 satellites: kept, marked invalid"
    );
    let latest = app.get("/api/v1/positions/latest", &account.token).await;
    assert_eq!(
        latest.body["data"][0]["lat"], 52.52,
        "the invalid record did not move the vehicle"
    );
}

async fn teltonika_refuses_unknown_devices_and_broken_packets(app: TestApp) {
    let account = app.signup("business", "US").await;
    let imei = "356307042441013";
    let van = vehicle(&app, &account, imei).await;

    let (mut unknown, answer) = connect(&app, "999999999999999").await;
    assert_eq!(answer, teltonika::REJECT);
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(30), unknown.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "closed after the refusal");

    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc")
        - chrono::Duration::minutes(1);
    let good = teltonika::encode_avl(&AvlPacket {
        codec: Codec::Codec8,
        records: vec![record(now, 48.1, 7)],
    })
    .expect("encode");

    // A flipped byte: the CRC fails, nothing is stored, nothing acknowledged.
    let (mut stream, _) = connect(&app, imei).await;
    let mut corrupt = good.clone();
    corrupt[20] ^= 0x40;
    stream.write_all(&corrupt).await.expect("send");
    assert_eq!(ack(&mut stream).await, None, "closed without an ack");

    // A truncated packet, then the device goes away: nothing stored.
    let (mut stream, _) = connect(&app, imei).await;
    stream
        .write_all(&good[..good.len() - 5])
        .await
        .expect("send");
    drop(stream);

    // Garbage length: refused at once.
    let (mut stream, _) = connect(&app, imei).await;
    stream
        .write_all(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .expect("send");
    assert_eq!(ack(&mut stream).await, None);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        history(&app, &account, &van, now - chrono::Duration::hours(1))
            .await
            .is_empty()
    );

    // The intact packet goes through.
    let (mut stream, _) = connect(&app, imei).await;
    stream.write_all(&good).await.expect("send");
    assert_eq!(ack(&mut stream).await, Some(1));
    assert_eq!(
        history(&app, &account, &van, now - chrono::Duration::hours(1))
            .await
            .len(),
        1
    );
}

async fn delete_vehicle(app: &TestApp, account: &Account, vehicle: &str) {
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/vehicles/{vehicle}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
}

/// The edge remembers which tenant a device belongs to for a few seconds;
/// a device that changes owner meanwhile must have its fixes stored for
/// the new owner (the old owner's cell refuses them, the edge looks again),
/// and a released device must be refused as unknown.
async fn osmand_fixes_follow_a_device_to_its_new_owner(app: TestApp) {
    let (first, second) = (
        app.signup("starter", "US").await,
        app.signup("starter", "US").await,
    );
    let phone = device();
    let since = Utc::now() - chrono::Duration::hours(1);
    let t0 = Utc::now().timestamp() - 60;
    let report = |t: i64| format!("GET /?id={phone}&lat=52.5&lon=13.4&timestamp={t}");

    let old_van = vehicle(&app, &first, &phone).await;
    assert_eq!(osmand(&app, &report(t0)).await.status(), StatusCode::OK);
    // The device moves to another tenant while the edge still knows it as
    // the first one's.
    delete_vehicle(&app, &first, &old_van).await;
    let new_van = vehicle(&app, &second, &phone).await;
    assert_eq!(osmand(&app, &report(t0 + 1)).await.status(), StatusCode::OK);
    let stored = history(&app, &second, &new_van, since).await;
    assert_eq!(stored.len(), 1, "stored for the new owner: {stored:?}");
    assert_eq!(
        stored[0]["time"],
        Utc.timestamp_opt(t0 + 1, 0)
            .single()
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    // Moved between the second tenant's own vehicles: the new one gets it.
    let cleared = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{new_van}"),
            Some(&second.token),
            Some(serde_json::json!({ "device_id": null })),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    let newest_van = vehicle(&app, &second, &phone).await;
    assert_eq!(osmand(&app, &report(t0 + 2)).await.status(), StatusCode::OK);
    assert_eq!(history(&app, &second, &newest_van, since).await.len(), 1);
    assert_eq!(history(&app, &second, &new_van, since).await.len(), 1);

    // Released: refused as unknown, as the protocol expects, and not stored.
    delete_vehicle(&app, &second, &newest_van).await;
    let refused = osmand(&app, &report(t0 + 3)).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "unknown_device", "{body}");
    assert_eq!(history(&app, &second, &new_van, since).await.len(), 1);
}

async fn teltonika_fixes_follow_a_device_to_its_new_owner(app: TestApp) {
    let (first, second) = (
        app.signup("business", "US").await,
        app.signup("business", "US").await,
    );
    let imei = "356307042449999";
    let old_van = vehicle(&app, &first, imei).await;
    let (mut stream, answer) = connect(&app, imei).await;
    assert_eq!(answer, teltonika::ACCEPT);
    let base = (Utc::now() - chrono::Duration::minutes(5))
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc");
    let packet = |offset: i64| {
        teltonika::encode_avl(&AvlPacket {
            codec: Codec::Codec8,
            records: vec![record(base + chrono::Duration::seconds(offset), 48.1, 7)],
        })
        .expect("encode")
    };
    stream.write_all(&packet(0)).await.expect("send");
    assert_eq!(ack(&mut stream).await, Some(1));

    // Same connection, new owner: the next packet is the second tenant's.
    delete_vehicle(&app, &first, &old_van).await;
    let new_van = vehicle(&app, &second, imei).await;
    stream.write_all(&packet(10)).await.expect("send");
    assert_eq!(ack(&mut stream).await, Some(1), "stored for the new owner");
    let stored = history(&app, &second, &new_van, base - chrono::Duration::minutes(1)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
}

/// The edge batches fixes of many devices (and tenants) into one call to a
/// cell, naming the tenant per item; the cell checks every item against that
/// tenant's own vehicles, so a wrong (stale) tenant gets the fix refused,
/// never stored under it. And only the edge may post such batches.
async fn cells_store_batched_fixes_only_for_the_tenant_that_owns_the_device(app: TestApp) {
    use webhost_domain::TenantId;
    use webhost_http::auth::{InternalKeys, INTERNAL_HEADER};

    let (owner, other) = (
        app.signup("hobby", "DE").await,
        app.signup("hobby", "DE").await,
    );
    let tracker = device();
    let van = vehicle(&app, &owner, &tracker).await;
    let (owner_id, other_id): (TenantId, TenantId) = (
        owner.tenant_id.parse().expect("uuid"),
        other.tenant_id.parse().expect("uuid"),
    );
    let route = app.app.store.route(owner_id).await.expect("route");
    assert_eq!(
        app.app.store.route(other_id).await.expect("route").cell_id,
        route.cell_id,
        "both tenants on one cell, so one call can carry both"
    );

    let keys = InternalKeys::derive(app.settings.secret_key_base().expect("secret").as_bytes());
    let path = "/internal/v1/device-positions/batch";
    let url = format!("{}{path}", route.cell_url);
    let audience = webhost_contract::cell_audience(route.cell_id);
    let post = |issuer: &'static str, tenant: Option<TenantId>, body: Value| {
        let credential = keys
            .mint(issuer, &audience, &Method::POST, path, tenant, None)
            .expect("mint");
        let request = app
            .client
            .post(&url)
            .header(INTERNAL_HEADER, credential)
            .json(&body);
        async move { TestApp::answer(request.send().await.expect("sent")).await }
    };
    let base = Utc::now() - chrono::Duration::minutes(5);
    let fix = |seconds: i64| {
        serde_json::to_value(webhost_protocols::Fix {
            device_id: tracker.clone(),
            time: base + chrono::Duration::seconds(seconds),
            lat: 52.5,
            lon: 13.4,
            speed_kmh: None,
            heading: None,
            altitude: None,
            accuracy: None,
            valid: true,
            attributes: serde_json::Map::new(),
        })
        .expect("fix")
    };
    let body = serde_json::json!([
        [other_id, [fix(1)]],
        [owner_id, [fix(2)]],
        [TenantId::new(), [fix(3)]],
    ]);

    // Only the edge posts batches, and a tenant-bound credential only its own.
    let refused = post("control", None, body.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let refused = post("edge", Some(owner_id), body.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    let answer = post("edge", None, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let items = answer.body.as_array().expect("one answer per item");
    assert_eq!(items.len(), 3, "{}", answer.body);
    assert_eq!(items[0]["accepted"], 0, "not the other tenant's device");
    assert_eq!(items[0]["unknown_devices"], serde_json::json!([0]));
    assert_eq!(items[1]["accepted"], 1, "the owner's");
    assert!(items[1].get("unknown_devices").is_none(), "{}", items[1]);
    assert_eq!(items[2]["accepted"], 0, "a tenant this cell does not have");
    assert_eq!(items[2]["unknown_devices"], serde_json::json!([0]));

    let stored = history(&app, &owner, &van, base - chrono::Duration::minutes(1)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let latest = app.get("/api/v1/positions/latest", &other.token).await;
    assert_eq!(
        latest.body["data"],
        serde_json::json!([]),
        "{}",
        latest.body
    );
}
