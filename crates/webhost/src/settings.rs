//! One typed `Settings`: defaults < generated secrets (embedded mode) <
//! config file < environment (SPEC §3 names) < command-line flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use webhost_domain::ProviderKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// SQLite under the data dir, secrets generated and kept there.
    Embedded,
    /// Every secret must come from the environment or the config file.
    Production,
}

#[derive(Debug, Deserialize)]
pub struct Settings {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub listen: String,
    pub osmand_listen: String,
    pub teltonika_listen: String,
    /// `PORT`: when set, the edge listens on `0.0.0.0:PORT`.
    pub port: Option<u16>,
    pub database_url: Option<String>,
    pub database_read_url: Option<String>,
    pub redis_url: Option<String>,
    pub pool_size: u32,
    pub public_host: Option<String>,
    pub secret_key_base: Option<SecretString>,
    pub token_signing_secret: Option<SecretString>,
    pub webhost_admin_token: Option<SecretString>,
    pub token_ttl_secs: i64,
    /// How long a job worker's claim holds without a heartbeat: a job whose
    /// worker died is run again after at most about this long.
    pub job_lease_secs: u64,
    /// How often idle job workers look for due jobs.
    pub job_poll_ms: u64,
    /// How long a `local` cell takes to "boot" after it is created (0: at
    /// once). Lets demos and tests see provisioning happen in the
    /// background, as it does with real providers.
    pub local_provision_delay_ms: u64,
    /// Multiplies every job's retry delays (1 in production; tests use a
    /// small one to see a job's whole retry schedule quickly).
    pub job_backoff_scale: f64,
    /// Lets tenants' webhooks reach private, loopback and link-local
    /// addresses (an operator's own network, tests); off by default (SSRF).
    pub webhook_allow_private: bool,
    pub infrastructure_provider: ProviderKind,
    pub primary_region: Option<String>,
    pub regions: Option<String>,
    pub fly_region: Option<String>,
    pub fly_api_token: Option<SecretString>,
    pub hetzner_api_token: Option<SecretString>,
    pub hetzner_robot_user: Option<String>,
    pub hetzner_robot_password: Option<SecretString>,
    pub stripe_secret_key: Option<SecretString>,
    pub stripe_webhook_secret: Option<SecretString>,
    /// How long a tenant may stay past due (a failed Stripe payment) before
    /// it is suspended; 7 days by default (Stripe's retries span about a
    /// week). Tests shorten it instead of waiting.
    pub billing_grace_secs: u64,
    /// Tenant moves (SPEC §6): how long the source copy is kept for a
    /// rollback (7 days), the longest write freeze (5 s), rows per copied
    /// chunk, and how often a waiting move looks again.
    pub move_grace_secs: u64,
    pub move_freeze_deadline_ms: u64,
    pub move_chunk_rows: u32,
    pub move_recheck_ms: u64,
    /// Test hook: abort the process (as `kill -9` would) right after a
    /// move job has persisted this many steps.
    pub test_kill_after_move_steps: Option<u32>,
    /// Test hook: a move's job stops once, after this many steps (a number)
    /// or on entering this state (a name), to be retried by the operator.
    pub test_stop_move_at: Option<String>,
    pub yjs_sync_enabled: bool,
    pub monitoring_enabled: bool,
    /// Split deployments: where the control plane is.
    pub control_url: Option<String>,
    /// Split deployments: this cell's id.
    pub cell_id: Option<String>,
    /// `FLY_ORG`: the organisation Fly.io cells are made in.
    pub fly_org: Option<String>,
    /// `FLY_FLAPS_BASE_URL`, `HCLOUD_ENDPOINT`, `HETZNER_ROBOT_URL`: the
    /// providers' API base URLs (fakes, proxies).
    pub fly_flaps_base_url: Option<String>,
    pub hcloud_endpoint: Option<String>,
    pub hetzner_robot_url: Option<String>,
    /// Remote cells: the image they run (`deploy/Dockerfile`, pushed).
    pub cell_image: Option<String>,
    /// Remote cells: a `.tar.gz` of `deploy/hetzner` the bootstrap fetches.
    pub deploy_url: Option<String>,
    /// Remote cells are reached at `https://<cell name>.<cell_domain>`.
    pub cell_domain: Option<String>,
    /// How the control plane reaches remote cells instead, when set: a
    /// template with `{name}` (a private network, a proxy).
    pub cell_url: Option<String>,
    /// Hetzner Cloud cells: server type and image when the template names
    /// none.
    pub hetzner_server_type: String,
    pub hetzner_image: String,
    /// Dedicated cells: the Robot product when the template names none, the
    /// OS Robot installs, the SSH keys (fingerprints) it installs, the
    /// private key the bootstrap logs in with, and Robot's test orders.
    pub robot_product: String,
    pub robot_dist: String,
    pub ssh_key_fingerprints: Option<String>,
    pub ssh_identity_file: Option<PathBuf>,
    pub robot_test_orders: bool,
    /// Fly.io cells: app name prefix, volume and machine size.
    pub fly_app_prefix: String,
    pub fly_volume_gb: u32,
    pub fly_cpus: u32,
    pub fly_memory_mb: u32,
    /// Fly.io cells keep their data in a managed Postgres of this plan
    /// (SQLite on the volume when unset).
    pub fly_postgres_plan: Option<String>,
    pub fly_postgres_disk_gb: u32,
    /// Converts Hetzner's EUR prices into the catalog's USD.
    pub usd_per_eur: f64,
    /// `local` cells from `dedicated` templates take this long to deliver
    /// (demos and tests of stop-gap placement).
    pub local_dedicated_delay_ms: u64,
}

