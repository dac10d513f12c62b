//! `bench ingest`: positions/s through the edge (`POST /api/v1/positions`,
//! concurrent clients, batches of 1,000) against the raw storage ceiling: a
//! bulk insert of the same rows straight into the same engine, into an
//! identical `positions` table (created from the backend's own migration)
//! in a fresh file or database.
//!
//! - SQLite: one transaction of 500-row INSERTs, with the pragmas the
//!   backend uses (WAL, `synchronous=FULL`).
//! - PostgreSQL: one `COPY … FROM STDIN` into the partitioned table (the
//!   daily partitions created beforehand).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{ConnectOptions, Connection, QueryBuilder};

use super::{BenchApp, Engine, Outcome};
use crate::simulate::Route;

const SQLITE_SCHEMA: &str =
    include_str!("../../../webhost-storage-sqlite/migrations/cell/0002_positions.sql");
const POSTGRES_SCHEMA: &str =
    include_str!("../../../webhost-storage-postgres/migrations/cell/0002_positions.sql");

pub(super) const BATCH: usize = 1_000;
const CLIENTS: usize = 4;

pub(super) struct Row {
    pub(super) vehicle: usize,
    pub(super) time: DateTime<Utc>,
    pub(super) lat: f64,
    pub(super) lon: f64,
    pub(super) speed: f64,
    pub(super) heading: f64,
}

#[derive(Serialize)]
pub(super) struct Item<'a> {
    pub(super) vehicle_id: &'a str,
    pub(super) time: String,
    pub(super) lat: f64,
    pub(super) lon: f64,
    pub(super) speed: f64,
    pub(super) heading: f64,
}

pub(super) fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `per_vehicle` fixes a second apart for each vehicle, ending a few
/// minutes ago; ordered by time, so a batch holds many vehicles.
pub(super) fn rows(vehicles: usize, per_vehicle: usize) -> Vec<Row> {
    let end = Utc::now() - chrono::Duration::minutes(5);
    let start = end - chrono::Duration::seconds(per_vehicle as i64);
    let start = DateTime::from_timestamp(start.timestamp(), 0).expect("in range");
    let mut routes: Vec<Route> = (0..vehicles)
        .map(|v| Route::for_vehicle(11, v as u64, 40.71, -74.0))
        .collect();
    let mut rows = Vec::with_capacity(vehicles * per_vehicle);
    for i in 0..per_vehicle {
        let time = start + chrono::Duration::seconds(i as i64);
        for (vehicle, route) in routes.iter_mut().enumerate() {
            let s = route.advance(1.0);
            rows.push(Row {
                vehicle,
                time,
                lat: s.lat,
                lon: s.lon,
                speed: (s.speed * 10.0).round() / 10.0,
                heading: s.heading.round(),
            });
        }
    }
    rows
}

