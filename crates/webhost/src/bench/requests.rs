//! The request benches: `osmand` (throughput), `latest`, `track` and `live`
//! (latency). Latency benches send one request at a time and interleave
//! WebHost and its baseline, so that noise from other processes lands on
//! both.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{timed, BenchApp, Latencies, Outcome};
use crate::simulate::Route;

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Requests/s of `clients` keep-alive connections each sending one GET at
/// a time from `urls` until none are left; every answer must be a 200.
async fn hammer(
    client: &reqwest::Client,
    urls: Vec<String>,
    clients: usize,
) -> anyhow::Result<f64> {
    let total = urls.len();
    let urls = Arc::new(urls);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, urls, next, errors, first_error) = (
            client.clone(),
            urls.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(url) = urls.get(i) else { break };
                let failure = match client.get(url).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await;
                        match (status.is_success(), body) {
                            (true, Ok(_)) => None,
                            (_, body) => Some(format!(
                                "{status}: {}",
                                body.map(|b| String::from_utf8_lossy(&b).into_owned())
                                    .unwrap_or_default()
                            )),
                        }
                    }
                    Err(err) => Some(err.to_string()),
                };
                if let Some(failure) = failure {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().expect("lock").get_or_insert(failure);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!(
            "{errors} of {total} requests failed; first: {}",
            first_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default()
        );
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Rounds of the throughput comparison.
const ROUNDS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `bench osmand`: single-fix OsmAnd reports per second, against the same
/// client hitting a handler that only answers 200, in this process.
pub(super) async fn osmand(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    let (devices, total, clients): (usize, usize, usize) = if quick {
        (50, 4_000, 32)
    } else {
        (200, 60_000, 64)
    };
    let warmup = clients * 20;
    let account = app.signup().await?;
    let vehicles = app.vehicles(&account, devices).await?;
    println!(
        "bench osmand ({:?}): {total} single-fix reports from {devices} devices, \
         {clients} concurrent keep-alive clients (after {warmup} warm-up)",
        app.engine
    );
    let per_device = (total + warmup).div_ceil(devices) as i64;
    let start_ms = (Utc::now() - chrono::Duration::seconds(per_device + 300)).timestamp() * 1000;
    let query = |j: usize| {
        let (d, k) = (j % devices, (j / devices) as i64);
        format!(
            "/?id={}&lat={:.6}&lon={:.6}&timestamp={}&speed={:.1}&bearing=90",
            vehicles[d].device_id,
            40.7 + k as f64 * 1e-4,
            -74.0 + d as f64 * 1e-3,
            start_ms + k * 1000,
            20.0 + (k % 30) as f64
        )
    };
    let osmand = format!("http://{}", app.app.devices.osmand.addr);
    // Baseline: a trivial axum server on this runtime.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        axum::serve(listener, router).await
    });
    let result = async {
        // Warm both up, then alternate rounds so that noise from other
        // processes lands on both sides; the median round counts.
        let (webhost_client, baseline_client) = (super::client(clients)?, super::client(clients)?);
        let webhost_urls = |range: std::ops::Range<usize>| {
            range
                .map(|j| format!("{osmand}{}", query(j)))
                .collect::<Vec<_>>()
        };
        let baseline_urls = |range: std::ops::Range<usize>| {
            range
                .map(|j| format!("{trivial}{}", query(j)))
                .collect::<Vec<_>>()
        };
        hammer(&webhost_client, webhost_urls(0..warmup), clients).await?;
        hammer(&baseline_client, baseline_urls(0..warmup), clients).await?;
        let per_round = total / ROUNDS;
        let (mut webhost, mut baseline) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let range = warmup + round * per_round..warmup + (round + 1) * per_round;
            let w = hammer(&webhost_client, webhost_urls(range.clone()), clients).await?;
            let b = hammer(&baseline_client, baseline_urls(range), clients).await?;
            println!(
                "  round {}: webhost {w:.0} requests/s, baseline {b:.0} requests/s",
                round + 1
            );
            webhost.push(w);
            baseline.push(b);
        }
        Ok::<_, anyhow::Error>((median(webhost), median(baseline)))
    }
    .await;
    server.abort();
    let (webhost, baseline) = result?;
    println!("  webhost:  {webhost:.0} requests/s (median of {ROUNDS} rounds)");
    println!("  baseline: {baseline:.0} requests/s (axum handler answering 200)");
    Ok(Outcome {
        bench: "osmand",
        measure: format!("requests/s ({total} fixes, {clients} clients)"),
        webhost: format!("{webhost:.0}/s"),
        baseline: format!("{baseline:.0}/s (trivial handler)"),
        ratio: format!("{:.2}", webhost / baseline),
        target: "≥ 10,000/s".into(),
        met: webhost >= 10_000.0,
    })
}

