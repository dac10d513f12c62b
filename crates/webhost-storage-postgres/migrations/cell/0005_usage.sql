-- What the cell counted per tenant and day: positions stored (resends not
-- counted) and API requests. Reported to the control plane over a window.
CREATE TABLE tenant_usage_daily (
    tenant_id          UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day                DATE NOT NULL,
    positions_ingested BIGINT NOT NULL DEFAULT 0,
    api_requests       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
