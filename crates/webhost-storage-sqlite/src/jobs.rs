//! `JobStore` on SQLite. Every write goes through the one writer connection,
//! so a claim (one `UPDATE … RETURNING`) is atomic against every other write
//! and two workers never get the same job; the cron step is one write
//! transaction.
//!
//! The control database and every cell database hold the same `jobs`
//! tables: the SQL lives once, on [`Queue`] (a database's pools), and both
//! store types delegate to it ([`delegate_job_store!`]).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use webhost_domain::JobId;
use webhost_storage::{
    fetch_limit, job_run_miss, job_state_conflict, Enqueued, FirstRun, Job, JobConflict, JobFilter,
    JobRun, JobState, JobStore, NewJob, Page, QueueCount, StorageError, StorageResult, MAX_PAGE,
};

use crate::{corrupt, parse_uuid, unexpected, Pools, SqliteCellStore, SqliteControlStore};

/// Rows one purge statement deletes at most.
const PURGE_BATCH: i64 = 5_000;

const JOB_COLUMNS: &str = "id, queue, kind, payload, unique_key, state, attempts, max_attempts, \
     run_at, locked_until, last_error, progress, created_at, updated_at, finished_at";

/// `last_error` of a job whose worker stopped renewing its lease.
const LEASE_EXPIRED: &str = "lease expired: the worker running it was lost";

fn json(raw: &str, what: &str) -> StorageResult<serde_json::Value> {
    serde_json::from_str(raw).map_err(|_| corrupt(what, raw))
}

fn job_from_row(row: &SqliteRow) -> StorageResult<Job> {
    let state: String = row.try_get("state").map_err(unexpected)?;
    let payload: String = row.try_get("payload").map_err(unexpected)?;
    let progress: Option<String> = row.try_get("progress").map_err(unexpected)?;
    Ok(Job {
        id: JobId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        queue: row.try_get("queue").map_err(unexpected)?,
        kind: row.try_get("kind").map_err(unexpected)?,
        payload: json(&payload, "job payload")?,
        unique_key: row.try_get("unique_key").map_err(unexpected)?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        attempts: row.try_get::<i64, _>("attempts").map_err(unexpected)? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts").map_err(unexpected)? as u32,
        run_at: row.try_get("run_at").map_err(unexpected)?,
        locked_until: row.try_get("locked_until").map_err(unexpected)?,
        last_error: row.try_get("last_error").map_err(unexpected)?,
        progress: progress
            .as_deref()
            .map(|raw| json(raw, "job progress"))
            .transpose()?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
        finished_at: row.try_get("finished_at").map_err(unexpected)?,
    })
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Inserts `job` unless its id or unfinished unique key is taken, in which
/// case the holder comes back. Runs on the writer (or inside its
/// transaction), so nothing else writes between the two statements.
async fn enqueue_on(conn: &mut SqliteConnection, job: &NewJob) -> StorageResult<Enqueued> {
    let now = Utc::now();
    let payload = job.payload.to_string();
    let inserted = sqlx::query(&format!(
        "INSERT INTO jobs (id, queue, kind, payload, unique_key, state, attempts, max_attempts, \
         run_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?) \
         ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
    ))
    .bind(job.id.to_string())
    .bind(&job.queue)
    .bind(&job.kind)
    .bind(&payload)
    .bind(&job.unique_key)
    .bind(i64::from(job.max_attempts))
    .bind(job.run_at)
    .bind(now)
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
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? \
         OR (unique_key = ? AND state IN ('queued', 'running')) \
         ORDER BY id = ? DESC LIMIT 1"
    ))
    .bind(job.id.to_string())
    .bind(&job.unique_key)
    .bind(job.id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(unexpected)?
    .ok_or_else(|| {
        StorageError::Unexpected(anyhow::anyhow!(
            "job {} was neither inserted nor found",
            job.id
        ))
    })?;
    Ok(Enqueued {
        job: job_from_row(&holder)?,
        created: false,
    })
}

