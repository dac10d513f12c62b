//! Stories for [`JobStore`]: the durable queue and cron schedules. Each
//! takes a store on a fresh database, shared so stories can race callers.
//!
//! Scheduling times are chosen by the story (whole seconds, so both engines
//! store them exactly); the store's own clock only stamps records.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use webhost_domain::JobId;
use webhost_storage::{
    Conflict, FirstRun, Job, JobConflict, JobFilter, JobRun, JobState, JobStore, NewJob,
    QueueCount, StorageError,
};

use crate::fixtures::{assert_not_found, assert_recent, expect_conflict};

/// The stories' "now": a whole second, far from the wall clock.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

const LEASE: TimeDelta = TimeDelta::seconds(60);

fn new_job(queue: &str, kind: &str, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        id: JobId::new(),
        queue: queue.to_string(),
        kind: kind.to_string(),
        payload: json!({ "kind": kind, "n": 1 }),
        unique_key: None,
        max_attempts: 3,
        run_at,
    }
}

async fn enqueue(store: &dyn JobStore, job: NewJob) -> Job {
    let enqueued = store.enqueue(job).await.expect("enqueue");
    assert!(enqueued.created);
    enqueued.job
}

async fn claim_one(store: &dyn JobStore, queue: &str, now: DateTime<Utc>) -> Job {
    let mut jobs = store.claim(queue, 1, LEASE, now).await.expect("claim");
    assert_eq!(jobs.len(), 1, "one job due in {queue} at {now}");
    jobs.remove(0)
}

#[track_caller]
fn expect_state_conflict<T: std::fmt::Debug>(
    result: webhost_storage::StorageResult<T>,
    state: JobState,
    what: &str,
) {
    match expect_conflict(result, what) {
        Conflict::Job(JobConflict::State { state: found, .. }) => {
            assert_eq!(found, state, "{what}")
        }
        other => panic!("{what}: expected a job state conflict, got {other:?}"),
    }
}

/// An enqueued job reads back whole, queued, with nothing attempted.
pub async fn enqueued_job_round_trips(store: Arc<dyn JobStore>) {
    let mut new = new_job("default", "send_mail", t0());
    new.payload = json!({ "to": "a@example.com", "nested": { "list": [1, 2, 3] } });
    new.unique_key = Some("mail:1".into());
    new.max_attempts = 7;
    let job = enqueue(store.as_ref(), new.clone()).await;
    assert_eq!(job.id, new.id);
    assert_eq!(job.queue, "default");
    assert_eq!(job.kind, "send_mail");
    assert_eq!(job.payload, new.payload);
    assert_eq!(job.unique_key.as_deref(), Some("mail:1"));
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.max_attempts, 7);
    assert_eq!(job.run_at, t0());
    assert_eq!(job.locked_until, None);
    assert_eq!(job.last_error, None);
    assert_eq!(job.progress, None);
    assert_eq!(job.finished_at, None);
    assert_recent(job.created_at, "created_at");
    assert_eq!(store.job(job.id).await.expect("job"), job);

    // The same id again is the same job, not a second one.
    let again = store.enqueue(new).await.expect("enqueue again");
    assert!(!again.created);
    assert_eq!(again.job, job);
}

