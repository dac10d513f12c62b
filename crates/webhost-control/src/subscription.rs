//! `GET /api/v1/subscription`: plan, limits, usage and placement.

use axum::http::Method;
use serde::Serialize;
use utoipa::ToSchema;
use webhost_api::{Endpoint, NoBody, NoParams, Operation, Verb};
use webhost_contract::{cell_audience, paths, TenantUsage};
use webhost_http::auth::TenantCaller;
use webhost_http::client::InternalRequest;
use webhost_http::ApiError;
use webhost_storage::{Cell, TenantStatus};

use crate::ControlState;

#[derive(Serialize, ToSchema)]
pub(crate) struct SubscriptionView {
    plan: String,
    price_cents: i64,
    status: String,
    limits: Limits,
    usage: Usage,
    placement: PlacementView,
    /// While the tenant's cell is being made: how far along it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    provisioning: Option<ProvisioningView>,
}

#[derive(Serialize, ToSchema)]
struct ProvisioningView {
    cell_status: String,
    #[schema(value_type = Option<Object>)]
    progress: Option<serde_json::Value>,
    last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Limits {
    vehicles: u32,
    history_days: u32,
    requests_per_second: u32,
}

#[derive(Serialize, ToSchema)]
struct Usage {
    vehicles: u64,
}

#[derive(Serialize, ToSchema)]
struct PlacementView {
    pool: String,
    cell: String,
    cell_id: webhost_domain::CellId,
    region: String,
    regions: Vec<String>,
    routing_version: i64,
}

/// `GET /api/v1/subscription`.
pub(crate) struct ShowSubscription;

impl Operation<ControlState> for ShowSubscription {
    type Params = NoParams;
    type Body = NoBody;
    type Output = SubscriptionView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/subscription",
        "subscription",
        "account",
        "The plan, its limits, usage, and where the tenant is placed (with provisioning progress)",
    );

    async fn call(
        state: &ControlState,
        caller: &TenantCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<SubscriptionView, ApiError> {
        show(state, caller).await
    }
}

async fn show(state: &ControlState, caller: &TenantCaller) -> Result<SubscriptionView, ApiError> {
    let tenant = state.store.tenant(caller.tenant).await?;
    let catalog = state.store.catalog().await?;
    let plan = catalog
        .plan(&tenant.plan)
        .map_err(|e| ApiError::unexpected(e.into()))?;
    let route = state.store.route(caller.tenant).await?;
    let cell = state.store.cell(route.cell_id).await?;
    let provisioning = (tenant.status == TenantStatus::Provisioning).then(|| ProvisioningView {
        cell_status: cell.status.as_str().into(),
        progress: cell.progress.clone(),
        last_error: cell.last_error.clone(),
    });
    let path = paths::tenant(caller.tenant);
    let usage = if provisioning.is_some() {
        // Not on its cell yet: nothing used.
        TenantUsage {
            id: tenant.id,
            plan: plan.name.to_string(),
            max_vehicles: plan.max_vehicles,
            retention_days: plan.retention_days,
            vehicles: 0,
        }
    } else {
        usage(state, &cell, &path).await?
    };
    Ok(SubscriptionView {
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
        provisioning,
    })
}

/// What the tenant's cell reports of it.
async fn usage(state: &ControlState, cell: &Cell, path: &str) -> Result<TenantUsage, ApiError> {
    state
        .cells
        .call::<()>(
            InternalRequest {
                method: Method::GET,
                base_url: &cell.url,
                path,
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
        })
}
