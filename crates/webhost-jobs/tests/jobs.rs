//! The job machinery on a real SQLite control store, driven step by step:
//! `run_once` and `tick_crons` with a hand-moved clock, and the workers
//! through a shutdown. Every test ends with no job queued or running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhost_domain::JobId;
use webhost_jobs::{queues, Clock, CronSchedule, Handler, JobContext, JobError, Jobs, ManualClock};
use webhost_storage::{Job, JobFilter, JobState, JobStore, NewJob};
use webhost_storage_sqlite::SqliteControlStore;

struct Fixture {
    store: Arc<dyn JobStore>,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0)
        .single()
        .expect("time")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("control.db");
    let store = SqliteControlStore::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open the SQLite control store");
    Fixture {
        store: Arc::new(store),
        clock: Arc::new(ManualClock::new(t0())),
        _dir: dir,
    }
}

impl Fixture {
    fn jobs(&self) -> Jobs {
        Jobs::new(Arc::clone(&self.store)).with_clock(self.clock.clone())
    }

    async fn assert_queues_empty(&self) {
        let counts = self.store.queue_counts().await.expect("counts");
        let busy: Vec<_> = counts.iter().filter(|c| !c.state.is_finished()).collect();
        assert!(busy.is_empty(), "jobs left unfinished: {busy:?}");
    }
}

/// Fails with a retryable error until its `succeed_on` attempt.
struct Flaky {
    runs: Arc<AtomicU32>,
    succeed_on: u32,
}

#[async_trait]
impl Handler for Flaky {
    fn kind() -> &'static str {
        "flaky"
    }
    fn max_attempts() -> u32 {
        4
    }
    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.progress(json!({ "run": run, "attempt": ctx.attempt() }))
            .await
            .expect("progress");
        if run < self.succeed_on {
            return Err(JobError::retry(anyhow::anyhow!(
                "upstream 503 on run {run}"
            )));
        }
        Ok(())
    }
}

/// Fails permanently.
struct Broken;

#[async_trait]
impl Handler for Broken {
    fn kind() -> &'static str {
        "broken"
    }
    fn queue() -> &'static str {
        queues::BILLING
    }
    async fn run(&self, job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        Err(JobError::permanent(anyhow::anyhow!(
            "payload {} names no customer",
            job.payload
        )))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_twice_then_succeeds_runs_three_times_with_growing_delays() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    let jobs = fx.jobs().register(Flaky {
        runs: Arc::clone(&runs),
        succeed_on: 3,
    });
    let id = jobs
        .enqueue::<Flaky>(json!({}), None, None)
        .await
        .expect("enqueue")
        .job
        .id;

    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    let first = fx.store.job(id).await.expect("job");
    assert_eq!(first.state, JobState::Queued);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.last_error.as_deref(), Some("upstream 503 on run 1"));
    let delay1 = first.run_at - t0();
    assert!(delay1 > TimeDelta::zero());

    // Not due yet: nothing runs.
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 0);

    fx.clock.set(first.run_at);
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    let second = fx.store.job(id).await.expect("job");
    assert_eq!(second.attempts, 2);
    assert_eq!(second.state, JobState::Queued);
    let delay2 = second.run_at - first.run_at;
    assert!(delay2 > delay1, "backoff grows: {delay1} then {delay2}");

    fx.clock.set(second.run_at);
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    let done = fx.store.job(id).await.expect("job");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.progress, Some(json!({ "run": 3, "attempt": 3 })));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    fx.assert_queues_empty().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_always_fails_is_failed_after_max_attempts() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    let jobs = fx.jobs().register(Flaky {
        runs: Arc::clone(&runs),
        succeed_on: u32::MAX,
    });
    let id = jobs
        .enqueue::<Flaky>(json!({}), None, None)
        .await
        .expect("enqueue")
        .job
        .id;
    for attempt in 1..=4 {
        assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
        let job = fx.store.job(id).await.expect("job");
        assert_eq!(job.attempts, attempt);
        fx.clock.set(job.run_at);
    }
    let failed = fx.store.job(id).await.expect("job");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("upstream 503 on run 4"));
    assert!(failed.finished_at.is_some());
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    fx.clock.advance(TimeDelta::days(1));
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 0);
    fx.assert_queues_empty().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_fails_at_once_and_an_unknown_kind_too() {
    let fx = fixture().await;
    let jobs = fx.jobs().register(Broken);
    let id = jobs
        .enqueue::<Broken>(json!({ "customer": null }), None, None)
        .await
        .expect("enqueue")
        .job
        .id;
    assert_eq!(jobs.run_once(queues::BILLING).await.expect("run"), 1);
    let failed = fx.store.job(id).await.expect("job");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempts, 1);
    assert!(failed
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("names no customer")));

    let stray = fx
        .store
        .enqueue(NewJob {
            id: JobId::new(),
            queue: queues::DEFAULT.into(),
            kind: "from_a_newer_release".into(),
            payload: json!({}),
            unique_key: None,
            max_attempts: 5,
            run_at: t0(),
        })
        .await
        .expect("enqueue")
        .job;
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    let stray = fx.store.job(stray.id).await.expect("job");
    assert_eq!(stray.state, JobState::Failed);
    assert!(
        stray.last_error.as_deref().is_some_and(
            |e| e.contains("no handler is registered for job kind 'from_a_newer_release'")
        ),
        "{:?}",
        stray.last_error
    );
    fx.assert_queues_empty().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unique_key_dedupes_until_the_job_finished() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    let jobs = fx.jobs().register(Flaky {
        runs: Arc::clone(&runs),
        succeed_on: 1,
    });
    let key = || Some("sync:tenant-7".to_string());
    let first = jobs
        .enqueue::<Flaky>(json!({ "n": 1 }), key(), None)
        .await
        .expect("enqueue");
    let second = jobs
        .enqueue::<Flaky>(json!({ "n": 2 }), key(), None)
        .await
        .expect("enqueue");
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let third = jobs
        .enqueue::<Flaky>(json!({ "n": 3 }), key(), None)
        .await
        .expect("enqueue");
    assert!(third.created, "the key is free once the job finished");
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    fx.assert_queues_empty().await;
}

