//! `webhost admin …`: the operator API from a terminal. Tables for people,
//! `--json` for scripts; creating a cell shows a progress bar until it is
//! active. Talks to a running WebHost over HTTP (`--url`, default the
//! embedded default's address) with `WEBHOST_ADMIN_TOKEN`, or the token the
//! embedded default keeps in `<data-dir>/secrets.toml` on this machine.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};

#[derive(Args, Clone, Debug)]
pub struct AdminArgs {
    /// The WebHost to talk to (its public address).
    #[arg(long, env = "WEBHOST_URL", default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// The operator's token; read from <data-dir>/secrets.toml when left out.
    #[arg(long, env = "WEBHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the embedded default keeps its secrets.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Clone, Debug)]
pub enum AdminCommand {
    /// Pools: provider, templates, capacity per region.
    Pools,
    /// Cells: list, show, create, drain, retire.
    Cells {
        #[command(subcommand)]
        command: Option<CellsCommand>,
    },
    /// Tenants with their placement.
    Tenants {
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        cell: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Background jobs; `retry ID`, `cancel ID`.
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Cost, revenue and margin per plan, and the least profitable tenants
    /// (cost attributed by measured usage).
    Economics {
        /// How many of the least profitable tenants to list.
        #[arg(long, default_value_t = 10)]
        tenants: u32,
    },
    /// Moves a tenant to another cell, live, following it with a progress
    /// bar until its switch (or abort). Also `webhost migrate`.
    Migrate(MigrateCommand),
    /// Tenant moves: list, show one, roll back, cancel.
    Migrations {
        #[command(subcommand)]
        command: Option<MigrationsCommand>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct MigrateCommand {
    /// The tenant's id.
    pub tenant: String,
    /// The cell to move to (id or name); left out: placement picks one.
    #[arg(long)]
    pub to: Option<String>,
    /// Answer once the move is queued instead of following it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand, Clone, Debug)]
pub enum MigrationsCommand {
    List,
    Show {
        id: String,
    },
    /// Moves the tenant back (only during the grace period).
    Rollback {
        id: String,
    },
    /// Stops a move before its switch.
    Cancel {
        id: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum CellsCommand {
    List,
    Show {
        id: String,
    },
    /// Provisions a cell and follows it until it is active.
    Create {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        template: Option<String>,
        /// `dedicated` or `cloud` (Hetzner).
        #[arg(long)]
        kind: Option<String>,
        /// Register a cell already running at this URL instead.
        #[arg(long)]
        register: Option<String>,
        /// Return at once instead of following the provisioning.
        #[arg(long)]
        no_wait: bool,
    },
    Drain {
        id: String,
    },
    Retire {
        id: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum JobsCommand {
    Retry { id: String },
    Cancel { id: String },
}

/// The operator's token: the flag or variable, else the embedded default's.
fn token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(token) = args.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.clone());
    }
    let path = args.data_dir.join("secrets.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --token or WEBHOST_ADMIN_TOKEN, and {} cannot be read",
            path.display()
        )
    })?;
    let secrets: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", path.display()))?;
    secrets
        .get("webhost_admin_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no webhost_admin_token", path.display()))
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach WebHost at {}", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(body)
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            out.append_pair(key, value);
        }
    }
    let out = out.finish();
    if out.is_empty() {
        out
    } else {
        format!("?{out}")
    }
}

/// Runs one admin command, writing what it shows to `out`.
pub async fn run(args: AdminArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        url: args.url.clone(),
        token: token(&args)?,
    };
    use reqwest::Method;
    let (value, view): (Value, fn(&Value) -> Vec<Table>) = match args.command.clone() {
        AdminCommand::Pools => (
            client.call(Method::GET, "/api/admin/pools", None).await?,
            |v| vec![pools_table(v)],
        ),
        AdminCommand::Cells { command } => match command.unwrap_or(CellsCommand::List) {
            CellsCommand::List => (
                client.call(Method::GET, "/api/admin/cells", None).await?,
                |v| vec![cells_table(v)],
            ),
            CellsCommand::Show { id } => (
                client
                    .call(Method::GET, &format!("/api/admin/cells/{id}"), None)
                    .await?,
                |v| vec![cell_table(v)],
            ),
            CellsCommand::Drain { id } => (
                client
                    .call(Method::POST, &format!("/api/admin/cells/{id}/drain"), None)
                    .await?,
                |v| vec![cell_table(v)],
            ),
            CellsCommand::Retire { id } => (
                client
                    .call(Method::DELETE, &format!("/api/admin/cells/{id}"), None)
                    .await?,
                |v| vec![cell_table(v)],
            ),
            CellsCommand::Create {
                pool,
                region,
                template,
                kind,
                register,
                no_wait,
            } => {
                let mut body = json!({ "pool": pool, "region": region });
                for (key, value) in [("template", template), ("kind", kind), ("url", register)] {
                    if let Some(value) = value {
                        body[key] = json!(value);
                    }
                }
                let cell = client
                    .call(Method::POST, "/api/admin/cells", Some(body))
                    .await?;
                let cell = if no_wait || args.json {
                    cell
                } else {
                    follow(&client, &cell).await?
                };
                (cell, |v| vec![cell_table(v)])
            }
        },
        AdminCommand::Tenants {
            plan,
            status,
            pool,
            region,
            cell,
            limit,
            cursor,
        } => {
            let q = query(&[
                ("plan", plan),
                ("status", status),
                ("pool", pool),
                ("region", region),
                ("cell", cell),
                ("limit", limit.map(|l| l.to_string())),
                ("cursor", cursor),
            ]);
            (
                client
                    .call(Method::GET, &format!("/api/admin/tenants{q}"), None)
                    .await?,
                |v| vec![tenants_table(v)],
            )
        }
        AdminCommand::Jobs {
            command,
            queue,
            state,
            kind,
            limit,
        } => match command {
            Some(JobsCommand::Retry { id }) => (
                client
                    .call(Method::POST, &format!("/api/admin/jobs/{id}/retry"), None)
                    .await?,
                |v| vec![job_table(v)],
            ),
            Some(JobsCommand::Cancel { id }) => (
                client
                    .call(Method::POST, &format!("/api/admin/jobs/{id}/cancel"), None)
                    .await?,
                |v| vec![job_table(v)],
            ),
            None => {
                let q = query(&[
                    ("queue", queue),
                    ("state", state),
                    ("kind", kind),
                    ("limit", limit.map(|l| l.to_string())),
                ]);
                (
                    client
                        .call(Method::GET, &format!("/api/admin/jobs{q}"), None)
                        .await?,
                    |v| vec![jobs_table(v)],
                )
            }
        },
        AdminCommand::Migrate(migrate) => {
            let body = json!({ "cell": migrate.to });
            let started = client
                .call(
                    Method::POST,
                    &format!("/api/admin/tenants/{}/migrate", migrate.tenant),
                    Some(body),
                )
                .await?;
            let value = if migrate.no_wait || args.json {
                started
            } else {
                follow_migration(&client, &started).await?
            };
            (value, |v| vec![migration_table(v)])
        }
        AdminCommand::Migrations { command } => match command.unwrap_or(MigrationsCommand::List) {
            MigrationsCommand::List => (
                client
                    .call(Method::GET, "/api/admin/migrations", None)
                    .await?,
                |v| vec![migrations_table(v)],
            ),
            MigrationsCommand::Show { id } => (
                client
                    .call(Method::GET, &format!("/api/admin/migrations/{id}"), None)
                    .await?,
                |v| vec![migration_table(v)],
            ),
            MigrationsCommand::Rollback { id } => (
                client
                    .call(
                        Method::POST,
                        &format!("/api/admin/migrations/{id}/rollback"),
                        None,
                    )
                    .await?,
                |v| vec![migration_table(v)],
            ),
            MigrationsCommand::Cancel { id } => (
                client
                    .call(
                        Method::POST,
                        &format!("/api/admin/migrations/{id}/cancel"),
                        None,
                    )
                    .await?,
                |v| vec![migration_table(v)],
            ),
        },
        AdminCommand::Economics { tenants } => (
            client
                .call(
                    Method::GET,
                    &format!("/api/admin/economics?tenants={tenants}"),
                    None,
                )
                .await?,
            economics_tables,
        ),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        for table in view(&value) {
            writeln!(out, "{table}")?;
        }
        if let Some(next) = value.get("next_cursor").and_then(Value::as_str) {
            writeln!(out, "more: --cursor {next}")?;
        }
    }
    Ok(())
}

