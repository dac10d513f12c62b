//! Cells: where a tenant goes, and making cells as a job.
//!
//! **No request waits on a provider.** Placement picks the least-loaded
//! active cell with room in the placement's pool and region; failing that, a
//! cell still being provisioned that has room (the tenant waits,
//! `provisioning`); failing that, it records a new cell (`provisioning`)
//! and queues a [`ProvisionCell`] job. After placing, when the free slots
//! of that pool and region (active and provisioning cells together) fall
//! under the pool's `spare_slots`, the next cell is queued ahead of need.
//!
//! The job is idempotent and resumable: what the provider made is recorded
//! on the cell (`resource`) before anything else happens, so a retry or a
//! restart after `kill -9` polls the same resource instead of making a
//! second one (providers also find an earlier attempt's work by the cell's
//! unique name). A cell turns `active` only once its own health check
//! answers 200; then the tenants waiting on it are created there and turn
//! `active` too.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use axum::http::Method;
use serde::{Deserialize, Serialize};
use webhost_contract::{cell_audience, paths, TenantLimits};
use webhost_domain::{
    Catalog, CellId, CellTemplate, Placement, Plan, PoolName, RegionCode, TenantId,
};
use webhost_http::client::{InternalClient, InternalRequest};
use webhost_http::ApiError;
use webhost_jobs::{queues, Handler, JobContext, JobError};
use webhost_provider::{CellSpec, Progress, Resource};
use webhost_storage::{
    Cell, CellStatus, CellUpdate, Conflict, ControlStore, Job, NewCell, StorageError, TenantStatus,
};

use crate::{ControlState, Providers};

/// How often a cell being made is polled.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// Picks the cell for a new tenant (see the module docs). The answer may be
/// a cell still `provisioning`: the caller answers 202 then.
pub(crate) async fn place_tenant(
    state: &ControlState,
    catalog: &Catalog,
    plan: &Plan,
    placement: &Placement,
) -> Result<Cell, ApiError> {
    // One placement at a time in this control plane, so two signups never
    // both decide to provision the spare cell.
    let _placing = state.placing.lock().await;
    let here: Vec<Cell> = state
        .store
        .cells()
        .await?
        .into_iter()
        .filter(|c| c.pool == placement.pool && c.region == placement.region)
        .collect();
    let provider = state.providers.for_pool(catalog, &placement.pool);
    let (regular, stop_gap) = templates(catalog, provider.as_ref(), &placement.pool, plan)?;
    let choice = choose(&here, catalog, regular, stop_gap.is_some());
    let chosen = match choice {
        Some(cell) => cell.clone(),
        None => queue_cell(
            state,
            catalog,
            &placement.pool,
            &placement.region,
            stop_gap.unwrap_or(regular),
            None,
            None,
        )
        .await
        .map_err(ApiError::unexpected)?,
    };

    // Ahead of need: the pool's own cells (stop-gaps are temporary) keep
    // `spare_slots` free, and a tenant on a stop-gap always has a regular
    // cell coming.
    let spare = catalog
        .pool(&placement.pool)
        .map_or(0, |pool| pool.spare_slots);
    let is_regular = |c: &Cell| {
        !catalog.is_stop_gap(c.template.as_deref())
            || c.template.as_deref() == Some(regular.name.as_str())
    };
    let coming = here.iter().filter(|c| {
        is_regular(c) && matches!(c.status, CellStatus::Active | CellStatus::Provisioning)
    });
    let chosen_is_new = !here.iter().any(|c| c.id == chosen.id);
    let mut free_after: u32 = coming.clone().map(Cell::free).sum();
    if is_regular(&chosen) {
        if chosen_is_new {
            free_after += chosen.free();
        }
        // The slot this tenant takes.
        free_after = free_after.saturating_sub(1);
    }
    let waiting_on_gap = stop_gap.is_some()
        && !is_regular(&chosen)
        && !coming.clone().any(|c| c.status == CellStatus::Provisioning);
    if free_after < spare || waiting_on_gap {
        match queue_cell(
            state,
            catalog,
            &placement.pool,
            &placement.region,
            regular,
            None,
            None,
        )
        .await
        {
            Ok(cell) => {
                tracing::info!(cell = %cell.name, free_after, spare, waiting_on_gap, "provisioning a cell ahead of need");
            }
            // The tenant is placed; the cell is tried again at the next
            // signup.
            Err(err) => tracing::error!(error = format!("{err:#}"), "queueing a spare cell failed"),
        }
    }
    Ok(chosen)
}

