//! Position history on PostgreSQL: daily partitions, bulk insert through
//! UNNEST (one statement per batch, duplicates skipped by the primary key).

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use webhost_domain::{Attributes, Fix, Position, TenantId, VehicleId};
use webhost_storage::{
    fetch_limit, mark_stored, newest_valid_per_vehicle, HistoryQuery, IngestBatch, NewPosition,
    Page, PositionBucket, StorageError, StorageResult,
};

use crate::{corrupt, unexpected};

/// A fix's columns, in the order [`fix_from_row`] reads them. Empty
/// attributes come back as NULL, so the common case decodes no JSON.
pub(crate) const FIX_COLUMNS: &str =
    "time, lat, lon, speed, heading, altitude, accuracy, valid, NULLIF(attributes, '{}'::jsonb)";

pub(crate) const UNNEST: &str = "SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], \
     $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], \
     $10::bool[], $11::jsonb[])";

/// A position from `vehicle_id, {FIX_COLUMNS}`.
pub(crate) fn position_from_row(row: &PgRow) -> StorageResult<Position> {
    Ok(Position {
        vehicle_id: VehicleId::from_uuid(row.try_get(0).map_err(unexpected)?),
        fix: fix_from_row(row, 1)?,
    })
}

/// The fix in `FIX_COLUMNS` from column `first` on. Columns are read by
/// index: a day's track is ~9,000 rows of nine columns, and looking each
/// name up was a measurable share of reading it.
fn fix_from_row(row: &PgRow, first: usize) -> StorageResult<Fix> {
    let attributes: Option<serde_json::Value> = row.try_get(first + 8).map_err(unexpected)?;
    let attributes = match attributes {
        Some(serde_json::Value::Object(map)) => Attributes::from_trusted(map),
        None => Attributes::default(),
        Some(other) => return Err(corrupt("attributes", &other.to_string())),
    };
    Ok(Fix {
        time: row.try_get(first).map_err(unexpected)?,
        lat: row.try_get(first + 1).map_err(unexpected)?,
        lon: row.try_get(first + 2).map_err(unexpected)?,
        speed: row.try_get(first + 3).map_err(unexpected)?,
        heading: row.try_get(first + 4).map_err(unexpected)?,
        altitude: row.try_get(first + 5).map_err(unexpected)?,
        accuracy: row.try_get(first + 6).map_err(unexpected)?,
        valid: row.try_get(first + 7).map_err(unexpected)?,
        attributes,
    })
}

/// Column arrays for UNNEST.
#[derive(Default)]
pub(crate) struct Columns {
    vehicle: Vec<uuid::Uuid>,
    time: Vec<DateTime<Utc>>,
    tenant: Vec<uuid::Uuid>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    speed: Vec<Option<f64>>,
    heading: Vec<Option<f64>>,
    altitude: Vec<Option<f64>>,
    accuracy: Vec<Option<f64>>,
    valid: Vec<bool>,
    attributes: Vec<Option<serde_json::Value>>,
}

impl Columns {
    pub(crate) fn of<'a>(rows: impl IntoIterator<Item = &'a NewPosition>) -> Self {
        let mut c = Self::default();
        for row in rows {
            let fix = &row.position.fix;
            c.vehicle.push(row.position.vehicle_id.as_uuid());
            c.time.push(fix.time);
            c.tenant.push(row.tenant_id.as_uuid());
            c.lat.push(fix.lat);
            c.lon.push(fix.lon);
            c.speed.push(fix.speed);
            c.heading.push(fix.heading);
            c.altitude.push(fix.altitude);
            c.accuracy.push(fix.accuracy);
            c.valid.push(fix.valid);
            c.attributes.push(
                (!fix.attributes.as_map().is_empty())
                    .then(|| serde_json::Value::Object(fix.attributes.as_map().clone())),
            );
        }
        c
    }

    pub(crate) fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.vehicle)
            .bind(self.time)
            .bind(self.tenant)
            .bind(self.lat)
            .bind(self.lon)
            .bind(self.speed)
            .bind(self.heading)
            .bind(self.altitude)
            .bind(self.accuracy)
            .bind(self.valid)
            .bind(self.attributes)
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Stores a group's positions in one binary `COPY`, betting that none is
/// stored yet, and says which rows were stored (repeats inside the group
/// count once, the first).
///
/// `INSERT … ON CONFLICT DO NOTHING RETURNING` pays a speculative insertion
/// and a returned row per position; a `COPY` is several times cheaper
/// (docs/BENCHMARKS.md). Positions are almost always new; when one is a
/// resend of a stored one, the unique key stops the `COPY`, the caller
/// rolls back to the savepoint taken here and uses [`insert_on_conflict`].
async fn copy_new_rows(
    tx: &mut sqlx::PgConnection,
    rows: &[NewPosition],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen: HashSet<(VehicleId, DateTime<Utc>)> = HashSet::with_capacity(rows.len());
    let stored: Vec<bool> = rows
        .iter()
        .map(|r| seen.insert((r.position.vehicle_id, r.position.fix.time)))
        .collect();
    let new = rows
        .iter()
        .zip(&stored)
        .filter(|(_, s)| **s)
        .map(|(r, _)| r);
    let body = binary_copy(new).map_err(|err| sqlx::Error::Encode(err.into()))?;
    sqlx::query("SAVEPOINT copy_positions")
        .execute(&mut *tx)
        .await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY positions (vehicle_id, time, tenant_id, lat, lon, speed, heading, altitude, \
             accuracy, valid, attributes) FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(body).await?;
    copy.finish().await?;
    Ok(stored)
}

