//! The `fly` provider: a cell is a Fly.io app (`<prefix><cell name>`) with
//! its secrets, one volume for its data and one machine running the cell
//! image in the cell's region — the same service settings as
//! `deploy/fly.toml` (HTTP on 8080 behind TLS, request concurrency 200 soft
//! / 250 hard, a health check on `/api/health`). The control plane then
//! waits for the cell's health check at `https://<app>.fly.dev`.
//!
//! # The database
//!
//! Without [`FlyConfig::postgres`] the cell's database is SQLite on the
//! volume (`DATABASE_URL` is set to it unless the configured secrets give
//! one), and `create` makes everything at once: app, secrets, volume,
//! machine; `poll` waits for the machine to be `started`.
//!
//! With it, the cell's database is a Fly Managed Postgres cluster named
//! `<app>-db` in the cell's region, with PostGIS, and the flow is:
//!
//! 1. `create` ensures the app and asks for the cluster, and returns the
//!    resource (its detail carries the cluster's id). It does not wait.
//! 2. `poll` reads the cluster: not `ready` yet → `Pending { step:
//!    "creating the database" }`; in an error state → `Failed` with Fly's
//!    words. Once it is ready, and while the cell has no machine, `poll`
//!    sets the secrets — `DATABASE_URL` is the cluster's connection string,
//!    whatever the configured secrets say — and ensures the volume and the
//!    machine, so the machine boots with the database already in its
//!    environment. A machine that is `started` → `Ready`.
//!
//! `poll` gets only the [`Resource`] and cannot change it, so every step
//! keeps its state at Fly and finds what an earlier attempt made before
//! making anything: the app by its name, the cluster by its name in the
//! organisation, the volume by its name, the machine by the `webhost-cell`
//! metadata it carries. A retry after a lost answer, or a new process
//! after a crash, carries on where the last one stopped and never makes a
//! second one. Calls go through `webhost-provider-http` (timeouts,
//! retries, `Retry-After`; a POST that makes something is not repeated
//! before looking for what it may have made; a `4xx` is a [`Refused`]
//! error).
//!
//! `destroy` goes in reverse: machines, volumes, the cluster, the app;
//! whatever is already gone is fine.
//!
//! # What the published description does not carry
//!
//! `specs/providers/fly-machines.openapi.yaml` predates secrets and
//! Managed Postgres. From `specs/providers/README.md`: `POST
//! /apps/{app}/secrets`, `POST /v1/postgres` `{org_slug, name, region, plan,
//! disk_size_gb, pg_major_version, postgis_enabled}` → `{data: {id, status,
//! endpoints: {primary: {direct, pooler}}}}`, and `GET /v1/postgres/{id}`
//! (ready when `status` is `ready`). **Inferred** there, and since
//! confirmed by Fly's own client (`superfly/fly-go`,
//! `flaps/flaps_managed_postgres.go`, which `fly mpg create` uses): `GET
//! /v1/postgres?org_slug=…` lists the organisation's clusters as `{data:
//! [{id, name, status, …}]}`, and `DELETE /v1/postgres/{id}` removes one
//! (`404`/`410` when gone). From the same client, where the README is
//! silent: `pg_major_version` is a string; an endpoint is `{host, port}`,
//! not a connection string; the password comes from `GET
//! /v1/postgres/{id}/users/fly-user/credentials` → `{data: {username,
//! password}}`, and the connection string is
//! `postgres://fly-user:<password>@<host>:<port>/fly-db` (what `fly mpg
//! create` prints); a failed cluster is `failed` (or `error`); and a
//! cluster can be `ready` a moment before its endpoints are filled in.
//! Machines are deleted with `?force=true` (Fly's current documentation
//! has it; the stored description does not), so a running machine need
//! not be stopped first.
//!
//! [`Refused`]: webhost_provider::Refused

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use webhost_domain::ProviderKind;
use webhost_provider::{CellSpec, Progress, Provider, Resource};
use webhost_provider_http::{Answer, Auth, Body, Created, Method, ProviderClient, RetryPolicy};

