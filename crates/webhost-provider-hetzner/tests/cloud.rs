//! The Hetzner Cloud provider against a stateful fake of the API (servers,
//! actions, firewalls, label selectors), with faults injected: a 429 with
//! `Retry-After`, a 503, an answer lost after the server was made, a
//! permanent refusal. Whatever happens, at most one server per cell.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use webhost_domain::{CellId, CellTemplate, PlanName, PoolName, RegionCode, ServerKind};
use webhost_provider::{CellSpec, Progress, Provider, Throttled};
use webhost_provider_hetzner::{CloudConfig, HetznerCloud};
use webhost_provider_http::RetryPolicy;

/// A fault for the next request matching `method` and `path`.
#[derive(Clone)]
enum Fault {
    TooMany {
        retry_after: u64,
    },
    Unavailable,
    /// Does the work, then answers too late for the client.
    LoseAnswer,
    Refuse,
}

#[derive(Default)]
struct World {
    servers: Vec<Value>,
    firewalls: Vec<Value>,
    next_id: u64,
    faults: VecDeque<(Method, &'static str, Fault)>,
    requests: Vec<(Method, String, Value)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%3D", "="))
    })
}

async fn handle(State(fake): State<Fake>, method: Method, uri: Uri, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = uri.path().trim_start_matches("/v1").to_string();
    let fault = {
        let mut world = fake.0.lock().unwrap();
        world
            .requests
            .push((method.clone(), uri.to_string(), body.clone()));
        let at = world
            .faults
            .iter()
            .position(|(m, p, _)| *m == method && path.starts_with(p));
        at.and_then(|i| world.faults.remove(i)).map(|(_, _, f)| f)
    };
    match fault {
        Some(Fault::TooMany { retry_after }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "slow down",
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return response;
        }
        Some(Fault::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try later")
        }
        Some(Fault::Refuse) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                "invalid input in field 'server_type'",
            )
        }
        Some(Fault::LoseAnswer) => {
            let response = serve(&fake, &method, &uri, &path, body);
            tokio::time::sleep(Duration::from_secs(3)).await;
            return response;
        }
        None => {}
    }
    serve(&fake, &method, &uri, &path, body)
}

fn serve(fake: &Fake, method: &Method, uri: &Uri, path: &str, body: Value) -> Response {
    let mut world = fake.0.lock().unwrap();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["servers"]) => {
            let selector = query(uri, "label_selector");
            let servers: Vec<Value> = world
                .servers
                .iter()
                .filter(|s| match &selector {
                    Some(sel) => {
                        let (k, v) = sel.split_once("==").expect("k==v");
                        s["labels"][k] == v
                    }
                    None => true,
                })
                .cloned()
                .collect();
            Json(json!({ "servers": servers })).into_response()
        }
        (Method::POST, ["servers"]) => {
            for key in [
                "name",
                "server_type",
                "image",
                "location",
                "user_data",
                "labels",
            ] {
                if body.get(key).is_none() {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", key);
                }
            }
            if world.servers.iter().any(|s| s["name"] == body["name"]) {
                return error(
                    StatusCode::CONFLICT,
                    "uniqueness_error",
                    "name is already used",
                );
            }
            world.next_id += 1;
            let id = world.next_id;
            let server = json!({
                "id": id,
                "name": body["name"],
                "status": "initializing",
                "labels": body["labels"],
                "polls": 0,
            });
            world.servers.push(server.clone());
            (
                StatusCode::CREATED,
                Json(
                    json!({ "server": server, "action": { "id": 1000 + id, "status": "running" } }),
                ),
            )
                .into_response()
        }
        (Method::GET, ["servers", id]) => {
            let Some(server) = world
                .servers
                .iter_mut()
                .find(|s| s["id"].as_u64() == id.parse().ok())
            else {
                return error(StatusCode::NOT_FOUND, "not_found", "server not found");
            };
            // Boots over two polls.
            let polls = server["polls"].as_u64().unwrap() + 1;
            server["polls"] = json!(polls);
            server["status"] = json!(match polls {
                1 => "initializing",
                2 => "starting",
                _ => "running",
            });
            Json(json!({ "server": server })).into_response()
        }
        (Method::DELETE, ["servers", id]) => {
            let before = world.servers.len();
            let id: Option<u64> = id.parse().ok();
            world.servers.retain(|s| s["id"].as_u64() != id);
            if world.servers.len() == before {
                return error(StatusCode::NOT_FOUND, "not_found", "server not found");
            }
            Json(json!({ "action": { "id": 1, "status": "running" } })).into_response()
        }
        (Method::GET, ["actions", id]) => {
            Json(json!({ "action": { "id": id.parse::<u64>().unwrap(), "status": "success" } }))
                .into_response()
        }
        (Method::GET, ["firewalls"]) => {
            let name = query(uri, "name");
            let found: Vec<Value> = world
                .firewalls
                .iter()
                .filter(|f| name.as_deref().is_none_or(|n| f["name"] == n))
                .cloned()
                .collect();
            Json(json!({ "firewalls": found })).into_response()
        }
        (Method::POST, ["firewalls"]) => {
            world.next_id += 1;
            let firewall =
                json!({ "id": world.next_id, "name": body["name"], "rules": body["rules"] });
            world.firewalls.push(firewall.clone());
            (StatusCode::CREATED, Json(json!({ "firewall": firewall }))).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route in the fake",
        ),
    }
}

