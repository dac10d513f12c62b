//! Geofences of WebHost: the geometry ([`Shape`]), an in-memory spatial
//! index of one tenant's geofences ([`GeofenceIndex`]), and the per-vehicle
//! state machine ([`Tracker`]) that turns a stream of positions into
//! `geofence_enter`, `geofence_exit` and `overspeed` events at ingest time.
//! Pure: no I/O, no async, no clock.
//!
//! # Geometry
//!
//! - A polygon is a GeoJSON `Polygon` (exterior ring and holes), positions
//!   `[lon, lat]` in WGS84 degrees. Its edges are straight in lon/lat (as in
//!   GeoJSON); it cannot cross the antimeridian (split it in two). Parsing
//!   refuses, with field `geometry` and a message that says what to fix:
//!   other geometry types, rings of fewer than 4 positions or not closed,
//!   positions that are not `[lon, lat]` numbers in range, rings whose
//!   edges cross or touch, and more than 10,000 positions in total.
//! - A circle is a centre and a radius in metres, (0, 1,000,000]; a point is
//!   inside when its haversine distance (mean earth radius 6,371,008.8 m) to
//!   the centre is at most the radius. Circles work across the antimeridian
//!   and around the poles.
//! - The boundary counts as inside; a point in a hole is outside (on the
//!   hole's edge it is on the boundary, so inside).
//!
//! # Index
//!
//! An R-tree over the geofences' bounding boxes, then the exact test on the
//! candidates. A circle's box holds the whole circle: latitude is clamped to
//! ±90°, and a box that holds a pole or would cross ±180° spans every
//! longitude. Results are sorted by geofence id.
//!
//! # Events
//!
//! The tracker keeps, per vehicle, the set of geofences it is inside,
//! whether it is speeding, and the time of the last position processed.
//! That state persists between calls ([`VehicleState`] is serializable), so
//! batch boundaries do not matter:
//!
//! 1. **Order.** The positions of one call are sorted by time first (in any
//!    order in the slice; positions with the same time are ordered by their
//!    numbers, so the outcome does not depend on the slice order). A
//!    position whose time is **older than or equal to** the time of the last
//!    position processed for the vehicle (in this call or an earlier one) is
//!    ignored for events: it changes no state and yields nothing (the caller
//!    still stores it). So a duplicate yields nothing, and a late position
//!    arriving after newer ones cannot rewrite history.
//! 2. **Invalid positions** (`valid == false`, or non-finite coordinates)
//!    are skipped entirely: they change neither membership, nor overspeed
//!    state, nor the last processed time, and yield no events.
//! 3. **Geofences.** Each processed position is compared with the
//!    membership left by the previous one: `geofence_exit` for each geofence
//!    left, then `geofence_enter` for each geofence entered, each group by
//!    geofence id. So each crossing yields exactly one enter and one exit,
//!    and overlapping geofences are entered and left independently.
//! 4. **First position.** The first position ever processed for a vehicle
//!    starts from "inside nothing": if it is inside a geofence, that is an
//!    enter (a vehicle appearing inside a fence has entered it). Likewise a
//!    first position above the speed limit is an overspeed.
//! 5. **Overspeed.** One `overspeed` event when the speed goes strictly
//!    above the vehicle's speed limit (given per call); none while it stays
//!    above. It re-arms when the speed falls to `limit - 2 km/h` or below
//!    (hysteresis against GPS jitter around the limit; floored at 0). A
//!    position without speed neither fires nor re-arms. Without a limit
//!    nothing fires and the vehicle counts as not speeding. Events of one
//!    position come in the order exits, enters, overspeed.
//! 6. **Geofence changes.** After the tenant's geofences change, build a new
//!    index and call [`Tracker::retain_geofences`]: membership in deleted
//!    geofences is forgotten without an exit event. Nothing else happens
//!    until the vehicle's next position, which then yields the enter for a
//!    new geofence it is inside (and the exit for an edited one it is no
//!    longer inside).

mod index;
mod shape;
mod tracker;

pub use index::GeofenceIndex;
pub use shape::{BoundingBox, Geofence, Shape, MAX_RADIUS_M, MAX_VERTICES};
pub use tracker::{Detected, EventKind, Tracker, VehicleState, OVERSPEED_HYSTERESIS_KMH};
