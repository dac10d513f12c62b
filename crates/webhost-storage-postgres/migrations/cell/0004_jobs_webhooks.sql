-- The cell's own job queue (webhost-jobs), the same tables as the control
-- database's (migrations/control/0002_jobs.sql), so webhook deliveries are
-- enqueued in the transaction that stores their events. New tables only:
-- the previous version keeps running.
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
CREATE INDEX jobs_claim ON jobs(queue, state, run_at);
CREATE INDEX jobs_running_lease ON jobs(locked_until) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_unfinished ON jobs(unique_key)
    WHERE state IN ('queued', 'running');

CREATE TABLE job_schedules (
    name        TEXT PRIMARY KEY,
    next_run_at TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- A tenant's webhooks. `events` holds event types (empty: all); `secret` is
-- kept as given: every delivery is signed with it.
CREATE TABLE webhooks (
    id                   UUID PRIMARY KEY,
    tenant_id            UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    events               TEXT[] NOT NULL,
    enabled              BOOLEAN NOT NULL,
    description          TEXT,
    secret               TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_reason      TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id);

-- Every delivery attempt, newest first by id (UUIDv7).
CREATE TABLE webhook_deliveries (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    webhook_id  UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id UUID NOT NULL,
    event_id    UUID NOT NULL,
    event_type  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
