//! Hetzner Cloud: a cell is a cloud server
//! created with `deploy/hetzner/cloud-init.yaml` as its user data (which
//! installs the Compose stack and starts the cell with the id it is given),
//! labelled with the cell's id, behind a firewall that lets in only the
//! public ports. `poll` follows the server until it runs; the control plane
//! then waits for the cell's health check at `https://<name>.<cell_domain>`.
//!
//! Idempotent by label: `create` first looks for a server labelled with the
//! cell's id, so a retry — after a timeout whose request did reach Hetzner,
//! or after a crash — adopts what exists instead of making a second server;
//! a name already taken (`uniqueness_error`) is resolved the same way.
//! Calls go through `webhost-provider-http` (timeouts, retries, `Retry-After`,
//! `RateLimit-*`).
//!
//! The server type is the catalog template's `product` (`cx42`), else the
//! configured default; what a cell costs is that type's monthly net price
//! in the cell's location from `GET /server_types`, converted from EUR at
//! the configured rate (the template's figure when Hetzner lists none).

use anyhow::Context;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use webhost_domain::ProviderKind;
use webhost_provider::{CellSpec, Progress, Provider, Resource};
use webhost_provider_http::{Answer, Auth, Body, Created, Method, ProviderClient, RetryPolicy};

/// Hetzner Cloud's API, unless `HCLOUD_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

/// The user data every cell server boots with (placeholders `__NAME__`).
pub const CLOUD_INIT: &str = include_str!("../../../deploy/hetzner/cloud-init.yaml");

/// The label that ties a server to its cell.
const CELL_LABEL: &str = "webhost-cell";
/// The firewall every cell server is put behind.
const FIREWALL: &str = "webhost-cell";
/// TCP ports a cell serves: HTTP (ACME), HTTPS, OsmAnd, Teltonika.
const PUBLIC_PORTS: [&str; 4] = ["80", "443", "5055", "5027"];

/// What the provider needs beyond the cell's spec.
#[derive(Clone, Debug)]
pub struct CloudConfig {
    pub endpoint: String,
    pub token: String,
    /// Server type for cloud cells whose template names no `product`
    /// (e.g. `cx42`).
    pub server_type: String,
    pub image: String,
    /// Cells are reached at `https://<cell name>.<cell_domain>` (a wildcard
    /// DNS record pointing at… each server: set per server by the
    /// operator's DNS automation, or a wildcard through a proxy).
    pub cell_domain: String,
    /// Values for the user data's placeholders that are the same for every
    /// cell (`WEBHOST_CONTROL_URL`, `SECRET_KEY_BASE`, …); the provider adds
    /// `WEBHOST_CELL_ID`, `PUBLIC_HOST` and `PRIMARY_REGION`.
    pub bootstrap: Vec<(String, String)>,
    pub retry: RetryPolicy,
    /// US dollars per euro: Hetzner prices in EUR, cell costs are kept in
    /// USD cents.
    pub usd_per_eur: f64,
}

/// The `hetzner` provider (cloud servers).
pub struct HetznerCloud {
    api: ProviderClient,
    config: CloudConfig,
}

