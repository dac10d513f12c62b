//! Positions through the edge: batch ingest, latest, history, export.

use chrono::{Duration, DurationRound, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{device, Account, TestApp};
use crate::stories;

stories!(
    a_batch_is_validated_item_by_item_and_stored_once,
    latest_history_buckets_and_exports_agree,
    concurrent_batches_are_all_stored,
    positions_are_isolated_between_tenants,
    vehicle_changes_apply_to_the_next_batch,
);

async fn vehicle(app: &TestApp, account: &Account, device: Option<&str>) -> String {
    let created = app.create_vehicle(account, "Van", device).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

/// RFC 3339 with `Z`, safe in a query string as it is.
fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn at(minutes_ago: i64) -> String {
    let t = Utc::now() - Duration::minutes(minutes_ago);
    iso(t.duration_trunc(Duration::seconds(1)).expect("trunc"))
}

async fn post(app: &TestApp, account: &Account, body: Value) -> crate::helpers::Answer {
    app.post("/api/v1/positions", Some(&account.api_key), body)
        .await
}

async fn a_batch_is_validated_item_by_item_and_stored_once(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let other = app.signup("hobby", "DE").await;
    let imei = device();
    let van = vehicle(&app, &account, Some(&imei)).await;
    let foreign = vehicle(&app, &other, None).await;
    let t1 = at(10);
    let batch = json!([
        { "vehicle_id": van, "time": t1, "lat": 52.52, "lon": 13.40, "speed": 36.0 },          // 0 ok
        { "device_id": imei, "time": at(9), "lat": 52.53, "lon": 13.41 },                      // 1 ok
        { "vehicle_id": van, "time": at(8), "lat": 95.0, "lon": 13.4 },                        // 2 lat
        { "vehicle_id": foreign, "time": at(8), "lat": 1.0, "lon": 1.0 },                      // 3 other tenant
        { "vehicle_id": van, "time": (Utc::now() + Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "lat": 1.0, "lon": 1.0 }, // 4 future
        { "vehicle_id": van, "time": at(60 * 24 * 40), "lat": 1.0, "lon": 1.0 },             // 5 older than 30 days
        { "vehicle_id": van, "time": t1, "lat": 52.52, "lon": 13.40 },                         // 6 duplicate of 0
        { "vehicle_id": van, "time": at(7) },                                                  // 7 no lat/lon
        { "device_id": "unknown-device", "lat": 1.0, "lon": 1.0 },                             // 8 unknown device
        { "lat": 1.0, "lon": 1.0 },                                                            // 9 no vehicle
        { "vehicle_id": van, "time": "yesterday", "lat": 1.0, "lon": 1.0 },                    // 10 bad time
        { "vehicle_id": van, "time": at(6), "lat": 52.54, "lon": 13.42, "colour": "red" },     // 11 unknown field
    ]);
    let answer = post(&app, &account, batch.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 3, "{}", answer.body);
    assert_eq!(
        answer.body["duplicates"], 1,
        "the in-batch repeat is accepted, stored once"
    );
    let rejected: Vec<u64> = answer.body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(rejected, [2, 3, 4, 5, 7, 8, 9, 10, 11], "{}", answer.body);
    let messages = answer.body["rejected"].to_string();
    for hint in [
        "lat",
        "not a vehicle of this account",
        "future",
        "30 days",
        "RFC 3339",
    ] {
        assert!(
            messages.contains(hint),
            "rejections should mention {hint}: {messages}"
        );
    }

    // Resending the whole batch stores nothing new.
    let again = post(&app, &account, batch).await;
    assert_eq!(again.body["accepted"], 3);
    assert_eq!(again.body["duplicates"], 3);
    let history = app
        .get(
            &format!("/api/v1/vehicles/{van}/positions?from={}", at(60)),
            &account.token,
        )
        .await;
    assert_eq!(
        history.body["data"].as_array().expect("data").len(),
        2,
        "{}",
        history.body
    );
    let other_history = app
        .get(
            &format!("/api/v1/vehicles/{foreign}/positions?from={}", at(60)),
            &other.token,
        )
        .await;
    assert_eq!(
        other_history.body["data"],
        json!([]),
        "nothing leaked into the other tenant"
    );

    // Wrapped form, all rejected → 422 with the reasons.
    let none = post(
        &app,
        &account,
        json!({ "positions": [{ "vehicle_id": van, "lat": 200.0, "lon": 0.0 }] }),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(none.error_code(), "all_rejected");
    assert_eq!(none.body["rejected"][0]["index"], 0);

    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({ "vehicle_id": van, "lat": 1.0, "lon": 1.0 }))
        .collect();
    let big = post(&app, &account, Value::Array(too_many)).await;
    assert_eq!(big.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(big.error_code(), "batch_too_large");
    let not_a_batch = post(&app, &account, json!({ "lat": 1.0 })).await;
    assert_eq!(not_a_batch.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn latest_history_buckets_and_exports_agree(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let van = vehicle(&app, &account, None).await;
    let idle = vehicle(&app, &account, None).await;
    let base = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::hours(1))
        .expect("trunc");
    // One position a minute for an hour, in two batches out of order.
    let items: Vec<Value> = (0..60)
        .map(|i| {
            json!({ "vehicle_id": van, "time": (base + Duration::minutes(i)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "lat": 40.0 + i as f64 / 1000.0, "lon": -74.0, "speed": i as f64, "altitude": 10.0 })
        })
        .collect();
    let (late, early) = items.split_at(30);
    for part in [early, late] {
        let answer = post(&app, &account, Value::Array(part.to_vec())).await;
        assert_eq!(answer.body["accepted"], 30, "{}", answer.body);
    }

    let latest = app.get("/api/v1/positions/latest", &account.token).await;
    let data = latest.body["data"].as_array().expect("data");
    assert_eq!(
        data.len(),
        1,
        "a vehicle without positions has no latest: {}",
        latest.body
    );
    assert_eq!(data[0]["vehicle_id"], van.as_str());
    assert_eq!(data[0]["lat"], 40.059);
    assert_eq!(data[0]["speed"], 59.0, "km/h as sent");
    assert!(data.iter().all(|p| p["vehicle_id"] != idle.as_str()));

    let from = iso(base);
    let to = iso(base + Duration::hours(1));
    let q = |extra: &str| format!("/api/v1/vehicles/{van}/positions?from={from}&to={to}{extra}");
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let extra = match &cursor {
            Some(c) => format!("&limit=25&cursor={c}"),
            None => "&limit=25".into(),
        };
        let page = app.get(&q(&extra), &account.token).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["data"].as_array().expect("data");
        for (i, p) in items.iter().enumerate() {
            assert_eq!(p["speed"], (seen + i) as f64, "in time order");
        }
        seen += items.len();
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 60);

    let buckets = app.get(&q("&bucket=15m"), &account.token).await;
    let b = buckets.body["data"].as_array().expect("buckets");
    assert_eq!(b.len(), 4, "{}", buckets.body);
    assert_eq!(b[0]["count"], 15);
    assert_eq!(b[0]["speed"], 7.0, "average of 0..14");
    assert_eq!(b[3]["max_speed"], 59.0);

    let csv = app
        .client
        .get(format!("{}{}", app.url, q("&format=csv")))
        .bearer_auth(&account.token)
        .send()
        .await
        .expect("sent");
    assert!(csv.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    let csv = csv.text().await.expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 61, "header and 60 rows");
    assert!(lines[0].starts_with("time,lat,lon,speed_kmh"));
    assert!(lines[1].contains(",40,-74,0,"), "{}", lines[1]);

    let gpx = app
        .client
        .get(format!("{}{}", app.url, q("")))
        .bearer_auth(&account.token)
        .header("accept", "application/gpx+xml")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(gpx.matches("<trkpt ").count(), 60);
    assert!(gpx.contains("<trkpt lat=\"40\" lon=\"-74\"><ele>10</ele><time>"));

    for bad in ["&bucket=7x", "&format=kml", "&limit=0", "&cursor=soon"] {
        let answer = app.get(&q(bad), &account.token).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let backwards = app
        .get(
            &format!("/api/v1/vehicles/{van}/positions?from={to}&to={from}"),
            &account.token,
        )
        .await;
    assert_eq!(backwards.status, StatusCode::BAD_REQUEST);
}

async fn concurrent_batches_are_all_stored(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let van = vehicle(&app, &account, None).await;
    let base = Utc::now() - Duration::hours(3);
    let mut tasks = tokio::task::JoinSet::new();
    for request in 0..20 {
        let client = app.client.clone();
        let url = format!("{}/api/v1/positions", app.url);
        let key = account.api_key.clone();
        let van = van.clone();
        tasks.spawn(async move {
            let items: Vec<Value> = (0..100)
                .map(|i| {
                    let t = base + Duration::seconds(request * 100 + i);
                    json!({ "vehicle_id": van, "time": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "lat": 1.0, "lon": 2.0 })
                })
                .collect();
            let response = client.post(url).bearer_auth(key).json(&items).send().await.expect("sent");
            let body: Value = response.json().await.expect("json");
            body["accepted"].as_u64().expect("accepted")
        });
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        accepted += done.expect("task");
    }
    assert_eq!(accepted, 2000);
    let history = app
        .get(
            &format!(
                "/api/v1/vehicles/{van}/positions?from={}&limit=10000",
                iso(base - Duration::minutes(1))
            ),
            &account.token,
        )
        .await;
    assert_eq!(history.body["data"].as_array().expect("data").len(), 2000);
}

async fn positions_are_isolated_between_tenants(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("hobby", "DE").await;
    let van = vehicle(&app, &a, None).await;
    let answer = post(
        &app,
        &a,
        json!([{ "vehicle_id": van, "lat": 1.0, "lon": 1.0 }]),
    )
    .await;
    assert_eq!(answer.body["accepted"], 1);

    let history = app
        .get(&format!("/api/v1/vehicles/{van}/positions"), &b.token)
        .await;
    assert_eq!(history.status, StatusCode::NOT_FOUND);
    let latest = app.get("/api/v1/positions/latest", &b.token).await;
    assert_eq!(latest.body["data"], json!([]));
    let sneaky = post(
        &app,
        &b,
        json!([{ "vehicle_id": van, "lat": 5.0, "lon": 5.0 }]),
    )
    .await;
    assert_eq!(sneaky.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mine = app.get("/api/v1/positions/latest", &a.token).await;
    assert_eq!(
        mine.body["data"][0]["lat"], 1.0,
        "B wrote nothing to A's vehicle"
    );
}

/// The cell resolves batches from a cached directory: every vehicle change
/// must show in the very next batch.
async fn vehicle_changes_apply_to_the_next_batch(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let first = vehicle(&app, &account, Some("dir-device-1")).await;
    let one = |body: Value| post(&app, &account, Value::Array(vec![body]));
    assert_eq!(
        one(json!({ "vehicle_id": first, "lat": 1.0, "lon": 1.0 }))
            .await
            .body["accepted"],
        1
    );

    let second = vehicle(&app, &account, None).await;
    let answer = one(json!({ "vehicle_id": second, "lat": 1.0, "lon": 1.0 })).await;
    assert_eq!(
        answer.body["accepted"], 1,
        "a new vehicle is known at once: {}",
        answer.body
    );

    let moved = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/vehicles/{first}"),
            Some(&account.token),
            Some(json!({ "device_id": "dir-device-2" })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    let old = one(json!({ "device_id": "dir-device-1", "lat": 2.0, "lon": 2.0 })).await;
    assert_eq!(
        old.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the old device is gone: {}",
        old.body
    );
    let new = one(json!({ "device_id": "dir-device-2", "lat": 2.0, "lon": 2.0 })).await;
    assert_eq!(new.body["accepted"], 1, "{}", new.body);

    let gone = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/vehicles/{second}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let after = one(json!({ "vehicle_id": second, "lat": 3.0, "lon": 3.0 })).await;
    assert_eq!(
        after.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        after.body
    );
}
