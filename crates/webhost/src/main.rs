use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use webhost::{Application, Mode, Overrides, Settings};

/// WebHost: multi-tenant GPS fleet tracking and the control plane that runs it.
#[derive(Parser)]
#[command(name = "webhost", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// A TOML file of settings (or WEBHOST_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// `embedded` generates missing secrets; `production` requires them.
    #[arg(long, global = true, value_enum)]
    mode: Option<Mode>,
    /// Where the embedded default keeps its databases and secrets.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// HTTP address (PORT sets 0.0.0.0:PORT).
    #[arg(long, global = true)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: control plane, edge and local cells.
    Serve {
        #[command(flatten)]
        common: Common,
        /// OsmAnd device protocol address.
        #[arg(long)]
        osmand_listen: Option<String>,
        /// Teltonika device protocol address.
        #[arg(long)]
        teltonika_listen: Option<String>,
    },
    /// The control plane alone (with the local provider, its cells too).
    Control {
        #[command(flatten)]
        common: Common,
    },
    /// The edge alone, forwarding to the control plane and the cells.
    Edge {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        control_url: Option<String>,
    },
    /// One cell alone.
    Cell {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        control_url: Option<String>,
        #[arg(long)]
        cell_id: Option<String>,
    },
    /// Exits 0 when the service at `--url` answers its health check with
    /// 2xx (container health checks: the runtime image has no curl).
    Health {
        /// Defaults to this machine's `PORT` (or 4000).
        #[arg(long)]
        url: Option<String>,
    },
    /// Drives simulated vehicles along plausible routes through the public
    /// API or the OsmAnd protocol.
    Simulate(webhost::simulate::SimulateArgs),
    /// Runs a benchmark against the application in this process (build
    /// with --release); see docs/BENCHMARKS.md.
    Bench(webhost::bench::BenchArgs),
    /// The operator's commands against a running WebHost: pools, cells,
    /// tenants, jobs, economics.
    Admin(webhost::admin::AdminArgs),
    /// Moves a tenant to another cell, live (`webhost admin migrate`).
    Migrate {
        #[command(flatten)]
        migrate: webhost::admin::MigrateCommand,
        /// The WebHost to talk to (its public address).
        #[arg(long, env = "WEBHOST_URL", default_value = "http://127.0.0.1:4000")]
        url: String,
        /// The operator's token; read from <data-dir>/secrets.toml when left out.
        #[arg(long, env = "WEBHOST_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn overrides(common: &Common) -> Overrides {
    Overrides {
        config: common.config.clone(),
        mode: common.mode,
        data_dir: common.data_dir.clone(),
        listen: common.listen.clone(),
        ..Overrides::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The clients log only problems: a line per request would be the
    // benchmark's main cost.
    let default_filter = match cli.command {
        Command::Simulate(_) | Command::Bench(_) | Command::Admin(_) | Command::Migrate { .. } => {
            "warn"
        }
        _ => "info,sqlx=warn,tower_http=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match cli.command {
        Command::Serve {
            common,
            osmand_listen,
            teltonika_listen,
        } => {
            let settings = Settings::load(&Overrides {
                osmand_listen,
                teltonika_listen,
                ..overrides(&common)
            })?;
            let app = Application::build(&settings).await?;
            for cell in &app.cells {
                tracing::info!(cell = %cell.name, pool = %cell.pool, region = %cell.region, url = %cell.url, "cell ready");
            }
            println!("WebHost is running: open {}/api/health", app.url());
            app.run_until_stopped().await
        }
        Command::Control { common } => {
            webhost::app::run_control(&Settings::load(&overrides(&common))?).await
        }
        Command::Edge {
            common,
            control_url,
        } => {
            webhost::app::run_edge(&Settings::load(&Overrides {
                control_url,
                ..overrides(&common)
            })?)
            .await
        }
        Command::Cell {
            common,
            control_url,
            cell_id,
        } => {
            webhost::app::run_cell(&Settings::load(&Overrides {
                control_url,
                cell_id,
                ..overrides(&common)
            })?)
            .await
        }
        Command::Health { url } => {
            let url = url.unwrap_or_else(|| {
                let port = std::env::var("PORT").unwrap_or_else(|_| "4000".into());
                format!("http://127.0.0.1:{port}/api/health")
            });
            use anyhow::Context as _;
            let answer = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("no answer from {url}"))?;
            anyhow::ensure!(
                answer.status().is_success(),
                "{url} answered {}",
                answer.status()
            );
            println!("healthy: {url}");
            Ok(())
        }
        Command::Simulate(args) => webhost::simulate::run(args).await,
        Command::Bench(args) => webhost::bench::run(args).await,
        Command::Admin(args) => webhost::admin::run(args, &mut std::io::stdout()).await,
        Command::Migrate {
            migrate,
            url,
            token,
            data_dir,
            json,
        } => {
            let args = webhost::admin::AdminArgs {
                url,
                token,
                data_dir,
                json,
                command: webhost::admin::AdminCommand::Migrate(migrate),
            };
            webhost::admin::run(args, &mut std::io::stdout()).await
        }
    }
}
