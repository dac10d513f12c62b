//! `kill -9` in the middle of provisioning a cell, then a restart: the job
//! runs again from what was recorded, and exactly one cell results. Runs
//! the real `webhost serve` binary on the embedded default (SQLite).

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

fn start(data: &Path, ports: &Ports) -> Server {
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
    let ports = Ports {
        http: free_port(),
        osmand: free_port(),
        teltonika: free_port(),
    };
    let base = format!("http://127.0.0.1:{}", ports.http);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

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
