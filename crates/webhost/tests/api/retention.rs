//! Retention per plan, through each cell's maintenance endpoint.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost_http::auth::{InternalKeys, INTERNAL_HEADER};

use crate::helpers::{Account, TestApp};
use crate::stories;

stories!(retention_removes_exactly_what_each_plan_no_longer_keeps);

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn run(
    app: &TestApp,
    cell: &str,
    issuer: &str,
    now: chrono::DateTime<Utc>,
) -> (StatusCode, Value) {
    let cell = app.app.cells.iter().find(|c| c.name == cell).expect("cell");
    let keys = InternalKeys::derive(app.settings.secret_key_base().expect("secret").as_bytes());
    let path = "/internal/v1/maintenance/retention";
    let credential = keys
        .mint(
            issuer,
            &webhost_contract::cell_audience(cell.id),
            &Method::POST,
            path,
            None,
            None,
        )
        .expect("mint");
    let response = app
        .client
        .post(format!("{}{path}", cell.url))
        .header(INTERNAL_HEADER, credential)
        .json(&json!({ "now": iso(now) }))
        .send()
        .await
        .expect("sent");
    let answer = TestApp::answer(response).await;
    (answer.status, answer.body)
}

async fn history_len(app: &TestApp, account: &Account, vehicle: &str) -> usize {
    let from = iso(Utc::now() - Duration::days(100));
    let page = app
        .get(
            &format!("/api/v1/vehicles/{vehicle}/positions?from={from}&limit=100"),
            &account.token,
        )
        .await;
    page.body["data"].as_array().expect("data").len()
}

async fn retention_removes_exactly_what_each_plan_no_longer_keeps(app: TestApp) {
    let hobby = app.signup("hobby", "DE").await; // 30 days, hetzner-fsn1-1
    let starter = app.signup("starter", "US").await; // 90 days, fly-iad-1
    let mut vehicles = Vec::new();
    for account in [&hobby, &starter] {
        let id = app.create_vehicle(account, "Van", None).await.body["id"]
            .as_str()
            .expect("id")
            .to_string();
        let batch = json!([
            { "vehicle_id": id, "time": iso(Utc::now() - Duration::days(20)), "lat": 1.0, "lon": 1.0 },
            { "vehicle_id": id, "time": iso(Utc::now() - Duration::hours(1)), "lat": 2.0, "lon": 2.0 },
        ]);
        let answer = app
            .post("/api/v1/positions", Some(&account.api_key), batch)
            .await;
        assert_eq!(answer.body["accepted"], 2, "{}", answer.body);
        vehicles.push(id);
    }

    // Only the control plane may run it.
    let (status, _) = run(&app, "hetzner-fsn1-1", "edge", Utc::now()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Fifteen days on, the hobby plan's 30 days no longer reach the first
    // position; the starter plan's 90 still do.
    let later = Utc::now() + Duration::days(15);
    let (status, report) = run(&app, "hetzner-fsn1-1", "control", later).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["positions_removed"], 1, "{report}");
    // The cell's finished jobs and delivery log are purged in the same run.
    assert!(report["jobs_purged"].is_u64(), "{report}");
    assert!(report["deliveries_purged"].is_u64(), "{report}");
    let (_, report) = run(&app, "fly-iad-1", "control", later).await;
    assert_eq!(report["positions_removed"], 0, "{report}");

    assert_eq!(history_len(&app, &hobby, &vehicles[0]).await, 1);
    assert_eq!(history_len(&app, &starter, &vehicles[1]).await, 2);
}
