use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use webhost_domain::{
    ApiKeyId, Catalog, CellId, CompanyName, CountryCode, DeviceId, Email, PlanName, PoolName,
    ProviderKind, RegionCode, TenantId, Usage, UserId, VehicleId,
};
use webhost_storage::{
    seed_catalog, ApiKey, ApiKeyPrincipal, BillingSuspension, Cell, CellStatus, CellUpdate,
    Conflict, ControlStore, DeviceRegistration, MeasuredUsage, NewApiKey, NewCell, NewJob,
    NewStripeEvent, NewTenant, NewUser, Route, RoutingDirectory, StorageError, StorageResult,
    StripeEvent, StripeSubscriptionUpdate, SwitchOutcome, Tenant, TenantBilling, TenantFilter,
    TenantMove, TenantPlacement, TenantStatus, TenantUsageRecord, User, UserCredentials, UserRole,
};

use crate::{corrupt, map_err, open_pools, parse_uuid, unexpected, Pools};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/control");

/// The control plane's store on SQLite.
#[derive(Clone)]
pub struct SqliteControlStore {
    pub(crate) pools: Pools,
}

impl SqliteControlStore {
    /// Opens (creating if needed) and migrates the database, and seeds the
    /// default catalog into a new one.
    pub async fn open(location: &str) -> anyhow::Result<Self> {
        let store = Self {
            pools: open_pools(location, &MIGRATOR).await?,
        };
        seed_catalog(&store).await?;
        Ok(store)
    }
}

const USAGE_COLUMNS: &str =
    "u.positions_stored, u.storage_bytes, u.positions_ingested, u.api_requests, u.measured_at";

/// The usage columns of a `LEFT JOIN tenant_usage u`: `None` when no cell
/// has reported the tenant yet.
fn measured_usage_from_row(row: &SqliteRow) -> StorageResult<Option<MeasuredUsage>> {
    let Some(measured_at) = row
        .try_get::<Option<DateTime<Utc>>, _>("measured_at")
        .map_err(unexpected)?
    else {
        return Ok(None);
    };
    let n = |column: &str| -> StorageResult<u64> {
        Ok(row.try_get::<i64, _>(column).map_err(unexpected)?.max(0) as u64)
    };
    Ok(Some(MeasuredUsage {
        usage: Usage {
            positions_stored: n("positions_stored")?,
            storage_bytes: n("storage_bytes")?,
            positions_ingested: n("positions_ingested")?,
            api_requests: n("api_requests")?,
        },
        measured_at,
    }))
}

const BILLING_COLUMNS: &str = "b.stripe_customer_id, b.stripe_subscription_id, \
     b.subscription_status, b.past_due_since, b.suspended_for, b.plan_wanted, \
     b.payment_event_at, b.updated_at AS billing_updated_at";

/// The billing columns of a `LEFT JOIN tenant_billing b`: `None` when the
/// tenant has no billing row.
fn billing_from_row(row: &SqliteRow) -> StorageResult<Option<TenantBilling>> {
    let Some(updated_at) = row
        .try_get::<Option<DateTime<Utc>>, _>("billing_updated_at")
        .map_err(unexpected)?
    else {
        return Ok(None);
    };
    let suspended_for: Option<String> = row.try_get("suspended_for").map_err(unexpected)?;
    let plan_wanted: Option<String> = row.try_get("plan_wanted").map_err(unexpected)?;
    Ok(Some(TenantBilling {
        stripe_customer_id: row.try_get("stripe_customer_id").map_err(unexpected)?,
        stripe_subscription_id: row.try_get("stripe_subscription_id").map_err(unexpected)?,
        subscription_status: row.try_get("subscription_status").map_err(unexpected)?,
        past_due_since: row.try_get("past_due_since").map_err(unexpected)?,
        suspended_for: suspended_for
            .map(|raw| {
                BillingSuspension::parse(&raw).ok_or_else(|| corrupt("billing suspension", &raw))
            })
            .transpose()?,
        plan_wanted: plan_wanted.map(PlanName::from_trusted),
        payment_event_at: row.try_get("payment_event_at").map_err(unexpected)?,
        updated_at: Some(updated_at),
    }))
}

const TENANT_COLUMNS: &str =
    "t.id, t.company, t.plan, t.country, t.pool, t.region, t.regions, t.status, t.created_at";

