-- The tenant move (SPEC §6). While `frozen_until` is in the future the edges
-- hold the tenant's writes; the move clears it after the switch. A nullable
-- column without a default: compatible with the version still running.
ALTER TABLE routes ADD COLUMN frozen_until TIMESTAMPTZ;

-- A move as the control plane keeps it: the state machine's JSON, plus what
-- the operator lists and filters by. Finished moves stay for the record.
CREATE TABLE tenant_moves (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_cell UUID NOT NULL,
    target_cell UUID,
    phase       TEXT NOT NULL,
    finished    BOOLEAN NOT NULL DEFAULT FALSE,
    state       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX tenant_moves_one_active ON tenant_moves(tenant_id) WHERE NOT finished;
CREATE INDEX tenant_moves_newest ON tenant_moves(created_at, id);
