//! The cell's maintenance: retention (each tenant's history older than its
//! plan keeps is removed, and finished jobs and webhook delivery attempts
//! past their keeping time, `webhost_storage::keep`) through `POST /internal/v1/maintenance/retention`,
//! which the control plane's `retention` job calls on every cell daily at
//! 02:00 UTC (a cron entry of its job queue: one node runs each day, a day
//! missed while every node was down is caught up once).

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use webhost_http::auth::ControlCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{keep, CellStore, RetentionReport, StorageResult};

use crate::CellState;

pub(crate) fn routes() -> Router<CellState> {
    Router::new().route(webhost_contract::paths::RETENTION, post(run_now))
}

/// Removes, for every tenant of the cell, the positions older than its plan
/// keeps at `now`.
pub async fn retention(
    store: &dyn CellStore,
    now: DateTime<Utc>,
) -> StorageResult<RetentionReport> {
    let cutoffs: Vec<_> = store
        .tenants()
        .await?
        .into_iter()
        .map(|t| {
            (
                t.id,
                now - chrono::Duration::days(i64::from(t.retention_days)),
            )
        })
        .collect();
    let mut report = store.expire_positions(&cutoffs).await?;
    // The cell's own job queue and delivery log are kept for a while too.
    report.jobs_purged = store
        .purge_finished(now - keep::SUCCEEDED_JOBS, now - keep::FAILED_JOBS)
        .await?;
    report.deliveries_purged = store
        .purge_webhook_attempts(now - keep::WEBHOOK_ATTEMPTS)
        .await?;
    tracing::info!(
        partitions_dropped = report.partitions_dropped,
        positions_removed = report.positions_removed,
        jobs_purged = report.jobs_purged,
        deliveries_purged = report.deliveries_purged,
        "retention done"
    );
    Ok(report)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunBody {
    /// Run as of this time (the control plane's catch-up jobs); default now.
    #[serde(default)]
    now: Option<DateTime<Utc>>,
}

async fn run_now(
    _: ControlCaller,
    State(state): State<CellState>,
    body: Option<ApiJson<RunBody>>,
) -> Result<ApiJson<RetentionReport>, ApiError> {
    let now = body.and_then(|b| b.0.now).unwrap_or_else(Utc::now);
    // The daily run is also when the days ahead are prepared (PostgreSQL
    // partitions; they are made on demand too, this keeps ingest off it).
    if let Err(err) = state.store.prepare_ahead(Utc::now()).await {
        tracing::error!(error = %err, "preparing storage ahead failed");
    }
    Ok(ApiJson(retention(state.store.as_ref(), now).await?))
}