/// A unique key admits one unfinished job; the holder comes back to later
/// callers, and once it finished the key is free again.
pub async fn unique_key_dedupes_while_unfinished(store: Arc<dyn JobStore>) {
    let keyed = |kind: &str| NewJob {
        unique_key: Some("provision:tenant-1".into()),
        ..new_job("provisioning", kind, t0())
    };
    let first = enqueue(store.as_ref(), keyed("provision")).await;
    let second = store.enqueue(keyed("provision")).await.expect("enqueue");
    assert!(!second.created, "a queued holder dedupes");
    assert_eq!(second.job.id, first.id);

    // Racing callers: still one job.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        let job = keyed("provision");
        tasks.spawn(async move { store.enqueue(job).await.expect("enqueue") });
    }
    while let Some(result) = tasks.join_next().await {
        let enqueued = result.expect("task");
        assert!(!enqueued.created);
        assert_eq!(enqueued.job.id, first.id);
    }

    // Running still holds the key.
    claim_one(store.as_ref(), "provisioning", t0()).await;
    let while_running = store.enqueue(keyed("provision")).await.expect("enqueue");
    assert!(!while_running.created, "a running holder dedupes");
    assert_eq!(while_running.job.id, first.id);

    // Finished: the key is free.
    store
        .complete(current_run(store.as_ref(), &first).await)
        .await
        .expect("complete");
    let next = store.enqueue(keyed("provision")).await.expect("enqueue");
    assert!(next.created, "a finished holder frees the key");
    assert_ne!(next.job.id, first.id);

    // Jobs without a key never dedupe.
    let a = enqueue(store.as_ref(), new_job("provisioning", "x", t0())).await;
    let b = enqueue(store.as_ref(), new_job("provisioning", "x", t0())).await;
    assert_ne!(a.id, b.id);
}

/// A claim takes only due jobs of its queue, oldest `run_at` first, at most
/// `limit`, and marks them running with a lease and an attempt counted.
pub async fn claim_respects_run_at_limit_queue_and_order(store: Arc<dyn JobStore>) {
    let later = enqueue(
        store.as_ref(),
        new_job("billing", "invoice", t0() - secs(10)),
    )
    .await;
    let oldest = enqueue(
        store.as_ref(),
        new_job("billing", "invoice", t0() - secs(30)),
    )
    .await;
    let middle = enqueue(
        store.as_ref(),
        new_job("billing", "invoice", t0() - secs(20)),
    )
    .await;
    let future = enqueue(
        store.as_ref(),
        new_job("billing", "invoice", t0() + secs(5)),
    )
    .await;
    let other_queue = enqueue(store.as_ref(), new_job("sync", "invoice", t0() - secs(60))).await;

    let first = store.claim("billing", 2, LEASE, t0()).await.expect("claim");
    let ids: Vec<JobId> = first.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![oldest.id, middle.id],
        "oldest run_at first, limit 2"
    );
    for job in &first {
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.locked_until, Some(t0() + LEASE));
    }
    assert_eq!(store.job(oldest.id).await.expect("job"), first[0]);

    let rest = store
        .claim("billing", 10, LEASE, t0())
        .await
        .expect("claim");
    let ids: Vec<JobId> = rest.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![later.id],
        "not the future job, not another queue's"
    );

    assert!(store
        .claim("billing", 10, LEASE, t0() + secs(4))
        .await
        .expect("claim")
        .is_empty());
    let due = store
        .claim("billing", 10, LEASE, t0() + secs(5))
        .await
        .expect("claim");
    assert_eq!(due.len(), 1, "due exactly at run_at");
    assert_eq!(due[0].id, future.id);

    assert!(store
        .claim("sync", 0, LEASE, t0())
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        claim_one(store.as_ref(), "sync", t0()).await.id,
        other_queue.id
    );
    assert!(store
        .claim("nothing-here", 10, LEASE, t0())
        .await
        .expect("claim")
        .is_empty());
}

/// Workers claiming at the same moment never get the same job, and between
/// them get every job.
pub async fn concurrent_claims_never_share_a_job(store: Arc<dyn JobStore>) {
    let mut all = HashSet::new();
    for i in 0..40 {
        let job = enqueue(store.as_ref(), new_job("default", "k", t0() - secs(i))).await;
        all.insert(job.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store.claim("default", 3, LEASE, t0()).await.expect("claim");
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        for id in result.expect("task") {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen, all);
}

/// A failure with a retry time puts the job back on that schedule, keeps
/// the error, and the job is not claimable before it.
pub async fn fail_with_retry_at_requeues_on_the_stored_schedule(store: Arc<dyn JobStore>) {
    let job = enqueue(store.as_ref(), new_job("default", "k", t0())).await;
    let claimed = claim_one(store.as_ref(), "default", t0()).await;
    assert_eq!(claimed.id, job.id);
    let retry_at = t0() + secs(30);
    store
        .fail(
            current_run(store.as_ref(), &job).await,
            "upstream said 503",
            Some(retry_at),
        )
        .await
        .expect("fail");

    let stored = store.job(job.id).await.expect("job");
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(stored.run_at, retry_at);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_error.as_deref(), Some("upstream said 503"));
    assert_eq!(stored.locked_until, None);
    assert_eq!(stored.finished_at, None);

    assert!(store
        .claim("default", 10, LEASE, retry_at - secs(1))
        .await
        .expect("claim")
        .is_empty());
    let again = claim_one(store.as_ref(), "default", retry_at).await;
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.last_error.as_deref(), Some("upstream said 503"));
}

