//! The tenant routes the edge acts on, and the hold of a moving tenant's
//! writes (SPEC §6).
//!
//! The routing table (the control store, shared by every edge) is the
//! coordination point of a move: the control plane sets the route's
//! `frozen_until` (freeze), compare-and-sets it to the new cell (version +
//! 1), then clears the freeze; if the freeze outlives its deadline the move
//! aborts and the tenant stays. The edge's side:
//!
//! - **Writes are held while the route is frozen**, not dropped: the first
//!   request that finds its tenant frozen starts one poller for the tenant
//!   (a route read every [`Timing::poll`]); every other held request of that
//!   tenant waits on the same answer, so a thousand held requests cost one
//!   read per poll, not a thousand. The poller releases them all with the
//!   route as it then is — lifted, or past `frozen_until` by this edge's
//!   clock (the control plane aborted or died), at most [`Timing::max_hold`]
//!   after it started — and they go wherever it points. Reads are never held.
//! - **A refused write is resent** ([`Routes::after_refusal`]): the source
//!   cell fences a moving tenant and answers its writes "read-only, nothing
//!   stored". The write is held while the route is frozen and then sent
//!   where the route points (the new cell; the same one after an aborted
//!   move, which makes it writable again before unfreezing). Resends are
//!   bounded; a write still refused, or refused while the route shows no
//!   move at all, is answered "try again" (503, nothing stored).
//! - **Never an older version than seen**: per tenant, the highest
//!   `Route::version` this edge has read (and whether that route was
//!   frozen). A read that answers an older version (a lagging replica) is
//!   read again; a device-route cache entry of an older version, or of a
//!   tenant seen frozen, is not used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument;
use webhost_domain::{CellId, TenantId};
use webhost_storage::{Route, RoutingDirectory, StorageError};

/// How the edge waits on a frozen route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// How often a held tenant's route is read again.
    pub poll: Duration,
    /// The longest a write is held, whatever `frozen_until` says (a freeze
    /// lasts about 5 s; this only bounds a control plane that set a far
    /// deadline).
    pub max_hold: Duration,
    /// After a cell refused a write as read-only while the route looked
    /// unchanged and unfrozen, how long the edge watches the route for the
    /// freeze (or the switch) to show before telling the client to retry:
    /// the freeze and the fence are set one after the other.
    pub settle: Duration,
}

impl Timing {
    pub const DEFAULT: Self = Self {
        poll: Duration::from_millis(25),
        max_hold: Duration::from_secs(15),
        settle: Duration::from_secs(1),
    };
}

/// Reads of the routing table that answer an older version than seen, in a
/// row, before the read is an error.
const STALE_READS: usize = 3;
/// Tenants whose versions are remembered; past it, those not frozen are
/// forgotten (a cache entry of theirs is then trusted by its own version).
const SEEN_CAPACITY: usize = 100_000;

/// Why a hold ended without a route to send to.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum HoldError {
    /// The tenant (or its route) is gone.
    #[error("the tenant has no route")]
    Gone,
    #[error("the routing table could not be read: {0}")]
    Unavailable(String),
}

impl From<StorageError> for HoldError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(_) => Self::Gone,
            err => Self::Unavailable(format!("{err:#}")),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    version: i64,
    frozen_until: Option<DateTime<Utc>>,
}

type Released = Option<Result<Route, HoldError>>;

struct Inner {
    store: Arc<dyn RoutingDirectory>,
    timing: Timing,
    seen: Mutex<HashMap<TenantId, Seen>>,
    /// The tenants whose writes are held now: the poller's answer.
    holds: Mutex<HashMap<TenantId, watch::Receiver<Released>>>,
}

/// The routes of this edge: reads with the version rule, and holds.
#[derive(Clone)]
pub(crate) struct Routes(Arc<Inner>);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Routes {
    pub fn new(store: Arc<dyn RoutingDirectory>, timing: Timing) -> Self {
        Self(Arc::new(Inner {
            store,
            timing,
            seen: Mutex::default(),
            holds: Mutex::default(),
        }))
    }

    /// Remembers `route`; false if it is older than one seen before.
    fn observe(&self, route: &Route) -> bool {
        let mut seen = lock(&self.0.seen);
        if seen.len() >= SEEN_CAPACITY && !seen.contains_key(&route.tenant_id) {
            let now = Utc::now();
            seen.retain(|_, s| s.frozen_until.is_some_and(|until| until > now));
        }
        let fresh = Seen {
            version: route.version,
            frozen_until: route.frozen_until,
        };
        match seen.get_mut(&route.tenant_id) {
            Some(known) if known.version > route.version => false,
            Some(known) => {
                *known = fresh;
                true
            }
            None => {
                seen.insert(route.tenant_id, fresh);
                true
            }
        }
    }

