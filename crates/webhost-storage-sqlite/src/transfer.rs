//! A tenant's rows out and in for a move (`webhost_storage::transfer`):
//! keyset reads on the reader pool, and upserts in one transaction on the
//! writer connection. Every statement is scoped to the tenant, and an
//! upsert never overwrites a row of the same key held by another tenant.
//!
//! # Catch-up: the change clock (`migrations/cell/0007_transfer_changes.sql`)
//!
//! Every row of the eight transfer tables carries `change_seq`, the value of
//! the one-row `transfer_clock` when the row was last inserted or updated
//! (import included: a row copied here is a change here, so a reverse move
//! catches up from this cell's watermark). Positions and events are stamped
//! by their own INSERT (`(SELECT seq FROM transfer_clock)` as a column
//! value: a one-row lookup per row on a cached page, and no trigger on the
//! ingest hot path); the ingest writer's upserts of latest positions and tracker
//! states stamp themselves too; every other write to the other six tables
//! is stamped by an `AFTER INSERT`/`AFTER UPDATE` trigger that only acts
//! when the statement left an older value. Deleting a vehicle, geofence,
//! webhook, tracker state or latest position leaves a tombstone
//! (`transfer_tombstones`, one row per key, moved forward on a repeat).
//!
//! [`CellStore::change_watermark`](webhost_storage::CellStore::change_watermark)
//! bumps the clock on the writer connection and answers the new value `w`.
//! The writer pool has one connection, and SQLite has one writer anyway, so
//! the bump sits between two write transactions: every change committed
//! before it carries a value below `w`, every later one `w` or more. The
//! clock only moves when a watermark is taken, so writes never touch it.
//!
//! `export_changes` pages through the rows with `change_seq >= since` in
//! `(change_seq, key)` order — the order of the `(tenant_id, change_seq,
//! key…)` indexes on positions, events and delivery attempts, so a page is
//! an index range, not a scan of the tenant's history — and its cursor is
//! `<change_seq>@<key>` (the key as `Record::cursor` spells it). Many rows of
//! one transaction share one value and are told apart by the key, so a page
//! boundary inside them still moves on. A row written again while the pages
//! are read may be returned twice or, if it moves behind the cursor, on the
//! next round (its new value is at or above that round's watermark):
//! upserts make both harmless.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use webhost_domain::{DeviceId, ShortText, TenantId, VehicleId};
use webhost_geofence::VehicleState;
use webhost_storage::fetch_limit;
use webhost_storage::transfer::{
    chunk_size, EventRecord, GeofenceRecord, ImportBatch, PositionRecord, TrackerStateRecord,
    VehicleRecord, WebhookAttemptRecord, WebhookRecord,
};
use webhost_storage::{
    ChangeChunk, Chunk, Cursor, Record, StorageError, StorageResult, TransferTable, WebhookAttempt,
};

use crate::cell::{attributes_json, device_conflict, vehicle_from_row, VEHICLE_COLUMNS};
use crate::fleet::{
    event_from_row, geofence_from_row, json_error, EVENT_COLUMNS, GEOFENCE_COLUMNS,
};
use crate::positions::{attributes_text, position_from_row, FIX_COLUMNS};
use crate::webhooks::{
    attempt_from_row, events_text, webhook_from_row, ATTEMPT_COLUMNS, WEBHOOK_COLUMNS,
};
use crate::{corrupt, map_err, parse_uuid, unexpected, SqliteCellStore};

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// A write that matched no row of the tenant: the key is another tenant's.
fn held_elsewhere(table: TransferTable, key: impl std::fmt::Display) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!(
        "{table} {key} is held by another tenant of this cell (or its parent is not this \
         tenant's); nothing was imported"
    ))
}

fn written(
    done: sqlx::sqlite::SqliteQueryResult,
    table: TransferTable,
    key: impl std::fmt::Display,
) -> StorageResult<u64> {
    match done.rows_affected() {
        0 => Err(held_elsewhere(table, key)),
        n => Ok(n),
    }
}

