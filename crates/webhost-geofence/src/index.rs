//! One tenant's geofences behind an R-tree of their bounding boxes.

use std::collections::BTreeMap;

use rstar::{RTree, RTreeObject, AABB};
use webhost_domain::GeofenceId;

use crate::shape::{index_box, Geofence};

struct Entry {
    /// Position in `GeofenceIndex::fences`.
    slot: usize,
    envelope: AABB<[f64; 2]>,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// One tenant's geofences behind an R-tree of bounding boxes (points are
/// `[lon, lat]`); the candidates whose box holds a point are then tested
/// exactly with [`Shape::contains`](crate::Shape::contains).
///
/// Immutable: when the tenant's geofences change, build a new index (and
/// call [`Tracker::retain_geofences`](crate::Tracker::retain_geofences)).
pub struct GeofenceIndex {
    /// Sorted by id, one per id.
    fences: Vec<Geofence>,
    tree: RTree<Entry>,
}

impl GeofenceIndex {
    /// Builds the index. When an id appears more than once, the last
    /// geofence with that id is kept.
    pub fn new(fences: Vec<Geofence>) -> Self {
        let by_id: BTreeMap<GeofenceId, Geofence> = fences.into_iter().map(|f| (f.id, f)).collect();
        let fences: Vec<Geofence> = by_id.into_values().collect();
        let entries = fences
            .iter()
            .enumerate()
            .map(|(slot, fence)| {
                let b = index_box(&fence.shape);
                Entry {
                    slot,
                    envelope: AABB::from_corners([b.min_lon, b.min_lat], [b.max_lon, b.max_lat]),
                }
            })
            .collect();
        Self {
            fences,
            tree: RTree::bulk_load(entries),
        }
    }

    /// The geofences that contain the point (boundary included), sorted by
    /// id. Empty for non-finite coordinates.
    pub fn containing(&self, lat: f64, lon: f64) -> Vec<GeofenceId> {
        if !lat.is_finite() || !lon.is_finite() {
            return Vec::new();
        }
        let mut ids: Vec<GeofenceId> = self
            .tree
            .locate_in_envelope_intersecting(&AABB::from_point([lon, lat]))
            .filter_map(|entry| self.fences.get(entry.slot))
            .filter(|fence| fence.shape.contains(lat, lon))
            .map(|fence| fence.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether a geofence with this id is in the index.
    pub fn contains_id(&self, id: GeofenceId) -> bool {
        self.get(id).is_some()
    }

    /// The geofence with this id.
    pub fn get(&self, id: GeofenceId) -> Option<&Geofence> {
        self.fences
            .binary_search_by(|f| f.id.cmp(&id))
            .ok()
            .and_then(|i| self.fences.get(i))
    }

    /// The geofences, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Geofence> {
        self.fences.iter()
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }
}

impl Default for GeofenceIndex {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl std::fmt::Debug for GeofenceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeofenceIndex")
            .field("fences", &self.fences.len())
            .finish()
    }
}
