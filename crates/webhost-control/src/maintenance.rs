//! The control plane's scheduled jobs over every cell: retention daily at
//! 02:00 UTC (each cell drops the history its tenants' plans no longer
//! keep), a health check of every cell every 6 hours, and every hour the
//! collection of each cell's per-tenant usage (the economics attribute
//! cost by it), and daily at 03:00 the purge of finished jobs. All run as cron
//! entries of the job queue, so exactly one node runs each slot, and a slot
//! missed while every node was down runs once when one comes back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use webhost_contract::{cell_audience, paths, CellUsageReport};
use webhost_http::client::{InternalClient, InternalRequest, InternalResponse};
use webhost_jobs::{queues, CronSchedule, Handler, JobContext, JobError, Jobs};
use webhost_storage::{keep, Cell, CellStatus, CellUpdate, ControlStore, Job, TenantUsageRecord};

/// Cells that serve tenants.
async fn serving(store: &dyn ControlStore) -> Result<Vec<Cell>, JobError> {
    Ok(store
        .cells()
        .await
        .map_err(JobError::retry)?
        .into_iter()
        .filter(|c| matches!(c.status, CellStatus::Active | CellStatus::Draining))
        .collect())
}

/// Calls `path` on `cell` as the control plane; a 2xx answer or the error.
async fn call_cell(
    client: &InternalClient,
    cell: &Cell,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<InternalResponse> {
    client
        .call(
            InternalRequest {
                method,
                base_url: &cell.url,
                path,
                audience: &cell_audience(cell.id),
                tenant: None,
                subject: None,
            },
            body,
        )
        .await
        .and_then(|r| r.success())
}

/// Asks every cell to apply its tenants' retention. Idempotent: a cell
/// asked twice removes nothing the second time.
pub struct Retention {
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) client: InternalClient,
}