/// The cell a tenant goes to among `here` (one pool and region), if one
/// has room: the least-loaded active cell of the pool's own template; else
/// an active stop-gap cell; else, with a stop-gap in use, a stop-gap cell
/// being made, and without one a regular cell being made (the tenant waits
/// for it).
fn choose<'c>(
    here: &'c [Cell],
    catalog: &Catalog,
    regular: &CellTemplate,
    use_stop_gap: bool,
) -> Option<&'c Cell> {
    let load = |c: &Cell| f64::from(c.tenants) / f64::from(c.capacity.max(1));
    let own = |c: &Cell| {
        !catalog.is_stop_gap(c.template.as_deref())
            || c.template.as_deref() == Some(regular.name.as_str())
    };
    let pick = |status: CellStatus, gap: bool| {
        here.iter()
            .filter(move |c| c.status == status && c.free() > 0 && own(c) != gap)
            .min_by(|a, b| load(a).total_cmp(&load(b)))
    };
    let active = pick(CellStatus::Active, false).or_else(|| pick(CellStatus::Active, true));
    if use_stop_gap {
        active.or_else(|| pick(CellStatus::Provisioning, true))
    } else {
        active.or_else(|| pick(CellStatus::Provisioning, false))
    }
}

/// The template a pool's cells are made from here, and the stop-gap to use
/// meanwhile when those are slow to deliver (a dedicated server). A pool
/// whose regular template the provider cannot make (Hetzner without Robot
/// credentials) makes its stop-gap cells as its regular ones.
pub(crate) fn templates<'c>(
    catalog: &'c Catalog,
    provider: &dyn webhost_provider::Provider,
    pool: &PoolName,
    plan: &Plan,
) -> Result<(&'c CellTemplate, Option<&'c CellTemplate>), ApiError> {
    let regular = catalog.template_for(pool, &plan.name).ok_or_else(|| {
        ApiError::unexpected(anyhow::anyhow!(
            "the catalog has no cell template for pool {pool}"
        ))
    })?;
    let stop_gap = catalog
        .stop_gap_for(pool, &plan.name)
        .filter(|t| provider.offers(t));
    Ok(match stop_gap {
        Some(gap) if !provider.offers(regular) => (gap, None),
        Some(gap) if provider.slow_to_deliver(regular) => (regular, Some(gap)),
        _ => (regular, None),
    })
}

/// What a provisioning job is given.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProvisionPayload {
    pub cell_id: CellId,
    /// The catalog template the cell is made from.
    pub template: String,
    /// `dedicated` or `cloud`, where the provider offers both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The resource of a cell the operator registered (already running, made
/// by no provider of ours): provisioning is its health check only.
const REGISTERED: &str = "registered";

/// What recording and queueing a cell needs.
#[derive(Clone, Copy)]
pub struct CellMaker<'a> {
    pub store: &'a dyn ControlStore,
    pub providers: &'a Providers,
    pub jobs: &'a webhost_jobs::Jobs,
}

impl<'a> From<&'a ControlState> for CellMaker<'a> {
    fn from(state: &'a ControlState) -> Self {
        Self {
            store: state.store.as_ref(),
            providers: &state.providers,
            jobs: &state.jobs,
        }
    }
}