/// The row-by-row way: `ON CONFLICT DO NOTHING`, with the stored keys
/// returned.
async fn insert_on_conflict(
    tx: &mut sqlx::PgConnection,
    rows: &[NewPosition],
) -> StorageResult<Vec<bool>> {
    let sql = format!(
        "INSERT INTO positions (vehicle_id, time, tenant_id, lat, lon, speed, heading, \
         altitude, accuracy, valid, attributes) {UNNEST} \
         ON CONFLICT (vehicle_id, time) DO NOTHING RETURNING vehicle_id, time"
    );
    let inserted = Columns::of(rows)
        .bind(sqlx::query(&sql))
        .fetch_all(&mut *tx)
        .await
        .map_err(unexpected)?;
    let mut returned: HashSet<(VehicleId, DateTime<Utc>)> = HashSet::with_capacity(inserted.len());
    for row in inserted {
        returned.insert((
            VehicleId::from_uuid(row.try_get("vehicle_id").map_err(unexpected)?),
            row.try_get("time").map_err(unexpected)?,
        ));
    }
    Ok(mark_stored(rows, returned))
}

/// Rows in PostgreSQL's binary `COPY` format, in the column order of
/// `copy_new_rows`'s statement.
fn binary_copy<'a>(
    rows: impl Iterator<Item = &'a NewPosition>,
) -> Result<Vec<u8>, serde_json::Error> {
    /// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let float = |out: &mut Vec<u8>, value: Option<f64>| match value {
        Some(v) => field(out, &v.to_be_bytes()),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    };
    for row in rows {
        let fix = &row.position.fix;
        out.extend_from_slice(&11i16.to_be_bytes());
        field(&mut out, row.position.vehicle_id.as_uuid().as_bytes());
        field(
            &mut out,
            &(fix.time.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes(),
        );
        field(&mut out, row.tenant_id.as_uuid().as_bytes());
        float(&mut out, Some(fix.lat));
        float(&mut out, Some(fix.lon));
        float(&mut out, fix.speed);
        float(&mut out, fix.heading);
        float(&mut out, fix.altitude);
        float(&mut out, fix.accuracy);
        field(&mut out, &[u8::from(fix.valid)]);
        if fix.attributes.as_map().is_empty() {
            out.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            // jsonb's binary form: a version byte, then the JSON text.
            let mut json = vec![1u8];
            serde_json::to_writer(&mut json, fix.attributes.as_map())?;
            field(&mut out, &json);
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

fn partition_name(day: NaiveDate) -> String {
    format!("positions_p{}", day.format("%Y%m%d"))
}

impl crate::PgCellStore {
    /// Creates the daily partitions covering `days` that this process has
    /// not seen yet. Safe to race with other processes.
    pub async fn ensure_partitions(
        &self,
        days: impl IntoIterator<Item = NaiveDate>,
    ) -> StorageResult<()> {
        let missing: Vec<NaiveDate> = {
            let known = self.partitions.lock().expect("partition cache lock");
            let mut days: Vec<NaiveDate> =
                days.into_iter().filter(|d| !known.contains(d)).collect();
            days.sort();
            days.dedup();
            days
        };
        for day in missing {
            let next = day + TimeDelta::days(1);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF positions \
                 FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                partition_name(day)
            );
            if let Err(err) = sqlx::query(&sql).execute(&self.pool).await {
                // Another process created it between our check and ours.
                let raced = err
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|c| c == "42P07" || c == "23505");
                if !raced {
                    return Err(unexpected(err));
                }
            }
            self.partitions
                .lock()
                .expect("partition cache lock")
                .insert(day);
        }
        Ok(())
    }

    /// Positions, events and states in one transaction.
    pub(crate) async fn insert_positions_impl(
        &self,
        batch: IngestBatch<'_>,
    ) -> StorageResult<Vec<bool>> {
        let rows = batch.positions;
        if rows.is_empty()
            && batch.events.is_empty()
            && batch.states.is_empty()
            && batch.jobs.is_empty()
        {
            return Ok(Vec::new());
        }
        self.ensure_partitions(rows.iter().map(|r| r.position.fix.time.date_naive()))
            .await?;
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let stored = if rows.is_empty() {
            Vec::new()
        } else {
            self.insert_position_rows(&mut tx, rows).await?
        };
        crate::fleet::insert_events(&mut tx, batch.events).await?;
        crate::fleet::upsert_states(&mut tx, batch.states).await?;
        crate::jobs::insert_jobs(&mut tx, batch.jobs).await?;
        tx.commit().await.map_err(unexpected)?;
        Ok(stored)
    }

    async fn insert_position_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &[NewPosition],
    ) -> StorageResult<Vec<bool>> {
        let stored = match copy_new_rows(tx, rows).await {
            Ok(stored) => stored,
            Err(err) if is_unique_violation(&err) => {
                // A resend of something already stored: undo the COPY and
                // let ON CONFLICT sort the group out row by row.
                sqlx::query("ROLLBACK TO SAVEPOINT copy_positions")
                    .execute(&mut *tx)
                    .await
                    .map_err(unexpected)?;
                insert_on_conflict(tx, rows).await?
            }
            Err(err) => return Err(unexpected(err)),
        };
        let newest = newest_valid_per_vehicle(rows, &stored);
        if !newest.is_empty() {
            let sql = format!(
                "INSERT INTO latest_positions (vehicle_id, time, tenant_id, lat, lon, speed, \
                 heading, altitude, accuracy, valid, attributes) {UNNEST} \
                 ON CONFLICT (vehicle_id) DO UPDATE SET time = excluded.time, \
                 lat = excluded.lat, lon = excluded.lon, speed = excluded.speed, \
                 heading = excluded.heading, altitude = excluded.altitude, \
                 accuracy = excluded.accuracy, valid = excluded.valid, \
                 attributes = excluded.attributes WHERE excluded.time > latest_positions.time"
            );
            Columns::of(newest)
                .bind(sqlx::query(&sql))
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?;
        }
        Ok(stored)
    }

    pub(crate) async fn latest_positions_impl(
        &self,
        tenant: TenantId,
    ) -> StorageResult<Vec<Position>> {
        let rows = sqlx::query(&format!(
            "SELECT vehicle_id, {FIX_COLUMNS} FROM latest_positions WHERE tenant_id = $1 \
             ORDER BY vehicle_id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter().map(position_from_row).collect()
    }

    pub(crate) async fn positions_impl(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        query: HistoryQuery,
    ) -> StorageResult<Page<Position, DateTime<Utc>>> {
        let limit = query.limit.max(1);
        let rows = sqlx::query(&format!(
            "SELECT {FIX_COLUMNS} FROM positions WHERE vehicle_id = $1 AND tenant_id = $2 \
             AND time >= $3 AND time < $4 AND ($5::timestamptz IS NULL OR time > $5) \
             ORDER BY time LIMIT $6"
        ))
        .bind(vehicle.as_uuid())
        .bind(tenant.as_uuid())
        .bind(query.from)
        .bind(query.to)
        .bind(query.after)
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        let data = rows
            .iter()
            .map(|row| {
                Ok(Position {
                    vehicle_id: vehicle,
                    fix: fix_from_row(row, 0)?,
                })
            })
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(data, limit, |p| p.fix.time))
    }

    pub(crate) async fn position_buckets_impl(
        &self,
        tenant: TenantId,
        vehicle: VehicleId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_secs: u32,
    ) -> StorageResult<Vec<PositionBucket>> {
        let rows = sqlx::query(
            "SELECT to_timestamp(floor(extract(epoch FROM time) / $1) * $1) AS bucket, \
             AVG(lat) AS lat, AVG(lon) AS lon, AVG(speed) AS speed, MAX(speed) AS max_speed, \
             COUNT(*) AS count FROM positions WHERE vehicle_id = $2 AND tenant_id = $3 \
             AND time >= $4 AND time < $5 AND valid GROUP BY bucket ORDER BY bucket",
        )
        .bind(f64::from(bucket_secs.max(1)))
        .bind(vehicle.as_uuid())
        .bind(tenant.as_uuid())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(PositionBucket {
                    time: row.try_get("bucket").map_err(unexpected)?,
                    lat: row.try_get("lat").map_err(unexpected)?,
                    lon: row.try_get("lon").map_err(unexpected)?,
                    speed: row.try_get("speed").map_err(unexpected)?,
                    max_speed: row.try_get("max_speed").map_err(unexpected)?,
                    count: row.try_get::<i64, _>("count").map_err(unexpected)? as u64,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()
    }
}
