//! Hetzner Robot: a cell is a dedicated server (an `AX52`, …) ordered
//! through the Robot web service, reinstalled with a plain OS and turned
//! into a cell by `deploy/hetzner/bootstrap.sh`, run over SSH.
//!
//! The flow, every step found again at Robot after a retry or a crash (a
//! `poll` only reads the [`Resource`]; whatever it must remember, it keeps
//! at Robot):
//!
//! 1. `create` looks for an order transaction whose `comment` is
//!    `webhost-cell <cell id>` (`GET /order/server/transaction`), else
//!    orders one (`POST /order/server/transaction`, a form). A POST whose
//!    answer is lost is not sent again before the list is looked at
//!    ([`ProviderClient::create_with`]), so a cell never orders two
//!    servers. The resource is the transaction id.
//! 2. `poll` follows the transaction (`in process` → `ready` with the
//!    server's number and address, or `cancelled`). Once the server is
//!    there, its Robot *server name* is the state: not yet named by us →
//!    activate the Linux install (`POST /boot/{n}/linux`), hardware reset
//!    (`POST /reset/{n}`), name it `<cell> installing`; named so and the
//!    install still active (`GET /boot/{n}/linux`) → waiting; the install
//!    done → run the bootstrap over SSH ([`RemoteRunner`]; the script is
//!    idempotent, so a run cut short is simply run again), then name the
//!    server `<cell>`; named `<cell>` → ready. Do not rename a server by
//!    hand while its cell is being made: a name that is not ours means
//!    "install it".
//! 3. `destroy` cancels the server (`POST /server/{n}/cancellation`,
//!    `cancellation_date=now`); what is cancelled or gone already is fine.
//!    Robot cannot cancel an order still in process: that comes back as a
//!    [`Throttled`] error, so the job waits for the delivery without
//!    counting attempts. Robot lists transactions for about 30 days; past
//!    that, the server is found by its name.
//! 4. `monthly_cost_cents` reads the product list's monthly net EUR price
//!    for the location, converted to USD.
//!
//! A `401` is never retried (Robot blocks the caller's address for ten
//! minutes after three failed logins): it comes back at once as a
//! [`Refused`] that says which settings to check. Robot's `403
//! RATE_LIMIT_EXCEEDED` is retried (or handed back as [`Throttled`]) by
//! `webhost-provider-http`, like every other transient failure.
//!
//! Why not the `hrobot` crate: its requests are built on the fixed address
//! `https://robot-ws.your-server.de`, so it cannot be pointed at a fake
//! Robot for tests (nor a proxy), and it sends each request once through
//! its own client, so it has none of `webhost-provider-http`'s timeouts,
//! backoff, `Retry-After` handling, [`Throttled`]/[`Refused`] errors or
//! look-before-retrying for orders. The few calls needed are plain form
//! POSTs and small JSON answers; its models were read for the field names.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use webhost_domain::ProviderKind;
use webhost_provider::{CellSpec, Progress, Provider, Refused, Resource, Throttled};
use webhost_provider_http::{
    Answer, Auth, Body, Created, Method, ProviderClient, RetryPolicy, StatusCode,
};

/// The Robot web service, unless configured otherwise.
pub const ROBOT_ENDPOINT: &str = "https://robot-ws.your-server.de";
/// The product ordered when a template names none.
pub const DEFAULT_PRODUCT: &str = "AX52";
/// The OS image installed before the bootstrap (a Robot `dist`).
pub const DEFAULT_DIST: &str = "Debian 12 base";
pub const DEFAULT_LANG: &str = "en";

/// How an order's `comment` names its cell.
const COMMENT_PREFIX: &str = "webhost-cell ";
/// Appended to the cell's name while its server's OS is installed.
const INSTALLING: &str = " installing";
/// How long a destroy waits for an order still in process.
const ORDER_IN_PROCESS_WAIT: Duration = Duration::from_secs(600);
/// The longest a bootstrap over SSH may take (packages, images, health).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Runs the bootstrap on a freshly installed server.
#[async_trait]
pub trait RemoteRunner: Send + Sync {
    /// Runs `deploy/hetzner/bootstrap.sh` as root on `host` with `env`
    /// exported; an error unless it exits 0. Running it again is safe.
    async fn run_bootstrap(&self, host: &str, env: &[(String, String)]) -> anyhow::Result<()>;
}

