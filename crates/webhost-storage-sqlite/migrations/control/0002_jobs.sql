-- Durable background jobs (webhost-jobs) and the cron schedules that
-- enqueue them. Times are RFC 3339 UTC text as sqlx writes them, which sorts
-- as the instants do, so `run_at <= ?` compares times.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    unique_key   TEXT,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       TEXT NOT NULL,
    locked_until TEXT,
    last_error   TEXT,
    progress     TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
-- The claim: queued jobs of one queue by run_at.
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
    next_run_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
