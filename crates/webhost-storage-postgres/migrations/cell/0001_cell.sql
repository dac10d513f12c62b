-- Geofences (and later spatial queries) use PostGIS.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE tenants (
    id             UUID PRIMARY KEY,
    plan           TEXT NOT NULL,
    max_vehicles   INTEGER NOT NULL,
    retention_days INTEGER NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE vehicles (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    device_id  TEXT UNIQUE,
    plate      TEXT,
    "group"    TEXT,
    attributes JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX vehicles_tenant ON vehicles(tenant_id, id);
