//! `bench move`: a tenant with a million positions (quick: 20,000) moved
//! live between two cells while its vehicles keep reporting, for each
//! engine pair — SQLite → SQLite (a second local cell), and with
//! `--database-url` also SQLite → PostgreSQL and PostgreSQL → SQLite (a
//! cell of the other engine, started alone and registered by URL).
//!
//! Measured per pair: the move's total time (started → switched), how long
//! the tenant's writes were held, rows copied per second against the target
//! engine's bulk-insert ceiling (the same rows inserted straight into a
//! fresh table, `ingest.rs`'s baseline, in the same run), that every write
//! acknowledged during the move is on the target; then the freeze's p50 and
//! p95 over 20 moves of a small tenant (2,000 positions) back and forth
//! under the same ingest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::ingest::{postgres_baseline, rfc3339, rows, sqlite_baseline, Item, Row, BATCH};
use super::{Account, BenchApp, Engine, Outcome};

/// Moves timed for the freeze percentiles.
const FREEZE_SAMPLES: usize = 20;

struct Pair {
    from: Engine,
    to: Engine,
}

impl Pair {
    fn name(&self) -> String {
        let name = |e: Engine| match e {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        };
        format!("{} → {}", name(self.from), name(self.to))
    }
}

pub(super) async fn run(admin_url: Option<&str>, quick: bool) -> anyhow::Result<Vec<Outcome>> {
    let mut pairs = vec![Pair {
        from: Engine::Sqlite,
        to: Engine::Sqlite,
    }];
    if admin_url.is_some() {
        pairs.push(Pair {
            from: Engine::Sqlite,
            to: Engine::Postgres,
        });
        pairs.push(Pair {
            from: Engine::Postgres,
            to: Engine::Sqlite,
        });
    }
    let mut outcomes = Vec::new();
    for pair in pairs {
        outcomes.extend(one_pair(&pair, admin_url, quick).await?);
    }
    Ok(outcomes)
}

/// The second cell: a local one of the app's engine, or one of the other
/// engine started alone and registered.
struct Target {
    id: String,
    server: Option<crate::app::CellServer>,
    other_database: Option<String>,
}

impl Target {
    async fn cleanup(self, admin_url: Option<&str>) {
        if let Some(server) = self.server {
            server.stop().await;
        }
        if let (Some(name), Some(admin)) = (self.other_database, admin_url) {
            super::drop_database(admin, &name).await;
        }
    }
}

async fn one_pair(
    pair: &Pair,
    admin_url: Option<&str>,
    quick: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let app = BenchApp::boot_tuned(pair.from, admin_url, |o| {
        // Moves back and forth: the source copy goes at once.
        o.move_grace_secs = Some(0);
        o.move_recheck_ms = Some(100);
        o.job_poll_ms = Some(20);
    })
    .await?;
    let result = measure(&app, pair, admin_url, quick).await;
    app.shutdown().await;
    result
}