/// The value changes get now, as a column value (one uncorrelated
/// subquery per row written: a lookup in a one-row table).
pub(crate) const CLOCK: &str = "(SELECT seq FROM transfer_clock)";

/// A row of `table` as `export_chunk`/`export_changes` select it (the
/// columns of [`change_shape`]) as its record.
fn decode(table: TransferTable, row: &SqliteRow) -> StorageResult<Record> {
    Ok(match table {
        TransferTable::Vehicles => Record::Vehicle(vehicle_from_row(row)?.into()),
        TransferTable::Geofences => Record::Geofence(geofence_from_row(row)?.into()),
        TransferTable::Webhooks => Record::Webhook(webhook_from_row(row)?.into()),
        TransferTable::WebhookAttempts => Record::WebhookAttempt(attempt_from_row(row)?.into()),
        TransferTable::TrackerStates => {
            let state: String = row.try_get("state").map_err(unexpected)?;
            let state: VehicleState =
                serde_json::from_str(&state).map_err(|_| corrupt("vehicle state", &state))?;
            let last_seen = row
                .try_get::<Option<i64>, _>("last_seen")
                .map_err(unexpected)?
                .map(|ms| {
                    DateTime::from_timestamp_millis(ms)
                        .ok_or_else(|| corrupt("time", &ms.to_string()))
                })
                .transpose()?;
            Record::TrackerState(TrackerStateRecord {
                vehicle_id: VehicleId::from_uuid(parse_uuid(
                    &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
                )?),
                state,
                last_seen,
                online: row.try_get("online").map_err(unexpected)?,
                updated_at: webhost_storage::transfer::micros(
                    row.try_get("updated_at").map_err(unexpected)?,
                ),
            })
        }
        TransferTable::LatestPositions => Record::LatestPosition(position_from_row(row)?.into()),
        TransferTable::Positions => Record::Position(position_from_row(row)?.into()),
        TransferTable::Events => Record::Event(EventRecord::of(
            event_from_row(row)?,
            row.try_get("created_at").map_err(unexpected)?,
        )),
    })
}

/// What `export_changes` reads for a table: the columns [`decode`] takes,
/// the SQL table, and its key columns in page order.
fn change_shape(table: TransferTable) -> (String, &'static str, &'static str) {
    match table {
        TransferTable::Vehicles => (VEHICLE_COLUMNS.to_string(), "vehicles", "id"),
        TransferTable::Geofences => (GEOFENCE_COLUMNS.to_string(), "geofences", "id"),
        TransferTable::Webhooks => (WEBHOOK_COLUMNS.to_string(), "webhooks", "id"),
        TransferTable::WebhookAttempts => (ATTEMPT_COLUMNS.to_string(), "webhook_deliveries", "id"),
        TransferTable::TrackerStates => (
            "vehicle_id, state, last_seen, online, updated_at".to_string(),
            "vehicle_states",
            "vehicle_id",
        ),
        TransferTable::LatestPositions => (
            format!("vehicle_id, {FIX_COLUMNS}"),
            "latest_positions",
            "vehicle_id",
        ),
        TransferTable::Positions => (
            format!("vehicle_id, {FIX_COLUMNS}"),
            "positions",
            "vehicle_id, time",
        ),
        TransferTable::Events => (format!("{EVENT_COLUMNS}, created_at"), "events", "time, id"),
    }
}

/// A change page's cursor: `<change_seq>@<key>`.
fn change_cursor(seq: i64, record: &Record) -> Cursor {
    Cursor::from_string(format!("{seq}@{}", record.cursor()))
}

fn invalid_change_cursor(table: TransferTable, cursor: &Cursor) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!(
        "invalid {table} change cursor {:?}: pass back a cursor an export of {table}'s \
         changes returned",
        cursor.as_str()
    ))
}