/// Fly's Machines API, unless `FLY_FLAPS_BASE_URL` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://api.machines.dev";

/// The machine metadata that ties it to its cell.
const CELL_METADATA: &str = "webhost-cell";
/// The volume holding the cell's data, mounted at `/data`.
const VOLUME: &str = "cell_data";
/// What `poll` says while the cluster is being made.
pub const CREATING_THE_DATABASE: &str = "creating the database";
/// Cluster states that will not become `ready` (Fly's client knows
/// `failed` and `error`; the others mean it is being removed).
const CLUSTER_FAILED: &[&str] = &["failed", "error", "deleting", "deleted", "destroyed"];
/// The admin user and the database every Managed Postgres cluster is made
/// with (Fly's client composes connection strings with these too).
const CLUSTER_USER: &str = "fly-user";
const CLUSTER_DATABASE: &str = "fly-db";

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
    /// `WEBHOST_CELL_ID` and `DATABASE_URL` (SQLite on the volume unless
    /// given here; the cluster's when `postgres` is set, whatever is given
    /// here).
    pub secrets: BTreeMap<String, String>,
    /// A Managed Postgres cluster per cell; `None`: SQLite on the volume.
    pub postgres: Option<FlyPostgres>,
    pub retry: RetryPolicy,
}

/// The Managed Postgres cluster each cell gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlyPostgres {
    /// Fly's plan name (`basic`, `starter`, `launch`, …).
    pub plan: String,
    pub disk_gb: u32,
    /// PostgreSQL's major version (`16`, `17`).
    pub pg_major: u32,
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

/// Managed Postgres wraps its answers in `data`.
#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Cluster {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    endpoints: Option<Endpoints>,
    /// Set (listings with `include_deleted` only) for a deleted cluster.
    #[serde(default)]
    deleted_at: Option<String>,
    /// What Fly says about a cluster in trouble, if it says anything.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Endpoints {
    primary: Endpoint,
}

#[derive(Deserialize)]
struct Endpoint {
    #[serde(default)]
    direct: Option<HostPort>,
}

#[derive(Deserialize)]
struct HostPort {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: u16,
}

#[derive(Deserialize)]
struct Credentials {
    password: String,
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

