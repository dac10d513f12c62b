-- The catch-up of a live tenant move (SPEC §6): every row of a transfer
-- table carries the change clock's value when it was last written, and
-- deleted keys leave a tombstone. See src/transfer.rs for the protocol.
--
-- One row: the value changes get now. `change_watermark` bumps it (on the
-- writer connection, so between two write transactions).
CREATE TABLE transfer_clock (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO transfer_clock (id, seq) VALUES (1, 1);

-- Rows written before this migration: 0, below every watermark.
ALTER TABLE vehicles ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE geofences ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vehicle_states ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE latest_positions ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;

-- A tenant's changes in page order, for the big tables (the others hold a
-- few rows per vehicle and are read through their tenant index).
CREATE INDEX positions_tenant_change ON positions (tenant_id, change_seq, vehicle_id, time);
CREATE INDEX events_tenant_change ON events (tenant_id, change_seq, time, id);
CREATE INDEX webhook_deliveries_tenant_change
    ON webhook_deliveries (tenant_id, change_seq, id);

-- Stamping. Positions and events are only inserted (and upserted by
-- import): their statements set change_seq themselves, so the ingest hot
-- path pays no trigger. The other tables are stamped by these triggers
-- after any insert or update whose statement did not stamp the row already
-- (the ingest writer's upserts of latest positions and tracker states do,
-- so for them the trigger is a comparison).
CREATE TRIGGER vehicles_stamp_insert AFTER INSERT ON vehicles
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE vehicles SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER vehicles_stamp_update AFTER UPDATE ON vehicles
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE vehicles SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER geofences_stamp_insert AFTER INSERT ON geofences
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE geofences SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER geofences_stamp_update AFTER UPDATE ON geofences
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE geofences SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER webhooks_stamp_insert AFTER INSERT ON webhooks
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE webhooks SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER webhooks_stamp_update AFTER UPDATE ON webhooks
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE webhooks SET change_seq = (SELECT seq FROM transfer_clock) WHERE id = NEW.id;
END;
CREATE TRIGGER webhook_deliveries_stamp_insert AFTER INSERT ON webhook_deliveries
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE webhook_deliveries SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE id = NEW.id;
END;
CREATE TRIGGER webhook_deliveries_stamp_update AFTER UPDATE ON webhook_deliveries
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE webhook_deliveries SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE id = NEW.id;
END;
CREATE TRIGGER vehicle_states_stamp_insert AFTER INSERT ON vehicle_states
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE vehicle_states SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE tenant_id = NEW.tenant_id AND vehicle_id = NEW.vehicle_id;
END;
CREATE TRIGGER vehicle_states_stamp_update AFTER UPDATE ON vehicle_states
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE vehicle_states SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE tenant_id = NEW.tenant_id AND vehicle_id = NEW.vehicle_id;
END;
CREATE TRIGGER latest_positions_stamp_insert AFTER INSERT ON latest_positions
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE latest_positions SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE vehicle_id = NEW.vehicle_id;
END;
CREATE TRIGGER latest_positions_stamp_update AFTER UPDATE ON latest_positions
WHEN NEW.change_seq IS NOT (SELECT seq FROM transfer_clock)
BEGIN
    UPDATE latest_positions SET change_seq = (SELECT seq FROM transfer_clock)
    WHERE vehicle_id = NEW.vehicle_id;
END;

-- Deleted keys (as `Record::cursor` spells them), one row per key: a key
-- deleted again moves its tombstone forward. Rows deleted with their
-- vehicle or webhook need none of their own (the receiving side deletes
-- them with the parent); retention deletes are not tracked.
CREATE TABLE transfer_tombstones (
    tenant_id  TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    change_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, table_name, key)
) WITHOUT ROWID;
CREATE INDEX transfer_tombstones_change
    ON transfer_tombstones (tenant_id, table_name, change_seq);

CREATE TRIGGER vehicles_tombstone AFTER DELETE ON vehicles
BEGIN
    INSERT OR REPLACE INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, 'vehicles', OLD.id, (SELECT seq FROM transfer_clock));
END;
CREATE TRIGGER geofences_tombstone AFTER DELETE ON geofences
BEGIN
    INSERT OR REPLACE INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, 'geofences', OLD.id, (SELECT seq FROM transfer_clock));
END;
CREATE TRIGGER webhooks_tombstone AFTER DELETE ON webhooks
BEGIN
    INSERT OR REPLACE INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, 'webhooks', OLD.id, (SELECT seq FROM transfer_clock));
END;
CREATE TRIGGER vehicle_states_tombstone AFTER DELETE ON vehicle_states
BEGIN
    INSERT OR REPLACE INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, 'tracker_states', OLD.vehicle_id, (SELECT seq FROM transfer_clock));
END;
CREATE TRIGGER latest_positions_tombstone AFTER DELETE ON latest_positions
BEGIN
    INSERT OR REPLACE INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, 'latest_positions', OLD.vehicle_id,
            (SELECT seq FROM transfer_clock));
END;

-- A tenant being moved away: its writes are refused (the cell checks).
ALTER TABLE tenants ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
