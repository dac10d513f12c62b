//! The per-vehicle state machine that turns positions into events. See the
//! crate documentation for the rules.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use webhost_domain::{Fix, GeofenceId, VehicleId};

use crate::index::GeofenceIndex;

/// Once an overspeed event has fired, the next one needs the speed to fall
/// to `limit - OVERSPEED_HYSTERESIS_KMH` (floored at 0) or below first.
pub const OVERSPEED_HYSTERESIS_KMH: f64 = 2.0;

/// The kind of a detected event; serialized as `geofence_enter`,
/// `geofence_exit`, `overspeed` (the event `type` of SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    GeofenceEnter,
    GeofenceExit,
    Overspeed,
}

impl EventKind {
    /// The wire name: `geofence_enter`, `geofence_exit`, `overspeed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::GeofenceEnter => "geofence_enter",
            EventKind::GeofenceExit => "geofence_exit",
            EventKind::Overspeed => "overspeed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event found in a vehicle's positions. `time` is the time of `fix`,
/// the position that triggered it; `geofence_id` is set for enter/exit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detected {
    pub kind: EventKind,
    pub vehicle_id: VehicleId,
    pub geofence_id: Option<GeofenceId>,
    pub time: DateTime<Utc>,
    pub fix: Fix,
}

/// Per-vehicle state: which geofences it is inside, whether it is speeding,
/// the time of the last position processed. Serializable so that the cell
/// can persist it and reload it with [`Tracker::with_states`]; missing
/// fields read as their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VehicleState {
    inside: BTreeSet<GeofenceId>,
    speeding: bool,
    last_time: Option<DateTime<Utc>>,
}

impl VehicleState {
    /// The geofences the vehicle is inside, by id.
    pub fn inside(&self) -> &BTreeSet<GeofenceId> {
        &self.inside
    }

    /// Whether an overspeed event has fired and not yet re-armed.
    pub fn is_speeding(&self) -> bool {
        self.speeding
    }

    /// The time of the last position processed; `None` before the first.
    pub fn last_time(&self) -> Option<DateTime<Utc>> {
        self.last_time
    }
}

/// The state of every vehicle of one tenant.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    states: HashMap<VehicleId, VehicleState>,
}

/// Total order on positions of the same time, so that the result does not
/// depend on the order of the input slice.
fn tiebreak(a: &Fix, b: &Fix) -> Ordering {
    fn opt(a: Option<f64>, b: Option<f64>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
    a.lat
        .total_cmp(&b.lat)
        .then_with(|| a.lon.total_cmp(&b.lon))
        .then_with(|| opt(a.speed, b.speed))
        .then_with(|| opt(a.heading, b.heading))
        .then_with(|| opt(a.altitude, b.altitude))
        .then_with(|| opt(a.accuracy, b.accuracy))
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that resumes from persisted states.
    pub fn with_states(states: HashMap<VehicleId, VehicleState>) -> Self {
        Self { states }
    }

    /// The state of a vehicle; `None` until its first valid position.
    pub fn state(&self, vehicle: VehicleId) -> Option<&VehicleState> {
        self.states.get(&vehicle)
    }

    /// Every vehicle's state (to persist).
    pub fn states(&self) -> &HashMap<VehicleId, VehicleState> {
        &self.states
    }

    pub fn into_states(self) -> HashMap<VehicleId, VehicleState> {
        self.states
    }

    /// Sets a vehicle's state, replacing what was there: for a caller that
    /// processed positions on a copy of the state and keeps the result only
    /// once it is stored.
    pub fn insert(&mut self, vehicle: VehicleId, state: VehicleState) {
        self.states.insert(vehicle, state);
    }

    /// Forgets a vehicle (deleted); its next position is a first position.
    pub fn remove(&mut self, vehicle: VehicleId) -> Option<VehicleState> {
        self.states.remove(&vehicle)
    }

    /// Feeds one vehicle's positions (any order within the slice; sorted by
    /// time inside) and returns the events, in time order.
    /// `overspeed_kmh`: the vehicle's speed limit in km/h, if any (the cell
    /// reads it from the vehicle's `speed_limit_kmh` attribute).
    pub fn process(
        &mut self,
        index: &GeofenceIndex,
        vehicle: VehicleId,
        fixes: &[Fix],
        overspeed_kmh: Option<f64>,
    ) -> Vec<Detected> {
        let mut usable: Vec<&Fix> = fixes
            .iter()
            .filter(|f| f.valid && f.lat.is_finite() && f.lon.is_finite())
            .collect();
        if usable.is_empty() {
            return Vec::new();
        }
        usable.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| tiebreak(a, b)));
        let limit = overspeed_kmh.filter(|l| l.is_finite() && *l >= 0.0);

        let state = self.states.entry(vehicle).or_default();
        let mut events = Vec::new();
        for fix in usable {
            if state.last_time.is_some_and(|last| fix.time <= last) {
                continue; // duplicate or older than what was processed
            }
            state.last_time = Some(fix.time);

            let now: BTreeSet<GeofenceId> =
                index.containing(fix.lat, fix.lon).into_iter().collect();
            let event = |kind, geofence_id| Detected {
                kind,
                vehicle_id: vehicle,
                geofence_id,
                time: fix.time,
                fix: fix.clone(),
            };
            events.extend(
                state
                    .inside
                    .difference(&now)
                    .map(|id| event(EventKind::GeofenceExit, Some(*id))),
            );
            events.extend(
                now.difference(&state.inside)
                    .map(|id| event(EventKind::GeofenceEnter, Some(*id))),
            );
            state.inside = now;

            match (limit, fix.speed) {
                (None, _) => state.speeding = false,
                (Some(_), None) => {}
                (Some(limit), Some(speed)) => {
                    if !state.speeding && speed > limit {
                        state.speeding = true;
                        events.push(event(EventKind::Overspeed, None));
                    } else if state.speeding && speed <= (limit - OVERSPEED_HYSTERESIS_KMH).max(0.0)
                    {
                        state.speeding = false;
                    }
                }
            }
        }
        events
    }

    /// When geofences change: forget membership in geofences that no longer
    /// exist (no exit event for a deleted geofence). Nothing is emitted here:
    /// a vehicle already inside a new (or enlarged) geofence gets its enter,
    /// and one no longer inside an edited geofence its exit, with its next
    /// position.
    pub fn retain_geofences(&mut self, index: &GeofenceIndex) {
        for state in self.states.values_mut() {
            state.inside.retain(|id| index.contains_id(*id));
        }
    }
}
