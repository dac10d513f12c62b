-- Each tenant's use as its cell last reported it (the usage job).
CREATE TABLE tenant_usage (
    tenant_id          UUID PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    cell_id            UUID NOT NULL,
    positions_stored   BIGINT NOT NULL,
    storage_bytes      BIGINT NOT NULL,
    positions_ingested BIGINT NOT NULL,
    api_requests       BIGINT NOT NULL,
    measured_at        TIMESTAMPTZ NOT NULL
);
