//! Device → (tenant, cell) for the device listeners, kept in memory for
//! [`TTL`] so a steady stream of fixes reads nothing from the control
//! store. The TTL is longer than devices' reporting intervals (10 s to a
//! few minutes): with a TTL shorter than the interval every fix would miss
//! (measured: at 5 s, each OsmAnd fix of `bench density` cost two control
//! store queries). Staleness costs one more lookup, not a wrong answer
//! (below).
//!
//! **Why a stale entry is safe.** The cell stores a fix only if its device
//! belongs to a vehicle of the tenant the fix was sent for, according to the
//! cell's own directory (`webhost-cell/src/devices.rs`); the directory is
//! invalidated on every vehicle write, before the device is released in the
//! registry. So an entry that still names the device's previous tenant can
//! only make the cell refuse the fix (`unknown_devices`), never store it
//! under the wrong tenant; on such a refusal the caller drops the entry and
//! looks the device up once more before answering the device.
//!
//! **The tenant move (SPEC §6).** What a refusal by the device check does
//! not catch is a tenant moved to another cell: its old copy knows the
//! device too. Three rules keep an entry from sending fixes to the old copy:
//! - the source cell fences a moving tenant from the freeze on and stays
//!   read-only after the switch (until it deletes the copy), so a fix sent
//!   there is refused (`read_only`, nothing stored); the caller drops the
//!   entry, looks the route up again — held while it is frozen — and
//!   resends where it points;
//! - every entry carries its route's version, and the edge remembers the
//!   highest version it has seen per tenant (`routes.rs`): once any request
//!   has read the moved route, entries of the older version are not used;
//! - an entry of a tenant this edge has seen frozen is not used while the
//!   freeze lasts (its fixes take a fresh, held lookup), and a frozen route
//!   is never remembered.
//!
//! So a steady stream of fixes still reads nothing from the control store
//! while nothing moves, and the TTL bounds nothing about correctness.
//!
//! Only devices that were found are kept: an unknown device is looked up
//! every time, so a device registered a moment ago is accepted at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use webhost_domain::{CellId, TenantId};
use webhost_storage::Route;

/// How long an entry is trusted without asking the control store again:
/// a refusal or a failed call drops it sooner.
pub(crate) const TTL: Duration = Duration::from_secs(300);
/// Devices remembered at most; beyond it, new devices go uncached until a
/// sweep of the expired entries makes room.
pub(crate) const CAPACITY: usize = 100_000;
/// A full map is swept at most this often (or once per TTL, if shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Where a cell is reached, as internal calls need it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct CellTarget {
    pub id: CellId,
    pub url: String,
    /// The credential audience (`cell:<id>`), computed once.
    pub audience: String,
}

impl CellTarget {
    pub fn new(id: CellId, url: String) -> Self {
        Self {
            id,
            url,
            audience: webhost_contract::cell_audience(id),
        }
    }
}

/// Where a device's fixes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceRoute {
    pub tenant: TenantId,
    /// The routing entry's version this was read at.
    pub version: i64,
    pub cell: Arc<CellTarget>,
}

impl From<&Route> for DeviceRoute {
    fn from(route: &Route) -> Self {
        Self {
            tenant: route.tenant_id,
            version: route.version,
            cell: Arc::new(CellTarget::new(route.cell_id, route.cell_url.clone())),
        }
    }
}

struct Entry {
    route: DeviceRoute,
    expires: Instant,
}

struct Entries {
    /// Keyed by the device id as parsed (`DeviceId` trims), so every raw
    /// spelling of one device shares an entry; at most 64 bytes each.
    map: HashMap<Box<str>, Entry>,
    /// A full map is swept at most once per [`SWEEP_EVERY`], so a flood of
    /// new devices costs one pass over it, not one per request.
    next_sweep: Instant,
}

