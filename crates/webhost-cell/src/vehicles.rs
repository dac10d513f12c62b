//! `/api/v1/vehicles`: a tenant's vehicles. `device_id` is unique across the
//! platform, so a vehicle's device is claimed in the control plane's device
//! registry before the vehicle is stored, and released when it goes.

use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use webhost_api::{ById, Deleted, Endpoint, Json, NoBody, Operation, Verb};
use webhost_domain::{Attributes, DeviceId, ShortText, TenantId, VehicleId, VehicleName};
use webhost_http::auth::TenantCaller;
use webhost_http::client::InternalRequest;
use webhost_http::{double_option, ApiError};
use webhost_storage::{NewVehicle, PageRequest, Vehicle, VehiclePatch};

use crate::CellState;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// A new vehicle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewVehicleInput {
    /// 1 to 100 characters.
    name: String,
    /// The tracker's IMEI or the phone app's identifier; unique across the
    /// platform.
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    plate: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// Changes to a vehicle: absent fields stay, `null` clears.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VehiclePatchInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    device_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    plate: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    group: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// A page of vehicles, oldest first.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    /// 1 to 1,000; 100 when left out.
    limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    cursor: Option<String>,
}

webhost_api::list_page!(
    /// A page of vehicles.
    pub(crate) struct VehiclePage of Vehicle
);

fn parse_optional(field: &'static str, raw: Option<String>) -> Result<Option<ShortText>, ApiError> {
    Ok(match raw {
        Some(text) if !text.trim().is_empty() => Some(ShortText::parse(field, &text)?),
        _ => None,
    })
}

fn parse_device(raw: Option<String>) -> Result<Option<DeviceId>, ApiError> {
    Ok(raw.as_deref().map(DeviceId::parse).transpose()?)
}

pub(crate) fn vehicle_id(raw: &str) -> Result<VehicleId, ApiError> {
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
        let path = webhost_contract::paths::device(device);
        let body = vehicle.map(|vehicle_id| webhost_contract::DeviceClaim { vehicle_id });
        let response = self
            .control
            .call(
                InternalRequest {
                    method,
                    base_url: &self.config.control_url,
                    path: &path,
                    audience: webhost_contract::CONTROL,
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

pub(crate) struct ListVehicles;

impl Operation<CellState> for ListVehicles {
    type Params = PageParams;
    type Body = NoBody;
    type Output = VehiclePage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles",
        "vehicles",
        "vehicles",
        "The tenant's vehicles, a page at a time",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: PageParams,
        _: NoBody,
    ) -> Result<VehiclePage, ApiError> {
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
        let page = state
            .store
            .vehicles(caller.tenant, PageRequest { after, limit })
            .await?;
        Ok(VehiclePage {
            data: page.data,
            next_cursor: page.next_cursor.map(|id| id.to_string()),
        })
    }
}

pub(crate) struct CreateVehicle;

impl Operation<CellState> for CreateVehicle {
    type Params = webhost_api::NoParams;
    type Body = Json<NewVehicleInput>;
    type Output = Vehicle;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/vehicles",
        "createVehicle",
        "vehicles",
        "Registers a vehicle (within the plan's vehicle limit)",
    )
    .status(StatusCode::CREATED);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: webhost_api::NoParams,
        Json(body): Json<NewVehicleInput>,
    ) -> Result<Vehicle, ApiError> {
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
            Ok(created) => Ok(created),
            Err(err) => {
                if let Some(device) = &claimed {
                    state.release(caller.tenant, device).await;
                }
                Err(err.into())
            }
        }
    }
}

pub(crate) struct ShowVehicle;

impl Operation<CellState> for ShowVehicle {
    type Params = ById;
    type Body = NoBody;
    type Output = Vehicle;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/vehicles/{id}",
        "vehicle",
        "vehicles",
        "One vehicle",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<Vehicle, ApiError> {
        Ok(state
            .store
            .vehicle(caller.tenant, vehicle_id(&params.id)?)
            .await?)
    }
}

pub(crate) struct UpdateVehicle;

impl Operation<CellState> for UpdateVehicle {
    type Params = ById;
    type Body = Json<VehiclePatchInput>;
    type Output = Vehicle;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Patch,
        "/api/v1/vehicles/{id}",
        "updateVehicle",
        "vehicles",
        "Changes a vehicle; absent fields stay, null clears",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        Json(body): Json<VehiclePatchInput>,
    ) -> Result<Vehicle, ApiError> {
        let id = vehicle_id(&params.id)?;
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
                Ok(updated)
            }
            Err(err) => {
                if let Some(device) = &claimed {
                    state.release(caller.tenant, device).await;
                }
                Err(err.into())
            }
        }
    }
}

pub(crate) struct DeleteVehicle;

impl Operation<CellState> for DeleteVehicle {
    type Params = ById;
    type Body = NoBody;
    type Output = Deleted;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/v1/vehicles/{id}",
        "deleteVehicle",
        "vehicles",
        "Deletes a vehicle with its history and releases its device",
    )
    .status(StatusCode::NO_CONTENT);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<Deleted, ApiError> {
        let deleted = state
            .store
            .delete_vehicle(caller.tenant, vehicle_id(&params.id)?)
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
        Ok(Deleted {
            id: deleted.id.to_string(),
        })
    }
}
