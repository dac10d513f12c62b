//! `JobStore` on PostgreSQL. A claim locks the rows it takes with
//! `FOR UPDATE SKIP LOCKED`, so workers on many nodes never take the same
//! job and never wait for one another; the cron step advances its schedule
//! row with a conditional `UPDATE`, which a concurrent caller re-checks after
//! the first commits and so finds no longer due.
//!
//! The control database and every cell database hold the same `jobs`
//! tables: the SQL lives once, on [`Queue`] (a database's pool), and both
//! store types delegate to it (`delegate_job_store!`).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use webhost_domain::JobId;
use webhost_storage::{
    fetch_limit, job_run_miss, job_state_conflict, Enqueued, FirstRun, Job, JobConflict, JobFilter,
    JobRun, JobState, JobStore, NewJob, Page, QueueCount, StorageError, StorageResult, MAX_PAGE,
};

use crate::{corrupt, unexpected, PgCellStore, PgControlStore};

/// An attempt count as the column's type.
fn int4(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Rows one purge statement deletes at most.
const PURGE_BATCH: i64 = 5_000;

const JOB_COLUMNS: &str = "id, queue, kind, payload, unique_key, state, attempts, max_attempts, \
     run_at, locked_until, last_error, progress, created_at, updated_at, finished_at";

/// `last_error` of a job whose worker stopped renewing its lease.
const LEASE_EXPIRED: &str = "lease expired: the worker running it was lost";

/// How often `enqueue` tries again when the unique key's holder finished
/// between its insert and its look-up.
const ENQUEUE_TRIES: usize = 3;

fn job_from_row(row: &PgRow) -> StorageResult<Job> {
    let state: String = row.try_get("state").map_err(unexpected)?;
    Ok(Job {
        id: JobId::from_uuid(row.try_get("id").map_err(unexpected)?),
        queue: row.try_get("queue").map_err(unexpected)?,
        kind: row.try_get("kind").map_err(unexpected)?,
        payload: row.try_get("payload").map_err(unexpected)?,
        unique_key: row.try_get("unique_key").map_err(unexpected)?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        attempts: row
            .try_get::<i32, _>("attempts")
            .map_err(unexpected)?
            .max(0) as u32,
        max_attempts: row
            .try_get::<i32, _>("max_attempts")
            .map_err(unexpected)?
            .max(0) as u32,
        run_at: row.try_get("run_at").map_err(unexpected)?,
        locked_until: row.try_get("locked_until").map_err(unexpected)?,
        last_error: row.try_get("last_error").map_err(unexpected)?,
        progress: row.try_get("progress").map_err(unexpected)?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
        finished_at: row.try_get("finished_at").map_err(unexpected)?,
    })
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

fn attempts_column(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Inserts `job` unless its id or unfinished unique key is taken, in which
/// case the holder comes back. An insert that meets an uncommitted holder
/// waits for it; if the holder finished before the look-up, insert again.
async fn enqueue_on(conn: &mut PgConnection, job: &NewJob) -> StorageResult<Enqueued> {
    for _ in 0..ENQUEUE_TRIES {
        let now = Utc::now();
        let inserted = sqlx::query(&format!(
            "INSERT INTO jobs (id, queue, kind, payload, unique_key, state, attempts, \
             max_attempts, run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $8) \
             ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
        ))
        .bind(job.id.as_uuid())
        .bind(&job.queue)
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.unique_key)
        .bind(attempts_column(job.max_attempts))
        .bind(job.run_at)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unexpected)?;
        if let Some(row) = inserted {
            return Ok(Enqueued {
                job: job_from_row(&row)?,
                created: true,
            });
        }
        let holder = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 \
             OR (unique_key = $2 AND state IN ('queued', 'running')) \
             ORDER BY id = $1 DESC LIMIT 1"
        ))
        .bind(job.id.as_uuid())
        .bind(&job.unique_key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unexpected)?;
        if let Some(row) = holder {
            return Ok(Enqueued {
                job: job_from_row(&row)?,
                created: false,
            });
        }
    }
    Err(StorageError::Unexpected(anyhow::anyhow!(
        "job {} was neither inserted nor found after {ENQUEUE_TRIES} tries",
        job.id
    )))
}

/// Enqueues `jobs` inside the caller's transaction, leaving out those
/// whose id or unfinished unique key is taken (as `enqueue` would return the
/// holder): one statement, so a group commit with many deliveries costs one
/// round trip. A unique key held by a job not yet committed makes this wait
/// for that transaction, as any insert does.
pub(crate) async fn insert_jobs(conn: &mut PgConnection, jobs: &[NewJob]) -> StorageResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id.as_uuid()).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.payload).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let attempts: Vec<i32> = jobs
        .iter()
        .map(|j| attempts_column(j.max_attempts))
        .collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.run_at).collect();
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, unique_key, state, attempts, max_attempts, \
         run_at, created_at, updated_at) \
         SELECT id, queue, kind, payload, unique_key, 'queued', 0, max_attempts, run_at, $8, $8 \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::int4[], \
         $7::timestamptz[]) AS j(id, queue, kind, payload, unique_key, max_attempts, run_at) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&keys)
    .bind(&attempts)
    .bind(&run_at)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    Ok(())
}

