CREATE TABLE catalog_versions (
    version    BIGSERIAL PRIMARY KEY,
    body       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE cells (
    id                 UUID PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    pool               TEXT NOT NULL,
    region             TEXT NOT NULL,
    provider           TEXT NOT NULL,
    url                TEXT NOT NULL,
    status             TEXT NOT NULL,
    capacity           INTEGER NOT NULL,
    monthly_cost_cents BIGINT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE tenants (
    id         UUID PRIMARY KEY,
    company    TEXT NOT NULL,
    plan       TEXT NOT NULL,
    country    TEXT NOT NULL,
    pool       TEXT NOT NULL,
    region     TEXT NOT NULL,
    regions    TEXT[] NOT NULL,
    status     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX users_tenant ON users(tenant_id);

CREATE TABLE api_keys (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE routes (
    tenant_id  UUID PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    cell_id    UUID NOT NULL REFERENCES cells(id),
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX routes_cell ON routes(cell_id);

CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    vehicle_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_tenant ON devices(tenant_id);