/// A GET through the edge; the body of a 2xx answer.
async fn get_ok(app: &BenchApp, url: &str, key: Option<&str>) -> anyhow::Result<impl AsRef<[u8]>> {
    let mut request = app.client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// `bench latest`: `GET /api/v1/positions/latest` for a 500-vehicle fleet,
/// against `GET /api/health`.
pub(super) async fn latest(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    let (fleet, requests, warmup) = if quick {
        (500, 300, 30)
    } else {
        (500, 3_000, 200)
    };
    let account = app.signup().await?;
    let vehicles = app.vehicles(&account, fleet).await?;
    let now = Utc::now() - chrono::Duration::seconds(30);
    let batch: Vec<Value> = vehicles
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({ "vehicle_id": v.id, "time": rfc3339(now), "lat": 40.7 + i as f64 * 1e-3,
                    "lon": -74.0, "speed": 42.0, "heading": 90.0 })
        })
        .collect();
    app.call(
        reqwest::Method::POST,
        "/api/v1/positions",
        Some(&account.api_key),
        Some(Value::Array(batch)),
    )
    .await?;
    println!(
        "bench latest ({:?}): {fleet} vehicles, {requests} sequential requests each \
         (after {warmup} warm-up), interleaved with the baseline",
        app.engine
    );
    let latest_url = format!("{}/api/v1/positions/latest", app.url);
    let health_url = format!("{}/api/health", app.url);
    let first = get_ok(app, &latest_url, Some(&account.api_key)).await?;
    let body: Value = serde_json::from_slice(first.as_ref())?;
    let count = body["data"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        count == fleet,
        "latest returned {count} positions, not {fleet}"
    );

    let mut webhost = Latencies::new();
    let mut baseline = Latencies::new();
    for i in 0..warmup + requests {
        let (answer, elapsed) = timed(get_ok(app, &latest_url, Some(&account.api_key))).await;
        answer?;
        let (health, health_elapsed) = timed(get_ok(app, &health_url, None)).await;
        health?;
        if i >= warmup {
            webhost.record(elapsed);
            baseline.record(health_elapsed);
        }
    }
    println!("{}", Latencies::header());
    println!(
        "{}",
        webhost.line(&format!(
            "GET /api/v1/positions/latest ({} B)",
            first.as_ref().len()
        ))
    );
    println!("{}", baseline.line("baseline GET /api/health"));
    let p95 = webhost.ms(0.95);
    Ok(Outcome {
        bench: "latest",
        measure: format!("p50 / p95 / p99 ms ({fleet} vehicles)"),
        webhost: format!(
            "{:.2} / {p95:.2} / {:.2}",
            webhost.ms(0.5),
            webhost.ms(0.99)
        ),
        baseline: format!(
            "{:.2} / {:.2} / {:.2} (/api/health)",
            baseline.ms(0.5),
            baseline.ms(0.95),
            baseline.ms(0.99)
        ),
        ratio: format!("{:.1}× at p95", p95 / baseline.ms(0.95)),
        target: "p95 < 2 ms".into(),
        met: p95 < 2.0,
    })
}

/// `bench track`: one day of one vehicle (8,640 fixes, one every 10 s) in
/// one request, against the same query on the cell's store.
pub(super) async fn track(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    const POINTS: usize = 8_640;
    let (requests, warmup) = if quick { (40, 5) } else { (300, 20) };
    let account = app.signup().await?;
    let vehicle = app
        .vehicles(&account, 1)
        .await?
        .pop()
        .context("a vehicle")?;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("in range");
    let from = now - chrono::Duration::days(1) - chrono::Duration::minutes(1);
    let to = from + chrono::Duration::days(1);
    let mut route = Route::for_vehicle(5, 0, 40.71, -74.0);
    let fixes: Vec<Value> = (0..POINTS)
        .map(|i| {
            let s = route.advance(10.0);
            json!({
                "vehicle_id": vehicle.id,
                "time": rfc3339(from + chrono::Duration::seconds(10 * i as i64)),
                "lat": s.lat, "lon": s.lon,
                "speed": (s.speed * 10.0).round() / 10.0, "heading": s.heading.round(),
            })
        })
        .collect();
    let stored = app
        .call(
            reqwest::Method::POST,
            "/api/v1/positions",
            Some(&account.api_key),
            Some(Value::Array(fixes)),
        )
        .await?;
    anyhow::ensure!(stored["accepted"] == POINTS, "stored {stored}");
    println!(
        "bench track ({:?}): {POINTS} fixes over one day, {requests} sequential requests each \
         (after {warmup} warm-up), interleaved with the baseline",
        app.engine
    );

    let url = format!(
        "{}/api/v1/vehicles/{}/positions?from={}&to={}&limit=10000",
        app.url,
        vehicle.id,
        rfc3339(from),
        rfc3339(to)
    );
    let first = get_ok(app, &url, Some(&account.api_key)).await?;
    let body: Value = serde_json::from_slice(first.as_ref())?;
    let count = body["data"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        count == POINTS,
        "the track has {count} points, not {POINTS}"
    );

    let store = app.cell_store(&account).await?;
    let tenant = webhost_domain::TenantId::from_uuid(uuid::Uuid::parse_str(&account.tenant_id)?);
    let vehicle_id = webhost_domain::VehicleId::from_uuid(uuid::Uuid::parse_str(&vehicle.id)?);
    let query = webhost_storage::HistoryQuery {
        from,
        to,
        after: None,
        limit: 10_000,
    };
    let direct = store.positions(tenant, vehicle_id, query.clone()).await?;
    anyhow::ensure!(
        direct.data.len() == POINTS,
        "the store has {}",
        direct.data.len()
    );

    let mut webhost = Latencies::new();
    let mut baseline = Latencies::new();
    for i in 0..warmup + requests {
        let (answer, elapsed) = timed(get_ok(app, &url, Some(&account.api_key))).await;
        answer?;
        let (page, direct_elapsed) =
            timed(store.positions(tenant, vehicle_id, query.clone())).await;
        page?;
        if i >= warmup {
            webhost.record(elapsed);
            baseline.record(direct_elapsed);
        }
    }
    println!("{}", Latencies::header());
    println!(
        "{}",
        webhost.line(&format!(
            "GET …/positions ({} kB JSON)",
            first.as_ref().len() / 1024
        ))
    );
    println!("{}", baseline.line("baseline CellStore::positions"));
    let p95 = webhost.ms(0.95);
    Ok(Outcome {
        bench: "track",
        measure: format!("p50 / p95 / p99 ms ({POINTS} points)"),
        webhost: format!(
            "{:.2} / {p95:.2} / {:.2}",
            webhost.ms(0.5),
            webhost.ms(0.99)
        ),
        baseline: format!(
            "{:.2} / {:.2} / {:.2} (store query)",
            baseline.ms(0.5),
            baseline.ms(0.95),
            baseline.ms(0.99)
        ),
        ratio: format!("{:.1}× at p95", p95 / baseline.ms(0.95)),
        target: "p95 < 20 ms".into(),
        met: p95 < 20.0,
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next `{"positions": …}` message, skipping pings and other messages.
async fn next_positions(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("no message within 10 s")?
            .context("the socket closed")??;
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text)?;
            if value.get("positions").is_some() {
                return Ok(value);
            }
        }
    }
}

