use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use webhost_domain::JobId;
use webhost_storage::{Job, JobRun, JobStore, StorageResult};

use crate::runner::queues;
use crate::Backoff;

/// Runs one kind of job.
///
/// **Idempotent, always**: the same job may run again after it did its work
/// (its worker died before recording success, or lost its lease), so running
/// twice must do no more than running once — check before creating, use the
/// job id as an idempotency key with outside services, and so on.
///
/// `kind`, `queue`, `max_attempts` and `backoff` describe the type, not an
/// instance, so `Jobs::enqueue::<H>` can use them without a handler at hand.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The job kind this handler runs; unique among registered handlers.
    fn kind() -> &'static str
    where
        Self: Sized;

    /// The queue its jobs go to (one of the configured `QueueConfig`s).
    fn queue() -> &'static str
    where
        Self: Sized,
    {
        queues::DEFAULT
    }

    /// Attempts before a job that keeps failing with `JobError::Retry` is
    /// failed for good. Stored with each job when it is enqueued.
    fn max_attempts() -> u32
    where
        Self: Sized,
    {
        5
    }

    fn backoff() -> Backoff
    where
        Self: Sized,
    {
        Backoff::default()
    }

    /// Does the work. Should return soon after `ctx.shutdown()` fires (the
    /// grace period is short); what is still running then is abandoned at its
    /// next `.await` and given back to the queue.
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError>;
}

/// How a job failed.
pub enum JobError {
    /// Worth another try (a timeout, a 503): retried after the backoff until
    /// the job's `max_attempts`, then failed.
    Retry(anyhow::Error),
    /// Will never work (bad payload, the thing it acts on is gone): failed
    /// now.
    Permanent(anyhow::Error),
    /// Not a failure: the job waits on something outside (a server being
    /// delivered, a machine booting) and wants to run again after this
    /// long. No attempt is counted, so a wait of days does not exhaust
    /// `max_attempts`; the handler must make progress visible instead.
    Snooze(std::time::Duration),
}

impl JobError {
    pub fn retry(err: impl Into<anyhow::Error>) -> Self {
        Self::Retry(err.into())
    }

    pub fn permanent(err: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(err.into())
    }
}

/// `?` on an `anyhow::Result` retries.
impl From<anyhow::Error> for JobError {
    fn from(err: anyhow::Error) -> Self {
        Self::Retry(err)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(err) => write!(f, "Retry({err:#})"),
            Self::Permanent(err) => write!(f, "Permanent({err:#})"),
            Self::Snooze(after) => write!(f, "Snooze({after:?})"),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(err) | Self::Permanent(err) => write!(f, "{err:#}"),
            Self::Snooze(after) => write!(f, "waiting; runs again in {after:?}"),
        }
    }
}

/// What a running handler may use besides its job.
pub struct JobContext {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) shutdown: CancellationToken,
}

impl JobContext {
    /// Records progress on the job (shown by `JobStore::job`/`jobs`).
    pub async fn progress(&self, progress: serde_json::Value) -> StorageResult<()> {
        self.store
            .set_progress(
                JobRun {
                    id: self.id,
                    attempt: self.attempt,
                },
                progress,
            )
            .await
    }

    /// Fires when the process shuts down; a long job should stop at a point
    /// it can resume from and return `JobError::Retry`, which then gives the
    /// job back to the queue without counting the attempt.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// This run's attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}