/// Records a new cell, `provisioning`, and queues the job that makes it
/// (or, with `registered_url`, that health-checks a cell already running
/// there).
pub async fn queue_cell(
    maker: impl Into<CellMaker<'_>>,
    catalog: &Catalog,
    pool: &PoolName,
    region: &RegionCode,
    template: &CellTemplate,
    kind: Option<String>,
    registered_url: Option<String>,
) -> anyhow::Result<Cell> {
    let maker = maker.into();
    let provider = maker.providers.for_pool(catalog, pool);
    let mut cell = record_cell(
        maker.store,
        pool,
        region,
        template,
        provider.kind(),
        CellStatus::Provisioning,
        String::new(),
    )
    .await?;
    if let Some(url) = registered_url {
        cell = maker
            .store
            .update_cell(
                cell.id,
                CellUpdate {
                    resource: Some(serde_json::to_value(Resource {
                        provider: provider.kind(),
                        external_id: REGISTERED.into(),
                        detail: serde_json::json!({ "url": url }),
                    })?),
                    ..CellUpdate::default()
                },
            )
            .await?;
    }
    maker
        .jobs
        .enqueue::<ProvisionCell>(
            serde_json::to_value(ProvisionPayload {
                cell_id: cell.id,
                template: template.name.clone(),
                kind,
            })?,
            Some(format!("provision_cell:{}", cell.id)),
            None,
        )
        .await?;
    tracing::info!(cell = %cell.name, %pool, %region, provider = provider.kind().as_str(), "cell queued for provisioning");
    Ok(cell)
}

