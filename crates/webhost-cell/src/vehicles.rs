//! `/api/v1/vehicles`: a tenant's vehicles. `device_id` is unique across the
//! platform, so a vehicle's device is claimed in the control plane's device
//! registry before the vehicle is stored, and released when it goes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use webhost_domain::{Attributes, DeviceId, ShortText, TenantId, VehicleId, VehicleName};
use webhost_http::auth::TenantCaller;
use webhost_http::client::InternalRequest;
use webhost_http::{double_option, ApiError, ApiJson, ApiQuery};
use webhost_storage::{NewVehicle, Page, PageRequest, Vehicle, VehiclePatch};

use crate::CellState;

pub(crate) fn routes() -> Router<CellState> {
    Router::new()
        .route("/api/v1/vehicles", get(list).post(create))
        .route(
            "/api/v1/vehicles/{id}",
            get(show).patch(update).delete(remove),
        )
}

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    plate: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    attributes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    device_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    plate: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    group: Option<Option<String>>,
    #[serde(default)]
    attributes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ListBody {
    data: Vec<Vehicle>,
    next_cursor: Option<VehicleId>,
}

fn parse_optional(field: &'static str, raw: Option<String>) -> Result<Option<ShortText>, ApiError> {
    Ok(match raw {
        Some(text) if !text.trim().is_empty() => Some(ShortText::parse(field, &text)?),
        _ => None,
    })
}

fn parse_device(raw: Option<String>) -> Result<Option<DeviceId>, ApiError> {
    Ok(raw.as_deref().map(DeviceId::parse).transpose()?)
}

fn vehicle_id(raw: &str) -> Result<VehicleId, ApiError> {
    // Anything that is not one of our ids cannot name a vehicle.
    raw.parse().map_err(|_| ApiError::not_found("vehicle"))
}

impl CellState {
    async fn registry_call(
        &self,
        method: axum::http::Method,
        tenant: TenantId,
        device: &DeviceId,
        vehicle: Option<VehicleId>,
    ) -> Result<StatusCode, ApiError> {
        let path = format!("/internal/v1/devices/{device}");
        let body = vehicle.map(|v| serde_json::json!({ "vehicle_id": v }));
        let response = self
            .control
            .call(
                InternalRequest {
                    method,
                    base_url: &self.config.control_url,
                    path: &path,
                    audience: "control",
                    tenant: Some(tenant),
                    subject: None,
                },
                body.as_ref(),
            )
            .await
            .map_err(|err| {
                tracing::error!(error = format!("{err:#}"), "device registry unreachable");
                ApiError::unavailable("the device registry is unreachable; try again shortly")
            })?;
        match response.status {
            s if s.is_success() => Ok(s),
            StatusCode::CONFLICT => {
                Err(webhost_storage::Conflict::DeviceTaken(device.to_string()).into())
            }
            other => Err(ApiError::unexpected(anyhow::anyhow!(
                "device registry answered {other}: {}",
                String::from_utf8_lossy(&response.body)
            ))),
        }
    }

    /// Claims `device` for the vehicle; `true` when this call registered it
    /// (and so may undo it), `false` when the tenant already held it.
    async fn claim(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        vehicle: VehicleId,
    ) -> Result<bool, ApiError> {
        let status = self
            .registry_call(axum::http::Method::PUT, tenant, device, Some(vehicle))
            .await?;
        Ok(status == StatusCode::CREATED)
    }

    /// Best effort: a release that fails leaves a registration of this
    /// tenant behind, which only this tenant can reuse; it is logged.
    async fn release(&self, tenant: TenantId, device: &DeviceId) {
        if let Err(err) = self
            .registry_call(axum::http::Method::DELETE, tenant, device, None)
            .await
        {
            tracing::warn!(%device, %tenant, error = %err, "could not release device");
        }
    }
}

async fn list(
    caller: TenantCaller,
    State(state): State<CellState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<ApiJson<ListBody>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let after = params
        .cursor
        .map(|c| {
            c.parse::<VehicleId>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "cursor must be a next_cursor from a previous page",
                )
            })
        })
        .transpose()?;
    let Page { data, next_cursor } = state
        .store
        .vehicles(caller.tenant, PageRequest { after, limit })
        .await?;
    Ok(ApiJson(ListBody { data, next_cursor }))
}

async fn create(
    caller: TenantCaller,
    State(state): State<CellState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, ApiJson<Vehicle>), ApiError> {
    let vehicle = NewVehicle {
        id: VehicleId::new(),
        name: VehicleName::parse(&body.name)?,
        device_id: parse_device(body.device_id)?,
        plate: parse_optional("plate", body.plate)?,
        group: parse_optional("group", body.group)?,
        attributes: Attributes::parse(body.attributes.unwrap_or_default())?,
    };
    // Check the plan's limit before claiming, so a refused vehicle never
    // touches the registry; the store checks again atomically.
    let tenant = state.store.tenant(caller.tenant).await?;
    if state.store.count_vehicles(caller.tenant).await? >= u64::from(tenant.max_vehicles) {
        return Err(webhost_storage::Conflict::VehicleLimit {
            limit: tenant.max_vehicles,
        }
        .into());
    }
    let mut claimed = None;
    if let Some(device) = &vehicle.device_id {
        if state.claim(caller.tenant, device, vehicle.id).await? {
            claimed = Some(device.clone());
        }
    }
    let created = state.store.create_vehicle(caller.tenant, vehicle).await;
    state.directory.invalidate(caller.tenant).await;
    match created {
        Ok(created) => Ok((StatusCode::CREATED, ApiJson(created))),
        Err(err) => {
            if let Some(device) = &claimed {
                state.release(caller.tenant, device).await;
            }
            Err(err.into())
        }
    }
}

async fn show(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Vehicle>, ApiError> {
    Ok(ApiJson(
        state.store.vehicle(caller.tenant, vehicle_id(&id)?).await?,
    ))
}

async fn update(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<ApiJson<Vehicle>, ApiError> {
    let id = vehicle_id(&id)?;
    let patch = VehiclePatch {
        name: body.name.as_deref().map(VehicleName::parse).transpose()?,
        device_id: body.device_id.map(parse_device).transpose()?,
        plate: body.plate.map(|p| parse_optional("plate", p)).transpose()?,
        group: body.group.map(|g| parse_optional("group", g)).transpose()?,
        attributes: body.attributes.map(Attributes::parse).transpose()?,
    };
    let current = state.store.vehicle(caller.tenant, id).await?;
    let mut claimed = None;
    if let Some(Some(device)) = &patch.device_id {
        if current.device_id.as_ref() != Some(device)
            && state.claim(caller.tenant, device, id).await?
        {
            claimed = Some(device.clone());
        }
    }
    let updated = state.store.update_vehicle(caller.tenant, id, patch).await;
    state.directory.invalidate(caller.tenant).await;
    match updated {
        Ok(updated) => {
            if let Some(old) = &current.device_id {
                if updated.device_id.as_ref() != Some(old) {
                    state.release(caller.tenant, old).await;
                }
            }
            Ok(ApiJson(updated))
        }
        Err(err) => {
            if let Some(device) = &claimed {
                state.release(caller.tenant, device).await;
            }
            Err(err.into())
        }
    }
}

async fn remove(
    caller: TenantCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = state
        .store
        .delete_vehicle(caller.tenant, vehicle_id(&id)?)
        .await?;
    state.directory.invalidate(caller.tenant).await;
    state
        .ingest
        .latest()
        .forget_vehicle(caller.tenant, deleted.id)
        .await;
    if let Some(device) = &deleted.device_id {
        state.release(caller.tenant, device).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