/// A failure without a retry time is final: failed, kept with its error,
/// found by filter, and no longer claimable or completable.
pub async fn fail_without_retry_is_final_and_listed_by_filter(store: Arc<dyn JobStore>) {
    let doomed = enqueue(store.as_ref(), new_job("billing", "charge", t0())).await;
    let fine = enqueue(store.as_ref(), new_job("billing", "charge", t0())).await;
    let jobs = store.claim("billing", 2, LEASE, t0()).await.expect("claim");
    assert_eq!(jobs.len(), 2);
    store
        .fail(
            current_run(store.as_ref(), &doomed).await,
            "card declined",
            None,
        )
        .await
        .expect("fail");
    store
        .complete(current_run(store.as_ref(), &fine).await)
        .await
        .expect("complete");

    let failed = store.job(doomed.id).await.expect("job");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("card declined"));
    assert_eq!(failed.locked_until, None);
    assert_recent(failed.finished_at.expect("finished_at"), "finished_at");
    let succeeded = store.job(fine.id).await.expect("job");
    assert_eq!(succeeded.state, JobState::Succeeded);
    assert_eq!(succeeded.last_error, None);
    assert!(succeeded.finished_at.is_some());

    let page = store
        .jobs(&JobFilter {
            state: Some(JobState::Failed),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(page.data, vec![failed]);
    assert_eq!(page.next_cursor, None);

    assert!(store
        .claim("billing", 10, LEASE, t0() + secs(3600))
        .await
        .expect("claim")
        .is_empty());
    expect_state_conflict(
        store
            .complete(current_run(store.as_ref(), &doomed).await)
            .await,
        JobState::Failed,
        "completing a failed job",
    );
    expect_state_conflict(
        store
            .fail(current_run(store.as_ref(), &fine).await, "late", None)
            .await,
        JobState::Succeeded,
        "failing a succeeded job",
    );
}

/// A job given back at shutdown is claimable at once and its attempt is
/// not counted.
pub async fn release_does_not_count_an_attempt(store: Arc<dyn JobStore>) {
    let job = enqueue(store.as_ref(), new_job("sync", "pull", t0())).await;
    claim_one(store.as_ref(), "sync", t0()).await;
    store
        .release(current_run(store.as_ref(), &job).await, None)
        .await
        .expect("release");
    let stored = store.job(job.id).await.expect("job");
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.locked_until, None);
    assert_eq!(stored.last_error, None);

    let again = claim_one(store.as_ref(), "sync", t0()).await;
    assert_eq!(again.attempts, 1);
    assert_not_found(store.release(unknown_run(), None).await, "release");
    store
        .complete(current_run(store.as_ref(), &job).await)
        .await
        .expect("complete");
    expect_state_conflict(
        store
            .release(current_run(store.as_ref(), &job).await, None)
            .await,
        JobState::Succeeded,
        "releasing a finished job",
    );
}

