//! Group commit: every position write in the cell goes through one writer
//! task, which takes all batches waiting at that moment and stores them in a
//! single transaction (one fsync / one round trip for many requests), then
//! answers each request. A request is acknowledged only after its commit.
//!
//! The writer also keeps the in-memory latest positions current, so
//! `GET /api/v1/positions/latest` never touches storage once warm.
//!
//! # Events
//!
//! The writer finds the events of the positions it stores, and commits them
//! **in the same transaction** as the positions, together with each
//! vehicle's tracking state after them (`CellStore::insert_positions` with
//! an `IngestBatch`). Per group, per tenant, per vehicle, the new positions
//! go to the tenant's geofence [`Tracker`] (state loaded lazily from
//! storage, then kept in memory) on a *copy* of the vehicle's state; the
//! copies replace the in-memory states only after the commit succeeded, so
//! a failed commit changes nothing and its batches can simply be resent.
//! The webhook deliveries of the events (`deliver_webhook` jobs, see
//! `webhooks.rs`) are part of the same transaction (`IngestBatch::jobs`):
//! one read of the tenant's webhooks per tenant with events in the group.
//! After the commit, events are published on the live bus as
//! `{"events": [...]}`, in the same message as the `{"positions": [...]}`
//! of the same commit (one message with both keys: a subscriber sees a
//! position together with the events it triggered).
//!
//! - **`geofence_enter` / `geofence_exit` / `overspeed`**: the rules of
//!   `webhost-geofence` (its crate docs): each crossing yields one enter
//!   and one exit whatever the batch boundaries; a position not newer than
//!   the last one processed for the vehicle (a resend, or one arriving out
//!   of order) changes nothing and yields nothing; invalid positions are
//!   ignored. The geofences are the tenant's current ones
//!   ([`GeofenceCache`], reloaded after every change).
//! - **Overspeed limit**: per vehicle, its `attributes.speed_limit_kmh`
//!   when that is a non-negative number, else none (no overspeed events),
//!   read from storage for every group, so an edit applies to the next
//!   batch.
//! - **`device_online`**: for a position (valid or not) newer than the
//!   newest one seen for the vehicle, when the vehicle has no previous
//!   position, or its previous one is more than [`OFFLINE_AFTER`]
//!   (10 minutes) older, or the vehicle is offline (a `device_offline`
//!   came after its last `device_online`). Positions older than the newest
//!   seen (late uploads) never yield it.
//! - **`device_offline`**: once per online period, when the vehicle's newest
//!   position becomes more than 10 minutes old. Found by the **offline
//!   sweep**, which runs in the writer every minute (and on demand:
//!   [`Ingest::sweep_offline`], `POST /internal/v1/sweeps/offline`). Its
//!   time is the moment the silence reached 10 minutes (newest position +
//!   10 minutes); it has no position. When a position arrives after a gap
//!   of more than 10 minutes before the sweep saw it (a bulk upload of
//!   buffered positions), the writer emits the missing `device_offline`
//!   (same time rule) before the `device_online`, so a vehicle's presence
//!   events always alternate.
//!
//! Where presence is kept: `vehicle_states.online` is true from a
//! `device_online` until the next `device_offline`, and `last_seen` is the
//! time of the newest position seen (valid or not); the sweep picks the
//! vehicles with `online` and `last_seen` older than 10 minutes, and sets
//! `online` false in the same transaction as their `device_offline`.
//!
//! Event times are the times of the positions behind them (device clocks),
//! not arrival times: a late upload lists among the events of its time. A
//! vehicle without a stored state (a first position, or positions stored
//! before events existed) starts from nothing: online, inside no geofence.
//! Positions of a vehicle deleted while its batch waited are stored as
//! before, and tracked for nothing. Deleting a vehicle or tenant drops its
//! in-memory state as well ([`Latest::forget_vehicle`],
//! [`Latest::forget_tenant`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, RwLock};
use tracing::Instrument;
use webhost_domain::{Attributes, EventId, Fix, Position, TenantId, VehicleId};
use webhost_geofence::{GeofenceIndex, Tracker, VehicleState};
use webhost_http::serve::Shutdown;
use webhost_storage::{
    CellStore, Event, EventType, IngestBatch, NewEvent, NewPosition, StorageError, StorageResult,
    VehicleTracking,
};