/// Where a change page resumes: the change sequence and the key after
/// which it does.
fn parse_change_cursor(table: TransferTable, cursor: &Cursor) -> StorageResult<(i64, Cursor)> {
    let (seq, key) = cursor
        .as_str()
        .split_once('@')
        .ok_or_else(|| invalid_change_cursor(table, cursor))?;
    let seq = seq
        .parse()
        .map_err(|_| invalid_change_cursor(table, cursor))?;
    Ok((seq, Cursor::from_string(key)))
}

/// A key's values, bound after the change sequence in page order.
enum KeyValues {
    Id(String),
    /// Positions: vehicle, then time (epoch ms).
    VehicleTime(String, i64),
    /// Events: time (epoch ms), then id.
    TimeId(i64, String),
}

fn key_values(table: TransferTable, key: &Cursor) -> StorageResult<KeyValues> {
    Ok(match table {
        TransferTable::Positions => {
            let (time, vehicle) = key.time_id(table)?;
            KeyValues::VehicleTime(vehicle.to_string(), millis(time))
        }
        TransferTable::Events => {
            let (time, id) = key.time_id(table)?;
            KeyValues::TimeId(millis(time), id.to_string())
        }
        _ => KeyValues::Id(key.id(table)?.to_string()),
    })
}

/// The table and key column a tombstone of `table` names, for the tables
/// that keep tombstones.
fn tombstone_target(table: TransferTable) -> Option<(&'static str, &'static str)> {
    match table {
        TransferTable::Vehicles => Some(("vehicles", "id")),
        TransferTable::Geofences => Some(("geofences", "id")),
        TransferTable::Webhooks => Some(("webhooks", "id")),
        TransferTable::TrackerStates => Some(("vehicle_states", "vehicle_id")),
        TransferTable::LatestPositions => Some(("latest_positions", "vehicle_id")),
        TransferTable::WebhookAttempts | TransferTable::Positions | TransferTable::Events => None,
    }
}

