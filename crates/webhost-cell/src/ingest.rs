//! Group commit: every position write in the cell goes through one writer
//! task, which takes all batches waiting at that moment and stores them in a
//! single transaction (one fsync / one round trip for many requests), then
//! answers each request. A request is acknowledged only after its commit.
//!
//! The writer also keeps the in-memory latest positions current, so
//! `GET /api/v1/positions/latest` never touches storage once warm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, RwLock};
use webhost_domain::{Position, TenantId, VehicleId};
use webhost_storage::{CellStore, NewPosition, StorageError, StorageResult};

use crate::live::Bus;

/// Rows one transaction may take; batches beyond it wait for the next one.
const MAX_GROUP_ROWS: usize = 50_000;
/// Batches that may wait for the writer before callers are told to retry.
const QUEUE: usize = 1_024;
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

struct Job {
    rows: Vec<NewPosition>,
    done: oneshot::Sender<StorageResult<Vec<bool>>>,
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
    queue: mpsc::Sender<Job>,
    latest: Latest,
}

impl Ingest {
    pub fn start(store: Arc<dyn CellStore>, bus: Bus) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let latest = Latest::new(store.clone());
        tokio::spawn(writer(store, receiver, latest.clone(), bus));
        Self { queue, latest }
    }

    pub fn latest(&self) -> &Latest {
        &self.latest
    }

    /// Stores `rows`; per row, whether it was new (false: already stored).
    pub async fn store(&self, rows: Vec<NewPosition>) -> Result<Vec<bool>, IngestError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        match tokio::time::timeout(ENQUEUE_TIMEOUT, self.queue.send(Job { rows, done })).await {
            Err(_) => return Err(IngestError::Overloaded),
            Ok(Err(_)) => return Err(IngestError::Stopped),
            Ok(Ok(())) => {}
        }
        Ok(answer.await.map_err(|_| IngestError::Stopped)??)
    }
}

async fn writer(
    store: Arc<dyn CellStore>,
    mut receiver: mpsc::Receiver<Job>,
    latest: Latest,
    bus: Bus,
) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        let mut rows: usize = jobs[0].rows.len();
        while rows < MAX_GROUP_ROWS {
            match receiver.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let span = tracing::debug_span!("group_commit", batches = jobs.len(), rows);
        let _enter = span.enter();
        let all: Vec<NewPosition> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
        match store.insert_positions(&all).await {
            Ok(stored) => {
                latest.advance(&all, &stored).await;
                publish(&bus, &all, &stored);
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
}

/// Sends what was newly stored to the tenants' live subscribers.
fn publish(bus: &Bus, rows: &[NewPosition], stored: &[bool]) {
    let mut by_tenant: HashMap<TenantId, Vec<&Position>> = HashMap::new();
    for (row, _) in rows.iter().zip(stored).filter(|(_, s)| **s) {
        if bus.has_subscribers(row.tenant_id) {
            by_tenant
                .entry(row.tenant_id)
                .or_default()
                .push(&row.position);
        }
    }
    for (tenant, positions) in by_tenant {
        match serde_json::to_string(&serde_json::json!({ "positions": positions })) {
            Ok(text) => bus.publish(tenant, text.into()),
            Err(err) => tracing::error!(error = %err, "serializing live positions"),
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
}

impl Latest {
    fn new(store: Arc<dyn CellStore>) -> Self {
        Self {
            store,
            tenants: Arc::default(),
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

    pub async fn forget_vehicle(&self, tenant: TenantId, vehicle: VehicleId) {
        if let Some(entry) = self.tenants.read().await.get(&tenant) {
            entry.write().await.remove(&vehicle);
        }
    }

    pub async fn forget_tenant(&self, tenant: TenantId) {
        self.tenants.write().await.remove(&tenant);
    }
}