#[derive(Deserialize)]
struct Server {
    id: u64,
    name: String,
    status: String,
    #[serde(default)]
    labels: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Servers {
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct OneServer {
    server: Server,
}

#[derive(Deserialize)]
struct NewServer {
    server: Server,
    action: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    id: u64,
    status: String,
    #[serde(default)]
    error: Option<ActionError>,
}

#[derive(Deserialize)]
struct ActionError {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct OneAction {
    action: Action,
}

#[derive(Deserialize)]
struct ServerTypes {
    server_types: Vec<ServerType>,
}

#[derive(Deserialize)]
struct ServerType {
    name: String,
    #[serde(default)]
    prices: Vec<Price>,
}

#[derive(Deserialize)]
struct Price {
    location: String,
    price_monthly: Amount,
}

/// Hetzner's amounts are decimal strings in EUR (`"16.4900000000"`).
#[derive(Deserialize)]
struct Amount {
    net: String,
}

#[derive(Deserialize)]
struct Firewalls {
    firewalls: Vec<Firewall>,
}

#[derive(Deserialize)]
struct Firewall {
    id: u64,
}

#[derive(Deserialize)]
struct OneFirewall {
    firewall: Firewall,
}

/// Fills `__NAME__` placeholders; any left unfilled is an error that names
/// them (a cell booted without its control URL would never register).
pub fn user_data(template: &str, values: &[(String, String)]) -> anyhow::Result<String> {
    let mut filled = template.to_string();
    for (name, value) in values {
        anyhow::ensure!(
            !value.contains('\n'),
            "bootstrap value {name} must be one line"
        );
        filled = filled.replace(&format!("__{name}__"), value);
    }
    let missing: Vec<&str> = filled
        .split("__")
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the cell's user data lacks {}",
        missing.join(", ")
    );
    Ok(filled)
}

impl HetznerCloud {
    pub fn new(config: CloudConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.usd_per_eur.is_finite() && config.usd_per_eur > 0.0,
            "usd_per_eur must be a positive number, not {}",
            config.usd_per_eur
        );
        let api = ProviderClient::new(
            "Hetzner Cloud",
            config.endpoint.clone(),
            Auth::Bearer(config.token.clone()),
            config.retry,
        )?;
        Ok(Self { api, config })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.api.send(Method::GET, path, Body::Empty).await
    }

    /// The server labelled with this cell, if one exists.
    async fn server_of(&self, spec: &CellSpec) -> anyhow::Result<Option<Server>> {
        let found: Servers = self
            .get(&format!(
                "/servers?label_selector={CELL_LABEL}%3D%3D{}",
                spec.id
            ))
            .await?
            .ok()?
            .json()?;
        Ok(found.servers.into_iter().next())
    }

    /// The cells' firewall, made on first use.
    async fn firewall(&self) -> anyhow::Result<u64> {
        let found: Firewalls = self
            .get(&format!("/firewalls?name={FIREWALL}"))
            .await?
            .ok()?
            .json()?;
        if let Some(firewall) = found.firewalls.first() {
            return Ok(firewall.id);
        }
        let rules: Vec<_> = PUBLIC_PORTS
            .iter()
            .map(|port| {
                json!({
                    "direction": "in",
                    "protocol": "tcp",
                    "port": port,
                    "source_ips": ["0.0.0.0/0", "::/0"],
                    "description": "webhost cell",
                })
            })
            .collect();
        let body = json!({
            "name": FIREWALL,
            "labels": { "webhost": "cell" },
            "rules": rules,
        });
        let answer = self
            .api
            .send(Method::POST, "/firewalls", Body::Json(&body))
            .await?;
        if answer.status.as_u16() == 409 {
            // Made meanwhile by another provisioning job.
            let found: Firewalls = self
                .get(&format!("/firewalls?name={FIREWALL}"))
                .await?
                .ok()?
                .json()?;
            return found
                .firewalls
                .first()
                .map(|f| f.id)
                .context("the cells' firewall exists but cannot be found");
        }
        let created: OneFirewall = answer.ok()?.json()?;
        Ok(created.firewall.id)
    }

    /// The template's product when it names one, else the configured type.
    fn server_type<'a>(&'a self, spec: &'a CellSpec) -> &'a str {
        spec.template
            .product
            .as_deref()
            .unwrap_or(&self.config.server_type)
    }

    fn public_host(&self, spec: &CellSpec) -> String {
        format!("{}.{}", spec.name, self.config.cell_domain)
    }

    fn resource(server: &Server, action: Option<u64>) -> Resource {
        Resource {
            provider: ProviderKind::Hetzner,
            external_id: server.id.to_string(),
            detail: json!({ "kind": "cloud", "name": server.name, "action": action }),
        }
    }
}

#[async_trait]
impl Provider for HetznerCloud {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        if let Some(server) = self.server_of(spec).await? {
            tracing::info!(cell = %spec.name, server = server.id, "adopting the server an earlier attempt made");
            return Ok(Self::resource(&server, None));
        }
        let firewall = self.firewall().await?;
        let mut values = self.config.bootstrap.clone();
        values.extend([
            ("WEBHOST_CELL_ID".to_string(), spec.id.to_string()),
            ("PUBLIC_HOST".to_string(), self.public_host(spec)),
            ("PRIMARY_REGION".to_string(), spec.region.to_string()),
        ]);
        let body = json!({
            "name": spec.name,
            "server_type": self.server_type(spec),
            "image": self.config.image,
            "location": spec.region.as_str(),
            "start_after_create": true,
            "user_data": user_data(CLOUD_INIT, &values)?,
            "labels": { CELL_LABEL: spec.id.to_string(), "webhost-pool": spec.pool.as_str() },
            "firewalls": [{ "firewall": firewall }],
        });
        let answer = match self
            .api
            .create("/servers", &body, || self.server_of(spec))
            .await?
        {
            Created::Found(server) => return Ok(Self::resource(&server, None)),
            Created::Answer(answer) => answer,
        };
        if answer.status.as_u16() == 409
            || String::from_utf8_lossy(&answer.body).contains("uniqueness_error")
        {
            // The name is taken: by this cell's server when an earlier
            // attempt got through before its answer was lost.
            if let Some(server) = self.server_of(spec).await? {
                return Ok(Self::resource(&server, None));
            }
            anyhow::bail!(
                "a server named {} exists in the Hetzner project but is not this cell's",
                spec.name
            );
        }
        let created: NewServer = answer.ok()?.json()?;
        tracing::info!(cell = %spec.name, server = created.server.id, "Hetzner Cloud server created");
        Ok(Self::resource(
            &created.server,
            created.action.map(|a| a.id),
        ))
    }

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress> {
        if let Some(action) = resource.detail["action"].as_u64() {
            let action: OneAction = self
                .get(&format!("/actions/{action}"))
                .await?
                .ok()?
                .json()?;
            if action.action.status == "error" {
                let why = action
                    .action
                    .error
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_else(|| "no reason given".into());
                return Ok(Progress::Failed {
                    reason: format!("creating the server failed ({why})"),
                });
            }
        }
        let answer = self
            .get(&format!("/servers/{}", resource.external_id))
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(Progress::Failed {
                reason: format!("server {} is gone", resource.external_id),
            });
        }
        let server: OneServer = answer.ok()?.json()?;
        let server = server.server;
        anyhow::ensure!(
            server.labels.get(CELL_LABEL).and_then(|v| v.as_str()) == Some(&spec.id.to_string()),
            "server {} is not labelled as cell {}",
            server.id,
            spec.id
        );
        Ok(match server.status.as_str() {
            "running" => Progress::Ready {
                url: format!("https://{}", self.public_host(spec)),
            },
            "initializing" => Progress::Pending {
                step: "creating the server".into(),
                percent: 30,
            },
            other => Progress::Pending {
                step: format!("server {other}"),
                percent: 60,
            },
        })
    }

    async fn destroy(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<()> {
        let id = match self.server_of(spec).await? {
            Some(server) => server.id.to_string(),
            // Nothing labelled for the cell, and no server id recorded (a
            // refused create cleaning up): nothing to delete.
            None if resource.external_id.parse::<u64>().is_err() => return Ok(()),
            None => resource.external_id.clone(),
        };
        let answer = self
            .api
            .send(Method::DELETE, &format!("/servers/{id}"), Body::Empty)
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(());
        }
        answer.ok()?;
        tracing::info!(cell = %spec.name, server = %id, "Hetzner Cloud server deleted");
        Ok(())
    }

    /// The server type's monthly net price in the cell's location, in USD
    /// cents; the template's figure when Hetzner lists no such type or no
    /// price there. A failed request is an error (not a guess).
    async fn monthly_cost_cents(&self, spec: &CellSpec) -> anyhow::Result<i64> {
        let server_type = self.server_type(spec);
        let listed: ServerTypes = self
            .get(&format!("/server_types?name={}", query_value(server_type)))
            .await?
            .ok()?
            .json()?;
        let price = listed
            .server_types
            .iter()
            .filter(|t| t.name == server_type)
            .flat_map(|t| &t.prices)
            .find(|p| p.location == spec.region.as_str());
        let Some(price) = price else {
            tracing::warn!(server_type, location = %spec.region, "Hetzner lists no price; using the template's cost");
            return Ok(spec.template.monthly_cost_cents);
        };
        let eur: f64 = price.price_monthly.net.trim().parse().with_context(|| {
            format!(
                "Hetzner's monthly price for {server_type} in {} is not a number: {:?}",
                spec.region, price.price_monthly.net
            )
        })?;
        anyhow::ensure!(
            eur.is_finite() && eur >= 0.0,
            "Hetzner's monthly price for {server_type} in {} is {eur} EUR",
            spec.region
        );
        Ok((eur * self.config.usd_per_eur * 100.0).round() as i64)
    }
}

