//! A tenant's rows out and in for a move (`webhost_storage::transfer`):
//! keyset reads, and upserts in one transaction. Every statement is scoped
//! to the tenant, and an upsert never overwrites a row of the same key held
//! by another tenant. Positions go through `UNNEST` in one statement per
//! table, into daily partitions created first (as `insert_positions` does),
//! so importing old days works.
//!
//! # Catch-up: transaction ids (`migrations/cell/0007_transfer_changes.sql`)
//!
//! Every row of the eight transfer tables carries `change_seq`, the id of
//! the (top-level) transaction that last wrote it: the column's default is
//! `pg_current_xact_id()` — so the ingest path's `COPY` and `INSERT …
//! UNNEST`, which leave the column out, pay no trigger — and a `BEFORE
//! UPDATE` trigger stamps it again on every update, upserts' `DO UPDATE` and
//! imports included (a row copied here is a change here, so a reverse move
//! catches up from this cell's watermark). Deleting a vehicle, geofence,
//! webhook, tracker state or latest position leaves a tombstone
//! (`transfer_tombstones`, one row per key, moved forward on a repeat) with
//! the deleting transaction's id.
//!
//! [`CellStore::change_watermark`](webhost_storage::CellStore::change_watermark)
//! is `pg_snapshot_xmin(pg_current_snapshot())`: every transaction whose id
//! is below it has finished. A transaction that commits after the
//! watermark was read was still running then (or had not started), so its
//! id is at or above it, whatever order transactions began and committed
//! in: `change_seq >= since` never misses it. The bound is one-sided: a
//! transaction that committed before the watermark while an older one was
//! still open may be returned again by the next round (harmless: upserts
//! are idempotent); with nothing else open, the watermark is the next id.
//!
//! `export_changes` pages through the rows with `change_seq >= since` in
//! `(change_seq, key)` order; its cursor is `<change_seq>@<key>` (the key as
//! `Record::cursor` spells it). Many rows of one transaction share one id
//! and are told apart by the key, so a page boundary inside them still
//! moves on. A row rewritten while the pages are read is returned again, or
//! — when its new id sorts behind the cursor — by the next round, whose
//! watermark it is at or above. Positions are found through a BRIN index
//! on `change_seq` (per daily partition: the block ranges written before
//! the watermark are skipped, old days' partitions entirely), events and
//! attempts through `(tenant_id, change_seq, …)` B-trees; the other tables
//! hold a few rows per vehicle and are read through their tenant index.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use webhost_domain::{DeviceId, ShortText, TenantId, VehicleId};
use webhost_geofence::VehicleState;
use webhost_storage::fetch_limit;
use webhost_storage::transfer::{
    chunk_size, micros, EventRecord, GeofenceRecord, ImportBatch, PositionRecord,
    TrackerStateRecord, VehicleRecord, WebhookAttemptRecord, WebhookRecord,
};
use webhost_storage::{
    ChangeChunk, Chunk, Cursor, NewPosition, Record, StorageError, StorageResult, TransferTable,
};

use crate::cell::{attributes_json, device_conflict, vehicle_from_row, VEHICLE_COLUMNS};
use crate::fleet::{
    event_from_row, geofence_from_row, geom_sql, json_error, EVENT_COLUMNS, GEOFENCE_COLUMNS,
};
use crate::positions::{position_from_row, Columns, FIX_COLUMNS, UNNEST};
use crate::webhooks::{
    attempt_from_row, event_names, int4, webhook_from_row, ATTEMPT_COLUMNS, WEBHOOK_COLUMNS,
};
use crate::{corrupt, map_err, unexpected, PgCellStore};

/// Fewer rows written than given: some key is another tenant's.
fn held_elsewhere(table: TransferTable, key: impl std::fmt::Display) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!(
        "{table} {key} is held by another tenant of this cell (or its parent is not this \
         tenant's); nothing was imported"
    ))
}

