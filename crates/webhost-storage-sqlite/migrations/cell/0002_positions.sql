-- Position history: one row per (vehicle, time); times in epoch milliseconds.
CREATE TABLE positions (
    vehicle_id TEXT NOT NULL,
    time       INTEGER NOT NULL,
    tenant_id  TEXT NOT NULL,
    lat        REAL NOT NULL,
    lon        REAL NOT NULL,
    speed      REAL,
    heading    REAL,
    altitude   REAL,
    accuracy   REAL,
    valid      INTEGER NOT NULL,
    attributes TEXT,
    PRIMARY KEY (vehicle_id, time)
) WITHOUT ROWID;
-- Retention and tenant-wide scans.
CREATE INDEX positions_tenant_time ON positions (tenant_id, time);

-- The latest valid position per vehicle.
CREATE TABLE latest_positions (
    vehicle_id TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    time       INTEGER NOT NULL,
    lat        REAL NOT NULL,
    lon        REAL NOT NULL,
    speed      REAL,
    heading    REAL,
    altitude   REAL,
    accuracy   REAL,
    valid      INTEGER NOT NULL,
    attributes TEXT
);
CREATE INDEX latest_positions_tenant ON latest_positions (tenant_id);
