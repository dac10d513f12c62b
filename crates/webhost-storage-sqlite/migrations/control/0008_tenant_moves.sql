-- The tenant move (SPEC §6). While `frozen_until` is in the future the edges
-- hold the tenant's writes; the move clears it after the switch.
ALTER TABLE routes ADD COLUMN frozen_until TEXT;

-- A move as the control plane keeps it: the state machine's JSON, plus what
-- the operator lists and filters by. Finished moves stay for the record.
CREATE TABLE tenant_moves (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_cell TEXT NOT NULL,
    target_cell TEXT,
    phase       TEXT NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX tenant_moves_one_active ON tenant_moves(tenant_id) WHERE finished = 0;
CREATE INDEX tenant_moves_newest ON tenant_moves(created_at, id);