/// What the provider needs beyond the cell's spec.
#[derive(Clone)]
pub struct RobotConfig {
    /// [`ROBOT_ENDPOINT`] in production.
    pub endpoint: String,
    /// A Robot web service user (Robot → Settings → Web service), not the
    /// account login.
    pub user: String,
    pub password: String,
    /// Ordered when the template names no product ([`DEFAULT_PRODUCT`]).
    pub product: String,
    /// The OS installed, a Robot `dist` ([`DEFAULT_DIST`]).
    pub dist: String,
    pub lang: String,
    /// Fingerprints of SSH keys stored in Robot, installed for root (the
    /// [`RemoteRunner`]'s key among them).
    pub authorized_keys: Vec<String>,
    /// Cells are reached at `https://<cell name>.<cell_domain>`.
    pub cell_domain: String,
    /// Values the bootstrap needs that are the same for every cell
    /// (`WEBHOST_CONTROL_URL`, `SECRET_KEY_BASE`, …); the provider adds
    /// `WEBHOST_CELL_ID`, `PUBLIC_HOST` and `PRIMARY_REGION`.
    pub bootstrap: Vec<(String, String)>,
    /// Robot's `test=true`: orders are checked but not carried out.
    pub test_orders: bool,
    /// Robot prices are in EUR; costs are kept in USD cents.
    pub usd_per_eur: f64,
    pub retry: RetryPolicy,
    pub runner: Arc<dyn RemoteRunner>,
}

impl std::fmt::Debug for RobotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.bootstrap.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RobotConfig")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("product", &self.product)
            .field("dist", &self.dist)
            .field("lang", &self.lang)
            .field("authorized_keys", &self.authorized_keys)
            .field("cell_domain", &self.cell_domain)
            .field("bootstrap", &names)
            .field("test_orders", &self.test_orders)
            .field("usd_per_eur", &self.usd_per_eur)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The `hetzner` provider (dedicated servers).
pub struct HetznerRobot {
    api: ProviderClient,
    config: RobotConfig,
}

#[derive(Clone, Debug, Deserialize)]
struct Transaction {
    id: String,
    status: String,
    #[serde(default)]
    server_number: Option<u64>,
    #[serde(default)]
    server_ip: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Deserialize)]
struct OneTransaction {
    transaction: Transaction,
}

#[derive(Deserialize)]
struct Server {
    server_number: u64,
    #[serde(default)]
    server_ip: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
}

#[derive(Deserialize)]
struct OneServer {
    server: Server,
}

#[derive(Deserialize)]
struct Linux {
    active: bool,
}

#[derive(Deserialize)]
struct OneLinux {
    linux: Linux,
}

#[derive(Deserialize)]
struct Cancellation {
    #[serde(default)]
    cancelled: bool,
}

#[derive(Deserialize)]
struct OneCancellation {
    cancellation: Cancellation,
}

#[derive(Deserialize)]
struct OneProduct {
    product: Product,
}

#[derive(Deserialize)]
struct Product {
    id: String,
    #[serde(default)]
    prices: Vec<LocationPrice>,
}

#[derive(Deserialize)]
struct LocationPrice {
    location: String,
    price: Price,
}

#[derive(Deserialize)]
struct Price {
    /// A decimal string (`"59.0000"`); a number is read too.
    net: serde_json::Value,
}

/// A delivered server: its number and address.
struct Delivered {
    number: u64,
    ip: String,
}

