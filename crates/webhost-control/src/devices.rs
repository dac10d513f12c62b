//! The global device registry's internal endpoints, called by cells when a
//! vehicle gets or loses a device.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use webhost_contract::DeviceClaim;
use webhost_domain::DeviceId;
use webhost_http::auth::TenantCaller;
use webhost_http::{ApiError, ApiJson};

use crate::ControlState;

/// 201 when registered now, 200 when the tenant already held it, 409 when
/// another tenant does.
pub(crate) async fn claim(
    caller: TenantCaller,
    State(state): State<ControlState>,
    Path(device): Path<String>,
    ApiJson(body): ApiJson<DeviceClaim>,
) -> Result<StatusCode, ApiError> {
    let device = DeviceId::parse(&device)?;
    let created = state
        .store
        .claim_device(&device, caller.tenant, body.vehicle_id)
        .await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

pub(crate) async fn release(
    caller: TenantCaller,
    State(state): State<ControlState>,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device = DeviceId::parse(&device)?;
    state.store.release_device(&device, caller.tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}
