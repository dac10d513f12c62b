//! Durable background jobs in the control plane's database: the queue table
//! `webhost-jobs` runs on, and the cron schedule it advances.
//!
//! Times that drive scheduling (`now`, `run_at`, `retry_at`, leases) come
//! from the caller, so a test can move time by hand; the record times
//! (`created_at`, `updated_at`, `finished_at`) are the store's wall clock.
//!
//! A job's life: `queued` → (`claim`) `running` → `succeeded`, or `failed`
//! (kept, with its last error), or back to `queued` (a retry at its stored
//! `run_at`, a `release` at shutdown, an expired lease). `cancel` takes a
//! queued or failed job out; `retry` puts a failed or cancelled one back.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use webhost_domain::JobId;

use crate::{Conflict, Page, StorageError, StorageResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at`, or for a free worker.
    Queued,
    /// Claimed by a worker whose lease (`locked_until`) is live.
    Running,
    Succeeded,
    /// Gave up: a permanent error, or the last attempt failed.
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Queued and running jobs are unfinished; at most one of them holds a
    /// given unique key.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job could not be moved as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobConflict {
    /// The job is in a state the action does not apply to (cancelling a
    /// running job, completing one that is no longer running, …).
    #[error("the job is {state}; cannot {action} it")]
    State {
        action: &'static str,
        state: JobState,
    },
    /// The job's lease lapsed and another run took it over: what this run
    /// reports is not recorded.
    #[error("the job was taken over by a later run; cannot {action} it")]
    Superseded { action: &'static str },
    /// Retrying would make a second unfinished job with this unique key.
    #[error("an unfinished job with unique key '{0}' already exists")]
    UniqueKey(String),
}

impl From<JobConflict> for StorageError {
    fn from(conflict: JobConflict) -> Self {
        StorageError::Conflict(Conflict::Job(conflict))
    }
}

/// One run of a job: the job and the attempt its claim counted. What a run
/// reports (progress, lease, outcome) applies only while it is still the
/// job's current run, so a worker that stalled past its lease cannot
/// record its outcome over the run that took the job over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRun {
    pub id: JobId,
    pub attempt: u32,
}

impl Job {
    /// This claim's run.
    pub fn run(&self) -> JobRun {
        JobRun {
            id: self.id,
            attempt: self.attempts,
        }
    }
}

/// Why a transition of `run` matched no row, given the job as it is now.
pub fn job_run_miss(run: JobRun, action: &'static str, now: &Job) -> StorageError {
    if now.state == JobState::Running && now.attempts != run.attempt {
        JobConflict::Superseded { action }.into()
    } else {
        job_state_conflict(action, now.state)
    }
}

/// The refusal for `action` on a job found in `state`.
pub fn job_state_conflict(action: &'static str, state: JobState) -> StorageError {
    JobConflict::State { action, state }.into()
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub queue: String,
    /// Names the handler that runs it.
    pub kind: String,
    pub payload: serde_json::Value,
    /// At most one unfinished (queued or running) job holds a key; enqueuing
    /// another returns that one.
    pub unique_key: Option<String>,
    pub max_attempts: u32,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub unique_key: Option<String>,
    pub state: JobState,
    /// Attempts started (a release at shutdown gives one back).
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    /// While running: the worker's lease; past it the job is presumed lost.
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Whatever the handler last reported.
    pub progress: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enqueued {
    pub job: Job,
    /// `false` when an unfinished job with the same unique key (or the same
    /// id) existed and is returned instead.
    pub created: bool,
}

/// Which jobs `JobStore::jobs` lists, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// Jobs strictly older than this one (a `next_cursor`).
    pub before: Option<JobId>,
    pub limit: u32,
}

/// One per-queue gauge: how many jobs of `queue` are in `state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueCount {
    pub queue: String,
    pub state: JobState,
    pub count: u64,
}

/// What `JobStore::schedule_due` does the first time it sees a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstRun {
    /// Record the next slot and run then: a daily job does not fire at
    /// whatever hour a node first boots.
    AtNextSlot,
    /// Enqueue now as well (work that should not wait a whole period on a
    /// new installation).
    Immediately,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a queued job, unless an unfinished job holds its unique key:
    /// then that job comes back with `created: false` (race-safe).
    async fn enqueue(&self, job: NewJob) -> StorageResult<Enqueued>;

    /// Up to `limit` queued jobs of `queue` due at `now`, oldest `run_at`
    /// first, now running with `attempts + 1` and a lease until
    /// `now + lease`. Concurrent callers never get the same job.
    async fn claim(
        &self,
        queue: &str,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> StorageResult<Vec<Job>>;

    /// Extends a running job's lease.
    async fn heartbeat(&self, run: JobRun, locked_until: DateTime<Utc>) -> StorageResult<()>;
    /// Records a running job's progress.
    async fn set_progress(&self, run: JobRun, progress: serde_json::Value) -> StorageResult<()>;
    /// Running → succeeded.
    async fn complete(&self, run: JobRun) -> StorageResult<()>;
    /// Running → queued again at `retry_at` (`Some`), or failed (`None`);
    /// `error` is kept as `last_error` either way.
    async fn fail(
        &self,
        run: JobRun,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StorageResult<()>;
    /// Running → queued, the attempt not counted: the worker gave it back
    /// (shutdown), or the job is waiting on something outside and asked to
    /// be run again at `run_at` (a cell still being made) — it did not
    /// fail. `None` keeps its `run_at`, so it is claimable at once.
    async fn release(&self, run: JobRun, run_at: Option<DateTime<Utc>>) -> StorageResult<()>;
    /// Running jobs whose lease ended before `now` (their worker died):
    /// queued again, the attempt counted; when that was the last allowed
    /// attempt, failed instead, so a job that kills its worker cannot loop
    /// forever. Returns how many jobs were recovered.
    async fn recover_expired(&self, now: DateTime<Utc>) -> StorageResult<u64>;
    /// Deletes finished jobs: succeeded and cancelled ones that finished
    /// before `succeeded_before`, failed ones before `failed_before`.
    /// Queued and running jobs stay. Returns how many went.
    async fn purge_finished(
        &self,
        succeeded_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> StorageResult<u64>;

    /// Queued or failed → cancelled (a cancelled one stays as it is).
    /// `Conflict` for a running or succeeded job.
    async fn cancel(&self, id: JobId) -> StorageResult<Job>;
    /// Failed or cancelled → queued at `now` with attempts reset; the last
    /// error is kept. `Conflict` from any other state, or when another
    /// unfinished job holds the unique key meanwhile.
    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StorageResult<Job>;

    async fn job(&self, id: JobId) -> StorageResult<Job>;
    /// Newest first (ids are UUIDv7), `filter.limit` per page.
    async fn jobs(&self, filter: &JobFilter) -> StorageResult<Page<Job, JobId>>;
    /// Job counts per queue and state (only non-zero ones).
    async fn queue_counts(&self) -> StorageResult<Vec<QueueCount>>;

    /// The cron step, safe with many nodes: when schedule `name` is due
    /// (its stored next run is at or before `now`), moves it to
    /// `next_after` and enqueues `job`, in one transaction; a concurrent
    /// caller for the same slot gets `None`. A schedule seen for the first
    /// time is stored with `next_after`, and `first` says whether `job` is
    /// enqueued as well. Missed slots (every node down) collapse into one run.
    async fn schedule_due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        next_after: DateTime<Utc>,
        first: FirstRun,
        job: NewJob,
    ) -> StorageResult<Option<Enqueued>>;
}

/// Implements [`JobStore`] for `$store` by handing every call to what
/// `$store::queue(&self)` returns: a backend's queue over the store's own
/// database (control and cell stores each hold one). Both backends use it.
#[macro_export]
macro_rules! delegate_job_store {
    ($store:ty) => {
        #[$crate::__async_trait]
        impl $crate::JobStore for $store {
            async fn enqueue(
                &self,
                job: $crate::NewJob,
            ) -> $crate::StorageResult<$crate::Enqueued> {
                self.queue().enqueue(job).await
            }
            async fn claim(
                &self,
                queue: &str,
                limit: u32,
                lease: $crate::__chrono::TimeDelta,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::StorageResult<Vec<$crate::Job>> {
                self.queue().claim(queue, limit, lease, now).await
            }
            async fn heartbeat(
                &self,
                run: $crate::JobRun,
                locked_until: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::StorageResult<()> {
                self.queue().heartbeat(run, locked_until).await
            }
            async fn set_progress(
                &self,
                run: $crate::JobRun,
                progress: $crate::__Json,
            ) -> $crate::StorageResult<()> {
                self.queue().set_progress(run, progress).await
            }
            async fn complete(&self, run: $crate::JobRun) -> $crate::StorageResult<()> {
                self.queue().complete(run).await
            }
            async fn fail(
                &self,
                run: $crate::JobRun,
                error: &str,
                retry_at: Option<$crate::__chrono::DateTime<$crate::__chrono::Utc>>,
            ) -> $crate::StorageResult<()> {
                self.queue().fail(run, error, retry_at).await
            }
            async fn release(
                &self,
                run: $crate::JobRun,
                run_at: Option<$crate::__chrono::DateTime<$crate::__chrono::Utc>>,
            ) -> $crate::StorageResult<()> {
                self.queue().release(run, run_at).await
            }
            async fn recover_expired(
                &self,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::StorageResult<u64> {
                self.queue().recover_expired(now).await
            }
            async fn purge_finished(
                &self,
                succeeded_before: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
                failed_before: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::StorageResult<u64> {
                self.queue()
                    .purge_finished(succeeded_before, failed_before)
                    .await
            }
            async fn cancel(&self, id: $crate::__JobId) -> $crate::StorageResult<$crate::Job> {
                self.queue().cancel(id).await
            }
            async fn retry(
                &self,
                id: $crate::__JobId,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::StorageResult<$crate::Job> {
                self.queue().retry(id, now).await
            }
            async fn job(&self, id: $crate::__JobId) -> $crate::StorageResult<$crate::Job> {
                self.queue().job(id).await
            }
            async fn jobs(
                &self,
                filter: &$crate::JobFilter,
            ) -> $crate::StorageResult<$crate::Page<$crate::Job, $crate::__JobId>> {
                self.queue().jobs(filter).await
            }
            async fn queue_counts(&self) -> $crate::StorageResult<Vec<$crate::QueueCount>> {
                self.queue().queue_counts().await
            }
            async fn schedule_due(
                &self,
                name: &str,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
                next_after: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
                first: $crate::FirstRun,
                job: $crate::NewJob,
            ) -> $crate::StorageResult<Option<$crate::Enqueued>> {
                self.queue()
                    .schedule_due(name, now, next_after, first, job)
                    .await
            }
        }
    };
}