fn tenant_from_row(row: &SqliteRow) -> StorageResult<Tenant> {
    let status: String = row.try_get("status").map_err(unexpected)?;
    let regions: String = row.try_get("regions").map_err(unexpected)?;
    let regions: Vec<String> =
        serde_json::from_str(&regions).map_err(|_| corrupt("regions", &regions))?;
    Ok(Tenant {
        id: TenantId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        company: CompanyName::from_trusted(
            row.try_get::<String, _>("company").map_err(unexpected)?,
        ),
        plan: PlanName::from_trusted(row.try_get::<String, _>("plan").map_err(unexpected)?),
        country: CountryCode::from_trusted(
            row.try_get::<String, _>("country").map_err(unexpected)?,
        ),
        pool: PoolName::from_trusted(row.try_get::<String, _>("pool").map_err(unexpected)?),
        region: RegionCode::from_trusted(row.try_get::<String, _>("region").map_err(unexpected)?),
        regions: regions.into_iter().map(RegionCode::from_trusted).collect(),
        status: TenantStatus::parse(&status).ok_or_else(|| corrupt("tenant status", &status))?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
    })
}

fn user_from_row(row: &SqliteRow) -> StorageResult<User> {
    let role: String = row.try_get("role").map_err(unexpected)?;
    Ok(User {
        id: UserId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        tenant_id: TenantId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("tenant_id").map_err(unexpected)?,
        )?),
        email: Email::from_trusted(row.try_get::<String, _>("email").map_err(unexpected)?),
        role: UserRole::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
    })
}

fn api_key_from_row(row: &SqliteRow) -> StorageResult<ApiKey> {
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        tenant_id: TenantId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("tenant_id").map_err(unexpected)?,
        )?),
        name: row.try_get("name").map_err(unexpected)?,
        prefix: row.try_get("prefix").map_err(unexpected)?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        revoked_at: row.try_get("revoked_at").map_err(unexpected)?,
    })
}

const CELL_SELECT: &str = "SELECT c.id, c.name, c.pool, c.region, c.provider, c.url, c.status, \
     c.capacity, c.monthly_cost_cents, c.created_at, c.resource, c.progress, c.last_error, \
     c.template, COALESCE(c.updated_at, c.created_at) AS updated_at, \
     (SELECT COUNT(*) FROM routes r WHERE r.cell_id = c.id) AS tenants FROM cells c";

fn json_column(row: &SqliteRow, column: &str) -> StorageResult<Option<serde_json::Value>> {
    let raw: Option<String> = row.try_get(column).map_err(unexpected)?;
    raw.map(|raw| serde_json::from_str(&raw).map_err(|_| corrupt(column, &raw)))
        .transpose()
}

