//! Webhooks through the edge: the resource (CRUD, limit, tenants, the
//! secret shown once), URLs refused when they point at private addresses,
//! and deliveries to a local receiver: signed, once per event, retried
//! after failures, logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use chrono::{DateTime, Duration, DurationRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost::Overrides;

use crate::geofences::{create_geofence, square};
use crate::helpers::{Account, Answer, TestApp};
use crate::stories;

/// Stories on an application whose cells may deliver to this machine, with
/// the retry schedule (30 s, 1 min, … an hour) over milliseconds.
macro_rules! receiver_stories {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite_with(super::local_receivers).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres_with(super::local_receivers).await {
                        super::$name(app).await;
                    }
                }
            }
        )*
    };
}

fn local_receivers(o: &mut Overrides) {
    o.webhook_allow_private = Some(true);
    o.job_backoff_scale = Some(0.0005);
}

receiver_stories!(
    webhooks_are_created_read_changed_and_deleted_per_tenant,
    deliveries_are_signed_and_arrive_once_per_event,
    a_failing_receiver_gets_the_event_on_the_third_try,
);

stories!(private_targets_are_refused_by_default);

/// What the receiver got: the path's last segment, headers, raw body.
#[derive(Clone, Debug)]
struct Received {
    name: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    /// Statuses to answer per name, in order; 200 once used up.
    answers: HashMap<String, VecDeque<u16>>,
}

/// A webhook receiver on 127.0.0.1:0: `POST /{name}` records the request
/// and answers what the script says.
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let router = axum::Router::new()
            .route("/{name}", axum::routing::post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        // Ends with the test's runtime.
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("receiver serves");
        });
        Self { url, script }
    }

    fn answer(&self, name: &str, statuses: &[u16]) {
        self.script
            .lock()
            .expect("script")
            .answers
            .insert(name.to_string(), statuses.iter().copied().collect());
    }

    fn received(&self, name: &str) -> Vec<Received> {
        self.script
            .lock()
            .expect("script")
            .received
            .iter()
            .filter(|r| r.name == name)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let mut script = script.lock().expect("script");
    script.received.push(Received {
        name: name.clone(),
        headers,
        body,
    });
    let status = script
        .answers
        .get_mut(&name)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    AxumStatus::from_u16(status).expect("status")
}

/// Polls `done` every 20 ms for at most a minute.
async fn eventually<T>(what: &str, mut done: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        if let Some(value) = done().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within a minute"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

async fn create_webhook(app: &TestApp, account: &Account, body: Value) -> Answer {
    app.post("/api/v1/webhooks", Some(&account.token), body)
        .await
}

async fn webhook_request(
    app: &TestApp,
    account: &Account,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    app.request(method, path, Some(&account.token), body).await
}

/// The webhook's logged attempts, newest first (one page of 100).
async fn deliveries(app: &TestApp, account: &Account, id: &str) -> Vec<Value> {
    let answer = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), &account.token)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["data"].as_array().expect("data").clone()
}

fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::minutes(minutes))
        .duration_trunc(Duration::milliseconds(1))
        .expect("trunc")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn a_vehicle(app: &TestApp, account: &Account) -> String {
    let created = app.create_vehicle(account, "Van", None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

async fn post_positions(app: &TestApp, account: &Account, body: Value) {
    let answer = app
        .post("/api/v1/positions", Some(&account.api_key), body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// Checks a received delivery's headers and signature against `secret`;
/// returns its body.
fn verified(received: &Received, secret: &str) -> Value {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .expect("ASCII header")
            .to_string()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("user-agent"), "WebHost-Webhooks/1");
    let signature = header("webhost-signature");
    let (t, _) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("t=…,v1=… expected: {signature}"));
    let t: i64 = t.parse().expect("unix seconds");
    assert!(
        (Utc::now().timestamp() - t).abs() < 300,
        "the timestamp is the time of sending: {t}"
    );
    assert_eq!(
        signature,
        webhost_cell::webhook_signature(secret, t, &received.body),
        "HMAC-SHA256(secret, t.body)"
    );
    let body: Value = serde_json::from_slice(&received.body).expect("JSON body");
    assert_eq!(
        header("webhost-event-id"),
        body["data"]["id"].as_str().expect("id")
    );
    assert_eq!(
        header("webhost-event-type"),
        body["type"].as_str().expect("type")
    );
    assert_eq!(body["type"], body["data"]["type"]);
    body
}

async fn webhooks_are_created_read_changed_and_deleted_per_tenant(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let other = app.signup("hobby", "DE").await;
    // Nothing listens there, and no event happens: nothing is sent.
    let url = "http://127.0.0.1:9/hooks/a";

    let created = create_webhook(
        &app,
        &account,
        json!({ "url": url, "events": ["geofence_enter", "overspeed"], "description": "Dispatch" }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    let secret = created.body["secret"].as_str().expect("the secret, once");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(created.body["url"], url);
    assert_eq!(
        created.body["events"],
        json!(["geofence_enter", "overspeed"])
    );
    assert_eq!(created.body["enabled"], true);
    assert_eq!(created.body["description"], "Dispatch");

    let path = format!("/api/v1/webhooks/{id}");
    let shown = app.get(&path, &account.token).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(
        shown.body.get("secret").is_none(),
        "never again: {}",
        shown.body
    );
    assert_eq!(shown.body["created_at"], created.body["created_at"]);
    let listed = app.get("/api/v1/webhooks", &account.token).await;
    assert_eq!(listed.body["data"], json!([shown.body]));
    assert!(!listed.body.to_string().contains(secret));

    let patched = webhook_request(
        &app,
        &account,
        Method::PATCH,
        &path,
        Some(json!({ "events": [], "enabled": false, "description": null,
                     "url": "http://127.0.0.1:9/hooks/b" })),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["events"], json!([]), "empty: all events");
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(patched.body["url"], "http://127.0.0.1:9/hooks/b");
    assert!(
        patched.body.get("description").is_none(),
        "{}",
        patched.body
    );
    assert!(patched.body.get("secret").is_none());
    let enabled = webhook_request(
        &app,
        &account,
        Method::PATCH,
        &path,
        Some(json!({ "enabled": true })),
    )
    .await;
    assert_eq!(enabled.body["enabled"], true, "{}", enabled.body);
    assert!(enabled.body.get("disabled_reason").is_none());

    // Bad input names its field and writes nothing.
    for (method, target, body, field) in [
        (Method::POST, "/api/v1/webhooks", json!({}), "url"),
        (
            Method::POST,
            "/api/v1/webhooks",
            json!({ "url": url, "events": ["speeding"] }),
            "events",
        ),
        (
            Method::POST,
            "/api/v1/webhooks",
            json!({ "url": "ftp://127.0.0.1/x" }),
            "url",
        ),
        (
            Method::POST,
            "/api/v1/webhooks",
            json!({ "url": url, "description": "x".repeat(101) }),
            "description",
        ),
        (
            Method::PATCH,
            path.as_str(),
            json!({ "enabled": "yes" }),
            "enabled",
        ),
        (Method::PATCH, path.as_str(), json!({ "url": null }), "url"),
    ] {
        let answer = webhook_request(&app, &account, method, target, Some(body.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["error"]["field"], field,
            "{body}: {}",
            answer.body
        );
    }
    let listed = app.get("/api/v1/webhooks", &account.token).await;
    assert_eq!(listed.body["data"].as_array().expect("data").len(), 1);

    // Another tenant's webhook does not exist for this one.
    assert_eq!(
        app.get(&path, &other.token).await.status,
        StatusCode::NOT_FOUND
    );
    for (method, body) in [
        (Method::PATCH, Some(json!({ "enabled": false }))),
        (Method::DELETE, None),
    ] {
        let answer = webhook_request(&app, &other, method, &path, body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    }
    let theirs = app.get(&format!("{path}/deliveries"), &other.token).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let none = app.get("/api/v1/webhooks", &other.token).await;
    assert_eq!(none.body["data"], json!([]));
    assert_eq!(
        app.get("/api/v1/webhooks/not-an-id", &account.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(deliveries(&app, &account, &id).await.is_empty());

    // 20 per tenant.
    for n in 1..20 {
        let more = create_webhook(
            &app,
            &account,
            json!({ "url": format!("http://127.0.0.1:9/hooks/{n}") }),
        )
        .await;
        assert_eq!(more.status, StatusCode::CREATED, "{}", more.body);
    }
    let refused = create_webhook(&app, &account, json!({ "url": url })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "webhook_limit_reached");
    let theirs = create_webhook(&app, &other, json!({ "url": url })).await;
    assert_eq!(
        theirs.status,
        StatusCode::CREATED,
        "another tenant's own 20"
    );

    let deleted = webhook_request(&app, &account, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(
        app.get(&path, &account.token).await.status,
        StatusCode::NOT_FOUND
    );
    let again = create_webhook(&app, &account, json!({ "url": url })).await;
    assert_eq!(again.status, StatusCode::CREATED, "a slot was freed");
}

async fn private_targets_are_refused_by_default(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    for (url, why) in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://localhost:3000/hook", "localhost"),
        ("http://printer.local/hook", "local network"),
    ] {
        let answer = create_webhook(&app, &account, json!({ "url": url })).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"]["field"], "url");
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(why), "{url}: {message}");
    }
    let listed = app.get("/api/v1/webhooks", &account.token).await;
    assert_eq!(listed.body["data"], json!([]), "nothing stored");
}

async fn deliveries_are_signed_and_arrive_once_per_event(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let receiver = Receiver::start().await;
    let all = create_webhook(
        &app,
        &account,
        json!({ "url": format!("{}/all", receiver.url) }),
    )
    .await;
    assert_eq!(all.status, StatusCode::CREATED, "{}", all.body);
    let entering = create_webhook(
        &app,
        &account,
        json!({ "url": format!("{}/enter", receiver.url), "events": ["geofence_enter"] }),
    )
    .await;
    let paused = create_webhook(
        &app,
        &account,
        json!({ "url": format!("{}/paused", receiver.url) }),
    )
    .await;
    let paused_id = paused.body["id"].as_str().expect("id");
    let off = webhook_request(
        &app,
        &account,
        Method::PATCH,
        &format!("/api/v1/webhooks/{paused_id}"),
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(off.status, StatusCode::OK);

    let van = a_vehicle(&app, &account).await;
    let depot = create_geofence(
        &app,
        &account,
        json!({ "name": "Depot", "geometry": square(13.0, 52.0, 13.1, 52.1) }),
    )
    .await;
    assert_eq!(depot.status, StatusCode::CREATED, "{}", depot.body);
    let start = minutes_ago(5);
    let point = |second: i64, lat: f64| {
        json!({ "vehicle_id": van, "time": iso(start + Duration::seconds(second)),
                "lat": lat, "lon": 13.05 })
    };
    // Online, into the depot, out again: three events.
    post_positions(&app, &account, json!([point(0, 51.95), point(10, 52.05)])).await;
    post_positions(&app, &account, json!([point(20, 52.2)])).await;
    let events = app.get("/api/v1/events", &account.token).await;
    let events = events.body["data"].as_array().expect("events").clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["device_online", "geofence_enter", "geofence_exit"]);

    let all_id = all.body["id"].as_str().expect("id");
    let entering_id = entering.body["id"].as_str().expect("id");
    // Done when every delivery is logged (an attempt is logged after the
    // receiver answered it, so nothing is on its way after this).
    let logged = eventually("three deliveries logged", async || {
        let log = deliveries(&app, &account, all_id).await;
        (log.len() >= 3).then_some(log)
    })
    .await;
    let entering_log = eventually("one delivery logged", async || {
        let log = deliveries(&app, &account, entering_id).await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(logged.len(), 3, "one attempt each: {logged:#?}");
    assert!(logged
        .iter()
        .all(|a| a["status_code"] == 200 && a["attempt"] == 1));
    assert_eq!(entering_log.len(), 1, "{entering_log:#?}");

    let secret = all.body["secret"].as_str().expect("secret");
    let received = receiver.received("all");
    assert_eq!(received.len(), 3, "each event once");
    let bodies: Vec<Value> = received.iter().map(|r| verified(r, secret)).collect();
    let by_id = |list: &mut Vec<Value>| {
        list.sort_by_key(|e| e["id"].as_str().expect("id").to_string());
    };
    let mut data: Vec<Value> = bodies.iter().map(|b| b["data"].clone()).collect();
    let mut listed = events.clone();
    by_id(&mut data);
    by_id(&mut listed);
    assert_eq!(data, listed, "the events as GET /api/v1/events shows them");
    let mut ids: Vec<&str> = bodies
        .iter()
        .map(|b| b["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one delivery id per event");
    for body in &bodies {
        assert!(body["created_at"].as_str().is_some(), "{body}");
        let attempt = logged
            .iter()
            .find(|a| a["delivery_id"] == body["id"])
            .expect("logged under the delivery id");
        assert_eq!(attempt["event_id"], body["data"]["id"]);
        assert_eq!(attempt["event_type"], body["type"]);
    }

    let entered = receiver.received("enter");
    assert_eq!(entered.len(), 1, "only the type it asked for");
    let body = verified(
        &entered[0],
        entering.body["secret"].as_str().expect("secret"),
    );
    assert_eq!(body["type"], "geofence_enter");
    assert_eq!(body["data"], events[1]);
    let (t, _) = entered[0].headers["webhost-signature"]
        .to_str()
        .expect("ASCII")
        .trim_start_matches("t=")
        .split_once(',')
        .expect("t=…,v1=…");
    assert_ne!(
        entered[0].headers["webhost-signature"],
        webhost_cell::webhook_signature(secret, t.parse().expect("t"), &entered[0].body).as_str(),
        "each webhook signs with its own secret"
    );
    assert!(
        receiver.received("paused").is_empty(),
        "a disabled webhook gets nothing"
    );
    assert!(deliveries(&app, &account, paused_id).await.is_empty());
}

async fn a_failing_receiver_gets_the_event_on_the_third_try(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let receiver = Receiver::start().await;
    receiver.answer("flaky", &[500, 500, 200]);
    let hook = create_webhook(
        &app,
        &account,
        json!({ "url": format!("{}/flaky", receiver.url), "events": ["device_online"] }),
    )
    .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let id = hook.body["id"].as_str().expect("id");
    let van = a_vehicle(&app, &account).await;
    post_positions(
        &app,
        &account,
        json!([{ "vehicle_id": van, "time": iso(minutes_ago(3)), "lat": 48.1, "lon": 11.5 }]),
    )
    .await;

    let log = eventually("the third attempt logged", async || {
        let log = deliveries(&app, &account, id).await;
        log.iter().any(|a| a["status_code"] == 200).then_some(log)
    })
    .await;
    let attempts: Vec<(u64, u64)> = log
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().expect("attempt"),
                a["status_code"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(attempts, [(3, 200), (2, 500), (1, 500)], "newest first");
    assert!(log
        .iter()
        .all(|a| a["delivery_id"] == log[0]["delivery_id"]));
    assert!(log.iter().all(|a| a["event_id"] == log[0]["event_id"]));
    assert!(log
        .iter()
        .all(|a| a["duration_ms"].is_u64() && a["at"].is_string()));

    let secret = hook.body["secret"].as_str().expect("secret");
    let received = receiver.received("flaky");
    assert_eq!(received.len(), 3, "two failures, then the delivery");
    let bodies: Vec<Value> = received.iter().map(|r| verified(r, secret)).collect();
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "the same delivery each time"
    );
    assert_eq!(bodies[0]["type"], "device_online");
    assert_eq!(bodies[0]["id"], log[0]["delivery_id"]);

    // Paging through the log.
    let first = app
        .get(
            &format!("/api/v1/webhooks/{id}/deliveries?limit=2"),
            &account.token,
        )
        .await;
    assert_eq!(first.body["data"].as_array().expect("data").len(), 2);
    let cursor = first.body["next_cursor"].as_str().expect("more");
    let rest = app
        .get(
            &format!("/api/v1/webhooks/{id}/deliveries?limit=2&cursor={cursor}"),
            &account.token,
        )
        .await;
    assert_eq!(rest.body["data"], json!([log[2]]));
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let bad = app
        .get(
            &format!("/api/v1/webhooks/{id}/deliveries?limit=0"),
            &account.token,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