/// A `401` from Robot, as a refusal that says what to check; never retried.
fn login_checked(answer: Answer, what: &str) -> anyhow::Result<Answer> {
    if answer.status != StatusCode::UNAUTHORIZED {
        return Ok(answer);
    }
    let said = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(500)
        .collect::<String>();
    Err(Refused {
        what: what.to_string(),
        status: 401,
        body: format!(
            "Robot did not accept the login: check HETZNER_ROBOT_USER and \
             HETZNER_ROBOT_PASSWORD (a Robot web service user, not the account \
             login). Not retried: Robot blocks the calling address for 10 \
             minutes after three failed logins. Robot said: {said}"
        ),
    }
    .into())
}

/// Whether `id` can go into a path as it is (Robot's transaction ids look
/// like `B20150121-344957-251478`).
fn plain_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn order_comment(spec: &CellSpec) -> String {
    format!("{COMMENT_PREFIX}{}", spec.id)
}

fn installing_name(spec: &CellSpec) -> String {
    format!("{}{INSTALLING}", spec.name)
}

fn euros(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        other => other.as_f64(),
    }
}

impl HetznerRobot {
    pub fn new(config: RobotConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.authorized_keys.is_empty(),
            "Hetzner Robot needs at least one SSH key fingerprint to install on its servers"
        );
        anyhow::ensure!(
            config.usd_per_eur.is_finite() && config.usd_per_eur > 0.0,
            "usd_per_eur must be a positive number, not {}",
            config.usd_per_eur
        );
        let api = ProviderClient::new(
            "Hetzner Robot",
            config.endpoint.clone(),
            Auth::Basic {
                user: config.user.clone(),
                password: config.password.clone(),
            },
            config.retry,
        )?;
        Ok(Self { api, config })
    }

    /// Any Robot call but the order (retried as `send` does), a `401`
    /// turned into a [`Refused`].
    async fn call(&self, method: Method, path: &str, body: Body<'_>) -> anyhow::Result<Answer> {
        let what = format!("Hetzner Robot {method} {path}");
        let answer = self.api.send(method, path, body).await?;
        login_checked(answer, &what)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, Body::Empty).await
    }

    fn product_of(&self, spec: &CellSpec) -> String {
        spec.template
            .product
            .clone()
            .unwrap_or_else(|| self.config.product.clone())
    }

    fn location(spec: &CellSpec) -> String {
        spec.region.as_str().to_uppercase()
    }

    fn public_host(&self, spec: &CellSpec) -> String {
        format!("{}.{}", spec.name, self.config.cell_domain)
    }

    fn resource(transaction: &Transaction) -> Resource {
        Resource {
            provider: ProviderKind::Hetzner,
            external_id: transaction.id.clone(),
            detail: json!({ "kind": "dedicated", "transaction": transaction.id }),
        }
    }

    /// This cell's order, among the transactions Robot lists (the last 30
    /// days); one not cancelled first.
    async fn find_transaction(&self, spec: &CellSpec) -> anyhow::Result<Option<Transaction>> {
        let answer = self.get("/order/server/transaction").await?;
        if answer.status == StatusCode::NOT_FOUND {
            // Robot's way of saying "none".
            return Ok(None);
        }
        let listed: Vec<OneTransaction> = answer.ok()?.json()?;
        let comment = order_comment(spec);
        let mut mine: Vec<Transaction> = listed
            .into_iter()
            .map(|t| t.transaction)
            .filter(|t| t.comment.as_deref() == Some(comment.as_str()))
            .collect();
        mine.sort_by_key(|t| t.status == "cancelled");
        Ok(mine.into_iter().next())
    }

    /// The resource's transaction, else this cell's by its comment.
    async fn transaction_of(
        &self,
        spec: &CellSpec,
        resource: &Resource,
    ) -> anyhow::Result<Option<Transaction>> {
        let id = &resource.external_id;
        if plain_id(id) {
            let answer = self.get(&format!("/order/server/transaction/{id}")).await?;
            if answer.status != StatusCode::NOT_FOUND {
                let found: OneTransaction = answer.ok()?.json()?;
                let found = found.transaction;
                anyhow::ensure!(
                    found.comment.as_deref() == Some(order_comment(spec).as_str()),
                    "Robot order {id} is not cell {}'s (its comment is {:?})",
                    spec.id,
                    found.comment
                );
                return Ok(Some(found));
            }
        }
        self.find_transaction(spec).await
    }

    /// The server named for this cell (ready or installing), for when
    /// Robot no longer lists the order.
    async fn server_named(&self, spec: &CellSpec) -> anyhow::Result<Option<Server>> {
        let answer = self.get("/server").await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let listed: Vec<OneServer> = answer.ok()?.json()?;
        let installing = installing_name(spec);
        Ok(listed.into_iter().map(|s| s.server).find(|s| {
            let name = s.server_name.as_deref();
            name == Some(spec.name.as_str()) || name == Some(installing.as_str())
        }))
    }

    async fn rename(&self, number: u64, name: &str) -> anyhow::Result<()> {
        let form = [("server_name", name.to_string())];
        self.call(
            Method::POST,
            &format!("/server/{number}"),
            Body::Form(&form),
        )
        .await?
        .ok()?;
        Ok(())
    }

    /// Activates the Linux install and resets the server into it; the
    /// server is then named as installing. Each step may be repeated after
    /// a crash: an install already active (`409`) is fine, and a second
    /// reset restarts an install that nothing depends on yet.
    async fn start_install(&self, spec: &CellSpec, number: u64) -> anyhow::Result<()> {
        let mut form = vec![
            ("dist", self.config.dist.clone()),
            ("lang", self.config.lang.clone()),
        ];
        for key in &self.config.authorized_keys {
            form.push(("authorized_key[]", key.clone()));
        }
        let answer = self
            .call(
                Method::POST,
                &format!("/boot/{number}/linux"),
                Body::Form(&form),
            )
            .await?;
        if answer.status != StatusCode::CONFLICT {
            answer.ok()?;
        }
        let form = [("type", "hw".to_string())];
        let answer = self
            .call(Method::POST, &format!("/reset/{number}"), Body::Form(&form))
            .await?;
        if answer.status != StatusCode::CONFLICT {
            answer.ok()?;
        }
        self.rename(number, &installing_name(spec)).await?;
        tracing::info!(cell = %spec.name, server = number, dist = %self.config.dist, "Robot server reset into the OS install");
        Ok(())
    }

    fn bootstrap_env(&self, spec: &CellSpec) -> Vec<(String, String)> {
        let mut env = self.config.bootstrap.clone();
        env.extend([
            ("WEBHOST_CELL_ID".to_string(), spec.id.to_string()),
            ("PUBLIC_HOST".to_string(), self.public_host(spec)),
            ("PRIMARY_REGION".to_string(), spec.region.to_string()),
        ]);
        env
    }

    fn ready(&self, spec: &CellSpec) -> Progress {
        Progress::Ready {
            url: format!("https://{}", self.public_host(spec)),
        }
    }

    /// The state machine kept in the server's name.
    async fn advance(&self, spec: &CellSpec, server: Delivered) -> anyhow::Result<Progress> {
        let number = server.number;
        let found: OneServer = self.get(&format!("/server/{number}")).await?.ok()?.json()?;
        let name = found.server.server_name.unwrap_or_default();
        if name == spec.name {
            return Ok(self.ready(spec));
        }
        if name != installing_name(spec) {
            self.start_install(spec, number).await?;
            return Ok(Progress::Pending {
                step: "installing the OS".into(),
                percent: 30,
            });
        }
        let linux: OneLinux = self
            .get(&format!("/boot/{number}/linux"))
            .await?
            .ok()?
            .json()?;
        if linux.linux.active {
            return Ok(Progress::Pending {
                step: "installing the OS".into(),
                percent: 50,
            });
        }
        tracing::info!(cell = %spec.name, server = number, ip = %server.ip, "running the bootstrap");
        self.config
            .runner
            .run_bootstrap(&server.ip, &self.bootstrap_env(spec))
            .await
            .with_context(|| {
                format!(
                    "bootstrapping Robot server {number} ({}) as cell {}",
                    server.ip, spec.name
                )
            })?;
        self.rename(number, &spec.name).await?;
        tracing::info!(cell = %spec.name, server = number, "Robot server bootstrapped");
        Ok(self.ready(spec))
    }
}

