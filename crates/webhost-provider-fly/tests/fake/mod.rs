//! A stateful fake of the Fly Machines API (apps, secrets, volumes,
//! machines that start over two listings) and of Managed Postgres
//! (clusters that turn `ready` after a few polls), with faults to inject:
//! 429 with `Retry-After`, 503, an answer lost (or turned into a 500) after
//! the thing was made, a capacity refusal, a listing that misses a
//! cluster, a cluster that fails. Shared by `machines.rs` and
//! `contract.rs`.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use webhost_domain::{CellId, CellTemplate, PlanName, PoolName, RegionCode};
use webhost_provider::{CellSpec, Progress, Provider, Resource};
use webhost_provider_fly::{Fly, FlyConfig, FlyPostgres};
use webhost_provider_http::RetryPolicy;

/// Managed Postgres plans the fake knows; any other is a 422.
pub const PLANS: &[&str] = &["basic", "starter", "launch", "scale", "performance"];

#[derive(Clone, Debug)]
pub enum Fault {
    TooMany {
        retry_after: u64,
    },
    Unavailable,
    /// Carried out, but the answer comes after the client stopped waiting.
    LoseAnswer,
    /// Carried out, then answered with a 500 (which does not say whether).
    DoneThen500,
    NoCapacity,
    /// The cluster listing answers as if there were no clusters.
    EmptyListing,
    /// The cluster this POST makes goes to `error` with these words.
    ClusterFails(&'static str),
}

#[derive(Default)]
pub struct App {
    pub secrets: BTreeMap<String, Value>,
    pub volumes: Vec<Value>,
    pub machines: Vec<Value>,
}

pub struct Cluster {
    /// What the API shows (`id`, `name`, `status`, `endpoints`, …).
    pub json: Value,
    /// What was asked for.
    pub request: Value,
    pub polls: u32,
    pub fails: Option<&'static str>,
}

#[derive(Default)]
pub struct World {
    pub apps: BTreeMap<String, App>,
    pub clusters: Vec<Cluster>,
    /// Polls of `GET /postgres/{id}` before a cluster is `ready`.
    pub ready_after: u32,
    pub next_id: u64,
    pub faults: VecDeque<(Method, &'static str, Fault)>,
    /// (method, path with its query, body), `/v1` left off.
    pub requests: Vec<(Method, String, Value)>,
}

#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<World>>);

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn handle(State(fake): State<Fake>, method: Method, uri: Uri, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = uri.path().trim_start_matches("/v1").to_string();
    let fault = {
        let mut world = fake.0.lock().unwrap();
        let logged = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        world.requests.push((method.clone(), logged, body.clone()));
        let at = world
            .faults
            .iter()
            .position(|(m, p, _)| *m == method && path.ends_with(p));
        at.and_then(|i| world.faults.remove(i)).map(|(_, _, f)| f)
    };
    match fault {
        Some(Fault::TooMany { retry_after }) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            response
                .headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return response;
        }
        Some(Fault::Unavailable) => return error(StatusCode::SERVICE_UNAVAILABLE, "try later"),
        Some(Fault::NoCapacity) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient resources available to fulfill request: could not reserve resource for machine",
            )
        }
        Some(Fault::LoseAnswer) => {
            let response = serve(&fake, &method, &path, body);
            tokio::time::sleep(Duration::from_secs(3)).await;
            return response;
        }
        Some(Fault::DoneThen500) => {
            let _ = serve(&fake, &method, &path, body);
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        Some(Fault::EmptyListing) => return Json(json!({ "data": [] })).into_response(),
        Some(Fault::ClusterFails(words)) => {
            let response = serve(&fake, &method, &path, body);
            if let Some(cluster) = fake.0.lock().unwrap().clusters.last_mut() {
                cluster.fails = Some(words);
            }
            return response;
        }
        None => {}
    }
    serve(&fake, &method, &path, body)
}