pub(super) async fn run(app: &BenchApp, quick: bool) -> anyhow::Result<Outcome> {
    let (vehicle_count, per_vehicle) = if quick { (20, 1_000) } else { (100, 10_000) };
    let account = app.signup().await?;
    let vehicles = app.vehicles(&account, vehicle_count).await?;
    let rows = rows(vehicle_count, per_vehicle);
    let total = rows.len();
    println!(
        "bench ingest ({:?}): {total} positions of {vehicle_count} vehicles, batches of {BATCH}, \
         {CLIENTS} concurrent clients",
        app.engine
    );

    // Bodies are serialised before the clock starts.
    let bodies: Vec<Vec<u8>> = rows
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
            serde_json::to_vec(&items).expect("serialisable")
        })
        .collect();
    let queue = Arc::new(Mutex::new(bodies));
    let accepted = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = format!("{}/api/v1/positions", app.url);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (queue, accepted, duplicates, failures) = (
            queue.clone(),
            accepted.clone(),
            duplicates.clone(),
            failures.clone(),
        );
        let (client, url, key) = (app.client.clone(), url.clone(), account.api_key.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let result = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match result {
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        let answer: serde_json::Value =
                            serde_json::from_str(&text).unwrap_or_default();
                        if !status.is_success()
                            || answer["rejected"].as_array().is_some_and(|r| !r.is_empty())
                        {
                            failures
                                .lock()
                                .expect("failures")
                                .push(format!("{status}: {}", &text[..text.len().min(300)]));
                        }
                        accepted
                            .fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        duplicates.fetch_add(
                            answer["duplicates"].as_u64().unwrap_or(0),
                            Ordering::Relaxed,
                        );
                    }
                    Err(err) => failures.lock().expect("failures").push(err.to_string()),
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let failures = failures.lock().expect("failures").clone();
    if let Some(first) = failures.first() {
        bail!("{} batches failed; first: {first}", failures.len());
    }
    let accepted = accepted.load(Ordering::Relaxed) as usize;
    let duplicates = duplicates.load(Ordering::Relaxed);
    anyhow::ensure!(
        accepted == total && duplicates == 0,
        "accepted {accepted} of {total} ({duplicates} duplicates)"
    );
    let webhost_rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "  webhost:  {total} positions in {:.2} s = {webhost_rate:.0} positions/s",
        elapsed.as_secs_f64()
    );

    let tenant = uuid::Uuid::parse_str(&account.tenant_id)?;
    let vehicle_ids: Vec<uuid::Uuid> = vehicles
        .iter()
        .map(|v| uuid::Uuid::parse_str(&v.id))
        .collect::<Result<_, _>>()?;
    // The ceiling: everything in one transaction (one COPY). For
    // reference, the same rows committed per batch, as a durable
    // acknowledgement per request needs.
    let (baseline, per_batch, what) = match app.engine {
        Engine::Sqlite => (
            sqlite_baseline(&rows, &vehicle_ids, tenant, total).await?,
            sqlite_baseline(&rows, &vehicle_ids, tenant, BATCH).await?,
            "one transaction of 500-row INSERTs, fresh file, WAL + synchronous=FULL",
        ),
        Engine::Postgres => {
            let pg = app.postgres.as_ref().context("postgres run")?;
            let name = format!("{}_baseline", pg.name);
            super::create_database(&pg.admin_url, &name).await?;
            let url = pg.url(&name);
            (
                postgres_baseline(&url, &rows, &vehicle_ids, tenant, total).await?,
                postgres_baseline(&url, &rows, &vehicle_ids, tenant, BATCH).await?,
                "one COPY into the partitioned table, fresh database",
            )
        }
    };
    let baseline_rate = total as f64 / baseline.as_secs_f64();
    println!(
        "  baseline: {total} rows in {:.2} s = {baseline_rate:.0} rows/s ({what})",
        baseline.as_secs_f64()
    );
    println!(
        "  for reference, the same bulk insert committed every {BATCH} rows (one client): \
         {:.0} rows/s",
        total as f64 / per_batch.as_secs_f64()
    );
    let ratio = webhost_rate / baseline_rate;
    Ok(Outcome {
        bench: "ingest",
        measure: format!("positions/s ({total}, batches of {BATCH}, {CLIENTS} clients)"),
        webhost: format!("{webhost_rate:.0}/s"),
        baseline: format!("{baseline_rate:.0}/s (bulk insert)"),
        ratio: format!("{ratio:.2}"),
        target: "ratio ≥ 0.7".into(),
        met: ratio >= 0.7,
    })
}

