//! The Fly provider against a stateful fake of the Machines API (apps,
//! secrets, volumes, machines that start over two polls), with faults
//! injected: 429 with `Retry-After`, 503, an answer lost after the machine
//! was made, a capacity refusal. Whatever happens, one app, one volume and
//! one machine per cell.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use webhost_domain::{CellId, CellTemplate, PlanName, PoolName, RegionCode};
use webhost_provider::{CellSpec, Progress, Provider};
use webhost_provider_fly::{Fly, FlyConfig};
use webhost_provider_http::RetryPolicy;

#[derive(Clone)]
enum Fault {
    TooMany { retry_after: u64 },
    Unavailable,
    LoseAnswer,
    NoCapacity,
}

#[derive(Default)]
struct App {
    secrets: BTreeMap<String, Value>,
    volumes: Vec<Value>,
    machines: Vec<Value>,
}

#[derive(Default)]
struct World {
    apps: BTreeMap<String, App>,
    next_id: u64,
    faults: VecDeque<(Method, &'static str, Fault)>,
    requests: Vec<(Method, String, Value)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn handle(State(fake): State<Fake>, method: Method, uri: Uri, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = uri.path().trim_start_matches("/v1").to_string();
    let fault = {
        let mut world = fake.0.lock().unwrap();
        world
            .requests
            .push((method.clone(), path.clone(), body.clone()));
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
                (Method::GET, ["machines"]) => {
                    // Machines start over two listings.
                    for machine in &mut app.machines {
                        machine["state"] = json!(match machine["state"].as_str().unwrap() {
                            "created" => "starting",
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
                _ => error(StatusCode::NOT_FOUND, "no such route in the fake"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route in the fake"),
    }
}

async fn start(faults: Vec<(Method, &'static str, Fault)>) -> (Fake, Fly) {
    let fake = Fake::default();
    fake.0.lock().unwrap().faults = faults.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let fly = Fly::new(FlyConfig {
        endpoint,
        token: "fly-token".into(),
        org_slug: "webhost".into(),
        app_prefix: "webhost-".into(),
        image: "registry.fly.io/webhost:1".into(),
        volume_gb: 10,
        cpus: 2,
        memory_mb: 2048,
        secrets: BTreeMap::from([
            ("SECRET_KEY_BASE".into(), "s".repeat(40)),
            (
                "WEBHOST_CONTROL_URL".into(),
                "https://control.example.com".into(),
            ),
        ]),
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait_in_place: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
        },
    })
    .unwrap();
    (fake, fly)
}

fn spec() -> CellSpec {
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

/// (apps, volumes, machines) at the fake.
fn counts(fake: &Fake) -> (usize, usize, usize) {
    let world = fake.0.lock().unwrap();
    (
        world.apps.len(),
        world.apps.values().map(|a| a.volumes.len()).sum(),
        world.apps.values().map(|a| a.machines.len()).sum(),
    )
}

async fn until_ready(fly: &Fly, spec: &CellSpec) -> String {
    let resource = fly.create(spec).await.expect("create");
    for _ in 0..10 {
        match fly.poll(spec, &resource).await.expect("poll") {
            Progress::Ready { url } => return url,
            Progress::Pending { .. } => {}
            Progress::Failed { reason } => panic!("failed: {reason}"),
        }
    }
    panic!("never ready")
}

#[tokio::test]
async fn a_cell_is_an_app_with_secrets_a_volume_and_a_started_machine() {
    let (fake, fly) = start(vec![]).await;
    let spec = spec();
    let url = until_ready(&fly, &spec).await;
    assert_eq!(url, "https://webhost-fly-iad-2.fly.dev");
    assert_eq!(counts(&fake), (1, 1, 1));
    {
        let world = fake.0.lock().unwrap();
        let app = &world.apps["webhost-fly-iad-2"];
        assert_eq!(app.secrets["WEBHOST_CELL_ID"], spec.id.to_string());
        assert_eq!(app.secrets["DATABASE_URL"], "sqlite:/data/cell.db?mode=rwc");
        assert!(app.secrets.contains_key("SECRET_KEY_BASE"));
        let config = &app.machines[0]["config"];
        assert_eq!(config["metadata"]["webhost-cell"], spec.id.to_string());
        assert_eq!(config["checks"]["health"]["path"], "/api/health");
        assert_eq!(config["mounts"][0]["volume"], app.volumes[0]["id"]);
        assert_eq!(config["services"][0]["concurrency"]["hard_limit"], 250);
        assert_eq!(app.machines[0]["region"], "iad");
    }
    let resource = fly.create(&spec).await.expect("create again");
    assert_eq!(counts(&fake), (1, 1, 1), "a second create adopts it all");
    fly.destroy(&spec, &resource).await.expect("destroy");
    assert_eq!(counts(&fake), (0, 0, 0));
    fly.destroy(&spec, &resource)
        .await
        .expect("destroying what is gone is fine");
}

#[tokio::test]
async fn lost_answers_still_make_one_app_and_one_machine() {
    let (fake, fly) = start(vec![
        (Method::POST, "/apps", Fault::LoseAnswer),
        (Method::POST, "/machines", Fault::LoseAnswer),
    ])
    .await;
    until_ready(&fly, &spec()).await;
    assert_eq!(counts(&fake), (1, 1, 1));
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried() {
    let (fake, fly) = start(vec![
        (Method::POST, "/machines", Fault::TooMany { retry_after: 1 }),
        (Method::POST, "/volumes", Fault::Unavailable),
    ])
    .await;
    until_ready(&fly, &spec()).await;
    assert_eq!(counts(&fake), (1, 1, 1));
}

#[tokio::test]
async fn no_capacity_in_the_region_fails_with_flys_reason_and_no_machine() {
    let (fake, fly) = start(vec![(Method::POST, "/machines", Fault::NoCapacity)]).await;
    let err = fly.create(&spec()).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("insufficient resources"), "{message}");
    let (_, _, machines) = counts(&fake);
    assert_eq!(machines, 0);
}
