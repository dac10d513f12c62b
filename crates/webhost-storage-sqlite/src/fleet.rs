//! Geofences, events and vehicle tracking states on SQLite.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use webhost_domain::{
    Attributes, EventId, Fix, GeofenceId, Position, ShortText, TenantId, VehicleId,
};
use webhost_geofence::VehicleState;
use webhost_storage::{
    fetch_limit, last_state_per_vehicle, CreateGeofenceError, Event, EventCursor, EventQuery,
    EventType, Geofence, GeofencePatch, NewEvent, NewGeofence, Page, Quota, ShapeColumns,
    SilentVehicle, StorageError, StorageResult, Vehicle, VehicleTracking,
};

use crate::{corrupt, parse_uuid, unexpected};

/// Rows per multi-row INSERT: at most 15 parameters each, well under
/// SQLite's 32,766-parameter limit.
const CHUNK: usize = 500;

pub(crate) const GEOFENCE_COLUMNS: &str =
    "id, name, kind, geometry, center_lat, center_lon, radius_m, \
     created_at, updated_at";
pub(crate) const EVENT_COLUMNS: &str =
    "id, type, vehicle_id, geofence_id, time, lat, lon, speed, heading, \
     altitude, accuracy, valid, attributes";

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn from_millis(ms: i64) -> StorageResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("time", &ms.to_string()))
}

pub(crate) fn json_error(err: serde_json::Error) -> StorageError {
    StorageError::Unexpected(err.into())
}

pub(crate) fn geofence_from_row(row: &SqliteRow) -> StorageResult<Geofence> {
    let geometry: Option<String> = row.try_get("geometry").map_err(unexpected)?;
    let geometry = geometry
        .map(|text| serde_json::from_str(&text).map_err(|_| corrupt("geometry", &text)))
        .transpose()?;
    let kind: String = row.try_get("kind").map_err(unexpected)?;
    Ok(Geofence {
        id: GeofenceId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        name: ShortText::from_trusted(row.try_get::<String, _>("name").map_err(unexpected)?),
        shape: ShapeColumns::to_shape(
            &kind,
            geometry.as_ref(),
            row.try_get("center_lat").map_err(unexpected)?,
            row.try_get("center_lon").map_err(unexpected)?,
            row.try_get("radius_m").map_err(unexpected)?,
        )?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

pub(crate) fn event_from_row(row: &SqliteRow) -> StorageResult<Event> {
    let kind: String = row.try_get("type").map_err(unexpected)?;
    let vehicle_id = VehicleId::from_uuid(parse_uuid(
        &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
    )?);
    let time = from_millis(row.try_get("time").map_err(unexpected)?)?;
    let lat: Option<f64> = row.try_get("lat").map_err(unexpected)?;
    let lon: Option<f64> = row.try_get("lon").map_err(unexpected)?;
    let position = match (lat, lon) {
        (Some(lat), Some(lon)) => {
            let attributes: Option<String> = row.try_get("attributes").map_err(unexpected)?;
            let attributes = match attributes {
                Some(text) => Attributes::from_trusted(
                    serde_json::from_str(&text).map_err(|_| corrupt("attributes", &text))?,
                ),
                None => Attributes::default(),
            };
            Some(Position {
                vehicle_id,
                fix: Fix {
                    time,
                    lat,
                    lon,
                    speed: row.try_get("speed").map_err(unexpected)?,
                    heading: row.try_get("heading").map_err(unexpected)?,
                    altitude: row.try_get("altitude").map_err(unexpected)?,
                    accuracy: row.try_get("accuracy").map_err(unexpected)?,
                    valid: row
                        .try_get::<Option<bool>, _>("valid")
                        .map_err(unexpected)?
                        .unwrap_or(true),
                    attributes,
                },
            })
        }
        _ => None,
    };
    Ok(Event {
        id: EventId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        kind: EventType::parse(&kind).ok_or_else(|| corrupt("event type", &kind))?,
        vehicle_id,
        geofence_id: row
            .try_get::<Option<String>, _>("geofence_id")
            .map_err(unexpected)?
            .map(|raw| parse_uuid(&raw).map(GeofenceId::from_uuid))
            .transpose()?,
        time,
        position,
    })
}

/// Inserts events inside the caller's transaction.
pub(crate) async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> StorageResult<()> {
    let now = Utc::now();
    for chunk in events.chunks(CHUNK) {
        let mut builder = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, tenant_id, type, vehicle_id, geofence_id, time, lat, lon, \
             speed, heading, altitude, accuracy, valid, attributes, created_at, change_seq) ",
        );
        builder.push_values(chunk, |mut b, row| {
            let e = &row.event;
            let fix = e.position.as_ref().map(|p| &p.fix);
            b.push_bind(e.id.to_string())
                .push_bind(row.tenant_id.to_string())
                .push_bind(e.kind.as_str())
                .push_bind(e.vehicle_id.to_string())
                .push_bind(e.geofence_id.map(|g| g.to_string()))
                .push_bind(millis(e.time))
                .push_bind(fix.map(|f| f.lat))
                .push_bind(fix.map(|f| f.lon))
                .push_bind(fix.and_then(|f| f.speed))
                .push_bind(fix.and_then(|f| f.heading))
                .push_bind(fix.and_then(|f| f.altitude))
                .push_bind(fix.and_then(|f| f.accuracy))
                .push_bind(fix.map(|f| f.valid))
                .push_bind(fix.and_then(|f| {
                    (!f.attributes.as_map().is_empty()).then(|| {
                        serde_json::to_string(f.attributes.as_map()).unwrap_or_else(|_| "{}".into())
                    })
                }))
                .push_bind(now)
                .push(crate::transfer::CLOCK);
        });
        builder
            .build()
            .execute(&mut *conn)
            .await
            .map_err(unexpected)?;
    }
    Ok(())
}

/// Upserts tracking states inside the caller's transaction.
pub(crate) async fn upsert_states(
    conn: &mut SqliteConnection,
    states: &[VehicleTracking],
) -> StorageResult<()> {
    let now = Utc::now();
    let unique = last_state_per_vehicle(states);
    for chunk in unique.chunks(CHUNK) {
        let rows = chunk
            .iter()
            .map(|s| Ok((*s, serde_json::to_string(&s.state).map_err(json_error)?)))
            .collect::<StorageResult<Vec<_>>>()?;
        let mut builder = QueryBuilder::<Sqlite>::new(
            "INSERT INTO vehicle_states (tenant_id, vehicle_id, state, last_seen, online, \
             updated_at, change_seq) ",
        );
        builder.push_values(rows, |mut b, (s, state)| {
            b.push_bind(s.tenant_id.to_string())
                .push_bind(s.vehicle_id.to_string())
                .push_bind(state)
                .push_bind(s.last_seen.map(millis))
                .push_bind(s.online)
                .push_bind(now)
                .push(crate::transfer::CLOCK);
        });
        builder.push(
            " ON CONFLICT (tenant_id, vehicle_id) DO UPDATE SET state = excluded.state, \
             last_seen = excluded.last_seen, online = excluded.online, \
             updated_at = excluded.updated_at, change_seq = excluded.change_seq",
        );
        builder
            .build()
            .execute(&mut *conn)
            .await
            .map_err(unexpected)?;
    }
    Ok(())
}

/// Removes a vehicle's events and tracking state (the vehicle is deleted).
pub(crate) async fn delete_vehicle_tracking(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    vehicle: VehicleId,
) -> StorageResult<()> {
    for table in ["events", "vehicle_states"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE tenant_id = ? AND vehicle_id = ?"
        ))
        .bind(tenant.to_string())
        .bind(vehicle.to_string())
        .execute(&mut *conn)
        .await
        .map_err(unexpected)?;
    }
    Ok(())
}