/// The same rows in multi-row INSERTs into a fresh file, in transactions
/// of `commit_every` rows.
pub(super) async fn sqlite_baseline(
    rows: &[Row],
    vehicles: &[uuid::Uuid],
    tenant: uuid::Uuid,
    commit_every: usize,
) -> anyhow::Result<Duration> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("baseline.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let mut conn = options.disable_statement_logging().connect().await?;
    sqlx::raw_sql(SQLITE_SCHEMA).execute(&mut conn).await?;
    let vehicles: Vec<String> = vehicles.iter().map(|v| v.to_string()).collect();
    let tenant = tenant.to_string();

    let started = Instant::now();
    for transaction in rows.chunks(commit_every) {
        let mut tx = conn.begin().await?;
        for chunk in transaction.chunks(500) {
            let mut builder = QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO positions (vehicle_id, time, tenant_id, lat, lon, speed, heading, \
             altitude, accuracy, valid, attributes) ",
            );
            builder.push_values(chunk, |mut b, r| {
                b.push_bind(&vehicles[r.vehicle])
                    .push_bind(r.time.timestamp_millis())
                    .push_bind(&tenant)
                    .push_bind(r.lat)
                    .push_bind(r.lon)
                    .push_bind(Some(r.speed))
                    .push_bind(Some(r.heading))
                    .push_bind(None::<f64>)
                    .push_bind(None::<f64>)
                    .push_bind(true)
                    .push_bind(None::<String>);
            });
            builder.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let elapsed = started.elapsed();

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(count as usize == rows.len(), "baseline stored {count}");
    conn.close().await?;
    Ok(elapsed)
}

/// The same rows in COPYs of `per_copy` rows (each its own transaction)
/// into the partitioned table of the fresh database at `url` (created on
/// the first call, emptied on later ones).
pub(super) async fn postgres_baseline(
    url: &str,
    rows: &[Row],
    vehicles: &[uuid::Uuid],
    tenant: uuid::Uuid,
    per_copy: usize,
) -> anyhow::Result<Duration> {
    use std::fmt::Write as _;
    let mut conn = super::admin_connection(url).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('positions') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    if exists {
        sqlx::raw_sql("TRUNCATE positions")
            .execute(&mut conn)
            .await?;
        // Best effort (needs pg_checkpoint): the first run's WAL is not
        // flushed in the middle of this one.
        let _ = sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await;
    } else {
        postgres_schema(&mut conn, rows).await?;
    }
    // The CSV is built before the clock starts: the ceiling is the server's.
    let copies: Vec<String> = rows
        .chunks(per_copy)
        .map(|chunk| {
            let mut csv = String::with_capacity(chunk.len() * 128);
            for r in chunk {
                writeln!(
                    csv,
                    "{},{},{tenant},{},{},{},{},,,t,",
                    vehicles[r.vehicle],
                    rfc3339(r.time),
                    r.lat,
                    r.lon,
                    r.speed,
                    r.heading
                )
                .expect("write to string");
            }
            csv
        })
        .collect();

    let started = Instant::now();
    let mut copied = 0;
    for csv in &copies {
        let mut copy = conn
            .copy_in_raw(
                "COPY positions (vehicle_id, time, tenant_id, lat, lon, speed, heading, altitude, \
                 accuracy, valid, attributes) FROM STDIN (FORMAT csv)",
            )
            .await?;
        for chunk in csv.as_bytes().chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copied += copy.finish().await?;
    }
    let elapsed = started.elapsed();

    anyhow::ensure!(copied as usize == rows.len(), "baseline copied {copied}");
    conn.close().await?;
    Ok(elapsed)
}

/// The backend's positions table and the daily partitions `rows` need.
async fn postgres_schema(conn: &mut sqlx::PgConnection, rows: &[Row]) -> anyhow::Result<()> {
    sqlx::raw_sql(POSTGRES_SCHEMA).execute(&mut *conn).await?;
    let first = rows
        .iter()
        .map(|r| r.time)
        .min()
        .context("rows")?
        .date_naive();
    let last = rows
        .iter()
        .map(|r| r.time)
        .max()
        .context("rows")?
        .date_naive();
    let mut day = first;
    while day <= last {
        let next = day + chrono::Duration::days(1);
        sqlx::raw_sql(&format!(
            "CREATE TABLE positions_p{} PARTITION OF positions \
             FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
            day.format("%Y%m%d")
        ))
        .execute(&mut *conn)
        .await?;
        day = next;
    }
    Ok(())
}
