//! The cell's maintenance: retention (each tenant's history older than its
//! plan keeps is removed) once a day, and on demand through
//! `POST /internal/v1/maintenance/retention` for the control plane's jobs and
//! for tests.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use webhost_http::auth::ControlCaller;
use webhost_http::serve::Shutdown;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{CellStore, RetentionReport, StorageResult};

use crate::CellState;

const EVERY: Duration = Duration::from_secs(24 * 3600);
/// Let start-up traffic settle before the first run.
const FIRST_AFTER: Duration = Duration::from_secs(60);

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
    let report = store.expire_positions(&cutoffs).await?;
    tracing::info!(
        partitions_dropped = report.partitions_dropped,
        positions_removed = report.positions_removed,
        "retention done"
    );
    Ok(report)
}

/// Runs retention daily until `tasks` is cancelled.
pub(crate) fn spawn_daily(store: Arc<dyn CellStore>, tasks: &Shutdown) {
    let stop = tasks.token();
    tasks.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(FIRST_AFTER) => {}
            () = stop.cancelled() => return,
        }
        let mut every = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(err) = store.prepare_ahead(Utc::now()).await {
                tracing::error!(error = %err, "preparing storage ahead failed");
            }
            if let Err(err) = retention(store.as_ref(), Utc::now()).await {
                tracing::error!(error = %err, "retention failed; retrying tomorrow");
            }
        }
    });
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
    Ok(ApiJson(retention(state.store.as_ref(), now).await?))
}
