//! The operator API (`/api/admin/*`): pools, cells, tenants, jobs and
//! economics. Reached through the edge, which lets only the operator's
//! credential through ([`OperatorCaller`]); declared once each, like the
//! fleet API, so REST and the OpenAPI document come from one place.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webhost_api::{Api, ById, Endpoint, Json, NoBody, NoParams, Operation, Verb};
use webhost_domain::{
    Catalog, CellId, JobId, PlanName, PoolName, RegionCode, ServerKind, TenantId,
};
use webhost_http::auth::OperatorCaller;
use webhost_http::ApiError;
use webhost_storage::{
    Cell, CellStatus, CellUpdate, Job, JobFilter, JobState, MeasuredUsage, TenantBilling,
    TenantFilter, TenantPlacement, TenantStatus,
};

use crate::cells::{queue_cell, RetireCell, RetirePayload};
use crate::economics::{self, Economics};
use crate::ControlState;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The operator API's operations.
pub fn api() -> Api<ControlState, OperatorCaller> {
    Api::new("WebHost operator API", env!("CARGO_PKG_VERSION"))
        .security(
            "adminToken",
            "`Authorization: Bearer $WEBHOST_ADMIN_TOKEN` (the embedded default keeps it in \
             <data-dir>/secrets.toml)",
        )
        .operation::<ListPools>()
        .operation::<ListCells>()
        .operation::<CreateCell>()
        .operation::<ShowCell>()
        .operation::<DrainCell>()
        .operation::<RetireCellOp>()
        .operation::<ListTenants>()
        .operation::<ListJobs>()
        .operation::<ShowJob>()
        .operation::<RetryJob>()
        .operation::<CancelJob>()
        .operation::<ShowEconomics>()
        .operation::<crate::migrations::MigrateTenant>()
        .operation::<crate::migrations::ListMigrations>()
        .operation::<crate::migrations::ShowMigration>()
        .operation::<crate::migrations::RollbackMigration>()
        .operation::<crate::migrations::CancelMigration>()
}

