-- Each tenant's use as its cell last reported it (the usage job).
CREATE TABLE tenant_usage (
    tenant_id          TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    cell_id            TEXT NOT NULL,
    positions_stored   INTEGER NOT NULL,
    storage_bytes      INTEGER NOT NULL,
    positions_ingested INTEGER NOT NULL,
    api_requests       INTEGER NOT NULL,
    measured_at        TEXT NOT NULL
);