pub(crate) struct RouteCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl RouteCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                next_sweep: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Nothing in a critical section can leave the map half-updated, so
        // a panic elsewhere while holding the lock does not poison meaning.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The device's route if it was looked up less than a TTL ago.
    pub fn get(&self, device: &str, now: Instant) -> Option<DeviceRoute> {
        let entries = self.lock();
        let entry = entries.map.get(device)?;
        (entry.expires > now).then(|| entry.route.clone())
    }

    /// Remembers what the control store just said about `device`.
    pub fn insert(&self, device: &str, route: DeviceRoute, now: Instant) {
        let mut entries = self.lock();
        let expires = now + self.ttl;
        if let Some(entry) = entries.map.get_mut(device) {
            *entry = Entry { route, expires };
            return;
        }
        if entries.map.len() >= self.capacity {
            if now < entries.next_sweep {
                return;
            }
            entries.map.retain(|_, entry| entry.expires > now);
            entries.next_sweep = now + self.ttl.min(SWEEP_EVERY);
            if entries.map.len() >= self.capacity {
                return;
            }
        }
        entries.map.insert(device.into(), Entry { route, expires });
    }

    /// Drops `device`'s entry if it still says `refused` (the cell refused
    /// that route), so an entry a concurrent lookup just refreshed stays.
    pub fn invalidate(&self, device: &str, refused: &DeviceRoute) {
        let mut entries = self.lock();
        if entries
            .map
            .get(device)
            .is_some_and(|entry| entry.route == *refused)
        {
            entries.map.remove(device);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(tenant: TenantId) -> DeviceRoute {
        DeviceRoute {
            tenant,
            version: 1,
            cell: Arc::new(CellTarget::new(CellId::new(), "http://cell".into())),
        }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = RouteCache::new(Duration::from_secs(5), 10);
        let start = Instant::now();
        let a = route(TenantId::new());
        cache.insert("dev-1", a.clone(), start);
        assert_eq!(cache.get("dev-1", start), Some(a.clone()));
        assert_eq!(
            cache.get("dev-1", start + Duration::from_secs(4)),
            Some(a.clone())
        );
        assert_eq!(cache.get("dev-1", start + Duration::from_secs(5)), None);
        assert_eq!(cache.get("dev-2", start), None);
        // A fresh lookup renews the entry.
        cache.insert("dev-1", a.clone(), start + Duration::from_secs(5));
        assert_eq!(cache.get("dev-1", start + Duration::from_secs(9)), Some(a));
    }

    #[test]
    fn a_refused_route_is_dropped_but_a_refreshed_one_stays() {
        let cache = RouteCache::new(Duration::from_secs(5), 10);
        let now = Instant::now();
        let (old, new) = (route(TenantId::new()), route(TenantId::new()));
        cache.insert("dev-1", old.clone(), now);
        cache.invalidate("dev-1", &old);
        assert_eq!(cache.get("dev-1", now), None);

        // Another request already replaced the refused route: keep it.
        cache.insert("dev-1", new.clone(), now);
        cache.invalidate("dev-1", &old);
        assert_eq!(cache.get("dev-1", now), Some(new));
    }

    #[test]
    fn the_size_is_bounded_and_expired_entries_make_room() {
        let cache = RouteCache::new(Duration::from_secs(5), 3);
        let start = Instant::now();
        let a = route(TenantId::new());
        for device in ["d1", "d2", "d3"] {
            cache.insert(device, a.clone(), start);
        }
        // Full of live entries: a new device is not kept, the others are.
        cache.insert("d4", a.clone(), start + Duration::from_secs(1));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("d4", start + Duration::from_secs(1)), None);
        assert!(cache.get("d1", start + Duration::from_secs(1)).is_some());
        // Known devices are still refreshed while full.
        cache.insert("d1", a.clone(), start + Duration::from_secs(2));
        // Once the first entries expire, the next sweep makes room.
        let later = start + Duration::from_secs(6);
        cache.insert("d4", a.clone(), later);
        assert_eq!(cache.get("d4", later), Some(a.clone()));
        assert_eq!(cache.get("d1", later), Some(a));
        assert_eq!(cache.len(), 2, "d2 and d3 expired and were swept");
    }
}