/// Enqueues `jobs` inside the caller's transaction, leaving out those
/// whose id or unfinished unique key is taken (as `enqueue` would return the
/// holder). Multi-row inserts, so a group commit with many deliveries costs
/// a few statements.
pub(crate) async fn insert_jobs(conn: &mut SqliteConnection, jobs: &[NewJob]) -> StorageResult<()> {
    // 9 parameters a row, well under SQLite's limit.
    const CHUNK: usize = 500;
    let now = Utc::now();
    for chunk in jobs.chunks(CHUNK) {
        let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO jobs (id, queue, kind, payload, unique_key, state, attempts, \
             max_attempts, run_at, created_at, updated_at) ",
        );
        builder.push_values(chunk, |mut b, job| {
            b.push_bind(job.id.to_string())
                .push_bind(&job.queue)
                .push_bind(&job.kind)
                .push_bind(job.payload.to_string())
                .push_bind(&job.unique_key)
                .push("'queued'")
                .push("0")
                .push_bind(i64::from(job.max_attempts))
                .push_bind(job.run_at)
                .push_bind(now)
                .push_bind(now);
        });
        builder.push(" ON CONFLICT DO NOTHING");
        builder
            .build()
            .execute(&mut *conn)
            .await
            .map_err(unexpected)?;
    }
    Ok(())
}

/// The job queue of one database.
pub(crate) struct Queue {
    pools: Pools,
}

/// Both stores keep their job queue in their own database.
macro_rules! queue_of {
    ($store:ty) => {
        impl $store {
            fn queue(&self) -> Queue {
                Queue {
                    pools: self.pools.clone(),
                }
            }
        }
        webhost_storage::delegate_job_store!($store);
    };
}

queue_of!(SqliteControlStore);
queue_of!(SqliteCellStore);

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

    /// Runs an `UPDATE … WHERE id = ? AND state = 'running'` built by the
    /// caller; `action` names it in the refusal when nothing matched.
    async fn update_running<'q>(
        &self,
        run: JobRun,
        action: &'static str,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> StorageResult<()> {
        let done = query
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(self.run_miss(run, action).await);
        }
        Ok(())
    }
}