fn cell_from_row(row: &SqliteRow) -> StorageResult<Cell> {
    let provider: String = row.try_get("provider").map_err(unexpected)?;
    let status: String = row.try_get("status").map_err(unexpected)?;
    Ok(Cell {
        id: CellId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        name: row.try_get("name").map_err(unexpected)?,
        pool: PoolName::from_trusted(row.try_get::<String, _>("pool").map_err(unexpected)?),
        region: RegionCode::from_trusted(row.try_get::<String, _>("region").map_err(unexpected)?),
        provider: ProviderKind::parse(&provider).ok_or_else(|| corrupt("provider", &provider))?,
        url: row.try_get("url").map_err(unexpected)?,
        status: CellStatus::parse(&status).ok_or_else(|| corrupt("cell status", &status))?,
        capacity: row.try_get::<i64, _>("capacity").map_err(unexpected)? as u32,
        monthly_cost_cents: row.try_get("monthly_cost_cents").map_err(unexpected)?,
        tenants: row.try_get::<i64, _>("tenants").map_err(unexpected)? as u32,
        resource: json_column(row, "resource")?,
        progress: json_column(row, "progress")?,
        last_error: row.try_get("last_error").map_err(unexpected)?,
        template: row.try_get("template").map_err(unexpected)?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

const MOVE_COLUMNS: &str = "id, tenant_id, source_cell, target_cell, phase, finished, state, \
     created_at, updated_at";

fn move_from_row(row: &SqliteRow) -> StorageResult<TenantMove> {
    let id = |column: &str| -> StorageResult<uuid::Uuid> {
        parse_uuid(&row.try_get::<String, _>(column).map_err(unexpected)?)
    };
    let target: Option<String> = row.try_get("target_cell").map_err(unexpected)?;
    let state: String = row.try_get("state").map_err(unexpected)?;
    Ok(TenantMove {
        id: id("id")?,
        tenant_id: TenantId::from_uuid(id("tenant_id")?),
        source_cell: CellId::from_uuid(id("source_cell")?),
        target_cell: target
            .map(|raw| parse_uuid(&raw).map(CellId::from_uuid))
            .transpose()?,
        phase: row.try_get("phase").map_err(unexpected)?,
        finished: row.try_get("finished").map_err(unexpected)?,
        state: serde_json::from_str(&state).map_err(|_| corrupt("move state", &state))?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

/// Whether `err` is the "one unfinished move per tenant" index refusing a row.
fn is_second_active_move(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| {
        db.is_unique_violation() && db.message().contains("tenant_moves.tenant_id")
    })
}

fn unique_conflict(message: &str) -> Option<Conflict> {
    if message.contains("users.email") {
        Some(Conflict::EmailTaken)
    } else {
        None
    }
}

#[async_trait]
impl ControlStore for SqliteControlStore {
    async fn catalog(&self) -> StorageResult<Catalog> {
        let body: String =
            sqlx::query_scalar("SELECT body FROM catalog_versions ORDER BY version DESC LIMIT 1")
                .fetch_optional(&self.pools.reader)
                .await
                .map_err(unexpected)?
                .ok_or(StorageError::NotFound("catalog"))?;
        serde_json::from_str(&body).map_err(|e| StorageError::Unexpected(e.into()))
    }

    async fn save_catalog(&self, catalog: &Catalog) -> StorageResult<()> {
        let body =
            serde_json::to_string(catalog).map_err(|e| StorageError::Unexpected(e.into()))?;
        sqlx::query("INSERT INTO catalog_versions (body, created_at) VALUES (?, ?)")
            .bind(body)
            .bind(Utc::now())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    async fn create_cell(&self, cell: NewCell) -> StorageResult<Cell> {
        let name = cell.name.clone();
        sqlx::query(
            "INSERT INTO cells (id, name, pool, region, provider, url, status, capacity, \
             monthly_cost_cents, created_at, updated_at, template) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(cell.id.to_string())
        .bind(&cell.name)
        .bind(cell.pool.as_str())
        .bind(cell.region.as_str())
        .bind(cell.provider.as_str())
        .bind(&cell.url)
        .bind(cell.status.as_str())
        .bind(i64::from(cell.capacity))
        .bind(cell.monthly_cost_cents)
        .bind(Utc::now())
        .bind(Utc::now())
        .bind(&cell.template)
        .execute(&self.pools.writer)
        .await
        .map_err(|e| {
            map_err(e, |m| {
                m.contains("cells.name")
                    .then_some(Conflict::CellNameTaken(name))
            })
        })?;
        self.cell(cell.id).await
    }

    async fn cells(&self) -> StorageResult<Vec<Cell>> {
        let rows = sqlx::query(&format!("{CELL_SELECT} ORDER BY c.created_at, c.name"))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        rows.iter().map(cell_from_row).collect()
    }

    async fn cell(&self, id: CellId) -> StorageResult<Cell> {
        let row = sqlx::query(&format!("{CELL_SELECT} WHERE c.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .ok_or(StorageError::NotFound("cell"))?;
        cell_from_row(&row)
    }

    async fn cell_by_name(&self, name: &str) -> StorageResult<Cell> {
        let row = sqlx::query(&format!("{CELL_SELECT} WHERE c.name = ?"))
            .bind(name)
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .ok_or(StorageError::NotFound("cell"))?;
        cell_from_row(&row)
    }

    async fn set_cell_url(&self, id: CellId, url: &str) -> StorageResult<()> {
        let done = sqlx::query("UPDATE cells SET url = ? WHERE id = ?")
            .bind(url)
            .bind(id.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("cell"));
        }
        Ok(())
    }

    async fn update_cell(&self, id: CellId, update: CellUpdate) -> StorageResult<Cell> {
        let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string());
        let done = sqlx::query(
            "UPDATE cells SET status = COALESCE(?, status), url = COALESCE(?, url), \
             resource = COALESCE(?, resource), progress = COALESCE(?, progress), \
             last_error = CASE WHEN ? THEN ? ELSE last_error END, \
             monthly_cost_cents = COALESCE(?, monthly_cost_cents), \
             capacity = COALESCE(?, capacity), updated_at = ? WHERE id = ?",
        )
        .bind(update.status.map(CellStatus::as_str))
        .bind(update.url)
        .bind(json(update.resource))
        .bind(json(update.progress))
        .bind(update.last_error.is_some())
        .bind(update.last_error.flatten())
        .bind(update.monthly_cost_cents)
        .bind(update.capacity.map(i64::from))
        .bind(Utc::now())
        .bind(id.to_string())
        .execute(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("cell"));
        }
        self.cell(id).await
    }

    async fn cell_tenants(&self, cell: CellId) -> StorageResult<Vec<Tenant>> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants t JOIN routes r ON r.tenant_id = t.id \
             WHERE r.cell_id = ? ORDER BY t.id"
        ))
        .bind(cell.to_string())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn create_tenant(
        &self,
        tenant: NewTenant,
        owner: NewUser,
        key: NewApiKey,
    ) -> StorageResult<(Tenant, User, ApiKey)> {
        let now = Utc::now();
        let regions: Vec<&str> = tenant.regions.iter().map(RegionCode::as_str).collect();
        let regions =
            serde_json::to_string(&regions).map_err(|e| StorageError::Unexpected(e.into()))?;
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        sqlx::query(
            "INSERT INTO tenants (id, company, plan, country, pool, region, regions, status, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.id.to_string())
        .bind(tenant.company.as_str())
        .bind(tenant.plan.as_str())
        .bind(tenant.country.as_str())
        .bind(tenant.pool.as_str())
        .bind(tenant.region.as_str())
        .bind(regions)
        .bind(TenantStatus::Provisioning.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?;
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, password_hash, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(owner.id.to_string())
        .bind(tenant.id.to_string())
        .bind(owner.email.as_str())
        .bind(owner.role.as_str())
        .bind(&owner.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, unique_conflict))?;
        insert_api_key(&mut tx, &key, now).await?;
        sqlx::query(
            "INSERT INTO routes (tenant_id, cell_id, version, updated_at) VALUES (?, ?, 1, ?)",
        )
        .bind(tenant.id.to_string())
        .bind(tenant.cell_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?;
        tx.commit().await.map_err(unexpected)?;
        Ok((
            self.tenant_on(&self.pools.reader, tenant.id).await?,
            self.user(owner.id).await?,
            self.api_key(key.id).await?,
        ))
    }

    async fn set_tenant_status(&self, id: TenantId, status: TenantStatus) -> StorageResult<()> {
        let done = sqlx::query("UPDATE tenants SET status = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(id.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        Ok(())
    }

    async fn set_tenant_plan(
        &self,
        id: TenantId,
        plan: &PlanName,
        placement: &webhost_domain::Placement,
    ) -> StorageResult<()> {
        let regions: Vec<String> = placement.regions.iter().map(ToString::to_string).collect();
        let done = sqlx::query(
            "UPDATE tenants SET plan = ?, pool = ?, region = ?, regions = ? WHERE id = ?",
        )
        .bind(plan.as_str())
        .bind(placement.pool.as_str())
        .bind(placement.region.as_str())
        .bind(serde_json::to_string(&regions).map_err(|e| StorageError::Unexpected(e.into()))?)
        .bind(id.to_string())
        .execute(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        Ok(())
    }

    async fn delete_tenant(&self, id: TenantId) -> StorageResult<()> {
        let done = sqlx::query("DELETE FROM tenants WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        Ok(())
    }

    async fn tenant(&self, id: TenantId) -> StorageResult<Tenant> {
        self.tenant_on(&self.pools.reader, id).await
    }

    async fn tenants(&self) -> StorageResult<Vec<Tenant>> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants t ORDER BY t.id"
        ))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant_placements(
        &self,
        filter: &TenantFilter,
    ) -> StorageResult<Vec<TenantPlacement>> {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {TENANT_COLUMNS}, r.cell_id, r.version, c.name AS cell_name, {USAGE_COLUMNS}, \
             {BILLING_COLUMNS} \
             FROM tenants t JOIN routes r ON r.tenant_id = t.id JOIN cells c ON c.id = r.cell_id \
             LEFT JOIN tenant_usage u ON u.tenant_id = t.id \
             LEFT JOIN tenant_billing b ON b.tenant_id = t.id WHERE 1 = 1"
        ));
        if let Some(plan) = &filter.plan {
            query
                .push(" AND t.plan = ")
                .push_bind(plan.as_str().to_owned());
        }
        if let Some(status) = filter.status {
            query.push(" AND t.status = ").push_bind(status.as_str());
        }
        if let Some(pool) = &filter.pool {
            query
                .push(" AND t.pool = ")
                .push_bind(pool.as_str().to_owned());
        }
        if let Some(region) = &filter.region {
            query
                .push(" AND t.region = ")
                .push_bind(region.as_str().to_owned());
        }
        if let Some(cell) = filter.cell {
            query.push(" AND r.cell_id = ").push_bind(cell.to_string());
        }
        if let Some(after) = filter.after {
            query.push(" AND t.id > ").push_bind(after.to_string());
        }
        query
            .push(" ORDER BY t.id LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(TenantPlacement {
                    tenant: tenant_from_row(row)?,
                    cell_id: CellId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("cell_id").map_err(unexpected)?,
                    )?),
                    cell: row.try_get("cell_name").map_err(unexpected)?,
                    routing_version: row.try_get("version").map_err(unexpected)?,
                    usage: measured_usage_from_row(row)?,
                    billing: billing_from_row(row)?,
                })
            })
            .collect()
    }

    async fn record_usage(
        &self,
        cell: CellId,
        measured_at: DateTime<Utc>,
        records: &[TenantUsageRecord],
    ) -> StorageResult<()> {
        let int8 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        for r in records {
            sqlx::query(
                "INSERT INTO tenant_usage (tenant_id, cell_id, positions_stored, storage_bytes, \
                 positions_ingested, api_requests, measured_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1) \
                 ON CONFLICT (tenant_id) DO UPDATE SET cell_id = excluded.cell_id, \
                 positions_stored = excluded.positions_stored, \
                 storage_bytes = excluded.storage_bytes, \
                 positions_ingested = excluded.positions_ingested, \
                 api_requests = excluded.api_requests, measured_at = excluded.measured_at",
            )
            .bind(r.tenant_id.to_string())
            .bind(cell.to_string())
            .bind(int8(r.usage.positions_stored))
            .bind(int8(r.usage.storage_bytes))
            .bind(int8(r.usage.positions_ingested))
            .bind(int8(r.usage.api_requests))
            .bind(measured_at)
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        }
        tx.commit().await.map_err(unexpected)
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<UserCredentials> {
        let row = sqlx::query(
            "SELECT id, tenant_id, email, role, created_at, password_hash FROM users WHERE email = ?",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("user"))?;
        Ok(UserCredentials {
            user: user_from_row(&row)?,
            password_hash: row.try_get("password_hash").map_err(unexpected)?,
        })
    }

    async fn user(&self, id: UserId) -> StorageResult<User> {
        let row =
            sqlx::query("SELECT id, tenant_id, email, role, created_at FROM users WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pools.reader)
                .await
                .map_err(unexpected)?
                .ok_or(StorageError::NotFound("user"))?;
        user_from_row(&row)
    }

    async fn create_api_key(&self, key: NewApiKey) -> StorageResult<ApiKey> {
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        insert_api_key(&mut tx, &key, Utc::now()).await?;
        tx.commit().await.map_err(unexpected)?;
        self.api_key(key.id).await
    }

    async fn api_keys(&self, tenant: TenantId) -> StorageResult<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, prefix, created_at, revoked_at FROM api_keys \
             WHERE tenant_id = ? ORDER BY id DESC",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StorageResult<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND tenant_id = ? AND revoked_at IS NULL",
        )
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(tenant.to_string())
        .execute(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("api key"));
        }
        Ok(())
    }

    async fn claim_device(
        &self,
        device: &DeviceId,
        tenant: TenantId,
        vehicle: VehicleId,
    ) -> StorageResult<bool> {
        let done = sqlx::query(
            "INSERT INTO devices (device_id, tenant_id, vehicle_id, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(device.as_str())
        .bind(tenant.to_string())
        .bind(vehicle.to_string())
        .bind(Utc::now())
        .execute(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Registrations never change hands in place, so whoever holds it now
        // is the answer.
        let holder: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM devices WHERE device_id = ?")
                .bind(device.as_str())
                .fetch_optional(&self.pools.writer)
                .await
                .map_err(unexpected)?;
        match holder {
            Some(holder) if parse_uuid(&holder)? == tenant.as_uuid() => Ok(false),
            Some(_) => Err(StorageError::Conflict(Conflict::DeviceTaken(
                device.to_string(),
            ))),
            // Released in between: try again once.
            None => Box::pin(self.claim_device(device, tenant, vehicle)).await,
        }
    }

    async fn release_device(&self, device: &DeviceId, tenant: TenantId) -> StorageResult<()> {
        sqlx::query("DELETE FROM devices WHERE device_id = ? AND tenant_id = ?")
            .bind(device.as_str())
            .bind(tenant.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    async fn freeze_route(&self, tenant: TenantId, until: DateTime<Utc>) -> StorageResult<Route> {
        let done = sqlx::query("UPDATE routes SET frozen_until = ? WHERE tenant_id = ?")
            .bind(until)
            .bind(tenant.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("route"));
        }
        self.route_on(&self.pools.writer, tenant).await
    }

    async fn unfreeze_route(&self, tenant: TenantId) -> StorageResult<Route> {
        sqlx::query("UPDATE routes SET frozen_until = NULL WHERE tenant_id = ?")
            .bind(tenant.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        self.route_on(&self.pools.writer, tenant).await
    }

    async fn switch_route(
        &self,
        tenant: TenantId,
        from_cell: CellId,
        from_version: i64,
        to_cell: CellId,
        now: DateTime<Utc>,
    ) -> StorageResult<SwitchOutcome> {
        let switched: Option<i64> = sqlx::query_scalar(
            "UPDATE routes SET cell_id = ?, version = version + 1, updated_at = ? \
             WHERE tenant_id = ? AND cell_id = ? AND version = ? \
             AND frozen_until IS NOT NULL AND frozen_until > ? RETURNING version",
        )
        .bind(to_cell.to_string())
        .bind(now)
        .bind(tenant.to_string())
        .bind(from_cell.to_string())
        .bind(from_version)
        .bind(now)
        .fetch_optional(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if let Some(version) = switched {
            return Ok(SwitchOutcome::Switched { version });
        }
        let route = self.route_on(&self.pools.writer, tenant).await?;
        Ok(if route.cell_id == to_cell {
            SwitchOutcome::AlreadySwitched {
                version: route.version,
            }
        } else {
            SwitchOutcome::Refused {
                version: route.version,
                frozen: route.is_frozen(now),
            }
        })
    }

    async fn create_move(&self, new: TenantMove) -> StorageResult<TenantMove> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO tenant_moves ({MOVE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(new.id.to_string())
        .bind(new.tenant_id.to_string())
        .bind(new.source_cell.to_string())
        .bind(new.target_cell.map(|cell| cell.to_string()))
        .bind(&new.phase)
        .bind(new.finished)
        .bind(new.state.to_string())
        .bind(new.created_at)
        .bind(new.updated_at)
        .execute(&self.pools.writer)
        .await;
        match inserted {
            Ok(_) => self.tenant_move(new.id).await,
            Err(err) if is_second_active_move(&err) => {
                Err(self.move_in_progress(new.tenant_id, err).await)
            }
            Err(err) => Err(unexpected(err)),
        }
    }

    async fn save_move(&self, record: &TenantMove) -> StorageResult<()> {
        let done = sqlx::query(
            "UPDATE tenant_moves SET target_cell = ?, phase = ?, finished = ?, state = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(record.target_cell.map(|cell| cell.to_string()))
        .bind(&record.phase)
        .bind(record.finished)
        .bind(record.state.to_string())
        .bind(record.updated_at)
        .bind(record.id.to_string())
        .execute(&self.pools.writer)
        .await;
        match done {
            Ok(done) if done.rows_affected() == 0 => Err(StorageError::NotFound("move")),
            Ok(_) => Ok(()),
            Err(err) if is_second_active_move(&err) => {
                Err(self.move_in_progress(record.tenant_id, err).await)
            }
            Err(err) => Err(unexpected(err)),
        }
    }

    async fn tenant_move(&self, id: uuid::Uuid) -> StorageResult<TenantMove> {
        let row = sqlx::query(&format!(
            "SELECT {MOVE_COLUMNS} FROM tenant_moves WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("move"))?;
        move_from_row(&row)
    }

    async fn active_move(&self, tenant: TenantId) -> StorageResult<Option<TenantMove>> {
        self.active_move_on(&self.pools.reader, tenant).await
    }

    async fn moves(&self, limit: u32) -> StorageResult<Vec<TenantMove>> {
        let rows = sqlx::query(&format!(
            "SELECT {MOVE_COLUMNS} FROM tenant_moves ORDER BY created_at DESC, id DESC LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(move_from_row).collect()
    }

    async fn record_stripe_event(&self, event: NewStripeEvent, job: NewJob) -> StorageResult<bool> {
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, type, created, received_at, payload) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(event.created)
        .bind(Utc::now())
        .bind(event.payload.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?
        .rows_affected()
            == 1;
        let unprocessed = inserted
            || sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM stripe_events WHERE id = ? AND processed_at IS NULL",
            )
            .bind(&event.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?
                > 0;
        if unprocessed {
            crate::jobs::insert_jobs(&mut tx, std::slice::from_ref(&job)).await?;
        }
        tx.commit().await.map_err(unexpected)?;
        Ok(inserted)
    }

    async fn stripe_event(&self, id: &str) -> StorageResult<StripeEvent> {
        let row = sqlx::query(
            "SELECT id, type, created, received_at, payload, processed_at FROM stripe_events \
             WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("stripe event"))?;
        let payload: String = row.try_get("payload").map_err(unexpected)?;
        Ok(StripeEvent {
            id: row.try_get("id").map_err(unexpected)?,
            event_type: row.try_get("type").map_err(unexpected)?,
            created: row.try_get("created").map_err(unexpected)?,
            received_at: row.try_get("received_at").map_err(unexpected)?,
            payload: serde_json::from_str(&payload)
                .map_err(|_| corrupt("stripe event payload", &payload))?,
            processed_at: row.try_get("processed_at").map_err(unexpected)?,
        })
    }

    async fn mark_stripe_event_processed(&self, id: &str, at: DateTime<Utc>) -> StorageResult<()> {
        let done = sqlx::query(
            "UPDATE stripe_events SET processed_at = COALESCE(processed_at, ?) WHERE id = ?",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pools.writer)
        .await
        .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("stripe event"));
        }
        Ok(())
    }

    async fn tenant_billing(&self, tenant: TenantId) -> StorageResult<TenantBilling> {
        let row = sqlx::query(&format!(
            "SELECT {BILLING_COLUMNS} FROM tenants t \
             LEFT JOIN tenant_billing b ON b.tenant_id = t.id WHERE t.id = ?"
        ))
        .bind(tenant.to_string())
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("tenant"))?;
        Ok(billing_from_row(&row)?.unwrap_or_default())
    }

    async fn tenant_by_stripe_customer(&self, customer: &str) -> StorageResult<TenantId> {
        let id: String = sqlx::query_scalar(
            "SELECT tenant_id FROM tenant_billing WHERE stripe_customer_id = ? \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(customer)
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("tenant"))?;
        Ok(TenantId::from_uuid(parse_uuid(&id)?))
    }

    async fn record_stripe_subscription(
        &self,
        tenant: TenantId,
        update: StripeSubscriptionUpdate,
    ) -> StorageResult<TenantBilling> {
        self.change_billing(tenant, |billing, status| billing.record(update, status))
            .await
            .map(|(billing, _)| billing)
    }

    async fn record_payment_failed(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
    ) -> StorageResult<TenantBilling> {
        self.change_billing(tenant, |billing, _| {
            billing.payment_failed(at);
            None
        })
        .await
        .map(|(billing, _)| billing)
    }

    async fn record_payment_succeeded(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
    ) -> StorageResult<TenantBilling> {
        self.change_billing(tenant, |billing, status| {
            billing.payment_succeeded(at, status)
        })
        .await
        .map(|(billing, _)| billing)
    }

    async fn suspend_for_billing(
        &self,
        tenant: TenantId,
        reason: BillingSuspension,
    ) -> StorageResult<bool> {
        self.change_billing(tenant, |billing, status| billing.suspend(reason, status))
            .await
            .map(|(_, changed)| changed)
    }

    async fn overdue_tenants(&self, since: DateTime<Utc>) -> StorageResult<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT b.tenant_id FROM tenant_billing b JOIN tenants t ON t.id = b.tenant_id \
             WHERE b.past_due_since IS NOT NULL AND b.past_due_since <= ? AND t.status = ? \
             ORDER BY b.tenant_id",
        )
        .bind(since)
        .bind(TenantStatus::Active.as_str())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        ids.iter()
            .map(|id| Ok(TenantId::from_uuid(parse_uuid(id)?)))
            .collect()
    }
}

#[async_trait]
impl RoutingDirectory for SqliteControlStore {
    async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        Ok(())
    }
    async fn authenticate_api_key(&self, hash: &[u8; 32]) -> StorageResult<ApiKeyPrincipal> {
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id FROM api_keys k WHERE k.hash = ? AND k.revoked_at IS NULL",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("api key"))?;
        Ok(ApiKeyPrincipal {
            key_id: ApiKeyId::from_uuid(parse_uuid(
                &row.try_get::<String, _>("id").map_err(unexpected)?,
            )?),
            tenant_id: TenantId::from_uuid(parse_uuid(
                &row.try_get::<String, _>("tenant_id").map_err(unexpected)?,
            )?),
        })
    }
    async fn route(&self, tenant: TenantId) -> StorageResult<Route> {
        self.route_on(&self.pools.reader, tenant).await
    }
    async fn device(&self, device: &DeviceId) -> StorageResult<DeviceRegistration> {
        let row = sqlx::query("SELECT tenant_id, vehicle_id FROM devices WHERE device_id = ?")
            .bind(device.as_str())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .ok_or(StorageError::NotFound("device"))?;
        Ok(DeviceRegistration {
            device_id: device.clone(),
            tenant_id: TenantId::from_uuid(parse_uuid(
                &row.try_get::<String, _>("tenant_id").map_err(unexpected)?,
            )?),
            vehicle_id: VehicleId::from_uuid(parse_uuid(
                &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
            )?),
        })
    }
}

impl SqliteControlStore {
    /// Reads the tenant's billing row (made if missing) and status, lets
    /// `change` decide (a new status, if any), and writes both, on the one
    /// writer in one transaction. Answers the billing as written and
    /// whether the status changed.
    async fn change_billing(
        &self,
        tenant: TenantId,
        change: impl FnOnce(&mut TenantBilling, TenantStatus) -> Option<TenantStatus>,
    ) -> StorageResult<(TenantBilling, bool)> {
        let now = Utc::now();
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        sqlx::query(
            "INSERT INTO tenant_billing (tenant_id, updated_at) \
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?;
        let row = sqlx::query(&format!(
            "SELECT t.status, {BILLING_COLUMNS} FROM tenants t \
             JOIN tenant_billing b ON b.tenant_id = t.id WHERE t.id = ?"
        ))
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("tenant"))?;
        let raw_status: String = row.try_get("status").map_err(unexpected)?;
        let status = TenantStatus::parse(&raw_status)
            .ok_or_else(|| corrupt("tenant status", &raw_status))?;
        let mut billing = billing_from_row(&row)?.unwrap_or_default();
        let new_status = change(&mut billing, status);
        billing.updated_at = Some(now);
        sqlx::query(
            "UPDATE tenant_billing SET stripe_customer_id = ?, stripe_subscription_id = ?, \
             subscription_status = ?, past_due_since = ?, suspended_for = ?, plan_wanted = ?, \
             payment_event_at = ?, updated_at = ? WHERE tenant_id = ?",
        )
        .bind(&billing.stripe_customer_id)
        .bind(&billing.stripe_subscription_id)
        .bind(&billing.subscription_status)
        .bind(billing.past_due_since)
        .bind(billing.suspended_for.map(BillingSuspension::as_str))
        .bind(billing.plan_wanted.as_ref().map(PlanName::as_str))
        .bind(billing.payment_event_at)
        .bind(now)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?;
        if let Some(status) = new_status {
            sqlx::query("UPDATE tenants SET status = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?;
        }
        tx.commit().await.map_err(unexpected)?;
        Ok((billing, new_status.is_some()))
    }

    async fn route_on(&self, pool: &sqlx::SqlitePool, tenant: TenantId) -> StorageResult<Route> {
        let row = sqlx::query(
            "SELECT r.cell_id, c.url, r.version, r.frozen_until, t.status FROM routes r \
             JOIN cells c ON c.id = r.cell_id JOIN tenants t ON t.id = r.tenant_id \
             WHERE r.tenant_id = ?",
        )
        .bind(tenant.to_string())
        .fetch_optional(pool)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("route"))?;
        let status: String = row.try_get("status").map_err(unexpected)?;
        Ok(Route {
            tenant_id: tenant,
            cell_id: CellId::from_uuid(parse_uuid(
                &row.try_get::<String, _>("cell_id").map_err(unexpected)?,
            )?),
            cell_url: row.try_get("url").map_err(unexpected)?,
            version: row.try_get("version").map_err(unexpected)?,
            tenant_status: TenantStatus::parse(&status)
                .ok_or_else(|| corrupt("tenant status", &status))?,
            frozen_until: row.try_get("frozen_until").map_err(unexpected)?,
        })
    }

    async fn active_move_on(
        &self,
        pool: &sqlx::SqlitePool,
        tenant: TenantId,
    ) -> StorageResult<Option<TenantMove>> {
        let row = sqlx::query(&format!(
            "SELECT {MOVE_COLUMNS} FROM tenant_moves WHERE tenant_id = ? AND finished = 0"
        ))
        .bind(tenant.to_string())
        .fetch_optional(pool)
        .await
        .map_err(unexpected)?;
        row.as_ref().map(move_from_row).transpose()
    }

    /// The conflict for a second unfinished move: names the one in the way
    /// (unless it finished in between: then the original error).
    async fn move_in_progress(&self, tenant: TenantId, err: sqlx::Error) -> StorageError {
        match self.active_move_on(&self.pools.writer, tenant).await {
            Ok(Some(active)) => StorageError::Conflict(Conflict::MoveInProgress(active.id)),
            Ok(None) => unexpected(err),
            Err(read) => read,
        }
    }

    async fn tenant_on(&self, pool: &sqlx::SqlitePool, id: TenantId) -> StorageResult<Tenant> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("tenant"))?;
        tenant_from_row(&row)
    }

    async fn api_key(&self, id: ApiKeyId) -> StorageResult<ApiKey> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, prefix, created_at, revoked_at FROM api_keys WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("api key"))?;
        api_key_from_row(&row)
    }
}

async fn insert_api_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: &NewApiKey,
    now: DateTime<Utc>,
) -> StorageResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.to_string())
    .bind(key.tenant_id.to_string())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.hash[..])
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(unexpected)?;
    Ok(())
}
