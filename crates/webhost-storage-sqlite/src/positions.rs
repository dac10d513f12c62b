//! Position history on SQLite.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use webhost_domain::{Attributes, Fix, Position, TenantId, VehicleId};
use webhost_storage::{
    fetch_limit, mark_stored, newest_valid_per_vehicle, HistoryQuery, IngestBatch, NewPosition,
    Page, PositionBucket, StorageError, StorageResult,
};

use crate::bulk_read::failed;
use crate::{corrupt, parse_uuid, unexpected};

/// Rows per INSERT statement: 11 parameters each, well under SQLite's
/// 32,766-parameter limit.
const CHUNK: usize = 500;
/// A fix's columns, in the order [`fix_from_row`] reads them. Empty
/// attributes come back as NULL, so the common case parses no JSON.
pub(crate) const FIX_COLUMNS: &str =
    "time, lat, lon, speed, heading, altitude, accuracy, valid, NULLIF(attributes, '{}')";

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn attributes_text(attributes: &Attributes) -> Option<String> {
    (!attributes.as_map().is_empty())
        .then(|| serde_json::to_string(attributes.as_map()).unwrap_or_else(|_| "{}".into()))
}

/// A position from `vehicle_id, {FIX_COLUMNS}`.
pub(crate) fn position_from_row(row: &SqliteRow) -> StorageResult<Position> {
    Ok(Position {
        vehicle_id: VehicleId::from_uuid(parse_uuid(
            &row.try_get::<String, _>(0).map_err(unexpected)?,
        )?),
        fix: fix_from_row(row, 1)?,
    })
}

