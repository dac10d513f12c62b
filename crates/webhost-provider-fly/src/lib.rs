//! The `fly` provider: a cell is a Fly.io app (`<prefix><cell name>`) with
//! its secrets, one volume for its data and one machine running the cell
//! image in the cell's region — the same service settings as
//! `deploy/fly.toml` (HTTP on 8080 behind TLS, request concurrency 200 soft
//! / 250 hard, a health check on `/api/health`). The control plane then
//! waits for the cell's health check at `https://<app>.fly.dev`.
//!
//! Each step finds what an earlier attempt made before making anything:
//! the app by its name, the volume by its name, the machine by the
//! `webhost-cell` metadata it carries, so a retry after a lost answer or a
//! crash never makes a second one. Calls go through `webhost-provider-http`
//! (timeouts, retries, `Retry-After`).
//!
//! The cell's database is SQLite on the volume (`DATABASE_URL` is set to it
//! unless the bootstrap values give one): managed Postgres (`POST
//! /v1/postgres`, not in the published description) is not wired yet.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use webhost_domain::ProviderKind;
use webhost_provider::{CellSpec, Progress, Provider, Resource};
use webhost_provider_http::{Auth, Body, Created, Method, ProviderClient, RetryPolicy};

/// Fly's Machines API, unless `FLY_FLAPS_BASE_URL` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://api.machines.dev";

/// The machine metadata that ties it to its cell.
const CELL_METADATA: &str = "webhost-cell";
/// The volume holding the cell's data, mounted at `/data`.
const VOLUME: &str = "cell_data";

#[derive(Clone, Debug)]
pub struct FlyConfig {
    pub endpoint: String,
    pub token: String,
    /// `FLY_ORG`.
    pub org_slug: String,
    /// Apps are named `<app_prefix><cell name>` (Fly app names are global).
    pub app_prefix: String,
    /// The cell image (`deploy/Dockerfile`, pushed to a registry Fly reads).
    pub image: String,
    pub volume_gb: u32,
    pub cpus: u32,
    pub memory_mb: u32,
    /// Secrets every cell gets (`SECRET_KEY_BASE`, `TOKEN_SIGNING_SECRET`,
    /// `WEBHOST_ADMIN_TOKEN`, `WEBHOST_CONTROL_URL`, …); the provider adds
    /// `WEBHOST_CELL_ID` and, unless given, `DATABASE_URL`.
    pub secrets: BTreeMap<String, String>,
    pub retry: RetryPolicy,
}

pub struct Fly {
    api: ProviderClient,
    config: FlyConfig,
}