fn written(
    done: sqlx::postgres::PgQueryResult,
    expected: usize,
    table: TransferTable,
    key: impl std::fmt::Display,
) -> StorageResult<u64> {
    if done.rows_affected() < expected as u64 {
        return Err(held_elsewhere(table, key));
    }
    Ok(done.rows_affected())
}

/// A row of `table` as `export_chunk`/`export_changes` select it (the
/// columns of [`change_shape`]) as its record.
fn decode(table: TransferTable, row: &PgRow) -> StorageResult<Record> {
    Ok(match table {
        TransferTable::Vehicles => Record::Vehicle(vehicle_from_row(row)?.into()),
        TransferTable::Geofences => Record::Geofence(geofence_from_row(row)?.into()),
        TransferTable::Webhooks => Record::Webhook(webhook_from_row(row)?.into()),
        TransferTable::WebhookAttempts => Record::WebhookAttempt(attempt_from_row(row)?.into()),
        TransferTable::TrackerStates => {
            let state: serde_json::Value = row.try_get("state").map_err(unexpected)?;
            let state: VehicleState = serde_json::from_value(state.clone())
                .map_err(|_| corrupt("vehicle state", &state.to_string()))?;
            Record::TrackerState(TrackerStateRecord {
                vehicle_id: VehicleId::from_uuid(row.try_get("vehicle_id").map_err(unexpected)?),
                state,
                last_seen: row
                    .try_get::<Option<DateTime<Utc>>, _>("last_seen")
                    .map_err(unexpected)?
                    .map(micros),
                online: row.try_get("online").map_err(unexpected)?,
                updated_at: micros(row.try_get("updated_at").map_err(unexpected)?),
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
    Id(uuid::Uuid),
    /// Positions: vehicle, then time.
    VehicleTime(uuid::Uuid, DateTime<Utc>),
    /// Events: time, then id.
    TimeId(DateTime<Utc>, uuid::Uuid),
}

fn key_values(table: TransferTable, key: &Cursor) -> StorageResult<KeyValues> {
    Ok(match table {
        TransferTable::Positions => {
            let (time, vehicle) = key.time_id(table)?;
            KeyValues::VehicleTime(vehicle, time)
        }
        TransferTable::Events => {
            let (time, id) = key.time_id(table)?;
            KeyValues::TimeId(time, id)
        }
        _ => KeyValues::Id(key.id(table)?),
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

impl PgCellStore {
    pub(crate) async fn export_chunk_impl(
        &self,
        tenant: TenantId,
        table: TransferTable,
        after: Option<&Cursor>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    ) -> StorageResult<Chunk> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let size = chunk_size(limit);
        let fetch = fetch_limit(size);
        let t = tenant.as_uuid();
        let after_id = || after.map(|c| c.id(table)).transpose();
        let after_time_id = || -> StorageResult<(Option<DateTime<Utc>>, Option<uuid::Uuid>)> {
            Ok(match after.map(|c| c.time_id(table)).transpose()? {
                Some((time, id)) => (Some(time), Some(id)),
                None => (None, None),
            })
        };
        let pool = &self.pool;
        let by_id = |columns: &str, from: &str, key: &str| {
            format!(
                "SELECT {columns} FROM {from} WHERE tenant_id = $1 \
                 AND ($2::uuid IS NULL OR {key} > $2) ORDER BY {key} LIMIT $3"
            )
        };
        let records = match table {
            TransferTable::Vehicles => sqlx::query(&by_id(VEHICLE_COLUMNS, "vehicles", "id"))
                .bind(t)
                .bind(after_id()?)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Vehicle(vehicle_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Geofences => sqlx::query(&by_id(GEOFENCE_COLUMNS, "geofences", "id"))
                .bind(t)
                .bind(after_id()?)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Geofence(geofence_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Webhooks => sqlx::query(&by_id(WEBHOOK_COLUMNS, "webhooks", "id"))
                .bind(t)
                .bind(after_id()?)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Webhook(webhook_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::WebhookAttempts => {
                sqlx::query(&by_id(ATTEMPT_COLUMNS, "webhook_deliveries", "id"))
                    .bind(t)
                    .bind(after_id()?)
                    .bind(fetch)
                    .fetch_all(pool)
                    .await
                    .map_err(unexpected)?
                    .iter()
                    .map(|row| Ok(Record::WebhookAttempt(attempt_from_row(row)?.into())))
                    .collect::<StorageResult<Vec<_>>>()?
            }
            TransferTable::TrackerStates => sqlx::query(&by_id(
                "vehicle_id, state, last_seen, online, updated_at",
                "vehicle_states",
                "vehicle_id",
            ))
            .bind(t)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(pool)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| decode(TransferTable::TrackerStates, row))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::LatestPositions => sqlx::query(&by_id(
                &format!("vehicle_id, {FIX_COLUMNS}"),
                "latest_positions",
                "vehicle_id",
            ))
            .bind(t)
            .bind(after_id()?)
            .bind(fetch)
            .fetch_all(pool)
            .await
            .map_err(unexpected)?
            .iter()
            .map(|row| Ok(Record::LatestPosition(position_from_row(row)?.into())))
            .collect::<StorageResult<Vec<_>>>()?,
            TransferTable::Positions => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT vehicle_id, {FIX_COLUMNS} FROM positions WHERE tenant_id = $1 \
                     AND ($2::timestamptz IS NULL OR time >= $2) \
                     AND ($3::timestamptz IS NULL OR (time, vehicle_id) > ($3, $4::uuid)) \
                     ORDER BY time, vehicle_id LIMIT $5"
                ))
                .bind(t)
                .bind(history_since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(unexpected)?
                .iter()
                .map(|row| Ok(Record::Position(position_from_row(row)?.into())))
                .collect::<StorageResult<Vec<_>>>()?
            }
            TransferTable::Events => {
                let (time, id) = after_time_id()?;
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS}, created_at FROM events WHERE tenant_id = $1 \
                     AND ($2::timestamptz IS NULL OR time >= $2) \
                     AND ($3::timestamptz IS NULL OR (time, id) > ($3, $4::uuid)) \
                     ORDER BY time, id LIMIT $5"
                ))
                .bind(t)
                .bind(history_since)
                .bind(time)
                .bind(id)
                .bind(fetch)
                .fetch_all(pool)
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
        // Old days' partitions first (DDL outside the import's transaction,
        // as `insert_positions` does).
        self.ensure_partitions(batch.positions.iter().map(|r| r.time.date_naive()))
            .await?;
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // Shared lock: a concurrent delete of the tenant waits for the import.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR SHARE")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let t = tenant.as_uuid();
        let mut n = 0;
        for r in &batch.vehicles {
            n += upsert_vehicle(&mut tx, t, r).await?;
        }
        for r in &batch.geofences {
            n += upsert_geofence(&mut tx, t, r).await?;
        }
        for r in &batch.webhooks {
            n += upsert_webhook(&mut tx, t, r).await?;
        }
        for r in &batch.webhook_attempts {
            n += upsert_attempt(&mut tx, t, r).await?;
        }
        for r in &batch.tracker_states {
            n += upsert_state(&mut tx, t, r).await?;
        }
        n += upsert_positions(
            &mut tx,
            tenant,
            &batch.latest_positions,
            TransferTable::LatestPositions,
        )
        .await?;
        n += upsert_positions(&mut tx, tenant, &batch.positions, TransferTable::Positions).await?;
        for r in &batch.events {
            n += upsert_event(&mut tx, t, r).await?;
        }
        tx.commit().await.map_err(unexpected)?;
        Ok(n)
    }
}

impl PgCellStore {
    pub(crate) async fn change_watermark_impl(&self) -> StorageResult<u64> {
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await
                .map_err(unexpected)?;
        Ok(xmin as u64)
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
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant"));
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let size = chunk_size(limit);
        // The first page starts just below `since`: every row at or above
        // it comes after (since - 1, any key).
        let (after_seq, after_key) = match after {
            Some(cursor) => {
                let (seq, key) = parse_change_cursor(table, cursor)?;
                (seq, key_values(table, &key)?)
            }
            None => {
                let nil = uuid::Uuid::nil();
                let epoch = DateTime::<Utc>::UNIX_EPOCH;
                let key = match table {
                    TransferTable::Positions => KeyValues::VehicleTime(nil, epoch),
                    TransferTable::Events => KeyValues::TimeId(epoch, nil),
                    _ => KeyValues::Id(nil),
                };
                (since.saturating_sub(1), key)
            }
        };
        let (columns, from, key) = change_shape(table);
        let (history, after_params, limit_param) = match table {
            TransferTable::Positions => (
                " AND ($3::timestamptz IS NULL OR time >= $3)",
                "$4, $5::uuid, $6::timestamptz",
                "$7",
            ),
            TransferTable::Events => (
                " AND ($3::timestamptz IS NULL OR time >= $3)",
                "$4, $5::timestamptz, $6::uuid",
                "$7",
            ),
            _ => ("", "$3, $4::uuid", "$5"),
        };
        let sql = format!(
            "SELECT {columns}, change_seq FROM {from} WHERE tenant_id = $1 \
             AND change_seq >= $2{history} AND (change_seq, {key}) > ({after_params}) \
             ORDER BY change_seq, {key} LIMIT {limit_param}"
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_uuid()).bind(since);
        if table.is_history() {
            query = query.bind(history_since);
        }
        query = query.bind(after_seq);
        query = match after_key {
            KeyValues::Id(id) => query.bind(id),
            KeyValues::VehicleTime(vehicle, time) => query.bind(vehicle).bind(time),
            KeyValues::TimeId(time, id) => query.bind(time).bind(id),
        };
        let rows = query
            .bind(fetch_limit(size))
            .fetch_all(&self.pool)
            .await
            .map_err(unexpected)?;
        let mut records = Vec::with_capacity(rows.len());
        let mut next = None;
        for row in &rows {
            if records.len() == size as usize {
                // One more than a page: the cursor is the last one kept.
                next = records
                    .last()
                    .map(|(seq, record)| change_cursor(*seq, record));
                break;
            }
            let seq: i64 = row.try_get("change_seq").map_err(unexpected)?;
            records.push((seq, decode(table, row)?));
        }
        let deleted = match (after, tombstone_target(table)) {
            (None, Some((from, key))) => sqlx::query_scalar::<_, String>(&format!(
                "SELECT key FROM transfer_tombstones AS t WHERE tenant_id = $1 \
                 AND table_name = $2 AND change_seq >= $3 AND NOT EXISTS \
                 (SELECT 1 FROM {from} AS r WHERE r.tenant_id = t.tenant_id \
                 AND r.{key} = t.key::uuid) ORDER BY key"
            ))
            .bind(tenant.as_uuid())
            .bind(table.as_str())
            .bind(since)
            .fetch_all(&self.pool)
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
        let t = tenant.as_uuid();
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let mut removed = 0;
        for key in keys {
            let done = match (table, key) {
                (TransferTable::Vehicles, KeyValues::Id(id)) => {
                    let done = sqlx::query("DELETE FROM vehicles WHERE tenant_id = $1 AND id = $2")
                        .bind(t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unexpected)?;
                    // What `delete_vehicle` removes with it (no foreign key
                    // cascades from vehicles, on either engine).
                    for dependent in ["positions", "latest_positions", "events", "vehicle_states"] {
                        sqlx::query(&format!(
                            "DELETE FROM {dependent} WHERE tenant_id = $1 AND vehicle_id = $2"
                        ))
                        .bind(t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unexpected)?;
                    }
                    done
                }
                (TransferTable::Positions, KeyValues::VehicleTime(vehicle, time)) => sqlx::query(
                    "DELETE FROM positions WHERE tenant_id = $1 AND vehicle_id = $2 \
                         AND time = $3",
                )
                .bind(t)
                .bind(vehicle)
                .bind(time)
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?,
                (TransferTable::Events, KeyValues::TimeId(_, id)) => {
                    sqlx::query("DELETE FROM events WHERE tenant_id = $1 AND id = $2")
                        .bind(t)
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
                        "DELETE FROM {from} WHERE tenant_id = $1 AND {key} = $2"
                    ))
                    .bind(t)
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
        let done = sqlx::query("UPDATE tenants SET read_only = $1 WHERE id = $2")
            .bind(read_only)
            .bind(tenant.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("tenant"));
        }
        Ok(())
    }

    pub(crate) async fn read_only_tenants_impl(&self) -> StorageResult<Vec<TenantId>> {
        Ok(sqlx::query_scalar::<_, uuid::Uuid>(
            "SELECT id FROM tenants WHERE read_only ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?
        .into_iter()
        .map(TenantId::from_uuid)
        .collect())
    }
}

async fn upsert_vehicle(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &VehicleRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicles (id, tenant_id, name, device_id, plate, \"group\", attributes, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, device_id = excluded.device_id, \
         plate = excluded.plate, \"group\" = excluded.\"group\", \
         attributes = excluded.attributes, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE vehicles.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.as_uuid())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(r.device_id.as_ref().map(DeviceId::as_str))
    .bind(r.plate.as_ref().map(ShortText::as_str))
    .bind(r.group.as_ref().map(ShortText::as_str))
    .bind(attributes_json(&r.attributes))
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_err(e, device_conflict(r.device_id.as_ref())))?;
    written(done, 1, TransferTable::Vehicles, r.id)
}

async fn upsert_geofence(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &GeofenceRecord,
) -> StorageResult<u64> {
    let c = r.columns()?;
    let done = sqlx::query(&format!(
        "INSERT INTO geofences (id, tenant_id, name, kind, geometry, center_lat, center_lon, \
         radius_m, min_lat, min_lon, max_lat, max_lon, geom, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {}, $13, $14) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
         geometry = excluded.geometry, center_lat = excluded.center_lat, \
         center_lon = excluded.center_lon, radius_m = excluded.radius_m, \
         min_lat = excluded.min_lat, min_lon = excluded.min_lon, max_lat = excluded.max_lat, \
         max_lon = excluded.max_lon, geom = excluded.geom, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE geofences.tenant_id = excluded.tenant_id",
        geom_sql("$4", "$5", "$6", "$7")
    ))
    .bind(r.id.as_uuid())
    .bind(tenant)
    .bind(r.name.as_str())
    .bind(c.kind)
    .bind(c.geometry)
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
    written(done, 1, TransferTable::Geofences, r.id)
}

async fn upsert_webhook(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &WebhookRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, enabled, description, secret, \
         consecutive_failures, disabled_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, events = excluded.events, \
         enabled = excluded.enabled, description = excluded.description, \
         secret = excluded.secret, consecutive_failures = excluded.consecutive_failures, \
         disabled_reason = excluded.disabled_reason, created_at = excluded.created_at, \
         updated_at = excluded.updated_at WHERE webhooks.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.as_uuid())
    .bind(tenant)
    .bind(&r.url)
    .bind(event_names(&r.events))
    .bind(r.enabled)
    .bind(r.description.as_ref().map(ShortText::as_str))
    .bind(&r.secret)
    .bind(int4(r.consecutive_failures))
    .bind(&r.disabled_reason)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, 1, TransferTable::Webhooks, r.id)
}

async fn upsert_attempt(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &WebhookAttemptRecord,
) -> StorageResult<u64> {
    // Only under one of the tenant's own webhooks.
    let done = sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (tenant_id, {ATTEMPT_COLUMNS}) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $3 AND tenant_id = $1) \
         ON CONFLICT (id) DO UPDATE SET webhook_id = excluded.webhook_id, \
         delivery_id = excluded.delivery_id, event_id = excluded.event_id, \
         event_type = excluded.event_type, attempt = excluded.attempt, \
         status_code = excluded.status_code, error = excluded.error, \
         duration_ms = excluded.duration_ms, at = excluded.at \
         WHERE webhook_deliveries.tenant_id = excluded.tenant_id"
    ))
    .bind(tenant)
    .bind(r.id.as_uuid())
    .bind(r.webhook_id.as_uuid())
    .bind(r.delivery_id.as_uuid())
    .bind(r.event_id.as_uuid())
    .bind(r.event_type.as_str())
    .bind(int4(r.attempt))
    .bind(r.status_code.map(i32::from))
    .bind(&r.error)
    .bind(int4(r.duration_ms))
    .bind(r.at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, 1, TransferTable::WebhookAttempts, r.id)
}

async fn upsert_state(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &TrackerStateRecord,
) -> StorageResult<u64> {
    let done = sqlx::query(
        "INSERT INTO vehicle_states (tenant_id, vehicle_id, state, last_seen, online, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, vehicle_id) DO UPDATE SET state = excluded.state, \
         last_seen = excluded.last_seen, online = excluded.online, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(r.vehicle_id.as_uuid())
    .bind(serde_json::to_value(&r.state).map_err(json_error)?)
    .bind(r.last_seen)
    .bind(r.online)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, 1, TransferTable::TrackerStates, r.vehicle_id)
}

/// History or latest positions: one `UNNEST` statement.
async fn upsert_positions(
    conn: &mut PgConnection,
    tenant: TenantId,
    records: &[&PositionRecord],
    table: TransferTable,
) -> StorageResult<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    let (name, key) = match table {
        TransferTable::LatestPositions => ("latest_positions", "vehicle_id"),
        _ => ("positions", "vehicle_id, time"),
    };
    let rows: Vec<NewPosition> = records
        .iter()
        .map(|r| NewPosition {
            tenant_id: tenant,
            position: r.to_position(),
        })
        .collect();
    let sql = format!(
        "INSERT INTO {name} (vehicle_id, time, tenant_id, lat, lon, speed, heading, altitude, \
         accuracy, valid, attributes) {UNNEST} \
         ON CONFLICT ({key}) DO UPDATE SET time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes WHERE {name}.tenant_id = excluded.tenant_id"
    );
    let done = Columns::of(&rows)
        .bind(sqlx::query(&sql))
        .execute(&mut *conn)
        .await
        .map_err(unexpected)?;
    written(done, rows.len(), table, "row")
}

async fn upsert_event(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    r: &EventRecord,
) -> StorageResult<u64> {
    let f = r.position.as_ref();
    let done = sqlx::query(
        "INSERT INTO events (id, tenant_id, type, vehicle_id, geofence_id, time, lat, lon, \
         speed, heading, altitude, accuracy, valid, attributes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO UPDATE SET type = excluded.type, vehicle_id = excluded.vehicle_id, \
         geofence_id = excluded.geofence_id, time = excluded.time, lat = excluded.lat, \
         lon = excluded.lon, speed = excluded.speed, heading = excluded.heading, \
         altitude = excluded.altitude, accuracy = excluded.accuracy, valid = excluded.valid, \
         attributes = excluded.attributes, created_at = excluded.created_at \
         WHERE events.tenant_id = excluded.tenant_id",
    )
    .bind(r.id.as_uuid())
    .bind(tenant)
    .bind(r.kind.as_str())
    .bind(r.vehicle_id.as_uuid())
    .bind(r.geofence_id.map(|g| g.as_uuid()))
    .bind(r.time)
    .bind(f.map(|f| f.lat))
    .bind(f.map(|f| f.lon))
    .bind(f.and_then(|f| f.speed))
    .bind(f.and_then(|f| f.heading))
    .bind(f.and_then(|f| f.altitude))
    .bind(f.and_then(|f| f.accuracy))
    .bind(f.map(|f| f.valid))
    .bind(f.and_then(|f| {
        (!f.attributes.as_map().is_empty())
            .then(|| serde_json::Value::Object(f.attributes.as_map().clone()))
    }))
    .bind(r.created_at)
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    written(done, 1, TransferTable::Events, r.id)
}
