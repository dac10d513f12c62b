//! Coalesces the device fixes bound for one cell into one internal call.
//!
//! Each cell gets a queue and [`Limits::lanes`] tasks that take turns
//! draining it: a lane takes everything waiting (up to one call's worth of
//! fixes), posts it as one `POST /internal/v1/device-positions/batch`, and
//! hands every submitter its own item's answer. Fixes that arrive while the
//! call is in flight wait for the next one. So under load one credential,
//! one HTTP exchange and one group-commit submission serve many device
//! requests, and when idle a lone fix goes out at once.
//!
//! Guarantees kept:
//! - an item is answered only with what the cell said about *that* item,
//!   after the call returned, i.e. after the cell's commit; a failed call (or
//!   an answer that does not match the items) fails every item in it;
//! - the fixes queued or in flight for a cell are bounded
//!   ([`Limits::queued_fixes`]); past it a submission is refused at once
//!   ([`BatchError::Busy`], the device is told to retry), never dropped;
//! - an idle cell's queue and lanes go away; a submission that meets a
//!   queue while it closes is put on a fresh one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use webhost_contract::DeviceIngestAnswer;
use webhost_domain::TenantId;
use webhost_http::client::{InternalClient, InternalRequest};
use webhost_protocols::Fix;

use super::cache::CellTarget;

/// The cell endpoint taking several tenants' fixes in one call.
const BATCH_PATH: &str = webhost_contract::paths::DEVICE_POSITIONS_BATCH;

/// How a cell is called with a batch: over HTTP in the edge, a fake in tests.
pub(crate) trait CellCalls: Send + Sync + 'static {
    /// One answer per item, in order, once the cell has stored what it took.
    fn post_batch(
        &self,
        cell: &CellTarget,
        items: &[(TenantId, &[Fix])],
    ) -> impl Future<Output = anyhow::Result<Vec<DeviceIngestAnswer>>> + Send;
}

impl CellCalls for InternalClient {
    async fn post_batch(
        &self,
        cell: &CellTarget,
        items: &[(TenantId, &[Fix])],
    ) -> anyhow::Result<Vec<DeviceIngestAnswer>> {
        // No tenant in the credential: the items name theirs, and the cell
        // checks each fix against its own tenant's vehicles.
        self.call(
            InternalRequest {
                method: Method::POST,
                base_url: &cell.url,
                path: BATCH_PATH,
                audience: &cell.audience,
                tenant: None,
                subject: None,
            },
            Some(&items),
        )
        .await?
        .success()?
        .json()
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Calls in flight per cell.
    pub lanes: usize,
    /// Fixes one call carries at most.
    pub call_fixes: usize,
    /// Fixes queued or in flight per cell; more are refused.
    pub queued_fixes: usize,
    /// A queue that stays empty this long is closed.
    pub idle: Duration,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        // One call at a time per cell: the cell's writer commits one group
        // at a time anyway, and in `webhost bench osmand` two or four lanes
        // were no faster (smaller calls, more CPU per fix).
        lanes: 1,
        call_fixes: DeviceIngestAnswer::MAX_FIXES,
        queued_fixes: 10_000,
        idle: Duration::from_secs(60),
    };
}

/// Why a submission has no answer from the cell.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("too many fixes are waiting for this cell")]
    Busy,
    #[error("{} fixes are more than one call carries", .0)]
    TooLarge(usize),
    #[error("posting the fixes to the cell failed: {0:#}")]
    Failed(Arc<anyhow::Error>),
    #[error("the fixes were abandoned before the cell answered")]
    Stopped,
}

struct Item {
    tenant: TenantId,
    fixes: Arc<[Fix]>,
    reply: oneshot::Sender<Result<DeviceIngestAnswer, BatchError>>,
    /// This item's share of the queue bound, given back when it is answered.
    _room: OwnedSemaphorePermit,
}

#[derive(Clone)]
struct Queue {
    /// Tells this queue from its successor for the same cell.
    id: u64,
    sender: mpsc::Sender<Item>,
    room: Arc<Semaphore>,
}

type Queues = Arc<Mutex<HashMap<Arc<CellTarget>, Queue>>>;

pub(crate) struct Batches<C> {
    calls: Arc<C>,
    limits: Limits,
    queues: Queues,
    next_id: AtomicU64,
}