/// A running job whose lease ran out (its worker died) is queued again with
/// the attempt counted; one whose lease is live, or was renewed, stays; one
/// on its last attempt fails instead of looping.
pub async fn recover_expired_requeues_only_lapsed_leases(store: Arc<dyn JobStore>) {
    let lost = enqueue(store.as_ref(), new_job("default", "a", t0() - secs(3))).await;
    let renewed = enqueue(store.as_ref(), new_job("default", "b", t0() - secs(2))).await;
    let last_try = enqueue(
        store.as_ref(),
        NewJob {
            max_attempts: 1,
            ..new_job("default", "c", t0() - secs(1))
        },
    )
    .await;
    let jobs = store.claim("default", 3, LEASE, t0()).await.expect("claim");
    assert_eq!(jobs.len(), 3);
    store
        .heartbeat(
            current_run(store.as_ref(), &renewed).await,
            t0() + LEASE * 3,
        )
        .await
        .expect("heartbeat");
    let fresh = enqueue(store.as_ref(), new_job("default", "d", t0() + secs(30))).await;
    claim_one(store.as_ref(), "default", t0() + secs(30)).await;

    assert_eq!(
        store
            .recover_expired(t0() + LEASE - secs(1))
            .await
            .expect("recover"),
        0,
        "every lease still live"
    );
    let recovered = store
        .recover_expired(t0() + LEASE + secs(1))
        .await
        .expect("recover");
    assert_eq!(recovered, 2, "the lost job and the one on its last attempt");

    let requeued = store.job(lost.id).await.expect("job");
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(requeued.attempts, 1, "the attempt stays counted");
    assert_eq!(requeued.locked_until, None);
    assert!(requeued.last_error.is_some(), "says why it came back");
    let gave_up = store.job(last_try.id).await.expect("job");
    assert_eq!(gave_up.state, JobState::Failed);
    assert!(gave_up.finished_at.is_some());
    for id in [renewed.id, fresh.id] {
        let job = store.job(id).await.expect("job");
        assert_eq!(job.state, JobState::Running, "live lease kept");
    }

    let again = claim_one(store.as_ref(), "default", t0() + LEASE + secs(1)).await;
    assert_eq!(again.id, lost.id);
    assert_eq!(again.attempts, 2);
}

/// Heartbeats and progress apply to running jobs only.
pub async fn heartbeat_and_progress_apply_to_running_jobs(store: Arc<dyn JobStore>) {
    let job = enqueue(store.as_ref(), new_job("default", "k", t0())).await;
    expect_state_conflict(
        store
            .set_progress(
                current_run(store.as_ref(), &job).await,
                json!({ "done": 1 }),
            )
            .await,
        JobState::Queued,
        "progress of a queued job",
    );
    expect_state_conflict(
        store
            .heartbeat(current_run(store.as_ref(), &job).await, t0() + LEASE)
            .await,
        JobState::Queued,
        "heartbeat of a queued job",
    );
    claim_one(store.as_ref(), "default", t0()).await;
    store
        .set_progress(
            current_run(store.as_ref(), &job).await,
            json!({ "done": 3, "of": 10 }),
        )
        .await
        .expect("progress");
    store
        .heartbeat(current_run(store.as_ref(), &job).await, t0() + secs(600))
        .await
        .expect("heartbeat");
    let stored = store.job(job.id).await.expect("job");
    assert_eq!(stored.progress, Some(json!({ "done": 3, "of": 10 })));
    assert_eq!(stored.locked_until, Some(t0() + secs(600)));
    store
        .complete(current_run(store.as_ref(), &job).await)
        .await
        .expect("complete");
    let done = store.job(job.id).await.expect("job");
    assert_eq!(done.progress, stored.progress, "progress is kept");

    assert_not_found(store.heartbeat(unknown_run(), t0()).await, "heartbeat");
    assert_not_found(store.complete(unknown_run()).await, "complete");
    assert_not_found(store.fail(unknown_run(), "x", None).await, "fail");
    assert_not_found(store.cancel(JobId::new()).await, "cancel");
    assert_not_found(store.retry(JobId::new(), t0()).await, "retry");
    assert_not_found(store.job(JobId::new()).await, "job");
}