impl SqliteCellStore {
    pub(crate) async fn export_chunk_impl(
        &self,
        tenant: TenantId,
        table: TransferTable,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<Chunk> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let size = chunk_size(limit);
        let fetch = fetch_limit(size);
        let tenant_id = tenant.to_string();
        let after_id = || -> StorageResult<String> {
            Ok(after
                .map(|c| c.id(table))
                .transpose()?
                .map(|id| id.to_string())
                .unwrap_or_default())
        };
        let after_time_id = || -> StorageResult<(Option<i64>, String)> {
            Ok(match after.map(|c| c.time_id(table)).transpose()? {
                Some((time, id)) => (Some(millis(time)), id.to_string()),
                None => (None, String::new()),
            })
        };
        let since = history_since.map(millis).unwrap_or(i64::MIN);
        let reader = &self.pools.reader;
        let records = match table {
            TransferTable::Vehicles => sqlx::query(&format!(
                "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Vehicle(vehicle_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Geofences => sqlx::query(&format!(
                "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Geofence(geofence_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Webhooks => sqlx::query(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::Webhook(webhook_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::WebhookAttempts => sqlx::query(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE tenant_id = ? \
                 AND id > ? ORDER BY id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::WebhookAttempt(attempt_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::TrackerStates => sqlx::query(
                "SELECT vehicle_id, state, last_seen, online, updated_at FROM vehicle_states \
                 WHERE tenant_id = ? AND vehicle_id > ? ORDER BY vehicle_id LIMIT ?",
            )
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| decode(TransferTable::TrackerStates, row))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::LatestPositions => sqlx::query(&format!(
                "SELECT vehicle_id, {FIX_COLUMNS} FROM latest_positions WHERE tenant_id = ? \
                 AND vehicle_id > ? ORDER BY vehicle_id LIMIT ?"
            ))
            .bind(&tenant_id)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::LatestPosition(position_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Positions => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT vehicle_id, {FIX_COLUMNS} FROM positions WHERE tenant_id = ?1 \
                     AND time >= ?2 AND (?3 IS NULL OR time > ?3 OR (time = ?3 AND vehicle_id > ?4)) \
                     ORDER BY time, vehicle_id LIMIT ?5"
                ))
                .bind(&tenant_id)
                .bind(since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(reader)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Position(position_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?
            }
            TransferTable::Events => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS}, created_at FROM events WHERE tenant_id = ?1 \
                     AND time >= ?2 AND (?3 IS NULL OR time > ?3 OR (time = ?3 AND id > ?4)) \
                     ORDER BY time, id LIMIT ?5"
                ))
                .bind(&tenant_id)
                .bind(since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(reader)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| {
                    Ok(Record::Event(EventRecord::of(
                        event_from_row(row)?,
                        row.try_get("created_at").map_err(unexpected)?,
                    )))
                })
                .collect::<StorageResult<Vec<_>>>()?
            }
        };
        Ok(Chunk::from_overfetch(records, size))
    }

    pub(crate) async fn import_impl(
        &self,
        tenant: TenantId,
        records: &[Record],
    ) -> StorageResult<u64> {
        let batch = ImportBatch::of(records);
        // The single writer connection: nothing interleaves with the batch.
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let t = tenant.to_string();
        let mut n = 0;
        for r in &batch.vehicles {
            n += upsert_vehicle(&mut tx, &t, r).await?;
        }
        for r in &batch.geofences {
            n += upsert_geofence(&mut tx, &t, r).await?;
        }
        for r in &batch.webhooks {
            n += upsert_webhook(&mut tx, &t, r).await?;
        }
        for r in &batch.webhook_attempts {
            n += upsert_attempt(&mut tx, &t, r).await?;
        }
        for r in &batch.tracker_states {
            n += upsert_state(&mut tx, &t, r).await?;
        }
        for r in &batch.latest_positions {
            n += upsert_position(&mut tx, &t, r, TransferTable::LatestPositions).await?;
        }
        for r in &batch.positions {
            n += upsert_position(&mut tx, &t, r, TransferTable::Positions).await?;
        }
        for r in &batch.events {
            n += upsert_event(&mut tx, &t, r).await?;
        }
        tx.commit().await.map_err(unexpected)?;
        Ok(n)
    }
}