/// Variables read from the environment as they are named in SPEC §3.
const ENV_NAMES: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_READ_URL",
    "REDIS_URL",
    "POOL_SIZE",
    "PORT",
    "PUBLIC_HOST",
    "SECRET_KEY_BASE",
    "TOKEN_SIGNING_SECRET",
    "INFRASTRUCTURE_PROVIDER",
    "PRIMARY_REGION",
    "REGIONS",
    "FLY_REGION",
    "FLY_API_TOKEN",
    "HETZNER_API_TOKEN",
    "HETZNER_ROBOT_USER",
    "HETZNER_ROBOT_PASSWORD",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "YJS_SYNC_ENABLED",
    "MONITORING_ENABLED",
    "WEBHOST_ADMIN_TOKEN",
    "FLY_ORG",
    "FLY_FLAPS_BASE_URL",
    "HCLOUD_ENDPOINT",
    "HETZNER_ROBOT_URL",
];

/// Settings also read from `WEBHOST_<NAME>` (the name upper-cased).
const PREFIXED: &[&str] = &[
    "mode",
    "data_dir",
    "control_url",
    "cell_id",
    "job_lease_secs",
    "job_poll_ms",
    "local_provision_delay_ms",
    "job_backoff_scale",
    "webhook_allow_private",
    "cell_image",
    "deploy_url",
    "cell_domain",
    "cell_url",
    "hetzner_server_type",
    "hetzner_image",
    "robot_product",
    "robot_dist",
    "ssh_key_fingerprints",
    "ssh_identity_file",
    "robot_test_orders",
    "fly_app_prefix",
    "fly_volume_gb",
    "fly_cpus",
    "fly_memory_mb",
    "fly_postgres_plan",
    "fly_postgres_disk_gb",
    "usd_per_eur",
    "local_dedicated_delay_ms",
    "billing_grace_secs",
    "move_grace_secs",
    "move_freeze_deadline_ms",
    "move_chunk_rows",
    "move_recheck_ms",
    "test_kill_after_move_steps",
    "test_stop_move_at",
];

