//! Plan changes (`POST /api/v1/subscription`): limits in place, or a live
//! move to the new plan's pool; a downgrade the data does not fit is
//! refused. And a move stopped after any one of its steps resumes (or rolls
//! back) cleanly.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost::Overrides;

use crate::helpers::{device, Account, TestApp};
use crate::stories;

stories!(
    an_upgrade_moves_the_tenant_to_the_new_plans_pool_with_its_data,
    plan_changes_are_checked_and_a_downgrade_must_fit,
    a_move_stopped_after_any_step_resumes_or_rolls_back_cleanly,
);

fn base_time() -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        (Utc::now() - chrono::Duration::hours(3))
            .duration_trunc(chrono::Duration::seconds(1))
            .expect("trunc")
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Posts fix `n` until it is acknowledged (writes may be held or bounced
/// with a 503 while the account moves; never refused as bad).
async fn post_fix(app: &TestApp, account: &Account, van: &str, n: u32) {
    let t = base_time() + chrono::Duration::seconds(i64::from(n));
    loop {
        let answer = app
            .post(
                "/api/v1/positions",
                Some(&account.api_key),
                json!({ "positions": [{ "vehicle_id": van, "time": iso(t), "lat": 52.5, "lon": 13.4 }] }),
            )
            .await;
        if answer.status.is_success() {
            return;
        }
        assert!(
            answer.status.is_server_error(),
            "{} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored(app: &TestApp, account: &Account, van: &str) -> Vec<String> {
    let from = iso(base_time() - chrono::Duration::hours(1));
    let to = iso(Utc::now() + chrono::Duration::hours(1));
    let page = app
        .get(
            &format!("/api/v1/vehicles/{van}/positions?from={from}&to={to}&limit=10000"),
            &account.token,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["time"].as_str().expect("time").to_string())
        .collect()
}

async fn poll(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = app.admin(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        if done(&answer.body) {
            return answer.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn change_plan(app: &TestApp, bearer: &str, plan: &str) -> crate::helpers::Answer {
    app.post(
        "/api/v1/subscription",
        Some(bearer),
        json!({ "plan": plan }),
    )
    .await
}

async fn an_upgrade_moves_the_tenant_to_the_new_plans_pool_with_its_data(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let before = app.get("/api/v1/subscription", &account.token).await;
    assert_eq!(
        before.body["placement"]["pool"], "hetzner",
        "{}",
        before.body
    );
    let imei = device();
    let van = app.create_vehicle(&account, "Van", Some(&imei)).await;
    assert_eq!(van.status, StatusCode::CREATED, "{}", van.body);
    let van = van.body["id"].as_str().expect("id").to_string();
    for n in 0..20 {
        post_fix(&app, &account, &van, n).await;
    }

    let changed = change_plan(&app, &account.token, "starter").await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["plan"], "starter");
    assert_eq!(changed.body["limits"]["vehicles"], 25);
    let migration = changed.body["migration"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a move started: {}", changed.body))
        .to_string();
    let moved = poll(&app, &format!("/api/admin/migrations/{migration}"), |m| {
        assert_ne!(m["state"], "aborted", "{m}");
        m["state"] == "grace_period"
    })
    .await;
    assert!(moved["progress"]["freeze_ms"].is_u64(), "{moved}");

    let after = app.get("/api/v1/subscription", &account.token).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_eq!(after.body["placement"]["pool"], "fly", "{}", after.body);
    assert_eq!(after.body["placement"]["region"], "fra", "{}", after.body);
    assert_eq!(after.body["migration"]["state"], "grace_period");
    assert_eq!(stored(&app, &account, &van).await.len(), 20);
    // The same credentials and device work on the new cell.
    post_fix(&app, &account, &van, 20).await;
    let t = base_time() + chrono::Duration::seconds(21);
    let osmand = app
        .client
        .get(format!(
            "http://{}/?id={imei}&timestamp={}&lat=52.5&lon=13.4",
            app.app.devices.osmand.addr,
            t.timestamp()
        ))
        .send()
        .await
        .expect("osmand");
    assert_eq!(osmand.status(), StatusCode::OK);
    assert_eq!(stored(&app, &account, &van).await.len(), 22);
}

async fn plan_changes_are_checked_and_a_downgrade_must_fit(app: TestApp) {
    let account = app.signup("starter", "US").await;
    // Billing is the owner's: not an integration's API key.
    let by_key = change_plan(&app, &account.api_key, "business").await;
    assert_eq!(by_key.status, StatusCode::FORBIDDEN, "{}", by_key.body);
    let unknown = change_plan(&app, &account.token, "platinum").await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hobby")),
        "names the plans: {}",
        unknown.body
    );
    let bad = app
        .post(
            "/api/v1/subscription",
            Some(&account.token),
            json!({ "plan": "business", "extra": 1 }),
        )
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);

    // Same pool and region (fly, iad): limits change in place.
    let same = change_plan(&app, &account.token, "starter").await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    assert!(same.body["migration"].is_null(), "{}", same.body);
    let up = change_plan(&app, &account.token, "professional").await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert_eq!(up.body["plan"], "professional");
    assert_eq!(up.body["limits"]["vehicles"], 100);
    assert!(up.body["migration"].is_null(), "{}", up.body);

    // Seven vehicles do not fit the hobby plan's five: refused, naming the
    // excess, and nothing changes.
    for i in 0..7 {
        let created = app
            .create_vehicle(&account, &format!("Van {i}"), None)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    let down = change_plan(&app, &account.token, "hobby").await;
    assert_eq!(down.status, StatusCode::CONFLICT, "{}", down.body);
    assert_eq!(down.error_code(), "plan_too_small");
    let message = down.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("delete 2 vehicles"), "{message}");
    let now = app.get("/api/v1/subscription", &account.token).await;
    assert_eq!(now.body["plan"], "professional");
    assert!(now.body["migration"].is_null());
}

fn stop_after(steps: u32) -> impl FnOnce(&mut Overrides) {
    move |o: &mut Overrides| o.test_stop_move_at = Some(steps.to_string())
}

/// For every N: a move whose job stops right after its N-th persisted step
/// (as a worker killed there would leave it) is retried by the operator and
/// ends moved or rolled back; either way every acknowledged position is
/// there once, the routing table agrees, and the tenant is served.
async fn a_move_stopped_after_any_step_resumes_or_rolls_back_cleanly(first: TestApp) {
    let postgres = first.settings.is_postgres();
    drop(first);
    let mut steps = 1;
    loop {
        let app = if postgres {
            TestApp::postgres_with(stop_after(steps))
                .await
                .expect("PostgreSQL")
        } else {
            TestApp::sqlite_with(stop_after(steps)).await
        };
        let account = app.signup("hobby", "DE").await;
        let van = app.create_vehicle(&account, "Van", None).await.body["id"]
            .as_str()
            .expect("id")
            .to_string();
        for n in 0..5 {
            post_fix(&app, &account, &van, n).await;
        }
        let source = tenant_cell(&app, &account).await;
        let target = crate_second_cell(&app, &source).await;
        let started = app
            .admin(
                Method::POST,
                &format!("/api/admin/tenants/{}/migrate", account.tenant_id),
                Some(json!({ "cell": target })),
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let id = started.body["id"].as_str().expect("id").to_string();
        // Stopped after step N, or through without stopping (N is past the
        // last step before the grace period: every step has been tried).
        let migration = format!("/api/admin/migrations/{id}");
        let job_state = async || {
            let jobs = app
                .admin(Method::GET, "/api/admin/jobs?kind=move_tenant", None)
                .await;
            jobs.body["data"][0].clone()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let m = app.admin(Method::GET, &migration, None).await.body;
            if job_state().await["state"] == "failed"
                || matches!(m["state"].as_str(), Some("grace_period" | "aborted"))
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {m}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A stop right at the last step shows up a moment after its state.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let job = job_state().await;
        let stopped = job["state"] == "failed";
        // Writes while the job is stopped (held or bounced during a freeze,
        // never lost) and, meanwhile, the operator retries the job — as a
        // restarted worker would take it up; a write bounced by a source
        // fenced for a freeze that expired lands once the move resumes.
        let writes = async {
            for n in 5..8 {
                post_fix(&app, &account, &van, n).await;
            }
        };
        let retry = async {
            if stopped {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let retried = app
                    .admin(
                        Method::POST,
                        &format!("/api/admin/jobs/{}/retry", job["id"].as_str().expect("id")),
                        None,
                    )
                    .await;
                assert!(retried.status.is_success(), "{}", retried.body);
            }
        };
        tokio::join!(writes, retry);
        let ended = poll(&app, &format!("/api/admin/migrations/{id}"), |m| {
            matches!(m["state"].as_str(), Some("grace_period" | "aborted"))
        })
        .await;
        let expected = if ended["state"] == "grace_period" {
            &target
        } else {
            &source
        };
        assert_eq!(
            &tenant_cell(&app, &account).await,
            expected,
            "step {steps}: {ended}"
        );
        post_fix(&app, &account, &van, 8).await;
        let times = stored(&app, &account, &van).await;
        assert_eq!(times.len(), 9, "step {steps}: {times:?} {ended}");
        eprintln!(
            "stopped after step {steps}: {stopped}, ended {}",
            ended["state"]
        );
        drop(app);
        if !stopped {
            assert!(steps > 5, "a move has more steps than {steps}");
            break;
        }
        steps += 1;
    }
}

async fn tenant_cell(app: &TestApp, account: &Account) -> String {
    let tenants = app.admin(Method::GET, "/api/admin/tenants", None).await;
    tenants.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["id"] == account.tenant_id.as_str())
        .and_then(|t| t["cell_id"].as_str())
        .expect("listed")
        .to_string()
}

async fn crate_second_cell(app: &TestApp, source: &str) -> String {
    let cell = app
        .admin(Method::GET, &format!("/api/admin/cells/{source}"), None)
        .await;
    let created = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({ "pool": cell.body["pool"], "region": cell.body["region"] })),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    poll(app, &format!("/api/admin/cells/{id}"), |c| {
        c["status"] == "active"
    })
    .await;
    id
}