/// Records a cell under the next free name `<pool>-<region>-<n>`.
pub(crate) async fn record_cell(
    store: &dyn ControlStore,
    pool: &PoolName,
    region: &RegionCode,
    template: &CellTemplate,
    provider: webhost_domain::ProviderKind,
    status: CellStatus,
    url: String,
) -> anyhow::Result<Cell> {
    let prefix = format!("{pool}-{region}-");
    let mut next = store
        .cells()
        .await?
        .iter()
        .filter_map(|c| c.name.strip_prefix(&prefix)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    // Another control-plane node may take the same name first.
    for _ in 0..5 {
        let created = store
            .create_cell(NewCell {
                id: CellId::new(),
                name: format!("{prefix}{next}"),
                pool: pool.clone(),
                region: region.clone(),
                provider,
                url: url.clone(),
                status,
                capacity: template.capacity,
                monthly_cost_cents: template.monthly_cost_cents,
                template: Some(template.name.clone()),
            })
            .await;
        match created {
            Err(StorageError::Conflict(Conflict::CellNameTaken(_))) => next += 1,
            other => return Ok(other?),
        }
    }
    anyhow::bail!("no free cell name for {prefix}* after 5 tries")
}

/// Creates the tenant on its cell (`PUT /internal/v1/tenants/{id}` with the
/// plan's limits). Idempotent.
pub(crate) async fn push_limits(
    client: &InternalClient,
    cell: &Cell,
    tenant: TenantId,
    plan: &Plan,
) -> anyhow::Result<()> {
    let path = paths::tenant(tenant);
    client
        .call(
            InternalRequest {
                method: Method::PUT,
                base_url: &cell.url,
                path: &path,
                audience: &cell_audience(cell.id),
                tenant: None,
                subject: None,
            },
            Some(&TenantLimits {
                plan: plan.name.to_string(),
                max_vehicles: plan.max_vehicles,
                retention_days: plan.retention_days,
            }),
        )
        .await?
        .success()?;
    Ok(())
}

/// Creates the tenants waiting on `cell` there and turns them active.
pub(crate) async fn activate_waiting(
    store: &dyn ControlStore,
    client: &InternalClient,
    cell: &Cell,
) -> anyhow::Result<usize> {
    let catalog = store.catalog().await?;
    let mut activated = 0;
    for tenant in store.cell_tenants(cell.id).await? {
        if tenant.status != TenantStatus::Provisioning {
            continue;
        }
        let plan = catalog.plan(&tenant.plan)?;
        push_limits(client, cell, tenant.id, plan)
            .await
            .with_context(|| format!("creating tenant {} on cell {}", tenant.id, cell.name))?;
        store
            .set_tenant_status(tenant.id, TenantStatus::Active)
            .await?;
        activated += 1;
    }
    if activated > 0 {
        tracing::info!(cell = %cell.name, activated, "waiting tenants are active");
    }
    Ok(activated)
}

/// Makes one recorded cell through its provider (see the module docs).
pub struct ProvisionCell {
    pub(crate) store: std::sync::Arc<dyn ControlStore>,
    pub(crate) providers: Providers,
    pub(crate) client: InternalClient,
}

#[async_trait]
impl Handler for ProvisionCell {
    fn kind() -> &'static str {
        "provision_cell"
    }

    fn queue() -> &'static str {
        queues::PROVISIONING
    }

    fn max_attempts() -> u32 {
        10
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload: ProvisionPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(anyhow::anyhow!("bad payload: {e}")))?;
        let cell = match self.store.cell(payload.cell_id).await {
            Ok(cell) => cell,
            Err(StorageError::NotFound(_)) => {
                return Err(JobError::permanent(anyhow::anyhow!(
                    "cell {} is not recorded",
                    payload.cell_id
                )))
            }
            Err(err) => return Err(JobError::retry(err)),
        };
        match cell.status {
            CellStatus::Provisioning => {}
            // Made already (an earlier run got this far): what may remain
            // is creating the tenants waiting on it.
            CellStatus::Active | CellStatus::Draining => {
                activate_waiting(self.store.as_ref(), &self.client, &cell).await?;
                return Ok(());
            }
            CellStatus::Failed | CellStatus::Retired => {
                return Err(JobError::permanent(anyhow::anyhow!(
                    "cell {} is {}",
                    cell.name,
                    cell.status.as_str()
                )))
            }
        }
        let catalog = self.store.catalog().await.map_err(JobError::retry)?;
        let template = catalog
            .cell_templates
            .iter()
            .find(|t| t.name == payload.template)
            .cloned()
            .ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!(
                    "the catalog has no cell template {}",
                    payload.template
                ))
            })?;
        let provider = self.providers.for_kind(cell.provider).ok_or_else(|| {
            JobError::permanent(anyhow::anyhow!(
                "provider {} is not configured here",
                cell.provider.as_str()
            ))
        })?;
        let spec = CellSpec {
            id: cell.id,
            name: cell.name.clone(),
            pool: cell.pool.clone(),
            region: cell.region.clone(),
            template,
        };

        let resource: Resource = match &cell.resource {
            Some(recorded) => serde_json::from_value(recorded.clone())
                .map_err(|e| JobError::permanent(anyhow::anyhow!("recorded resource: {e}")))?,
            None => {
                let made = match provider.create(&spec).await {
                    Ok(made) => made,
                    Err(err) => {
                        return Err(self
                            .failed(&cell, provider.as_ref(), &spec, None, err)
                            .await)
                    }
                };
                self.store
                    .update_cell(
                        cell.id,
                        CellUpdate {
                            resource: Some(
                                serde_json::to_value(&made).map_err(anyhow::Error::from)?,
                            ),
                            ..CellUpdate::default()
                        },
                    )
                    .await
                    .map_err(JobError::retry)?;
                made
            }
        };

        let progress = if resource.external_id == REGISTERED {
            let url = resource.detail["url"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Progress::Ready { url }
        } else {
            match provider.poll(&spec, &resource).await {
                Ok(progress) => progress,
                Err(err) => {
                    return Err(self
                        .failed(&cell, provider.as_ref(), &spec, Some(&resource), err)
                        .await)
                }
            }
        };
        let _ = ctx
            .progress(serde_json::to_value(&progress).unwrap_or_default())
            .await;
        match progress {
            Progress::Pending { .. } => {
                self.store
                    .update_cell(
                        cell.id,
                        CellUpdate {
                            progress: Some(
                                serde_json::to_value(&progress).map_err(anyhow::Error::from)?,
                            ),
                            ..CellUpdate::default()
                        },
                    )
                    .await
                    .map_err(JobError::retry)?;
                Err(JobError::Snooze(POLL_EVERY))
            }
            Progress::Failed { reason } => {
                // Nothing half-made is left behind.
                if let Err(err) = provider.destroy(&spec, &resource).await {
                    tracing::error!(cell = %cell.name, error = format!("{err:#}"), "cleaning up a failed cell failed");
                }
                self.store
                    .update_cell(
                        cell.id,
                        CellUpdate {
                            status: Some(CellStatus::Failed),
                            last_error: Some(Some(reason.clone())),
                            ..CellUpdate::default()
                        },
                    )
                    .await
                    .map_err(JobError::retry)?;
                Err(JobError::permanent(anyhow::anyhow!(
                    "the provider could not make cell {}: {reason}",
                    cell.name
                )))
            }
            Progress::Ready { url } => {
                let url = if resource.external_id == REGISTERED {
                    url
                } else {
                    self.providers.cell_url(provider.kind(), &cell.name, url)
                };
                if let Err(err) = health(&self.client, cell.id, &url).await {
                    if resource.external_id == REGISTERED {
                        // The operator said it runs there: not answering is
                        // an error, retried with backoff, then failed.
                        let err = err.context(format!("health check of {url}"));
                        return Err(self
                            .failed(&cell, provider.as_ref(), &spec, Some(&resource), err)
                            .await);
                    }
                    self.store
                        .update_cell(
                            cell.id,
                            CellUpdate {
                                progress: Some(serde_json::json!({
                                    "state": "pending",
                                    "step": "waiting for the cell's health check",
                                    "percent": 90,
                                })),
                                last_error: Some(Some(format!("{err:#}"))),
                                ..CellUpdate::default()
                            },
                        )
                        .await
                        .map_err(JobError::retry)?;
                    return Err(JobError::Snooze(POLL_EVERY));
                }
                let cost = provider
                    .monthly_cost_cents(&spec)
                    .await
                    .unwrap_or(spec.template.monthly_cost_cents);
                let cell = self
                    .store
                    .update_cell(
                        cell.id,
                        CellUpdate {
                            status: Some(CellStatus::Active),
                            url: Some(url),
                            progress: Some(
                                serde_json::to_value(Progress::Ready { url: String::new() })
                                    .map_err(anyhow::Error::from)?,
                            ),
                            last_error: Some(None),
                            monthly_cost_cents: Some(cost),
                            ..CellUpdate::default()
                        },
                    )
                    .await
                    .map_err(JobError::retry)?;
                tracing::info!(cell = %cell.name, url = %cell.url, "cell is active");
                activate_waiting(self.store.as_ref(), &self.client, &cell).await?;
                Ok(())
            }
        }
    }
}