    /// Whether a route of `tenant` at `version`, remembered earlier, may
    /// still be used at `now`: no newer version seen, and the tenant not
    /// seen frozen (its writes must go through a fresh read, and a hold).
    pub fn usable(&self, tenant: TenantId, version: i64, now: DateTime<Utc>) -> bool {
        lock(&self.0.seen).get(&tenant).is_none_or(|seen| {
            version >= seen.version && seen.frozen_until.is_none_or(|until| until <= now)
        })
    }

    /// The tenant's route as the routing table says now, never older than
    /// a version this edge has seen.
    pub async fn current(&self, tenant: TenantId) -> Result<Route, StorageError> {
        for _ in 0..STALE_READS {
            let route = self.0.store.route(tenant).await?;
            if self.observe(&route) {
                return Ok(route);
            }
            tokio::time::sleep(self.0.timing.poll).await;
        }
        Err(StorageError::Unexpected(anyhow::anyhow!(
            "the routing table answers an older version of tenant {tenant}'s route than this \
             edge has seen"
        )))
    }

    /// `route` if it is not frozen; else waits until the freeze is over
    /// (lifted, or its deadline passed, or [`Timing::max_hold`]) and answers
    /// the route as it is then. Waiters of one tenant share one poller.
    pub async fn settle(&self, route: Route) -> Result<Route, HoldError> {
        if !route.is_frozen(Utc::now()) {
            return Ok(route);
        }
        let mut released = {
            let mut holds = lock(&self.0.holds);
            match holds.get(&route.tenant_id) {
                Some(waiting) => waiting.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    holds.insert(route.tenant_id, receiver.clone());
                    let span = tracing::info_span!("hold", tenant = %route.tenant_id);
                    tokio::spawn(self.clone().hold(route, sender).instrument(span));
                    receiver
                }
            }
        };
        let answer = released
            .wait_for(Option::is_some)
            .await
            .map_err(|_| HoldError::Unavailable("the hold ended without an answer".into()))?
            .clone();
        answer.unwrap_or_else(|| Err(HoldError::Unavailable("no answer".into())))
    }

    /// The poller of a held tenant: reads the route until the freeze is
    /// over, then tells every waiter where it points.
    async fn hold(self, mut route: Route, sender: watch::Sender<Released>) {
        let tenant = route.tenant_id;
        let started = Instant::now();
        tracing::info!(until = ?route.frozen_until, "holding the tenant's writes: it is being moved");
        let outcome = loop {
            tokio::time::sleep(self.0.timing.poll).await;
            match self.0.store.route(tenant).await {
                // An older version than seen is no news; read again.
                Ok(fresh) if !self.observe(&fresh) => {}
                Ok(fresh) => route = fresh,
                Err(StorageError::NotFound(_)) => break Err(HoldError::Gone),
                Err(err) if !route.is_frozen(Utc::now()) => break Err(err.into()),
                Err(err) => tracing::warn!(error = %err, "reading a held route failed"),
            }
            if !route.is_frozen(Utc::now()) || started.elapsed() >= self.0.timing.max_hold {
                break Ok(route);
            }
        };
        match &outcome {
            Ok(route) => tracing::info!(
                cell = %route.cell_id,
                version = route.version,
                frozen = route.is_frozen(Utc::now()),
                "released the tenant's held writes"
            ),
            Err(err) => tracing::warn!(error = %err, "released the tenant's held writes"),
        }
        // Out of the map before answering: a request that reads the route
        // after this starts a new hold if it is frozen again.
        {
            let mut holds = lock(&self.0.holds);
            if holds
                .get(&tenant)
                .is_some_and(|waiting| waiting.same_channel(&sender.subscribe()))
            {
                holds.remove(&tenant);
            }
        }
        let _ = sender.send(Some(outcome));
    }

    /// A cell at (`cell`, `version`) refused a write of `tenant` as
    /// read-only (it is moving): where to send it again once the freeze is
    /// over — the new cell, or the same one after a freeze was waited out
    /// (an aborted move makes the source writable before it unfreezes).
    /// `None` when the route neither moved nor froze within
    /// [`Timing::settle`]: the client is told to try again. The caller
    /// bounds how often it resends.
    pub async fn after_refusal(
        &self,
        tenant: TenantId,
        cell: CellId,
        version: i64,
    ) -> Result<Option<Route>, HoldError> {
        let started = Instant::now();
        loop {
            let route = self.current(tenant).await?;
            let held = route.is_frozen(Utc::now());
            let route = self.settle(route).await?;
            if held || route.cell_id != cell || route.version > version {
                return Ok(Some(route));
            }
            if started.elapsed() >= self.0.timing.settle {
                return Ok(None);
            }
            tokio::time::sleep(self.0.timing.poll).await;
        }
    }

    #[cfg(test)]
    pub fn holding(&self, tenant: TenantId) -> bool {
        lock(&self.0.holds).contains_key(&tenant)
    }
}