fn limit(raw: Option<u32>) -> Result<u32, ApiError> {
    let limit = raw.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// A cell as the operator sees it.
#[derive(Serialize, ToSchema)]
pub struct CellView {
    pub id: CellId,
    pub name: String,
    pub pool: String,
    pub region: String,
    /// `local`, `hetzner` or `fly`: who made it.
    pub provider: String,
    /// `provisioning`, `active`, `draining`, `failed` or `retired`.
    pub status: String,
    pub url: String,
    pub tenants: u32,
    pub capacity: u32,
    /// Tenants over capacity, 0 to 1.
    pub utilisation: f64,
    pub monthly_cost_cents: i64,
    /// The provider's last report while the cell is being made.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// What the provider made (its own ids).
    #[schema(value_type = Option<Object>)]
    pub resource: Option<serde_json::Value>,
    pub last_error: Option<String>,
    /// The catalog template it is made from.
    pub template: Option<String>,
    /// Made from a stop-gap template: its tenants are to move to one of
    /// the pool's regular cells once one has room.
    pub stop_gap: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl CellView {
    pub(crate) fn new(c: Cell, catalog: &Catalog) -> Self {
        let stop_gap = catalog.is_stop_gap(c.template.as_deref());
        Self {
            stop_gap,
            ..Self::from(c)
        }
    }
}

impl From<Cell> for CellView {
    fn from(c: Cell) -> Self {
        Self {
            utilisation: f64::from(c.tenants) / f64::from(c.capacity.max(1)),
            id: c.id,
            name: c.name,
            pool: c.pool.to_string(),
            region: c.region.to_string(),
            provider: c.provider.as_str().into(),
            status: c.status.as_str().into(),
            url: c.url,
            tenants: c.tenants,
            capacity: c.capacity,
            monthly_cost_cents: c.monthly_cost_cents,
            progress: c.progress,
            resource: c.resource,
            last_error: c.last_error,
            template: c.template,
            stop_gap: false,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

webhost_api::list_page!(
    /// Cells.
    pub struct CellList of CellView
);

/// Capacity of one pool in one region.
#[derive(Serialize, ToSchema)]
pub struct RegionCapacity {
    pub region: String,
    /// Active cells.
    pub cells: u32,
    pub provisioning: u32,
    pub tenants: u32,
    pub capacity: u32,
    /// Free slots on active and provisioning cells.
    pub free: u32,
    /// Below this many free slots a cell is provisioned ahead of need.
    pub spare_slots: u32,
}

/// A cell template of the catalog.
#[derive(Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub plan: String,
    pub monthly_cost_cents: i64,
    pub capacity: u32,
    /// `dedicated` or `cloud` where the provider offers both.
    pub kind: Option<String>,
    /// The provider's product (`AX52`, `cx42`).
    pub product: Option<String>,
    /// Used only while no regular cell has room (see `CellView::stop_gap`).
    pub stop_gap: bool,
}

/// A pool: its provider and its capacity per region.
#[derive(Serialize, ToSchema)]
pub struct PoolView {
    pub name: String,
    /// The catalog's provider for the pool.
    pub provider: String,
    /// The provider actually used here (`local` when the catalog's is not
    /// configured).
    pub provider_in_use: String,
    pub regions: Vec<RegionCapacity>,
    pub templates: Vec<TemplateView>,
}

webhost_api::list_page!(
    /// Pools.
    pub struct PoolList of PoolView
);

pub struct ListPools;

impl Operation<ControlState, OperatorCaller> for ListPools {
    type Params = NoParams;
    type Body = NoBody;
    type Output = PoolList;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/pools",
        "pools",
        "operator",
        "Pools, their provider, templates and capacity per region",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<PoolList, ApiError> {
        let catalog = state.store.catalog().await?;
        let cells = state.store.cells().await?;
        let pools = catalog
            .pools
            .iter()
            .map(|pool| {
                let regions = pool
                    .regions
                    .iter()
                    .map(|region| {
                        let here: Vec<&Cell> = cells
                            .iter()
                            .filter(|c| c.pool == pool.name && &c.region == region)
                            .collect();
                        let count = |s: CellStatus| {
                            u32::try_from(here.iter().filter(|c| c.status == s).count())
                                .unwrap_or(u32::MAX)
                        };
                        let open = || {
                            here.iter().filter(|c| {
                                matches!(c.status, CellStatus::Active | CellStatus::Provisioning)
                            })
                        };
                        RegionCapacity {
                            region: region.to_string(),
                            cells: count(CellStatus::Active),
                            provisioning: count(CellStatus::Provisioning),
                            tenants: here.iter().map(|c| c.tenants).sum(),
                            capacity: open().map(|c| c.capacity).sum(),
                            free: open().map(|c| c.free()).sum(),
                            spare_slots: pool.spare_slots,
                        }
                    })
                    .collect();
                PoolView {
                    name: pool.name.to_string(),
                    provider: pool.provider.as_str().into(),
                    provider_in_use: state
                        .providers
                        .for_pool(&catalog, &pool.name)
                        .kind()
                        .as_str()
                        .into(),
                    regions,
                    templates: catalog
                        .cell_templates
                        .iter()
                        .filter(|t| t.pool == pool.name)
                        .map(|t| TemplateView {
                            name: t.name.clone(),
                            plan: t.plan.to_string(),
                            monthly_cost_cents: t.monthly_cost_cents,
                            capacity: t.capacity,
                            kind: t.kind.map(|k| k.as_str().to_string()),
                            product: t.product.clone(),
                            stop_gap: t.stop_gap,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(PoolList::whole(pools))
    }
}

/// Which cells to list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CellFilter {
    pool: Option<String>,
    region: Option<String>,
    /// `provisioning`, `active`, `draining`, `failed` or `retired`.
    status: Option<String>,
}

pub struct ListCells;

impl Operation<ControlState, OperatorCaller> for ListCells {
    type Params = CellFilter;
    type Body = NoBody;
    type Output = CellList;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/cells",
        "cells",
        "operator",
        "Every cell, with status, load, cost and provisioning progress",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        filter: CellFilter,
        _: NoBody,
    ) -> Result<CellList, ApiError> {
        let status = filter
            .status
            .as_deref()
            .map(|s| {
                CellStatus::parse(s).ok_or_else(|| {
                    bad_query(format!(
                        "status must be provisioning, active, draining, failed or retired, not '{s}'"
                    ))
                })
            })
            .transpose()?;
        let catalog = state.store.catalog().await?;
        let cells = state
            .store
            .cells()
            .await?
            .into_iter()
            .filter(|c| filter.pool.as_deref().is_none_or(|p| c.pool.as_str() == p))
            .filter(|c| {
                filter
                    .region
                    .as_deref()
                    .is_none_or(|r| c.region.as_str() == r)
            })
            .filter(|c| status.is_none_or(|s| c.status == s))
            .map(|c| CellView::new(c, &catalog))
            .collect();
        Ok(CellList::whole(cells))
    }
}

/// A cell to make (or, with `url`, a running one to register).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCellInput {
    pool: String,
    region: String,
    /// A catalog template of the pool; the pool's first when left out.
    #[serde(default)]
    template: Option<String>,
    /// `dedicated` or `cloud`, where the pool's provider offers both
    /// (Hetzner).
    #[serde(default)]
    kind: Option<String>,
    /// Registers a cell already running at this URL (a server bootstrapped
    /// by hand): it turns active once its health check passes.
    #[serde(default)]
    url: Option<String>,
}

pub struct CreateCell;

impl Operation<ControlState, OperatorCaller> for CreateCell {
    type Params = NoParams;
    type Body = Json<NewCellInput>;
    type Output = CellView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/cells",
        "createCell",
        "operator",
        "Provisions a cell in a pool and region (a job; poll GET /api/admin/cells/{id})",
    )
    .status(StatusCode::ACCEPTED);

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        _: NoParams,
        Json(input): Json<NewCellInput>,
    ) -> Result<CellView, ApiError> {
        let invalid = |field: &'static str, message: String| ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cell", message)
        };
        let catalog = state.store.catalog().await?;
        let pool_name = PoolName::parse(&input.pool).map_err(|e| invalid("pool", e.to_string()))?;
        let pool = catalog.pool(&pool_name).ok_or_else(|| {
            invalid(
                "pool",
                format!(
                    "unknown pool '{}'; the catalog has {}",
                    input.pool,
                    catalog
                        .pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let region =
            RegionCode::parse(&input.region).map_err(|e| invalid("region", e.to_string()))?;
        if !pool.regions.contains(&region) {
            return Err(invalid(
                "region",
                format!(
                    "pool {} has no region '{}'; it has {}",
                    pool.name,
                    input.region,
                    pool.regions
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut templates: Vec<_> = catalog
            .cell_templates
            .iter()
            .filter(|t| t.pool == pool.name)
            .collect();
        if let Some(kind) = &input.kind {
            let offered: Vec<&str> = {
                let mut kinds: Vec<&str> = templates
                    .iter()
                    .filter_map(|t| t.kind.map(ServerKind::as_str))
                    .collect();
                kinds.sort_unstable();
                kinds.dedup();
                kinds
            };
            let wanted = ServerKind::parse(kind).filter(|k| offered.contains(&k.as_str()));
            let Some(wanted) = wanted else {
                return Err(invalid(
                    "kind",
                    if offered.len() > 1 {
                        format!("kind must be one of {}, not '{kind}'", offered.join(", "))
                    } else {
                        format!(
                            "pool {} offers one kind of server; leave kind out",
                            pool.name
                        )
                    },
                ));
            };
            templates.retain(|t| t.kind == Some(wanted));
        }
        let template = match &input.template {
            Some(name) => templates
                .iter()
                .find(|t| &t.name == name)
                .copied()
                .ok_or_else(|| {
                    invalid(
                        "template",
                        format!(
                            "pool {} has no template '{name}'{}; it has {}",
                            pool.name,
                            input
                                .kind
                                .as_ref()
                                .map(|k| format!(" of kind {k}"))
                                .unwrap_or_default(),
                            templates
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
            // The pool's regular template unless a kind says otherwise.
            None => templates
                .iter()
                .find(|t| !t.stop_gap || input.kind.is_some())
                .copied()
                .ok_or_else(|| {
                    invalid("pool", format!("pool {} has no cell template", pool.name))
                })?,
        };
        if let Some(url) = &input.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Err(invalid(
                    "url",
                    "url must be the cell's base URL, http:// or https://".into(),
                ));
            }
        }
        let cell = queue_cell(
            state,
            &catalog,
            &pool.name.clone(),
            &region,
            template,
            input.kind.clone(),
            input.url.clone(),
        )
        .await
        .map_err(ApiError::unexpected)?;
        Ok(CellView::new(cell, &catalog))
    }
}

fn cell_id(raw: &str) -> Result<CellId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("cell"))
}

pub struct ShowCell;

impl Operation<ControlState, OperatorCaller> for ShowCell {
    type Params = ById;
    type Body = NoBody;
    type Output = CellView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/cells/{id}",
        "cell",
        "operator",
        "One cell: status, load and provisioning progress",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<CellView, ApiError> {
        let catalog = state.store.catalog().await?;
        Ok(CellView::new(
            state.store.cell(cell_id(&params.id)?).await?,
            &catalog,
        ))
    }
}

pub struct DrainCell;

impl Operation<ControlState, OperatorCaller> for DrainCell {
    type Params = ById;
    type Body = NoBody;
    type Output = CellView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/cells/{id}/drain",
        "drainCell",
        "operator",
        "Stops placing new tenants on a cell (its tenants stay)",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<CellView, ApiError> {
        let cell = state.store.cell(cell_id(&params.id)?).await?;
        if !matches!(cell.status, CellStatus::Active | CellStatus::Draining) {
            return Err(ApiError::conflict(
                "cell_state",
                format!(
                    "cell {} is {}; only an active cell can be drained",
                    cell.name,
                    cell.status.as_str()
                ),
            ));
        }
        let cell = state
            .store
            .update_cell(
                cell.id,
                CellUpdate {
                    status: Some(CellStatus::Draining),
                    ..CellUpdate::default()
                },
            )
            .await?;
        tracing::info!(cell = %cell.name, "cell draining");
        // Its tenants move off, one at a time.
        crate::moves::Rebalance::queue(&state.jobs).await;
        Ok(cell.into())
    }
}

pub struct RetireCellOp;

impl Operation<ControlState, OperatorCaller> for RetireCellOp {
    type Params = ById;
    type Body = NoBody;
    type Output = CellView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/admin/cells/{id}",
        "retireCell",
        "operator",
        "Retires an empty cell: its provider destroys it (a job), the record stays",
    )
    .status(StatusCode::ACCEPTED);

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<CellView, ApiError> {
        let cell = state.store.cell(cell_id(&params.id)?).await?;
        if cell.tenants > 0 {
            return Err(ApiError::conflict(
                "cell_not_empty",
                format!(
                    "cell {} still hosts {} tenants; drain it and move them first",
                    cell.name, cell.tenants
                ),
            ));
        }
        if cell.status == CellStatus::Retired {
            return Ok(cell.into());
        }
        // Nothing is placed on it while it goes.
        let cell = state
            .store
            .update_cell(
                cell.id,
                CellUpdate {
                    status: Some(CellStatus::Draining),
                    ..CellUpdate::default()
                },
            )
            .await?;
        state
            .jobs
            .enqueue::<RetireCell>(
                serde_json::to_value(RetirePayload { cell_id: cell.id })
                    .map_err(|e| ApiError::unexpected(e.into()))?,
                Some(format!("retire_cell:{}", cell.id)),
                None,
            )
            .await?;
        Ok(cell.into())
    }
}

/// Which tenants to list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    plan: Option<String>,
    /// `provisioning`, `active` or `suspended`.
    status: Option<String>,
    pool: Option<String>,
    region: Option<String>,
    /// A cell id.
    cell: Option<String>,
    /// 1 to 1,000; 100 when left out.
    limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    cursor: Option<String>,
}

/// A tenant and where it lives.
#[derive(Serialize, ToSchema)]
pub struct TenantRow {
    pub id: TenantId,
    pub company: String,
    pub plan: String,
    pub status: String,
    pub country: String,
    pub pool: String,
    pub region: String,
    pub regions: Vec<String>,
    pub cell_id: CellId,
    pub cell: String,
    pub routing_version: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// What its cell measured of it (hourly; the ingest and request counts
    /// cover 30 days); `null` before the first report.
    pub usage: Option<MeasuredUsage>,
    /// Why it is due to move, when it is: placed on a stop-gap cell while
    /// no regular cell of its pool had room.
    pub move_wanted: Option<String>,
    /// What Stripe has told of it (customer, subscription, status, past due
    /// since, suspension reason, plan wanted); `null` while nothing.
    pub billing: Option<TenantBilling>,
}

impl From<TenantPlacement> for TenantRow {
    fn from(p: TenantPlacement) -> Self {
        let t = p.tenant;
        Self {
            id: t.id,
            company: t.company.to_string(),
            plan: t.plan.to_string(),
            status: t.status.as_str().into(),
            country: t.country.to_string(),
            pool: t.pool.to_string(),
            region: t.region.to_string(),
            regions: t.regions.iter().map(ToString::to_string).collect(),
            cell_id: p.cell_id,
            cell: p.cell,
            routing_version: p.routing_version,
            created_at: t.created_at,
            usage: p.usage,
            move_wanted: None,
            billing: p.billing,
        }
    }
}

webhost_api::list_page!(
    /// A page of tenants, oldest first.
    pub struct TenantPage of TenantRow
);

pub struct ListTenants;

impl Operation<ControlState, OperatorCaller> for ListTenants {
    type Params = TenantQuery;
    type Body = NoBody;
    type Output = TenantPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/tenants",
        "tenants",
        "operator",
        "Tenants with their placement, filtered and a page at a time",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        q: TenantQuery,
        _: NoBody,
    ) -> Result<TenantPage, ApiError> {
        let limit = limit(q.limit)?;
        let filter = TenantFilter {
            plan: q
                .plan
                .as_deref()
                .map(PlanName::parse)
                .transpose()
                .map_err(|e| bad_query(e.to_string()))?,
            status: q
                .status
                .as_deref()
                .map(|s| {
                    TenantStatus::parse(s).ok_or_else(|| {
                        bad_query(format!(
                            "status must be provisioning, active or suspended, not '{s}'"
                        ))
                    })
                })
                .transpose()?,
            pool: q
                .pool
                .as_deref()
                .map(PoolName::parse)
                .transpose()
                .map_err(|e| bad_query(e.to_string()))?,
            region: q
                .region
                .as_deref()
                .map(RegionCode::parse)
                .transpose()
                .map_err(|e| bad_query(e.to_string()))?,
            cell: q
                .cell
                .as_deref()
                .map(|c| c.parse().map_err(|_| bad_query("cell must be a cell id")))
                .transpose()?,
            after: q
                .cursor
                .as_deref()
                .map(|c| {
                    c.parse()
                        .map_err(|_| bad_query("cursor is not one this API gave"))
                })
                .transpose()?,
            limit,
        };
        let rows = state.store.tenant_placements(&filter).await?;
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.tenant.id.to_string()))
            .flatten();
        let catalog = state.store.catalog().await?;
        let stop_gaps: std::collections::HashMap<CellId, String> = state
            .store
            .cells()
            .await?
            .into_iter()
            .filter(|c| catalog.is_stop_gap(c.template.as_deref()))
            .map(|c| (c.id, c.name))
            .collect();
        Ok(TenantPage {
            data: rows
                .into_iter()
                .map(|row| {
                    let gap = stop_gaps.get(&row.cell_id).map(|cell| {
                        format!(
                            "on stop-gap cell {cell}: to move to a regular {} cell in {} once one has room",
                            row.tenant.pool, row.tenant.region
                        )
                    });
                    TenantRow {
                        move_wanted: gap,
                        ..TenantRow::from(row)
                    }
                })
                .collect(),
            next_cursor,
        })
    }
}

/// A background job.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    /// When it runs (next).
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub last_error: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub unique_key: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            queue: j.queue,
            kind: j.kind,
            state: j.state.as_str().into(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            last_error: j.last_error,
            progress: j.progress,
            payload: j.payload,
            unique_key: j.unique_key,
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
        }
    }
}

/// How many jobs a queue holds in one state.
#[derive(Serialize, ToSchema)]
pub struct QueueCountView {
    pub queue: String,
    pub state: String,
    pub count: u64,
}

/// A page of jobs, newest first, and the queues' counts.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub data: Vec<JobView>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    pub queues: Vec<QueueCountView>,
}

/// Which jobs to list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    queue: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    state: Option<String>,
    kind: Option<String>,
    /// 1 to 1,000; 100 when left out.
    limit: Option<u32>,
    cursor: Option<String>,
}

pub struct ListJobs;

impl Operation<ControlState, OperatorCaller> for ListJobs {
    type Params = JobQuery;
    type Body = NoBody;
    type Output = JobPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/jobs",
        "jobs",
        "operator",
        "Background jobs, newest first, filtered by queue, state and kind",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        q: JobQuery,
        _: NoBody,
    ) -> Result<JobPage, ApiError> {
        let limit = limit(q.limit)?;
        let job_state = q
            .state
            .as_deref()
            .map(|s| {
                JobState::parse(s).ok_or_else(|| {
                    bad_query(format!(
                        "state must be queued, running, succeeded, failed or cancelled, not '{s}'"
                    ))
                })
            })
            .transpose()?;
        let before: Option<JobId> = q
            .cursor
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|_| bad_query("cursor is not one this API gave"))
            })
            .transpose()?;
        let page = state
            .jobs
            .store()
            .jobs(&JobFilter {
                queue: q.queue,
                state: job_state,
                kind: q.kind,
                before,
                limit,
            })
            .await?;
        let queues = state
            .jobs
            .store()
            .queue_counts()
            .await?
            .into_iter()
            .map(|c| QueueCountView {
                queue: c.queue,
                state: c.state.as_str().into(),
                count: c.count,
            })
            .collect();
        Ok(JobPage {
            data: page.data.into_iter().map(JobView::from).collect(),
            next_cursor: page.next_cursor.map(|id| id.to_string()),
            queues,
        })
    }
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("job"))
}