async fn start(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, HetznerCloud) {
    let fake = Fake::default();
    fake.0.lock().unwrap().faults = faults.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let bootstrap = [
        "WEBHOST_CONTROL_URL",
        "WEBHOST_ADMIN_TOKEN",
        "SECRET_KEY_BASE",
        "TOKEN_SIGNING_SECRET",
        "WEBHOST_IMAGE",
        "WEBHOST_DEPLOY_URL",
    ]
    .iter()
    .map(|n| (n.to_string(), format!("test-{n}")))
    .collect();
    let provider = HetznerCloud::new(CloudConfig {
        endpoint,
        token: "hcloud-token".into(),
        server_type: "cx42".into(),
        image: "debian-12".into(),
        cell_domain: "cells.example.com".into(),
        bootstrap,
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait_in_place: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
        },
    })
    .unwrap();
    (fake, provider)
}

fn spec() -> CellSpec {
    CellSpec {
        id: CellId::new(),
        name: "hetzner-fsn1-2".into(),
        pool: PoolName::parse("hetzner").unwrap(),
        region: RegionCode::parse("fsn1").unwrap(),
        template: CellTemplate {
            name: "hetzner-cx42".into(),
            pool: PoolName::parse("hetzner").unwrap(),
            plan: PlanName::parse("hobby").unwrap(),
            monthly_cost_cents: 1800,
            capacity: 40,
            kind: Some(ServerKind::Cloud),
            product: Some("cx42".into()),
            stop_gap: true,
        },
    }
}

fn servers(fake: &Fake) -> usize {
    fake.0.lock().unwrap().servers.len()
}

async fn until_ready(provider: &HetznerCloud, spec: &CellSpec) -> String {
    let resource = provider.create(spec).await.expect("create");
    for _ in 0..10 {
        match provider.poll(spec, &resource).await.expect("poll") {
            Progress::Ready { url } => return url,
            Progress::Pending { .. } => {}
            Progress::Failed { reason } => panic!("failed: {reason}"),
        }
    }
    panic!("never ready")
}

#[tokio::test]
async fn a_cell_is_created_polled_until_running_and_destroyed() {
    let (fake, provider) = start(vec![]).await;
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    let first = provider.poll(&spec, &resource).await.expect("poll");
    assert!(matches!(first, Progress::Pending { .. }), "{first:?}");
    let url = until_ready(&provider, &spec).await;
    assert_eq!(url, "https://hetzner-fsn1-2.cells.example.com");

    let created = fake
        .0
        .lock()
        .unwrap()
        .requests
        .iter()
        .find(|(m, p, _)| *m == Method::POST && p.ends_with("/servers"))
        .map(|(_, _, body)| body.clone())
        .expect("a create request");
    assert_eq!(created["labels"]["webhost-cell"], spec.id.to_string());
    assert_eq!(created["location"], "fsn1");
    assert_eq!(created["server_type"], "cx42");
    let user_data = created["user_data"].as_str().expect("user data");
    assert!(user_data.contains(&format!("WEBHOST_CELL_ID={}", spec.id)));
    assert!(user_data.contains("PUBLIC_HOST=hetzner-fsn1-2.cells.example.com"));
    assert!(created["firewalls"][0]["firewall"].is_u64());

    provider.destroy(&spec, &resource).await.expect("destroy");
    assert_eq!(servers(&fake), 0);
    provider
        .destroy(&spec, &resource)
        .await
        .expect("destroying what is gone is fine");
}

#[tokio::test]
async fn creating_again_adopts_the_server_an_earlier_attempt_made() {
    let (fake, provider) = start(vec![]).await;
    let spec = spec();
    let first = provider.create(&spec).await.expect("create");
    let again = provider.create(&spec).await.expect("create after a crash");
    assert_eq!(first.external_id, again.external_id);
    assert_eq!(servers(&fake), 1);
}

#[tokio::test]
async fn a_lost_answer_still_makes_exactly_one_server() {
    // The first POST creates the server but its answer never arrives in
    // time; the retry finds the name taken and adopts the server.
    let (fake, provider) = start(vec![(Method::POST, "/servers", Fault::LoseAnswer)]).await;
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    assert_eq!(servers(&fake), 1);
    assert_eq!(
        resource.external_id, "2",
        "the server the lost request made"
    );
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_to_one_server() {
    let (fake, provider) = start(vec![
        (Method::POST, "/servers", Fault::TooMany { retry_after: 1 }),
        (Method::POST, "/servers", Fault::Unavailable),
    ])
    .await;
    let spec = spec();
    until_ready(&provider, &spec).await;
    assert_eq!(servers(&fake), 1);
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_as_throttled() {
    let (fake, provider) = start(vec![(
        Method::POST,
        "/servers",
        Fault::TooMany { retry_after: 600 },
    )])
    .await;
    let err = provider.create(&spec()).await.expect_err("throttled");
    assert_eq!(Throttled::in_error(&err), Some(Duration::from_secs(600)));
    assert_eq!(servers(&fake), 0);
}

#[tokio::test]
async fn a_refusal_fails_with_hetzners_reason() {
    let (fake, provider) = start(vec![(Method::POST, "/servers", Fault::Refuse)]).await;
    let err = provider.create(&spec()).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("server_type") && message.contains("422"),
        "{message}"
    );
    assert_eq!(servers(&fake), 0);
}
