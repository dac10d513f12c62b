-- The cell's own job queue (webhost-jobs), the same tables as the control
-- database's (migrations/control/0002_jobs.sql), so webhook deliveries are
-- enqueued in the transaction that stores their events.
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
CREATE INDEX jobs_claim ON jobs(queue, state, run_at);
CREATE INDEX jobs_running_lease ON jobs(locked_until) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_unfinished ON jobs(unique_key)
    WHERE state IN ('queued', 'running');

CREATE TABLE job_schedules (
    name        TEXT PRIMARY KEY,
    next_run_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- A tenant's webhooks. `events` is a JSON array of event types (empty: all);
-- `secret` is kept as given: every delivery is signed with it.
CREATE TABLE webhooks (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    events               TEXT NOT NULL,
    enabled              INTEGER NOT NULL,
    description          TEXT,
    secret               TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_reason      TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id);

-- Every delivery attempt, newest first by id (UUIDv7).
CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
