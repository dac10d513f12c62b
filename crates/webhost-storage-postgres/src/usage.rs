//! Per-tenant usage on PostgreSQL: daily tallies, and what each tenant keeps.

use chrono::NaiveDate;
use sqlx::Row;
use webhost_domain::{TenantId, Usage};
use webhost_storage::{
    share_storage, usage_by_tenant, StorageResult, TenantUsageRecord, UsageCount,
};

use crate::{unexpected, PgCellStore};

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn int8(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgCellStore {
    pub(crate) async fn add_usage_impl(
        &self,
        day: NaiveDate,
        counts: &[UsageCount],
    ) -> StorageResult<()> {
        let counts = usage_by_tenant(counts);
        if counts.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO tenant_usage_daily (tenant_id, day, positions_ingested, api_requests) \
             SELECT u.tenant_id, $1, u.ingested, u.requests \
             FROM UNNEST($2::uuid[], $3::int8[], $4::int8[]) AS u(tenant_id, ingested, requests) \
             WHERE EXISTS (SELECT 1 FROM tenants WHERE id = u.tenant_id) \
             ON CONFLICT (tenant_id, day) DO UPDATE SET \
             positions_ingested = tenant_usage_daily.positions_ingested \
                 + excluded.positions_ingested, \
             api_requests = tenant_usage_daily.api_requests + excluded.api_requests",
        )
        .bind(day)
        .bind(
            counts
                .iter()
                .map(|c| c.tenant_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            counts
                .iter()
                .map(|c| int8(c.positions_ingested))
                .collect::<Vec<_>>(),
        )
        .bind(
            counts
                .iter()
                .map(|c| int8(c.api_requests))
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await
        .map_err(unexpected)?;
        Ok(())
    }

    pub(crate) async fn usage_impl(
        &self,
        since: NaiveDate,
    ) -> StorageResult<Vec<TenantUsageRecord>> {
        let rows = sqlx::query(
            "SELECT t.id, COALESCE(p.n, 0)::int8 AS stored, \
             COALESCE(d.ingested, 0)::int8 AS ingested, \
             COALESCE(d.requests, 0)::int8 AS requests FROM tenants t \
             LEFT JOIN (SELECT tenant_id, COUNT(*) AS n FROM positions GROUP BY tenant_id) p \
               ON p.tenant_id = t.id \
             LEFT JOIN (SELECT tenant_id, SUM(positions_ingested) AS ingested, \
               SUM(api_requests) AS requests FROM tenant_usage_daily WHERE day >= $1 \
               GROUP BY tenant_id) d ON d.tenant_id = t.id \
             ORDER BY t.id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        // Every daily partition with its indexes.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(relid)), 0)::int8 \
             FROM pg_partition_tree('positions') WHERE isleaf",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unexpected)?;
        let mut records = rows
            .iter()
            .map(|row| {
                Ok(TenantUsageRecord {
                    tenant_id: TenantId::from_uuid(row.try_get("id").map_err(unexpected)?),
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