impl SqliteCellStore {
    pub(crate) async fn change_watermark_impl(&self) -> StorageResult<u64> {
        // On the writer: between two write transactions (module docs).
        let seq: i64 = sqlx::query_scalar("UPDATE transfer_clock SET seq = seq + 1 RETURNING seq")
            .fetch_one(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        Ok(seq as u64)
    }

    pub(crate) async fn export_changes_impl(
        &self,
        tenant: TenantId,
        table: TransferTable,
        since: u64,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<ChangeChunk> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let size = chunk_size(limit);
        let tenant_id = tenant.to_string();
        // The first page starts just below `since`: every row at or above
        // it comes after (since - 1, any key).
        let (after_seq, after_key) = match after {
            Some(cursor) => {
                let (seq, key) = parse_change_cursor(table, cursor)?;
                (seq, Some(key_values(table, &key)?))
            }
            None => (since.saturating_sub(1), None),
        };
        let (columns, from, key) = change_shape(table);
        let history = if table.is_history() {
            " AND time >= ?"
        } else {
            ""
        };
        let placeholders = match table {
            TransferTable::Positions | TransferTable::Events => "?, ?",
            _ => "?",
        };
        let sql = format!(
            "SELECT {columns}, change_seq FROM {from} WHERE tenant_id = ? AND change_seq >= ?\
             {history} AND (change_seq, {key}) > (?, {placeholders}) \
             ORDER BY change_seq, {key} LIMIT ?"
        );
        let mut query = sqlx::query(&sql).bind(&tenant_id).bind(since);
        if table.is_history() {
            query = query.bind(history_since.map(millis).unwrap_or(i64::MIN));
        }
        query = query.bind(after_seq);
        query = match after_key {
            Some(KeyValues::Id(id)) => query.bind(id),
            Some(KeyValues::VehicleTime(vehicle, time)) => query.bind(vehicle).bind(time),
            Some(KeyValues::TimeId(time, id)) => query.bind(time).bind(id),
            // Below every key: '' sorts before any id, i64::MIN before any time.
            None => match table {
                TransferTable::Positions => query.bind("").bind(i64::MIN),
                TransferTable::Events => query.bind(i64::MIN).bind(""),
                _ => query.bind(""),
            },
        };
        let rows = query
            .bind(fetch_limit(size))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        let mut records = Vec::with_capacity(rows.len());
        let mut next = None;
        for row in &rows {
            let seq: i64 = row.try_get("change_seq").map_err(unexpected)?;
            let record = decode(table, row)?;
            if records.len() == size as usize {
                // One more than a page: the cursor is the last one kept.
                next = records
                    .last()
                    .map(|(seq, record)| change_cursor(*seq, record));
                break;
            }
            records.push((seq, record));
        }
        let deleted = match (after, tombstone_target(table)) {
            (None, Some((from, key))) => sqlx::query_scalar::<_, String>(&format!(
                "SELECT key FROM transfer_tombstones AS t WHERE tenant_id = ? \
                 AND table_name = ? AND change_seq >= ? AND NOT EXISTS \
                 (SELECT 1 FROM {from} AS r WHERE r.tenant_id = t.tenant_id AND r.{key} = t.key) \
                 ORDER BY key"
            ))
            .bind(&tenant_id)
            .bind(table.as_str())
            .bind(since)
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .into_iter()
            .map(Cursor::from_string)
            .collect(),
            _ => Vec::new(),
        };
        Ok(ChangeChunk {
            records: records.into_iter().map(|(_, record)| record).collect(),
            deleted,
            next,
        })
    }

    pub(crate) async fn remove_records_impl(
        &self,
        tenant: TenantId,
        table: TransferTable,
        keys: &[Cursor],
    ) -> StorageResult<u64> {
        // Every key parses before anything is deleted.
        let keys = keys
            .iter()
            .map(|key| key_values(table, key))
            .collect::<StorageResult<Vec<_>>>()?;
        let t = tenant.to_string();
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let mut removed = 0;
        for key in keys {
            let done = match (table, key) {
                (TransferTable::Vehicles, KeyValues::Id(id)) => {
                    let done = sqlx::query("DELETE FROM vehicles WHERE tenant_id = ? AND id = ?")
                        .bind(&t)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unexpected)?;
                    // What `delete_vehicle` removes with it (no foreign key
                    // cascades from vehicles, on either engine).
                    for dependent in ["positions", "latest_positions", "events", "vehicle_states"] {
                        sqlx::query(&format!(
                            "DELETE FROM {dependent} WHERE tenant_id = ? AND vehicle_id = ?"
                        ))
                        .bind(&t)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unexpected)?;
                    }
                    done
                }
                (TransferTable::Positions, KeyValues::VehicleTime(vehicle, time)) => sqlx::query(
                    "DELETE FROM positions WHERE tenant_id = ? AND vehicle_id = ? AND time = ?",
                )
                .bind(&t)
                .bind(vehicle)
                .bind(time)
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?,
                (TransferTable::Events, KeyValues::TimeId(_, id)) => {
                    sqlx::query("DELETE FROM events WHERE tenant_id = ? AND id = ?")
                        .bind(&t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unexpected)?
                }
                (table, KeyValues::Id(id)) => {
                    // Webhooks take their attempts along (foreign key).
                    let (from, key) = match table {
                        TransferTable::Geofences => ("geofences", "id"),
                        TransferTable::Webhooks => ("webhooks", "id"),
                        TransferTable::WebhookAttempts => ("webhook_deliveries", "id"),
                        TransferTable::TrackerStates => ("vehicle_states", "vehicle_id"),
                        _ => ("latest_positions", "vehicle_id"),
                    };
                    sqlx::query(&format!(
                        "DELETE FROM {from} WHERE tenant_id = ? AND {key} = ?"
                    ))
                    .bind(&t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unexpected)?
                }
                (table, _) => {
                    return Err(StorageError::Unexpected(anyhow::anyhow!(
                        "a key of another shape than {table}'s"
                    )))
                }
            };
            removed += done.rows_affected();
        }
        tx.commit().await.map_err(unexpected)?;
        Ok(removed)
    }

    pub(crate) async fn set_read_only_impl(
        &self,
        tenant: TenantId,
        read_only: bool,
    ) -> StorageResult<()> {
        let done = sqlx::query("UPDATE tenants SET read_only = ? WHERE id = ?")
            .bind(read_only)
            .bind(tenant.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        Ok(())
    }

    pub(crate) async fn read_only_tenants_impl(&self) -> StorageResult<Vec<TenantId>> {
        sqlx::query_scalar::<_, String>("SELECT id FROM tenants WHERE read_only ORDER BY id")
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|id| Ok(TenantId::from_uuid(parse_uuid(id)?)))
            .collect()
    }
}

