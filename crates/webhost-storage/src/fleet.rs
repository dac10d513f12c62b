//! Records of geofences, events and the per-vehicle tracking state that
//! turns positions into events (see `webhost-cell/src/ingest.rs`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use webhost_domain::{EventId, GeofenceId, Position, ShortText, TenantId, VehicleId};
use webhost_geofence::{BoundingBox, EventKind, Shape, VehicleState};

use crate::{NewJob, NewPosition, StorageError};

/// The most geofences one tenant may have.
pub const MAX_GEOFENCES: u32 = 1_000;

/// A stored geofence. The shape was validated when it was created (polygon
/// rings closed and simple, circle within range).
#[derive(Clone, Debug, PartialEq)]
pub struct Geofence {
    pub id: GeofenceId,
    pub name: ShortText,
    pub shape: Shape,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Geofence {
    /// What the in-memory index needs.
    pub fn to_indexed(&self) -> webhost_geofence::Geofence {
        webhost_geofence::Geofence {
            id: self.id,
            shape: self.shape.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewGeofence {
    pub id: GeofenceId,
    pub name: ShortText,
    pub shape: Shape,
}

/// A partial update: `None` leaves a field alone. A new shape may be of the
/// other kind (a polygon becomes a circle).
#[derive(Clone, Debug, Default)]
pub struct GeofencePatch {
    pub name: Option<ShortText>,
    pub shape: Option<Shape>,
}

/// Why a geofence was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateGeofenceError {
    #[error("an account may have at most {limit} geofences and all are in use")]
    LimitReached { limit: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The `type` of an event (SPEC §4).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    GeofenceEnter,
    GeofenceExit,
    Overspeed,
    DeviceOnline,
    DeviceOffline,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::GeofenceEnter,
        EventType::GeofenceExit,
        EventType::Overspeed,
        EventType::DeviceOnline,
        EventType::DeviceOffline,
    ];

    /// The wire (and column) name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::GeofenceEnter => "geofence_enter",
            EventType::GeofenceExit => "geofence_exit",
            EventType::Overspeed => "overspeed",
            EventType::DeviceOnline => "device_online",
            EventType::DeviceOffline => "device_offline",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<EventKind> for EventType {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::GeofenceEnter => EventType::GeofenceEnter,
            EventKind::GeofenceExit => EventType::GeofenceExit,
            EventKind::Overspeed => EventType::Overspeed,
        }
    }
}

/// An event, as stored and as the API shows it:
/// `{id, type, vehicle_id, geofence_id?, time, position?}`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub vehicle_id: VehicleId,
    /// Set for `geofence_enter` and `geofence_exit`. A deleted geofence's
    /// past events keep its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geofence_id: Option<GeofenceId>,
    pub time: DateTime<Utc>,
    /// The position that triggered the event (its time is the event's);
    /// `None` for events no position triggered (`device_offline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// An event to store, with its tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    pub event: Event,
}

/// Where a page of events ends: events are ordered by (time, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    pub time: DateTime<Utc>,
    pub id: EventId,
}

/// Opaque to clients: `<epoch milliseconds>_<event id>`.
impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.time.timestamp_millis(), self.id)
    }
}

impl FromStr for EventCursor {
    type Err = ();
    fn from_str(raw: &str) -> Result<Self, ()> {
        let (millis, id) = raw.split_once('_').ok_or(())?;
        Ok(Self {
            time: DateTime::from_timestamp_millis(millis.parse().map_err(|_| ())?).ok_or(())?,
            id: id.parse().map_err(|_| ())?,
        })
    }
}

/// A tenant's events, oldest first (by time, then id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventQuery {
    /// Inclusive; `None`: from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive; `None`: up to the end.
    pub to: Option<DateTime<Utc>>,
    /// Only these types; empty: every type.
    pub types: Vec<EventType>,
    pub vehicle: Option<VehicleId>,
    /// Events strictly after this cursor (a `next_cursor`).
    pub after: Option<EventCursor>,
    pub limit: u32,
}