#[async_trait]
impl Provider for HetznerRobot {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        if let Some(found) = self.find_transaction(spec).await? {
            tracing::info!(cell = %spec.name, transaction = %found.id, "adopting the Robot order an earlier attempt made");
            return Ok(Self::resource(&found));
        }
        let mut form = vec![
            ("product_id", self.product_of(spec)),
            ("location", Self::location(spec)),
            ("dist", self.config.dist.clone()),
            ("lang", self.config.lang.clone()),
            ("comment", order_comment(spec)),
            ("test", self.config.test_orders.to_string()),
        ];
        for key in &self.config.authorized_keys {
            form.push(("authorized_key[]", key.clone()));
        }
        let path = "/order/server/transaction";
        let answer = match self
            .api
            .create_with(path, Body::Form(&form), || self.find_transaction(spec))
            .await?
        {
            Created::Found(found) => return Ok(Self::resource(&found)),
            Created::Answer(answer) => answer,
        };
        let answer = login_checked(answer, &format!("Hetzner Robot POST {path}"))?;
        let created: OneTransaction = answer.ok()?.json()?;
        tracing::info!(cell = %spec.name, transaction = %created.transaction.id, product = %self.product_of(spec), "Robot server ordered");
        Ok(Self::resource(&created.transaction))
    }

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress> {
        let Some(transaction) = self.transaction_of(spec, resource).await? else {
            // Robot forgets orders after about 30 days; the server stays.
            return match self.server_named(spec).await? {
                Some(server) => {
                    let number = server.server_number;
                    let ip = server
                        .server_ip
                        .with_context(|| format!("Robot server {number} has no address"))?;
                    self.advance(spec, Delivered { number, ip }).await
                }
                None => Ok(Progress::Failed {
                    reason: format!(
                        "Robot knows neither order {} nor a server named {}",
                        resource.external_id, spec.name
                    ),
                }),
            };
        };
        match transaction.status.as_str() {
            "ready" => {
                let number = transaction.server_number.with_context(|| {
                    format!("Robot order {} is ready without a server", transaction.id)
                })?;
                let ip = transaction.server_ip.with_context(|| {
                    format!("Robot order {} is ready without an address", transaction.id)
                })?;
                self.advance(spec, Delivered { number, ip }).await
            }
            "cancelled" => Ok(Progress::Failed {
                reason: format!(
                    "Hetzner cancelled order {} ({}); the Robot web interface says why",
                    transaction.id,
                    self.product_of(spec)
                ),
            }),
            // `in process`, and whatever Robot may add.
            _ => Ok(Progress::Pending {
                step: "Hetzner is preparing the server".into(),
                percent: 10,
            }),
        }
    }

    async fn destroy(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<()> {
        let number = match self.transaction_of(spec, resource).await? {
            Some(transaction) => match transaction.status.as_str() {
                "cancelled" => return Ok(()),
                "ready" => transaction.server_number,
                _ => {
                    return Err(anyhow::Error::new(Throttled {
                        retry_after: ORDER_IN_PROCESS_WAIT,
                    })
                    .context(format!(
                        "Robot cannot cancel an order in process (order {}); \
                         the server is cancelled once Hetzner has delivered it",
                        transaction.id
                    )))
                }
            },
            None => None,
        };
        let number = match number {
            Some(number) => number,
            None => match self.server_named(spec).await? {
                Some(server) => server.server_number,
                None => return Ok(()),
            },
        };
        let path = format!("/server/{number}/cancellation");
        let answer = self.get(&path).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let state: OneCancellation = answer.ok()?.json()?;
        if state.cancellation.cancelled {
            return Ok(());
        }
        let form = [("cancellation_date", "now".to_string())];
        let answer = self.call(Method::POST, &path, Body::Form(&form)).await?;
        // 409: cancelled meanwhile.
        if !matches!(answer.status.as_u16(), 404 | 409) {
            answer.ok()?;
        }
        tracing::info!(cell = %spec.name, server = number, "Robot server cancelled");
        Ok(())
    }

    async fn monthly_cost_cents(&self, spec: &CellSpec) -> anyhow::Result<i64> {
        let product = self.product_of(spec);
        let location = Self::location(spec);
        let answer = self.get("/order/server/product").await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(spec.template.monthly_cost_cents);
        }
        let listed: Vec<OneProduct> = answer.ok()?.json()?;
        let net = listed
            .iter()
            .map(|p| &p.product)
            .find(|p| p.id.eq_ignore_ascii_case(&product))
            .and_then(|p| {
                p.prices
                    .iter()
                    .find(|price| price.location.eq_ignore_ascii_case(&location))
            })
            .and_then(|price| euros(&price.price.net));
        Ok(match net {
            Some(eur) => (eur * self.config.usd_per_eur * 100.0).round() as i64,
            None => {
                tracing::warn!(%product, %location, "Robot does not list the product here; using the template's cost");
                spec.template.monthly_cost_cents
            }
        })
    }
}