#[async_trait]
impl Handler for Retention {
    fn kind() -> &'static str {
        "retention"
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let mut failed = Vec::new();
        let mut report = serde_json::Map::new();
        for cell in serving(self.store.as_ref()).await? {
            let answer = call_cell(
                &self.client,
                &cell,
                Method::POST,
                paths::RETENTION,
                Some(&serde_json::json!({})),
            )
            .await
            .and_then(|r| r.json::<serde_json::Value>());
            match answer {
                Ok(done) => {
                    report.insert(cell.name.clone(), done);
                }
                Err(err) => {
                    tracing::warn!(cell = %cell.name, error = format!("{err:#}"), "retention failed on a cell");
                    failed.push(format!("{}: {err:#}", cell.name));
                }
            }
        }
        let _ = ctx.progress(serde_json::Value::Object(report)).await;
        if failed.is_empty() {
            Ok(())
        } else {
            // The cells that did it are asked again too: harmless.
            Err(JobError::retry(anyhow::anyhow!(
                "retention failed on {} cell(s): {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }
}

/// Checks every serving cell's `/api/health` and records the outcome on
/// the cell (`last_error`), where the operator API shows it.
pub struct CellHealth {
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) client: InternalClient,
}

#[async_trait]
impl Handler for CellHealth {
    fn kind() -> &'static str {
        "cell_health"
    }

    fn max_attempts() -> u32 {
        1
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let mut unhealthy = Vec::new();
        for cell in serving(self.store.as_ref()).await? {
            let checked = tokio::time::timeout(
                Duration::from_secs(10),
                call_cell(&self.client, &cell, Method::GET, "/api/health", None),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
            .and_then(|r| r);
            let last_error = match checked {
                Ok(_) => None,
                Err(err) => {
                    tracing::error!(cell = %cell.name, error = format!("{err:#}"), "cell unhealthy");
                    unhealthy.push(cell.name.clone());
                    Some(format!(
                        "health check at {} failed: {err:#}",
                        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                    ))
                }
            };
            if last_error != cell.last_error {
                self.store
                    .update_cell(
                        cell.id,
                        CellUpdate {
                            last_error: Some(last_error),
                            ..CellUpdate::default()
                        },
                    )
                    .await
                    .map_err(JobError::retry)?;
            }
        }
        let _ = ctx
            .progress(serde_json::json!({ "unhealthy": unhealthy }))
            .await;
        Ok(())
    }
}

/// Collects every serving cell's usage report and records it, replacing
/// each tenant's previous figures. Idempotent: a report is a snapshot, so
/// collecting twice records the same thing twice.
pub struct CollectUsage {
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) client: InternalClient,
}

#[async_trait]
impl Handler for CollectUsage {
    fn kind() -> &'static str {
        "collect_usage"
    }

    fn queue() -> &'static str {
        queues::SYNC
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let mut failed = Vec::new();
        let mut collected = serde_json::Map::new();
        for cell in serving(self.store.as_ref()).await? {
            let report = call_cell(&self.client, &cell, Method::GET, paths::USAGE, None)
                .await
                .and_then(|r| r.json::<CellUsageReport>());
            match report {
                Ok(report) => {
                    let records: Vec<_> = report
                        .tenants
                        .iter()
                        .map(|t| TenantUsageRecord {
                            tenant_id: t.tenant_id,
                            usage: t.usage,
                        })
                        .collect();
                    self.store
                        .record_usage(cell.id, report.measured_at, &records)
                        .await
                        .map_err(JobError::retry)?;
                    collected.insert(cell.name.clone(), records.len().into());
                }
                Err(err) => {
                    tracing::warn!(cell = %cell.name, error = format!("{err:#}"), "usage not collected from a cell");
                    failed.push(format!("{}: {err:#}", cell.name));
                }
            }
        }
        let _ = ctx
            .progress(serde_json::json!({ "tenants_per_cell": collected }))
            .await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(JobError::retry(anyhow::anyhow!(
                "usage not collected from {} cell(s): {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }
}

/// Deletes the control plane's finished jobs past their keeping time
/// (`webhost_storage::keep`); failed ones stay longer than succeeded ones.
pub struct PurgeJobs {
    pub(crate) store: Arc<dyn ControlStore>,
}

#[async_trait]
impl Handler for PurgeJobs {
    fn kind() -> &'static str {
        "purge_jobs"
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let now = chrono::Utc::now();
        let purged = self
            .store
            .purge_finished(now - keep::SUCCEEDED_JOBS, now - keep::FAILED_JOBS)
            .await
            .map_err(JobError::retry)?;
        let _ = ctx.progress(serde_json::json!({ "purged": purged })).await;
        Ok(())
    }
}

/// Registers the scheduled jobs and their cron entries.
pub(crate) fn schedule(jobs: Jobs, store: &Arc<dyn ControlStore>, client: &InternalClient) -> Jobs {
    jobs.register(Retention {
        store: store.clone(),
        client: client.clone(),
    })
    .register(CellHealth {
        store: store.clone(),
        client: client.clone(),
    })
    .register(CollectUsage {
        store: store.clone(),
        client: client.clone(),
    })
    .register(PurgeJobs {
        store: store.clone(),
    })
    .add_cron(
        "retention",
        CronSchedule::DailyAt { hour: 2, minute: 0 },
        Retention::kind(),
        serde_json::json!({}),
    )
    .add_cron(
        "cell_health",
        CronSchedule::Every(Duration::from_secs(6 * 3600)),
        CellHealth::kind(),
        serde_json::json!({}),
    )
    .add_cron(
        "collect_usage",
        CronSchedule::Every(Duration::from_secs(3600)),
        CollectUsage::kind(),
        serde_json::json!({}),
    )
    .add_cron(
        "purge_jobs",
        CronSchedule::DailyAt { hour: 3, minute: 0 },
        PurgeJobs::kind(),
        serde_json::json!({}),
    )
}