async fn upsert_vehicle(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &VehicleRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicles (id, tenant_id, name, device_id, plate, \"group\", attributes, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, device_id = excluded.device_id, \
         plate = excluded.plate, \"group\" = excluded.\"group\", \
         attributes = excluded.attributes, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE vehicles.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(r.device_id.as_ref().map(DeviceId::as_str))
    .bind(r.plate.as_ref().map(ShortText::as_str))
    .bind(r.group.as_ref().map(ShortText::as_str))
    .bind(attributes_json(&r.attributes)?)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_err(e, device_conflict(r.device_id.as_ref())))?;
    written(done, TransferTable::Vehicles, r.id)
}

async fn upsert_geofence(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &GeofenceRecord,
) -> StorageResult<u64> {
    let c = r.columns()?;
    let done = sqlx::query(
        "INSERT INTO geofences (id, tenant_id, name, kind, geometry, center_lat, center_lon, \
         radius_m, min_lat, min_lon, max_lat, max_lon, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
         geometry = excluded.geometry, center_lat = excluded.center_lat, \
         center_lon = excluded.center_lon, radius_m = excluded.radius_m, \
         min_lat = excluded.min_lat, min_lon = excluded.min_lon, max_lat = excluded.max_lat, \
         max_lon = excluded.max_lon, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE geofences.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(c.kind)
    .bind(c.geometry.as_ref().map(ToString::to_string))
    .bind(c.center_lat)
    .bind(c.center_lon)
    .bind(c.radius_m)
    .bind(c.bbox.min_lat)
    .bind(c.bbox.min_lon)
    .bind(c.bbox.max_lat)
    .bind(c.bbox.max_lon)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Geofences, r.id)
}

async fn upsert_webhook(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &WebhookRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, enabled, description, secret, \
         consecutive_failures, disabled_reason, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, events = excluded.events, \
         enabled = excluded.enabled, description = excluded.description, \
         secret = excluded.secret, consecutive_failures = excluded.consecutive_failures, \
         disabled_reason = excluded.disabled_reason, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE webhooks.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(&r.url)
    .bind(events_text(&r.events))
    .bind(r.enabled)
    .bind(r.description.as_ref().map(ShortText::as_str))
    .bind(&r.secret)
    .bind(i64::from(r.consecutive_failures))
    .bind(&r.disabled_reason)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Webhooks, r.id)
}

