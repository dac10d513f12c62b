//! The cell's internal API, for the control plane only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use webhost_contract::{paths, TenantLimits, TenantUsage};
use webhost_domain::{PlanName, TenantId};
use webhost_http::auth::ControlCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{CellStats, CellTenant};

use crate::CellState;

pub(crate) fn routes() -> Router<CellState> {
    Router::new()
        .route(
            paths::TENANT_ROUTE,
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route(paths::STATS, get(stats))
        .route(paths::USAGE, get(crate::usage::report))
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", "tenant id must be a UUID"))
}

async fn put_tenant(
    _: ControlCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    ApiJson(limits): ApiJson<TenantLimits>,
) -> Result<StatusCode, ApiError> {
    let tenant = CellTenant {
        id: tenant_id(&id)?,
        plan: PlanName::parse(&limits.plan)?,
        max_vehicles: limits.max_vehicles,
        retention_days: limits.retention_days,
    };
    let id = tenant.id;
    state.store.put_tenant(tenant).await?;
    state.directory.invalidate(id).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_tenant(
    _: ControlCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
) -> Result<ApiJson<TenantUsage>, ApiError> {
    let id = tenant_id(&id)?;
    let tenant = state.store.tenant(id).await?;
    let vehicles = state.store.count_vehicles(id).await?;
    Ok(ApiJson(TenantUsage {
        id,
        plan: tenant.plan.to_string(),
        max_vehicles: tenant.max_vehicles,
        retention_days: tenant.retention_days,
        vehicles,
    }))
}

async fn delete_tenant(
    _: ControlCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id(&id)?;
    state.store.delete_tenant(id).await?;
    state.fence.forget(id);
    state.bus.close_tenant(id);
    state.directory.invalidate(id).await;
    state.ingest.latest().forget_tenant(id).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(
    _: ControlCaller,
    State(state): State<CellState>,
) -> Result<ApiJson<CellStats>, ApiError> {
    Ok(ApiJson(state.store.stats().await?))
}
