//! `kill -9` in the middle of provisioning a cell, then a restart: the job
//! runs again from what was recorded, and exactly one cell results — with
//! the local provider, and with the hetzner provider against a stateful
//! fake of the Hetzner Cloud API. Runs the real `webhost serve` binary on
//! the embedded default (SQLite).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A `webhost serve` process, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Ports {
    http: u16,
    osmand: u16,
    teltonika: u16,
}

impl Ports {
    fn free() -> Self {
        Self {
            http: free_port(),
            osmand: free_port(),
            teltonika: free_port(),
        }
    }

    /// The edge's base URL.
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Serves a provider fake on a free port; answers its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fake serves") });
    url
}

fn start(data: &Path, ports: &Ports) -> Server {
    start_with(data, ports, &[])
}

fn start_with(data: &Path, ports: &Ports, env: &[(&str, String)]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_webhost"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{}", ports.http)])
        .args(["--osmand-listen", &format!("127.0.0.1:{}", ports.osmand)])
        .args([
            "--teltonika-listen",
            &format!("127.0.0.1:{}", ports.teltonika),
        ])
        // Cells take a while to boot, so the kill lands mid-provisioning;
        // a dead worker's job is taken back quickly.
        .env("WEBHOST_LOCAL_PROVISION_DELAY_MS", "3000")
        .env("WEBHOST_JOB_LEASE_SECS", "2")
        .env("WEBHOST_JOB_POLL_MS", "50")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("webhost serve starts");
    Server { child }
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthy(client: &reqwest::Client, base: &str) {
    wait_for("the server to answer", async || {
        let answer = client.get(format!("{base}/api/health")).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
}

fn admin_token(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("secrets.toml")).expect("secrets");
    let secrets: toml::Table = text.parse().expect("toml");
    secrets["webhost_admin_token"]
        .as_str()
        .expect("admin token")
        .to_string()
}

async fn get(client: &reqwest::Client, base: &str, token: &str, path: &str) -> Option<Value> {
    let answer = client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_provisioning_then_restart_makes_exactly_one_cell() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let ports = Ports::free();
    let base = ports.base();
    let client = client();

    let first = start(data, &ports);
    healthy(&client, &base).await;
    let token = admin_token(data);
    let made: Value = client
        .post(format!("{base}/api/admin/cells"))
        .bearer_auth(&token)
        .json(&json!({ "pool": "fly", "region": "sin" }))
        .send()
        .await
        .expect("create cell")
        .json()
        .await
        .expect("json");
    assert_eq!(made["status"], "provisioning", "{made}");
    let id = made["id"].as_str().expect("id").to_string();

    // The provider has made something (recorded), the cell is not up yet.
    wait_for("the provider's resource to be recorded", async || {
        let cell = get(&client, &base, &token, &format!("/api/admin/cells/{id}")).await?;
        (cell["resource"].is_object() && cell["status"] == "provisioning").then_some(())
    })
    .await;
    drop(first); // SIGKILL

    let _second = start(data, &ports);
    healthy(&client, &base).await;
    let cell = wait_for("the cell to turn active", async || {
        let cell = get(&client, &base, &token, &format!("/api/admin/cells/{id}")).await?;
        (cell["status"] == "active").then_some(cell)
    })
    .await;
    assert_eq!(cell["name"], "fly-sin-1");

    let cells = get(
        &client,
        &base,
        &token,
        "/api/admin/cells?pool=fly&region=sin",
    )
    .await
    .expect("cells");
    assert_eq!(cells["data"].as_array().expect("cells").len(), 1, "{cells}");
    // What the local provider made: one database per cell it created.
    let made: Vec<_> = std::fs::read_dir(data.join("cells"))
        .expect("cells dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("fly-sin-") && name.ends_with(".db"))
        .collect();
    assert_eq!(made, vec!["fly-sin-1.db".to_string()]);
    let jobs = get(
        &client,
        &base,
        &token,
        "/api/admin/jobs?kind=provision_cell",
    )
    .await
    .expect("jobs");
    let jobs = jobs["data"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded");
}

/// A stateful fake of the parts of the Hetzner Cloud API the provider uses.
/// Servers stay `initializing` until the test lets them run; their health
/// check (where `WEBHOST_CELL_URL` sends the control plane) answers once
/// they do.
mod hcloud {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    #[derive(Default)]
    pub struct World {
        pub servers: Vec<Value>,
        pub firewalls: Vec<Value>,
        pub server_posts: usize,
        pub deletes: usize,
        pub running: bool,
        /// POST /servers answers 422 with this message.
        pub refuse: Option<String>,
        next: u64,
    }

    pub type Fake = Arc<Mutex<World>>;

    fn authorised(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer fake-hcloud-token") => Ok(()),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "unauthorized", "message": "bad token"}})),
            )),
        }
    }

    type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

    async fn list_servers(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Query(q): Query<Vec<(String, String)>>,
    ) -> Answer {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        let selector = q
            .iter()
            .find(|(k, _)| k == "label_selector")
            .map(|(_, v)| v.clone());
        let servers: Vec<Value> = world
            .servers
            .iter()
            .filter(|s| match &selector {
                Some(sel) => {
                    let (key, value) = sel.split_once("==").expect("key==value selector");
                    s["labels"][key] == value
                }
                None => true,
            })
            .map(|s| with_status(s, world.running))
            .collect();
        Ok(Json(json!({ "servers": servers })))
    }

    fn with_status(server: &Value, running: bool) -> Value {
        let mut server = server.clone();
        server["status"] = json!(if running { "running" } else { "initializing" });
        server
    }

    async fn create_server(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        world.server_posts += 1;
        if let Some(message) = &world.refuse {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {"code": "invalid_input", "message": message}})),
            ));
        }
        assert!(
            body["user_data"]
                .as_str()
                .is_some_and(|u| u.starts_with("#cloud-config")),
            "{body}"
        );
        world.next += 1;
        let id = world.next;
        let server = json!({
            "id": id,
            "name": body["name"],
            "labels": body["labels"],
            "status": "initializing",
        });
        world.servers.push(server.clone());
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "server": server,
                "action": {"id": 1000 + id, "status": "running", "error": null},
            })),
        ))
    }

    async fn one_server(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(id): Path<u64>,
    ) -> Answer {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        world
            .servers
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| Json(json!({ "server": with_status(s, world.running) })))
            .ok_or((
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such server"}})),
            ))
    }

    async fn delete_server(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(id): Path<u64>,
    ) -> Answer {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        let before = world.servers.len();
        world.servers.retain(|s| s["id"] != id);
        if world.servers.len() == before {
            return Err((
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such server"}})),
            ));
        }
        world.deletes += 1;
        Ok(Json(
            json!({"action": {"id": 9000 + id, "status": "running", "error": null}}),
        ))
    }

    async fn action(headers: HeaderMap, Path(id): Path<u64>) -> Answer {
        authorised(&headers)?;
        Ok(Json(
            json!({"action": {"id": id, "status": "success", "error": null}}),
        ))
    }

    async fn firewalls(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Query(q): Query<Vec<(String, String)>>,
    ) -> Answer {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        let name = q.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
        let found: Vec<Value> = world
            .firewalls
            .iter()
            .filter(|f| name.as_ref().is_none_or(|n| f["name"] == n.as_str()))
            .cloned()
            .collect();
        Ok(Json(json!({ "firewalls": found })))
    }

    async fn create_firewall(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        let firewall = json!({"id": 77, "name": body["name"], "rules": body["rules"]});
        world.firewalls.push(firewall.clone());
        Ok((
            StatusCode::CREATED,
            Json(json!({"firewall": firewall, "actions": []})),
        ))
    }

    async fn server_types(headers: HeaderMap) -> Answer {
        authorised(&headers)?;
        Ok(Json(json!({"server_types": [{
            "name": "cx42",
            "prices": [{
                "location": "fsn1",
                "price_hourly": {"net": "0.0300", "gross": "0.0357"},
                "price_monthly": {"net": "18.5000000000", "gross": "22.0150000000"},
            }],
        }]})))
    }

    async fn health(State(fake): State<Fake>) -> StatusCode {
        if fake.lock().unwrap().running {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// Serves the fake; answers its base URL.
    pub async fn start(fake: Fake) -> String {
        let app = Router::new()
            .route("/servers", get(list_servers).post(create_server))
            .route("/servers/{id}", get(one_server).delete(delete_server))
            .route("/actions/{id}", get(action))
            .route("/firewalls", get(firewalls).post(create_firewall))
            .route("/server_types", get(server_types))
            .route("/cell/{name}/api/health", get(health))
            .with_state(fake);
        super::serve(app).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_hetzner_cloud_server_boots_then_restart_adopts_it() {
    let fake = hcloud::Fake::default();
    let hcloud = hcloud::start(fake.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let ports = Ports::free();
    let base = ports.base();
    // Only Hetzner Cloud is configured (no Robot credentials): the hobby
    // pool's cells are cloud servers.
    let env = [
        ("HETZNER_API_TOKEN", "fake-hcloud-token".to_string()),
        ("HCLOUD_ENDPOINT", hcloud.clone()),
        ("WEBHOST_CONTROL_URL", base.clone()),
        ("WEBHOST_CELL_DOMAIN", "cells.example.test".to_string()),
        (
            "WEBHOST_CELL_IMAGE",
            "ghcr.io/example/webhost:1".to_string(),
        ),
        (
            "WEBHOST_DEPLOY_URL",
            "https://example.test/deploy.tar.gz".to_string(),
        ),
        ("WEBHOST_CELL_URL", format!("{hcloud}/cell/{{name}}")),
    ];
    let client = client();

    // First start queues the hobby pool's first cell; the server is made
    // at the fake and boots.
    let first = start_with(data, &ports, &env);
    healthy(&client, &base).await;
    let token = admin_token(data);
    let cell = wait_for("the server to be made and recorded", async || {
        let cells = get(&client, &base, &token, "/api/admin/cells?pool=hetzner").await?;
        let cell = cells["data"].as_array()?.first()?.clone();
        let step = cell["progress"]["step"].as_str().unwrap_or_default();
        (cell["resource"].is_object() && step.contains("creating the server")).then_some(cell)
    })
    .await;
    assert_eq!(cell["status"], "provisioning", "{cell}");
    assert_eq!(cell["template"], "hetzner-cloud-cx42", "{cell}");
    let id = cell["id"].as_str().expect("id").to_string();
    drop(first); // SIGKILL, mid-provisioning

    let _second = start_with(data, &ports, &env);
    healthy(&client, &base).await;
    fake.lock().unwrap().running = true;
    let cell = wait_for("the cell to turn active", async || {
        let cell = get(&client, &base, &token, &format!("/api/admin/cells/{id}")).await?;
        (cell["status"] == "active").then_some(cell)
    })
    .await;
    assert_eq!(cell["url"], format!("{hcloud}/cell/hetzner-fsn1-1"));
    // Hetzner's price list, not the template's figure: €18.50 at 1.08.
    assert_eq!(cell["monthly_cost_cents"], 1998, "{cell}");
    {
        let world = fake.lock().unwrap();
        assert_eq!(world.server_posts, 1, "the restart adopted the server");
        assert_eq!(world.servers.len(), 1);
        assert_eq!(world.firewalls.len(), 1);
    }

    // A refusal (a permanent 4xx) ends the job at once, failed, with
    // Hetzner's words on the cell and the job; nothing is left behind.
    fake.lock().unwrap().refuse = Some("server type cx42 is unavailable in fsn1".into());
    let made: Value = client
        .post(format!("{base}/api/admin/cells"))
        .bearer_auth(&token)
        .json(&json!({ "pool": "hetzner", "region": "fsn1", "kind": "cloud" }))
        .send()
        .await
        .expect("create cell")
        .json()
        .await
        .expect("json");
    let refused = made["id"].as_str().expect("id").to_string();
    let cell = wait_for("the refused cell to fail", async || {
        let cell = get(
            &client,
            &base,
            &token,
            &format!("/api/admin/cells/{refused}"),
        )
        .await?;
        (cell["status"] == "failed").then_some(cell)
    })
    .await;
    let error = cell["last_error"].as_str().expect("last error");
    assert!(error.contains("422"), "{error}");
    assert!(!error.contains("cleaning up failed"), "{error}");
    assert!(error.contains("unavailable in fsn1"), "{error}");
    let jobs = get(
        &client,
        &base,
        &token,
        "/api/admin/jobs?kind=provision_cell&state=failed",
    )
    .await
    .expect("jobs");
    let jobs = jobs["data"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        jobs[0]["attempts"], 1,
        "refused once, not retried: {jobs:?}"
    );
    assert!(
        jobs[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unavailable in fsn1")),
        "{jobs:?}"
    );
    let world = fake.lock().unwrap();
    assert_eq!(world.server_posts, 2);
    assert_eq!(world.servers.len(), 1, "the refused create left nothing");
}

/// A stateful fake of the Fly Machines API and Managed Postgres, as the
/// `fly` provider uses them. Clusters stay `provisioning` until the test
/// lets them be ready; machines start at once.
mod flaps {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    #[derive(Default)]
    pub struct World {
        pub apps: Vec<String>,
        pub clusters: Vec<Value>,
        pub cluster_posts: usize,
        pub db_ready: bool,
        pub secrets: BTreeMap<String, BTreeMap<String, Value>>,
        pub volumes: Vec<(String, Value)>,
        pub machines: Vec<(String, Value)>,
        next: u64,
    }

    pub type Fake = Arc<Mutex<World>>;
    type Failure = (StatusCode, Json<Value>);

    fn authorised(headers: &HeaderMap) -> Result<(), Failure> {
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer fake-fly-token") => Ok(()),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthorized"})),
            )),
        }
    }

    fn next_id(world: &mut World, prefix: &str) -> String {
        world.next += 1;
        format!("{prefix}{}", world.next)
    }

    fn with_status(cluster: &Value, ready: bool) -> Value {
        let mut cluster = cluster.clone();
        if ready {
            cluster["status"] = json!("ready");
            cluster["endpoints"] =
                json!({"primary": {"direct": {"host": "db.flycast", "port": 5432}}});
        }
        cluster
    }

    async fn app(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        if fake.lock().unwrap().apps.contains(&app) {
            Ok(Json(json!({"name": app, "status": "deployed"})))
        } else {
            Err((
                StatusCode::NOT_FOUND,
                Json(json!({"error": "app not found"})),
            ))
        }
    }

    async fn create_app(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Result<StatusCode, Failure> {
        authorised(&headers)?;
        let name = body["app_name"].as_str().expect("app_name").to_string();
        let mut world = fake.lock().unwrap();
        if world.apps.contains(&name) {
            return Err((StatusCode::CONFLICT, Json(json!({"error": "name_taken"}))));
        }
        world.apps.push(name);
        Ok(StatusCode::CREATED)
    }

    async fn clusters(
        State(fake): State<Fake>,
        headers: HeaderMap,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        let data: Vec<Value> = world
            .clusters
            .iter()
            .map(|c| with_status(c, world.db_ready))
            .collect();
        Ok(Json(json!({ "data": data })))
    }

    async fn create_cluster(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        assert_eq!(body["postgis_enabled"], true, "{body}");
        let mut world = fake.lock().unwrap();
        world.cluster_posts += 1;
        let id = next_id(&mut world, "pg");
        let cluster = json!({"id": id, "name": body["name"], "status": "provisioning"});
        world.clusters.push(cluster.clone());
        Ok(Json(json!({ "data": cluster })))
    }

    async fn cluster(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        world
            .clusters
            .iter()
            .find(|c| c["id"] == id.as_str())
            .map(|c| Json(json!({ "data": with_status(c, world.db_ready) })))
            .ok_or((StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))))
    }

    async fn credentials(headers: HeaderMap) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        Ok(Json(
            json!({"data": {"username": "fly-user", "password": "p@ss"}}),
        ))
    }

    async fn set_secrets(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        let values = body["values"].as_object().expect("values").clone();
        world.secrets.entry(app).or_default().extend(values);
        Ok(Json(json!({"secrets": [], "version": 1})))
    }

    async fn volumes(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        let of_app: Vec<Value> = world
            .volumes
            .iter()
            .filter(|(a, _)| *a == app)
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Json(json!(of_app)))
    }

    async fn create_volume(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        let id = next_id(&mut world, "vol_");
        let volume = json!({"id": id, "name": body["name"], "region": body["region"]});
        world.volumes.push((app, volume.clone()));
        Ok(Json(volume))
    }

    async fn machines(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let world = fake.lock().unwrap();
        let of_app: Vec<Value> = world
            .machines
            .iter()
            .filter(|(a, _)| *a == app)
            .map(|(_, m)| m.clone())
            .collect();
        Ok(Json(json!(of_app)))
    }

    async fn create_machine(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Path(app): Path<String>,
        Json(body): Json<Value>,
    ) -> Result<Json<Value>, Failure> {
        authorised(&headers)?;
        let mut world = fake.lock().unwrap();
        assert!(
            world
                .secrets
                .get(&app)
                .is_some_and(|s| s.contains_key("DATABASE_URL")),
            "the machine boots with its database"
        );
        let id = next_id(&mut world, "m");
        let machine = json!({
            "id": id,
            "name": body["name"],
            "state": "started",
            "region": body["region"],
            "config": {"metadata": body["config"]["metadata"]},
        });
        world.machines.push((app, machine.clone()));
        Ok(Json(machine))
    }

    async fn health(State(fake): State<Fake>) -> StatusCode {
        if fake.lock().unwrap().machines.is_empty() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    /// Serves the fake; answers its base URL (the provider adds `/v1`).
    pub async fn start(fake: Fake) -> String {
        let app = Router::new()
            .route("/v1/apps", post(create_app))
            .route("/v1/apps/{app}", get(app))
            .route("/v1/apps/{app}/secrets", post(set_secrets))
            .route("/v1/apps/{app}/volumes", get(volumes).post(create_volume))
            .route(
                "/v1/apps/{app}/machines",
                get(machines).post(create_machine),
            )
            .route("/v1/postgres", get(clusters).post(create_cluster))
            .route("/v1/postgres/{id}", get(cluster))
            .route(
                "/v1/postgres/{id}/users/fly-user/credentials",
                get(credentials),
            )
            .route("/cell/{name}/api/health", get(health))
            .with_state(fake);
        super::serve(app).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_fly_cells_database_is_made_then_restart_finishes_it() {
    let fake = flaps::Fake::default();
    let flaps = flaps::start(fake.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let ports = Ports::free();
    let base = ports.base();
    let env = [
        ("FLY_API_TOKEN", "fake-fly-token".to_string()),
        ("FLY_ORG", "acme".to_string()),
        ("FLY_FLAPS_BASE_URL", flaps.clone()),
        ("WEBHOST_FLY_POSTGRES_PLAN", "basic".to_string()),
        ("WEBHOST_CONTROL_URL", base.clone()),
        (
            "WEBHOST_CELL_IMAGE",
            "ghcr.io/example/webhost:1".to_string(),
        ),
        ("WEBHOST_CELL_URL", format!("{flaps}/cell/{{name}}")),
    ];
    let client = client();

    // First start queues the paid pool's first cell: the app is made and
    // its database cluster asked for.
    let first = start_with(data, &ports, &env);
    healthy(&client, &base).await;
    let token = admin_token(data);
    let cell = wait_for("the database to be under way", async || {
        let cells = get(&client, &base, &token, "/api/admin/cells?pool=fly").await?;
        let cell = cells["data"].as_array()?.first()?.clone();
        let step = cell["progress"]["step"].as_str().unwrap_or_default();
        (step == "creating the database").then_some(cell)
    })
    .await;
    assert_eq!(cell["status"], "provisioning", "{cell}");
    let id = cell["id"].as_str().expect("id").to_string();
    drop(first); // SIGKILL, while the cluster is being made

    let _second = start_with(data, &ports, &env);
    healthy(&client, &base).await;
    fake.lock().unwrap().db_ready = true;
    let cell = wait_for("the cell to turn active", async || {
        let cell = get(&client, &base, &token, &format!("/api/admin/cells/{id}")).await?;
        (cell["status"] == "active").then_some(cell)
    })
    .await;
    assert_eq!(cell["url"], format!("{flaps}/cell/fly-iad-1"));
    let world = fake.lock().unwrap();
    assert_eq!(world.apps, vec!["webhost-fly-iad-1".to_string()]);
    assert_eq!(world.cluster_posts, 1, "the restart adopted the cluster");
    assert_eq!(world.clusters.len(), 1);
    assert_eq!(world.volumes.len(), 1);
    assert_eq!(world.machines.len(), 1);
    let secrets = &world.secrets["webhost-fly-iad-1"];
    assert_eq!(
        secrets["DATABASE_URL"],
        "postgres://fly-user:p%40ss@db.flycast:5432/fly-db"
    );
    assert_eq!(secrets["WEBHOST_CELL_ID"], id.as_str());
    assert_eq!(secrets["WEBHOST_CONTROL_URL"], base.as_str());
}

/// Signs a hobby tenant up through the edge; answers its API key and id.
async fn hobby_tenant(client: &reqwest::Client, base: &str) -> (String, String) {
    let signup: Value = client
        .post(format!("{base}/api/v1/signup"))
        .json(&json!({
            "company": "Crash Logistics",
            "email": format!("ops-{}@example.com", uuid::Uuid::new_v4().simple()),
            "password": "correct horse battery staple",
            "plan": "hobby",
            "country": "DE",
        }))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    (
        signup["api_key"].as_str().expect("api key").to_string(),
        signup["tenant"]["id"]
            .as_str()
            .expect("tenant id")
            .to_string(),
    )
}

/// Posts fix `n` until it is acknowledged (held or bounced with a 503 while
/// the tenant moves; the server may be restarting).
async fn post_fix(client: &reqwest::Client, base: &str, key: &str, van: &str, n: i64) {
    static DAY_AGO: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    let day_ago = *DAY_AGO.get_or_init(|| {
        chrono::DateTime::from_timestamp(
            (chrono::Utc::now() - chrono::Duration::days(1)).timestamp(),
            0,
        )
        .expect("time")
    });
    let time =
        (day_ago + chrono::Duration::seconds(n)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    wait_for("a fix to be acknowledged", async || {
        let answer = client
            .post(format!("{base}/api/v1/positions"))
            .bearer_auth(key)
            .json(&json!({ "positions": [{ "vehicle_id": van, "time": time, "lat": 50.1, "lon": 8.6 }] }))
            .send()
            .await
            .ok()?;
        if answer.status().is_success() {
            return Some(());
        }
        assert!(
            answer.status().is_server_error(),
            "a write during a move is held or bounced, never refused: {}",
            answer.status()
        );
        None
    })
    .await;
}

/// `kill -9` right after each step of a move in turn (the test hook aborts
/// the process once the move has persisted its N-th step), then a restart
/// without the hook: the move resumes from what was persisted and ends
/// moved or aborted — every acknowledged position there once, the routing
/// table pointing where the move says, the tenant served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_each_step_of_a_move_then_restart_resumes_or_rolls_back() {
    let client = client();
    let mut steps = 1u32;
    loop {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path();
        let ports = Ports::free();
        let base = ports.base();
        let fast = [("WEBHOST_LOCAL_PROVISION_DELAY_MS", "0".to_string())];
        let mut hooked = fast.to_vec();
        hooked.push(("WEBHOST_TEST_KILL_AFTER_MOVE_STEPS", steps.to_string()));
        let mut first = start_with(data, &ports, &hooked);
        healthy(&client, &base).await;
        let token = admin_token(data);
        let (key, tenant) = hobby_tenant(&client, &base).await;
        let van: Value = client
            .post(format!("{base}/api/v1/vehicles"))
            .bearer_auth(&key)
            .json(&json!({ "name": "Van" }))
            .send()
            .await
            .expect("vehicle")
            .json()
            .await
            .expect("json");
        let van = van["id"].as_str().expect("vehicle id").to_string();
        for n in 0..5 {
            post_fix(&client, &base, &key, &van, n).await;
        }
        let tenant_cell = async |token: &str| -> Option<String> {
            let tenants = get(&client, &base, token, "/api/admin/tenants").await?;
            tenants["data"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == tenant.as_str())?["cell_id"]
                .as_str()
                .map(str::to_owned)
        };
        let source = tenant_cell(&token).await.expect("the tenant's cell");
        let made: Value = client
            .post(format!("{base}/api/admin/cells"))
            .bearer_auth(&token)
            .json(&json!({ "pool": "hetzner", "region": "fsn1" }))
            .send()
            .await
            .expect("create cell")
            .json()
            .await
            .expect("json");
        let target = made["id"].as_str().expect("cell id").to_string();
        wait_for("the second cell", async || {
            let cell = get(
                &client,
                &base,
                &token,
                &format!("/api/admin/cells/{target}"),
            )
            .await?;
            (cell["status"] == "active").then_some(())
        })
        .await;
        let started: Value = client
            .post(format!("{base}/api/admin/tenants/{tenant}/migrate"))
            .bearer_auth(&token)
            .json(&json!({ "cell": target }))
            .send()
            .await
            .expect("migrate")
            .json()
            .await
            .expect("json");
        let id = started["id"].as_str().expect("migration id").to_string();
        // Killed at step N, or through (N is past the last step before the
        // grace period: every step has been tried).
        let killed = wait_for("the kill or the switch", async || {
            if first.child.try_wait().ok().flatten().is_some() {
                return Some(true);
            }
            let m = get(
                &client,
                &base,
                &token,
                &format!("/api/admin/migrations/{id}"),
            )
            .await?;
            (m["state"] == "grace_period").then_some(false)
        })
        .await;
        drop(first);
        let _second = start_with(data, &ports, &fast);
        healthy(&client, &base).await;
        for n in 5..8 {
            post_fix(&client, &base, &key, &van, n).await;
        }
        let ended = wait_for("the move to end", async || {
            let m = get(
                &client,
                &base,
                &token,
                &format!("/api/admin/migrations/{id}"),
            )
            .await?;
            matches!(m["state"].as_str(), Some("grace_period" | "aborted")).then_some(m)
        })
        .await;
        let expected = if ended["state"] == "grace_period" {
            &target
        } else {
            &source
        };
        assert_eq!(
            tenant_cell(&token).await.as_ref(),
            Some(expected),
            "step {steps}: {ended}"
        );
        post_fix(&client, &base, &key, &van, 8).await;
        let from = "2025-01-01T00:00:00Z";
        let to = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let history = get(
            &client,
            &base,
            &key,
            &format!("/api/v1/vehicles/{van}/positions?from={from}&to={to}&limit=1000"),
        )
        .await
        .expect("history");
        assert_eq!(
            history["data"].as_array().map(Vec::len),
            Some(9),
            "step {steps}: every acknowledged position once: {history} {ended}"
        );
        if !killed {
            assert!(steps > 5, "a move has more than {steps} steps");
            break;
        }
        steps += 1;
    }
}