fn serve(fake: &Fake, method: &Method, path: &str, body: Value) -> Response {
    let mut world = fake.0.lock().unwrap();
    world.next_id += 1;
    let id = format!("{:014x}", world.next_id);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["apps"]) => {
            let name = body["app_name"].as_str().unwrap().to_string();
            if body["org_slug"].as_str().is_none() {
                return error(StatusCode::BAD_REQUEST, "org_slug is required");
            }
            if world.apps.contains_key(&name) {
                return error(StatusCode::CONFLICT, "app name already taken");
            }
            world.apps.insert(name, App::default());
            StatusCode::CREATED.into_response()
        }
        (Method::GET, ["apps", app]) => match world.apps.get(*app) {
            Some(_) => Json(json!({ "name": app, "status": "deployed" })).into_response(),
            None => error(StatusCode::NOT_FOUND, "app not found"),
        },
        (Method::DELETE, ["apps", app]) => match world.apps.remove(*app) {
            Some(_) => StatusCode::ACCEPTED.into_response(),
            None => error(StatusCode::NOT_FOUND, "app not found"),
        },
        (Method::GET, ["postgres"]) => {
            let clusters: Vec<Value> = world.clusters.iter().map(|c| c.json.clone()).collect();
            Json(json!({ "data": clusters })).into_response()
        }
        (Method::POST, ["postgres"]) => {
            let plan = body["plan"].as_str().unwrap_or_default();
            if !PLANS.contains(&plan) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("unknown plan {plan:?}"),
                );
            }
            let name = body["name"].as_str().unwrap_or_default();
            if name.is_empty() || body["org_slug"].as_str().is_none() {
                return error(StatusCode::BAD_REQUEST, "name and org_slug are required");
            }
            if world.clusters.iter().any(|c| c.json["name"] == name) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "name has already been taken",
                );
            }
            let cluster = json!({
                "id": id,
                "name": name,
                "region": body["region"],
                "plan": plan,
                "status": "creating",
                "pg_major_version": body["pg_major_version"],
                "postgis_enabled": body["postgis_enabled"],
                // Filled in once the cluster is ready (and one poll later).
                "endpoints": {
                    "primary": {
                        "direct": { "host": "", "port": 0 },
                        "pooler": { "host": "", "port": 0 },
                    }
                },
            });
            world.clusters.push(Cluster {
                json: cluster.clone(),
                request: body,
                polls: 0,
                fails: None,
            });
            (StatusCode::CREATED, Json(json!({ "data": cluster }))).into_response()
        }
        (Method::GET, ["postgres", cluster]) => {
            let ready_after = world.ready_after;
            let Some(cluster) = world.clusters.iter_mut().find(|c| c.json["id"] == *cluster) else {
                return error(StatusCode::NOT_FOUND, "cluster not found");
            };
            cluster.polls += 1;
            if let Some(words) = cluster.fails {
                cluster.json["status"] = json!("failed");
                cluster.json["error"] = json!(words);
            } else if cluster.polls > ready_after {
                let id = cluster.json["id"].as_str().unwrap().to_string();
                cluster.json["endpoints"] = json!({
                    "primary": {
                        "direct": { "host": format!("direct.{id}.flympg.net"), "port": 5432 },
                        "pooler": { "host": format!("pgbouncer.{id}.flympg.net"), "port": 5432 },
                    }
                });
            } else if cluster.polls == ready_after {
                // Ready a moment before the endpoints are (as Fly's client
                // warns).
                cluster.json["status"] = json!("ready");
            }
            Json(json!({ "data": cluster.json })).into_response()
        }
        (Method::GET, ["postgres", cluster, "users", user, "credentials"]) => {
            let Some(found) = world.clusters.iter().find(|c| c.json["id"] == *cluster) else {
                return error(StatusCode::NOT_FOUND, "cluster not found");
            };
            if *user != "fly-user" || found.json["status"] != "ready" {
                return error(StatusCode::NOT_FOUND, "user not found");
            }
            Json(json!({ "data": { "username": user, "password": password(cluster) } }))
                .into_response()
        }
        (Method::DELETE, ["postgres", cluster]) => {
            let before = world.clusters.len();
            world.clusters.retain(|c| c.json["id"] != *cluster);
            if world.clusters.len() == before {
                return error(StatusCode::NOT_FOUND, "cluster not found");
            }
            Json(json!({ "data": { "id": cluster, "status": "deleting" } })).into_response()
        }
        (method, ["apps", app, rest @ ..]) => {
            let Some(app) = world.apps.get_mut(*app) else {
                return error(StatusCode::NOT_FOUND, "app not found");
            };
            match (method, rest) {
                (Method::POST, ["secrets"]) => {
                    for (k, v) in body["values"].as_object().unwrap() {
                        app.secrets.insert(k.clone(), v.clone());
                    }
                    Json(json!({ "version": 1 })).into_response()
                }
                (Method::GET, ["volumes"]) => Json(json!(app.volumes)).into_response(),
                (Method::POST, ["volumes"]) => {
                    let volume = json!({ "id": format!("vol_{id}"), "name": body["name"], "region": body["region"], "size_gb": body["size_gb"] });
                    app.volumes.push(volume.clone());
                    Json(volume).into_response()
                }
                (Method::DELETE, ["volumes", volume]) => {
                    let Some(at) = app.volumes.iter().position(|v| v["id"] == *volume) else {
                        return error(StatusCode::NOT_FOUND, "volume not found");
                    };
                    if app
                        .machines
                        .iter()
                        .any(|m| m["config"]["mounts"][0]["volume"] == *volume)
                    {
                        return error(
                            StatusCode::PRECONDITION_FAILED,
                            "volume is attached to a machine",
                        );
                    }
                    Json(app.volumes.remove(at)).into_response()
                }
                (Method::GET, ["machines"]) => {
                    // Machines start over two listings.
                    for machine in &mut app.machines {
                        machine["state"] = json!(match machine["state"].as_str().unwrap() {
                            "created" => "starting",
                            "stopped" => "stopped",
                            _ => "started",
                        });
                    }
                    Json(json!(app.machines)).into_response()
                }
                (Method::POST, ["machines"]) => {
                    let machine = json!({
                        "id": id,
                        "name": body["name"],
                        "region": body["region"],
                        "state": "created",
                        "config": body["config"],
                    });
                    app.machines.push(machine.clone());
                    Json(machine).into_response()
                }
                (Method::POST, ["machines", machine, "start"]) => {
                    let Some(machine) = app.machines.iter_mut().find(|m| m["id"] == *machine)
                    else {
                        return error(StatusCode::NOT_FOUND, "machine not found");
                    };
                    machine["state"] = json!("starting");
                    Json(json!({})).into_response()
                }
                (Method::DELETE, ["machines", machine]) => {
                    let Some(at) = app.machines.iter().position(|m| m["id"] == *machine) else {
                        return error(StatusCode::NOT_FOUND, "machine not found");
                    };
                    app.machines.remove(at);
                    Json(json!({ "ok": true })).into_response()
                }
                _ => error(StatusCode::NOT_FOUND, "no such route in the fake"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route in the fake"),
    }
}

/// `fly-user`'s password on a cluster: with characters a URL must escape.
pub fn password(cluster: &str) -> String {
    format!("pw/{cluster}@x:y")
}

/// The fake, listening; its endpoint (the provider adds `/v1`).
pub async fn serve_fake(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, String) {
    let fake = Fake::default();
    {
        let mut world = fake.0.lock().unwrap();
        world.faults = faults.into();
        world.ready_after = 3;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (fake, endpoint)
}

pub fn postgres() -> FlyPostgres {
    FlyPostgres {
        plan: "basic".into(),
        disk_gb: 10,
        pg_major: 16,
    }
}

/// A provider (a new one is a process that starts over) at `endpoint`.
pub fn fly(endpoint: &str, postgres: Option<FlyPostgres>) -> Fly {
    Fly::new(config(endpoint, postgres)).unwrap()
}

/// The tests' provider settings: short timeouts and backoff.
pub fn config(endpoint: &str, postgres: Option<FlyPostgres>) -> FlyConfig {
    let mut secrets = BTreeMap::from([
        ("SECRET_KEY_BASE".into(), "s".repeat(40)),
        (
            "WEBHOST_CONTROL_URL".into(),
            "https://control.example.com".into(),
        ),
    ]);
    if postgres.is_some() {
        // A cell with a cluster gets the cluster's, whatever this says.
        secrets.insert(
            "DATABASE_URL".into(),
            "postgres://configured.example.com/elsewhere".into(),
        );
    }
    FlyConfig {
        endpoint: endpoint.to_string(),
        token: "fly-token".into(),
        org_slug: "webhost".into(),
        app_prefix: "webhost-".into(),
        image: "registry.fly.io/webhost:1".into(),
        volume_gb: 10,
        cpus: 2,
        memory_mb: 2048,
        secrets,
        postgres,
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait_in_place: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
        },
    }
}

/// The fake and a provider without Postgres.
pub async fn start(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, Fly) {
    let (fake, endpoint) = serve_fake(faults).await;
    (fake, fly(&endpoint, None))
}

/// The fake and a provider with a Managed Postgres cluster per cell.
pub async fn start_with_postgres(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, Fly) {
    let (fake, endpoint) = serve_fake(faults).await;
    (fake, fly(&endpoint, Some(postgres())))
}

pub fn spec() -> CellSpec {
    CellSpec {
        id: CellId::new(),
        name: "fly-iad-2".into(),
        pool: PoolName::parse("fly").unwrap(),
        region: RegionCode::parse("iad").unwrap(),
        template: CellTemplate {
            name: "fly-regional".into(),
            pool: PoolName::parse("fly").unwrap(),
            plan: PlanName::parse("starter").unwrap(),
            monthly_cost_cents: 40_000,
            capacity: 100,
            kind: None,
            product: None,
            stop_gap: false,
        },
    }
}

impl Fake {
    /// (apps, volumes, machines) at the fake.
    pub fn counts(&self) -> (usize, usize, usize) {
        let world = self.0.lock().unwrap();
        (
            world.apps.len(),
            world.apps.values().map(|a| a.volumes.len()).sum(),
            world.apps.values().map(|a| a.machines.len()).sum(),
        )
    }

    pub fn clusters(&self) -> usize {
        self.0.lock().unwrap().clusters.len()
    }

    /// Where (in the order they came) the first request with `method`
    /// whose path (query left off) `matches` is.
    pub fn first(&self, method: Method, matches: impl Fn(&str) -> bool) -> Option<usize> {
        let world = self.0.lock().unwrap();
        world
            .requests
            .iter()
            .position(|(m, p, _)| *m == method && matches(p.split('?').next().unwrap_or_default()))
    }

    /// Like [`Self::first`], the last one.
    pub fn last(&self, method: Method, matches: impl Fn(&str) -> bool) -> Option<usize> {
        let world = self.0.lock().unwrap();
        world
            .requests
            .iter()
            .rposition(|(m, p, _)| *m == method && matches(p.split('?').next().unwrap_or_default()))
    }
}

/// `poll` until `Ready`; its URL.
pub async fn poll_until_ready(fly: &Fly, spec: &CellSpec, resource: &Resource) -> String {
    for _ in 0..20 {
        match fly.poll(spec, resource).await.expect("poll") {
            Progress::Ready { url } => return url,
            Progress::Pending { .. } => {}
            Progress::Failed { reason } => panic!("failed: {reason}"),
        }
    }
    panic!("never ready")
}

pub async fn until_ready(fly: &Fly, spec: &CellSpec) -> String {
    let resource = fly.create(spec).await.expect("create");
    poll_until_ready(fly, spec, &resource).await
}
