//! `webhost bench`: benchmarks of the assembled application, run in this
//! process (build with `--release`). Each measures WebHost against a
//! baseline in the same run and reports the ratio, so that a noisy machine
//! moves both sides. A bench prints its results and writes nothing else:
//! its data directory and databases are temporary and removed afterwards.
//!
//! - `ingest`: `POST /api/v1/positions` throughput vs a bulk insert of the
//!   same rows straight into the same engine.
//! - `osmand`: single-fix OsmAnd requests/s vs a trivial handler.
//! - `latest`: `GET /api/v1/positions/latest` latency vs `GET /api/health`.
//! - `track`: one day of one vehicle's history vs the same store query.
//! - `live`: post → WebSocket push latency vs the post's acknowledgement.
//! - `density`: hobby tenants one cell carries at nominal load within the
//!   SLO, vs the same load on a trivial handler.
//!
//! See docs/BENCHMARKS.md for results.

mod density;
mod ingest;
mod moves;
mod requests;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::{Application, Overrides, Settings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchName {
    Ingest,
    Osmand,
    Latest,
    Track,
    Live,
    /// Hobby tenants per core at nominal load within p95 < 100 ms.
    Density,
    /// A tenant with a million positions moved live between cells, per
    /// engine pair (with `--database-url`: SQLite ↔ PostgreSQL too).
    Move,
    /// Every bench but density and move, one after the other, then a summary.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// `webhost bench`
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum)]
    pub name: BenchName,
    /// The storage engine of the cells (and the control plane).
    #[arg(long, value_enum, default_value_t = Engine::Sqlite)]
    pub engine: Engine,
    /// For `--engine postgres`: an admin URL of a PostgreSQL server with
    /// PostGIS; a fresh database is created per run and dropped afterwards.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Small sizes: every bench finishes in seconds (a smoke run).
    #[arg(long)]
    pub quick: bool,
}

impl BenchArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.name == BenchName::Move {
            // Runs every engine pair itself; the URL adds the PostgreSQL ones.
            return match &self.database_url {
                Some(url) if !url.starts_with("postgres") => {
                    bail!("--database-url must be a postgres:// URL")
                }
                _ => Ok(()),
            };
        }
        match (self.engine, &self.database_url) {
            (Engine::Postgres, None) => bail!(
                "--engine postgres needs --database-url (an admin URL, like \
                 postgres://postgres@127.0.0.1:5432/postgres)"
            ),
            (Engine::Postgres, Some(url)) if !url.starts_with("postgres") => {
                bail!("--database-url must be a postgres:// URL")
            }
            (Engine::Sqlite, Some(_)) => {
                bail!("--database-url is for --engine postgres; SQLite uses a temporary directory")
            }
            _ => Ok(()),
        }
    }
}

/// One line of the summary.
pub(crate) struct Outcome {
    bench: &'static str,
    measure: String,
    webhost: String,
    baseline: String,
    ratio: String,
    target: String,
    met: bool,
}