/// `bench live`: from posting one position to its push on the tenant's
/// WebSocket, against the post's own acknowledgement (durable commit).
pub(super) async fn live(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    let (posts, warmup) = if quick { (100, 10) } else { (1_000, 50) };
    let account = app.signup().await?;
    let vehicle = app
        .vehicles(&account, 1)
        .await?
        .pop()
        .context("a vehicle")?;
    let mut request =
        format!("{}/api/v1/socket", app.url.replacen("http", "ws", 1)).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", account.api_key).parse()?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("connecting the WebSocket")?;
    println!(
        "bench live ({:?}): {posts} single-position posts, one at a time (after {warmup} \
         warm-up), each timed to its WebSocket push and to its acknowledgement",
        app.engine
    );
    let url = format!("{}/api/v1/positions", app.url);
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut pushed = Latencies::new();
    let mut acked = Latencies::new();
    for i in 0..warmup + posts {
        let time = rfc3339(start + chrono::Duration::milliseconds(i as i64 * 1000));
        let body = json!([{ "vehicle_id": vehicle.id, "time": time, "lat": 40.7, "lon": -74.0,
                            "speed": 30.0 }]);
        let started = Instant::now();
        let post = async {
            let response = app
                .client
                .post(&url)
                .bearer_auth(&account.api_key)
                .json(&body)
                .send()
                .await?;
            let elapsed = started.elapsed();
            let status = response.status();
            let text = response.text().await?;
            if !status.is_success() {
                bail!("{status}: {text}");
            }
            Ok(elapsed)
        };
        let push = async {
            let message = next_positions(&mut socket).await?;
            Ok::<_, anyhow::Error>((started.elapsed(), message))
        };
        let (ack, push) = tokio::join!(post, push);
        let ack = ack?;
        let (delivered, message) = push?;
        anyhow::ensure!(
            message["positions"][0]["time"] == time.as_str()
                || message["positions"][0]["time"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| rfc3339(t.with_timezone(&Utc)))
                    == Some(time.clone()),
            "pushed {message}, expected time {time}"
        );
        if i >= warmup {
            pushed.record(delivered);
            acked.record(ack);
        }
    }
    let _ = socket.close(None).await;
    println!("{}", Latencies::header());
    println!("{}", pushed.line("post → WebSocket push"));
    println!("{}", acked.line("baseline post → acknowledgement"));
    let p99 = pushed.ms(0.99);
    Ok(Outcome {
        bench: "live",
        measure: "p50 / p95 / p99 ms (one position per post)".into(),
        webhost: format!("{:.2} / {:.2} / {p99:.2}", pushed.ms(0.5), pushed.ms(0.95)),
        baseline: format!(
            "{:.2} / {:.2} / {:.2} (acknowledgement)",
            acked.ms(0.5),
            acked.ms(0.95),
            acked.ms(0.99)
        ),
        ratio: format!("{:.2}× at p99", p99 / acked.ms(0.99)),
        target: "p99 < 20 ms".into(),
        met: p99 < 20.0,
    })
}
