//! `GET /api/v1/subscription`: plan, limits, usage, placement and the
//! move under way; `POST /api/v1/subscription {plan}`: a plan change —
//! limits only when the placement stays, a live move (SPEC §6) when the new
//! plan lives in another pool or region; a downgrade the tenant's data
//! does not fit is refused with 409 naming the excess.

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
    /// The move to another cell under way (a plan change, the operator's
    /// rebalancing): its state and progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<MigrationSummary>,
}

#[derive(Serialize, ToSchema)]
struct MigrationSummary {
    #[schema(format = Uuid)]
    id: String,
    state: String,
    /// Step of SPEC §6 (1–7) and percent done.
    step: u8,
    percent: u8,
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
        migration: migration(state, caller.tenant).await?,
    })
}

async fn migration(
    state: &ControlState,
    tenant: webhost_domain::TenantId,
) -> Result<Option<MigrationSummary>, ApiError> {
    let Some(record) = state.store.active_move(tenant).await? else {
        return Ok(None);
    };
    let m: webhost_move::Move = serde_json::from_value(record.state)
        .map_err(|e| ApiError::unexpected(anyhow::anyhow!("migration state: {e}")))?;
    let progress = m.progress();
    Ok(Some(MigrationSummary {
        id: record.id.to_string(),
        state: progress.state.to_string(),
        step: progress.step,
        percent: progress.percent,
    }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanChange {
    /// The plan to change to (`GET /api/v1/plans`... the catalog's names:
    /// hobby, starter, business, enterprise).
    plan: String,
}

/// `POST /api/v1/subscription`.
pub(crate) struct ChangeSubscription;

impl Operation<ControlState> for ChangeSubscription {
    type Params = NoParams;
    type Body = webhost_api::Json<PlanChange>;
    type Output = SubscriptionView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/subscription",
        "changeSubscription",
        "account",
        "Changes the plan: new limits at once, and a live move to the new plan's pool or region \
         when it differs (follow `migration`); a downgrade the data does not fit is refused (409)",
    );

    async fn call(
        state: &ControlState,
        caller: &TenantCaller,
        _: NoParams,
        webhost_api::Json(change): webhost_api::Json<PlanChange>,
    ) -> Result<SubscriptionView, ApiError> {
        owner_only(state, caller).await?;
        let plan = webhost_domain::PlanName::parse(&change.plan).map_err(|e| ApiError {
            field: Some("plan"),
            ..ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_plan",
                e.to_string(),
            )
        })?;
        change_plan(state, caller.tenant, &plan).await?;
        show(state, caller).await
    }
}

/// Plan changes are the owner's (a user token; API keys act for
/// integrations, not for billing).
async fn owner_only(state: &ControlState, caller: &TenantCaller) -> Result<(), ApiError> {
    match &caller.subject {
        Some(webhost_contract::claims::Subject::User(user)) => {
            let user = state.store.user(*user).await?;
            if user.role == webhost_storage::UserRole::Owner {
                return Ok(());
            }
            Err(ApiError::forbidden(
                "only the account's owner changes its plan",
            ))
        }
        _ => Err(ApiError::forbidden(
            "a plan change needs the owner's login token, not an API key",
        )),
    }
}

/// Applies a plan change (the API's, and Stripe's once paid): checks the
/// data fits, records the plan, and pushes the limits to the tenant's cell
/// — or, when the new plan is placed elsewhere, records the new placement
/// and starts the move there (the target gets the new limits; on a
/// downgrade only the history the new plan keeps is copied).
pub(crate) async fn change_plan(
    state: &ControlState,
    tenant_id: webhost_domain::TenantId,
    plan_name: &webhost_domain::PlanName,
) -> Result<(), ApiError> {
    let tenant = state.store.tenant(tenant_id).await?;
    let catalog = state.store.catalog().await?;
    let new_plan = catalog.plan(plan_name).map_err(|_| ApiError {
        field: Some("plan"),
        ..ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_plan",
            format!(
                "unknown plan '{plan_name}'; the plans are {}",
                catalog
                    .plans
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    if tenant.plan == *plan_name {
        return Ok(());
    }
    if tenant.status == TenantStatus::Provisioning {
        return Err(ApiError::conflict(
            "tenant_state",
            "the account is still being set up; change the plan once it is active",
        ));
    }
    if let Some(active) = state.store.active_move(tenant_id).await? {
        return Err(ApiError::conflict(
            "move_in_progress",
            format!(
                "the account is being moved (migration {}, {}); change the plan once it is done",
                active.id, active.phase
            ),
        ));
    }
    let old_plan = catalog
        .plan(&tenant.plan)
        .map_err(|e| ApiError::unexpected(e.into()))?;
    let route = state.store.route(tenant_id).await?;
    let cell = state.store.cell(route.cell_id).await?;
    let used = usage(state, &cell, &paths::tenant(tenant_id)).await?;
    if used.vehicles > u64::from(new_plan.max_vehicles) {
        let excess = used.vehicles - u64::from(new_plan.max_vehicles);
        return Err(ApiError {
            field: Some("plan"),
            ..ApiError::conflict(
                "plan_too_small",
                format!(
                    "the {} plan allows {} vehicles and the account has {}: delete {excess} \
                     vehicle{} first",
                    new_plan.name,
                    new_plan.max_vehicles,
                    used.vehicles,
                    if excess == 1 { "" } else { "s" }
                ),
            )
        });
    }
    let placement = catalog
        .place(plan_name, &tenant.country, Some(&tenant.region))
        .or_else(|_| catalog.place(plan_name, &tenant.country, None))
        .map_err(|e| ApiError::conflict("placement", e.to_string()))?;
    state
        .store
        .set_tenant_plan(tenant_id, plan_name, &placement)
        .await?;
    if placement.pool == cell.pool && placement.region == cell.region {
        crate::cells::push_limits(&state.cells, &cell, tenant_id, new_plan)
            .await
            .map_err(ApiError::unexpected)?;
        tracing::info!(tenant = %tenant_id, plan = %plan_name, "plan changed in place");
        return Ok(());
    }
    let history_since = webhost_move::history_cutoff(
        chrono::Utc::now(),
        old_plan.retention_days,
        new_plan.retention_days,
    );
    let started = state
        .moves
        .start(&state.jobs, tenant_id, cell.id, None, history_since)
        .await?;
    tracing::info!(tenant = %tenant_id, plan = %plan_name, migration = %started.id, "plan changed; moving");
    Ok(())
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
