//! Providers create, poll and destroy cells inside a pool, and return what
//! they made; the control plane records it (a provider never writes the
//! control plane's tables). One trait, one adapter crate per provider:
//! `webhost-provider-local` (cells on this machine) today, Hetzner and
//! Fly.io beside it.
//!
//! Every method may be called again after a crash or a retry with the same
//! [`CellSpec`]: `create` finds what an earlier call made (by the spec's
//! name, which is unique) instead of making a second one, and `destroy` of
//! something already gone succeeds.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use webhost_domain::{CellId, CellTemplate, PoolName, ProviderKind, RegionCode};

/// What the control plane asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: CellId,
    /// Unique across the platform; providers name (or label) what they make
    /// with it, so a retried create can find an earlier attempt's work.
    pub name: String,
    pub pool: PoolName,
    pub region: RegionCode,
    pub template: CellTemplate,
}

/// What a provider made, as much as it needs to find it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub provider: ProviderKind,
    /// The provider's own id (server number, app name, …).
    pub external_id: String,
    /// Provider-specific details (machine ids, volume ids, …).
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Where the making of a cell stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// Still being made: what it is doing, and roughly how far along.
    Pending { step: String, percent: u8 },
    /// Running and reachable at `url` (its health check still decides when
    /// the cell takes tenants).
    Ready { url: String },
    /// Will not become ready; the reason is shown to the operator.
    Failed { reason: String },
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn kind(&self) -> ProviderKind;

    /// Starts making the cell, or finds what an earlier call made for the
    /// same spec.
    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource>;

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress>;

    /// Removes everything the provider made for the cell; what is already
    /// gone is not an error.
    async fn destroy(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<()>;

    /// Whether this provider, as configured, can make a cell from
    /// `template` (Hetzner without Robot credentials makes no dedicated
    /// servers).
    fn offers(&self, template: &CellTemplate) -> bool {
        let _ = template;
        true
    }

    /// Whether a cell from `template` takes long to deliver (a dedicated
    /// server: minutes to days), so that placement should not make a
    /// tenant wait for it while the pool has a stop-gap template.
    fn slow_to_deliver(&self, template: &CellTemplate) -> bool {
        let _ = template;
        false
    }

    /// What the cell costs a month: the catalog template's figure unless
    /// the provider's own price list says otherwise.
    async fn monthly_cost_cents(&self, spec: &CellSpec) -> anyhow::Result<i64> {
        Ok(spec.template.monthly_cost_cents)
    }
}

/// A provider asked us to come back later (429 or 503 with `Retry-After`,
/// a spent rate limit) for longer than a call waits in place. A provider
/// returns it inside its `anyhow::Error`; the control plane's job then
/// waits that long without counting an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the provider asked to retry in {} s", retry_after.as_secs())]
pub struct Throttled {
    pub retry_after: std::time::Duration,
}

impl Throttled {
    /// The wait asked for, when `err` is (or wraps) a [`Throttled`].
    pub fn in_error(err: &anyhow::Error) -> Option<std::time::Duration> {
        err.chain()
            .find_map(|cause| cause.downcast_ref::<Throttled>())
            .map(|t| t.retry_after)
    }
}

/// The provider refused a request for good — a `4xx` that is not a rate
/// limit: a bad token, an unknown server type, a spent quota, an invalid
/// field. Asking again will not help until the operator changes something,
/// so the control plane's job fails at once with this message (which
/// carries the provider's own words) instead of retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} was refused: {status} {body}")]
pub struct Refused {
    /// The request (`Hetzner Cloud POST /servers`).
    pub what: String,
    pub status: u16,
    /// The provider's answer, as it gave it.
    pub body: String,
}

impl Refused {
    /// The refusal, when `err` is (or wraps) one.
    pub fn in_error(err: &anyhow::Error) -> Option<&Refused> {
        err.chain()
            .find_map(|cause| cause.downcast_ref::<Refused>())
    }
}