impl crate::SqliteCellStore {
    pub(crate) async fn vehicles_with_ids_impl(
        &self,
        tenant: TenantId,
        ids: &[VehicleId],
    ) -> StorageResult<Vec<Vehicle>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(&ids.iter().map(|id| id.to_string()).collect::<Vec<_>>())
            .map_err(json_error)?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM vehicles WHERE tenant_id = ? \
             AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
            crate::cell::VEHICLE_COLUMNS
        ))
        .bind(tenant.to_string())
        .bind(list)
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(crate::cell::vehicle_from_row).collect()
    }

    pub(crate) async fn create_geofence_impl(
        &self,
        tenant: TenantId,
        geofence: NewGeofence,
    ) -> Result<Geofence, CreateGeofenceError> {
        // The single writer connection makes count-then-insert atomic.
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant").into());
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM geofences WHERE tenant_id = ?")
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?;
        Quota::geofences(count)?;
        let c = ShapeColumns::of(&geofence.shape);
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "INSERT INTO geofences (id, tenant_id, name, kind, geometry, center_lat, center_lon, \
             radius_m, min_lat, min_lon, max_lat, max_lon, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {GEOFENCE_COLUMNS}"
        ))
        .bind(geofence.id.to_string())
        .bind(tenant.to_string())
        .bind(geofence.name.as_str())
        .bind_shape(c)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(unexpected)?;
        let created = geofence_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(created)
    }

    pub(crate) async fn geofences_impl(&self, tenant: TenantId) -> StorageResult<Vec<Geofence>> {
        let rows = sqlx::query(&format!(
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = ? ORDER BY id"
        ))
        .bind(tenant.to_string())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter().map(geofence_from_row).collect()
    }

    pub(crate) async fn geofence_impl(
        &self,
        tenant: TenantId,
        id: GeofenceId,
    ) -> StorageResult<Geofence> {
        let row = sqlx::query(&format!(
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pools.reader)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("geofence"))?;
        geofence_from_row(&row)
    }

    pub(crate) async fn update_geofence_impl(
        &self,
        tenant: TenantId,
        id: GeofenceId,
        patch: GeofencePatch,
    ) -> StorageResult<Geofence> {
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let row = sqlx::query(&format!(
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("geofence"))?;
        let merged = patch.merge(geofence_from_row(&row)?);
        let c = ShapeColumns::of(&merged.shape);
        let row = sqlx::query(&format!(
            "UPDATE geofences SET name = ?, kind = ?, geometry = ?, center_lat = ?, \
             center_lon = ?, radius_m = ?, min_lat = ?, min_lon = ?, max_lat = ?, max_lon = ?, \
             updated_at = ? WHERE tenant_id = ? AND id = ? RETURNING {GEOFENCE_COLUMNS}"
        ))
        .bind(merged.name.as_str())
        .bind_shape(c)
        .bind(Utc::now())
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(unexpected)?;
        let updated = geofence_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(updated)
    }

    pub(crate) async fn delete_geofence_impl(
        &self,
        tenant: TenantId,
        id: GeofenceId,
    ) -> StorageResult<()> {
        let done = sqlx::query("DELETE FROM geofences WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&self.pools.writer)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("geofence"));
        }
        Ok(())
    }

    pub(crate) async fn events_impl(
        &self,
        tenant: TenantId,
        query: EventQuery,
    ) -> StorageResult<Page<Event, EventCursor>> {
        let limit = query.limit.max(1);
        let mut builder = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = "
        ));
        builder.push_bind(tenant.to_string());
        if let Some(from) = query.from {
            builder.push(" AND time >= ").push_bind(millis(from));
        }
        if let Some(to) = query.to {
            builder.push(" AND time < ").push_bind(millis(to));
        }
        if let Some(vehicle) = query.vehicle {
            builder
                .push(" AND vehicle_id = ")
                .push_bind(vehicle.to_string());
        }
        if !query.types.is_empty() {
            builder.push(" AND type IN (");
            let mut list = builder.separated(", ");
            for kind in &query.types {
                list.push_bind(kind.as_str());
            }
            builder.push(")");
        }
        if let Some(after) = query.after {
            builder
                .push(" AND (time > ")
                .push_bind(millis(after.time))
                .push(" OR (time = ")
                .push_bind(millis(after.time))
                .push(" AND id > ")
                .push_bind(after.id.to_string())
                .push("))");
        }
        builder
            .push(" ORDER BY time, id LIMIT ")
            .push_bind(fetch_limit(limit));
        let rows = builder
            .build()
            .fetch_all(&self.pools.reader)
            .await
            .map_err(unexpected)?;
        let data = rows
            .iter()
            .map(event_from_row)
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(data, limit, |e| EventCursor {
            time: e.time,
            id: e.id,
        }))
    }

    pub(crate) async fn vehicle_tracking_impl(
        &self,
        tenant: TenantId,
    ) -> StorageResult<Vec<VehicleTracking>> {
        let rows = sqlx::query(
            "SELECT vehicle_id, state, last_seen, online FROM vehicle_states \
             WHERE tenant_id = ? ORDER BY vehicle_id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(unexpected)?;
                let state: VehicleState =
                    serde_json::from_str(&state).map_err(|_| corrupt("vehicle state", &state))?;
                Ok(VehicleTracking {
                    tenant_id: tenant,
                    vehicle_id: VehicleId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
                    )?),
                    state,
                    last_seen: row
                        .try_get::<Option<i64>, _>("last_seen")
                        .map_err(unexpected)?
                        .map(from_millis)
                        .transpose()?,
                    online: row.try_get("online").map_err(unexpected)?,
                })
            })
            .collect()
    }

    pub(crate) async fn silent_vehicles_impl(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StorageResult<Vec<SilentVehicle>> {
        let rows = sqlx::query(
            "SELECT tenant_id, vehicle_id FROM vehicle_states \
             WHERE online = 1 AND last_seen < ? ORDER BY last_seen LIMIT ?",
        )
        .bind(millis(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(SilentVehicle {
                    tenant_id: TenantId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("tenant_id").map_err(unexpected)?,
                    )?),
                    vehicle_id: VehicleId::from_uuid(parse_uuid(
                        &row.try_get::<String, _>("vehicle_id").map_err(unexpected)?,
                    )?),
                })
            })
            .collect()
    }
}

/// Binds a shape's columns in table order: kind, geometry, circle centre and
/// radius, bounding box.
trait BindShape {
    fn bind_shape(self, c: ShapeColumns) -> Self;
}

impl<'q> BindShape for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    fn bind_shape(self, c: ShapeColumns) -> Self {
        self.bind(c.kind)
            .bind(c.geometry.as_ref().map(ToString::to_string))
            .bind(c.center_lat)
            .bind(c.center_lon)
            .bind(c.radius_m)
            .bind(c.bbox.min_lat)
            .bind(c.bbox.min_lon)
            .bind(c.bbox.max_lat)
            .bind(c.bbox.max_lon)
    }
}