use crate::fence::Fence;
use crate::geofences::{FenceSnapshot, GeofenceCache};
use crate::live::Bus;
use crate::usage::Meter;

/// Rows one transaction may take; batches beyond it wait for the next one.
const MAX_GROUP_ROWS: usize = 50_000;
/// Batches that may wait for the writer before callers are told to retry.
const QUEUE: usize = 1_024;
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// A vehicle whose newest position is older than this is offline.
pub const OFFLINE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// How often the offline sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Vehicles one sweep handles at most; the rest wait for the next one.
const SWEEP_LIMIT: u32 = 10_000;

struct Job {
    rows: Vec<NewPosition>,
    done: oneshot::Sender<StorageResult<Vec<bool>>>,
}

enum Command {
    Store(Job),
    /// The offline sweep; `Some` when someone waits for the count.
    Sweep(Option<oneshot::Sender<StorageResult<usize>>>),
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full; retry shortly")]
    Overloaded,
    #[error("the cell is shutting down")]
    Stopped,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Command>,
    latest: Latest,
    geofences: GeofenceCache,
}

impl Ingest {
    /// Starts the writer and the sweeper on `tasks`. The writer ends once
    /// every handle is dropped (the server has drained its requests) and
    /// what was queued is committed; the sweeper ends when `tasks` is
    /// cancelled.
    pub(crate) fn start(
        store: Arc<dyn CellStore>,
        bus: Bus,
        meter: Meter,
        fence: Fence,
        tasks: &Shutdown,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let geofences = GeofenceCache::new(store.clone());
        let tracking = Tracking::default();
        let latest = Latest::new(store.clone(), tracking.clone(), geofences.clone());
        let writer = Writer {
            store,
            latest: latest.clone(),
            bus,
            geofences: geofences.clone(),
            tracking,
            meter,
            fence,
        };
        tasks.spawn(writer.run(receiver));
        tasks.spawn(sweeper(queue.downgrade(), tasks.wait()));
        Self {
            queue,
            latest,
            geofences,
        }
    }

    pub fn latest(&self) -> &Latest {
        &self.latest
    }

    /// The tenants' geofence indexes the writer uses.
    pub(crate) fn geofences(&self) -> &GeofenceCache {
        &self.geofences
    }