async fn upsert_attempt(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &WebhookAttemptRecord,
) -> StorageResult<u64> {
    let a = WebhookAttempt::from(r.clone());
    // Only under one of the tenant's own webhooks.
    let done = sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (tenant_id, {ATTEMPT_COLUMNS}) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?3 AND tenant_id = ?1) \
         ON CONFLICT (id) DO UPDATE SET webhook_id = excluded.webhook_id, \
         delivery_id = excluded.delivery_id, event_id = excluded.event_id, \
         event_type = excluded.event_type, attempt = excluded.attempt, \
         status_code = excluded.status_code, error = excluded.error, \
         duration_ms = excluded.duration_ms, at = excluded.at \
         WHERE webhook_deliveries.tenant_id = excluded.tenant_id"
    ))
    .bind(tenant)
    .bind(a.id.to_string())
    .bind(a.webhook_id.to_string())
    .bind(a.delivery_id.to_string())
    .bind(a.event_id.to_string())
    .bind(a.event_type.as_str())
    .bind(i64::from(a.attempt))
    .bind(a.status_code.map(i64::from))
    .bind(&a.error)
    .bind(i64::from(a.duration_ms))
    .bind(a.at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::WebhookAttempts, a.id)
}

async fn upsert_state(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &TrackerStateRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicle_states (tenant_id, vehicle_id, state, last_seen, online, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, vehicle_id) DO UPDATE SET state = excluded.state, \
         last_seen = excluded.last_seen, online = excluded.online, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(r.vehicle_id.to_string())
    .bind(serde_json::to_string(&r.state).map_err(json_error)?)
    .bind(r.last_seen.map(millis))
    .bind(r.online)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::TrackerStates, r.vehicle_id)
}

async fn upsert_position(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &PositionRecord,
    table: TransferTable,
) -> StorageResult<u64> {
    let (name, key) = match table {
        TransferTable::LatestPositions => ("latest_positions", "vehicle_id"),
        _ => ("positions", "vehicle_id, time"),
    };
    let f = &r.fix;
    let done = sqlx::query(&format!(
        "INSERT INTO {name} (vehicle_id, time, tenant_id, lat, lon, speed, heading, altitude, \
         accuracy, valid, attributes, change_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {CLOCK}) \
         ON CONFLICT ({key}) DO UPDATE SET time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes, change_seq = excluded.change_seq \
         WHERE {name}.tenant_id = excluded.tenant_id"
    ))
    .bind(r.vehicle_id.to_string())
    .bind(millis(r.time))
    .bind(tenant)
    .bind(f.lat)
    .bind(f.lon)
    .bind(f.speed)
    .bind(f.heading)
    .bind(f.altitude)
    .bind(f.accuracy)
    .bind(f.valid)
    .bind(attributes_text(&f.attributes))
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, table, r.vehicle_id)
}

async fn upsert_event(
    conn: &mut SqliteConnection,
    tenant: &str,
    r: &EventRecord,
) -> StorageResult<u64> {
    let f = r.position.as_ref();
    let done = sqlx::query(&format!(
        "INSERT INTO events (id, tenant_id, type, vehicle_id, geofence_id, time, lat, lon, \
         speed, heading, altitude, accuracy, valid, attributes, created_at, change_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {CLOCK}) \
         ON CONFLICT (id) DO UPDATE SET type = excluded.type, vehicle_id = excluded.vehicle_id, \
         geofence_id = excluded.geofence_id, time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes, created_at = excluded.created_at, \
         change_seq = excluded.change_seq WHERE events.tenant_id = excluded.tenant_id"
    ))
    .bind(r.id.to_string())
    .bind(tenant)
    .bind(r.kind.as_str())
    .bind(r.vehicle_id.to_string())
    .bind(r.geofence_id.map(|g| g.to_string()))
    .bind(millis(r.time))
    .bind(f.map(|f| f.lat))
    .bind(f.map(|f| f.lon))
    .bind(f.and_then(|f| f.speed))
    .bind(f.and_then(|f| f.heading))
    .bind(f.and_then(|f| f.altitude))
    .bind(f.and_then(|f| f.accuracy))
    .bind(f.map(|f| f.valid))
    .bind(f.and_then(|f| attributes_text(&f.attributes)))
    .bind(r.created_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, TransferTable::Events, r.id)
}
