//! `/api/v1/geofences`: a tenant's geofences, a GeoJSON `Polygon`
//! (`{name, geometry}`) or a circle (`{name, circle: {lat, lon, radius_m}}`),
//! at most [`webhost_storage::MAX_GEOFENCES`] (1,000) per tenant.
//! Geometry rules (closed, simple rings, ranges, size) are
//! `webhost-geofence`'s.
//!
//! The ingest writer tests positions against an in-memory [`GeofenceIndex`]
//! per tenant ([`GeofenceCache`]): loaded lazily, and rebuilt from storage
//! after every create, update and delete, before the request is answered —
//! so any position stored after the answer is tested against the new set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use webhost_api::{ById, Deleted, Endpoint, Json, NoBody, NoParams, Operation, Verb};
use webhost_domain::{GeofenceId, ShortText, TenantId, ValidationError};
use webhost_geofence::{GeofenceIndex, Shape};
use webhost_http::auth::TenantCaller;
use webhost_http::{double_option, ApiError};
use webhost_storage::{
    CellStore, CreateGeofenceError, Geofence, GeofencePatch, NewGeofence, StorageResult,
};

use crate::CellState;

/// A tenant's geofences as the ingest writer sees them.
pub(crate) struct FenceSnapshot {
    /// Different for every snapshot built: a tracker whose states were
    /// trimmed for another version must forget deleted geofences.
    pub version: u64,
    pub index: GeofenceIndex,
}

#[derive(Default)]
struct TenantFences {
    /// Serialises loads, so a slow load can never overwrite a newer one.
    loading: tokio::sync::Mutex<()>,
    current: Mutex<Option<Arc<FenceSnapshot>>>,
}

/// Per-tenant geofence indexes, loaded lazily from storage.
#[derive(Clone)]
pub(crate) struct GeofenceCache {
    store: Arc<dyn CellStore>,
    tenants: Arc<Mutex<HashMap<TenantId, Arc<TenantFences>>>>,
    versions: Arc<AtomicU64>,
}

impl GeofenceCache {
    pub fn new(store: Arc<dyn CellStore>) -> Self {
        Self {
            store,
            tenants: Arc::default(),
            versions: Arc::new(AtomicU64::new(1)),
        }
    }

    fn entry(&self, tenant: TenantId) -> Arc<TenantFences> {
        self.tenants
            .lock()
            .expect("geofence cache lock")
            .entry(tenant)
            .or_default()
            .clone()
    }

    /// The tenant's current index, loaded on first use.
    pub async fn snapshot(&self, tenant: TenantId) -> StorageResult<Arc<FenceSnapshot>> {
        let entry = self.entry(tenant);
        if let Some(found) = entry.current.lock().expect("fences lock").clone() {
            return Ok(found);
        }
        let _loading = entry.loading.lock().await;
        if let Some(found) = entry.current.lock().expect("fences lock").clone() {
            return Ok(found);
        }
        self.load(tenant, &entry).await
    }

    /// Reloads the tenant's index after its geofences changed. When that
    /// fails, the index is dropped so that the next use loads it again.
    pub async fn rebuild(&self, tenant: TenantId) {
        let entry = self.entry(tenant);
        let _loading = entry.loading.lock().await;
        if let Err(err) = self.load(tenant, &entry).await {
            tracing::error!(%tenant, error = %err, "reloading geofences failed; retried on next use");
            *entry.current.lock().expect("fences lock") = None;
        }
    }

    async fn load(
        &self,
        tenant: TenantId,
        entry: &TenantFences,
    ) -> StorageResult<Arc<FenceSnapshot>> {
        let fences = self.store.geofences(tenant).await?;
        let snapshot = Arc::new(FenceSnapshot {
            version: self.versions.fetch_add(1, Ordering::Relaxed),
            index: GeofenceIndex::new(fences.iter().map(Geofence::to_indexed).collect()),
        });
        *entry.current.lock().expect("fences lock") = Some(snapshot.clone());
        Ok(snapshot)
    }

    pub fn forget(&self, tenant: TenantId) {
        self.tenants
            .lock()
            .expect("geofence cache lock")
            .remove(&tenant);
    }
}

/// A circle: centre in degrees, radius in metres.
#[derive(Serialize, ToSchema)]
#[schema(as = Circle)]
pub(crate) struct CircleBody {
    lat: f64,
    lon: f64,
    radius_m: f64,
}

