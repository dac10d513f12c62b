//! Per-tenant usage on SQLite: daily tallies, and what each tenant keeps.

use chrono::NaiveDate;
use sqlx::Row;
use webhost_domain::{TenantId, Usage};
use webhost_storage::{
    share_storage, usage_by_tenant, StorageResult, TenantUsageRecord, UsageCount,
};

use crate::{parse_uuid, unexpected, SqliteCellStore};

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl SqliteCellStore {
    pub(crate) async fn add_usage_impl(
        &self,
        day: NaiveDate,
        counts: &[UsageCount],
    ) -> StorageResult<()> {
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        for c in usage_by_tenant(counts) {
            sqlx::query(
                "INSERT INTO tenant_usage_daily (tenant_id, day, positions_ingested, api_requests) \
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1) \
                 ON CONFLICT (tenant_id, day) DO UPDATE SET \
                 positions_ingested = positions_ingested + excluded.positions_ingested, \
                 api_requests = api_requests + excluded.api_requests",
            )
            .bind(c.tenant_id.to_string())
            .bind(day.to_string())
            .bind(i64::try_from(c.positions_ingested).unwrap_or(i64::MAX))
            .bind(i64::try_from(c.api_requests).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        }
        tx.commit().await.map_err(unexpected)
    }

    pub(crate) async fn usage_impl(
        &self,
        since: NaiveDate,
    ) -> StorageResult<Vec<TenantUsageRecord>> {
        let rows = sqlx::query(
            "SELECT t.id, COALESCE(p.n, 0) AS stored, COALESCE(d.ingested, 0) AS ingested, \
             COALESCE(d.requests, 0) AS requests FROM tenants t \
             LEFT JOIN (SELECT tenant_id, COUNT(*) AS n FROM positions GROUP BY tenant_id) p \
               ON p.tenant_id = t.id \
             LEFT JOIN (SELECT tenant_id, SUM(positions_ingested) AS ingested, \
               SUM(api_requests) AS requests FROM tenant_usage_daily WHERE day >= ? \
               GROUP BY tenant_id) d ON d.tenant_id = t.id \
             ORDER BY t.id",
        )
        .bind(since.to_string())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        // The position table's pages and its index's (dbstat counts both).
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat \
             WHERE name IN ('positions', 'positions_tenant_time')",
        )
        .fetch_one(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        let mut records = rows
            .iter()
            .map(|row| {
                Ok(TenantUsageRecord {
                    tenant_id: TenantId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("id").map_err(unexpected)?,
                    )?),
                    usage: Usage {
                        positions_stored: count(row.try_get("stored").map_err(unexpected)?),
                        storage_bytes: 0,
                        positions_ingested: count(row.try_get("ingested").map_err(unexpected)?),
                        api_requests: count(row.try_get("requests").map_err(unexpected)?),
                    },
                })
            })
            .collect::<StorageResult<Vec<_>>>()?;
        share_storage(&mut records, count(bytes));
        Ok(records)
    }
}