/// The job queue of one database.
pub(crate) struct Queue {
    pool: sqlx::PgPool,
}

/// Both stores keep their job queue in their own database.
macro_rules! queue_of {
    ($store:ty) => {
        impl $store {
            fn queue(&self) -> Queue {
                Queue {
                    pool: self.pool.clone(),
                }
            }
        }
        webhost_storage::delegate_job_store!($store);
    };
}

queue_of!(PgControlStore);
queue_of!(PgCellStore);

impl Queue {
    /// Why a transition of `run` matched no row: the job is missing, in
    /// another state, or taken over by a later run.
    async fn run_miss(&self, run: JobRun, action: &'static str) -> StorageError {
        match self.job(run.id).await {
            Ok(job) => job_run_miss(run, action, &job),
            Err(err) => err,
        }
    }

    /// Why a transition of job `id` matched no row: the job is missing, or
    /// in a state `action` does not apply to.
    async fn job_miss(&self, id: JobId, action: &'static str) -> StorageError {
        match self.job(id).await {
            Ok(job) => job_state_conflict(action, job.state),
            Err(err) => err,
        }
    }

    /// Runs an `UPDATE … WHERE id = $n AND state = 'running'` built by the
    /// caller; `action` names it in the refusal when nothing matched.
    async fn update_running(
        &self,
        run: JobRun,
        action: &'static str,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> StorageResult<()> {
        let done = query.execute(&self.pool).await.map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(self.run_miss(run, action).await);
        }
        Ok(())
    }
}

#[async_trait]
impl JobStore for Queue {
    async fn enqueue(&self, job: NewJob) -> StorageResult<Enqueued> {
        let mut conn = self.pool.acquire().await.map_err(unexpected)?;
        enqueue_on(&mut conn, &job).await
    }