/// Whether WebHost reads the environment variable `name`: the SPEC §3
/// names, the `WEBHOST_*` settings, and `RUST_LOG` (logging).
pub fn reads_variable(name: &str) -> bool {
    name == "RUST_LOG"
        || ENV_NAMES.contains(&name)
        || name.strip_prefix("WEBHOST_").is_some_and(|rest| {
            PREFIXED
                .iter()
                .any(|setting| setting.eq_ignore_ascii_case(rest))
        })
}

/// Flags given on the command line; `None` leaves the setting alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub osmand_listen: Option<String>,
    pub teltonika_listen: Option<String>,
    pub control_url: Option<String>,
    pub cell_id: Option<String>,
    pub database_url: Option<String>,
    pub job_lease_secs: Option<u64>,
    pub job_poll_ms: Option<u64>,
    pub local_provision_delay_ms: Option<u64>,
    pub local_dedicated_delay_ms: Option<u64>,
    pub job_backoff_scale: Option<f64>,
    pub webhook_allow_private: Option<bool>,
    /// `STRIPE_WEBHOOK_SECRET` (tests: the process environment is shared).
    pub stripe_webhook_secret: Option<String>,
    pub billing_grace_secs: Option<u64>,
    pub move_grace_secs: Option<u64>,
    pub move_freeze_deadline_ms: Option<u64>,
    pub move_chunk_rows: Option<u64>,
    pub move_recheck_ms: Option<u64>,
    pub test_stop_move_at: Option<String>,
}

/// The secrets the embedded default generates once and keeps.
const GENERATED: [&str; 3] = [
    "secret_key_base",
    "token_signing_secret",
    "webhost_admin_token",
];

fn defaults() -> Figment {
    Figment::new()
        .merge(Serialized::default("mode", "embedded"))
        .merge(Serialized::default("data_dir", "./data"))
        .merge(Serialized::default("listen", "127.0.0.1:4000"))
        .merge(Serialized::default("osmand_listen", "127.0.0.1:5055"))
        .merge(Serialized::default("teltonika_listen", "127.0.0.1:5027"))
        .merge(Serialized::default("pool_size", 10))
        .merge(Serialized::default("token_ttl_secs", 24 * 3600))
        .merge(Serialized::default("job_lease_secs", 60))
        .merge(Serialized::default("job_poll_ms", 500))
        .merge(Serialized::default("local_provision_delay_ms", 0))
        .merge(Serialized::default("job_backoff_scale", 1.0))
        .merge(Serialized::default("webhook_allow_private", false))
        .merge(Serialized::default("infrastructure_provider", "local"))
        .merge(Serialized::default("yjs_sync_enabled", true))
        .merge(Serialized::default("monitoring_enabled", true))
        .merge(Serialized::default("hetzner_server_type", "cx42"))
        .merge(Serialized::default("hetzner_image", "debian-12"))
        .merge(Serialized::default("robot_product", "AX52"))
        .merge(Serialized::default("robot_dist", "Debian 12 base"))
        .merge(Serialized::default("robot_test_orders", false))
        .merge(Serialized::default("fly_app_prefix", "webhost-"))
        .merge(Serialized::default("fly_volume_gb", 10))
        .merge(Serialized::default("fly_cpus", 2))
        .merge(Serialized::default("fly_memory_mb", 4096))
        .merge(Serialized::default("fly_postgres_disk_gb", 20))
        .merge(Serialized::default("usd_per_eur", 1.08))
        .merge(Serialized::default("local_dedicated_delay_ms", 0))
        .merge(Serialized::default("billing_grace_secs", 7 * 24 * 3600))
        .merge(Serialized::default("move_grace_secs", 7 * 24 * 3600))
        .merge(Serialized::default("move_freeze_deadline_ms", 5_000))
        .merge(Serialized::default("move_chunk_rows", 5_000))
        .merge(Serialized::default("move_recheck_ms", 30_000))
}