/// `{id, name, geometry}` or `{id, name, circle}`, with timestamps.
#[derive(Serialize, ToSchema)]
#[schema(as = Geofence)]
pub(crate) struct GeofenceBody {
    id: GeofenceId,
    name: ShortText,
    /// A GeoJSON Polygon (for polygon geofences).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    geometry: Option<Value>,
    /// For circle geofences.
    #[serde(skip_serializing_if = "Option::is_none")]
    circle: Option<CircleBody>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Geofence> for GeofenceBody {
    fn from(g: Geofence) -> Self {
        let circle = match g.shape {
            Shape::Circle { lat, lon, radius_m } => Some(CircleBody { lat, lon, radius_m }),
            Shape::Polygon(_) => None,
        };
        Self {
            id: g.id,
            geometry: g.shape.to_geojson(),
            name: g.name,
            circle,
            created_at: g.created_at,
            updated_at: g.updated_at,
        }
    }
}

webhost_api::list_page!(
    /// The tenant's geofences (all of them: at most 1,000).
    pub(crate) struct GeofencePage of GeofenceBody
);

/// Create and update bodies: a name and either `geometry` or `circle`
/// (required on create; on update, absent fields stay). Values are taken as
/// JSON and parsed here, so that every error names its field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GeofenceInput)]
pub(crate) struct Input {
    /// 1 to 100 characters (`null` is refused: a geofence has a name).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<Value>>,
    /// A GeoJSON Polygon: closed, simple rings, at most 1,000 points.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    geometry: Option<Value>,
    /// A circle instead of a polygon.
    #[serde(default)]
    #[schema(value_type = Option<CircleBody>)]
    circle: Option<Value>,
}

fn parse_name(raw: &Value) -> Result<ShortText, ValidationError> {
    let text = raw
        .as_str()
        .ok_or_else(|| ValidationError::new("name", "must be a string"))?;
    let name = ShortText::parse("name", text)?;
    if name.as_str().is_empty() {
        return Err(ValidationError::new("name", "must not be empty"));
    }
    Ok(name)
}

fn circle_number(
    circle: &serde_json::Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<f64, ValidationError> {
    match circle.get(key) {
        None | Some(Value::Null) => Err(ValidationError::new(field, "is required (a number)")),
        Some(value) => value
            .as_f64()
            .ok_or_else(|| ValidationError::new(field, "must be a number")),
    }
}

fn parse_circle(raw: &Value) -> Result<Shape, ValidationError> {
    let circle = raw.as_object().ok_or_else(|| {
        ValidationError::new(
            "circle",
            "must be an object {\"lat\", \"lon\", \"radius_m\"} (degrees, metres)",
        )
    })?;
    if let Some(unknown) = circle
        .keys()
        .find(|k| !matches!(k.as_str(), "lat" | "lon" | "radius_m"))
    {
        return Err(ValidationError::new(
            "circle",
            format!("unknown field '{unknown}'; a circle is {{\"lat\", \"lon\", \"radius_m\"}}"),
        ));
    }
    Shape::circle(
        circle_number(circle, "lat", "circle.lat")?,
        circle_number(circle, "lon", "circle.lon")?,
        circle_number(circle, "radius_m", "circle.radius_m")?,
    )
}

/// The shape of a body: `Some` when it has `geometry` or `circle` (not
/// both: a geofence is one or the other).
fn parse_shape(input: &Input) -> Result<Option<Shape>, ValidationError> {
    match (&input.geometry, &input.circle) {
        (Some(_), Some(_)) => Err(ValidationError::new(
            "geometry",
            "give either geometry (a GeoJSON Polygon) or circle ({lat, lon, radius_m}), not both",
        )),
        (Some(geometry), None) => Shape::from_geojson(geometry).map(Some),
        (None, Some(circle)) => parse_circle(circle).map(Some),
        (None, None) => Ok(None),
    }
}

fn geofence_id(raw: &str) -> Result<GeofenceId, ApiError> {
    // Anything that is not one of our ids cannot name a geofence.
    raw.parse().map_err(|_| ApiError::not_found("geofence"))
}

fn create_error(err: CreateGeofenceError) -> ApiError {
    match err {
        CreateGeofenceError::LimitReached { .. } => ApiError::conflict(
            "geofence_limit_reached",
            format!("{err}; delete one before creating another"),
        ),
        CreateGeofenceError::Storage(err) => err.into(),
    }
}

pub(crate) struct ListGeofences;

impl Operation<CellState> for ListGeofences {
    type Params = NoParams;
    type Body = NoBody;
    type Output = GeofencePage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/geofences",
        "geofences",
        "geofences",
        "The tenant's geofences",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<GeofencePage, ApiError> {
        let fences = state.store.geofences(caller.tenant).await?;
        Ok(GeofencePage::whole(
            fences.into_iter().map(GeofenceBody::from).collect(),
        ))
    }
}

pub(crate) struct CreateGeofence;

impl Operation<CellState> for CreateGeofence {
    type Params = NoParams;
    type Body = Json<Input>;
    type Output = GeofenceBody;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/geofences",
        "createGeofence",
        "geofences",
        "Creates a polygon or circle geofence",
    )
    .status(StatusCode::CREATED);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        Json(input): Json<Input>,
    ) -> Result<GeofenceBody, ApiError> {
        let name = match &input.name {
            Some(Some(raw)) => parse_name(raw)?,
            _ => return Err(ValidationError::new("name", "is required").into()),
        };
        let shape = parse_shape(&input)?.ok_or_else(|| {
            ValidationError::new(
                "geometry",
                "is required: give geometry (a GeoJSON Polygon) or circle ({lat, lon, radius_m})",
            )
        })?;
        let created = state
            .store
            .create_geofence(
                caller.tenant,
                NewGeofence {
                    id: GeofenceId::new(),
                    name,
                    shape,
                },
            )
            .await
            .map_err(create_error)?;
        state.ingest.geofences().rebuild(caller.tenant).await;
        Ok(created.into())
    }
}

