-- Geofences: a GeoJSON polygon or a circle (centre and radius in metres).
-- `geom` is the PostGIS geometry (SRID 4326): the polygon itself, or the
-- circle's centre point (its radius stays in radius_m; a circle contains a
-- point within radius_m of it, ST_DWithin on geography). The bounding box
-- columns hold the whole shape, as the in-memory index sees it.
CREATE TABLE geofences (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('polygon', 'circle')),
    geometry   JSONB,
    center_lat DOUBLE PRECISION,
    center_lon DOUBLE PRECISION,
    radius_m   DOUBLE PRECISION,
    min_lat    DOUBLE PRECISION NOT NULL,
    min_lon    DOUBLE PRECISION NOT NULL,
    max_lat    DOUBLE PRECISION NOT NULL,
    max_lon    DOUBLE PRECISION NOT NULL,
    geom       geometry(Geometry, 4326) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK (
        (kind = 'polygon' AND geometry IS NOT NULL AND radius_m IS NULL)
        OR (kind = 'circle' AND geometry IS NULL AND center_lat IS NOT NULL
            AND center_lon IS NOT NULL AND radius_m IS NOT NULL)
    )
);
CREATE INDEX geofences_tenant ON geofences (tenant_id, id);
CREATE INDEX geofences_geom ON geofences USING GIST (geom);

-- Events. The position that triggered an event is copied (NULL for events
-- without one); geofence_id is kept when the geofence is deleted.
CREATE TABLE events (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    type        TEXT NOT NULL,
    vehicle_id  UUID NOT NULL,
    geofence_id UUID,
    time        TIMESTAMPTZ NOT NULL,
    lat         DOUBLE PRECISION,
    lon         DOUBLE PRECISION,
    speed       DOUBLE PRECISION,
    heading     DOUBLE PRECISION,
    altitude    DOUBLE PRECISION,
    accuracy    DOUBLE PRECISION,
    valid       BOOLEAN,
    attributes  JSONB,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);
CREATE INDEX events_vehicle_time ON events (vehicle_id, time, id);

-- What the ingest writer remembers per vehicle between batches: the
-- geofence tracker's state, the newest position time seen (valid or not)
-- and whether the vehicle is online (a device_online event with no
-- device_offline since).
CREATE TABLE vehicle_states (
    tenant_id  UUID NOT NULL,
    vehicle_id UUID NOT NULL,
    state      JSONB NOT NULL,
    last_seen  TIMESTAMPTZ,
    online     BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, vehicle_id)
);
-- The offline sweep: online vehicles by how long they have been silent.
CREATE INDEX vehicle_states_online ON vehicle_states (last_seen) WHERE online;
