//! Geofences (with a PostGIS geometry), events and vehicle tracking states
//! on PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use webhost_domain::{
    Attributes, EventId, Fix, GeofenceId, Position, ShortText, TenantId, VehicleId,
};
use webhost_geofence::VehicleState;
use webhost_storage::{
    fetch_limit, last_state_per_vehicle, CreateGeofenceError, Event, EventCursor, EventQuery,
    EventType, Geofence, GeofencePatch, NewEvent, NewGeofence, Page, Quota, ShapeColumns,
    SilentVehicle, StorageError, StorageResult, Vehicle, VehicleTracking,
};

use crate::{corrupt, unexpected};

pub(crate) const GEOFENCE_COLUMNS: &str =
    "id, name, kind, geometry, center_lat, center_lon, radius_m, \
     created_at, updated_at";
pub(crate) const EVENT_COLUMNS: &str =
    "id, type, vehicle_id, geofence_id, time, lat, lon, speed, heading, \
     altitude, accuracy, valid, attributes";

/// The PostGIS geometry of a shape from its bound columns: the polygon
/// itself ($kind = 'polygon', $geometry the GeoJSON), or the circle's centre.
pub(crate) fn geom_sql(kind: &str, geometry: &str, lat: &str, lon: &str) -> String {
    format!(
        "CASE WHEN {kind} = 'polygon' \
         THEN ST_SetSRID(ST_GeomFromGeoJSON({geometry}::text), 4326) \
         ELSE ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326) END"
    )
}

pub(crate) fn json_error(err: serde_json::Error) -> StorageError {
    StorageError::Unexpected(err.into())
}

