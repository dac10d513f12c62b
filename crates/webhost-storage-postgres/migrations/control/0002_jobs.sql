-- Durable background jobs (webhost-jobs) and the cron schedules that
-- enqueue them. New tables only: the previous version keeps running.
CREATE TABLE jobs (
    id           UUID PRIMARY KEY,
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    unique_key   TEXT,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ,
    last_error   TEXT,
    progress     JSONB,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
-- The claim: queued jobs of one queue by run_at (FOR UPDATE SKIP LOCKED).
CREATE INDEX jobs_claim ON jobs(queue, state, run_at);
-- Expired leases.
CREATE INDEX jobs_running_lease ON jobs(locked_until) WHERE state = 'running';
-- At most one unfinished job per unique key.
CREATE UNIQUE INDEX jobs_unique_unfinished ON jobs(unique_key)
    WHERE state IN ('queued', 'running');

-- One row per cron entry: when it runs next. Every node advances it with a
-- compare-and-set, so one slot enqueues one job.
CREATE TABLE job_schedules (
    name        TEXT PRIMARY KEY,
    next_run_at TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