/// Cancel takes queued and failed jobs out (running ones are refused);
/// retry puts failed and cancelled ones back with attempts reset.
pub async fn cancel_and_retry_transitions(store: Arc<dyn JobStore>) {
    let queued = enqueue(store.as_ref(), new_job("default", "k", t0() + secs(60))).await;
    let cancelled = store.cancel(queued.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        store.cancel(queued.id).await.expect("cancel again").state,
        JobState::Cancelled,
        "cancelling twice is harmless"
    );
    assert!(store
        .claim("default", 10, LEASE, t0() + secs(3600))
        .await
        .expect("claim")
        .is_empty());

    let running = enqueue(store.as_ref(), new_job("default", "k", t0())).await;
    claim_one(store.as_ref(), "default", t0()).await;
    expect_state_conflict(
        store.cancel(running.id).await,
        JobState::Running,
        "cancelling a running job",
    );
    expect_state_conflict(
        store.retry(running.id, t0()).await,
        JobState::Running,
        "retrying a running job",
    );
    store
        .fail(
            current_run(store.as_ref(), &running).await,
            "broken",
            Some(t0() + secs(10)),
        )
        .await
        .expect("fail");
    expect_state_conflict(
        store.retry(running.id, t0()).await,
        JobState::Queued,
        "retrying a queued job",
    );
    claim_one(store.as_ref(), "default", t0() + secs(10)).await;
    store
        .fail(
            current_run(store.as_ref(), &running).await,
            "still broken",
            None,
        )
        .await
        .expect("fail");

    let retried = store
        .retry(running.id, t0() + secs(100))
        .await
        .expect("retry");
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.run_at, t0() + secs(100));
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.last_error.as_deref(), Some("still broken"));

    let revived = store
        .retry(queued.id, t0() + secs(100))
        .await
        .expect("retry cancelled");
    assert_eq!(revived.state, JobState::Queued);

    let cancelled_again = store.cancel(running.id).await.expect("cancel queued");
    assert_eq!(cancelled_again.state, JobState::Cancelled);

    // Cancelling a failed job works too; succeeded ones stay succeeded.
    let job = claim_one(store.as_ref(), "default", t0() + secs(100)).await;
    store
        .fail(current_run(store.as_ref(), &job).await, "no", None)
        .await
        .expect("fail");
    assert_eq!(
        store.cancel(job.id).await.expect("cancel failed").state,
        JobState::Cancelled
    );
    let done = enqueue(store.as_ref(), new_job("default", "k", t0())).await;
    claim_one(store.as_ref(), "default", t0()).await;
    store
        .complete(current_run(store.as_ref(), &done).await)
        .await
        .expect("complete");
    expect_state_conflict(
        store.cancel(done.id).await,
        JobState::Succeeded,
        "cancel succeeded",
    );
    expect_state_conflict(
        store.retry(done.id, t0()).await,
        JobState::Succeeded,
        "retry succeeded",
    );

    // Retrying while another unfinished job holds the key is refused.
    let keyed = || NewJob {
        unique_key: Some("only-one".into()),
        ..new_job("default", "k", t0())
    };
    let old = enqueue(store.as_ref(), keyed()).await;
    store.cancel(old.id).await.expect("cancel");
    let new = enqueue(store.as_ref(), keyed()).await;
    match expect_conflict(store.retry(old.id, t0()).await, "retry into a taken key") {
        Conflict::Job(JobConflict::UniqueKey(key)) => assert_eq!(key, "only-one"),
        other => panic!("expected a unique key conflict, got {other:?}"),
    }
    assert_eq!(
        store.job(new.id).await.expect("job").state,
        JobState::Queued
    );
}