impl<C: CellCalls> Batches<C> {
    pub fn new(calls: C, limits: Limits) -> Self {
        Self {
            calls: Arc::new(calls),
            limits,
            queues: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Posts `fixes` (one device's) to `cell` for `tenant` with whatever
    /// else is waiting for that cell; the cell's answer for these fixes.
    pub async fn submit(
        &self,
        cell: &Arc<CellTarget>,
        tenant: TenantId,
        fixes: Arc<[Fix]>,
    ) -> Result<DeviceIngestAnswer, BatchError> {
        if fixes.len() > self.limits.call_fixes {
            return Err(BatchError::TooLarge(fixes.len()));
        }
        // An empty item still takes a place in the queue.
        let weight = u32::try_from(fixes.len().max(1)).map_err(|_| BatchError::Busy)?;
        let (reply, answer) = oneshot::channel();
        let mut item = (tenant, fixes, reply);
        // A queue closing for idleness refuses at most once; its successor
        // is fresh.
        for _ in 0..2 {
            let queue = self.queue(cell);
            let room = queue
                .room
                .clone()
                .try_acquire_many_owned(weight)
                .map_err(|_| BatchError::Busy)?;
            let (tenant, fixes, reply) = item;
            let sending = Item {
                tenant,
                fixes,
                reply,
                _room: room,
            };
            match queue.sender.try_send(sending) {
                Ok(()) => return answer.await.unwrap_or(Err(BatchError::Stopped)),
                // Unreachable while the channel holds as many items as the
                // semaphore has permits; refused rather than waited for.
                Err(mpsc::error::TrySendError::Full(_)) => return Err(BatchError::Busy),
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    retire(&self.queues, cell, queue.id);
                    item = (back.tenant, back.fixes, back.reply);
                }
            }
        }
        Err(BatchError::Stopped)
    }

    /// The cell's open queue, started if there is none.
    fn queue(&self, cell: &Arc<CellTarget>) -> Queue {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = queues.get(cell) {
            return queue.clone();
        }
        // Every item weighs at least one permit, so the channel never holds
        // more items than this.
        let (sender, receiver) = mpsc::channel(self.limits.queued_fixes.max(1));
        let queue = Queue {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            room: Arc::new(Semaphore::new(self.limits.queued_fixes.max(1))),
        };
        let lane = Arc::new(tokio::sync::Mutex::new(Lane {
            receiver,
            carry: None,
        }));
        for _ in 0..self.limits.lanes.max(1) {
            tokio::spawn(run_lane(
                self.calls.clone(),
                cell.clone(),
                lane.clone(),
                self.queues.clone(),
                queue.id,
                self.limits,
            ));
        }
        queues.insert(cell.clone(), queue.clone());
        queue
    }

    #[cfg(test)]
    fn waiting_fixes(&self, cell: &Arc<CellTarget>) -> usize {
        let queues = self.queues.lock().expect("lock");
        queues.get(cell).map_or(0, |q| {
            self.limits.queued_fixes.max(1) - q.room.available_permits()
        })
    }
}

/// Removes `cell`'s queue `id` from the map (not a successor).
fn retire(queues: &Queues, cell: &Arc<CellTarget>, id: u64) {
    let mut queues = queues
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if queues.get(cell).is_some_and(|queue| queue.id == id) {
        queues.remove(cell);
    }
}

/// The receiving side of a queue, shared by its lanes: the lane holding it
/// is the one collecting the next call.
struct Lane {
    receiver: mpsc::Receiver<Item>,
    /// An item that did not fit in the previous call; first in the next.
    carry: Option<Item>,
}

enum Collected {
    Batch(Vec<Item>, usize),
    Idle,
    Closed,
}

impl Lane {
    async fn collect(&mut self, limits: &Limits) -> Collected {
        let first = match self.carry.take() {
            Some(item) => item,
            None => match tokio::time::timeout(limits.idle, self.receiver.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => return Collected::Closed,
                Err(_) => return Collected::Idle,
            },
        };
        let mut fixes = first.fixes.len();
        let mut batch = vec![first];
        while fixes < limits.call_fixes {
            let Ok(item) = self.receiver.try_recv() else {
                break;
            };
            if fixes + item.fixes.len() > limits.call_fixes {
                self.carry = Some(item);
                break;
            }
            fixes += item.fixes.len();
            batch.push(item);
        }
        Collected::Batch(batch, fixes)
    }
}

async fn run_lane<C: CellCalls>(
    calls: Arc<C>,
    cell: Arc<CellTarget>,
    lane: Arc<tokio::sync::Mutex<Lane>>,
    queues: Queues,
    id: u64,
    limits: Limits,
) {
    loop {
        let collected = lane.lock().await.collect(&limits).await;
        match collected {
            Collected::Batch(batch, fixes) => {
                let span = tracing::info_span!(
                    "device_batch",
                    cell = %cell.id,
                    items = batch.len(),
                    fixes,
                );
                post(&*calls, &cell, batch).instrument(span).await;
            }
            Collected::Idle => {
                // Out of the map first, so new submissions start a fresh
                // queue; then closed, so one holding this queue is refused
                // and resubmits. What is already queued is still posted.
                retire(&queues, &cell, id);
                lane.lock().await.receiver.close();
            }
            Collected::Closed => return,
        }
    }
}

async fn post<C: CellCalls>(calls: &C, cell: &CellTarget, batch: Vec<Item>) {
    let items: Vec<(TenantId, &[Fix])> = batch
        .iter()
        .map(|item| (item.tenant, &*item.fixes))
        .collect();
    let result = calls.post_batch(cell, &items).await;
    drop(items);
    let answers = match result {
        Ok(answers) if answers.len() == batch.len() => answers,
        Ok(answers) => {
            let err = anyhow::anyhow!(
                "the cell answered {} items of {}",
                answers.len(),
                batch.len()
            );
            return fail(batch, err);
        }
        Err(err) => return fail(batch, err),
    };
    for (item, answer) in batch.into_iter().zip(answers) {
        // A submitter that went away (its device hung up) needs no answer.
        let _ = item.reply.send(Ok(answer));
    }
}

fn fail(batch: Vec<Item>, err: anyhow::Error) {
    tracing::warn!(
        error = format!("{err:#}"),
        items = batch.len(),
        "device batch failed"
    );
    let err = Arc::new(err);
    for item in batch {
        let _ = item.reply.send(Err(BatchError::Failed(err.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use webhost_domain::CellId;

    /// A cell that records each call's items, answers each item with its
    /// first fix's latitude as `accepted`, and can be held or made to fail.
    /// One call as the fake saw it: per item, the tenant and the devices.
    type Call = Vec<(TenantId, Vec<String>)>;

    struct FakeCell {
        calls: Mutex<Vec<Call>>,
        /// While set, each call waits for one `release` permit.
        hold: Mutex<bool>,
        release: Semaphore,
        /// Calls (by number, from 0) that fail.
        failing: Mutex<Vec<usize>>,
        /// Calls that answer one item too few.
        short: Mutex<Vec<usize>>,
    }

    impl CellCalls for Arc<FakeCell> {
        async fn post_batch(
            &self,
            _: &CellTarget,
            items: &[(TenantId, &[Fix])],
        ) -> anyhow::Result<Vec<DeviceIngestAnswer>> {
            let number = {
                let mut calls = self.calls.lock().expect("lock");
                calls.push(
                    items
                        .iter()
                        .map(|(t, f)| (*t, f.iter().map(|f| f.device_id.clone()).collect()))
                        .collect(),
                );
                calls.len() - 1
            };
            if *self.hold.lock().expect("lock") {
                self.release.acquire().await.expect("open").forget();
            }
            if self.failing.lock().expect("lock").contains(&number) {
                anyhow::bail!("cell on fire");
            }
            let mut answers: Vec<DeviceIngestAnswer> = items
                .iter()
                .map(|(_, fixes)| DeviceIngestAnswer {
                    accepted: fixes.first().map_or(0, |f| f.lat as usize),
                    ..DeviceIngestAnswer::default()
                })
                .collect();
            if self.short.lock().expect("lock").contains(&number) {
                answers.pop();
            }
            Ok(answers)
        }
    }

    fn fixes(device: &str, marker: u8, count: usize) -> Arc<[Fix]> {
        (0..count)
            .map(|_| Fix {
                device_id: device.into(),
                time: Utc::now(),
                lat: f64::from(marker),
                lon: 0.0,
                speed_kmh: None,
                heading: None,
                altitude: None,
                accuracy: None,
                valid: true,
                attributes: serde_json::Map::new(),
            })
            .collect()
    }

    fn cell() -> Arc<CellTarget> {
        Arc::new(CellTarget::new(CellId::new(), "http://cell".into()))
    }

    fn setup(limits: Limits) -> (Arc<FakeCell>, Arc<Batches<Arc<FakeCell>>>) {
        let fake = Arc::new(FakeCell {
            calls: Mutex::default(),
            hold: Mutex::new(true),
            release: Semaphore::new(0),
            failing: Mutex::default(),
            short: Mutex::default(),
        });
        (fake.clone(), Arc::new(Batches::new(fake, limits)))
    }

    const LIMITS: Limits = Limits {
        lanes: 1,
        call_fixes: 100,
        queued_fixes: 100,
        idle: Duration::from_secs(3600),
    };

    type Pending = tokio::task::JoinHandle<Result<DeviceIngestAnswer, BatchError>>;

    fn spawn_submit(
        batches: &Arc<Batches<Arc<FakeCell>>>,
        cell: &Arc<CellTarget>,
        tenant: TenantId,
        fixes: Arc<[Fix]>,
    ) -> Pending {
        let (batches, cell) = (batches.clone(), cell.clone());
        tokio::spawn(async move { batches.submit(&cell, tenant, fixes).await })
    }

    /// Waits (without a clock) until `fixes` are queued or in flight.
    async fn until_waiting(batches: &Batches<Arc<FakeCell>>, cell: &Arc<CellTarget>, fixes: usize) {
        while batches.waiting_fixes(cell) != fixes {
            tokio::task::yield_now().await;
        }
    }

    /// A call is in flight with `first`; `rest` are queued behind it.
    async fn one_in_flight_and_queued(
        fake: &FakeCell,
        batches: &Arc<Batches<Arc<FakeCell>>>,
        cell: &Arc<CellTarget>,
        tenant: TenantId,
        rest: &[(&str, u8)],
    ) -> (Pending, Vec<Pending>) {
        let before = fake.calls.lock().expect("lock").len();
        let first = spawn_submit(batches, cell, tenant, fixes("first", 1, 1));
        while fake.calls.lock().expect("lock").len() == before {
            tokio::task::yield_now().await;
        }
        let queued = rest
            .iter()
            .map(|(device, marker)| spawn_submit(batches, cell, tenant, fixes(device, *marker, 1)))
            .collect();
        until_waiting(batches, cell, 1 + rest.len()).await;
        (first, queued)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixes_waiting_behind_a_call_go_together_and_each_gets_its_answer() {
        let (fake, batches) = setup(LIMITS);
        let (cell, tenant) = (cell(), TenantId::new());
        let (first, queued) = one_in_flight_and_queued(
            &fake,
            &batches,
            &cell,
            tenant,
            &[("b", 2), ("c", 3), ("d", 4)],
        )
        .await;
        fake.release.add_permits(2);
        assert_eq!(first.await.expect("joined").expect("answered").accepted, 1);
        let mut accepted = Vec::new();
        for pending in queued {
            accepted.push(pending.await.expect("joined").expect("answered").accepted);
        }
        assert_eq!(accepted, [2, 3, 4], "each its own item's answer");
        let calls = fake.calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let mut second: Vec<String> = calls[1].iter().flat_map(|(_, d)| d.clone()).collect();
        second.sort();
        assert_eq!(second, ["b", "c", "d"], "queued fixes in one call");
        assert_eq!(batches.waiting_fixes(&cell), 0, "the room is given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_call_fails_every_item_in_it_and_only_those() {
        let (fake, batches) = setup(LIMITS);
        fake.failing.lock().expect("lock").push(1);
        fake.short.lock().expect("lock").push(3);
        let (cell, tenant) = (cell(), TenantId::new());
        let (first, queued) =
            one_in_flight_and_queued(&fake, &batches, &cell, tenant, &[("b", 2), ("c", 3)]).await;
        fake.release.add_permits(2);
        assert!(first.await.expect("joined").is_ok());
        for pending in queued {
            let failed = pending.await.expect("joined");
            assert!(matches!(failed, Err(BatchError::Failed(_))), "{failed:?}");
        }
        // An answer that does not match the items fails them all too.
        let (first, queued) =
            one_in_flight_and_queued(&fake, &batches, &cell, tenant, &[("e", 5), ("f", 6)]).await;
        fake.release.add_permits(2);
        assert!(first.await.expect("joined").is_ok());
        for pending in queued {
            let failed = pending.await.expect("joined");
            assert!(matches!(failed, Err(BatchError::Failed(_))), "{failed:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_bound_refuses_and_never_drops() {
        let (fake, batches) = setup(Limits {
            queued_fixes: 4,
            ..LIMITS
        });
        let (cell, tenant) = (cell(), TenantId::new());
        let (first, queued) =
            one_in_flight_and_queued(&fake, &batches, &cell, tenant, &[("b", 2), ("c", 3)]).await;
        // 3 of 4 places are taken: two fixes do not fit, one does.
        let refused = batches.submit(&cell, tenant, fixes("big", 9, 2)).await;
        assert!(matches!(refused, Err(BatchError::Busy)), "{refused:?}");
        let last = spawn_submit(&batches, &cell, tenant, fixes("d", 4, 1));
        until_waiting(&batches, &cell, 4).await;
        let refused = batches.submit(&cell, tenant, fixes("e", 5, 1)).await;
        assert!(matches!(refused, Err(BatchError::Busy)), "{refused:?}");

        fake.release.add_permits(2);
        assert_eq!(first.await.expect("joined").expect("answered").accepted, 1);
        let mut accepted = Vec::new();
        for pending in queued.into_iter().chain([last]) {
            accepted.push(pending.await.expect("joined").expect("answered").accepted);
        }
        assert_eq!(accepted, [2, 3, 4], "everything admitted was answered");
        // Room again once answered.
        *fake.hold.lock().expect("lock") = false;
        let answer = batches.submit(&cell, tenant, fixes("e", 5, 1)).await;
        assert_eq!(answer.expect("answered").accepted, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_carries_at_most_its_share_of_fixes() {
        let (fake, batches) = setup(Limits {
            call_fixes: 3,
            ..LIMITS
        });
        let (cell, tenant) = (cell(), TenantId::new());
        let (first, queued) = one_in_flight_and_queued(
            &fake,
            &batches,
            &cell,
            tenant,
            &[("b", 2), ("c", 3), ("d", 4), ("e", 5)],
        )
        .await;
        fake.release.add_permits(3);
        assert!(first.await.expect("joined").is_ok());
        for pending in queued {
            assert!(pending.await.expect("joined").is_ok());
        }
        let calls = fake.calls.lock().expect("lock").clone();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 3, 1], "{calls:?}");
        let too_big = batches.submit(&cell, tenant, fixes("x", 1, 4)).await;
        assert!(
            matches!(too_big, Err(BatchError::TooLarge(4))),
            "{too_big:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_cell_has_its_own_queue() {
        let (fake, batches) = setup(LIMITS);
        *fake.hold.lock().expect("lock") = false;
        let (one, two) = (cell(), cell());
        let (a, b) = (TenantId::new(), TenantId::new());
        let first = batches.submit(&one, a, fixes("a1", 1, 1)).await;
        let second = batches.submit(&two, b, fixes("b1", 2, 1)).await;
        assert_eq!(first.expect("answered").accepted, 1);
        assert_eq!(second.expect("answered").accepted, 2);
        let calls = fake.calls.lock().expect("lock").clone();
        assert_eq!(calls[0], [(a, vec!["a1".to_string()])]);
        assert_eq!(calls[1], [(b, vec!["b1".to_string()])]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queues_closing_for_idleness_lose_no_submission() {
        // Idle at once: queues close between (and during) submissions.
        let (fake, batches) = setup(Limits {
            idle: Duration::ZERO,
            ..LIMITS
        });
        *fake.hold.lock().expect("lock") = false;
        let (cell, tenant) = (cell(), TenantId::new());
        let pending: Vec<Pending> = (0..200u8)
            .map(|i| spawn_submit(&batches, &cell, tenant, fixes("d", i, 1)))
            .collect();
        for (i, pending) in pending.into_iter().enumerate() {
            let answer = pending.await.expect("joined");
            // Two closings in a row, or a full queue while 200 arrive at
            // once, can refuse a submission: told, not lost.
            match answer {
                Ok(answer) => assert_eq!(answer.accepted, i),
                Err(err) => assert!(
                    matches!(err, BatchError::Stopped | BatchError::Busy),
                    "{err:?}"
                ),
            }
        }
    }
}