    async fn claim(
        &self,
        queue: &str,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> StorageResult<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "WITH due AS (SELECT id FROM jobs WHERE queue = $1 AND state = 'queued' \
             AND run_at <= $2 ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = $4, \
             updated_at = $5 WHERE id IN (SELECT id FROM due) RETURNING {JOB_COLUMNS}"
        ))
        .bind(queue)
        .bind(now)
        .bind(i64::from(limit))
        .bind(now + lease)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StorageResult<Vec<_>>>()?;
        // RETURNING has no order of its own.
        jobs.sort_by_key(|job| (job.run_at, job.id));
        Ok(jobs)
    }

    async fn heartbeat(&self, run: JobRun, locked_until: DateTime<Utc>) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET locked_until = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'running' AND attempts = $4",
        )
        .bind(locked_until)
        .bind(Utc::now())
        .bind(id.as_uuid())
        .bind(int4(run.attempt));
        self.update_running(run, "renew the lease of", query).await
    }

    async fn set_progress(&self, run: JobRun, progress: serde_json::Value) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET progress = $1, updated_at = $2 WHERE id = $3 AND state = 'running' AND attempts = $4",
        )
        .bind(progress)
        .bind(Utc::now())
        .bind(id.as_uuid())
        .bind(int4(run.attempt));
        self.update_running(run, "record progress of", query).await
    }

    async fn complete(&self, run: JobRun) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', locked_until = NULL, finished_at = $1, \
             updated_at = $1 WHERE id = $2 AND state = 'running' AND attempts = $3",
        )
        .bind(Utc::now())
        .bind(id.as_uuid())
        .bind(int4(run.attempt));
        self.update_running(run, "complete", query).await
    }

    async fn fail(
        &self,
        run: JobRun,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StorageResult<()> {
        // `retry_at` NULL: failed for good; otherwise queued again then.
        let query = sqlx::query(
            "UPDATE jobs SET \
             state = CASE WHEN $1::timestamptz IS NULL THEN 'failed' ELSE 'queued' END, \
             run_at = COALESCE($1, run_at), locked_until = NULL, last_error = $2, \
             finished_at = CASE WHEN $1::timestamptz IS NULL THEN $3 END, updated_at = $3 \
             WHERE id = $4 AND state = 'running' AND attempts = $5",
        )
        .bind(retry_at)
        .bind(error)
        .bind(Utc::now())
        .bind(run.id.as_uuid())
        .bind(int4(run.attempt));
        self.update_running(run, "fail", query).await
    }

    async fn release(&self, run: JobRun, run_at: Option<DateTime<Utc>>) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), \
             run_at = COALESCE($3, run_at), locked_until = NULL, updated_at = $1 \
             WHERE id = $2 AND state = 'running' AND attempts = $4",
        )
        .bind(Utc::now())
        .bind(id.as_uuid())
        .bind(run_at)
        .bind(int4(run.attempt));
        self.update_running(run, "release", query).await
    }

    async fn purge_finished(
        &self,
        succeeded_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
    ) -> StorageResult<u64> {
        // In batches: short transactions, so workers wait at most one.
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL \
                 AND ((state IN ('succeeded', 'cancelled') AND finished_at < $1) \
                 OR (state = 'failed' AND finished_at < $2)) LIMIT $3)",
            )
            .bind(succeeded_before)
            .bind(failed_before)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(unexpected)?;
            purged += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    async fn recover_expired(&self, now: DateTime<Utc>) -> StorageResult<u64> {
        // One statement: the last allowed attempt fails, the others go back.
        let done = sqlx::query(
            "UPDATE jobs SET \
             state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
             finished_at = CASE WHEN attempts >= max_attempts THEN $1 END, \
             locked_until = NULL, last_error = $2, updated_at = $1 \
             WHERE state = 'running' AND locked_until < $3",
        )
        .bind(Utc::now())
        .bind(LEASE_EXPIRED)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unexpected)?;
        Ok(done.rows_affected())
    }

    async fn cancel(&self, id: JobId) -> StorageResult<Job> {
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'cancelled', locked_until = NULL, finished_at = $1, \
             updated_at = $1 WHERE id = $2 AND state IN ('queued', 'failed') \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(Utc::now())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unexpected)?;
        match row {
            Some(row) => job_from_row(&row),
            None => {
                let job = self.job(id).await?;
                match job.state {
                    JobState::Cancelled => Ok(job),
                    state => Err(job_state_conflict("cancel", state)),
                }
            }
        }
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StorageResult<Job> {
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'queued', run_at = $1, attempts = 0, locked_until = NULL, \
             finished_at = NULL, updated_at = $2 \
             WHERE id = $3 AND state IN ('failed', 'cancelled') RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(Utc::now())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(Some(row)) => job_from_row(&row),
            Ok(None) => Err(self.job_miss(id, "retry").await),
            Err(err) if is_unique_violation(&err) => {
                let key = self.job(id).await?.unique_key.unwrap_or_default();
                Err(JobConflict::UniqueKey(key).into())
            }
            Err(err) => Err(unexpected(err)),
        }
    }

    async fn job(&self, id: JobId) -> StorageResult<Job> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unexpected)?
            .ok_or(StorageError::NotFound("job"))?;
        job_from_row(&row)
    }

    async fn jobs(&self, filter: &JobFilter) -> StorageResult<Page<Job, JobId>> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR queue = $1) \
             AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3) \
             AND ($4::uuid IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(&filter.queue)
        .bind(filter.state.map(JobState::as_str))
        .bind(&filter.kind)
        .bind(filter.before.map(|id| id.as_uuid()))
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        let data = rows
            .iter()
            .map(job_from_row)
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(data, limit, |job| job.id))
    }

    async fn queue_counts(&self) -> StorageResult<Vec<QueueCount>> {
        let rows = sqlx::query(
            "SELECT queue, state, COUNT(*) AS n FROM jobs GROUP BY queue, state \
             ORDER BY queue, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(unexpected)?;
                Ok(QueueCount {
                    queue: row.try_get("queue").map_err(unexpected)?,
                    state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
                    count: row.try_get::<i64, _>("n").map_err(unexpected)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn schedule_due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        next_after: DateTime<Utc>,
        first: FirstRun,
        job: NewJob,
    ) -> StorageResult<Option<Enqueued>> {
        if next_after <= now {
            return Err(StorageError::Unexpected(anyhow::anyhow!(
                "schedule {name}: the next run ({next_after}) must be after now ({now})"
            )));
        }
        let wall = Utc::now();
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // A concurrent first insert waits for the other's commit, then does
        // nothing, and its UPDATE below finds the new slot not yet due.
        let created = sqlx::query(
            "INSERT INTO job_schedules (name, next_run_at, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(next_after)
        .bind(wall)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?
        .rows_affected()
            == 1;
        let due = if created {
            first == FirstRun::Immediately
        } else {
            // Compare-and-set: a concurrent caller blocks on the row lock,
            // re-checks the condition on the committed row and matches
            // nothing.
            sqlx::query(
                "UPDATE job_schedules SET next_run_at = $1, updated_at = $2 \
                 WHERE name = $3 AND next_run_at <= $4",
            )
            .bind(next_after)
            .bind(wall)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?
            .rows_affected()
                == 1
        };
        let enqueued = if due {
            Some(enqueue_on(&mut tx, &job).await?)
        } else {
            None
        };
        tx.commit().await.map_err(unexpected)?;
        Ok(enqueued)
    }
}