/// Runs the bench(es) named in `args` and prints the results.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let names = match args.name {
        BenchName::All => vec![
            BenchName::Ingest,
            BenchName::Osmand,
            BenchName::Latest,
            BenchName::Track,
            BenchName::Live,
        ],
        name => vec![name],
    };
    println!(
        "webhost bench: engine {:?}, {} sizes, {} CPUs, build {}",
        args.engine,
        if args.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG (numbers are meaningless; use --release)"
        } else {
            "release"
        }
    );
    let mut outcomes = Vec::new();
    if args.name == BenchName::Move {
        outcomes = moves::run(args.database_url.as_deref(), args.quick).await?;
    }
    for name in names.into_iter().filter(|n| *n != BenchName::Move) {
        let app = BenchApp::boot(args.engine, args.database_url.as_deref()).await?;
        let result = match name {
            BenchName::Ingest => ingest::run(&app, args.quick).await,
            BenchName::Osmand => requests::osmand(&app, args.quick).await,
            BenchName::Latest => requests::latest(&app, args.quick).await,
            BenchName::Track => requests::track(&app, args.quick).await,
            BenchName::Live => requests::live(&app, args.quick).await,
            BenchName::Density => density::run(&app, args.quick).await,
            BenchName::All | BenchName::Move => unreachable!("expanded above"),
        };
        app.shutdown().await;
        let outcome = result.with_context(|| format!("bench {name:?}"))?;
        println!(
            "  => {}: webhost {} vs baseline {}: ratio {}; target {}: {}\n",
            outcome.measure,
            outcome.webhost,
            outcome.baseline,
            outcome.ratio,
            outcome.target,
            if outcome.met { "met" } else { "MISSED" }
        );
        outcomes.push(outcome);
    }
    if outcomes.len() > 1 {
        println!("| bench | measure | webhost | baseline | ratio | target | met |");
        println!("|---|---|---|---|---|---|---|");
        for o in &outcomes {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                o.bench,
                o.measure,
                o.webhost,
                o.baseline,
                o.ratio,
                o.target,
                if o.met { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}

/// A fresh PostgreSQL database for one bench run; the application's local
/// cells get `<name>_cell_<cell>` and the ingest baseline `<name>_baseline`,
/// all dropped by [`PgRun::drop_all`].
struct PgRun {
    admin_url: String,
    name: String,
}

impl PgRun {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Short: local cells add `_cell_<name>` within PostgreSQL's 63 bytes.
        let name = format!("webhost_bench_{}", &id[..12]);
        create_database(admin_url, &name).await?;
        Ok(Self {
            admin_url: admin_url.to_string(),
            name,
        })
    }

    fn url(&self, database: &str) -> String {
        with_database(&self.admin_url, database)
    }

    async fn drop_all(&self) {
        let Ok(mut conn) = admin_connection(&self.admin_url).await else {
            eprintln!("could not drop bench databases {}*", self.name);
            return;
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $1 || '\\_%'",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for database in names {
            let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
            if let Err(err) = sqlx::raw_sql(&sql).execute(&mut conn).await {
                eprintln!("dropping {database}: {err}");
            }
        }
        let _ = sqlx::Connection::close(conn).await;
    }
}

/// A PostgreSQL connection that does not log slow statements
/// (CREATE and DROP DATABASE take seconds on a busy server).
async fn admin_connection(admin_url: &str) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    let options: sqlx::postgres::PgConnectOptions = admin_url
        .parse()
        .context("--database-url is not a PostgreSQL URL")?;
    options
        .disable_statement_logging()
        .connect()
        .await
        .context("connecting to PostgreSQL with --database-url")
}

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = admin_connection(admin_url).await?;
    // `name` is generated (letters, digits, '_'), so quoting is enough.
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Drops a database the run made (best effort).
async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    let Ok(mut conn) = admin_connection(admin_url).await else {
        eprintln!("could not drop bench database {name}");
        return;
    };
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(err) = sqlx::raw_sql(&sql).execute(&mut conn).await {
        eprintln!("could not drop bench database {name}: {err}");
    }
    let _ = conn.close().await;
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The application booted for one bench, on loopback ports it picked.
pub(crate) struct BenchApp {
    app: Application,
    engine: Engine,
    url: String,
    client: reqwest::Client,
    dir: TempDir,
    postgres: Option<PgRun>,
    admin_token: String,
}

/// A signed-up tenant on the business plan (500 vehicles).
pub(crate) struct Account {
    tenant_id: String,
    api_key: String,
    /// The cell the tenant was placed on.
    cell: String,
}

pub(crate) struct VehicleRef {
    id: String,
    device_id: String,
}

impl BenchApp {
    async fn boot(engine: Engine, admin_url: Option<&str>) -> anyhow::Result<Self> {
        Self::boot_tuned(engine, admin_url, |_| {}).await
    }

