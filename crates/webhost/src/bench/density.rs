//! `bench density`: how many hobby tenants one cell carries at nominal load
//! while the service level holds. Every tenant has 5 vehicles, each sending
//! one OsmAnd fix every 10 s, and one dashboard reading the latest
//! positions every 10 s (random phases). The load steps up (250, 500,
//! 1,000, … tenants) until p95 of the fixes' acknowledgement or of the
//! dashboard reads reaches 100 ms (the seed's SLO) or a request fails; the
//! last step that held is the answer, with the CPU and memory it took.
//!
//! The baseline, measured in the same run at the last step that held: the
//! same requests at the same rate against a handler that only answers 200
//! (what the machine, the client and loopback HTTP cost by themselves).
//!
//! CPU and memory are this process's (`/proc/self`): the application *and*
//! the load generator; on PostgreSQL the database server's CPU is not in
//! them (see docs/BENCHMARKS.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use rand::Rng;
use serde_json::json;

use super::{BenchApp, Latencies, Outcome};

/// One fix per device and one dashboard read per tenant per period.
const PERIOD: Duration = Duration::from_secs(10);
const VEHICLES: usize = 5;
/// The seed's SLO, for both measures.
const SLO_MS: f64 = 100.0;

struct Tenant {
    api_key: String,
    devices: Vec<String>,
}

/// Where the load goes: the application, or the trivial baseline.
#[derive(Clone)]
struct Targets {
    osmand: String,
    latest: String,
}

struct Step {
    tenants: usize,
    fixes: Latencies,
    reads: Latencies,
    errors: usize,
    first_error: Option<String>,
    cores: f64,
    rss_mb: f64,
}

