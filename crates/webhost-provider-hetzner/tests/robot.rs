//! The Hetzner Robot provider against a stateful fake of the Robot web
//! service (orders, servers, the Linux install, resets, cancellations,
//! products) that checks HTTP Basic auth and form bodies, with faults
//! injected: a 429 and Robot's 403 `RATE_LIMIT_EXCEEDED` with
//! `Retry-After`, a 503, an order whose answer is lost, a refused product,
//! a wrong password, a crash between steps. Whatever happens: at most one
//! order per cell, and a 401 is asked once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use webhost_domain::{CellId, CellTemplate, PlanName, PoolName, RegionCode, ServerKind};
use webhost_provider::{CellSpec, Progress, Provider, Refused, Resource, Throttled};
use webhost_provider_hetzner::{HetznerRobot, RemoteRunner, RobotConfig};
use webhost_provider_http::RetryPolicy;

const USER: &str = "#ws+robot";
const PASSWORD: &str = "robot-password";

/// A fault for the next request matching `method` and the path prefix.
#[derive(Clone)]
enum Fault {
    TooMany {
        retry_after: u64,
    },
    /// Robot's spent rate limit.
    RateLimit403 {
        retry_after: u64,
    },
    Unavailable,
    /// Does the work, then answers too late for the client.
    LoseAnswer,
}

/// A form's fields, in order, repeated keys kept.
type Form = Vec<(String, String)>;

#[derive(Clone, Debug)]
struct Order {
    id: String,
    status: &'static str,
    comment: String,
    form: Form,
    polls: u32,
    server: Option<u64>,
}

#[derive(Clone, Debug)]
struct Server {
    number: u64,
    ip: String,
    name: String,
    cancelled: bool,
    install_active: bool,
    reset_since_activation: bool,
    install_checks: u32,
    activations: u32,
    resets: u32,
}

#[derive(Default)]
struct World {
    orders: Vec<Order>,
    servers: Vec<Server>,
    next: u64,
    faults: VecDeque<(Method, &'static str, Fault)>,
    /// Every request: method, path, form fields.
    requests: Vec<(Method, String, Form)>,
    failed_logins: u32,
    /// How many polls of an order before Hetzner delivers.
    polls_to_deliver: u32,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn orders(&self) -> usize {
        self.world().orders.len()
    }

    fn server(&self) -> Server {
        let world = self.world();
        assert_eq!(world.servers.len(), 1, "{:?}", world.servers);
        world.servers[0].clone()
    }

    fn deliver_after(&self, polls: u32) {
        self.world().polls_to_deliver = polls;
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "status": status.as_u16(), "code": code, "message": message } })),
    )
        .into_response()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn fields<'a>(form: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn order_json(order: &Order, world: &World) -> Value {
    let server = order
        .server
        .and_then(|n| world.servers.iter().find(|s| s.number == n));
    json!({
        "id": order.id,
        "date": "2026-12-02T06:00:00+01:00",
        "status": order.status,
        "server_number": server.map(|s| s.number),
        "server_ip": server.map(|s| s.ip.clone()),
        "comment": order.comment,
        "authorized_key": [],
        "host_key": [],
        "product": { "id": field(&order.form, "product_id"), "name": "Dedicated Server" },
        "addons": [],
    })
}

fn server_json(server: &Server) -> Value {
    json!({
        "server_ip": server.ip,
        "server_number": server.number,
        "server_name": server.name,
        "product": "AX52",
        "dc": "FSN1-DC7",
        "status": "ready",
        "cancelled": server.cancelled,
    })
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_string();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let form: Form = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let fault = {
        let mut world = fake.world();
        world
            .requests
            .push((method.clone(), path.clone(), form.clone()));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            world.failed_logins += 1;
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Unauthorized");
        }
        if method == Method::POST {
            let form_encoded = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form_encoded {
                return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "not a form");
            }
        }
        let at = world
            .faults
            .iter()
            .position(|(m, p, _)| *m == method && path.starts_with(p));
        at.and_then(|i| world.faults.remove(i)).map(|(_, _, f)| f)
    };
    let throttled = |status: StatusCode, code: &str, retry_after: u64| {
        let mut response = error(status, code, "slow down");
        response
            .headers_mut()
            .insert("retry-after", retry_after.to_string().parse().unwrap());
        response
    };
    match fault {
        Some(Fault::TooMany { retry_after }) => {
            return throttled(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY", retry_after)
        }
        Some(Fault::RateLimit403 { retry_after }) => {
            return throttled(StatusCode::FORBIDDEN, "RATE_LIMIT_EXCEEDED", retry_after)
        }
        Some(Fault::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "try later")
        }
        Some(Fault::LoseAnswer) => {
            let response = serve(&fake, &method, &path, &form);
            tokio::time::sleep(Duration::from_secs(3)).await;
            return response;
        }
        None => {}
    }
    serve(&fake, &method, &path, &form)
}