/// Runs the bootstrap with the system `ssh` as root, the script and its
/// values (secrets among them) written to ssh's stdin, never on a command
/// line.
#[derive(Clone, Debug)]
pub struct SshRunner {
    /// The private key whose public half is among
    /// [`RobotConfig::authorized_keys`].
    pub identity_file: PathBuf,
    /// A tarball of `deploy/hetzner` (cloud-init's `WEBHOST_DEPLOY_URL`);
    /// exported as `WEBHOST_DEPLOY_URL` after the other values.
    pub deploy_url: String,
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `export NAME='value'` lines.
fn exports(env: &[(String, String)]) -> anyhow::Result<String> {
    let mut lines = String::new();
    for (name, value) in env {
        let mut chars = name.chars();
        anyhow::ensure!(
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name:?} is not a shell variable name"
        );
        anyhow::ensure!(!value.contains('\0'), "the value of {name} holds a NUL");
        lines.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    Ok(lines)
}

impl SshRunner {
    /// The script `bash -s` reads: the values exported, the deploy bundle
    /// fetched into `/opt/webhost` (as cloud-init does), `bootstrap.sh`
    /// run. It is one function, read whole before it runs, and what it
    /// runs reads no stdin — so nothing swallows the rest of the script.
    pub fn script(&self, env: &[(String, String)]) -> anyhow::Result<String> {
        let mut values = env.to_vec();
        values.push(("WEBHOST_DEPLOY_URL".to_string(), self.deploy_url.clone()));
        let exports = exports(&values)?;
        Ok(format!(
            r#"set -euo pipefail
webhost_bootstrap() {{
{exports}if [ "$(hostname)" = rescue ]; then
  echo "webhost: this is Hetzner's rescue system, not the installed OS" >&2
  exit 3
fi
mkdir -p /opt/webhost
curl -fsSL --retry 5 "$WEBHOST_DEPLOY_URL" | tar -xz -C /opt/webhost
/opt/webhost/bootstrap.sh
}}
webhost_bootstrap </dev/null
"#
        ))
    }
}

/// The last `n` lines of `bytes`.
fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[async_trait]
impl RemoteRunner for SshRunner {
    async fn run_bootstrap(&self, host: &str, env: &[(String, String)]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !host.is_empty()
                && !host.starts_with('-')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c)),
            "{host:?} is not a host address"
        );
        let script = self.script(env)?;
        let mut child = tokio::process::Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=30",
                "-i",
            ])
            .arg(&self.identity_file)
            .arg(format!("root@{host}"))
            .arg("bash -s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting ssh")?;
        let mut stdin = child.stdin.take().context("ssh has no stdin")?;
        let write = async move {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(script.as_bytes()).await?;
            stdin.shutdown().await
        };
        let run = async { tokio::join!(write, child.wait_with_output()) };
        let Ok((written, output)) = tokio::time::timeout(BOOTSTRAP_TIMEOUT, run).await else {
            anyhow::bail!(
                "the bootstrap on {host} took longer than {} minutes",
                BOOTSTRAP_TIMEOUT.as_secs() / 60
            );
        };
        let output = output.context("waiting for ssh")?;
        if output.status.success() {
            return Ok(());
        }
        let mut said = tail(&output.stderr, 20);
        if said.is_empty() {
            said = tail(&output.stdout, 20);
        }
        if output.status.code() == Some(255) {
            anyhow::bail!("could not reach root@{host} over SSH: {said}");
        }
        if let Err(err) = written {
            said = format!("{said}\n(writing the script failed: {err})");
        }
        anyhow::bail!("the bootstrap on {host} failed ({}): {said}", output.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> SshRunner {
        SshRunner {
            identity_file: "/nonexistent/id".into(),
            deploy_url: "https://deploy.example.com/hetzner.tar.gz".into(),
        }
    }

    #[test]
    fn values_are_single_quoted_whatever_they_hold() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let tricky = [
            "it's",
            "$(touch /tmp/webhost-should-not-exist) `id` $HOME",
            "a \"quoted\" \\ back\\slash",
            "two\nlines",
            "",
        ];
        let env: Vec<(String, String)> = tricky
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("VALUE_{i}"), v.to_string()))
            .collect();
        let exports = exports(&env).expect("valid");
        // The shell gives each value back exactly.
        for (name, value) in &env {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("{exports}printf '%s' \"${name}\""))
                .output()
                .expect("bash runs");
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout), *value, "{name}");
        }
    }

    #[test]
    fn names_that_are_not_variables_are_refused() {
        for name in ["", "1A", "A B", "A;rm", "A=B"] {
            assert!(exports(&[(name.into(), "v".into())]).is_err(), "{name:?}");
        }
        assert!(exports(&[("A".into(), "a\0b".into())]).is_err());
    }

    #[test]
    fn the_script_exports_fetches_and_runs_the_bootstrap() {
        let script = runner()
            .script(&[("SECRET_KEY_BASE".into(), "s3cr'et".into())])
            .expect("script");
        assert!(script.contains(r"export SECRET_KEY_BASE='s3cr'\''et'"));
        assert!(script
            .contains("export WEBHOST_DEPLOY_URL='https://deploy.example.com/hetzner.tar.gz'"));
        assert!(script
            .contains(r#"curl -fsSL --retry 5 "$WEBHOST_DEPLOY_URL" | tar -xz -C /opt/webhost"#));
        assert!(script.contains("/opt/webhost/bootstrap.sh"));
        assert!(script.trim_end().ends_with("webhost_bootstrap </dev/null"));
        // It parses.
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn a_bad_host_is_refused_before_ssh_runs() {
        for host in ["-oProxyCommand=x", "a b", ""] {
            let err = runner()
                .run_bootstrap(host, &[])
                .await
                .expect_err("refused");
            assert!(format!("{err}").contains("not a host address"), "{err}");
        }
    }

    #[test]
    fn the_password_is_not_in_the_debug_output() {
        struct Nothing;
        #[async_trait]
        impl RemoteRunner for Nothing {
            async fn run_bootstrap(&self, _: &str, _: &[(String, String)]) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let config = RobotConfig {
            endpoint: ROBOT_ENDPOINT.into(),
            user: "#ws+abc".into(),
            password: "hunter2".into(),
            product: DEFAULT_PRODUCT.into(),
            dist: DEFAULT_DIST.into(),
            lang: DEFAULT_LANG.into(),
            authorized_keys: vec!["aa:bb".into()],
            cell_domain: "cells.example.com".into(),
            bootstrap: vec![("SECRET_KEY_BASE".into(), "very-secret".into())],
            test_orders: false,
            usd_per_eur: 1.1,
            retry: RetryPolicy::default(),
            runner: Arc::new(Nothing),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("very-secret"));
        assert!(shown.contains("[redacted]") && shown.contains("SECRET_KEY_BASE"));
    }
}