/// `jobs()` lists newest first, pages by keyset, and filters by queue,
/// state and kind; `queue_counts()` gives the per-queue gauges.
pub async fn jobs_page_newest_first_and_filter(store: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        let queue = if i < 5 { "default" } else { "sync" };
        ids.push(enqueue(store.as_ref(), new_job(queue, kind, t0())).await.id);
    }
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();

    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .jobs(&JobFilter {
                before,
                limit: 3,
                ..JobFilter::default()
            })
            .await
            .expect("jobs");
        pages += 1;
        assert!(page.data.len() <= 3);
        seen.extend(page.data.iter().map(|j| j.id));
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    let odd = store
        .jobs(&JobFilter {
            kind: Some("odd".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(
        odd.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[5], ids[3], ids[1]]
    );
    let sync_even = store
        .jobs(&JobFilter {
            queue: Some("sync".into()),
            kind: Some("even".into()),
            state: Some(JobState::Queued),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(
        sync_even.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[6]]
    );

    claim_one(store.as_ref(), "sync", t0()).await;
    let counts = store.queue_counts().await.expect("counts");
    let count = |queue: &str, state: JobState| {
        counts
            .iter()
            .find(|c| c.queue == queue && c.state == state)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count("default", JobState::Queued), 5);
    assert_eq!(count("sync", JobState::Queued), 1);
    assert_eq!(count("sync", JobState::Running), 1);
    assert_eq!(count("default", JobState::Running), 0);
    assert!(counts.iter().all(|c: &QueueCount| c.count > 0));
}

/// The cron step: the first sighting only records the next slot (unless
/// asked to run at once); a due slot enqueues exactly once however many
/// nodes call at the same moment.
pub async fn schedule_due_fires_once_per_slot(store: Arc<dyn JobStore>) {
    let slot = t0() + secs(3600);
    let cron_job = || NewJob {
        unique_key: Some("cron:nightly".into()),
        ..new_job("default", "nightly", t0())
    };
    let first = store
        .schedule_due("nightly", t0(), slot, FirstRun::AtNextSlot, cron_job())
        .await
        .expect("first sighting");
    assert!(
        first.is_none(),
        "the first sighting waits for the next slot"
    );
    assert!(store
        .schedule_due(
            "nightly",
            slot - secs(1),
            slot,
            FirstRun::AtNextSlot,
            cron_job()
        )
        .await
        .expect("before the slot")
        .is_none());

    let next_slot = slot + secs(3600);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        let job = NewJob {
            run_at: slot,
            ..cron_job()
        };
        tasks.spawn(async move {
            store
                .schedule_due("nightly", slot, next_slot, FirstRun::AtNextSlot, job)
                .await
                .expect("schedule_due")
        });
    }
    let mut fired = Vec::new();
    while let Some(result) = tasks.join_next().await {
        fired.extend(result.expect("task"));
    }
    assert_eq!(fired.len(), 1, "one node fires the slot");
    assert!(fired[0].created);
    assert_eq!(fired[0].job.kind, "nightly");
    let listed = store
        .jobs(&JobFilter {
            kind: Some("nightly".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(listed.data.len(), 1);

    // Later in the same slot: nothing; the next slot fires again.
    assert!(store
        .schedule_due(
            "nightly",
            slot + secs(5),
            next_slot,
            FirstRun::AtNextSlot,
            cron_job()
        )
        .await
        .expect("same slot")
        .is_none());
    let job = claim_one(store.as_ref(), "default", slot).await;
    store
        .complete(current_run(store.as_ref(), &job).await)
        .await
        .expect("complete");
    let second = store
        .schedule_due(
            "nightly",
            next_slot,
            next_slot + secs(3600),
            FirstRun::AtNextSlot,
            cron_job(),
        )
        .await
        .expect("next slot")
        .expect("fires");
    assert!(second.created);

    // Asked to run at first sighting: concurrent first sightings run once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        let job = NewJob {
            unique_key: Some("cron:sync".into()),
            ..new_job("sync", "sync_all", t0())
        };
        tasks.spawn(async move {
            store
                .schedule_due("sync_all", t0(), slot, FirstRun::Immediately, job)
                .await
                .expect("schedule_due")
        });
    }
    let mut fired = 0;
    while let Some(result) = tasks.join_next().await {
        fired += usize::from(result.expect("task").is_some());
    }
    assert_eq!(fired, 1);

    // A next slot that is not in the future is the caller's mistake.
    assert!(store
        .schedule_due("bad", t0(), t0(), FirstRun::AtNextSlot, cron_job())
        .await
        .is_err());
}

/// The job's run as the store has it now (the stories about one run taking
/// over from another name their runs explicitly).
async fn current_run(store: &dyn JobStore, job: &Job) -> JobRun {
    store.job(job.id).await.expect("job").run()
}

/// A run of a job that does not exist.
fn unknown_run() -> JobRun {
    JobRun {
        id: JobId::new(),
        attempt: 1,
    }
}

/// A worker that stalled past its lease cannot record anything over the
/// run that took the job over: not its outcome, its progress or its lease.
pub async fn a_superseded_run_records_nothing(store: Arc<dyn JobStore>) {
    enqueue(store.as_ref(), new_job("default", "slow", t0())).await;
    let stalled = claim_one(store.as_ref(), "default", t0()).await.run();
    assert_eq!(stalled.attempt, 1);
    store
        .recover_expired(t0() + LEASE + secs(1))
        .await
        .expect("recover");
    let current = claim_one(store.as_ref(), "default", t0() + LEASE + secs(2))
        .await
        .run();
    assert_eq!(current.attempt, 2);

    for (action, result) in [
        ("complete", store.complete(stalled).await),
        ("fail", store.fail(stalled, "late", None).await),
        ("release", store.release(stalled, None).await),
        (
            "heartbeat",
            store.heartbeat(stalled, t0() + LEASE * 5).await,
        ),
        (
            "progress",
            store.set_progress(stalled, json!({ "late": true })).await,
        ),
    ] {
        assert!(
            matches!(
                result,
                Err(StorageError::Conflict(Conflict::Job(
                    JobConflict::Superseded { .. }
                )))
            ),
            "{action}: {result:?}"
        );
    }
    let job = store.job(current.id).await.expect("job");
    assert_eq!(job.state, JobState::Running, "the current run is untouched");
    assert_eq!(job.progress, None);
    store
        .complete(current)
        .await
        .expect("the current run completes");
    assert_eq!(
        store.job(current.id).await.expect("job").state,
        JobState::Succeeded
    );
}

/// Succeeded and cancelled jobs go after their keeping time, failed ones
/// after theirs; queued and running jobs never.
pub async fn purge_removes_only_finished_jobs_past_their_time(store: Arc<dyn JobStore>) {
    for kind in ["done", "doomed", "running"] {
        enqueue(store.as_ref(), new_job("default", kind, t0())).await;
    }
    let waiting = enqueue(
        store.as_ref(),
        new_job("default", "waiting", t0() + secs(60)),
    )
    .await;
    let dropped = enqueue(
        store.as_ref(),
        new_job("default", "dropped", t0() + secs(60)),
    )
    .await;
    store.cancel(dropped.id).await.expect("cancel");
    let claimed = store.claim("default", 3, LEASE, t0()).await.expect("claim");
    let by_kind = |kind: &str| claimed.iter().find(|j| j.kind == kind).expect(kind).clone();
    store
        .complete(by_kind("done").run())
        .await
        .expect("complete");
    store
        .fail(by_kind("doomed").run(), "gave up", None)
        .await
        .expect("fail");

    let now = Utc::now();
    let hour = TimeDelta::hours(1);
    assert_eq!(
        store
            .purge_finished(now - hour, now - hour)
            .await
            .expect("purge"),
        0,
        "nothing finished an hour ago"
    );
    assert_eq!(
        store
            .purge_finished(now + hour, now - hour)
            .await
            .expect("purge"),
        2,
        "the succeeded and the cancelled job"
    );
    assert_eq!(
        store.job(by_kind("doomed").id).await.expect("kept").state,
        JobState::Failed
    );
    assert_eq!(
        store
            .purge_finished(now + hour, now + hour)
            .await
            .expect("purge"),
        1,
        "then the failed one"
    );
    assert_not_found(store.job(by_kind("done").id).await, "purged job");
    assert_eq!(
        store.job(waiting.id).await.expect("queued stays").state,
        JobState::Queued
    );
    assert_eq!(
        store
            .job(by_kind("running").id)
            .await
            .expect("running stays")
            .state,
        JobState::Running
    );
}