/// Polls a cell being provisioned, with a progress bar, until it is active
/// (or failed); answers its last state.
async fn follow(client: &Client, cell: &Value) -> anyhow::Result<Value> {
    let id = cell["id"].as_str().context("the answer names no cell id")?;
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(cell["name"].as_str().unwrap_or("cell").to_string());
    loop {
        let now = client
            .call(
                reqwest::Method::GET,
                &format!("/api/admin/cells/{id}"),
                None,
            )
            .await?;
        let status = now["status"].as_str().unwrap_or_default();
        let percent = now["progress"]["percent"].as_u64().unwrap_or(0);
        let step = now["progress"]["step"].as_str().unwrap_or(status);
        match status {
            "active" => {
                bar.set_position(100);
                bar.finish_with_message("active");
                return Ok(now);
            }
            "failed" | "retired" => {
                bar.abandon_with_message(status.to_string());
                bail!(
                    "cell {} is {status}: {}",
                    now["name"].as_str().unwrap_or(id),
                    now["last_error"].as_str().unwrap_or("no error recorded")
                );
            }
            _ => {
                bar.set_position(percent.min(99));
                let error = now["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"));
                bar.set_message(format!("{step}{}", error.unwrap_or_default()));
            }
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows a move with a progress bar until it has switched (the grace
/// period that follows lasts days: the tenant is moved by then) or ended
/// otherwise; answers its last state, and fails when it aborted.
async fn follow_migration(client: &Client, started: &Value) -> anyhow::Result<Value> {
    let id = started["id"]
        .as_str()
        .context("the answer names no migration id")?;
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} move [{bar:30}] {pos:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    loop {
        let now = client
            .call(
                reqwest::Method::GET,
                &format!("/api/admin/migrations/{id}"),
                None,
            )
            .await?;
        let state = now["state"].as_str().unwrap_or_default().to_string();
        let progress = &now["progress"];
        match state.as_str() {
            "grace_period" | "deleting_source" | "done" => {
                bar.set_position(100);
                let freeze = progress["freeze_ms"]
                    .as_u64()
                    .map(|ms| format!("; writes held {ms} ms"))
                    .unwrap_or_default();
                bar.finish_with_message(format!("moved{freeze}"));
                return Ok(now);
            }
            "aborted" | "rolled_back" => {
                bar.abandon_with_message(state.clone());
                bail!(
                    "the move {state}: {}",
                    progress["outcome"]["reason"]
                        .as_str()
                        .or(progress["last_error"].as_str())
                        .unwrap_or("no reason recorded")
                );
            }
            _ => {
                bar.set_position(progress["percent"].as_u64().unwrap_or(0).min(99));
                let rows = progress["rows_copied"].as_u64().unwrap_or(0);
                let error = progress["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                bar.set_message(format!("{state}, {rows} rows copied{error}"));
            }
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn migration_row(v: &Value) -> Vec<String> {
    vec![
        text(&v["id"]),
        text(&v["tenant_id"]),
        text(&v["source_cell"]),
        text(&v["target_cell"]),
        text(&v["state"]),
        text(&v["progress"]["percent"]),
        text(&v["progress"]["rows_copied"]),
        text(&v["progress"]["freeze_ms"]),
    ]
}

const MIGRATION_HEADER: [&str; 8] = [
    "id",
    "tenant",
    "from",
    "to",
    "state",
    "%",
    "rows",
    "freeze ms",
];

fn migration_table(v: &Value) -> Table {
    let mut t = table(&MIGRATION_HEADER);
    t.add_row(migration_row(v));
    t
}

fn migrations_table(v: &Value) -> Table {
    let mut t = table(&MIGRATION_HEADER);
    for item in v["items"].as_array().into_iter().flatten() {
        t.add_row(migration_row(item));
    }
    t
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn dollars(cents: &Value) -> String {
    cents
        .as_f64()
        .map_or_else(|| "-".into(), |c| format!("${:.2}", c / 100.0))
}

fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |p| format!("{p:.0}%"))
}

fn rows(v: &Value) -> &[Value] {
    v["data"].as_array().map_or(&[], Vec::as_slice)
}

fn pools_table(v: &Value) -> Table {
    let mut t = table(&[
        "pool",
        "provider",
        "in use",
        "region",
        "cells",
        "provisioning",
        "tenants",
        "free",
        "spare",
    ]);
    for pool in rows(v) {
        for region in pool["regions"].as_array().map_or(&[][..], Vec::as_slice) {
            t.add_row(vec![
                text(&pool["name"]),
                text(&pool["provider"]),
                text(&pool["provider_in_use"]),
                text(&region["region"]),
                text(&region["cells"]),
                text(&region["provisioning"]),
                text(&region["tenants"]),
                text(&region["free"]),
                text(&region["spare_slots"]),
            ]);
        }
    }
    t
}

fn cell_row(c: &Value) -> Vec<String> {
    vec![
        text(&c["name"]),
        text(&c["status"]),
        text(&c["pool"]),
        text(&c["region"]),
        text(&c["provider"]),
        format!("{}/{}", text(&c["tenants"]), text(&c["capacity"])),
        dollars(&c["monthly_cost_cents"]),
        text(&c["id"]),
        text(&c["last_error"]),
    ]
}

const CELL_HEADER: [&str; 9] = [
    "cell",
    "status",
    "pool",
    "region",
    "provider",
    "tenants",
    "cost/month",
    "id",
    "last error",
];

fn cells_table(v: &Value) -> Table {
    let mut t = table(&CELL_HEADER);
    for c in rows(v) {
        t.add_row(cell_row(c));
    }
    t
}

fn cell_table(v: &Value) -> Table {
    let mut t = table(&CELL_HEADER);
    t.add_row(cell_row(v));
    t
}

fn tenants_table(v: &Value) -> Table {
    let mut t = table(&[
        "tenant",
        "company",
        "plan",
        "status",
        "region",
        "cell",
        "positions",
        "storage",
        "ingested 30d",
        "requests 30d",
        "since",
    ]);
    for r in rows(v) {
        let usage = &r["usage"];
        t.add_row(vec![
            text(&r["id"]),
            text(&r["company"]),
            text(&r["plan"]),
            text(&r["status"]),
            text(&r["region"]),
            text(&r["cell"]),
            text(&usage["positions_stored"]),
            bytes(&usage["storage_bytes"]),
            text(&usage["positions_ingested"]),
            text(&usage["api_requests"]),
            text(&r["created_at"]),
        ]);
    }
    t
}

/// Bytes for people: `-` when unknown.
fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < units.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{size:.1} {}", units[unit])
    }
}

fn job_row(j: &Value) -> Vec<String> {
    vec![
        text(&j["id"]),
        text(&j["queue"]),
        text(&j["kind"]),
        text(&j["state"]),
        format!("{}/{}", text(&j["attempts"]), text(&j["max_attempts"])),
        text(&j["run_at"]),
        text(&j["last_error"]),
    ]
}

const JOB_HEADER: [&str; 7] = [
    "job",
    "queue",
    "kind",
    "state",
    "attempts",
    "runs at",
    "last error",
];

fn jobs_table(v: &Value) -> Table {
    let mut t = table(&JOB_HEADER);
    for j in rows(v) {
        t.add_row(job_row(j));
    }
    t
}

fn job_table(v: &Value) -> Table {
    let mut t = table(&JOB_HEADER);
    t.add_row(job_row(v));
    t
}

/// The plans, then the least profitable tenants.
fn economics_tables(v: &Value) -> Vec<Table> {
    let mut tenants = table(&[
        "tenant", "company", "plan", "cell", "price", "cost", "margin", "cost by", "storage",
        "work 30d",
    ]);
    for r in v["tenants"].as_array().map_or(&[][..], Vec::as_slice) {
        let usage = &r["usage"];
        let work = match (
            usage["positions_ingested"].as_u64(),
            usage["api_requests"].as_u64(),
        ) {
            (Some(p), Some(q)) => (p + q).to_string(),
            _ => "-".into(),
        };
        tenants.add_row(vec![
            text(&r["tenant_id"]),
            text(&r["company"]),
            text(&r["plan"]),
            text(&r["cell"]),
            dollars(&r["price_cents"]),
            dollars(&r["cost_cents"]),
            dollars(&r["margin_cents"]),
            text(&r["attribution"]),
            bytes(&usage["storage_bytes"]),
            work,
        ]);
    }
    vec![economics_table(v), tenants]
}

fn economics_table(v: &Value) -> Table {
    let mut t = table(&[
        "plan",
        "price",
        "cost/customer (full)",
        "margin (full)",
        "break-even",
        "tenants",
        "revenue",
        "cost now",
        "margin now",
    ]);
    for p in v["plans"].as_array().map_or(&[][..], Vec::as_slice) {
        t.add_row(vec![
            text(&p["plan"]),
            dollars(&p["price_cents"]),
            dollars(&p["at_capacity"]["cost_per_customer_cents"]),
            percent(&p["at_capacity"]["margin_percent"]),
            text(&p["break_even_tenants"]),
            text(&p["tenants"]),
            dollars(&p["revenue_cents"]),
            dollars(&p["cost_cents"]),
            percent(&p["margin_percent"]),
        ]);
    }
    t.add_row(vec![
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        text(&v["totals"]["tenants"]),
        dollars(&v["totals"]["revenue_cents"]),
        dollars(&v["totals"]["cost_cents"]),
        percent(&v["totals"]["margin_percent"]),
    ]);
    t
}
