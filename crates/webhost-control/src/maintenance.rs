//! The control plane's scheduled jobs over every cell: retention daily at
//! 02:00 UTC (each cell drops the history its tenants' plans no longer
//! keep), and a health check of every cell every 6 hours. Both run as cron
//! entries of the job queue, so exactly one node runs each slot, and a slot
//! missed while every node was down runs once when one comes back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use webhost_contract::{cell_audience, paths};
use webhost_http::client::{InternalClient, InternalRequest};
use webhost_jobs::{CronSchedule, Handler, JobContext, JobError, Jobs};
use webhost_storage::{Cell, CellStatus, CellUpdate, ControlStore, Job};

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
            let answer = self
                .client
                .call(
                    InternalRequest {
                        method: Method::POST,
                        base_url: &cell.url,
                        path: paths::RETENTION,
                        audience: &cell_audience(cell.id),
                        tenant: None,
                        subject: None,
                    },
                    Some(&serde_json::json!({})),
                )
                .await
                .and_then(|r| r.success())
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
                self.client.call::<()>(
                    InternalRequest {
                        method: Method::GET,
                        base_url: &cell.url,
                        path: "/api/health",
                        audience: &cell_audience(cell.id),
                        tenant: None,
                        subject: None,
                    },
                    None,
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
            .and_then(|r| r)
            .and_then(|r| r.success());
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
}