fn serve(fake: &Fake, method: &Method, path: &str, form: &[(String, String)]) -> Response {
    let mut world = fake.world();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let server_at = |world: &World, n: &str| {
        world
            .servers
            .iter()
            .position(|s| Some(s.number) == n.parse().ok())
    };
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["order", "server", "transaction"]) => {
            if world.orders.is_empty() {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no transactions");
            }
            let listed: Vec<Value> = world
                .orders
                .iter()
                .map(|o| json!({ "transaction": order_json(o, &world) }))
                .collect();
            Json(listed).into_response()
        }
        (Method::POST, ["order", "server", "transaction"]) => {
            for key in [
                "product_id",
                "location",
                "dist",
                "lang",
                "comment",
                "test",
                "authorized_key[]",
            ] {
                if field(form, key).is_none() {
                    return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", key);
                }
            }
            if !["AX52", "AX102"].contains(&field(form, "product_id").unwrap()) {
                return error(
                    StatusCode::NOT_FOUND,
                    "PRODUCT_NOT_FOUND",
                    "Product with id 'ZZ99' not found",
                );
            }
            if field(form, "location") != Some("FSN1") {
                return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "location");
            }
            world.next += 1;
            let order = Order {
                id: format!("B20261202-{}-{}", 3000000 + world.next, 7 * world.next),
                status: "in process",
                comment: field(form, "comment").unwrap().to_string(),
                form: form.to_vec(),
                polls: 0,
                server: None,
            };
            let answer = order_json(&order, &world);
            world.orders.push(order);
            (StatusCode::CREATED, Json(json!({ "transaction": answer }))).into_response()
        }
        (Method::GET, ["order", "server", "transaction", id]) => {
            let Some(at) = world.orders.iter().position(|o| o.id == *id) else {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "transaction not found");
            };
            world.orders[at].polls += 1;
            if world.orders[at].status == "in process"
                && world.orders[at].polls > world.polls_to_deliver
            {
                world.next += 1;
                let number = 2_000_000 + world.next;
                let ip = format!("203.0.113.{}", world.next);
                world.servers.push(Server {
                    number,
                    ip,
                    name: String::new(),
                    cancelled: false,
                    install_active: false,
                    reset_since_activation: false,
                    install_checks: 0,
                    activations: 0,
                    resets: 0,
                });
                world.orders[at].status = "ready";
                world.orders[at].server = Some(number);
            }
            Json(json!({ "transaction": order_json(&world.orders[at], &world) })).into_response()
        }
        (Method::GET, ["order", "server", "product"]) => Json(json!([
            { "product": {
                "id": "AX52", "name": "Dedicated Server AX52",
                "prices": [
                    { "location": "FSN1", "price": { "net": "59.0000", "gross": "70.2100" },
                      "price_setup": { "net": "0.0000", "gross": "0.0000" } },
                    { "location": "HEL1", "price": { "net": "64.0000", "gross": "76.1600" },
                      "price_setup": { "net": "0.0000", "gross": "0.0000" } }
                ] } },
            { "product": { "id": "AX102", "name": "Dedicated Server AX102", "prices": [] } }
        ]))
        .into_response(),
        (Method::GET, ["server"]) => {
            if world.servers.is_empty() {
                return error(StatusCode::NOT_FOUND, "SERVER_NOT_FOUND", "no servers");
            }
            let listed: Vec<Value> = world
                .servers
                .iter()
                .map(|s| json!({ "server": server_json(s) }))
                .collect();
            Json(listed).into_response()
        }
        (Method::GET, ["server", n]) => match server_at(&world, n) {
            Some(at) => Json(json!({ "server": server_json(&world.servers[at]) })).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "SERVER_NOT_FOUND",
                "server not found",
            ),
        },
        (Method::POST, ["server", n]) => {
            let Some(at) = server_at(&world, n) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "SERVER_NOT_FOUND",
                    "server not found",
                );
            };
            let Some(name) = field(form, "server_name") else {
                return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "server_name");
            };
            world.servers[at].name = name.to_string();
            Json(json!({ "server": server_json(&world.servers[at]) })).into_response()
        }
        (Method::POST, ["boot", n, "linux"]) => {
            let Some(at) = server_at(&world, n) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "SERVER_NOT_FOUND",
                    "server not found",
                );
            };
            if field(form, "dist").is_none() || fields(form, "authorized_key[]").is_empty() {
                return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "dist");
            }
            let server = &mut world.servers[at];
            if server.install_active {
                return error(
                    StatusCode::CONFLICT,
                    "BOOT_ALREADY_ENABLED",
                    "already active",
                );
            }
            server.install_active = true;
            server.reset_since_activation = false;
            server.install_checks = 0;
            server.activations += 1;
            Json(json!({ "linux": { "server_number": server.number, "active": true, "password": null } }))
                .into_response()
        }
        (Method::GET, ["boot", n, "linux"]) => {
            let Some(at) = server_at(&world, n) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "SERVER_NOT_FOUND",
                    "server not found",
                );
            };
            let server = &mut world.servers[at];
            // The install runs once the server was reset into it, and is
            // done by the second look.
            if server.install_active && server.reset_since_activation {
                server.install_checks += 1;
                if server.install_checks >= 2 {
                    server.install_active = false;
                }
            }
            Json(json!({ "linux": { "server_number": server.number, "active": server.install_active } }))
                .into_response()
        }
        (Method::POST, ["reset", n]) => {
            let Some(at) = server_at(&world, n) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "SERVER_NOT_FOUND",
                    "server not found",
                );
            };
            if field(form, "type") != Some("hw") {
                return error(StatusCode::BAD_REQUEST, "INVALID_INPUT", "type");
            }
            let server = &mut world.servers[at];
            server.resets += 1;
            server.reset_since_activation = true;
            Json(json!({ "reset": { "server_number": server.number, "type": "hw" } }))
                .into_response()
        }
        (Method::GET, ["server", n, "cancellation"]) => match server_at(&world, n) {
            Some(at) => Json(json!({ "cancellation": {
                "server_number": world.servers[at].number,
                "cancelled": world.servers[at].cancelled,
            } }))
            .into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "SERVER_NOT_FOUND",
                "server not found",
            ),
        },
        (Method::POST, ["server", n, "cancellation"]) => {
            let Some(at) = server_at(&world, n) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "SERVER_NOT_FOUND",
                    "server not found",
                );
            };
            if field(form, "cancellation_date") != Some("now") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    "cancellation_date",
                );
            }
            if world.servers[at].cancelled {
                return error(StatusCode::CONFLICT, "CONFLICT", "already cancelled");
            }
            world.servers[at].cancelled = true;
            Json(json!({ "cancellation": { "cancelled": true } })).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such route in the fake",
        ),
    }
}