impl ProvisionCell {
    /// A provider error is recorded on the cell (the operator sees it) and
    /// retried — unless the provider refused for good (a `4xx`: a bad
    /// token, an unknown server type, a spent quota): then what was made is
    /// cleaned up, the cell is `failed` and the job ends with the
    /// provider's words.
    async fn failed(
        &self,
        cell: &Cell,
        provider: &dyn webhost_provider::Provider,
        spec: &CellSpec,
        resource: Option<&Resource>,
        err: anyhow::Error,
    ) -> JobError {
        let message = format!("{err:#}");
        if webhost_provider::Refused::in_error(&err).is_none() {
            let _ = self
                .store
                .update_cell(
                    cell.id,
                    CellUpdate {
                        last_error: Some(Some(message)),
                        ..CellUpdate::default()
                    },
                )
                .await;
            return job_error(err);
        }
        // Nothing half-made is left behind: providers find their work by
        // the cell's name and labels, so cleaning up works even when the
        // refused create recorded nothing.
        let nothing = Resource {
            provider: provider.kind(),
            external_id: String::new(),
            detail: serde_json::Value::Null,
        };
        let cleanup = provider.destroy(spec, resource.unwrap_or(&nothing)).await;
        let recorded = match &cleanup {
            Ok(()) => message.clone(),
            Err(cleanup) => format!(
                "{message}; cleaning up failed too ({cleanup:#}): retire the cell to try again"
            ),
        };
        tracing::error!(cell = %cell.name, error = %recorded, "the provider refused; cell failed");
        if let Err(err) = self
            .store
            .update_cell(
                cell.id,
                CellUpdate {
                    status: Some(CellStatus::Failed),
                    last_error: Some(Some(recorded)),
                    ..CellUpdate::default()
                },
            )
            .await
        {
            return JobError::retry(err);
        }
        JobError::permanent(err)
    }
}

/// A provider's "come back in N s" waits that long without counting an
/// attempt; a refusal ends the job; anything else is retried on the job's
/// backoff.
pub(crate) fn job_error(err: anyhow::Error) -> JobError {
    if webhost_provider::Refused::in_error(&err).is_some() {
        return JobError::permanent(err);
    }
    match webhost_provider::Throttled::in_error(&err) {
        Some(retry_after) => {
            tracing::info!(
                error = format!("{err:#}"),
                ?retry_after,
                "provider throttled; waiting"
            );
            JobError::Snooze(retry_after)
        }
        None => JobError::retry(err),
    }
}