fn overrides(figment: Figment, o: &Overrides) -> Figment {
    let mut figment = figment;
    let mut set = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            figment = std::mem::take(&mut figment).merge(Serialized::default(key, value));
        }
    };
    set("mode", o.mode.map(|m| format!("{m:?}").to_lowercase()));
    set(
        "data_dir",
        o.data_dir.as_ref().map(|d| d.display().to_string()),
    );
    set("listen", o.listen.clone());
    set("osmand_listen", o.osmand_listen.clone());
    set("teltonika_listen", o.teltonika_listen.clone());
    set("control_url", o.control_url.clone());
    set("cell_id", o.cell_id.clone());
    set("database_url", o.database_url.clone());
    set("stripe_webhook_secret", o.stripe_webhook_secret.clone());
    set("test_stop_move_at", o.test_stop_move_at.clone());
    for (key, value) in [
        ("job_lease_secs", o.job_lease_secs),
        ("job_poll_ms", o.job_poll_ms),
        ("local_provision_delay_ms", o.local_provision_delay_ms),
        ("local_dedicated_delay_ms", o.local_dedicated_delay_ms),
        ("billing_grace_secs", o.billing_grace_secs),
        ("move_grace_secs", o.move_grace_secs),
        ("move_freeze_deadline_ms", o.move_freeze_deadline_ms),
        ("move_chunk_rows", o.move_chunk_rows),
        ("move_recheck_ms", o.move_recheck_ms),
    ] {
        if let Some(value) = value {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    if let Some(scale) = o.job_backoff_scale {
        figment = figment.merge(Serialized::default("job_backoff_scale", scale));
    }
    if let Some(allow) = o.webhook_allow_private {
        figment = figment.merge(Serialized::default("webhook_allow_private", allow));
    }
    figment
}

/// The environment's layer: the SPEC §3 names as they are, `WEBHOST_*`
/// without the prefix, values read the way figment's `Env` reads them
/// (`10` a number, `true` a boolean).
fn environment(vars: &[(String, String)]) -> Serialized<figment::value::Dict> {
    let mut layer = figment::value::Dict::new();
    for (name, value) in vars {
        let key = if ENV_NAMES.contains(&name.as_str()) {
            name.to_ascii_lowercase()
        } else {
            match name.strip_prefix("WEBHOST_") {
                Some(rest) if PREFIXED.iter().any(|p| p.eq_ignore_ascii_case(rest)) => {
                    rest.to_ascii_lowercase()
                }
                _ => continue,
            }
        };
        let value = value
            .parse::<figment::value::Value>()
            .unwrap_or_else(|never| match never {});
        layer.insert(key, value);
    }
    Serialized::defaults(layer)
}

impl Settings {
    /// Reads the layers; in embedded mode, generates missing secrets once
    /// under the data dir. In production mode a missing secret is an error
    /// naming its variable.
    pub fn load(o: &Overrides) -> anyhow::Result<Self> {
        Self::load_from(o, std::env::vars())
    }

    /// [`Self::load`] with `vars` standing for the environment (tests; the
    /// process environment is shared by every test thread).
    pub fn load_from(
        o: &Overrides,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = o
            .config
            .clone()
            .or_else(|| var("WEBHOST_CONFIG").map(PathBuf::from));
        if let Some(path) = &config {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
        }
        let layered = |secrets: Option<&Path>| {
            let mut figment = defaults();
            if let Some(secrets) = secrets {
                figment = figment.merge(Toml::file(secrets));
            }
            if let Some(path) = &config {
                figment = figment.merge(Toml::file(path));
            }
            overrides(figment.merge(environment(&vars)), o)
        };
        let first: Settings = layered(None).extract().context("reading settings")?;
        let settings = if first.mode == Mode::Embedded {
            let secrets = ensure_secrets(&first.data_dir)?;
            layered(Some(&secrets))
                .extract()
                .context("reading settings")?
        } else {
            first
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.mode == Mode::Production {
            let required = [
                ("SECRET_KEY_BASE", self.secret_key_base.is_some()),
                ("TOKEN_SIGNING_SECRET", self.token_signing_secret.is_some()),
                ("WEBHOST_ADMIN_TOKEN", self.webhost_admin_token.is_some()),
                ("DATABASE_URL", self.database_url.is_some()),
            ];
            for (name, present) in required {
                anyhow::ensure!(present, "{name} must be set in production mode");
            }
        }
        for (name, secret) in [
            ("SECRET_KEY_BASE", &self.secret_key_base),
            ("TOKEN_SIGNING_SECRET", &self.token_signing_secret),
        ] {
            if let Some(secret) = secret {
                anyhow::ensure!(
                    secret.expose_secret().len() >= 32,
                    "{name} must be at least 32 characters"
                );
            }
        }
        if let Some(url) = &self.database_url {
            anyhow::ensure!(
                url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"),
                "DATABASE_URL must start with postgres:// or sqlite:"
            );
        }
        Ok(())
    }

    /// The address the edge listens on.
    pub fn edge_listen(&self) -> String {
        match self.port {
            Some(port) => format!("0.0.0.0:{port}"),
            None => self.listen.clone(),
        }
    }

    pub fn region(&self) -> String {
        self.fly_region
            .clone()
            .or_else(|| self.primary_region.clone())
            .unwrap_or_else(|| "local".into())
    }

    pub fn secret_key_base(&self) -> anyhow::Result<&str> {
        self.secret_key_base
            .as_ref()
            .map(|s| s.expose_secret())
            .context("SECRET_KEY_BASE is not set")
    }

    pub fn token_signing_secret(&self) -> anyhow::Result<&str> {
        self.token_signing_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .context("TOKEN_SIGNING_SECRET is not set")
    }

    /// The operator's credential, when set (always, in the embedded mode).
    pub fn admin_token(&self) -> Option<&str> {
        self.webhost_admin_token
            .as_ref()
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
    }

    /// What the control plane needs for Stripe billing.
    pub fn billing(&self) -> webhost_control::BillingSettings {
        webhost_control::BillingSettings {
            webhook_secret: self
                .stripe_webhook_secret
                .as_ref()
                .map(|s| s.expose_secret())
                .filter(|s| !s.is_empty())
                .map(webhost_control::WebhookSecret::new),
            grace: std::time::Duration::from_secs(self.billing_grace_secs),
        }
    }

    /// How tenant moves run.
    pub fn moves(&self) -> webhost_control::MoveSettings {
        let defaults = webhost_move::MovePolicy::default();
        webhost_control::MoveSettings {
            policy: webhost_move::MovePolicy {
                chunk_rows: self.move_chunk_rows.clamp(1, 5_000),
                freeze_deadline_ms: self.move_freeze_deadline_ms.max(1),
                grace_period_secs: self.move_grace_secs,
                ..defaults
            },
            recheck: std::time::Duration::from_millis(self.move_recheck_ms.clamp(10, 600_000)),
            kill_after_steps: self.test_kill_after_move_steps,
            stop_at: self
                .test_stop_move_at
                .as_deref()
                .map(webhost_control::StopAt::parse),
        }
    }

    pub fn job_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.job_lease_secs.max(1))
    }

    pub fn job_poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.job_poll_ms.clamp(10, 60_000))
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"))
    }
}

/// Writes `secrets.toml` under the data dir with fresh random values for
/// any generated secret it does not hold yet; returns its path.
fn ensure_secrets(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use rand::RngCore;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let path = data_dir.join("secrets.toml");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text = existing.clone();
    for key in GENERATED {
        if !existing.lines().any(|l| {
            l.trim_start().starts_with(&format!("{key} "))
                || l.trim_start().starts_with(&format!("{key}="))
        }) {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            text.push_str(&format!("{key} = \"{}\"\n", hex::encode(bytes)));
        }
    }
    if text != existing {
        write_private(&path, &text)?;
    }
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(text.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
