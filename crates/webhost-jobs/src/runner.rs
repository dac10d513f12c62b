use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webhost_domain::JobId;
use webhost_storage::{
    Enqueued, FirstRun, Job, JobRun, JobStore, NewJob, StorageError, StorageResult,
};

use crate::{Backoff, Clock, CronSchedule, Handler, JobContext, JobError, SystemClock};

/// The queues and their default concurrency (jobs run at once per node).
pub mod queues {
    pub const DEFAULT: &str = "default";
    pub const PROVISIONING: &str = "provisioning";
    pub const BILLING: &str = "billing";
    pub const SYNC: &str = "sync";
}

/// How long a claimed job is a worker's before it counts as lost, unless
/// heartbeats (every third of it) renew it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    /// Jobs of this queue running at once on one node (at least 1).
    pub concurrency: usize,
}

impl QueueConfig {
    pub fn new(name: impl Into<String>, concurrency: usize) -> Self {
        Self {
            name: name.into(),
            concurrency: concurrency.max(1),
        }
    }

    /// `default` 10, `provisioning` 5, `billing` 3, `sync` 15.
    pub fn defaults() -> Vec<QueueConfig> {
        vec![
            Self::new(queues::DEFAULT, 10),
            Self::new(queues::PROVISIONING, 5),
            Self::new(queues::BILLING, 3),
            Self::new(queues::SYNC, 15),
        ]
    }
}