/// Tells the test it started, then never finishes on its own.
struct Stuck {
    started: mpsc::Sender<JobId>,
    /// Whether it returns when shutdown begins (within the grace period).
    heeds_shutdown: bool,
}

#[async_trait]
impl Handler for Stuck {
    fn kind() -> &'static str {
        "stuck"
    }
    fn queue() -> &'static str {
        queues::SYNC
    }
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        self.started.send(job.id).await.expect("test listening");
        if self.heeds_shutdown {
            ctx.shutdown().cancelled().await;
            return Ok(());
        }
        std::future::pending::<()>().await;
        Ok(())
    }
}

async fn run_workers_until_started_then_shut_down(fx: &Fixture, heeds_shutdown: bool) -> JobId {
    let (started, mut started_rx) = mpsc::channel(1);
    let jobs = fx.jobs().register(Stuck {
        started,
        heeds_shutdown,
    });
    let id = jobs
        .enqueue::<Stuck>(json!({}), None, None)
        .await
        .expect("enqueue")
        .job
        .id;
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    jobs.spawn_workers(
        &tracker,
        token.clone(),
        Duration::from_millis(20),
        Duration::from_millis(100),
    );
    assert_eq!(started_rx.recv().await, Some(id));
    assert_eq!(
        fx.store.job(id).await.expect("job").state,
        JobState::Running
    );
    token.cancel();
    tracker.close();
    tracker.wait().await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_releases_a_job_that_outlives_the_grace_period() {
    let fx = fixture().await;
    let id = run_workers_until_started_then_shut_down(&fx, false).await;

    let released = fx.store.job(id).await.expect("job");
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(released.attempts, 0, "a release is not a failed attempt");
    assert_eq!(released.locked_until, None);
    let claimed = fx
        .store
        .claim(queues::SYNC, 10, TimeDelta::seconds(60), fx.clock.now())
        .await
        .expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    fx.store.complete(claimed[0].run()).await.expect("complete");
    fx.assert_queues_empty().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_a_job_finish_within_the_grace_period() {
    let fx = fixture().await;
    let id = run_workers_until_started_then_shut_down(&fx, true).await;
    let done = fx.store.job(id).await.expect("job");
    assert_eq!(done.state, JobState::Succeeded);
    fx.assert_queues_empty().await;
}

/// Counts its runs.
struct Nightly {
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl Handler for Nightly {
    fn kind() -> &'static str {
        "nightly"
    }
    async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_enqueues_once_per_slot_across_nodes() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    let node = |runs: &Arc<AtomicU32>| {
        fx.jobs()
            .register(Nightly {
                runs: Arc::clone(runs),
            })
            .add_cron(
                "nightly",
                CronSchedule::DailyAt { hour: 3, minute: 0 },
                "nightly",
                json!({ "scope": "all" }),
            )
    };
    let (a, b) = (node(&runs), node(&runs));
    let at = |day: u32, h: u32, m: u32| {
        Utc.with_ymd_and_hms(2030, 1, day, h, m, 0)
            .single()
            .expect("time")
    };

    // First boot at 10:00: no run now; the next is at 03:00 tomorrow.
    assert_eq!(a.tick_crons().await.expect("tick"), 0);
    fx.clock.set(at(2, 2, 59));
    assert_eq!(a.tick_crons().await.expect("tick"), 0);

    fx.clock.set(at(2, 3, 0));
    let (ta, tb) = tokio::join!(a.tick_crons(), b.tick_crons());
    assert_eq!(ta.expect("tick") + tb.expect("tick"), 1, "one node fires");
    assert_eq!(b.tick_crons().await.expect("tick"), 0, "the slot is taken");
    assert_eq!(a.run_once(queues::DEFAULT).await.expect("run"), 1);
    let nightly = fx
        .store
        .jobs(&JobFilter {
            kind: Some("nightly".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(nightly.data.len(), 1);
    assert_eq!(nightly.data[0].payload, json!({ "scope": "all" }));
    assert_eq!(nightly.data[0].state, JobState::Succeeded);

    fx.clock.set(at(2, 3, 1));
    assert_eq!(a.tick_crons().await.expect("tick"), 0);
    // All nodes down over several nights: one catch-up run, not one per
    // missed night.
    fx.clock.set(at(5, 12, 0));
    assert_eq!(b.tick_crons().await.expect("tick"), 1);
    assert_eq!(a.tick_crons().await.expect("tick"), 0);
    assert_eq!(b.run_once(queues::DEFAULT).await.expect("run"), 1);
    fx.clock.set(at(6, 3, 0));
    assert_eq!(a.tick_crons().await.expect("tick"), 1);
    assert_eq!(a.run_once(queues::DEFAULT).await.expect("run"), 1);

    assert_eq!(runs.load(Ordering::SeqCst), 3);
    fx.assert_queues_empty().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_worker_died_is_recovered_after_its_lease() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    let jobs = fx.jobs().register(Flaky {
        runs: Arc::clone(&runs),
        succeed_on: 2,
    });
    let id = jobs
        .enqueue::<Flaky>(json!({}), None, None)
        .await
        .expect("enqueue")
        .job
        .id;
    // A worker claims it and dies (kill -9): nothing more is recorded.
    let claimed = fx
        .store
        .claim(queues::DEFAULT, 1, TimeDelta::seconds(60), t0())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(jobs.recover_expired().await.expect("recover"), 0);
    fx.clock.advance(TimeDelta::seconds(61));
    assert_eq!(jobs.recover_expired().await.expect("recover"), 1);
    // The lost run counted as attempt 1; this one is attempt 2 and succeeds.
    runs.store(1, Ordering::SeqCst);
    assert_eq!(jobs.run_once(queues::DEFAULT).await.expect("run"), 1);
    let done = fx.store.job(id).await.expect("job");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempts, 2);
    fx.assert_queues_empty().await;
}

/// Waits for something outside for its first `waits` runs.
struct Waiting {
    runs: Arc<AtomicU32>,
    waits: u32,
}

#[async_trait]
impl Handler for Waiting {
    fn kind() -> &'static str {
        "waiting"
    }
    fn queue() -> &'static str {
        queues::PROVISIONING
    }
    fn max_attempts() -> u32 {
        2
    }
    async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<(), JobError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if run <= self.waits {
            return Err(JobError::Snooze(Duration::from_secs(30)));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_job_runs_again_later_without_spending_attempts() {
    let fx = fixture().await;
    let runs = Arc::new(AtomicU32::new(0));
    // More waits than attempts allowed: waiting is not failing.
    let jobs = fx.jobs().register(Waiting {
        runs: Arc::clone(&runs),
        waits: 5,
    });
    let id = jobs
        .enqueue::<Waiting>(json!({}), None, None)
        .await
        .expect("enqueue")
        .job
        .id;
    for wait in 1..=5u32 {
        assert_eq!(jobs.run_once(queues::PROVISIONING).await.expect("run"), 1);
        let job = fx.store.job(id).await.expect("job");
        assert_eq!(job.state, JobState::Queued, "wait {wait}");
        assert_eq!(job.attempts, 0, "a wait spends no attempt");
        assert_eq!(job.run_at, fx.clock.now() + TimeDelta::seconds(30));
        // Not before its time.
        assert_eq!(jobs.run_once(queues::PROVISIONING).await.expect("run"), 0);
        fx.clock.advance(TimeDelta::seconds(30));
    }
    assert_eq!(jobs.run_once(queues::PROVISIONING).await.expect("run"), 1);
    assert_eq!(
        fx.store.job(id).await.expect("job").state,
        JobState::Succeeded
    );
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    fx.assert_queues_empty().await;
}