/// The fix in `FIX_COLUMNS` from column `first` on, read by index (a day's
/// track is ~9,000 rows; looking each column name up was measurable).
fn fix_from_row(row: &SqliteRow, first: usize) -> StorageResult<Fix> {
    let time: i64 = row.try_get(first).map_err(unexpected)?;
    let attributes: Option<String> = row.try_get(first + 8).map_err(unexpected)?;
    let attributes = match attributes {
        Some(text) => Attributes::from_trusted(
            serde_json::from_str(&text).map_err(|_| corrupt("attributes", &text))?,
        ),
        None => Attributes::default(),
    };
    Ok(Fix {
        time: DateTime::from_timestamp_millis(time)
            .ok_or_else(|| corrupt("time", &time.to_string()))?,
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

/// [`fix_from_row`] for a `rusqlite` row of `FIX_COLUMNS`.
fn fix_from_sync_row(row: &rusqlite::Row<'_>) -> StorageResult<Fix> {
    let time: i64 = row.get(0).map_err(failed)?;
    let attributes: Option<String> = row.get(8).map_err(failed)?;
    let attributes = match attributes {
        Some(text) => Attributes::from_trusted(
            serde_json::from_str(&text).map_err(|_| corrupt("attributes", &text))?,
        ),
        None => Attributes::default(),
    };
    Ok(Fix {
        time: DateTime::from_timestamp_millis(time)
            .ok_or_else(|| corrupt("time", &time.to_string()))?,
        lat: row.get(1).map_err(failed)?,
        lon: row.get(2).map_err(failed)?,
        speed: row.get(3).map_err(failed)?,
        heading: row.get(4).map_err(failed)?,
        altitude: row.get(5).map_err(failed)?,
        accuracy: row.get(6).map_err(failed)?,
        valid: row.get(7).map_err(failed)?,
        attributes,
    })
}

fn push_values<'a>(builder: &mut QueryBuilder<'a, Sqlite>, rows: &'a [NewPosition]) {
    builder.push_values(rows, |mut b, row| {
        let fix = &row.position.fix;
        b.push_bind(row.position.vehicle_id.to_string())
            .push_bind(millis(fix.time))
            .push_bind(row.tenant_id.to_string())
            .push_bind(fix.lat)
            .push_bind(fix.lon)
            .push_bind(fix.speed)
            .push_bind(fix.heading)
            .push_bind(fix.altitude)
            .push_bind(fix.accuracy)
            .push_bind(fix.valid)
            .push_bind(attributes_text(&fix.attributes))
            .push(crate::transfer::CLOCK);
    });
}

impl crate::SqliteCellStore {
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
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let mut returned = HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(CHUNK) {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "INSERT INTO positions (vehicle_id, time, tenant_id, lat, lon, speed, heading, \
                 altitude, accuracy, valid, attributes, change_seq) ",
            );
            push_values(&mut builder, chunk);
            builder.push(" ON CONFLICT (vehicle_id, time) DO NOTHING RETURNING vehicle_id, time");
            let inserted = builder
                .build()
                .fetch_all(&mut *tx)
                .await
                .map_err(unexpected)?;
            for row in inserted {
                let vehicle: String = row.try_get("vehicle_id").map_err(unexpected)?;
                let time: i64 = row.try_get("time").map_err(unexpected)?;
                let time = DateTime::from_timestamp_millis(time)
                    .ok_or_else(|| corrupt("time", &time.to_string()))?;
                returned.insert((VehicleId::from_uuid(parse_uuid(&vehicle)?), time));
            }
        }
        let stored = mark_stored(rows, returned);
        let latest = newest_valid_per_vehicle(rows, &stored);
        for chunk in latest.chunks(CHUNK) {
            let owned: Vec<NewPosition> = chunk.iter().map(|r| (*r).clone()).collect();
            let mut builder = QueryBuilder::<Sqlite>::new(
                "INSERT INTO latest_positions (vehicle_id, time, tenant_id, lat, lon, speed, \
                 heading, altitude, accuracy, valid, attributes, change_seq) ",
            );
            push_values(&mut builder, &owned);
            builder.push(
                " ON CONFLICT (vehicle_id) DO UPDATE SET time = excluded.time, \
                 lat = excluded.lat, lon = excluded.lon, speed = excluded.speed, \
                 heading = excluded.heading, altitude = excluded.altitude, \
                 accuracy = excluded.accuracy, valid = excluded.valid, \
                 attributes = excluded.attributes, change_seq = excluded.change_seq \
                 WHERE excluded.time > latest_positions.time",
            );
            builder
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unexpected)?;
        }
        crate::fleet::insert_events(&mut tx, batch.events).await?;
        crate::fleet::upsert_states(&mut tx, batch.states).await?;
        crate::jobs::insert_jobs(&mut tx, batch.jobs).await?;
        tx.commit().await.map_err(unexpected)?;
        Ok(stored)
    }

    pub(crate) async fn latest_positions_impl(
        &self,
        tenant: TenantId,
    ) -> StorageResult<Vec<Position>> {
        let rows = sqlx::query(&format!(
            "SELECT vehicle_id, {FIX_COLUMNS} FROM latest_positions WHERE tenant_id = ? \
             ORDER BY vehicle_id"
        ))
        .bind(tenant.to_string())
        .fetch_all(&self.pools.reader)
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
        let from = match query.after {
            Some(after) => (millis(after) + 1).max(millis(query.from)),
            None => millis(query.from),
        };
        let to = millis(query.to);
        let rows = fetch_limit(limit);
        let data = self
            .bulk
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {FIX_COLUMNS} FROM positions WHERE vehicle_id = ?1 \
                         AND tenant_id = ?2 AND time >= ?3 AND time < ?4 ORDER BY time LIMIT ?5"
                    ))
                    .map_err(failed)?;
                let mut rows = statement
                    .query(rusqlite::params![
                        vehicle.to_string(),
                        tenant.to_string(),
                        from,
                        to,
                        rows
                    ])
                    .map_err(failed)?;
                let mut data = Vec::new();
                while let Some(row) = rows.next().map_err(failed)? {
                    data.push(Position {
                        vehicle_id: vehicle,
                        fix: fix_from_sync_row(row)?,
                    });
                }
                Ok(data)
            })
            .await?;
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
        let width = i64::from(bucket_secs.max(1)) * 1000;
        let rows = sqlx::query(
            "SELECT (time / ?1) * ?1 AS bucket, AVG(lat) AS lat, AVG(lon) AS lon, \
             AVG(speed) AS speed, MAX(speed) AS max_speed, COUNT(*) AS count \
             FROM positions WHERE vehicle_id = ?2 AND tenant_id = ?3 AND time >= ?4 AND time < ?5 \
             AND valid GROUP BY bucket ORDER BY bucket",
        )
        .bind(width)
        .bind(vehicle.to_string())
        .bind(tenant.to_string())
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                let bucket: i64 = row.try_get("bucket").map_err(unexpected)?;
                Ok(PositionBucket {
                    time: DateTime::from_timestamp_millis(bucket)
                        .ok_or_else(|| corrupt("bucket", &bucket.to_string()))?,
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
