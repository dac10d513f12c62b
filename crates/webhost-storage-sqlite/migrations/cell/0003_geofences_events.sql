-- Geofences: a GeoJSON polygon or a circle (centre and radius in metres),
-- with the bounding box of the shape for spatial pre-filtering. The exact
-- test runs on the parsed shape (webhost-geofence).
CREATE TABLE geofences (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('polygon', 'circle')),
    -- GeoJSON Polygon geometry object, for kind = 'polygon'.
    geometry   TEXT,
    -- For kind = 'circle'.
    center_lat REAL,
    center_lon REAL,
    radius_m   REAL,
    min_lat    REAL NOT NULL,
    min_lon    REAL NOT NULL,
    max_lat    REAL NOT NULL,
    max_lon    REAL NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (
        (kind = 'polygon' AND geometry IS NOT NULL AND radius_m IS NULL)
        OR (kind = 'circle' AND geometry IS NULL AND center_lat IS NOT NULL
            AND center_lon IS NOT NULL AND radius_m IS NOT NULL)
    )
);
CREATE INDEX geofences_tenant ON geofences (tenant_id, id);
CREATE INDEX geofences_bbox ON geofences (tenant_id, min_lat, max_lat, min_lon, max_lon);

-- Events: times in epoch milliseconds, like positions. The position that
-- triggered an event is copied (NULL for events without one); geofence_id
-- is kept when the geofence is deleted.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    vehicle_id  TEXT NOT NULL,
    geofence_id TEXT,
    time        INTEGER NOT NULL,
    lat         REAL,
    lon         REAL,
    speed       REAL,
    heading     REAL,
    altitude    REAL,
    accuracy    REAL,
    valid       INTEGER,
    attributes  TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);
CREATE INDEX events_vehicle_time ON events (vehicle_id, time, id);

-- What the ingest writer remembers per vehicle between batches: the
-- geofence tracker's state (JSON), the newest position time seen (valid or
-- not, epoch ms) and whether the vehicle is online (a device_online event
-- with no device_offline since).
CREATE TABLE vehicle_states (
    tenant_id  TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    last_seen  INTEGER,
    online     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, vehicle_id)
) WITHOUT ROWID;
-- The offline sweep: online vehicles by how long they have been silent.
CREATE INDEX vehicle_states_online ON vehicle_states (last_seen) WHERE online = 1;
