-- The catch-up of a live tenant move (SPEC §6): every row of a transfer
-- table carries the id of the transaction that last wrote it, and deleted
-- keys leave a tombstone. See src/transfer.rs for the protocol.
--
-- Two steps per column so no table is rewritten: rows already there get 0
-- (below every watermark) as a stored default, new rows the writing
-- transaction's id.
ALTER TABLE vehicles ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE geofences ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vehicle_states ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE latest_positions ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;

ALTER TABLE vehicles ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE geofences ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE webhooks ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE webhook_deliveries
    ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE vehicle_states
    ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE latest_positions
    ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
-- On the partitioned table: recurses to the partitions, and partitions made
-- later inherit it.
ALTER TABLE positions ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE events ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);

-- Updates (upserts' DO UPDATE included) stamp the row again. Inserts take
-- the default, so the ingest path (COPY, INSERT … UNNEST) fires nothing.
CREATE FUNCTION transfer_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;
CREATE TRIGGER vehicles_stamp BEFORE UPDATE ON vehicles
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER geofences_stamp BEFORE UPDATE ON geofences
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER webhooks_stamp BEFORE UPDATE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER webhook_deliveries_stamp BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER vehicle_states_stamp BEFORE UPDATE ON vehicle_states
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER latest_positions_stamp BEFORE UPDATE ON latest_positions
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER positions_stamp BEFORE UPDATE ON positions
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();
CREATE TRIGGER events_stamp BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION transfer_stamp();

-- A tenant's changes. Positions: BRIN on change_seq — transaction ids grow
-- with the insertion order of an append-mostly table, so a block range's
-- min/max skips every day and block written before the watermark; tiny and
-- nearly free to maintain on the ingest path (autosummarize: ranges are
-- summarised as they fill). Events and attempts: a B-tree in page order.
CREATE INDEX positions_change ON positions USING brin (change_seq)
    WITH (autosummarize = on);
CREATE INDEX events_tenant_change ON events (tenant_id, change_seq, time, id);
CREATE INDEX webhook_deliveries_tenant_change
    ON webhook_deliveries (tenant_id, change_seq, id);

-- Deleted keys (as `Record::cursor` spells them), one row per key: a key
-- deleted again moves its tombstone forward. Rows deleted with their
-- vehicle or webhook need none of their own (the receiving side deletes
-- them with the parent); retention deletes are not tracked.
CREATE TABLE transfer_tombstones (
    tenant_id  UUID NOT NULL,
    table_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    change_seq BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, table_name, key)
);
CREATE INDEX transfer_tombstones_change
    ON transfer_tombstones (tenant_id, table_name, change_seq);

-- TG_ARGV[0]: the transfer table's wire name.
CREATE FUNCTION transfer_tombstone_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, TG_ARGV[0], OLD.id::text, pg_current_xact_id()::text::bigint)
    ON CONFLICT (tenant_id, table_name, key) DO UPDATE SET change_seq = excluded.change_seq;
    RETURN OLD;
END
$$;
CREATE FUNCTION transfer_tombstone_vehicle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transfer_tombstones (tenant_id, table_name, key, change_seq)
    VALUES (OLD.tenant_id, TG_ARGV[0], OLD.vehicle_id::text, pg_current_xact_id()::text::bigint)
    ON CONFLICT (tenant_id, table_name, key) DO UPDATE SET change_seq = excluded.change_seq;
    RETURN OLD;
END
$$;
CREATE TRIGGER vehicles_tombstone AFTER DELETE ON vehicles
    FOR EACH ROW EXECUTE FUNCTION transfer_tombstone_id('vehicles');
CREATE TRIGGER geofences_tombstone AFTER DELETE ON geofences
    FOR EACH ROW EXECUTE FUNCTION transfer_tombstone_id('geofences');
CREATE TRIGGER webhooks_tombstone AFTER DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION transfer_tombstone_id('webhooks');
CREATE TRIGGER vehicle_states_tombstone AFTER DELETE ON vehicle_states
    FOR EACH ROW EXECUTE FUNCTION transfer_tombstone_vehicle('tracker_states');
CREATE TRIGGER latest_positions_tombstone AFTER DELETE ON latest_positions
    FOR EACH ROW EXECUTE FUNCTION transfer_tombstone_vehicle('latest_positions');

-- A tenant being moved away: its writes are refused (the cell checks).
ALTER TABLE tenants ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT false;