/// What the cell remembers about a vehicle between batches, to find events:
/// the geofence tracker's state, and the presence used for
/// `device_online` / `device_offline`.
#[derive(Clone, Debug, PartialEq)]
pub struct VehicleTracking {
    pub tenant_id: TenantId,
    pub vehicle_id: VehicleId,
    /// Geofences the vehicle is inside, speeding, last processed time.
    pub state: VehicleState,
    /// Time of the newest position seen, valid or not.
    pub last_seen: Option<DateTime<Utc>>,
    /// True after a `device_online` event until the next `device_offline`.
    pub online: bool,
}

/// One atomic ingest: the positions, the events they triggered, the
/// tracking states after them and the jobs that deliver the events (webhooks),
/// committed together or not at all, so a crash never leaves positions
/// without their events (or events twice), nor events without their
/// deliveries.
#[derive(Clone, Copy, Debug, Default)]
pub struct IngestBatch<'a> {
    pub positions: &'a [NewPosition],
    pub events: &'a [NewEvent],
    /// Upserted by (tenant, vehicle).
    pub states: &'a [VehicleTracking],
    /// Enqueued like `JobStore::enqueue`: a job whose unique key an
    /// unfinished job holds is left out.
    pub jobs: &'a [NewJob],
}

impl<'a> IngestBatch<'a> {
    /// Positions alone (no events, no state).
    pub fn positions(positions: &'a [NewPosition]) -> Self {
        Self {
            positions,
            ..Self::default()
        }
    }
}

/// A vehicle whose device went quiet while marked online: what the offline
/// sweep looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SilentVehicle {
    pub tenant_id: TenantId,
    pub vehicle_id: VehicleId,
}

/// A shape as the `geofences` columns hold it, in both engines: `kind`
/// (`polygon` | `circle`), the normalised GeoJSON of a polygon, a circle's
/// centre and radius, and the bounding box of the whole shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeColumns {
    pub kind: &'static str,
    pub geometry: Option<serde_json::Value>,
    pub center_lat: Option<f64>,
    pub center_lon: Option<f64>,
    pub radius_m: Option<f64>,
    pub bbox: BoundingBox,
}

impl ShapeColumns {
    pub fn of(shape: &Shape) -> Self {
        let bbox = shape.bounding_box();
        match shape {
            Shape::Polygon(_) => Self {
                kind: "polygon",
                geometry: shape.to_geojson(),
                center_lat: None,
                center_lon: None,
                radius_m: None,
                bbox,
            },
            Shape::Circle { lat, lon, radius_m } => Self {
                kind: "circle",
                geometry: None,
                center_lat: Some(*lat),
                center_lon: Some(*lon),
                radius_m: Some(*radius_m),
                bbox,
            },
        }
    }

    /// The shape back from its columns; anything inconsistent is corrupt
    /// data (an `Unexpected` error).
    pub fn to_shape(
        kind: &str,
        geometry: Option<&serde_json::Value>,
        center_lat: Option<f64>,
        center_lon: Option<f64>,
        radius_m: Option<f64>,
    ) -> Result<Shape, StorageError> {
        let corrupt =
            |why: String| StorageError::Unexpected(anyhow::anyhow!("corrupt geofence: {why}"));
        match (kind, geometry, center_lat, center_lon, radius_m) {
            ("polygon", Some(geometry), _, _, _) => {
                Shape::from_geojson(geometry).map_err(|e| corrupt(e.to_string()))
            }
            ("circle", _, Some(lat), Some(lon), Some(radius_m)) => {
                Shape::circle(lat, lon, radius_m).map_err(|e| corrupt(e.to_string()))
            }
            (kind, ..) => Err(corrupt(format!("kind {kind:?} without its columns"))),
        }
    }
}

/// The last state given for each (tenant, vehicle), in first-seen order: an
/// upsert may touch a row once per statement.
pub fn last_state_per_vehicle(states: &[VehicleTracking]) -> Vec<&VehicleTracking> {
    let mut slot: std::collections::HashMap<(TenantId, VehicleId), usize> = Default::default();
    let mut out: Vec<&VehicleTracking> = Vec::with_capacity(states.len());
    for state in states {
        match slot.entry((state.tenant_id, state.vehicle_id)) {
            std::collections::hash_map::Entry::Occupied(at) => out[*at.get()] = state,
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(out.len());
                out.push(state);
            }
        }
    }
    out
}