    /// The cell's Managed Postgres cluster.
    fn cluster_name(app: &str) -> String {
        format!("{app}-db")
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

    /// The organisation's cluster called `name`, if there is one.
    async fn find_cluster(&self, name: &str) -> anyhow::Result<Option<Cluster>> {
        let clusters: Data<Vec<Cluster>> = self
            .api
            .send(
                Method::GET,
                &format!("/postgres?org_slug={}", self.config.org_slug),
                Body::Empty,
            )
            .await?
            .ok()?
            .json()?;
        Ok(clusters
            .data
            .into_iter()
            .find(|c| c.name == name && c.deleted_at.as_deref().unwrap_or_default().is_empty()))
    }

    /// Finds the cell's cluster or asks for it; its id.
    async fn ensure_cluster(
        &self,
        postgres: &FlyPostgres,
        app: &str,
        spec: &CellSpec,
    ) -> anyhow::Result<String> {
        let name = Self::cluster_name(app);
        if let Some(cluster) = self.find_cluster(&name).await? {
            return Ok(cluster.id);
        }
        let body = json!({
            "org_slug": self.config.org_slug,
            "name": name,
            "region": spec.region.as_str(),
            "plan": postgres.plan,
            "disk_size_gb": postgres.disk_gb,
            "pg_major_version": postgres.pg_major.to_string(),
            // The cell store keeps geofences and positions in PostGIS
            // columns.
            "postgis_enabled": true,
        });
        let find = || self.find_cluster(&name);
        let answer = match self.api.create("/postgres", &body, find).await? {
            Created::Found(cluster) => return Ok(cluster.id),
            Created::Answer(answer) => answer,
        };
        // The name is taken: by our own earlier attempt if the listing
        // (which sees only our organisation) has it now; else the refusal
        // stands (an unknown plan is a 422 too).
        if matches!(answer.status.as_u16(), 409 | 422) {
            if let Some(cluster) = self.find_cluster(&name).await? {
                return Ok(cluster.id);
            }
        }
        Ok(answer.ok()?.json::<Data<Cluster>>()?.data.id)
    }

    /// The cluster by its id; `None` when Fly no longer has it.
    async fn cluster(&self, id: &str) -> anyhow::Result<Option<Cluster>> {
        let answer = self
            .api
            .send(Method::GET, &format!("/postgres/{id}"), Body::Empty)
            .await?;
        if matches!(answer.status.as_u16(), 404 | 410) {
            return Ok(None);
        }
        Ok(Some(answer.ok()?.json::<Data<Cluster>>()?.data))
    }

    /// The cluster's id as `create` recorded it, else (a resource from
    /// before the cluster was asked for) found by its name.
    async fn cluster_id(&self, app: &str, resource: &Resource) -> anyhow::Result<Option<String>> {
        if let Some(id) = resource.detail.get("postgres").and_then(|v| v.as_str()) {
            return Ok(Some(id.to_string()));
        }
        Ok(self
            .find_cluster(&Self::cluster_name(app))
            .await?
            .map(|c| c.id))
    }

    /// `database_url`: the cluster's connection string; `None`: SQLite on
    /// the volume unless the configured secrets name a database.
    async fn ensure_secrets(
        &self,
        app: &str,
        spec: &CellSpec,
        database_url: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut values: BTreeMap<String, String> = self.config.secrets.clone();
        values.insert("WEBHOST_CELL_ID".into(), spec.id.to_string());
        match database_url {
            Some(url) => {
                values.insert("DATABASE_URL".into(), url.to_string());
            }
            None => {
                values
                    .entry("DATABASE_URL".into())
                    .or_insert_with(|| "sqlite:/data/cell.db?mode=rwc".into());
            }
        }
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

    async fn volumes(&self, app: &str) -> anyhow::Result<Vec<Volume>> {
        self.api
            .send(Method::GET, &format!("/apps/{app}/volumes"), Body::Empty)
            .await?
            .ok()?
            .json()
    }

    async fn ensure_volume(&self, app: &str, spec: &CellSpec) -> anyhow::Result<String> {
        if let Some(volume) = self
            .volumes(app)
            .await?
            .into_iter()
            .find(|v| v.name == VOLUME)
        {
            return Ok(volume.id);
        }
        let body = json!({
            "name": VOLUME,
            "region": spec.region.as_str(),
            "size_gb": self.config.volume_gb,
            "encrypted": true,
        });
        let find = || async {
            Ok(self
                .volumes(app)
                .await?
                .into_iter()
                .find(|v| v.name == VOLUME))
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

    async fn machines(&self, app: &str) -> anyhow::Result<Vec<Machine>> {
        self.api
            .send(Method::GET, &format!("/apps/{app}/machines"), Body::Empty)
            .await?
            .ok()?
            .json()
    }

    async fn machine_of(&self, app: &str, spec: &CellSpec) -> anyhow::Result<Option<Machine>> {
        let id = spec.id.to_string();
        Ok(self
            .machines(app)
            .await?
            .into_iter()
            .find(|m| m.config.metadata.get(CELL_METADATA) == Some(&id)))
    }

    /// The cell's machine, found or made on `volume`.
    async fn ensure_machine(
        &self,
        app: &str,
        spec: &CellSpec,
        volume: &str,
    ) -> anyhow::Result<Machine> {
        if let Some(machine) = self.machine_of(app, spec).await? {
            return Ok(machine);
        }
        let body = self.machine_request(spec, volume);
        let find = || self.machine_of(app, spec);
        let machine: Machine = match self
            .api
            .create(&format!("/apps/{app}/machines"), &body, find)
            .await?
        {
            Created::Found(machine) => machine,
            Created::Answer(answer) => answer.ok()?.json()?,
        };
        tracing::info!(cell = %spec.name, %app, machine = %machine.id, "Fly machine created");
        Ok(machine)
    }

    /// Where a machine stands; a stopped one is started.
    async fn machine_progress(&self, app: &str, machine: &Machine) -> anyhow::Result<Progress> {
        Ok(match machine.state.as_str() {
            "started" => Progress::Ready {
                url: format!("https://{app}.fly.dev"),
            },
            "failed" | "destroyed" | "destroying" => Progress::Failed {
                reason: format!("machine {} is {}", machine.id, machine.state),
            },
            "stopped" | "suspended" => {
                self.api
                    .send(
                        Method::POST,
                        &format!("/apps/{app}/machines/{}/start", machine.id),
                        Body::Empty,
                    )
                    .await?
                    .ok()?;
                Progress::Pending {
                    step: format!("starting machine {}", machine.id),
                    percent: 80,
                }
            }
            other => Progress::Pending {
                step: format!("machine {other}"),
                percent: 70,
            },
        })
    }

    /// `poll` with a Managed Postgres cluster: the cluster first, then
    /// what needs its connection string.
    async fn poll_with_postgres(
        &self,
        spec: &CellSpec,
        app: &str,
        resource: &Resource,
    ) -> anyhow::Result<Progress> {
        let name = Self::cluster_name(app);
        let cluster = match self.cluster_id(app, resource).await? {
            Some(id) => self.cluster(&id).await?,
            None => None,
        };
        let Some(cluster) = cluster else {
            return Ok(Progress::Failed {
                reason: format!("the database cluster {name} of app {app} is gone"),
            });
        };
        if CLUSTER_FAILED.contains(&cluster.status.as_str()) {
            let words = [cluster.error.as_deref(), cluster.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Progress::Failed {
                reason: format!(
                    "database cluster {name} ({}) is {}{}{words}",
                    cluster.id,
                    cluster.status,
                    if words.is_empty() { "" } else { ": " },
                ),
            });
        }
        if cluster.status != "ready" {
            return Ok(Progress::Pending {
                step: CREATING_THE_DATABASE.into(),
                percent: 20,
            });
        }
        // The direct endpoint, not the pooler: the pooler is PgBouncer,
        // and in transaction mode (which an operator may choose for the
        // cluster) a session is not kept between transactions — sqlx
        // caches named prepared statements per connection, and the cell
        // store's migrations (sqlx::migrate) hold a session advisory lock,
        // both of which break there. A cell is one machine with a bounded
        // sqlx pool, so it does not need PgBouncer's multiplexing.
        let direct = cluster
            .endpoints
            .and_then(|e| e.primary.direct)
            .filter(|d| !d.host.is_empty() && d.port != 0);
        let Some(direct) = direct else {
            // Ready a moment before its endpoints are filled in.
            return Ok(Progress::Pending {
                step: CREATING_THE_DATABASE.into(),
                percent: 40,
            });
        };
        let machine = match self.machine_of(app, spec).await? {
            Some(machine) => machine,
            None => {
                // Before the machine exists, so it boots with the database.
                let url = self.connection_string(&cluster.id, &direct).await?;
                self.ensure_secrets(app, spec, Some(&url)).await?;
                let volume = self.ensure_volume(app, spec).await?;
                self.ensure_machine(app, spec, &volume).await?
            }
        };
        self.machine_progress(app, &machine).await
    }

    /// `postgres://fly-user:<password>@<host>:<port>/fly-db`, the password
    /// asked for now (it is not in the cluster's answer).
    async fn connection_string(&self, cluster: &str, direct: &HostPort) -> anyhow::Result<String> {
        let credentials: Data<Credentials> = self
            .api
            .send(
                Method::GET,
                &format!("/postgres/{cluster}/users/{CLUSTER_USER}/credentials"),
                Body::Empty,
            )
            .await?
            .ok()?
            .json()?;
        Ok(format!(
            "postgres://{CLUSTER_USER}:{}@{}:{}/{CLUSTER_DATABASE}",
            userinfo_escaped(&credentials.data.password),
            direct.host,
            direct.port
        ))
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

/// `text` percent-encoded for the user-info part of a URL: everything but
/// RFC 3986's unreserved characters.
fn userinfo_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A DELETE whose `404` (or `410`) means "already gone".
fn gone_or_ok(answer: Answer) -> anyhow::Result<()> {
    if matches!(answer.status.as_u16(), 404 | 410) {
        return Ok(());
    }
    answer.ok()?;
    Ok(())
}

#[async_trait]
impl Provider for Fly {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Fly
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        let app = self.app(spec);
        self.ensure_app(&app).await?;
        if let Some(postgres) = &self.config.postgres {
            let cluster = self.ensure_cluster(postgres, &app, spec).await?;
            tracing::info!(cell = %spec.name, %app, %cluster, "Fly Postgres cluster asked for");
            return Ok(Resource {
                provider: ProviderKind::Fly,
                external_id: app.clone(),
                detail: json!({ "postgres": cluster, "database": Self::cluster_name(&app) }),
            });
        }
        self.ensure_secrets(&app, spec, None).await?;
        let volume = self.ensure_volume(&app, spec).await?;
        let machine = self.ensure_machine(&app, spec, &volume).await?;
        Ok(Resource {
            provider: ProviderKind::Fly,
            external_id: app,
            detail: json!({ "machine": machine.id, "volume": volume }),
        })
    }

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress> {
        let app = &resource.external_id;
        if self.config.postgres.is_some() || resource.detail.get("postgres").is_some() {
            return self.poll_with_postgres(spec, app, resource).await;
        }
        let Some(machine) = self.machine_of(app, spec).await? else {
            return Ok(Progress::Failed {
                reason: format!("the machine of app {app} is gone"),
            });
        };
        self.machine_progress(app, &machine).await
    }

    /// In reverse: machines, volumes, the cluster, the app (deleting the
    /// app would take its machines and volumes, but not the cluster).
    async fn destroy(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<()> {
        let app = self.app(spec);
        let listed = self
            .api
            .send(Method::GET, &format!("/apps/{app}/machines"), Body::Empty)
            .await?;
        let app_exists = listed.status.as_u16() != 404;
        if app_exists {
            // The app is the cell's alone: every machine in it goes.
            let machines: Vec<Machine> = listed.ok()?.json()?;
            for machine in machines {
                let answer = self
                    .api
                    .send(
                        Method::DELETE,
                        &format!("/apps/{app}/machines/{}?force=true", machine.id),
                        Body::Empty,
                    )
                    .await?;
                gone_or_ok(answer)?;
            }
            for volume in self.volumes(&app).await? {
                let answer = self
                    .api
                    .send(
                        Method::DELETE,
                        &format!("/apps/{app}/volumes/{}", volume.id),
                        Body::Empty,
                    )
                    .await?;
                gone_or_ok(answer)?;
            }
        }
        let has_cluster =
            self.config.postgres.is_some() || resource.detail.get("postgres").is_some();
        if has_cluster {
            if let Some(id) = self.cluster_id(&app, resource).await? {
                let answer = self
                    .api
                    .send(Method::DELETE, &format!("/postgres/{id}"), Body::Empty)
                    .await?;
                gone_or_ok(answer)?;
                tracing::info!(cell = %spec.name, %app, cluster = %id, "Fly Postgres cluster deleted");
            }
        }
        if app_exists {
            let answer = self
                .api
                .send(Method::DELETE, &format!("/apps/{app}"), Body::Empty)
                .await?;
            gone_or_ok(answer)?;
            tracing::info!(cell = %spec.name, %app, "Fly app deleted");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::userinfo_escaped;

    #[test]
    fn a_password_is_escaped_for_the_connection_string() {
        assert_eq!(userinfo_escaped("aZ09-._~"), "aZ09-._~");
        assert_eq!(userinfo_escaped("p@ss/w:rd?#%"), "p%40ss%2Fw%3Ard%3F%23%25");
        assert_eq!(userinfo_escaped("é"), "%C3%A9");
    }
}