    async fn enqueue(&self, command: Command) -> Result<(), IngestError> {
        match tokio::time::timeout(ENQUEUE_TIMEOUT, self.queue.send(command)).await {
            Err(_) => Err(IngestError::Overloaded),
            Ok(Err(_)) => Err(IngestError::Stopped),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Stores `rows`; per row, whether it was new (false: already stored).
    pub async fn store(&self, rows: Vec<NewPosition>) -> Result<Vec<bool>, IngestError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        self.enqueue(Command::Store(Job { rows, done })).await?;
        Ok(answer.await.map_err(|_| IngestError::Stopped)??)
    }

    /// Runs the offline sweep now (after the batches already queued);
    /// returns how many `device_offline` events it emitted.
    pub async fn sweep_offline(&self) -> Result<usize, IngestError> {
        let (done, answer) = oneshot::channel();
        self.enqueue(Command::Sweep(Some(done))).await?;
        Ok(answer.await.map_err(|_| IngestError::Stopped)??)
    }
}

/// Asks the writer for an offline sweep every [`SWEEP_EVERY`]; stops with
/// the writer (it holds no strong handle on the queue).
async fn sweeper(queue: mpsc::WeakSender<Command>, stop: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stop => return,
        }
        let Some(queue) = queue.upgrade() else {
            return;
        };
        match queue.try_send(Command::Sweep(None)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Presence of a vehicle, for `device_online` / `device_offline`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Presence {
    /// Time of the newest position seen, valid or not.
    last_seen: Option<DateTime<Utc>>,
    /// After a `device_online`, until the next `device_offline`.
    online: bool,
}

struct TenantTracking {
    tracker: Tracker,
    presence: HashMap<VehicleId, Presence>,
    /// The geofence snapshot the tracker's states were trimmed for.
    fences_version: u64,
}

/// The tracking state of every loaded tenant: what storage holds, as of the
/// last commit. Only the writer changes it (the `forget_*` of [`Latest`]
/// drop entries, which are then reloaded from storage).
#[derive(Clone, Default)]
struct Tracking {
    tenants: Arc<Mutex<HashMap<TenantId, TenantTracking>>>,
}

impl Tracking {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, TenantTracking>> {
        self.tenants.lock().expect("tracking lock")
    }

    fn has(&self, tenant: TenantId) -> bool {
        self.lock().contains_key(&tenant)
    }

    fn insert_loaded(&self, tenant: TenantId, rows: Vec<VehicleTracking>) {
        let mut states = HashMap::with_capacity(rows.len());
        let mut presence = HashMap::with_capacity(rows.len());
        for row in rows {
            presence.insert(
                row.vehicle_id,
                Presence {
                    last_seen: row.last_seen,
                    online: row.online,
                },
            );
            states.insert(row.vehicle_id, row.state);
        }
        self.lock().entry(tenant).or_insert(TenantTracking {
            tracker: Tracker::with_states(states),
            presence,
            // No snapshot has version 0: the first use trims the states.
            fences_version: 0,
        });
    }

    /// Copies of the vehicles' states, trimmed to the current geofences.
    fn current(
        &self,
        tenant: TenantId,
        fences: &FenceSnapshot,
        vehicles: &[VehicleId],
    ) -> HashMap<VehicleId, (Option<VehicleState>, Presence)> {
        let mut tenants = self.lock();
        let Some(entry) = tenants.get_mut(&tenant) else {
            return HashMap::new();
        };
        if entry.fences_version != fences.version {
            entry.tracker.retain_geofences(&fences.index);
            entry.fences_version = fences.version;
        }
        vehicles
            .iter()
            .map(|v| {
                (
                    *v,
                    (
                        entry.tracker.state(*v).cloned(),
                        entry.presence.get(v).copied().unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    fn get(&self, tenant: TenantId, vehicle: VehicleId) -> Option<(VehicleState, Presence)> {
        let tenants = self.lock();
        let entry = tenants.get(&tenant)?;
        let presence = entry.presence.get(&vehicle).copied()?;
        Some((
            entry.tracker.state(vehicle).cloned().unwrap_or_default(),
            presence,
        ))
    }

    /// After a commit: the committed states become the current ones.
    /// Tenants forgotten meanwhile reload them from storage on next use.
    fn apply(&self, states: &[VehicleTracking]) {
        let mut tenants = self.lock();
        for row in states {
            if let Some(entry) = tenants.get_mut(&row.tenant_id) {
                entry.tracker.insert(row.vehicle_id, row.state.clone());
                entry.presence.insert(
                    row.vehicle_id,
                    Presence {
                        last_seen: row.last_seen,
                        online: row.online,
                    },
                );
            }
        }
    }

    fn forget_vehicle(&self, tenant: TenantId, vehicle: VehicleId) {
        if let Some(entry) = self.lock().get_mut(&tenant) {
            entry.tracker.remove(vehicle);
            entry.presence.remove(&vehicle);
        }
    }

    fn forget_tenant(&self, tenant: TenantId) {
        self.lock().remove(&tenant);
    }
}

/// The vehicle's overspeed limit: `attributes.speed_limit_kmh`, when it is
/// a non-negative number.
fn speed_limit(attributes: &Attributes) -> Option<f64> {
    attributes
        .as_map()
        .get("speed_limit_kmh")
        .and_then(serde_json::Value::as_f64)
        .filter(|limit| limit.is_finite() && *limit >= 0.0)
}

/// A presence event found: its type, its time, the position behind it.
type PresenceEvent<'a> = (EventType, DateTime<Utc>, Option<&'a Fix>);

/// Presence events of one vehicle's new positions (see the module docs),
/// in time order, and the presence after them.
fn presence_events(mut presence: Presence, fixes: &[Fix]) -> (Vec<PresenceEvent<'_>>, Presence) {
    let mut sorted: Vec<&Fix> = fixes.iter().collect();
    // Stable: of positions with the same time, the first given is the one
    // stored.
    sorted.sort_by_key(|f| f.time);
    let mut events = Vec::new();
    for fix in sorted {
        if presence.last_seen.is_some_and(|last| fix.time <= last) {
            continue;
        }
        match presence.last_seen {
            Some(last) if fix.time - last > OFFLINE_AFTER => {
                if presence.online {
                    events.push((EventType::DeviceOffline, last + OFFLINE_AFTER, None));
                }
                events.push((EventType::DeviceOnline, fix.time, Some(fix)));
                presence.online = true;
            }
            _ if !presence.online => {
                events.push((EventType::DeviceOnline, fix.time, Some(fix)));
                presence.online = true;
            }
            _ => {}
        }
        presence.last_seen = Some(fix.time);
    }
    (events, presence)
}

/// Events of one vehicle's new positions and its tracking state after them,
/// from copies of its state: nothing shared changes here.
fn track_vehicle(
    tenant: TenantId,
    vehicle: VehicleId,
    state: Option<VehicleState>,
    presence: Presence,
    fixes: &[Fix],
    index: &GeofenceIndex,
    limit: Option<f64>,
) -> (Vec<NewEvent>, VehicleTracking) {
    let mut tracker = Tracker::with_states(state.map(|s| (vehicle, s)).into_iter().collect());
    let detected = tracker.process(index, vehicle, fixes, limit);
    let (presence_found, presence) = presence_events(presence, fixes);

    let event = |kind, geofence_id, time, fix: Option<&Fix>| Event {
        id: EventId::new(),
        kind,
        vehicle_id: vehicle,
        geofence_id,
        time,
        position: fix.map(|fix| Position {
            vehicle_id: vehicle,
            fix: fix.clone(),
        }),
    };
    // Presence first at equal times (a vehicle comes online, then enters);
    // the tracker's own order otherwise (the sort is stable).
    let mut ordered: Vec<(DateTime<Utc>, u8, Event)> = presence_found
        .into_iter()
        .map(|(kind, time, fix)| (time, 0, event(kind, None, time, fix)))
        .chain(detected.iter().map(|d| {
            (
                d.time,
                1,
                event(d.kind.into(), d.geofence_id, d.time, Some(&d.fix)),
            )
        }))
        .collect();
    ordered.sort_by_key(|(time, rank, _)| (*time, *rank));
    // Ids are time-ordered: assign them in event order, so that listing by
    // (time, id) keeps it.
    let events = ordered
        .into_iter()
        .map(|(_, _, mut e)| {
            e.id = EventId::new();
            NewEvent {
                tenant_id: tenant,
                event: e,
            }
        })
        .collect();
    let tracking = VehicleTracking {
        tenant_id: tenant,
        vehicle_id: vehicle,
        state: tracker.into_states().remove(&vehicle).unwrap_or_default(),
        last_seen: presence.last_seen,
        online: presence.online,
    };
    (events, tracking)
}

struct Writer {
    store: Arc<dyn CellStore>,
    latest: Latest,
    bus: Bus,
    geofences: GeofenceCache,
    tracking: Tracking,
    meter: Meter,
    /// The sweep writes nothing for a fenced tenant (fence.rs).
    fence: Fence,
}

/// What one group commits besides its positions.
struct Found {
    events: Vec<NewEvent>,
    states: Vec<VehicleTracking>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::Receiver<Command>) {
        let mut pending: Option<Command> = None;
        loop {
            let command = match pending.take() {
                Some(command) => command,
                None => match receiver.recv().await {
                    Some(command) => command,
                    None => {
                        // Every handle is gone: no request counts after this.
                        self.meter.flush(&*self.store).await;
                        return;
                    }
                },
            };
            match command {
                Command::Sweep(done) => {
                    let result = self.sweep(Utc::now()).await;
                    if let Err(err) = &result {
                        tracing::error!(error = %err, "offline sweep failed; retried next minute");
                    }
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
                Command::Store(first) => {
                    let mut rows = first.rows.len();
                    let mut jobs = vec![first];
                    while rows < MAX_GROUP_ROWS {
                        match receiver.try_recv() {
                            Ok(Command::Store(job)) => {
                                rows += job.rows.len();
                                jobs.push(job);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let span = tracing::debug_span!("group_commit", batches = jobs.len(), rows);
                    self.commit_group(jobs).instrument(span).await;
                }
            }
        }
    }

    async fn commit_group(&self, jobs: Vec<Job>) {
        let all: Vec<NewPosition> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
        match self.store_group(&all).await {
            Ok((stored, found)) => {
                self.tracking.apply(&found.states);
                self.latest.advance(&all, &stored).await;
                self.meter.ingested(&all, &stored);
                publish(&self.bus, &all, &stored, &found.events);
                let mut offset = 0;
                for job in jobs {
                    let n = job.rows.len();
                    let _ = job.done.send(Ok(stored[offset..offset + n].to_vec()));
                    offset += n;
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "group commit failed; nothing acknowledged");
                let message = err.to_string();
                for job in jobs {
                    let _ = job.done.send(Err(StorageError::Unexpected(anyhow::anyhow!(
                        "storing positions failed: {message}"
                    ))));
                }
            }
        }
    }

    async fn store_group(&self, rows: &[NewPosition]) -> StorageResult<(Vec<bool>, Found)> {
        let found = self.detect(rows).await?;
        let jobs = crate::webhooks::delivery_jobs(&*self.store, &found.events, Utc::now()).await?;
        let stored = self
            .store
            .insert_positions(IngestBatch {
                positions: rows,
                events: &found.events,
                states: &found.states,
                jobs: &jobs,
            })
            .await?;
        Ok((stored, found))
    }

    async fn ensure_loaded(&self, tenant: TenantId) -> StorageResult<()> {
        if !self.tracking.has(tenant) {
            let rows = self.store.vehicle_tracking(tenant).await?;
            self.tracking.insert_loaded(tenant, rows);
        }
        Ok(())
    }

    /// The events of a group and the states after them, on copies.
    async fn detect(&self, rows: &[NewPosition]) -> StorageResult<Found> {
        let mut by_tenant: HashMap<TenantId, HashMap<VehicleId, Vec<Fix>>> = HashMap::new();
        for row in rows {
            by_tenant
                .entry(row.tenant_id)
                .or_default()
                .entry(row.position.vehicle_id)
                .or_default()
                .push(row.position.fix.clone());
        }
        let mut found = Found {
            events: Vec::new(),
            states: Vec::new(),
        };
        for (tenant, vehicles) in by_tenant {
            let fences = self.geofences.snapshot(tenant).await?;
            self.ensure_loaded(tenant).await?;
            let ids: Vec<VehicleId> = vehicles.keys().copied().collect();
            // Vehicles deleted meanwhile are left out: their positions are
            // stored as before, nothing is tracked for them.
            let limits: HashMap<VehicleId, Option<f64>> = self
                .store
                .vehicles_with_ids(tenant, &ids)
                .await?
                .into_iter()
                .map(|v| (v.id, speed_limit(&v.attributes)))
                .collect();
            let mut current = self.tracking.current(tenant, &fences, &ids);
            for (vehicle, fixes) in vehicles {
                let Some(limit) = limits.get(&vehicle) else {
                    continue;
                };
                let (state, presence) = current.remove(&vehicle).unwrap_or_default();
                let (events, tracking) = track_vehicle(
                    tenant,
                    vehicle,
                    state,
                    presence,
                    &fixes,
                    &fences.index,
                    *limit,
                );
                found.events.extend(events);
                found.states.push(tracking);
            }
        }
        Ok(found)
    }

    /// Emits `device_offline` for the vehicles silent for more than
    /// [`OFFLINE_AFTER`] at `now` that are still online.
    async fn sweep(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        let cutoff = now - OFFLINE_AFTER;
        // Held until the commit, so a fence raised meanwhile waits for it.
        let _permit = self.fence.permit().await?;
        let fenced = self.fence.fenced().await?;
        let mut silent = self.store.silent_vehicles(cutoff, SWEEP_LIMIT).await?;
        silent.retain(|vehicle| !fenced.contains(&vehicle.tenant_id));
        let mut found = Found {
            events: Vec::new(),
            states: Vec::new(),
        };
        for vehicle in silent {
            self.ensure_loaded(vehicle.tenant_id).await?;
            // Memory holds what storage holds as of the last commit.
            let Some((state, presence)) = self.tracking.get(vehicle.tenant_id, vehicle.vehicle_id)
            else {
                continue;
            };
            let Some(last) = presence
                .last_seen
                .filter(|last| presence.online && *last < cutoff)
            else {
                continue;
            };
            found.events.push(NewEvent {
                tenant_id: vehicle.tenant_id,
                event: Event {
                    id: EventId::new(),
                    kind: EventType::DeviceOffline,
                    vehicle_id: vehicle.vehicle_id,
                    geofence_id: None,
                    time: last + OFFLINE_AFTER,
                    position: None,
                },
            });
            found.states.push(VehicleTracking {
                tenant_id: vehicle.tenant_id,
                vehicle_id: vehicle.vehicle_id,
                state,
                last_seen: Some(last),
                online: false,
            });
        }
        if found.events.is_empty() {
            return Ok(0);
        }
        let jobs = crate::webhooks::delivery_jobs(&*self.store, &found.events, now).await?;
        self.store
            .insert_positions(IngestBatch {
                events: &found.events,
                states: &found.states,
                jobs: &jobs,
                ..IngestBatch::default()
            })
            .await?;
        self.tracking.apply(&found.states);
        publish(&self.bus, &[], &[], &found.events);
        Ok(found.events.len())
    }
}

/// Sends what a commit stored to the tenants' live subscribers: one message
/// per tenant and commit, `{"positions": [...]}` (newly stored positions),
/// `{"events": [...]}` (the events found), or both keys when the commit had
/// both, so a subscriber sees a position and the events it triggered
/// together.
fn publish(bus: &Bus, rows: &[NewPosition], stored: &[bool], events: &[NewEvent]) {
    #[derive(Default, serde::Serialize)]
    struct Message<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        positions: Vec<&'a Position>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        events: Vec<&'a Event>,
    }
    let mut by_tenant: HashMap<TenantId, Message<'_>> = HashMap::new();
    let mut listening: HashMap<TenantId, bool> = HashMap::new();
    let mut listens = |tenant: TenantId| {
        *listening
            .entry(tenant)
            .or_insert_with(|| bus.has_subscribers(tenant))
    };
    for (row, _) in rows.iter().zip(stored).filter(|(_, s)| **s) {
        if listens(row.tenant_id) {
            by_tenant
                .entry(row.tenant_id)
                .or_default()
                .positions
                .push(&row.position);
        }
    }
    for row in events {
        if listens(row.tenant_id) {
            by_tenant
                .entry(row.tenant_id)
                .or_default()
                .events
                .push(&row.event);
        }
    }
    for (tenant, message) in by_tenant {
        match serde_json::to_string(&message) {
            Ok(text) => bus.publish(tenant, text.into()),
            Err(err) => tracing::error!(error = %err, "serializing a live message"),
        }
    }
}

type TenantLatest = Arc<RwLock<HashMap<VehicleId, Position>>>;

/// Latest valid position per vehicle, per tenant, loaded from storage on
/// first use and advanced by the writer after each commit.
#[derive(Clone)]
pub struct Latest {
    store: Arc<dyn CellStore>,
    tenants: Arc<RwLock<HashMap<TenantId, TenantLatest>>>,
    /// Also forgotten with a vehicle or tenant.
    tracking: Tracking,
    geofences: GeofenceCache,
}

impl Latest {
    fn new(store: Arc<dyn CellStore>, tracking: Tracking, geofences: GeofenceCache) -> Self {
        Self {
            store,
            tenants: Arc::default(),
            tracking,
            geofences,
        }
    }

    async fn tenant(&self, tenant: TenantId) -> StorageResult<TenantLatest> {
        if let Some(found) = self.tenants.read().await.get(&tenant) {
            return Ok(found.clone());
        }
        // Loaded under the write lock, so the writer cannot advance a map
        // that a concurrent load would then overwrite with older data.
        let mut tenants = self.tenants.write().await;
        if let Some(found) = tenants.get(&tenant) {
            return Ok(found.clone());
        }
        let loaded: HashMap<VehicleId, Position> = self
            .store
            .latest_positions(tenant)
            .await?
            .into_iter()
            .map(|p| (p.vehicle_id, p))
            .collect();
        let entry: TenantLatest = Arc::new(RwLock::new(loaded));
        tenants.insert(tenant, entry.clone());
        Ok(entry)
    }

    /// The tenant's latest positions, ordered by vehicle.
    pub async fn get(&self, tenant: TenantId) -> StorageResult<Vec<Position>> {
        let entry = self.tenant(tenant).await?;
        let map = entry.read().await;
        let mut positions: Vec<Position> = map.values().cloned().collect();
        positions.sort_by_key(|p| p.vehicle_id);
        Ok(positions)
    }

    async fn advance(&self, rows: &[NewPosition], stored: &[bool]) {
        let tenants = self.tenants.read().await;
        for row in webhost_storage::newest_valid_per_vehicle(rows, stored) {
            // Tenants not loaded yet will read the committed rows on load.
            if let Some(entry) = tenants.get(&row.tenant_id) {
                let mut map = entry.write().await;
                let newer = map
                    .get(&row.position.vehicle_id)
                    .is_none_or(|current| row.position.fix.time > current.fix.time);
                if newer {
                    map.insert(row.position.vehicle_id, row.position.clone());
                }
            }
        }
    }

    /// Forgets everything held in memory about a deleted vehicle: its
    /// latest position and its event tracking state.
    pub async fn forget_vehicle(&self, tenant: TenantId, vehicle: VehicleId) {
        self.tracking.forget_vehicle(tenant, vehicle);
        if let Some(entry) = self.tenants.read().await.get(&tenant) {
            entry.write().await.remove(&vehicle);
        }
    }

    /// Forgets everything held in memory about a deleted tenant: latest
    /// positions, event tracking states and geofences.
    pub async fn forget_tenant(&self, tenant: TenantId) {
        self.tracking.forget_tenant(tenant);
        self.geofences.forget(tenant);
        self.tenants.write().await.remove(&tenant);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_732_190_400, 0).single().expect("time")
            + chrono::TimeDelta::minutes(minutes)
    }

    fn fix(minutes: i64) -> Fix {
        Fix {
            time: at(minutes),
            lat: 1.0,
            lon: 2.0,
            speed: None,
            heading: None,
            altitude: None,
            accuracy: None,
            valid: true,
            attributes: Attributes::default(),
        }
    }

    fn kinds(found: &[PresenceEvent<'_>]) -> Vec<(EventType, DateTime<Utc>)> {
        found.iter().map(|(k, t, _)| (*k, *t)).collect()
    }

    #[test]
    fn first_position_and_gaps_bring_a_vehicle_online() {
        let fixes = [fix(0), fix(5), fix(14), fix(30), fix(31)];
        let (found, after) = presence_events(Presence::default(), &fixes);
        assert_eq!(
            kinds(&found),
            [
                (EventType::DeviceOnline, at(0)),
                (EventType::DeviceOffline, at(24)),
                (EventType::DeviceOnline, at(30)),
            ],
            "online first; a gap of more than 10 minutes is offline then online"
        );
        assert_eq!(
            after,
            Presence {
                last_seen: Some(at(31)),
                online: true
            }
        );
        // Exactly 10 minutes is not a gap.
        let later = [fix(41)];
        let (found, _) = presence_events(after, &later);
        assert!(found.is_empty());
    }

    #[test]
    fn old_duplicate_and_invalid_positions() {
        let seen = Presence {
            last_seen: Some(at(20)),
            online: true,
        };
        let old = [fix(20), fix(3)];
        let (found, after) = presence_events(seen, &old);
        assert!(
            found.is_empty(),
            "a resend and a late position change nothing"
        );
        assert_eq!(after, seen);

        // Offline (the sweep ran): the next newer position, even invalid and
        // within 10 minutes, brings it back.
        let offline = Presence {
            online: false,
            ..seen
        };
        let mut invalid = fix(25);
        invalid.valid = false;
        let invalid = [invalid];
        let (found, after) = presence_events(offline, &invalid);
        assert_eq!(kinds(&found), [(EventType::DeviceOnline, at(25))]);
        assert!(after.online);
    }

    #[test]
    fn speed_limits_come_from_the_vehicle_attributes() {
        let attrs = |v| Attributes::parse(v).expect("attributes");
        assert_eq!(
            speed_limit(&attrs(json!({"speed_limit_kmh": 90}))),
            Some(90.0)
        );
        assert_eq!(
            speed_limit(&attrs(json!({"speed_limit_kmh": 80.5}))),
            Some(80.5)
        );
        for none in [
            json!({}),
            json!({"speed_limit_kmh": "90"}),
            json!({"speed_limit_kmh": -5}),
            json!({"speed_limit_kmh": null}),
        ] {
            assert_eq!(speed_limit(&attrs(none.clone())), None, "{none}");
        }
    }

    #[test]
    fn a_vehicle_comes_online_before_it_enters() {
        let fence = webhost_domain::GeofenceId::new();
        let index = GeofenceIndex::new(vec![webhost_geofence::Geofence {
            id: fence,
            shape: webhost_geofence::Shape::circle(1.0, 2.0, 100.0).expect("circle"),
        }]);
        let mut fast = fix(0);
        fast.speed = Some(120.0);
        let tenant = TenantId::new();
        let vehicle = VehicleId::new();
        let (events, tracking) = track_vehicle(
            tenant,
            vehicle,
            None,
            Presence::default(),
            &[fast],
            &index,
            Some(100.0),
        );
        let kinds: Vec<EventType> = events.iter().map(|e| e.event.kind).collect();
        assert_eq!(
            kinds,
            [
                EventType::DeviceOnline,
                EventType::GeofenceEnter,
                EventType::Overspeed
            ]
        );
        let ids: Vec<EventId> = events.iter().map(|e| e.event.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids follow the event order");
        assert_eq!(events[1].event.geofence_id, Some(fence));
        assert!(tracking.online);
        assert_eq!(tracking.last_seen, Some(at(0)));
        assert!(tracking.state.inside().contains(&fence));
    }
}