pub struct ShowJob;

impl Operation<ControlState, OperatorCaller> for ShowJob {
    type Params = ById;
    type Body = NoBody;
    type Output = JobView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/jobs/{id}",
        "job",
        "operator",
        "One job, with its progress and last error",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<JobView, ApiError> {
        Ok(state.jobs.store().job(job_id(&params.id)?).await?.into())
    }
}

pub struct RetryJob;

impl Operation<ControlState, OperatorCaller> for RetryJob {
    type Params = ById;
    type Body = NoBody;
    type Output = JobView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/jobs/{id}/retry",
        "retryJob",
        "operator",
        "Queues a failed or cancelled job again, now, with fresh attempts",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<JobView, ApiError> {
        let id = job_id(&params.id)?;
        Ok(state.jobs.store().retry(id, state.jobs.now()).await?.into())
    }
}

pub struct CancelJob;

impl Operation<ControlState, OperatorCaller> for CancelJob {
    type Params = ById;
    type Body = NoBody;
    type Output = JobView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/jobs/{id}/cancel",
        "cancelJob",
        "operator",
        "Cancels a queued or failed job (a running one is refused with 409)",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<JobView, ApiError> {
        Ok(state.jobs.store().cancel(job_id(&params.id)?).await?.into())
    }
}

/// How much of the economics to show.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EconomicsQuery {
    /// How many of the least profitable tenants to list: 0 to 1,000; 20
    /// when left out.
    tenants: Option<u32>,
}

pub struct ShowEconomics;

impl Operation<ControlState, OperatorCaller> for ShowEconomics {
    type Params = EconomicsQuery;
    type Body = NoBody;
    type Output = Economics;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/economics",
        "economics",
        "operator",
        "Cost, revenue, margin and break-even per plan and per cell",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        q: EconomicsQuery,
        _: NoBody,
    ) -> Result<Economics, ApiError> {
        let listed = q.tenants.unwrap_or(economics::DEFAULT_TENANTS);
        if listed > MAX_PAGE {
            return Err(bad_query(format!(
                "tenants must be between 0 and {MAX_PAGE}"
            )));
        }
        let catalog = state.store.catalog().await?;
        let cells = state.store.cells().await?;
        let mut tenants = Vec::new();
        let mut filter = TenantFilter {
            limit: MAX_PAGE,
            ..TenantFilter::default()
        };
        loop {
            let page = state.store.tenant_placements(&filter).await?;
            let done = page.len() < MAX_PAGE as usize;
            filter.after = page.last().map(|p| p.tenant.id);
            tenants.extend(page);
            if done {
                break;
            }
        }
        Ok(economics::compute(
            &catalog,
            &cells,
            &tenants,
            listed as usize,
        ))
    }
}