#[derive(Clone)]
struct Registered {
    handler: Arc<dyn Handler>,
    queue: &'static str,
    max_attempts: u32,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
struct Cron {
    name: String,
    schedule: CronSchedule,
    kind: &'static str,
    queue: &'static str,
    max_attempts: u32,
    payload: serde_json::Value,
}

/// The job machinery: a store, the handlers by kind, the queues, the cron
/// entries and a clock. Configure it with the `with_*`, `register` and
/// `add_cron` builders, then clone it freely (the parts are shared).
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    handlers: Arc<HashMap<&'static str, Registered>>,
    queues: Arc<Vec<QueueConfig>>,
    crons: Arc<Vec<Cron>>,
    lease: Duration,
    backoff_scale: f64,
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl Jobs {
    /// The default queues, the wall clock, a 60 s lease, no handlers.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            handlers: Arc::default(),
            queues: Arc::new(QueueConfig::defaults()),
            crons: Arc::default(),
            lease: DEFAULT_LEASE,
            backoff_scale: 1.0,
        }
    }

    /// Multiplies the retry delays of the handlers registered after this
    /// (`Backoff::scaled`): tests and demos see a day of retries in seconds.
    pub fn with_backoff_scale(mut self, scale: f64) -> Self {
        self.backoff_scale = scale;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Shorter leases find dead workers sooner and cost more heartbeats.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// Adds a queue, or replaces the one with the same name.
    pub fn with_queue(mut self, queue: QueueConfig) -> Self {
        let queues = Arc::make_mut(&mut self.queues);
        queues.retain(|q| q.name != queue.name);
        queues.push(queue);
        self
    }

    /// Runs exactly these queues instead of the defaults: a process that
    /// only uses some (a cell runs `default`) has no worker polling the
    /// others' empty tables.
    pub fn with_queues(mut self, queues: Vec<QueueConfig>) -> Self {
        self.queues = Arc::new(queues);
        self
    }

    /// Registers the handler of `H::kind()`.
    ///
    /// # Panics
    ///
    /// When the kind is registered already or its queue is not configured:
    /// wiring mistakes, caught at startup.
    pub fn register<H: Handler>(mut self, handler: H) -> Self {
        let kind = H::kind();
        assert!(
            self.queue(H::queue()).is_some(),
            "job kind '{kind}' goes to queue '{}', which is not configured",
            H::queue()
        );
        let previous = Arc::make_mut(&mut self.handlers).insert(
            kind,
            Registered {
                handler: Arc::new(handler),
                queue: H::queue(),
                max_attempts: H::max_attempts(),
                backoff: H::backoff().scaled(self.backoff_scale),
            },
        );
        assert!(previous.is_none(), "job kind '{kind}' registered twice");
        self
    }

    /// Enqueues a `kind` job with `payload` at every slot of `schedule`,
    /// once per slot across all nodes. A schedule seen for the first time
    /// runs at its next slot, not at once: a new node (or installation) does
    /// not run the nightly job at whatever hour it booted; slots missed while
    /// every node was down are caught up by one run. Each run has the unique
    /// key `cron:<name>`, so a slot that comes while the previous run is
    /// still unfinished adds nothing.
    ///
    /// # Panics
    ///
    /// When `kind` has no registered handler, the schedule is unusable
    /// (`CronSchedule::check`), or `name` is taken.
    pub fn add_cron(
        mut self,
        name: impl Into<String>,
        schedule: CronSchedule,
        kind: &str,
        payload: serde_json::Value,
    ) -> Self {
        let name = name.into();
        if let Err(why) = schedule.check() {
            panic!("cron '{name}': {why}");
        }
        let Some((&kind, registered)) = self.handlers.get_key_value(kind) else {
            panic!("cron '{name}': no handler is registered for job kind '{kind}'");
        };
        let (queue, max_attempts) = (registered.queue, registered.max_attempts);
        let crons = Arc::make_mut(&mut self.crons);
        assert!(
            crons.iter().all(|c| c.name != name),
            "cron '{name}' added twice"
        );
        crons.push(Cron {
            name,
            schedule,
            kind,
            queue,
            max_attempts,
            payload,
        });
        self
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// Enqueues an `H` job; `run_at` `None` means now. With a `unique_key`,
    /// an unfinished job holding it comes back instead (`created: false`).
    pub async fn enqueue<H: Handler>(
        &self,
        payload: serde_json::Value,
        unique_key: Option<String>,
        run_at: Option<DateTime<Utc>>,
    ) -> StorageResult<Enqueued> {
        let enqueued = self
            .store
            .enqueue(NewJob {
                id: JobId::new(),
                queue: H::queue().to_string(),
                kind: H::kind().to_string(),
                payload,
                unique_key,
                max_attempts: H::max_attempts(),
                run_at: run_at.unwrap_or_else(|| self.clock.now()),
            })
            .await?;
        tracing::debug!(
            id = %enqueued.job.id,
            kind = H::kind(),
            created = enqueued.created,
            "job enqueued"
        );
        Ok(enqueued)
    }

    /// Claims and runs, one after the other, every job of `queue` that is
    /// due now, until none is; returns how many ran. Retries scheduled later
    /// are left for a later call (move the clock). What tests drive.
    pub async fn run_once(&self, queue: &str) -> StorageResult<usize> {
        let batch = self.queue(queue).map_or(1, |q| q.concurrency);
        let batch = u32::try_from(batch).unwrap_or(u32::MAX);
        let never = CancellationToken::new();
        let mut ran = 0;
        loop {
            let jobs = self
                .store
                .claim(queue, batch, delta(self.lease), self.clock.now())
                .await?;
            if jobs.is_empty() {
                return Ok(ran);
            }
            for job in jobs {
                self.execute(job, &never, &never).await;
                ran += 1;
            }
        }
    }

    /// One cron step: enqueues the runs whose slot has come. Returns how
    /// many jobs were created. Every entry is tried; the first error is
    /// returned after.
    pub async fn tick_crons(&self) -> StorageResult<usize> {
        let now = self.clock.now();
        let mut created = 0;
        let mut first_error = None;
        for cron in self.crons.iter() {
            let job = NewJob {
                id: JobId::new(),
                queue: cron.queue.to_string(),
                kind: cron.kind.to_string(),
                payload: cron.payload.clone(),
                unique_key: Some(format!("cron:{}", cron.name)),
                max_attempts: cron.max_attempts,
                run_at: now,
            };
            let next = cron.schedule.next_after(now);
            match self
                .store
                .schedule_due(&cron.name, now, next, FirstRun::AtNextSlot, job)
                .await
            {
                Ok(Some(enqueued)) => {
                    tracing::info!(
                        cron = %cron.name,
                        id = %enqueued.job.id,
                        created = enqueued.created,
                        next = %next,
                        "cron slot reached"
                    );
                    created += usize::from(enqueued.created);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(cron = %cron.name, error = %err, "cron step failed");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(created),
        }
    }

    /// Queues again the jobs whose worker stopped renewing its lease.
    pub async fn recover_expired(&self) -> StorageResult<u64> {
        let recovered = self.store.recover_expired(self.clock.now()).await?;
        if recovered > 0 {
            tracing::warn!(recovered, "jobs with an expired lease recovered");
        }
        Ok(recovered)
    }

    /// Starts the workers on `tracker`: one loop per configured queue
    /// (claiming up to its concurrency, polling every `poll_interval` while
    /// idle), and one for the cron step and lease recovery. When `token`
    /// fires they stop claiming; running jobs get `grace` to finish (their
    /// `JobContext::shutdown` fires at once), then the rest are abandoned
    /// and released. The caller closes the tracker and waits on it.
    pub fn spawn_workers(
        &self,
        tracker: &TaskTracker,
        token: CancellationToken,
        poll_interval: Duration,
        grace: Duration,
    ) {
        for queue in self.queues.iter() {
            let jobs = self.clone();
            let span = tracing::info_span!("job_queue", queue = %queue.name);
            tracker.spawn(
                jobs.queue_loop(
                    queue.clone(),
                    tracker.clone(),
                    token.clone(),
                    poll_interval,
                    grace,
                )
                .instrument(span),
            );
        }
        tracker.spawn(
            self.clone()
                .maintenance_loop(token, poll_interval)
                .instrument(tracing::info_span!("job_maintenance")),
        );
    }

    async fn queue_loop(
        self,
        queue: QueueConfig,
        tracker: TaskTracker,
        token: CancellationToken,
        poll_interval: Duration,
        grace: Duration,
    ) {
        let concurrency = queue.concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(concurrency));
        // Fires when the grace period is over: running jobs are abandoned.
        let abandon = CancellationToken::new();
        loop {
            let first = tokio::select! {
                biased;
                () = token.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut held = vec![first];
            while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                held.push(permit);
            }
            let wanted = held.len();
            let jobs = match self
                .store
                .claim(
                    &queue.name,
                    u32::try_from(wanted).unwrap_or(u32::MAX),
                    delta(self.lease),
                    self.clock.now(),
                )
                .await
            {
                Ok(jobs) => jobs,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming jobs failed");
                    Vec::new()
                }
            };
            let idle = jobs.len() < wanted;
            // Unused permits go back as `held`'s rest is dropped.
            for (job, permit) in jobs.into_iter().zip(held) {
                let jobs = self.clone();
                let token = token.clone();
                let abandon = abandon.clone();
                tracker.spawn(async move {
                    jobs.execute(job, &token, &abandon).await;
                    drop(permit);
                });
            }
            if idle {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(poll_interval) => {}
                }
            }
        }
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        tokio::select! {
            _ = slots.acquire_many(all) => {}
            () = tokio::time::sleep(grace) => {
                tracing::info!("grace period over; releasing the jobs still running");
                abandon.cancel();
            }
        }
    }

    async fn maintenance_loop(self, token: CancellationToken, poll_interval: Duration) {
        // Often enough that a lost job waits at most about 1.5 leases.
        let recover_every = self.lease / 2;
        let mut last_recovery: Option<Instant> = None;
        loop {
            // Errors are logged where they happen; the next tick tries again.
            let _ = self.tick_crons().await;
            if last_recovery.is_none_or(|at| at.elapsed() >= recover_every) {
                if let Err(err) = self.recover_expired().await {
                    tracing::warn!(error = %err, "recovering expired jobs failed");
                }
                last_recovery = Some(Instant::now());
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(poll_interval) => {}
            }
        }
    }

    /// Runs one claimed job and records the outcome. `shutdown` is passed to
    /// the handler; `abandon` drops it mid-run and gives the job back.
    async fn execute(&self, job: Job, shutdown: &CancellationToken, abandon: &CancellationToken) {
        let span = tracing::info_span!(
            "job",
            queue = %job.queue,
            kind = %job.kind,
            id = %job.id,
            attempt = job.attempts,
        );
        self.execute_in_span(job, shutdown, abandon)
            .instrument(span)
            .await;
    }

    async fn execute_in_span(
        &self,
        job: Job,
        shutdown: &CancellationToken,
        abandon: &CancellationToken,
    ) {
        let Some(registered) = self.handlers.get(job.kind.as_str()) else {
            let error = format!(
                "no handler is registered for job kind '{}' (queue '{}')",
                job.kind, job.queue
            );
            tracing::error!("{error}");
            log_outcome(self.store.fail(job.run(), &error, None).await);
            return;
        };
        let ctx = JobContext {
            store: Arc::clone(&self.store),
            id: job.id,
            attempt: job.attempts,
            shutdown: shutdown.clone(),
        };
        let outcome = tokio::select! {
            biased;
            () = abandon.cancelled() => {
                tracing::info!("abandoned at shutdown; released");
                log_outcome(self.store.release(job.run(), None).await);
                return;
            }
            outcome = registered.handler.run(&job, &ctx) => outcome,
            never = self.renew_lease(job.run()) => match never {},
        };
        let result = match outcome {
            Ok(()) => {
                tracing::info!("job succeeded");
                self.store.complete(job.run()).await
            }
            // Stopped for shutdown: given back, the attempt not counted.
            Err(JobError::Retry(err)) if shutdown.is_cancelled() => {
                tracing::info!(error = %format!("{err:#}"), "stopped for shutdown; released");
                self.store.release(job.run(), None).await
            }
            // Waiting on something outside: run again later, no attempt
            // counted.
            Err(JobError::Snooze(after)) => {
                let run_at = self.clock.now() + delta(after);
                tracing::debug!(%run_at, "job waits; runs again later");
                self.store.release(job.run(), Some(run_at)).await
            }
            Err(JobError::Retry(err)) if job.attempts < job.max_attempts => {
                let retry_at = registered
                    .backoff
                    .next_retry(job.attempts, self.clock.now());
                let error = format!("{err:#}");
                tracing::warn!(%error, %retry_at, "job failed; will retry");
                self.store.fail(job.run(), &error, Some(retry_at)).await
            }
            Err(JobError::Retry(err)) => {
                let error = format!("{err:#}");
                tracing::error!(%error, "job failed on its last attempt");
                self.store.fail(job.run(), &error, None).await
            }
            Err(JobError::Permanent(err)) => {
                let error = format!("{err:#}");
                tracing::error!(%error, "job failed permanently");
                self.store.fail(job.run(), &error, None).await
            }
        };
        log_outcome(result);
    }

    /// Renews the job's lease every third of it, for as long as it runs.
    async fn renew_lease(&self, run: JobRun) -> std::convert::Infallible {
        let every = self.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = self.clock.now() + delta(self.lease);
            if let Err(err) = self.store.heartbeat(run, until).await {
                // The job keeps running: it is idempotent, and the worker
                // that may now hold it does the same work.
                tracing::warn!(error = %err, "renewing the job's lease failed");
            }
        }
    }
}

/// Recording an outcome can fail (the database is down, or the job was
/// recovered by another worker meanwhile); the lease then brings it back.
fn log_outcome(result: StorageResult<()>) {
    match result {
        Ok(()) => {}
        Err(StorageError::Conflict(conflict)) => {
            tracing::warn!(%conflict, "the job changed hands before its outcome was recorded");
        }
        Err(err) => tracing::error!(error = %err, "recording the job's outcome failed"),
    }
}
