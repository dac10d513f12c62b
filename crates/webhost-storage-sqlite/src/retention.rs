//! Retention on SQLite: each tenant's expired positions deleted in batches,
//! one short transaction per batch, so writers wait at most one batch.

use chrono::{DateTime, Utc};
use webhost_domain::TenantId;
use webhost_storage::{RetentionReport, StorageResult};

use crate::unexpected;

const BATCH: i64 = 5_000;

impl crate::SqliteCellStore {
    pub(crate) async fn expire_positions_impl(
        &self,
        cutoffs: &[(TenantId, DateTime<Utc>)],
    ) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        for (tenant, cutoff) in cutoffs {
            loop {
                let done = sqlx::query(
                    "DELETE FROM positions WHERE (vehicle_id, time) IN (SELECT vehicle_id, time \
                     FROM positions WHERE tenant_id = ?1 AND time < ?2 LIMIT ?3)",
                )
                .bind(tenant.to_string())
                .bind(cutoff.timestamp_millis())
                .bind(BATCH)
                .execute(&self.pools.writer)
                .await
                .map_err(unexpected)?;
                report.positions_removed += done.rows_affected();
                if done.rows_affected() < BATCH as u64 {
                    break;
                }
            }
            loop {
                let done = sqlx::query(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events \
                     WHERE tenant_id = ?1 AND time < ?2 LIMIT ?3)",
                )
                .bind(tenant.to_string())
                .bind(cutoff.timestamp_millis())
                .bind(BATCH)
                .execute(&self.pools.writer)
                .await
                .map_err(unexpected)?;
                report.events_removed += done.rows_affected();
                if done.rows_affected() < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(report)
    }
}
