//! A stateful fake of the Hetzner Cloud API (servers, actions, firewalls,
//! label selectors, server types with prices) with faults to inject, and
//! the provider and cell spec the tests use. Shared by `tests/cloud.rs`
//! and `tests/contract.rs` (which puts Prism's tee in front of it).

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use webhost_domain::{CellId, CellTemplate, PlanName, PoolName, RegionCode, ServerKind};
use webhost_provider::{CellSpec, Progress, Provider};
use webhost_provider_hetzner::{CloudConfig, HetznerCloud};
use webhost_provider_http::RetryPolicy;

/// A fault for the next request matching `method` and `path`.
#[derive(Clone)]
pub enum Fault {
    TooMany {
        retry_after: u64,
    },
    Unavailable,
    /// Does the work, then answers too late for the client.
    LoseAnswer,
    Refuse,
}

#[derive(Default)]
pub struct World {
    pub servers: Vec<Value>,
    pub firewalls: Vec<Value>,
    pub next_id: u64,
    pub faults: VecDeque<(Method, &'static str, Fault)>,
    /// Every request: method, path and query, JSON body (`null` if none).
    pub requests: Vec<(Method, String, Value)>,
}

#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<World>>);

/// Monthly net prices (EUR) the fake lists: server type, location, price.
pub const PRICES: [(&str, &str, &str); 3] = [
    ("cx42", "fsn1", "16.4900000000"),
    ("cx42", "nbg1", "16.4900000000"),
    ("ccx33", "fsn1", "47.9900000000"),
];

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
        (Method::GET, ["server_types"]) => {
            let name = query(uri, "name");
            let mut types: Vec<&str> = PRICES.iter().map(|(t, _, _)| *t).collect();
            types.dedup();
            let server_types: Vec<Value> = types
                .into_iter()
                .filter(|t| name.as_deref().is_none_or(|n| n == *t))
                .map(|t| {
                    let prices: Vec<Value> = PRICES
                        .iter()
                        .filter(|(pt, _, _)| *pt == t)
                        .map(|(_, location, net)| {
                            json!({
                                "location": location,
                                "price_monthly": { "net": net, "gross": "0" },
                                "price_hourly": { "net": "0", "gross": "0" },
                            })
                        })
                        .collect();
                    json!({ "name": t, "prices": prices })
                })
                .collect();
            Json(json!({ "server_types": server_types, "meta": {} })).into_response()
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

impl Fake {
    /// Serves the fake on a free local port; its base URL (no `/v1`).
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    pub fn servers(&self) -> usize {
        self.0.lock().unwrap().servers.len()
    }

    /// The body of the first request to `method` a path ending in `path`.
    pub fn body_of(&self, method: Method, path: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .requests
            .iter()
            .find(|(m, p, _)| *m == method && p.split('?').next().unwrap().ends_with(path))
            .map(|(_, _, body)| body.clone())
    }
}

/// The provider's settings for `endpoint` (an API base such as
/// `http://…/v1`): quick retries and a short timeout, so that fault tests
/// run fast.
pub fn config(endpoint: String) -> CloudConfig {
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
    CloudConfig {
        endpoint,
        token: "hcloud-token".into(),
        server_type: "cx22".into(),
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
        usd_per_eur: 1.08,
    }
}

/// A fake with `faults` queued and the provider pointed at it.
pub async fn start(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, HetznerCloud) {
    let fake = Fake::default();
    fake.0.lock().unwrap().faults = faults.into();
    let url = fake.serve().await;
    let provider = HetznerCloud::new(config(format!("{url}/v1"))).unwrap();
    (fake, provider)
}

/// A cloud cell in `fsn1` whose template asks for a `cx42` (the provider's
/// configured default is `cx22`).
pub fn spec() -> CellSpec {
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

/// Creates the cell and polls it until it runs; its URL.
pub async fn until_ready(provider: &HetznerCloud, spec: &CellSpec) -> String {
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
