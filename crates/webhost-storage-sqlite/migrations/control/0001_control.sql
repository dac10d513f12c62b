-- The catalog is one JSON document per version; the newest is in force.
CREATE TABLE catalog_versions (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE cells (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    pool               TEXT NOT NULL,
    region             TEXT NOT NULL,
    provider           TEXT NOT NULL,
    url                TEXT NOT NULL,
    status             TEXT NOT NULL,
    capacity           INTEGER NOT NULL,
    monthly_cost_cents INTEGER NOT NULL,
    created_at         TEXT NOT NULL
);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    company    TEXT NOT NULL,
    plan       TEXT NOT NULL,
    country    TEXT NOT NULL,
    pool       TEXT NOT NULL,
    region     TEXT NOT NULL,
    regions    TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX users_tenant ON users(tenant_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- The routing table: one entry per tenant, versioned.
CREATE TABLE routes (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    cell_id    TEXT NOT NULL REFERENCES cells(id),
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX routes_cell ON routes(cell_id);

-- The global device registry: device unique id -> tenant.
CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    vehicle_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX devices_tenant ON devices(tenant_id);
