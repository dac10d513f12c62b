//! Retention on PostgreSQL: drop whole daily partitions that every tenant's
//! plan has expired; inside the partitions that are only partly expired
//! (some tenants keep them, or the cutoff falls mid-day), delete each
//! tenant's expired rows in small batches on that partition alone, so no
//! statement takes more than row locks or runs long.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::Row;
use webhost_domain::TenantId;
use webhost_storage::{RetentionReport, StorageResult};

use crate::unexpected;

/// Rows one DELETE removes before the next batch.
const BATCH: i64 = 10_000;

fn partition_day(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("positions_p")?, "%Y%m%d").ok()
}

impl crate::PgCellStore {
    /// `cutoffs`: per tenant of this cell, the oldest time its plan keeps.
    /// Tenants not listed keep everything.
    pub(crate) async fn expire_positions_impl(
        &self,
        cutoffs: &[(TenantId, DateTime<Utc>)],
    ) -> StorageResult<RetentionReport> {
        let mut report = RetentionReport::default();
        let partitions: Vec<String> = sqlx::query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'positions' ORDER BY c.relname",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?
        .iter()
        .map(|row| row.try_get::<String, _>("relname"))
        .collect::<Result<_, _>>()
        .map_err(unexpected)?;
        // Every tenant of the cell must be done with a partition before it
        // goes; a cell whose tenants all have a plan drops by the longest.
        let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenants")
            .fetch_all(&self.pool)
            .await
            .map_err(unexpected)?;
        let all_listed = tenants
            .iter()
            .all(|t| cutoffs.iter().any(|(id, _)| id.as_uuid() == *t));
        let min_cutoff = cutoffs.iter().map(|(_, c)| *c).min();

        for name in partitions {
            let Some(day) = partition_day(&name) else {
                continue;
            };
            let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            let end = (day + TimeDelta::days(1))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc());
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            if all_listed && min_cutoff.is_some_and(|cutoff| end <= cutoff) {
                // DETACH … CONCURRENTLY takes no exclusive lock on the parent; the drop
                // then touches only the detached table.
                let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {name}"))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unexpected)?;
                sqlx::query(&format!(
                    "ALTER TABLE positions DETACH PARTITION {name} CONCURRENTLY"
                ))
                .execute(&self.pool)
                .await
                .map_err(unexpected)?;
                sqlx::query(&format!("DROP TABLE {name}"))
                    .execute(&self.pool)
                    .await
                    .map_err(unexpected)?;
                self.partitions
                    .lock()
                    .expect("partition cache lock")
                    .remove(&day);
                report.partitions_dropped += 1;
                report.positions_removed += rows.max(0) as u64;
                continue;
            }
            for (tenant, cutoff) in cutoffs {
                if *cutoff <= start {
                    continue;
                }
                loop {
                    let done = sqlx::query(&format!(
                        "DELETE FROM {name} WHERE ctid IN (SELECT ctid FROM {name} \
                         WHERE tenant_id = $1 AND time < $2 LIMIT $3)"
                    ))
                    .bind(tenant.as_uuid())
                    .bind(*cutoff)
                    .bind(BATCH)
                    .execute(&self.pool)
                    .await
                    .map_err(unexpected)?;
                    report.positions_removed += done.rows_affected();
                    if done.rows_affected() < BATCH as u64 {
                        break;
                    }
                }
            }
        }
        for (tenant, cutoff) in cutoffs {
            loop {
                let done = sqlx::query(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events \
                     WHERE tenant_id = $1 AND time < $2 LIMIT $3)",
                )
                .bind(tenant.as_uuid())
                .bind(*cutoff)
                .bind(BATCH)
                .execute(&self.pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_map_to_days() {
        assert_eq!(
            partition_day("positions_p20261121"),
            NaiveDate::from_ymd_opt(2026, 11, 21)
        );
        assert_eq!(partition_day("positions_default"), None);
        assert_eq!(partition_day("other"), None);
    }
}