    async fn boot_tuned(
        engine: Engine,
        admin_url: Option<&str>,
        tune: impl FnOnce(&mut Overrides),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary data dir")?;
        let postgres = match (engine, admin_url) {
            (Engine::Postgres, Some(admin)) => Some(PgRun::create(admin).await?),
            _ => None,
        };
        let database_url = match &postgres {
            Some(pg) => pg.url(&pg.name),
            // Explicit, so that a DATABASE_URL in the environment does not
            // turn a SQLite run into something else.
            None => format!("sqlite:{}", dir.path().join("control.db").display()),
        };
        let mut overrides = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some("127.0.0.1:0".into()),
            osmand_listen: Some("127.0.0.1:0".into()),
            teltonika_listen: Some("127.0.0.1:0".into()),
            database_url: Some(database_url),
            ..Overrides::default()
        };
        tune(&mut overrides);
        let booted = async {
            let settings = Settings::load(&overrides)?;
            let admin_token = settings.admin_token().map(str::to_owned);
            Application::build(&settings)
                .await
                .map(|app| (app, admin_token))
        }
        .await;
        let (app, admin_token) = match booted {
            Ok(booted) => booted,
            Err(err) => {
                if let Some(pg) = &postgres {
                    pg.drop_all().await;
                }
                return Err(err.context("booting the application"));
            }
        };
        let url = app.url();
        Ok(Self {
            app,
            engine,
            url,
            client: client(64)?,
            dir,
            postgres,
            admin_token: admin_token.unwrap_or_default(),
        })
    }

    /// An operator API call; the body of a 2xx answer.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call(method, path, Some(&self.admin_token), body).await
    }

    /// The id of the cell the tenant lives on now.
    async fn cell_id(&self, account: &Account) -> anyhow::Result<String> {
        let tenants = self
            .admin(reqwest::Method::GET, "/api/admin/tenants?limit=1000", None)
            .await?;
        tenants["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == account.tenant_id.as_str())
            .and_then(|t| t["cell_id"].as_str())
            .map(str::to_owned)
            .context("the tenant is not listed")
    }

    async fn shutdown(self) {
        let Self { app, postgres, .. } = self;
        tokio::time::timeout(Duration::from_secs(10), app.stop())
            .await
            .ok();
        if let Some(pg) = postgres {
            pg.drop_all().await;
        }
    }

    /// A JSON request through the edge; the body of a 2xx answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn signup(&self) -> anyhow::Result<Account> {
        let body = self
            .call(
                reqwest::Method::POST,
                "/api/v1/signup",
                None,
                Some(json!({
                    "company": "Bench Logistics",
                    "email": format!("bench-{}@example.com", uuid::Uuid::new_v4().simple()),
                    "password": "correct horse battery staple",
                    "plan": "business",
                    "country": "US",
                })),
            )
            .await?;
        let api_key = body["api_key"].as_str().context("api_key")?.to_string();
        let tenant_id = body["tenant"]["id"]
            .as_str()
            .context("tenant id")?
            .to_string();
        let subscription = self
            .call(
                reqwest::Method::GET,
                "/api/v1/subscription",
                Some(&api_key),
                None,
            )
            .await?;
        let cell = subscription["placement"]["cell"]
            .as_str()
            .context("placement cell")?
            .to_string();
        Ok(Account {
            tenant_id,
            api_key,
            cell,
        })
    }

    /// Creates `count` vehicles with device ids, eight at a time.
    async fn vehicles(&self, account: &Account, count: usize) -> anyhow::Result<Vec<VehicleRef>> {
        use futures_util::StreamExt;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let created: Vec<anyhow::Result<VehicleRef>> = futures_util::stream::iter(0..count)
            .map(|i| {
                let device_id = format!("bench-{}-{i}", &run[..12]);
                async move {
                    let body = self
                        .call(
                            reqwest::Method::POST,
                            "/api/v1/vehicles",
                            Some(&account.api_key),
                            Some(json!({ "name": format!("Bench {i}"), "device_id": device_id })),
                        )
                        .await?;
                    Ok(VehicleRef {
                        id: body["id"].as_str().context("vehicle id")?.to_string(),
                        device_id,
                    })
                }
            })
            .buffered(8)
            .collect()
            .await;
        created.into_iter().collect()
    }

    /// The tenant's cell store, opened a second time for the baselines that
    /// query storage directly.
    async fn cell_store(
        &self,
        account: &Account,
    ) -> anyhow::Result<std::sync::Arc<dyn webhost_storage::CellStore>> {
        Ok(match &self.postgres {
            Some(pg) => {
                let suffix: String = account
                    .cell
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let url = pg.url(&format!("{}_cell_{suffix}", pg.name));
                std::sync::Arc::new(webhost_storage_postgres::PgCellStore::open(&url, 2).await?)
            }
            None => {
                let path = self
                    .dir
                    .path()
                    .join("cells")
                    .join(format!("{}.db", account.cell));
                anyhow::ensure!(path.exists(), "no cell database at {}", path.display());
                std::sync::Arc::new(
                    webhost_storage_sqlite::SqliteCellStore::open(
                        path.to_str().context("path is not UTF-8")?,
                    )
                    .await?,
                )
            }
        })
    }
}

