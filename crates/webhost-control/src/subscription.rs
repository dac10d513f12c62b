//! `GET /api/v1/subscription`: plan, limits, usage and placement.

use axum::extract::State;
use axum::http::Method;
use serde::Serialize;
use webhost_contract::{cell_audience, paths, TenantLimits, TenantUsage};
use webhost_domain::{Plan, TenantId};
use webhost_http::auth::TenantCaller;
use webhost_http::client::InternalRequest;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::Cell;

use crate::ControlState;

/// Tells the cell the tenant's plan limits (creating the tenant there).
pub(crate) async fn push_limits(
    state: &ControlState,
    cell: &Cell,
    tenant: TenantId,
    plan: &Plan,
) -> anyhow::Result<()> {
    let path = paths::tenant(tenant);
    state
        .cells
        .call(
            InternalRequest {
                method: Method::PUT,
                base_url: &cell.url,
                path: &path,
                audience: &cell_audience(cell.id),
                tenant: None,
                subject: None,
            },
            Some(&TenantLimits {
                plan: plan.name.to_string(),
                max_vehicles: plan.max_vehicles,
                retention_days: plan.retention_days,
            }),
        )
        .await?
        .success()?;
    Ok(())
}

#[derive(Serialize)]
pub(crate) struct SubscriptionView {
    plan: String,
    price_cents: i64,
    status: String,
    limits: Limits,
    usage: Usage,
    placement: PlacementView,
}

#[derive(Serialize)]
struct Limits {
    vehicles: u32,
    history_days: u32,
    requests_per_second: u32,
}

#[derive(Serialize)]
struct Usage {
    vehicles: u64,
}

#[derive(Serialize)]
struct PlacementView {
    pool: String,
    cell: String,
    cell_id: webhost_domain::CellId,
    region: String,
    regions: Vec<String>,
    routing_version: i64,
}

pub(crate) async fn show(
    caller: TenantCaller,
    State(state): State<ControlState>,
) -> Result<ApiJson<SubscriptionView>, ApiError> {
    let tenant = state.store.tenant(caller.tenant).await?;
    let catalog = state.store.catalog().await?;
    let plan = catalog
        .plan(&tenant.plan)
        .map_err(|e| ApiError::unexpected(e.into()))?;
    let route = state.store.route(caller.tenant).await?;
    let cell = state.store.cell(route.cell_id).await?;
    let path = paths::tenant(caller.tenant);
    let usage: TenantUsage = state
        .cells
        .call::<()>(
            InternalRequest {
                method: Method::GET,
                base_url: &cell.url,
                path: &path,
                audience: &cell_audience(cell.id),
                tenant: None,
                subject: None,
            },
            None,
        )
        .await
        .and_then(|r| r.success())
        .and_then(|r| r.json())
        .map_err(|err| {
            tracing::error!(error = format!("{err:#}"), cell = %cell.name, "cell usage unavailable");
            ApiError::unavailable("the tenant's cell is not reachable right now; try again shortly")
        })?;
    Ok(ApiJson(SubscriptionView {
        plan: plan.name.to_string(),
        price_cents: plan.price_cents,
        status: tenant.status.as_str().into(),
        limits: Limits {
            vehicles: plan.max_vehicles,
            history_days: plan.retention_days,
            requests_per_second: plan.rate_limit_per_second,
        },
        usage: Usage {
            vehicles: usage.vehicles,
        },
        placement: PlacementView {
            pool: cell.pool.to_string(),
            cell: cell.name,
            cell_id: cell.id,
            region: cell.region.to_string(),
            regions: tenant.regions.iter().map(ToString::to_string).collect(),
            routing_version: route.version,
        },
    }))
}