impl Step {
    fn held(&self) -> bool {
        self.errors == 0 && self.fixes.ms(0.95) < SLO_MS && self.reads.ms(0.95) < SLO_MS
    }
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; fields count from after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: 11 and 12 after the name. Linux
    // reports them in USER_HZ, 100 on every architecture it runs on here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process in MiB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn add_tenants(app: &BenchApp, tenants: &mut Vec<Tenant>, upto: usize) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let start = tenants.len();
    let created: Vec<anyhow::Result<Tenant>> = futures_util::stream::iter(start..upto)
        .map(|i| {
            let run = &run;
            async move {
                let body = app
                    .call(
                        reqwest::Method::POST,
                        "/api/v1/signup",
                        None,
                        Some(json!({
                            "company": format!("Density {i}"),
                            "email": format!("density-{}-{i}@example.com", &run[..8]),
                            "password": "correct horse battery staple",
                            "plan": "hobby",
                            "country": "DE",
                        })),
                    )
                    .await?;
                let api_key = body["api_key"].as_str().context("api_key")?.to_string();
                let mut devices = Vec::with_capacity(VEHICLES);
                for v in 0..VEHICLES {
                    let device = format!("d{}-{i}-{v}", &run[..8]);
                    app.call(
                        reqwest::Method::POST,
                        "/api/v1/vehicles",
                        Some(&api_key),
                        Some(json!({ "name": format!("Van {v}"), "device_id": device })),
                    )
                    .await?;
                    devices.push(device);
                }
                Ok(Tenant { api_key, devices })
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for tenant in created {
        tenants.push(tenant?);
    }
    Ok(())
}

/// One period and a half of the nominal load from every tenant.
async fn load(app: &BenchApp, tenants: &[Tenant], targets: &Targets, length: Duration) -> Step {
    let fixes = Arc::new(Mutex::new(Latencies::new()));
    let reads = Arc::new(Mutex::new(Latencies::new()));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + length;
    let mut tasks = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let phase =
            Duration::from_millis(rand::thread_rng().gen_range(0..PERIOD.as_millis() as u64));
        let (client, targets) = (app.client.clone(), targets.clone());
        let (fixes, reads, errors) = (fixes.clone(), reads.clone(), errors.clone());
        let (key, devices) = (tenant.api_key.clone(), tenant.devices.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + phase;
            while next < deadline {
                tokio::time::sleep_until(next).await;
                next += PERIOD;
                let fail = |why: String| {
                    let mut e = errors.lock().expect("lock");
                    e.0 += 1;
                    e.1.get_or_insert(why);
                };
                let mut sends = Vec::with_capacity(devices.len());
                for (i, device) in devices.iter().enumerate() {
                    let url = format!(
                        "{}/?id={device}&lat={:.6}&lon={:.6}&timestamp={}&speed=30",
                        targets.osmand,
                        52.5 + i as f64 * 1e-3,
                        13.4 + rand::random::<f64>() * 1e-3,
                        Utc::now().timestamp_millis()
                    );
                    let client = client.clone();
                    sends.push(async move {
                        let t = Instant::now();
                        let answer = client.get(url).send().await;
                        (answer.map(|a| a.status()), t.elapsed())
                    });
                }
                for (answer, took) in futures_util::future::join_all(sends).await {
                    match answer {
                        Ok(status) if status.is_success() => {
                            fixes.lock().expect("lock").record(took)
                        }
                        Ok(status) => fail(format!("fix answered {status}")),
                        Err(err) => fail(format!("fix: {err}")),
                    }
                }
                let t = Instant::now();
                let answer = client.get(&targets.latest).bearer_auth(&key).send().await;
                let took = t.elapsed();
                match answer {
                    Ok(a) if a.status().is_success() => {
                        let _ = a.bytes().await;
                        reads.lock().expect("lock").record(took);
                    }
                    Ok(a) => fail(format!("latest answered {}", a.status())),
                    Err(err) => fail(format!("latest: {err}")),
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let cores = (cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    let (errors, first_error) = std::mem::take(&mut *errors.lock().expect("lock"));
    let take = |l: &Arc<Mutex<Latencies>>| {
        std::mem::replace(&mut *l.lock().expect("lock"), Latencies::new())
    };
    Step {
        tenants: tenants.len(),
        fixes: take(&fixes),
        reads: take(&reads),
        errors,
        first_error,
        cores,
        rss_mb: rss_mb(),
    }
}

pub(super) async fn run(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    let levels: &[usize] = if quick {
        &[10, 20]
    } else {
        &[250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000]
    };
    let length = PERIOD + PERIOD / 2;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench density ({:?}): hobby tenants on one cell, {VEHICLES} vehicles each sending an \
         OsmAnd fix every {}s and one dashboard reading latest positions every {}s; steps of \
         {}s; SLO p95 < {SLO_MS} ms for both; {cores} CPUs",
        app.engine,
        PERIOD.as_secs(),
        PERIOD.as_secs(),
        length.as_secs()
    );
    // All on the hobby cell: room for every step, no spare cell.
    let store = &app.app.store;
    let cell = store.cell_by_name("hetzner-fsn1-1").await?;
    store
        .update_cell(
            cell.id,
            webhost_storage::CellUpdate {
                capacity: Some(1_000_000),
                ..Default::default()
            },
        )
        .await?;
    let mut catalog = store.catalog().await?;
    for pool in &mut catalog.pools {
        pool.spare_slots = 0;
    }
    store.save_catalog(&catalog).await?;

    let targets = Targets {
        osmand: format!("http://{}", app.app.devices.osmand.addr),
        latest: format!("{}/api/v1/positions/latest", app.url),
    };
    let rss_empty = rss_mb();
    let mut tenants = Vec::new();
    let mut held: Option<Step> = None;
    let mut broke: Option<Step> = None;
    println!(
        "  {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8}",
        "tenants", "fix p50", "fix p95", "read p50", "read p95", "errors", "cores", "RSS MiB"
    );
    for &level in levels {
        let setup = Instant::now();
        add_tenants(app, &mut tenants, level).await?;
        let setup = setup.elapsed();
        let step = load(app, &tenants, &targets, length).await;
        println!(
            "  {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>7.2} {:>8.0}   (set-up {:.0}s)",
            step.tenants,
            step.fixes.ms(0.5),
            step.fixes.ms(0.95),
            step.reads.ms(0.5),
            step.reads.ms(0.95),
            step.errors,
            step.cores,
            step.rss_mb,
            setup.as_secs_f64()
        );
        if step.held() {
            held = Some(step);
        } else {
            if let Some(why) = &step.first_error {
                println!("  first error: {why}");
            }
            broke = Some(step);
            break;
        }
    }
    let held = held.context("not even the first step held its SLO")?;

    // The baseline: the same load at the last step that held, against a
    // trivial handler in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        axum::serve(listener, router).await
    });
    let baseline = load(
        app,
        &tenants[..held.tenants],
        &Targets {
            osmand: trivial.clone(),
            latest: format!("{trivial}/latest"),
        },
        length,
    )
    .await;
    server.abort();

    let per_core = held.tenants as f64 / cores as f64;
    let cpu_per_tenant_ms = held.cores * 1000.0 / held.tenants as f64;
    let mem_per_tenant_kb = (held.rss_mb - rss_empty).max(0.0) * 1024.0 / held.tenants as f64;
    println!(
        "  held up to {} tenants ({per_core:.0} per core): {:.2} cores busy, {cpu_per_tenant_ms:.3} \
         ms of CPU per tenant per second, {mem_per_tenant_kb:.1} KiB of memory per tenant",
        held.tenants, held.cores
    );
    match &broke {
        Some(step) => println!(
            "  broke at {} tenants: fix p95 {:.1} ms, read p95 {:.1} ms, {} errors, {:.2} cores busy",
            step.tenants,
            step.fixes.ms(0.95),
            step.reads.ms(0.95),
            step.errors,
            step.cores
        ),
        None => println!("  every step held (raise the levels to find the limit)"),
    }
    println!(
        "  baseline at {} tenants (trivial handler): fix p95 {:.2} ms, read p95 {:.2} ms, {:.2} cores",
        baseline.tenants,
        baseline.fixes.ms(0.95),
        baseline.reads.ms(0.95),
        baseline.cores
    );
    Ok(Outcome {
        bench: "density",
        measure: format!(
            "hobby tenants per core within p95 < {SLO_MS} ms ({} held{})",
            held.tenants,
            broke
                .as_ref()
                .map(|b| format!(", {} broke", b.tenants))
                .unwrap_or_default()
        ),
        webhost: format!(
            "{per_core:.0}/core; fix p95 {:.1} ms, read p95 {:.1} ms",
            held.fixes.ms(0.95),
            held.reads.ms(0.95)
        ),
        baseline: format!(
            "fix p95 {:.2} ms, read p95 {:.2} ms (trivial handler, same load)",
            baseline.fixes.ms(0.95),
            baseline.reads.ms(0.95)
        ),
        ratio: format!(
            "{:.1}× (fix p95 over baseline)",
            held.fixes.ms(0.95) / baseline.fixes.ms(0.95).max(0.001)
        ),
        target: "≥ 2,000 tenants/core".into(),
        met: per_core >= 2_000.0,
    })
}
