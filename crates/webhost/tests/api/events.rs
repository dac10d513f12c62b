//! Events through the edge: geofence enter/exit, overspeed, device online
//! and offline, found at ingest, listed by `/api/v1/events` and pushed on
//! the socket.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webhost_http::auth::{InternalKeys, INTERNAL_HEADER};

use crate::geofences::{create_geofence, square};
use crate::helpers::{Account, Answer, TestApp};
use crate::stories;

stories!(
    a_drive_through_two_fences_yields_one_enter_and_one_exit_each,
    overspeed_fires_once_per_excursion,
    devices_come_online_and_go_offline,
    events_filter_paginate_and_stay_with_their_tenant,
);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, account: &Account) -> Socket {
    let url = format!("{}/api/v1/socket", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", account.token).parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("socket connects")
        .0
}

/// The next `count` events pushed on the socket, skipping position
/// messages; bounded so a missing event fails instead of hanging.
async fn pushed_events(socket: &mut Socket, count: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(StdDuration::from_secs(30), socket.next())
            .await
            .unwrap_or_else(|_| panic!("{count} events within 30 s; got {events:?}"))
            .expect("stream open")
            .expect("message");
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).expect("JSON message");
        if let Some(batch) = value.get("events") {
            events.extend(batch.as_array().expect("events array").iter().cloned());
        }
    }
    events
}