pub(crate) struct ShowGeofence;

impl Operation<CellState> for ShowGeofence {
    type Params = ById;
    type Body = NoBody;
    type Output = GeofenceBody;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/geofences/{id}",
        "geofence",
        "geofences",
        "One geofence",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<GeofenceBody, ApiError> {
        let found = state
            .store
            .geofence(caller.tenant, geofence_id(&params.id)?)
            .await?;
        Ok(found.into())
    }
}

pub(crate) struct UpdateGeofence;

impl Operation<CellState> for UpdateGeofence {
    type Params = ById;
    type Body = Json<Input>;
    type Output = GeofenceBody;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Patch,
        "/api/v1/geofences/{id}",
        "updateGeofence",
        "geofences",
        "Renames a geofence or replaces its shape",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        Json(input): Json<Input>,
    ) -> Result<GeofenceBody, ApiError> {
        let id = geofence_id(&params.id)?;
        let patch = GeofencePatch {
            name: match &input.name {
                None => None,
                Some(None) => {
                    return Err(
                        ValidationError::new("name", "cannot be removed; give a new name").into(),
                    )
                }
                Some(Some(raw)) => Some(parse_name(raw)?),
            },
            shape: parse_shape(&input)?,
        };
        let updated = state
            .store
            .update_geofence(caller.tenant, id, patch)
            .await?;
        state.ingest.geofences().rebuild(caller.tenant).await;
        Ok(updated.into())
    }
}

pub(crate) struct DeleteGeofence;

impl Operation<CellState> for DeleteGeofence {
    type Params = ById;
    type Body = NoBody;
    type Output = Deleted;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/v1/geofences/{id}",
        "deleteGeofence",
        "geofences",
        "Deletes a geofence (its past events keep its id)",
    )
    .status(StatusCode::NO_CONTENT);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<Deleted, ApiError> {
        let id = geofence_id(&params.id)?;
        state.store.delete_geofence(caller.tenant, id).await?;
        state.ingest.geofences().rebuild(caller.tenant).await;
        Ok(Deleted { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(value: Value) -> Input {
        serde_json::from_value(value).expect("input")
    }

    #[test]
    fn a_geofence_is_a_polygon_or_a_circle_never_both() {
        let polygon = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]});
        let circle = json!({"lat": 1.0, "lon": 2.0, "radius_m": 30});
        assert!(matches!(
            parse_shape(&input(json!({ "geometry": polygon }))),
            Ok(Some(Shape::Polygon(_)))
        ));
        assert_eq!(
            parse_shape(&input(json!({ "circle": circle }))).expect("circle"),
            Some(Shape::Circle {
                lat: 1.0,
                lon: 2.0,
                radius_m: 30.0
            })
        );
        let both = parse_shape(&input(json!({ "geometry": polygon, "circle": circle })));
        assert_eq!(both.expect_err("both").field, "geometry");
        assert_eq!(parse_shape(&input(json!({}))).expect("none"), None);
        for (body, field) in [
            (json!({"circle": {"lat": 1, "lon": 2}}), "circle.radius_m"),
            (
                json!({"circle": {"lat": "1", "lon": 2, "radius_m": 3}}),
                "circle.lat",
            ),
            (
                json!({"circle": {"lat": 1, "lon": 200, "radius_m": 3}}),
                "circle.lon",
            ),
            (
                json!({"circle": {"lat": 1, "lon": 2, "radius_m": 0}}),
                "circle.radius_m",
            ),
            (
                json!({"circle": {"lat": 1, "lon": 2, "radius_m": 3, "r": 1}}),
                "circle",
            ),
            (json!({"circle": [1, 2, 3]}), "circle"),
            (
                json!({"geometry": {"type": "Point", "coordinates": [1, 2]}}),
                "geometry",
            ),
        ] {
            let err = parse_shape(&input(body.clone())).expect_err("invalid");
            assert_eq!(err.field, field, "{body}");
        }
    }

    #[test]
    fn names_are_non_empty_strings() {
        assert_eq!(
            parse_name(&json!("  Depot ")).expect("name").as_str(),
            "Depot"
        );
        for bad in [json!(""), json!("   "), json!(5), json!("x".repeat(101))] {
            assert_eq!(parse_name(&bad).expect_err("bad").field, "name", "{bad}");
        }
    }
}
