//! What each tenant uses of the cell: positions stored and API requests are
//! counted in memory and added to the day's tally in the database every
//! minute (and when the ingest writer stops); `GET /internal/v1/usage`
//! reports every tenant's figures over the last 30 days with what it
//! stores now. The control plane's usage job collects them and the
//! economics attribute the cell's cost by them.
//!
//! A crash loses at most the last minute's counts: these are figures for
//! attributing cost, not data a customer entrusted to the cell.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use chrono::{Days, Utc};
use webhost_contract::{CellUsageReport, TenantUsageReport};
use webhost_domain::{TenantId, Usage};
use webhost_http::auth::ControlCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{CellStore, NewPosition, UsageCount};

use crate::CellState;

/// How often the counts go to the database.
const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// The counts since the last flush, per tenant.
#[derive(Clone, Default)]
pub(crate) struct Meter {
    counts: Arc<Mutex<HashMap<TenantId, UsageCount>>>,
}

impl Meter {
    fn with(&self, tenant: TenantId, add: impl FnOnce(&mut UsageCount)) {
        let mut counts = self.counts.lock().expect("usage meter lock");
        add(counts.entry(tenant).or_insert(UsageCount {
            tenant_id: tenant,
            ..UsageCount::default()
        }));
    }

    /// One API request of `tenant`.
    pub(crate) fn request(&self, tenant: TenantId) {
        self.with(tenant, |c| c.api_requests += 1);
    }

    /// The rows a commit stored (`stored[i]`: row `i` was new).
    pub(crate) fn ingested(&self, rows: &[NewPosition], stored: &[bool]) {
        let mut per_tenant: HashMap<TenantId, u64> = HashMap::new();
        for (row, _) in rows.iter().zip(stored).filter(|(_, s)| **s) {
            *per_tenant.entry(row.tenant_id).or_default() += 1;
        }
        for (tenant, n) in per_tenant {
            self.with(tenant, |c| c.positions_ingested += n);
        }
    }

    /// Adds what was counted to today's tally; on failure the counts are
    /// kept for the next flush.
    pub(crate) async fn flush(&self, store: &dyn CellStore) {
        let counts: Vec<UsageCount> = {
            let mut counts = self.counts.lock().expect("usage meter lock");
            counts.drain().map(|(_, c)| c).collect()
        };
        if counts.is_empty() {
            return;
        }
        if let Err(err) = store.add_usage(Utc::now().date_naive(), &counts).await {
            tracing::warn!(error = %err, "usage tally not stored; kept for the next flush");
            for c in counts {
                self.with(c.tenant_id, |kept| {
                    kept.positions_ingested += c.positions_ingested;
                    kept.api_requests += c.api_requests;
                });
            }
        }
    }

    /// Flushes every minute until `stop` (the ingest writer flushes last).
    pub(crate) async fn flush_periodically(
        self,
        store: Arc<dyn CellStore>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(FLUSH_EVERY) => self.flush(&*store).await,
            }
        }
    }
}

/// `GET /internal/v1/usage`: the counts flushed first, so the report is
/// current.
pub(crate) async fn report(
    _: ControlCaller,
    State(state): State<CellState>,
) -> Result<ApiJson<CellUsageReport>, ApiError> {
    state.meter.flush(&*state.store).await;
    let measured_at = Utc::now();
    let since = measured_at
        .date_naive()
        .checked_sub_days(Days::new(u64::from(Usage::WINDOW_DAYS - 1)))
        .unwrap_or(chrono::NaiveDate::MIN);
    let tenants = state
        .store
        .usage(since)
        .await?
        .into_iter()
        .map(|r| TenantUsageReport {
            tenant_id: r.tenant_id,
            usage: r.usage,
        })
        .collect();
    Ok(ApiJson(CellUsageReport {
        measured_at,
        window_days: Usage::WINDOW_DAYS,
        tenants,
    }))
}
