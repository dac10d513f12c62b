-- What the cell counted per tenant and day: positions stored (resends not
-- counted) and API requests. Reported to the control plane over a window.
CREATE TABLE tenant_usage_daily (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day                TEXT NOT NULL,
    positions_ingested INTEGER NOT NULL DEFAULT 0,
    api_requests       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;