/// Records each bootstrap; fails the first `fail` of them.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, Form)>>,
    fail: Mutex<u32>,
}

#[async_trait]
impl RemoteRunner for Recorder {
    async fn run_bootstrap(&self, host: &str, env: &[(String, String)]) -> anyhow::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push((host.to_string(), env.to_vec()));
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            anyhow::bail!("ssh: connect to host {host} port 22: Connection refused");
        }
        Ok(())
    }
}

impl Recorder {
    fn runs(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

struct Setup {
    fake: Fake,
    endpoint: String,
    runner: Arc<Recorder>,
}

impl Setup {
    async fn start(faults: Vec<(Method, &'static str, Fault)>) -> Self {
        let fake = Fake::default();
        fake.world().faults = faults.into();
        fake.world().polls_to_deliver = 1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            fake,
            endpoint,
            runner: Arc::new(Recorder::default()),
        }
    }

    fn config(&self, password: &str) -> RobotConfig {
        RobotConfig {
            endpoint: self.endpoint.clone(),
            user: USER.into(),
            password: password.into(),
            product: "AX52".into(),
            dist: "Debian 12 base".into(),
            lang: "en".into(),
            authorized_keys: vec![
                "15:28:b0:03:95:f0:77:b3:10:56:15:6b:77:22:a5:bb".into(),
                "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99".into(),
            ],
            cell_domain: "cells.example.com".into(),
            bootstrap: vec![
                (
                    "WEBHOST_CONTROL_URL".into(),
                    "https://control.example.com".into(),
                ),
                ("SECRET_KEY_BASE".into(), "it's secret".into()),
            ],
            test_orders: true,
            usd_per_eur: 1.1,
            retry: RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_wait_in_place: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
            },
            runner: self.runner.clone(),
        }
    }

    /// A provider (a new one is what a restarted control plane has).
    fn provider(&self) -> HetznerRobot {
        HetznerRobot::new(self.config(PASSWORD)).unwrap()
    }
}

fn spec() -> CellSpec {
    CellSpec {
        id: CellId::new(),
        name: "hetzner-fsn1-7".into(),
        pool: PoolName::parse("hetzner").unwrap(),
        region: RegionCode::parse("fsn1").unwrap(),
        template: CellTemplate {
            name: "hetzner-ax52".into(),
            pool: PoolName::parse("hetzner").unwrap(),
            plan: PlanName::parse("hobby").unwrap(),
            monthly_cost_cents: 7000,
            capacity: 400,
            kind: Some(ServerKind::Dedicated),
            product: Some("AX52".into()),
            stop_gap: false,
        },
    }
}

/// Polls until ready, returning the URL and the steps seen on the way.
async fn until_ready(
    provider: &HetznerRobot,
    spec: &CellSpec,
    resource: &Resource,
) -> (String, Vec<String>) {
    let mut steps = Vec::new();
    for _ in 0..20 {
        match provider.poll(spec, resource).await.expect("poll") {
            Progress::Ready { url } => return (url, steps),
            Progress::Pending { step, .. } => steps.push(step),
            Progress::Failed { reason } => panic!("failed: {reason}"),
        }
    }
    panic!("never ready; saw {steps:?}")
}

#[tokio::test]
async fn a_server_is_ordered_installed_bootstrapped_and_cancelled() {
    let setup = Setup::start(vec![]).await;
    let provider = setup.provider();
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    assert_eq!(resource.detail["kind"], "dedicated");
    assert_eq!(resource.detail["transaction"], resource.external_id);

    // The order, as a form with every field Robot needs.
    let order = setup.fake.world().orders[0].clone();
    assert_eq!(order.id, resource.external_id);
    assert_eq!(field(&order.form, "product_id"), Some("AX52"));
    assert_eq!(field(&order.form, "location"), Some("FSN1"));
    assert_eq!(field(&order.form, "dist"), Some("Debian 12 base"));
    assert_eq!(field(&order.form, "lang"), Some("en"));
    assert_eq!(field(&order.form, "test"), Some("true"));
    let comment = format!("webhost-cell {}", spec.id);
    assert_eq!(field(&order.form, "comment"), Some(comment.as_str()));
    assert_eq!(fields(&order.form, "authorized_key[]").len(), 2);

    // Creating again (a retry) finds the order.
    let again = provider.create(&spec).await.expect("create again");
    assert_eq!(again, resource);
    assert_eq!(setup.fake.orders(), 1);

    setup.fake.deliver_after(2);
    let (url, steps) = until_ready(&provider, &spec, &resource).await;
    assert_eq!(url, "https://hetzner-fsn1-7.cells.example.com");
    assert_eq!(
        steps,
        [
            "Hetzner is preparing the server",
            "Hetzner is preparing the server",
            "installing the OS",
            "installing the OS",
        ]
    );

    let server = setup.fake.server();
    assert_eq!(server.name, "hetzner-fsn1-7");
    assert_eq!((server.activations, server.resets), (1, 1));
    assert!(!server.install_active);
    let install = setup
        .fake
        .world()
        .requests
        .iter()
        .find(|(m, p, _)| *m == Method::POST && p.ends_with("/linux"))
        .map(|(_, _, form)| form.clone())
        .expect("the install was activated");
    assert_eq!(field(&install, "dist"), Some("Debian 12 base"));
    assert_eq!(fields(&install, "authorized_key[]").len(), 2);

    // The bootstrap ran once, on the server's address, with the cell's values.
    let calls = setup.runner.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (host, env) = &calls[0];
    assert_eq!(*host, server.ip);
    let value = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(value("WEBHOST_CELL_ID"), Some(spec.id.to_string()));
    assert_eq!(
        value("PUBLIC_HOST").as_deref(),
        Some("hetzner-fsn1-7.cells.example.com")
    );
    assert_eq!(value("PRIMARY_REGION").as_deref(), Some("fsn1"));
    assert_eq!(value("SECRET_KEY_BASE").as_deref(), Some("it's secret"));

    // Ready stays ready without doing anything again.
    let progress = provider.poll(&spec, &resource).await.expect("poll");
    assert!(matches!(progress, Progress::Ready { .. }), "{progress:?}");
    assert_eq!(setup.runner.runs(), 1);

    provider.destroy(&spec, &resource).await.expect("destroy");
    assert!(setup.fake.server().cancelled);
    provider
        .destroy(&spec, &resource)
        .await
        .expect("destroying what is cancelled is fine");
    assert_eq!(setup.fake.world().failed_logins, 0);
}

#[tokio::test]
async fn rate_limits_and_unavailability_are_retried_to_one_order() {
    let setup = Setup::start(vec![
        (
            Method::POST,
            "/order/server/transaction",
            Fault::TooMany { retry_after: 1 },
        ),
        (
            Method::GET,
            "/order/server/transaction/",
            Fault::RateLimit403 { retry_after: 1 },
        ),
        (Method::POST, "/boot/", Fault::Unavailable),
        (
            Method::POST,
            "/order/server/transaction",
            Fault::Unavailable,
        ),
    ])
    .await;
    let provider = setup.provider();
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    until_ready(&provider, &spec, &resource).await;
    assert_eq!(setup.fake.orders(), 1);
    assert_eq!(setup.fake.server().activations, 1);
    assert!(setup.fake.world().faults.is_empty(), "every fault was met");
}

#[tokio::test]
async fn a_long_rate_limit_is_handed_back_as_throttled() {
    let setup = Setup::start(vec![(
        Method::GET,
        "/order/server/transaction",
        Fault::RateLimit403 { retry_after: 600 },
    )])
    .await;
    let err = setup
        .provider()
        .create(&spec())
        .await
        .expect_err("throttled");
    assert_eq!(Throttled::in_error(&err), Some(Duration::from_secs(600)));
    assert_eq!(setup.fake.orders(), 0);
}

#[tokio::test]
async fn an_order_whose_answer_is_lost_is_not_placed_twice() {
    // Robot records the order but its answer comes too late; the provider
    // looks at the transactions before ordering again and finds it.
    let setup = Setup::start(vec![(
        Method::POST,
        "/order/server/transaction",
        Fault::LoseAnswer,
    )])
    .await;
    let provider = setup.provider();
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    assert_eq!(setup.fake.orders(), 1);
    assert_eq!(resource.external_id, setup.fake.world().orders[0].id);
    let posts = setup
        .fake
        .world()
        .requests
        .iter()
        .filter(|(m, p, _)| *m == Method::POST && p == "/order/server/transaction")
        .count();
    assert_eq!(posts, 1);
    until_ready(&provider, &spec, &resource).await;
}

#[tokio::test]
async fn an_unknown_product_is_refused_with_robots_words() {
    let setup = Setup::start(vec![]).await;
    let mut spec = spec();
    spec.template.product = Some("ZZ99".into());
    let err = setup.provider().create(&spec).await.expect_err("refused");
    let refused = Refused::in_error(&err).expect("a Refused");
    assert_eq!(refused.status, 404);
    let message = format!("{err:#}");
    assert!(message.contains("PRODUCT_NOT_FOUND"), "{message}");
    assert_eq!(setup.fake.orders(), 0);
}

#[tokio::test]
async fn a_wrong_password_is_refused_after_a_single_login() {
    let setup = Setup::start(vec![]).await;
    let provider = HetznerRobot::new(setup.config("wrong-password")).unwrap();
    let err = provider.create(&spec()).await.expect_err("refused");
    let refused = Refused::in_error(&err).expect("a Refused");
    assert_eq!(refused.status, 401);
    let message = format!("{err:#}");
    assert!(
        message.contains("HETZNER_ROBOT_USER")
            && message.contains("HETZNER_ROBOT_PASSWORD")
            && message.contains("three failed logins"),
        "{message}"
    );
    let world = setup.fake.world();
    assert_eq!(world.failed_logins, 1);
    assert_eq!(world.requests.len(), 1);
    assert!(world.orders.is_empty());
}

#[tokio::test]
async fn a_restart_between_steps_resumes_from_robots_state() {
    let setup = Setup::start(vec![]).await;
    let spec = spec();
    let resource = {
        let provider = setup.provider();
        let resource = provider.create(&spec).await.expect("create");
        // Delivered, the install started, then the process dies.
        loop {
            match provider.poll(&spec, &resource).await.expect("poll") {
                Progress::Pending { step, .. } if step == "installing the OS" => break,
                Progress::Pending { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        resource
    };
    assert_eq!(setup.fake.server().name, "hetzner-fsn1-7 installing");

    // A new provider, and the job's create is run again.
    let provider = setup.provider();
    let again = provider.create(&spec).await.expect("create after restart");
    assert_eq!(again, resource);
    // The first bootstrap dies half-way; the next poll runs it again.
    *setup.runner.fail.lock().unwrap() = 1;
    let mut errors = 0;
    let url = loop {
        match provider.poll(&spec, &again).await {
            Ok(Progress::Ready { url }) => break url,
            Ok(Progress::Pending { .. }) => {}
            Ok(failed) => panic!("{failed:?}"),
            Err(err) => {
                errors += 1;
                assert!(format!("{err:#}").contains("Connection refused"), "{err:#}");
                assert!(errors < 3, "{err:#}");
            }
        }
    };
    assert_eq!(url, "https://hetzner-fsn1-7.cells.example.com");
    assert_eq!(errors, 1);
    assert_eq!(setup.fake.orders(), 1);
    let server = setup.fake.server();
    assert_eq!((server.activations, server.resets), (1, 1));
    assert_eq!(server.name, "hetzner-fsn1-7");
    assert_eq!(setup.runner.runs(), 2);
}

#[tokio::test]
async fn a_restart_before_the_server_is_named_starts_the_install_once_more() {
    // The rename after the reset fails for good this time: the next poll
    // activates (already active: fine) and resets again, then names it.
    let setup = Setup::start(vec![
        (Method::POST, "/server/", Fault::Unavailable),
        (Method::POST, "/server/", Fault::Unavailable),
        (Method::POST, "/server/", Fault::Unavailable),
    ])
    .await;
    let provider = setup.provider();
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    let mut failed = 0;
    let url = loop {
        match provider.poll(&spec, &resource).await {
            Ok(Progress::Ready { url }) => break url,
            Ok(Progress::Pending { .. }) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => {
                failed += 1;
                assert!(failed < 3);
            }
        }
    };
    assert_eq!(failed, 1);
    assert_eq!(url, "https://hetzner-fsn1-7.cells.example.com");
    let server = setup.fake.server();
    assert_eq!((server.activations, server.resets), (1, 2));
    assert_eq!(setup.runner.runs(), 1);
}

#[tokio::test]
async fn an_order_in_process_cannot_be_cancelled_yet() {
    let setup = Setup::start(vec![]).await;
    setup.fake.deliver_after(u32::MAX);
    let provider = setup.provider();
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    let err = provider
        .destroy(&spec, &resource)
        .await
        .expect_err("not yet");
    assert!(format!("{err:#}").contains("cannot cancel an order in process"));
    assert!(
        Throttled::in_error(&err).is_some(),
        "waited for, not failed"
    );
    assert!(Refused::in_error(&err).is_none());

    setup.fake.deliver_after(0);
    provider.destroy(&spec, &resource).await.expect("destroy");
    assert!(setup.fake.server().cancelled);
}

#[tokio::test]
async fn destroying_a_cell_robot_never_heard_of_is_fine() {
    let setup = Setup::start(vec![]).await;
    let resource = Resource {
        provider: webhost_domain::ProviderKind::Hetzner,
        external_id: "B20261202-0-0".into(),
        detail: json!({ "kind": "dedicated", "transaction": "B20261202-0-0" }),
    };
    setup
        .provider()
        .destroy(&spec(), &resource)
        .await
        .expect("nothing to destroy");
}

#[tokio::test]
async fn the_cost_comes_from_robots_product_list() {
    let setup = Setup::start(vec![]).await;
    let provider = setup.provider();
    let mut spec = spec();
    // 59.00 EUR × 1.1
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 6490);
    spec.region = RegionCode::parse("hel1").unwrap();
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 7040);
    // Not offered there, or not listed at all: the template's figure.
    spec.template.product = Some("AX102".into());
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 7000);
    spec.template.product = Some("ZZ99".into());
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 7000);
    // No product in the template: the configured default (AX52).
    spec.template.product = None;
    spec.region = RegionCode::parse("fsn1").unwrap();
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 6490);
}