/// `value` as a query-string value (server type names are plain, but a
/// configured one is not trusted to be).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), format!("value-of-{n}")))
            .collect()
    }

    #[test]
    fn user_data_fills_every_placeholder_or_names_the_missing_ones() {
        let all = [
            "WEBHOST_CONTROL_URL",
            "WEBHOST_ADMIN_TOKEN",
            "SECRET_KEY_BASE",
            "TOKEN_SIGNING_SECRET",
            "WEBHOST_CELL_ID",
            "PUBLIC_HOST",
            "PRIMARY_REGION",
            "WEBHOST_IMAGE",
            "WEBHOST_DEPLOY_URL",
        ];
        let filled = user_data(CLOUD_INIT, &values(&all)).expect("complete");
        assert!(filled.starts_with("#cloud-config"));
        assert!(filled.contains("WEBHOST_CELL_ID=value-of-WEBHOST_CELL_ID"));
        assert!(!filled.contains("__"), "{filled}");

        let err = user_data(CLOUD_INIT, &values(&all[1..])).expect_err("one missing");
        assert!(format!("{err}").contains("WEBHOST_CONTROL_URL"), "{err}");
        let err = user_data(CLOUD_INIT, &[("PUBLIC_HOST".into(), "a\nb".into())])
            .expect_err("multi-line");
        assert!(format!("{err}").contains("one line"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("cx42"), "cx42");
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
