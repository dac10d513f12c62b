-- Position history, partitioned by day so that retention drops whole
-- partitions instead of running large DELETEs. Partitions are created ahead
-- by the maintenance job and on demand by inserts.
CREATE TABLE positions (
    vehicle_id UUID NOT NULL,
    time       TIMESTAMPTZ NOT NULL,
    tenant_id  UUID NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lon        DOUBLE PRECISION NOT NULL,
    speed      DOUBLE PRECISION,
    heading    DOUBLE PRECISION,
    altitude   DOUBLE PRECISION,
    accuracy   DOUBLE PRECISION,
    valid      BOOLEAN NOT NULL,
    attributes JSONB,
    PRIMARY KEY (vehicle_id, time)
) PARTITION BY RANGE (time);
CREATE INDEX positions_tenant_time ON positions (tenant_id, time);

CREATE TABLE latest_positions (
    vehicle_id UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    time       TIMESTAMPTZ NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lon        DOUBLE PRECISION NOT NULL,
    speed      DOUBLE PRECISION,
    heading    DOUBLE PRECISION,
    altitude   DOUBLE PRECISION,
    accuracy   DOUBLE PRECISION,
    valid      BOOLEAN NOT NULL,
    attributes JSONB
);
CREATE INDEX latest_positions_tenant ON latest_positions (tenant_id);