#[async_trait]
impl JobStore for Queue {
    async fn enqueue(&self, job: NewJob) -> StorageResult<Enqueued> {
        let mut conn = self.pools.writer.acquire().await.map_err(unexpected)?;
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
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = ?, \
             updated_at = ? WHERE id IN (SELECT id FROM jobs WHERE queue = ? \
             AND state = 'queued' AND run_at <= ? ORDER BY run_at, id LIMIT ?) \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(now + lease)
        .bind(Utc::now())
        .bind(queue)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pools.writer)
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
            "UPDATE jobs SET locked_until = ?, updated_at = ? WHERE id = ? AND state = 'running' AND attempts = ?",
        )
        .bind(locked_until)
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(i64::from(run.attempt));
        self.update_running(run, "renew the lease of", query).await
    }

    async fn set_progress(&self, run: JobRun, progress: serde_json::Value) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND state = 'running' AND attempts = ?",
        )
        .bind(progress.to_string())
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(i64::from(run.attempt));
        self.update_running(run, "record progress of", query).await
    }

    async fn complete(&self, run: JobRun) -> StorageResult<()> {
        let id = run.id;
        let now = Utc::now();
        let query = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', locked_until = NULL, finished_at = ?, \
             updated_at = ? WHERE id = ? AND state = 'running' AND attempts = ?",
        )
        .bind(now)
        .bind(now)
        .bind(id.to_string())
        .bind(i64::from(run.attempt));
        self.update_running(run, "complete", query).await
    }

    async fn fail(
        &self,
        run: JobRun,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StorageResult<()> {
        let now = Utc::now();
        let query = match retry_at {
            Some(retry_at) => sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = ?, locked_until = NULL, \
                 last_error = ?, updated_at = ? WHERE id = ? AND state = 'running' AND attempts = ?",
            )
            .bind(retry_at),
            None => sqlx::query(
                "UPDATE jobs SET state = 'failed', locked_until = NULL, last_error = ?, \
                 finished_at = ?, updated_at = ? WHERE id = ? AND state = 'running' AND attempts = ?",
            ),
        };
        let query = match retry_at {
            Some(_) => query.bind(error).bind(now),
            None => query.bind(error).bind(now).bind(now),
        };
        self.update_running(
            run,
            "fail",
            query.bind(run.id.to_string()).bind(i64::from(run.attempt)),
        )
        .await
    }

    async fn release(&self, run: JobRun, run_at: Option<DateTime<Utc>>) -> StorageResult<()> {
        let id = run.id;
        let query = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), \
             run_at = COALESCE(?, run_at), locked_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND attempts = ?",
        )
        .bind(run_at)
        .bind(Utc::now())
        .bind(id.to_string())
        .bind(i64::from(run.attempt));
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
                 AND ((state IN ('succeeded', 'cancelled') AND finished_at < ?1) \
                 OR (state = 'failed' AND finished_at < ?2)) LIMIT ?3)",
            )
            .bind(succeeded_before)
            .bind(failed_before)
            .bind(PURGE_BATCH)
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
            purged += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    async fn recover_expired(&self, now: DateTime<Utc>) -> StorageResult<u64> {
        let wall = Utc::now();
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', locked_until = NULL, last_error = ?, \
             finished_at = ?, updated_at = ? \
             WHERE state = 'running' AND locked_until < ? AND attempts >= max_attempts",
        )
        .bind(LEASE_EXPIRED)
        .bind(wall)
        .bind(wall)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?
        .rows_affected();
        let requeued = sqlx::query(
            "UPDATE jobs SET state = 'queued', locked_until = NULL, last_error = ?, \
             updated_at = ? WHERE state = 'running' AND locked_until < ?",
        )
        .bind(LEASE_EXPIRED)
        .bind(wall)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?
        .rows_affected();
        tx.commit().await.map_err(unexpected)?;
        Ok(failed + requeued)
    }

    async fn cancel(&self, id: JobId) -> StorageResult<Job> {
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'cancelled', locked_until = NULL, finished_at = ?, \
             updated_at = ? WHERE id = ? AND state IN ('queued', 'failed') \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(now)
        .bind(id.to_string())
        .fetch_optional(&self.pools.writer)
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
            "UPDATE jobs SET state = 'queued', run_at = ?, attempts = 0, locked_until = NULL, \
             finished_at = NULL, updated_at = ? WHERE id = ? AND state IN ('failed', 'cancelled') \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(Utc::now())
        .bind(id.to_string())
        .fetch_optional(&self.pools.writer)
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
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .ok_or(StorageError::NotFound("job"))?;
        job_from_row(&row)
    }

    async fn jobs(&self, filter: &JobFilter) -> StorageResult<Page<Job, JobId>> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let state = filter.state.map(JobState::as_str);
        let before = filter.before.map(|id| id.to_string());
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (? IS NULL OR queue = ?) \
             AND (? IS NULL OR state = ?) AND (? IS NULL OR kind = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        ))
        .bind(&filter.queue)
        .bind(&filter.queue)
        .bind(state)
        .bind(state)
        .bind(&filter.kind)
        .bind(&filter.kind)
        .bind(&before)
        .bind(&before)
        .bind(fetch_limit(limit))
        .fetch_all(&self.pools.reader)
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
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(unexpected)?;
                Ok(QueueCount {
                    queue: row.try_get("queue").map_err(unexpected)?,
                    state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
                    count: row.try_get::<i64, _>("n").map_err(unexpected)? as u64,
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
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let created = sqlx::query(
            "INSERT INTO job_schedules (name, next_run_at, updated_at) VALUES (?, ?, ?) \
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
            // Compare-and-set: only the caller that finds the slot still due
            // moves it on.
            sqlx::query(
                "UPDATE job_schedules SET next_run_at = ?, updated_at = ? \
                 WHERE name = ? AND next_run_at <= ?",
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