/// A keep-alive HTTP/1.1 client with up to `connections` idle connections.
fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// Latencies in microseconds, 1 µs to 60 s at 3 significant figures.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
        self.0.record(micros).expect("within bounds");
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn line(&self, label: &str) -> String {
        format!(
            "  {label:<34} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8}",
            self.ms(0.50),
            self.ms(0.95),
            self.ms(0.99),
            self.0.max() as f64 / 1000.0,
            self.0.len()
        )
    }

    fn header() -> String {
        format!(
            "  {:<34} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "p50 ms", "p95 ms", "p99 ms", "max ms", "count"
        )
    }
}

/// Times `f`.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = f.await;
    (value, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn arguments_parse() {
        let args = parse(&["ingest"]).expect("parses");
        assert_eq!(args.name, BenchName::Ingest);
        assert_eq!(args.engine, Engine::Sqlite);
        assert!(!args.quick);
        assert!(args.check().is_ok());

        let args = parse(&[
            "live",
            "--engine",
            "postgres",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "--quick",
        ])
        .expect("parses");
        assert_eq!(args.name, BenchName::Live);
        assert_eq!(args.engine, Engine::Postgres);
        assert!(args.quick);
        assert!(args.check().is_ok());

        for name in ["osmand", "latest", "track", "density", "all"] {
            assert!(parse(&[name]).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err(), "a bench name is required");
        assert!(parse(&["nope"]).is_err());
        assert!(parse(&["ingest", "--engine", "mysql"]).is_err());
        // Postgres needs a URL; SQLite takes none.
        assert!(parse(&["ingest", "--engine", "postgres"])
            .expect("parses")
            .check()
            .is_err());
        assert!(parse(&["ingest", "--database-url", "postgres://h/db"])
            .expect("parses")
            .check()
            .is_err());
        assert!(parse(&[
            "ingest",
            "--engine",
            "postgres",
            "--database-url",
            "mysql://h/db"
        ])
        .expect("parses")
        .check()
        .is_err());
    }

    #[test]
    fn database_urls_are_derived_from_the_admin_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://h/postgres?sslmode=disable", "b"),
            "postgres://h/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
    }

    #[test]
    fn latencies_report_percentiles_in_milliseconds() {
        let mut latencies = Latencies::new();
        for micros in 1..=1000 {
            latencies.record(Duration::from_micros(micros));
        }
        assert!((latencies.ms(0.5) - 0.5).abs() < 0.01);
        assert!((latencies.ms(0.99) - 0.99).abs() < 0.01);
    }
}