/// A point in the recent past, to the millisecond.
fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::minutes(minutes))
        .duration_trunc(Duration::milliseconds(1))
        .expect("trunc")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn vehicle(app: &TestApp, account: &Account, attributes: Value) -> String {
    let created = app
        .post(
            "/api/v1/vehicles",
            Some(&account.token),
            json!({ "name": "Van", "attributes": attributes }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

async fn post_positions(app: &TestApp, account: &Account, body: Value) -> Answer {
    let answer = app
        .post("/api/v1/positions", Some(&account.api_key), body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer
}

async fn events(app: &TestApp, account: &Account, query: &str) -> Vec<Value> {
    let answer = app
        .get(&format!("/api/v1/events{query}"), &account.token)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["data"].as_array().expect("data").clone()
}

/// (type, geofence_id or "") of each event.
fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type").to_string(),
                e["geofence_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(kind: &str, fence: &str) -> (String, String) {
    (kind.to_string(), fence.to_string())
}

/// Asks the cell holding the tenant to run its offline sweep now, as the
/// control plane would; the answer counts the `device_offline` emitted.
async fn sweep(app: &TestApp, cell_name: &str) -> u64 {
    let cell = app
        .app
        .cells
        .iter()
        .find(|c| c.name == cell_name)
        .expect("cell")
        .clone();
    let keys = InternalKeys::derive(app.settings.secret_key_base().expect("secret").as_bytes());
    let path = "/internal/v1/sweeps/offline";
    let credential = keys
        .mint(
            "control",
            &webhost_contract::cell_audience(cell.id),
            &Method::POST,
            path,
            None,
            None,
        )
        .expect("mint");
    let answer = TestApp::answer(
        app.client
            .post(format!("{}{path}", cell.url))
            .header(INTERNAL_HEADER, credential)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["device_offline"].as_u64().expect("count")
}

async fn a_drive_through_two_fences_yields_one_enter_and_one_exit_each(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let van = vehicle(&app, &account, json!({})).await;
    let depot = create_geofence(
        &app,
        &account,
        json!({ "name": "Depot", "geometry": square(13.0, 52.0, 13.1, 52.1) }),
    )
    .await;
    assert_eq!(depot.status, StatusCode::CREATED, "{}", depot.body);
    let depot = depot.body["id"].as_str().expect("id").to_string();
    let customer = create_geofence(
        &app,
        &account,
        json!({ "name": "Customer", "circle": { "lat": 52.3, "lon": 13.05, "radius_m": 1000 } }),
    )
    .await;
    let customer = customer.body["id"].as_str().expect("id").to_string();
    let mut socket = connect(&app, &account).await;

    // Recent enough that the periodic offline sweep has nothing to say
    // during the test.
    let start = minutes_ago(9);
    let point = |minute: i64, lat: f64, lon: f64| {
        json!({
            "vehicle_id": van,
            "time": iso(start + Duration::minutes(minute)),
            "lat": lat,
            "lon": lon,
            "speed": 40.0,
        })
    };
    // Into the depot; the batch ends inside it.
    post_positions(
        &app,
        &account,
        json!([point(0, 51.95, 13.05), point(1, 52.02, 13.05)]),
    )
    .await;
    post_positions(
        &app,
        &account,
        json!([point(2, 52.05, 13.05), point(3, 52.08, 13.05)]),
    )
    .await;
    // Out of the depot, into the customer's circle.
    let leg = json!([point(4, 52.15, 13.05), point(5, 52.3, 13.05)]);
    post_positions(&app, &account, leg.clone()).await;
    // A resend is stored once and yields nothing.
    let resent = post_positions(&app, &account, leg).await;
    assert_eq!(resent.body["duplicates"], 2, "{}", resent.body);
    post_positions(
        &app,
        &account,
        json!([point(6, 52.301, 13.051), point(7, 52.4, 13.05)]),
    )
    .await;
    // A late position (older than the newest, between two stored ones)
    // inside the depot changes nothing.
    let late = post_positions(
        &app,
        &account,
        json!([{
            "vehicle_id": van,
            "time": iso(start + Duration::seconds(150)),
            "lat": 52.06,
            "lon": 13.06,
        }]),
    )
    .await;
    assert_eq!(late.body["duplicates"], 0, "stored: {}", late.body);

    let expected = vec![
        pair("device_online", ""),
        pair("geofence_enter", &depot),
        pair("geofence_exit", &depot),
        pair("geofence_enter", &customer),
        pair("geofence_exit", &customer),
    ];
    let listed = events(&app, &account, "").await;
    assert_eq!(summary(&listed), expected, "{listed:#?}");
    let times: Vec<&str> = listed
        .iter()
        .map(|e| e["time"].as_str().expect("time"))
        .collect();
    let minute = |m: i64| iso(start + Duration::minutes(m));
    for (time, want) in times.iter().zip([0, 1, 4, 5, 7]) {
        assert_eq!(
            time.parse::<DateTime<Utc>>().expect("time"),
            minute(want).parse::<DateTime<Utc>>().expect("time")
        );
    }
    let enter = &listed[1];
    assert_eq!(enter["vehicle_id"], van.as_str());
    assert_eq!(enter["position"]["lat"], 52.02);
    assert_eq!(enter["position"]["lon"], 13.05);
    assert_eq!(enter["position"]["speed"], 40.0);
    assert!(enter["id"].is_string());

    // The same events, pushed live, in the same order.
    let pushed = pushed_events(&mut socket, expected.len()).await;
    assert_eq!(summary(&pushed), expected, "{pushed:#?}");
    assert_eq!(pushed, listed, "pushed as listed");

    // Deleting a geofence keeps its past events.
    let gone = app
        .request(
            Method::DELETE,
            &format!("/api/v1/geofences/{depot}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(events(&app, &account, "").await, listed);
}

async fn overspeed_fires_once_per_excursion(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let limited = vehicle(&app, &account, json!({ "speed_limit_kmh": 90 })).await;
    let free = vehicle(&app, &account, json!({})).await;
    let start = minutes_ago(5);
    let at = |id: &str, second: i64, speed: f64| {
        json!({
            "vehicle_id": id,
            "time": iso(start + Duration::seconds(second)),
            "lat": 48.1,
            "lon": 11.5,
            "speed": speed,
        })
    };
    // 100 fires; 110 and 89 (above limit - 2) do not; 80 re-arms; 120 fires.
    let speeds = [50.0, 100.0, 110.0, 89.0, 95.0, 80.0, 120.0, 125.0];
    let first: Vec<Value> = speeds[..3]
        .iter()
        .enumerate()
        .map(|(i, s)| at(&limited, i as i64 * 10, *s))
        .collect();
    let rest: Vec<Value> = speeds[3..]
        .iter()
        .enumerate()
        .map(|(i, s)| at(&limited, (i as i64 + 3) * 10, *s))
        .collect();
    post_positions(&app, &account, Value::Array(first)).await;
    post_positions(&app, &account, Value::Array(rest)).await;
    // Out of order: an old fast point fires nothing.
    post_positions(&app, &account, json!([at(&limited, 55, 200.0)])).await;
    // Without a limit there is no overspeed.
    post_positions(
        &app,
        &account,
        json!([at(&free, 0, 50.0), at(&free, 10, 250.0)]),
    )
    .await;

    let overspeed = events(
        &app,
        &account,
        &format!("?type=overspeed&vehicle_id={limited}"),
    )
    .await;
    let speeds: Vec<f64> = overspeed
        .iter()
        .map(|e| e["position"]["speed"].as_f64().expect("speed"))
        .collect();
    assert_eq!(speeds, [100.0, 120.0], "{overspeed:#?}");
    assert!(events(
        &app,
        &account,
        &format!("?type=overspeed&vehicle_id={free}")
    )
    .await
    .is_empty());

    // Raising the limit applies to the next batch.
    let raised = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{free}"),
            Some(&account.token),
            Some(json!({ "attributes": { "speed_limit_kmh": 100 } })),
        )
        .await;
    assert_eq!(raised.status, StatusCode::OK, "{}", raised.body);
    post_positions(&app, &account, json!([at(&free, 20, 101.0)])).await;
    assert_eq!(
        events(
            &app,
            &account,
            &format!("?type=overspeed&vehicle_id={free}")
        )
        .await
        .len(),
        1
    );
}

async fn devices_come_online_and_go_offline(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let van = vehicle(&app, &account, json!({})).await;
    let quiet = vehicle(&app, &account, json!({})).await;
    let mut socket = connect(&app, &account).await;
    let first = minutes_ago(15);
    post_positions(
        &app,
        &account,
        json!([
            { "vehicle_id": van, "time": iso(first), "lat": 1.0, "lon": 2.0, "valid": false },
            { "vehicle_id": van, "time": iso(first + Duration::seconds(30)), "lat": 1.0, "lon": 2.0 },
        ]),
    )
    .await;
    let online = events(&app, &account, "").await;
    assert_eq!(summary(&online), [pair("device_online", "")]);
    assert_eq!(online[0]["vehicle_id"], van.as_str());
    assert_eq!(
        online[0]["position"]["valid"], false,
        "an invalid position brings a device online too"
    );
    let pushed = pushed_events(&mut socket, 1).await;
    assert_eq!(pushed, online);

    // Silent for more than 10 minutes: the sweep emits device_offline once
    // (the periodic sweep may have come first).
    assert!(sweep(&app, "hetzner-fsn1-1").await <= 1);
    assert_eq!(sweep(&app, "hetzner-fsn1-1").await, 0, "once");
    let listed = events(&app, &account, "").await;
    assert_eq!(
        summary(&listed),
        [pair("device_online", ""), pair("device_offline", "")]
    );
    let offline = &listed[1];
    assert!(offline.get("position").is_none(), "{offline}");
    assert_eq!(
        offline["time"]
            .as_str()
            .expect("time")
            .parse::<DateTime<Utc>>()
            .expect("time"),
        first + Duration::seconds(30) + Duration::minutes(10),
        "offline when the silence reached 10 minutes"
    );
    assert_eq!(pushed_events(&mut socket, 1).await[0], *offline);

    // Reporting again brings it back online.
    post_positions(
        &app,
        &account,
        json!([{ "vehicle_id": van, "time": iso(minutes_ago(1)), "lat": 1.0, "lon": 2.0 }]),
    )
    .await;
    let listed = events(&app, &account, &format!("?vehicle_id={van}")).await;
    assert_eq!(
        summary(&listed),
        [
            pair("device_online", ""),
            pair("device_offline", ""),
            pair("device_online", ""),
        ]
    );
    // A vehicle that never reported has no events, and is not swept.
    assert!(events(&app, &account, &format!("?vehicle_id={quiet}"))
        .await
        .is_empty());
    assert_eq!(sweep(&app, "hetzner-fsn1-1").await, 0);
}

async fn events_filter_paginate_and_stay_with_their_tenant(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("hobby", "DE").await;
    let van = vehicle(&app, &a, json!({ "speed_limit_kmh": 50 })).await;
    let b_van = vehicle(&app, &b, json!({})).await;
    let fence = create_geofence(
        &app,
        &a,
        json!({ "name": "Zone", "circle": { "lat": 10.0, "lon": 10.0, "radius_m": 5000 } }),
    )
    .await;
    assert_eq!(fence.status, StatusCode::CREATED);
    let start = minutes_ago(5);
    post_positions(
        &app,
        &a,
        json!([
            { "vehicle_id": van, "time": iso(start), "lat": 10.0, "lon": 10.0, "speed": 80.0 },
            { "vehicle_id": van, "time": iso(start + Duration::seconds(10)), "lat": 11.0, "lon": 10.0, "speed": 20.0 },
        ]),
    )
    .await;
    post_positions(
        &app,
        &b,
        json!([{ "vehicle_id": b_van, "time": iso(start), "lat": 10.0, "lon": 10.0 }]),
    )
    .await;

    let all = events(&app, &a, "").await;
    assert_eq!(
        all.iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect::<Vec<_>>(),
        [
            "device_online",
            "geofence_enter",
            "overspeed",
            "geofence_exit"
        ]
    );
    // B sees its own online event only, even asking for A's vehicle, and
    // none of A's geofences act on B's vehicles.
    let theirs = events(&app, &b, "").await;
    assert_eq!(summary(&theirs), [pair("device_online", "")]);
    assert_eq!(theirs[0]["vehicle_id"], b_van.as_str());
    assert!(events(&app, &b, &format!("?vehicle_id={van}"))
        .await
        .is_empty());

    // Filters.
    assert_eq!(
        summary(&events(&app, &a, "?type=geofence_enter,geofence_exit").await)
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>(),
        ["geofence_enter", "geofence_exit"]
    );
    let later = iso(start + Duration::seconds(5));
    assert_eq!(
        events(&app, &a, &format!("?from={later}")).await.len(),
        1,
        "from is inclusive of later events only"
    );
    assert_eq!(events(&app, &a, &format!("?to={later}")).await.len(), 3);

    // Pages of one follow the cursor through every event.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=1&cursor={c}"),
            None => "/api/v1/events?limit=1".into(),
        };
        let page = app.get(&path, &a.token).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        seen.extend(page.body["data"].as_array().expect("data").iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // Bad queries say what is allowed.
    let unknown = app.get("/api/v1/events?type=speeding", &a.token).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error_code(), "invalid_query");
    let message = unknown.body["error"]["message"].as_str().expect("message");
    for allowed in [
        "geofence_enter",
        "geofence_exit",
        "overspeed",
        "device_online",
        "device_offline",
    ] {
        assert!(message.contains(allowed), "{message}");
    }
    for bad in [
        "?from=yesterday",
        "?limit=0",
        "?cursor=nope",
        "?vehicle_id=nope",
        "?colour=red",
    ] {
        let answer = app.get(&format!("/api/v1/events{bad}"), &a.token).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "invalid_query", "{bad}");
    }
}