pub(crate) fn geofence_from_row(row: &PgRow) -> StorageResult<Geofence> {
    let geometry: Option<serde_json::Value> = row.try_get("geometry").map_err(unexpected)?;
    let kind: String = row.try_get("kind").map_err(unexpected)?;
    Ok(Geofence {
        id: GeofenceId::from_uuid(row.try_get("id").map_err(unexpected)?),
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

pub(crate) fn event_from_row(row: &PgRow) -> StorageResult<Event> {
    let kind: String = row.try_get("type").map_err(unexpected)?;
    let vehicle_id = VehicleId::from_uuid(row.try_get("vehicle_id").map_err(unexpected)?);
    let time: DateTime<Utc> = row.try_get("time").map_err(unexpected)?;
    let lat: Option<f64> = row.try_get("lat").map_err(unexpected)?;
    let lon: Option<f64> = row.try_get("lon").map_err(unexpected)?;
    let position = match (lat, lon) {
        (Some(lat), Some(lon)) => {
            let attributes: Option<serde_json::Value> =
                row.try_get("attributes").map_err(unexpected)?;
            let attributes = match attributes {
                Some(serde_json::Value::Object(map)) => Attributes::from_trusted(map),
                None => Attributes::default(),
                Some(other) => return Err(corrupt("attributes", &other.to_string())),
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
        id: EventId::from_uuid(row.try_get("id").map_err(unexpected)?),
        kind: EventType::parse(&kind).ok_or_else(|| corrupt("event type", &kind))?,
        vehicle_id,
        geofence_id: row
            .try_get::<Option<uuid::Uuid>, _>("geofence_id")
            .map_err(unexpected)?
            .map(GeofenceId::from_uuid),
        time,
        position,
    })
}

/// Inserts events inside the caller's transaction: one statement.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> StorageResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let mut id = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut vehicle = Vec::with_capacity(n);
    let mut geofence: Vec<Option<uuid::Uuid>> = Vec::with_capacity(n);
    let mut time = Vec::with_capacity(n);
    let mut lat: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut lon: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut speed: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut heading: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut altitude: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut accuracy: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut valid: Vec<Option<bool>> = Vec::with_capacity(n);
    let mut attributes: Vec<Option<serde_json::Value>> = Vec::with_capacity(n);
    for row in events {
        let e = &row.event;
        let fix = e.position.as_ref().map(|p| &p.fix);
        id.push(e.id.as_uuid());
        tenant.push(row.tenant_id.as_uuid());
        kind.push(e.kind.as_str().to_owned());
        vehicle.push(e.vehicle_id.as_uuid());
        geofence.push(e.geofence_id.map(|g| g.as_uuid()));
        time.push(e.time);
        lat.push(fix.map(|f| f.lat));
        lon.push(fix.map(|f| f.lon));
        speed.push(fix.and_then(|f| f.speed));
        heading.push(fix.and_then(|f| f.heading));
        altitude.push(fix.and_then(|f| f.altitude));
        accuracy.push(fix.and_then(|f| f.accuracy));
        valid.push(fix.map(|f| f.valid));
        attributes.push(fix.and_then(|f| {
            (!f.attributes.as_map().is_empty())
                .then(|| serde_json::Value::Object(f.attributes.as_map().clone()))
        }));
    }
    sqlx::query(
        "INSERT INTO events (id, tenant_id, type, vehicle_id, geofence_id, time, lat, lon, \
         speed, heading, altitude, accuracy, valid, attributes, created_at) \
         SELECT u.*, $15 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], \
         $5::uuid[], $6::timestamptz[], $7::float8[], $8::float8[], $9::float8[], \
         $10::float8[], $11::float8[], $12::float8[], $13::bool[], $14::jsonb[]) AS u",
    )
    .bind(id)
    .bind(tenant)
    .bind(kind)
    .bind(vehicle)
    .bind(geofence)
    .bind(time)
    .bind(lat)
    .bind(lon)
    .bind(speed)
    .bind(heading)
    .bind(altitude)
    .bind(accuracy)
    .bind(valid)
    .bind(attributes)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    Ok(())
}

/// Upserts tracking states inside the caller's transaction: one statement.
pub(crate) async fn upsert_states(
    conn: &mut PgConnection,
    states: &[VehicleTracking],
) -> StorageResult<()> {
    let unique = last_state_per_vehicle(states);
    if unique.is_empty() {
        return Ok(());
    }
    let mut tenant = Vec::with_capacity(unique.len());
    let mut vehicle = Vec::with_capacity(unique.len());
    let mut state = Vec::with_capacity(unique.len());
    let mut last_seen: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(unique.len());
    let mut online = Vec::with_capacity(unique.len());
    for s in unique {
        tenant.push(s.tenant_id.as_uuid());
        vehicle.push(s.vehicle_id.as_uuid());
        state.push(serde_json::to_value(&s.state).map_err(json_error)?);
        last_seen.push(s.last_seen);
        online.push(s.online);
    }
    sqlx::query(
        "INSERT INTO vehicle_states (tenant_id, vehicle_id, state, last_seen, online, updated_at) \
         SELECT u.*, $6 FROM UNNEST($1::uuid[], $2::uuid[], $3::jsonb[], $4::timestamptz[], \
         $5::bool[]) AS u \
         ON CONFLICT (tenant_id, vehicle_id) DO UPDATE SET state = excluded.state, \
         last_seen = excluded.last_seen, online = excluded.online, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(vehicle)
    .bind(state)
    .bind(last_seen)
    .bind(online)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(unexpected)?;
    Ok(())
}

/// Removes a vehicle's events and tracking state (the vehicle is deleted).
pub(crate) async fn delete_vehicle_tracking(
    conn: &mut PgConnection,
    tenant: TenantId,
    vehicle: VehicleId,
) -> StorageResult<()> {
    for table in ["events", "vehicle_states"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND vehicle_id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(vehicle.as_uuid())
        .execute(&mut *conn)
        .await
        .map_err(unexpected)?;
    }
    Ok(())
}

impl crate::PgCellStore {
    pub(crate) async fn vehicles_with_ids_impl(
        &self,
        tenant: TenantId,
        ids: &[VehicleId],
    ) -> StorageResult<Vec<Vehicle>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = ids.iter().map(VehicleId::as_uuid).collect();
        let rows = sqlx::query(&format!(
            "SELECT {} FROM vehicles WHERE tenant_id = $1 AND id = ANY($2::uuid[]) ORDER BY id",
            crate::cell::VEHICLE_COLUMNS
        ))
        .bind(tenant.as_uuid())
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter().map(crate::cell::vehicle_from_row).collect()
    }

    pub(crate) async fn create_geofence_impl(
        &self,
        tenant: TenantId,
        geofence: NewGeofence,
    ) -> Result<Geofence, CreateGeofenceError> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // Locking the tenant row serialises concurrent creates of one tenant,
        // so count-then-insert cannot overshoot the limit.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant").into());
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM geofences WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?;
        Quota::geofences(count)?;
        let c = ShapeColumns::of(&geofence.shape);
        let row = sqlx::query(&format!(
            "INSERT INTO geofences (id, tenant_id, name, kind, geometry, center_lat, center_lon, \
             radius_m, min_lat, min_lon, max_lat, max_lon, geom, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {}, $13, $13) \
             RETURNING {GEOFENCE_COLUMNS}",
            geom_sql("$4", "$5", "$6", "$7")
        ))
        .bind(geofence.id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(geofence.name.as_str())
        .bind_shape(c)
        .bind(Utc::now())
        .fetch_one(&mut *tx)
        .await
        .map_err(unexpected)?;
        let created = geofence_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(created)
    }

    pub(crate) async fn geofences_impl(&self, tenant: TenantId) -> StorageResult<Vec<Geofence>> {
        let rows = sqlx::query(&format!(
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
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
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let row = sqlx::query(&format!(
            "SELECT {GEOFENCE_COLUMNS} FROM geofences WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("geofence"))?;
        let merged = patch.merge(geofence_from_row(&row)?);
        let c = ShapeColumns::of(&merged.shape);
        let row = sqlx::query(&format!(
            "UPDATE geofences SET name = $3, kind = $4, geometry = $5, center_lat = $6, \
             center_lon = $7, radius_m = $8, min_lat = $9, min_lon = $10, max_lat = $11, \
             max_lon = $12, geom = {}, updated_at = $13 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {GEOFENCE_COLUMNS}",
            geom_sql("$4", "$5", "$6", "$7")
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(merged.name.as_str())
        .bind_shape(c)
        .bind(Utc::now())
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
        let done = sqlx::query("DELETE FROM geofences WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&self.pool)
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
        let types: Vec<String> = query.types.iter().map(|t| t.as_str().to_owned()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 \
             AND ($2::timestamptz IS NULL OR time >= $2) \
             AND ($3::timestamptz IS NULL OR time < $3) \
             AND ($4::uuid IS NULL OR vehicle_id = $4) \
             AND (cardinality($5::text[]) = 0 OR type = ANY($5)) \
             AND ($6::timestamptz IS NULL OR (time, id) > ($6, $7::uuid)) \
             ORDER BY time, id LIMIT $8"
        ))
        .bind(tenant.as_uuid())
        .bind(query.from)
        .bind(query.to)
        .bind(query.vehicle.map(|v| v.as_uuid()))
        .bind(types)
        .bind(query.after.map(|a| a.time))
        .bind(query.after.map(|a| a.id.as_uuid()))
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
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
             WHERE tenant_id = $1 ORDER BY vehicle_id",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                let state: serde_json::Value = row.try_get("state").map_err(unexpected)?;
                let state: VehicleState = serde_json::from_value(state.clone())
                    .map_err(|_| corrupt("vehicle state", &state.to_string()))?;
                Ok(VehicleTracking {
                    tenant_id: tenant,
                    vehicle_id: VehicleId::from_uuid(
                        row.try_get("vehicle_id").map_err(unexpected)?,
                    ),
                    state,
                    last_seen: row.try_get("last_seen").map_err(unexpected)?,
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
             WHERE online AND last_seen < $1 ORDER BY last_seen LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter()
            .map(|row| {
                Ok(SilentVehicle {
                    tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(unexpected)?),
                    vehicle_id: VehicleId::from_uuid(
                        row.try_get("vehicle_id").map_err(unexpected)?,
                    ),
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

impl<'q> BindShape for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_shape(self, c: ShapeColumns) -> Self {
        self.bind(c.kind)
            .bind(c.geometry)
            .bind(c.center_lat)
            .bind(c.center_lon)
            .bind(c.radius_m)
            .bind(c.bbox.min_lat)
            .bind(c.bbox.min_lon)
            .bind(c.bbox.max_lat)
            .bind(c.bbox.max_lon)
    }
}