async fn measure(
    app: &BenchApp,
    pair: &Pair,
    admin_url: Option<&str>,
    quick: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let (vehicle_count, per_vehicle) = if quick { (20, 1_000) } else { (100, 10_000) };
    let account = app.signup().await?;
    let vehicles = app.vehicles(&account, vehicle_count).await?;
    let rows = rows(vehicle_count, per_vehicle);
    let total = rows.len();
    println!(
        "bench move ({}): {total} positions of {vehicle_count} vehicles",
        pair.name()
    );
    let loaded = load(app, &account, &vehicles, &rows).await?;
    println!(
        "  loaded through the API in {:.1} s ({:.0} positions/s)",
        loaded.as_secs_f64(),
        total as f64 / loaded.as_secs_f64()
    );
    let source = app.cell_id(&account).await?;
    let target = target_cell(app, pair, admin_url, &source).await?;

    // The ceiling the copy is compared with: the same rows bulk-inserted
    // into the target's engine.
    let tenant = uuid::Uuid::parse_str(&account.tenant_id)?;
    let vehicle_ids: Vec<uuid::Uuid> = vehicles
        .iter()
        .map(|v| uuid::Uuid::parse_str(&v.id))
        .collect::<Result<_, _>>()?;
    let ceiling = match (pair.to, admin_url) {
        (Engine::Sqlite, _) => sqlite_baseline(&rows, &vehicle_ids, tenant, total).await?,
        (Engine::Postgres, Some(admin)) => {
            let name = format!(
                "webhost_bench_ceiling_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            super::create_database(admin, &name).await?;
            let url = super::with_database(admin, &name);
            let took = postgres_baseline(&url, &rows, &vehicle_ids, tenant, total).await;
            super::drop_database(admin, &name).await;
            took?
        }
        (Engine::Postgres, None) => bail!("PostgreSQL needs --database-url"),
    };
    let ceiling_rate = total as f64 / ceiling.as_secs_f64();

    // The big move, under ingest.
    let ingest = Ingest::start(app, &account, &vehicles[..vehicle_count.min(10)]);
    let started = Instant::now();
    let moved = migrate(app, &account, &target.id).await?;
    let took = started.elapsed();
    let (acknowledged, since) = ingest.stop().await?;
    let freeze_ms = moved["progress"]["freeze_ms"].as_u64();
    let state = moved["state"].as_str().unwrap_or_default().to_string();
    let copy_secs = phase_secs(&moved, "copying");
    let copy_rate = total as f64 / copy_secs.max(1e-6);
    println!(
        "  move: {state} in {:.1} s (copy {:.1} s = {copy_rate:.0} rows/s, writes held {} ms); \
         ceiling {:.0} rows/s; {acknowledged} writes acknowledged during the move",
        took.as_secs_f64(),
        copy_secs,
        freeze_ms.map_or("-".into(), |ms| ms.to_string()),
        ceiling_rate,
    );
    if state != "done" && state != "grace_period" && state != "deleting_source" {
        println!("  the move did not switch: {}", moved["progress"]);
    } else {
        check_live(
            app,
            &account,
            &vehicles[..vehicle_count.min(10)],
            acknowledged,
            since,
        )
        .await?;
    }

    // Freeze percentiles: a small tenant moved back and forth.
    let small = app.signup().await?;
    let small_vehicles = app.vehicles(&small, 4).await?;
    load(app, &small, &small_vehicles, &rows_for(4, 500)).await?;
    let mut freezes = Vec::new();
    // Wherever placement put it, it moves between that cell and the other
    // one of the pair.
    let home = app.cell_id(&small).await?;
    let away = if home == target.id {
        source.clone()
    } else {
        target.id.clone()
    };
    let mut cells = [home, away];
    let ingest = Ingest::start(app, &small, &small_vehicles);
    for _ in 0..FREEZE_SAMPLES {
        let done = migrate(app, &small, &cells[1]).await?;
        if let Some(ms) = done["progress"]["freeze_ms"].as_u64() {
            freezes.push(ms);
        }
        cells.swap(0, 1);
    }
    let (acknowledged_small, since) = ingest.stop().await?;
    check_live(app, &small, &small_vehicles, acknowledged_small, since).await?;
    freezes.sort_unstable();
    let pct = |p: f64| {
        freezes
            .get(((freezes.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let (p50, p95) = (pct(0.5), pct(0.95));
    target.cleanup(admin_url).await;
    println!(
        "  freeze over {} moves of a 2,000-position tenant: p50 {p50} ms, p95 {p95} ms",
        freezes.len()
    );
    Ok(vec![
        Outcome {
            bench: "move",
            measure: format!("{}: total move time, {total} positions", pair.name()),
            webhost: format!("{:.1} s ({state})", took.as_secs_f64()),
            baseline: "30 min (the runbook)".into(),
            ratio: format!("{:.4}", took.as_secs_f64() / 1800.0),
            target: "< 30 s".into(),
            met: took.as_secs_f64() < 30.0 && state != "aborted",
        },
        Outcome {
            bench: "move",
            measure: format!("{}: copy rows/s vs bulk insert", pair.name()),
            webhost: format!("{copy_rate:.0}"),
            baseline: format!("{ceiling_rate:.0}"),
            ratio: format!("{:.2}", copy_rate / ceiling_rate),
            target: "reported".into(),
            met: true,
        },
        Outcome {
            bench: "move",
            measure: format!(
                "{}: write freeze p50/p95 over {} moves",
                pair.name(),
                freezes.len()
            ),
            webhost: format!("{p50} / {p95} ms"),
            baseline: format!(
                "big tenant: {} ms",
                freeze_ms.map_or("-".into(), |m| m.to_string())
            ),
            ratio: "-".into(),
            target: "p95 < 1 s".into(),
            met: p95 < 1_000 && freezes.len() == FREEZE_SAMPLES,
        },
    ])
}

fn rows_for(vehicles: usize, per_vehicle: usize) -> Vec<Row> {
    rows(vehicles, per_vehicle)
}

/// Seconds the move spent in `state` (from its timings).
fn phase_secs(m: &Value, state: &str) -> f64 {
    let Some(timings) = m["progress"]["timings"].as_array() else {
        return 0.0;
    };
    timings
        .iter()
        .filter(|t| t["state"] == state)
        .filter_map(|t| {
            let start: DateTime<Utc> = t["started_at"].as_str()?.parse().ok()?;
            let end: DateTime<Utc> = t["ended_at"].as_str()?.parse().ok()?;
            Some((end - start).num_milliseconds() as f64 / 1000.0)
        })
        .sum()
}

/// Posts `rows` through the API, 1,000 a request, four requests at a time.
async fn load(
    app: &BenchApp,
    account: &Account,
    vehicles: &[super::VehicleRef],
    rows: &[Row],
) -> anyhow::Result<Duration> {
    use futures_util::StreamExt;
    let bodies: Vec<Value> = rows
        .chunks(BATCH)
        .map(|chunk| {
            let items: Vec<Item> = chunk
                .iter()
                .map(|r| Item {
                    vehicle_id: &vehicles[r.vehicle].id,
                    time: rfc3339(r.time),
                    lat: r.lat,
                    lon: r.lon,
                    speed: r.speed,
                    heading: r.heading,
                })
                .collect();
            json!({ "positions": items })
        })
        .collect();
    let started = Instant::now();
    let results: Vec<anyhow::Result<Value>> = futures_util::stream::iter(bodies)
        .map(|body| {
            app.call(
                reqwest::Method::POST,
                "/api/v1/positions",
                Some(&account.api_key),
                Some(body),
            )
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(started.elapsed())
}

async fn target_cell(
    app: &BenchApp,
    pair: &Pair,
    admin_url: Option<&str>,
    source: &str,
) -> anyhow::Result<Target> {
    let cell = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/admin/cells/{source}"),
            None,
        )
        .await?;
    if pair.from == pair.to {
        let created = app
            .admin(
                reqwest::Method::POST,
                "/api/admin/cells",
                Some(json!({ "pool": cell["pool"], "region": cell["region"] })),
            )
            .await?;
        let id = created["id"].as_str().context("cell id")?.to_string();
        wait_active(app, &id).await?;
        return Ok(Target {
            id,
            server: None,
            other_database: None,
        });
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let registered = app
        .admin(
            reqwest::Method::POST,
            "/api/admin/cells",
            Some(json!({
                "pool": cell["pool"],
                "region": cell["region"],
                "url": format!("http://127.0.0.1:{port}"),
            })),
        )
        .await?;
    let id = registered["id"].as_str().context("cell id")?.to_string();
    let (database_url, other) = match pair.to {
        Engine::Sqlite => (
            format!(
                "sqlite://{}",
                app.dir.path().join("other-cell.db").display()
            ),
            None,
        ),
        Engine::Postgres => {
            let admin = admin_url.context("PostgreSQL needs --database-url")?;
            let name = format!(
                "webhost_bench_other_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            super::create_database(admin, &name).await?;
            (super::with_database(admin, &name), Some(name))
        }
    };
    let settings = crate::Settings::load(&crate::Overrides {
        data_dir: Some(app.dir.path().to_path_buf()),
        listen: Some(format!("127.0.0.1:{port}")),
        control_url: Some(app.app.control.url()),
        cell_id: Some(id.clone()),
        database_url: Some(database_url),
        ..crate::Overrides::default()
    })?;
    let server = crate::app::CellServer::start(&settings).await?;
    wait_active(app, &id).await?;
    Ok(Target {
        id,
        server: Some(server),
        other_database: other,
    })
}

async fn wait_active(app: &BenchApp, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let cell = app
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/cells/{id}"),
                None,
            )
            .await?;
        match cell["status"].as_str() {
            Some("active") => return Ok(()),
            Some("failed") => bail!("cell {id} failed: {cell}"),
            _ if Instant::now() > deadline => bail!("cell {id} never turned active: {cell}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Moves the tenant to `cell` and waits until the move has switched (or
/// ended otherwise); answers the move as the operator sees it.
async fn migrate(app: &BenchApp, account: &Account, cell: &str) -> anyhow::Result<Value> {
    let started = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/tenants/{}/migrate", account.tenant_id),
            Some(json!({ "cell": cell })),
        )
        .await?;
    let id = started["id"].as_str().context("migration id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(1_800);
    loop {
        let m = app
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/migrations/{id}"),
                None,
            )
            .await?;
        // With no grace period the source copy is deleted right after the
        // switch: wait for the move to finish so the next may start.
        if m["finished"] == true {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("the move never finished: {m}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Vehicles reporting every 20 ms (one fix each, a second apart, after the
/// loaded history), each fix retried until acknowledged.
struct Ingest {
    /// The first fix's time; fixes follow 10 ms apart.
    start: DateTime<Utc>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Ingest {
    fn start(app: &BenchApp, account: &Account, vehicles: &[super::VehicleRef]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let client = app.client.clone();
        let url = format!("{}/api/v1/positions", app.url);
        let key = account.api_key.clone();
        let ids: Vec<String> = vehicles.iter().map(|v| v.id.clone()).collect();
        let start = Utc::now() - chrono::Duration::minutes(4);
        let task = tokio::spawn({
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            async move {
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let time = rfc3339(start + chrono::Duration::milliseconds(n as i64 * 10));
                    let items: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({ "vehicle_id": id, "time": time, "lat": 40.7, "lon": -74.0 }))
                        .collect();
                    loop {
                        let answer = client
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&json!({ "positions": items }))
                            .send()
                            .await?;
                        if answer.status().is_success() {
                            break;
                        }
                        if !answer.status().is_server_error() {
                            bail!("a write during a move was refused: {}", answer.status());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    acknowledged.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
        });
        Self {
            start,
            stop,
            acknowledged,
            task,
        }
    }

    /// Stops; answers the fixes acknowledged and the first one's time.
    async fn stop(self) -> anyhow::Result<(u64, DateTime<Utc>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await??;
        Ok((self.acknowledged.load(Ordering::Relaxed), self.start))
    }
}

/// Every write acknowledged during the moves is stored, once.
async fn check_live(
    app: &BenchApp,
    account: &Account,
    vehicles: &[super::VehicleRef],
    acknowledged: u64,
    since: DateTime<Utc>,
) -> anyhow::Result<()> {
    let from = rfc3339(since);
    let to = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let mut stored = 0u64;
    for vehicle in vehicles {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/vehicles/{}/positions?from={from}&to={to}&limit=10000",
                vehicle.id
            );
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app
                .call(reqwest::Method::GET, &path, Some(&account.api_key), None)
                .await?;
            stored += page["data"].as_array().map_or(0, |d| d.len() as u64);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
    }
    if stored != acknowledged {
        bail!("{acknowledged} writes acknowledged during the moves, {stored} stored");
    }
    println!("  all {acknowledged} writes acknowledged during the moves are stored, once");
    Ok(())
}
