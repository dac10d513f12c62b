CREATE TABLE tenants (
    id             TEXT PRIMARY KEY,
    plan           TEXT NOT NULL,
    max_vehicles   INTEGER NOT NULL,
    retention_days INTEGER NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE vehicles (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    device_id  TEXT UNIQUE,
    plate      TEXT,
    "group"    TEXT,
    attributes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX vehicles_tenant ON vehicles(tenant_id, id);