/// `GET {url}/api/health` answers 200.
async fn health(client: &InternalClient, cell: CellId, url: &str) -> anyhow::Result<()> {
    client
        .call::<()>(
            InternalRequest {
                method: Method::GET,
                base_url: url,
                path: "/api/health",
                audience: &cell_audience(cell),
                tenant: None,
                subject: None,
            },
            None,
        )
        .await?
        .success()?;
    Ok(())
}

/// What a retiring job is given.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetirePayload {
    pub cell_id: CellId,
}

/// Destroys an empty cell through its provider and marks it retired.
pub struct RetireCell {
    pub(crate) store: std::sync::Arc<dyn ControlStore>,
    pub(crate) providers: Providers,
}

#[async_trait]
impl Handler for RetireCell {
    fn kind() -> &'static str {
        "retire_cell"
    }

    fn queue() -> &'static str {
        queues::PROVISIONING
    }

    async fn run(&self, job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        let payload: RetirePayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(anyhow::anyhow!("bad payload: {e}")))?;
        let cell = self
            .store
            .cell(payload.cell_id)
            .await
            .map_err(|err| match err {
                StorageError::NotFound(_) => JobError::permanent(anyhow::anyhow!("cell is gone")),
                other => JobError::retry(other),
            })?;
        if cell.status == CellStatus::Retired {
            return Ok(());
        }
        if cell.tenants > 0 {
            return Err(JobError::permanent(anyhow::anyhow!(
                "cell {} hosts {} tenants again; not retired",
                cell.name,
                cell.tenants
            )));
        }
        if let Some(recorded) = &cell.resource {
            let resource: Resource = serde_json::from_value(recorded.clone())
                .map_err(|e| JobError::permanent(anyhow::anyhow!("recorded resource: {e}")))?;
            if resource.external_id != REGISTERED {
                let provider = self.providers.for_kind(cell.provider).ok_or_else(|| {
                    JobError::permanent(anyhow::anyhow!(
                        "provider {} is not configured here",
                        cell.provider.as_str()
                    ))
                })?;
                let catalog = self.store.catalog().await.map_err(JobError::retry)?;
                // The template it was made from (a provider may need its
                // kind to find what it made), else the pool's first.
                let template = catalog
                    .cell_templates
                    .iter()
                    .find(|t| Some(&t.name) == cell.template.as_ref())
                    .or_else(|| catalog.cell_templates.iter().find(|t| t.pool == cell.pool))
                    .cloned()
                    .ok_or_else(|| JobError::permanent(anyhow::anyhow!("no template for pool")))?;
                let spec = CellSpec {
                    id: cell.id,
                    name: cell.name.clone(),
                    pool: cell.pool.clone(),
                    region: cell.region.clone(),
                    template,
                };
                provider.destroy(&spec, &resource).await?;
            }
        }
        self.store
            .update_cell(
                cell.id,
                CellUpdate {
                    status: Some(CellStatus::Retired),
                    ..CellUpdate::default()
                },
            )
            .await
            .map_err(JobError::retry)?;
        tracing::info!(cell = %cell.name, "cell retired");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_throttled_provider_snoozes_the_job_and_other_errors_retry_it() {
        let throttled = anyhow::Error::new(webhost_provider::Throttled {
            retry_after: Duration::from_secs(90),
        })
        .context("Hetzner Cloud POST /servers: 429");
        assert!(matches!(
            job_error(throttled),
            JobError::Snooze(d) if d == Duration::from_secs(90)
        ));
        assert!(matches!(
            job_error(anyhow::anyhow!("connection reset")),
            JobError::Retry(_)
        ));
        let refused = anyhow::Error::new(webhost_provider::Refused {
            what: "Hetzner Cloud POST /servers".into(),
            status: 422,
            body: "invalid server type".into(),
        });
        assert!(matches!(job_error(refused), JobError::Permanent(_)));
    }
}