#[derive(Deserialize)]
struct Volume {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Machine {
    id: String,
    state: String,
    #[serde(default)]
    config: MachineConfig,
}

#[derive(Deserialize, Default)]
struct MachineConfig {
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Fly {
    pub fn new(config: FlyConfig) -> anyhow::Result<Self> {
        let api = ProviderClient::new(
            "Fly Machines",
            format!("{}/v1", config.endpoint.trim_end_matches('/')),
            Auth::Bearer(config.token.clone()),
            config.retry,
        )?;
        Ok(Self { api, config })
    }

    fn app(&self, spec: &CellSpec) -> String {
        format!("{}{}", self.config.app_prefix, spec.name)
    }

    async fn ensure_app(&self, app: &str) -> anyhow::Result<()> {
        let found = self
            .api
            .send(Method::GET, &format!("/apps/{app}"), Body::Empty)
            .await?;
        if found.status.is_success() {
            return Ok(());
        }
        if found.status.as_u16() != 404 {
            found.ok()?;
        }
        let body = json!({ "app_name": app, "org_slug": self.config.org_slug });
        let exists = || async {
            let found = self
                .api
                .send(Method::GET, &format!("/apps/{app}"), Body::Empty)
                .await?;
            Ok(found.status.is_success().then_some(()))
        };
        match self.api.create("/apps", &body, exists).await? {
            Created::Found(()) => Ok(()),
            Created::Answer(answer) if answer.status.is_success() => Ok(()),
            Created::Answer(answer) => {
                // Taken: ours if GET (which sees only our organisation's
                // apps) finds it, else someone else's name.
                if answer.status.as_u16() == 409 && exists().await?.is_some() {
                    return Ok(());
                }
                answer.ok()?;
                Ok(())
            }
        }
    }

    async fn ensure_secrets(&self, app: &str, spec: &CellSpec) -> anyhow::Result<()> {
        let mut values: BTreeMap<String, String> = self.config.secrets.clone();
        values.insert("WEBHOST_CELL_ID".into(), spec.id.to_string());
        values
            .entry("DATABASE_URL".into())
            .or_insert_with(|| "sqlite:/data/cell.db?mode=rwc".into());
        // Setting the same values again is a no-op: safe to repeat.
        self.api
            .send(
                Method::POST,
                &format!("/apps/{app}/secrets"),
                Body::Json(&json!({ "values": values })),
            )
            .await?
            .ok()?;
        Ok(())
    }

    async fn ensure_volume(&self, app: &str, spec: &CellSpec) -> anyhow::Result<String> {
        let volumes: Vec<Volume> = self
            .api
            .send(Method::GET, &format!("/apps/{app}/volumes"), Body::Empty)
            .await?
            .ok()?
            .json()?;
        if let Some(volume) = volumes.into_iter().find(|v| v.name == VOLUME) {
            return Ok(volume.id);
        }
        let body = json!({
            "name": VOLUME,
            "region": spec.region.as_str(),
            "size_gb": self.config.volume_gb,
            "encrypted": true,
        });
        let find = || async {
            let volumes: Vec<Volume> = self
                .api
                .send(Method::GET, &format!("/apps/{app}/volumes"), Body::Empty)
                .await?
                .ok()?
                .json()?;
            Ok(volumes.into_iter().find(|v| v.name == VOLUME))
        };
        match self
            .api
            .create(&format!("/apps/{app}/volumes"), &body, find)
            .await?
        {
            Created::Found(volume) => Ok(volume.id),
            Created::Answer(answer) => Ok(answer.ok()?.json::<Volume>()?.id),
        }
    }

    async fn machine_of(&self, app: &str, spec: &CellSpec) -> anyhow::Result<Option<Machine>> {
        let machines: Vec<Machine> = self
            .api
            .send(Method::GET, &format!("/apps/{app}/machines"), Body::Empty)
            .await?
            .ok()?
            .json()?;
        let id = spec.id.to_string();
        Ok(machines
            .into_iter()
            .find(|m| m.config.metadata.get(CELL_METADATA) == Some(&id)))
    }

    fn machine_request(&self, spec: &CellSpec, volume: &str) -> serde_json::Value {
        json!({
            "name": spec.name,
            "region": spec.region.as_str(),
            "config": {
                "image": self.config.image,
                "init": { "cmd": ["cell"] },
                "env": {
                    "PORT": "8080",
                    "WEBHOST_MODE": "production",
                    "INFRASTRUCTURE_PROVIDER": "fly",
                    "PRIMARY_REGION": spec.region.as_str(),
                },
                "guest": {
                    "cpu_kind": "shared",
                    "cpus": self.config.cpus,
                    "memory_mb": self.config.memory_mb,
                },
                "metadata": { CELL_METADATA: spec.id.to_string() },
                "mounts": [{ "volume": volume, "path": "/data" }],
                "restart": { "policy": "always" },
                "services": [{
                    "protocol": "tcp",
                    "internal_port": 8080,
                    "autostop": false,
                    "ports": [
                        { "port": 443, "handlers": ["tls", "http"] },
                        { "port": 80, "handlers": ["http"], "force_https": true },
                    ],
                    "concurrency": { "type": "requests", "soft_limit": 200, "hard_limit": 250 },
                }],
                "checks": {
                    "health": {
                        "type": "http",
                        "port": 8080,
                        "method": "GET",
                        "path": "/api/health",
                        "interval": "15s",
                        "timeout": "5s",
                        "grace_period": "20s",
                    }
                },
            },
        })
    }
}

#[async_trait]
impl Provider for Fly {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Fly
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        let app = self.app(spec);
        self.ensure_app(&app).await?;
        self.ensure_secrets(&app, spec).await?;
        let volume = self.ensure_volume(&app, spec).await?;
        let machine = match self.machine_of(&app, spec).await? {
            Some(machine) => machine,
            None => {
                let body = self.machine_request(spec, &volume);
                let find = || self.machine_of(&app, spec);
                match self
                    .api
                    .create(&format!("/apps/{app}/machines"), &body, find)
                    .await?
                {
                    Created::Found(machine) => machine,
                    Created::Answer(answer) => answer.ok()?.json()?,
                }
            }
        };
        tracing::info!(cell = %spec.name, %app, machine = %machine.id, "Fly machine created");
        Ok(Resource {
            provider: ProviderKind::Fly,
            external_id: app,
            detail: json!({ "machine": machine.id, "volume": volume }),
        })
    }

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress> {
        let app = &resource.external_id;
        let Some(machine) = self.machine_of(app, spec).await? else {
            return Ok(Progress::Failed {
                reason: format!("the machine of app {app} is gone"),
            });
        };
        Ok(match machine.state.as_str() {
            "started" => Progress::Ready {
                url: format!("https://{app}.fly.dev"),
            },
            "failed" | "destroyed" | "destroying" => Progress::Failed {
                reason: format!("machine {} is {}", machine.id, machine.state),
            },
            other => Progress::Pending {
                step: format!("machine {other}"),
                percent: 50,
            },
        })
    }

    /// Deleting the app takes its machines, volumes and secrets with it.
    async fn destroy(&self, spec: &CellSpec, _resource: &Resource) -> anyhow::Result<()> {
        let app = self.app(spec);
        let answer = self
            .api
            .send(Method::DELETE, &format!("/apps/{app}"), Body::Empty)
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(());
        }
        answer.ok()?;
        tracing::info!(cell = %spec.name, %app, "Fly app deleted");
        Ok(())
    }
}
