//! Moving one tenant's data between cells (SPEC §6), engine-neutral: the
//! tables a move carries ([`TransferTable`]), the full row image of each
//! ([`Record`]), chunks read from a keyset [`Cursor`] ([`Chunk`]), and the
//! per-table digest both sides compare before the switch ([`digest`]).
//!
//! The policy lives here, once; a backend only reads rows in key order
//! (`CellStore::export_chunk`), the rows changed since a watermark and the
//! keys deleted (`CellStore::export_changes`, [`ChangeChunk`]), upserts
//! (`CellStore::import`) and removes them (`CellStore::remove_records`).
//!
//! # What moves
//!
//! In copy (and import) order, parents first ([`TransferTable::ALL`]):
//! vehicles, geofences, webhooks, webhook delivery attempts (their webhook
//! must exist), tracker states, latest positions, positions, events.
//!
//! - **Tracker states** move with the positions: they are what the ingest
//!   writer (`webhost-cell/src/ingest.rs`) resumes from — which geofences a
//!   vehicle is inside, whether it is speeding, the last position
//!   processed, presence (`last_seen`, `online`). Without them the target
//!   would raise a second `geofence_enter` for a vehicle already inside, or
//!   miss the `geofence_exit` of one that leaves.
//! - **Latest positions** move as their own table (one row per vehicle)
//!   rather than being recomputed from the positions imported: a history
//!   cutoff may leave a vehicle's latest position out of the copied
//!   history, and `import` of positions must not depend on chunk order.
//!   Importing positions never touches latest positions.
//! - **Webhook delivery attempts** move: the tenant sees them
//!   (`GET /api/v1/webhooks/{id}/deliveries`), they are append-only and
//!   keyed by UUIDv7, so they copy and catch up like events.
//!
//! What does not move:
//!
//! - **The tenant row** (plan, limits): the target's comes from the
//!   control plane (`PUT /internal/v1/tenants/{id}`, idempotent), which on a
//!   downgrade carries the *target* plan. [`CellStore::import`] requires it
//!   and answers `NotFound("tenant")` without it.
//! - **Cell jobs** (pending `deliver_webhook` jobs): the queue's rows hold
//!   leases, attempts and schedules of *this* cell's worker and carry no
//!   tenant column (the tenant is inside the payload), so they cannot be
//!   exported tenant-scoped; deliveries pending at the switch stay with
//!   the source cell and are not retried after the move (a known gap).
//! - **Usage tallies**: they measure the work *this* cell did (cost
//!   attribution per cell); copying them would count the same requests on
//!   two cells while both hold the tenant.
//!
//! # Engine-neutral values
//!
//! Ids are UUIDs (strings on the wire); times are UTC truncated to the
//! microsecond (PostgreSQL's precision; SQLite keeps record times to the
//! nanosecond and position/event times to the millisecond, both exact in
//! microseconds); floats are `f64` with `-0.0` read as `0.0` (SQLite stores
//! an integral `REAL` as an integer and loses the sign); JSON objects
//! (attributes, GeoJSON) have their keys sorted; a geofence is its domain
//! [`Shape`] (a polygon's normalised GeoJSON, or a circle's centre and
//! radius) — the bounding box and PostGIS geometry are recomputed from it
//! on import. Columns a store fills on its own are part of the image and
//! kept by import (`created_at`, `updated_at`), so a copy is row for row
//! the original.
//!
//! # Canonical encoding and checksum
//!
//! A record's canonical bytes are its `serde_json` serialisation: an
//! object whose first field is `"table"`, then the record's fields in
//! declaration order (no map with unordered keys: the only maps are JSON
//! objects, sorted), times as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six
//! digits), floats as `serde_json` writes an `f64` (shortest round-trip
//! form). A table's checksum is the wrapping sum, as a `u128`, of the first
//! 16 bytes (big-endian) of each record's SHA-256, written as 32 lowercase
//! hex digits: independent of order, and unlike XOR a row present twice
//! does not cancel out. [`TableDigest`] pairs it with the row count.
//!
//! # Limits (known, each fails loudly rather than silently)
//!
//! - Rows deleted by retention (`expire_positions`, purged delivery
//!   attempts) leave no tombstone: a retention run during a move makes the
//!   two sides' digests differ and the move abort (the tenant stays).
//! - SQLite keeps position and event times to the millisecond: a
//!   PostgreSQL row with a sub-millisecond time (none is written today:
//!   `Fix::parse` truncates) would land truncated and the digests differ.
//! - JSON numbers (attributes, polygon vertices) go through `serde_json`'s
//!   default float parser, which may be one ULP off for some 17-digit
//!   values; a value that does not survive text → `f64` → text unchanged
//!   makes the digests differ (the move aborts), it never passes unseen.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use webhost_domain::{
    Attributes, DeviceId, EventId, GeofenceId, JobId, Position, ShortText, TenantId, VehicleId,
    VehicleName,
};
use webhost_geofence::{Shape, VehicleState};

use crate::{
    CellStore, Event, EventType, Geofence, ShapeColumns, StorageError, StorageResult, Vehicle,
    Webhook, WebhookAttempt, WebhookAttemptId, WebhookId,
};

/// The most records one chunk holds, whatever was asked: a chunk is one
/// import transaction on the target.
pub const MAX_CHUNK: u32 = 5_000;

/// Records per `export_chunk` call while computing a [`digest`].
const DIGEST_CHUNK: u32 = MAX_CHUNK;

/// A table a tenant move carries. The wire name ([`TransferTable::as_str`])
/// is what `webhost-move` lists in `Move::tables` and keys the digest by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTable {
    Vehicles,
    Geofences,
    Webhooks,
    WebhookAttempts,
    TrackerStates,
    LatestPositions,
    Positions,
    Events,
}

impl TransferTable {
    /// Every table, in copy order: a row's parents come before it.
    pub const ALL: [TransferTable; 8] = [
        Self::Vehicles,
        Self::Geofences,
        Self::Webhooks,
        Self::WebhookAttempts,
        Self::TrackerStates,
        Self::LatestPositions,
        Self::Positions,
        Self::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vehicles => "vehicles",
            Self::Geofences => "geofences",
            Self::Webhooks => "webhooks",
            Self::WebhookAttempts => "webhook_attempts",
            Self::TrackerStates => "tracker_states",
            Self::LatestPositions => "latest_positions",
            Self::Positions => "positions",
            Self::Events => "events",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// History tables: a move's `history_since` cutoff applies to them
    /// (rows with `time >= since` are carried); every other table is
    /// carried whole.
    pub fn is_history(self) -> bool {
        matches!(self, Self::Positions | Self::Events)
    }
}

impl fmt::Display for TransferTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an export stopped: the key of the last record of a chunk.
/// Opaque to the mover, which persists it and hands it back. Id-keyed
/// tables hold the UUID; time-keyed ones (positions, events) hold
/// `<epoch microseconds>_<uuid>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    pub fn from_string(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of_id(id: Uuid) -> Self {
        Self(id.to_string())
    }

    fn of_time_id(time: DateTime<Utc>, id: Uuid) -> Self {
        Self(format!("{}_{id}", time.timestamp_micros()))
    }

    fn invalid(&self, table: TransferTable) -> StorageError {
        StorageError::Unexpected(anyhow::anyhow!(
            "invalid {table} cursor {:?}: pass back a cursor an export of {table} returned",
            self.0
        ))
    }

    /// The id after which an id-keyed table resumes.
    pub fn id(&self, table: TransferTable) -> StorageResult<Uuid> {
        Uuid::parse_str(&self.0).map_err(|_| self.invalid(table))
    }

    /// The (time, id) after which a time-keyed table resumes (positions:
    /// the id is the vehicle's).
    pub fn time_id(&self, table: TransferTable) -> StorageResult<(DateTime<Utc>, Uuid)> {
        let (micros, id) = self.0.split_once('_').ok_or_else(|| self.invalid(table))?;
        let time = micros
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| self.invalid(table))?;
        Ok((time, Uuid::parse_str(id).map_err(|_| self.invalid(table))?))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Times as the records hold them: truncated to the microsecond.
pub fn micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// `-0.0` as `0.0`: SQLite does not keep the sign of an integral `REAL`.
fn float(x: f64) -> f64 {
    x + 0.0
}

fn opt_float(x: Option<f64>) -> Option<f64> {
    x.map(float)
}

/// A JSON value with every object's keys sorted (a no-op unless
/// `serde_json`'s `preserve_order` is on somewhere in the build).
fn sorted_json(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(sorted_map(map)),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_json).collect())
        }
        other => other,
    }
}

fn sorted_map(
    map: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(k, v)| (k, sorted_json(v)))
        .collect()
}

fn sorted_attributes(attributes: Attributes) -> Attributes {
    Attributes::from_trusted(sorted_map(attributes.as_map().clone()))
}

/// Times in the canonical form: always six fractional digits, `Z`.
mod time_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| super::micros(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            time: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|raw| {
                    DateTime::parse_from_rfc3339(&raw)
                        .map(|t| super::super::micros(t.with_timezone(&Utc)))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

/// A vehicle row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VehicleRecord {
    pub id: VehicleId,
    pub name: VehicleName,
    pub device_id: Option<DeviceId>,
    pub plate: Option<ShortText>,
    pub group: Option<ShortText>,
    pub attributes: Attributes,
    #[serde(with = "time_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_micros")]
    pub updated_at: DateTime<Utc>,
}

impl From<Vehicle> for VehicleRecord {
    fn from(v: Vehicle) -> Self {
        Self {
            id: v.id,
            name: v.name,
            device_id: v.device_id,
            plate: v.plate,
            group: v.group,
            attributes: sorted_attributes(v.attributes),
            created_at: micros(v.created_at),
            updated_at: micros(v.updated_at),
        }
    }
}

/// A geofence's shape, as the domain holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShapeRecord {
    /// The normalised GeoJSON `Polygon` ([`Shape::to_geojson`]).
    Polygon {
        geometry: serde_json::Value,
    },
    Circle {
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
}

/// A geofence row; its bounding box and PostGIS geometry follow from the
/// shape and are recomputed on import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeofenceRecord {
    pub id: GeofenceId,
    pub name: ShortText,
    pub shape: ShapeRecord,
    #[serde(with = "time_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_micros")]
    pub updated_at: DateTime<Utc>,
}

impl From<Geofence> for GeofenceRecord {
    fn from(g: Geofence) -> Self {
        let shape = match &g.shape {
            Shape::Circle { lat, lon, radius_m } => ShapeRecord::Circle {
                lat: float(*lat),
                lon: float(*lon),
                radius_m: float(*radius_m),
            },
            Shape::Polygon(_) => ShapeRecord::Polygon {
                geometry: sorted_json(g.shape.to_geojson().unwrap_or_default()),
            },
        };
        Self {
            id: g.id,
            name: g.name,
            shape,
            created_at: micros(g.created_at),
            updated_at: micros(g.updated_at),
        }
    }
}

impl GeofenceRecord {
    /// The columns to write; an invalid shape (a corrupt or forged record)
    /// is refused.
    pub fn columns(&self) -> StorageResult<ShapeColumns> {
        let shape = match &self.shape {
            ShapeRecord::Polygon { geometry } => {
                ShapeColumns::to_shape("polygon", Some(geometry), None, None, None)?
            }
            ShapeRecord::Circle { lat, lon, radius_m } => {
                ShapeColumns::to_shape("circle", None, Some(*lat), Some(*lon), Some(*radius_m))?
            }
        };
        Ok(ShapeColumns::of(&shape))
    }
}

/// A webhook row, its signing secret included (the target signs the
/// deliveries from then on).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub url: String,
    /// In the stored order.
    pub events: Vec<EventType>,
    pub enabled: bool,
    pub description: Option<ShortText>,
    pub secret: String,
    pub consecutive_failures: u32,
    pub disabled_reason: Option<String>,
    #[serde(with = "time_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_micros")]
    pub updated_at: DateTime<Utc>,
}

/// The secret stays out of logs.
impl fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("secret", &"[redacted]")
            .field("consecutive_failures", &self.consecutive_failures)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl From<Webhook> for WebhookRecord {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            description: w.description,
            secret: w.secret,
            consecutive_failures: w.consecutive_failures,
            disabled_reason: w.disabled_reason,
            created_at: micros(w.created_at),
            updated_at: micros(w.updated_at),
        }
    }
}

/// One logged delivery attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttemptRecord {
    pub id: WebhookAttemptId,
    pub webhook_id: WebhookId,
    pub delivery_id: JobId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    #[serde(with = "time_micros")]
    pub at: DateTime<Utc>,
}

impl From<WebhookAttempt> for WebhookAttemptRecord {
    fn from(a: WebhookAttempt) -> Self {
        Self {
            id: a.id,
            webhook_id: a.webhook_id,
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
            at: micros(a.at),
        }
    }
}

impl From<WebhookAttemptRecord> for WebhookAttempt {
    fn from(a: WebhookAttemptRecord) -> Self {
        Self {
            id: a.id,
            webhook_id: a.webhook_id,
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            event_type: a.event_type,
            attempt: a.attempt,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
            at: a.at,
        }
    }
}

/// A vehicle's tracker state: what the ingest writer resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackerStateRecord {
    pub vehicle_id: VehicleId,
    /// Geofences inside, speeding, last processed time.
    pub state: VehicleState,
    #[serde(with = "time_micros::option")]
    pub last_seen: Option<DateTime<Utc>>,
    pub online: bool,
    #[serde(with = "time_micros")]
    pub updated_at: DateTime<Utc>,
}

/// A position's values (a `positions` or `latest_positions` row, or the
/// copy an event keeps without its time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixRecord {
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    pub altitude: Option<f64>,
    pub accuracy: Option<f64>,
    pub valid: bool,
    /// Empty when none were sent (both engines store NULL then).
    pub attributes: Attributes,
}

impl FixRecord {
    fn of(fix: webhost_domain::Fix) -> Self {
        Self {
            lat: float(fix.lat),
            lon: float(fix.lon),
            speed: opt_float(fix.speed),
            heading: opt_float(fix.heading),
            altitude: opt_float(fix.altitude),
            accuracy: opt_float(fix.accuracy),
            valid: fix.valid,
            attributes: sorted_attributes(fix.attributes),
        }
    }

    fn at(&self, time: DateTime<Utc>) -> webhost_domain::Fix {
        webhost_domain::Fix {
            time,
            lat: self.lat,
            lon: self.lon,
            speed: self.speed,
            heading: self.heading,
            altitude: self.altitude,
            accuracy: self.accuracy,
            valid: self.valid,
            attributes: self.attributes.clone(),
        }
    }
}

/// A stored position (history) or a vehicle's latest one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionRecord {
    pub vehicle_id: VehicleId,
    #[serde(with = "time_micros")]
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub fix: FixRecord,
}

impl From<Position> for PositionRecord {
    fn from(p: Position) -> Self {
        Self {
            vehicle_id: p.vehicle_id,
            time: micros(p.fix.time),
            fix: FixRecord::of(p.fix),
        }
    }
}

impl PositionRecord {
    pub fn to_position(&self) -> Position {
        Position {
            vehicle_id: self.vehicle_id,
            fix: self.fix.at(self.time),
        }
    }
}

/// An event row, with the time the source stored it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: EventId,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub vehicle_id: VehicleId,
    pub geofence_id: Option<GeofenceId>,
    #[serde(with = "time_micros")]
    pub time: DateTime<Utc>,
    /// The position that triggered it (at `time`); `None` for
    /// `device_offline`.
    pub position: Option<FixRecord>,
    #[serde(with = "time_micros")]
    pub created_at: DateTime<Utc>,
}

impl EventRecord {
    pub fn of(event: Event, created_at: DateTime<Utc>) -> Self {
        Self {
            id: event.id,
            kind: event.kind,
            vehicle_id: event.vehicle_id,
            geofence_id: event.geofence_id,
            time: micros(event.time),
            position: event.position.map(|p| FixRecord::of(p.fix)),
            created_at: micros(created_at),
        }
    }
}

/// The full row image of one row of a [`TransferTable`], engine-neutral.
/// Rows carry no tenant: export and import take it as an argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Record {
    Vehicle(VehicleRecord),
    Geofence(GeofenceRecord),
    Webhook(WebhookRecord),
    WebhookAttempt(WebhookAttemptRecord),
    TrackerState(TrackerStateRecord),
    LatestPosition(PositionRecord),
    Position(PositionRecord),
    Event(EventRecord),
}

impl Record {
    pub fn table(&self) -> TransferTable {
        match self {
            Record::Vehicle(_) => TransferTable::Vehicles,
            Record::Geofence(_) => TransferTable::Geofences,
            Record::Webhook(_) => TransferTable::Webhooks,
            Record::WebhookAttempt(_) => TransferTable::WebhookAttempts,
            Record::TrackerState(_) => TransferTable::TrackerStates,
            Record::LatestPosition(_) => TransferTable::LatestPositions,
            Record::Position(_) => TransferTable::Positions,
            Record::Event(_) => TransferTable::Events,
        }
    }

    /// The record's key in its table's keyset order: vehicle, geofence,
    /// webhook and attempt ids; the vehicle for tracker states and latest
    /// positions; (time, vehicle) for positions; (time, id) for events.
    pub fn cursor(&self) -> Cursor {
        match self {
            Record::Vehicle(r) => Cursor::of_id(r.id.as_uuid()),
            Record::Geofence(r) => Cursor::of_id(r.id.as_uuid()),
            Record::Webhook(r) => Cursor::of_id(r.id.as_uuid()),
            Record::WebhookAttempt(r) => Cursor::of_id(r.id.as_uuid()),
            Record::TrackerState(r) => Cursor::of_id(r.vehicle_id.as_uuid()),
            Record::LatestPosition(r) => Cursor::of_id(r.vehicle_id.as_uuid()),
            Record::Position(r) => Cursor::of_time_id(r.time, r.vehicle_id.as_uuid()),
            Record::Event(r) => Cursor::of_time_id(r.time, r.id.as_uuid()),
        }
    }

    /// The canonical bytes the checksum is taken over (module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail: no map has non-string keys
        // and every float is finite (parsed so); an error would still
        // change the checksum rather than pass silently.
        serde_json::to_vec(self).unwrap_or_else(|e| format!("unencodable: {e}").into_bytes())
    }

    /// The first 16 bytes of the SHA-256 of the canonical bytes.
    fn hash(&self) -> u128 {
        let digest = Sha256::digest(self.canonical_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_be_bytes(first)
    }
}

/// One table's records after a cursor, and where the next chunk starts
/// (`None`: the table is done).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub records: Vec<Record>,
    pub next: Option<Cursor>,
}

/// The chunk size an export uses for `limit`: at least one record, at
/// most [`MAX_CHUNK`].
pub fn chunk_size(limit: u32) -> u32 {
    limit.clamp(1, MAX_CHUNK)
}

impl Chunk {
    /// The chunk of `records`, read in key order with
    /// [`fetch_limit`](crate::fetch_limit)`(chunk_size(limit))`: at most
    /// that many, and the cursor of the last one when more followed.
    pub fn from_overfetch(mut records: Vec<Record>, limit: u32) -> Self {
        let size = chunk_size(limit) as usize;
        let next = if records.len() > size {
            records.truncate(size);
            records.last().map(Record::cursor)
        } else {
            None
        };
        Chunk { records, next }
    }
}

/// One page of a table's changes since a watermark
/// ([`CellStore::export_changes`]): the full images of the rows inserted or
/// updated at or after it (in the order the backend pages them), the keys
/// deleted at or after it that are absent now (first page only; a key
/// deleted and written again is in `records` instead), and where the next
/// page starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeChunk {
    pub records: Vec<Record>,
    /// Keys of the table (as [`Record::cursor`] spells them) to delete.
    pub deleted: Vec<Cursor>,
    pub next: Option<Cursor>,
}

/// One table's sum: what both sides of a move compare.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub rows: u64,
    /// 32 lowercase hex digits (module docs).
    pub checksum: String,
}

/// Every [`TransferTable`]'s digest, by its wire name — the shape of
/// `webhost-move`'s `VerifyReport::tables`.
pub type TenantDigest = BTreeMap<String, TableDigest>;

/// Sums records into a [`TableDigest`], in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    rows: u64,
    sum: u128,
}

impl Checksum {
    pub fn add(&mut self, record: &Record) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(record.hash());
    }

    pub fn finish(self) -> TableDigest {
        TableDigest {
            rows: self.rows,
            checksum: format!("{:032x}", self.sum),
        }
    }
}

/// The tenant's digest over every table, read through
/// [`CellStore::export_chunk`] — so it is the same function of the rows on
/// every engine. `history_since` as for the export.
pub async fn digest<S: CellStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    history_since: Option<DateTime<Utc>>,
) -> StorageResult<TenantDigest> {
    let mut out = TenantDigest::new();
    for table in TransferTable::ALL {
        let mut sum = Checksum::default();
        let mut after: Option<Cursor> = None;
        loop {
            let chunk = store
                .export_chunk(tenant, table, after.as_ref(), DIGEST_CHUNK, history_since)
                .await?;
            for record in &chunk.records {
                sum.add(record);
            }
            match chunk.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.insert(table.as_str().to_string(), sum.finish());
    }
    Ok(out)
}

/// A batch to import, grouped by table in [`TransferTable::ALL`] order and
/// with one record per key (the last given wins): an upsert statement may
/// touch a row once.
#[derive(Debug, Default)]
pub struct ImportBatch<'a> {
    pub vehicles: Vec<&'a VehicleRecord>,
    pub geofences: Vec<&'a GeofenceRecord>,
    pub webhooks: Vec<&'a WebhookRecord>,
    pub webhook_attempts: Vec<&'a WebhookAttemptRecord>,
    pub tracker_states: Vec<&'a TrackerStateRecord>,
    pub latest_positions: Vec<&'a PositionRecord>,
    pub positions: Vec<&'a PositionRecord>,
    pub events: Vec<&'a EventRecord>,
}

impl<'a> ImportBatch<'a> {
    pub fn of(records: &'a [Record]) -> Self {
        let mut last: std::collections::HashMap<(TransferTable, Cursor), usize> =
            std::collections::HashMap::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            last.insert((record.table(), record.cursor()), i);
        }
        let mut batch = Self::default();
        for (i, record) in records.iter().enumerate() {
            if last.get(&(record.table(), record.cursor())) != Some(&i) {
                continue;
            }
            match record {
                Record::Vehicle(r) => batch.vehicles.push(r),
                Record::Geofence(r) => batch.geofences.push(r),
                Record::Webhook(r) => batch.webhooks.push(r),
                Record::WebhookAttempt(r) => batch.webhook_attempts.push(r),
                Record::TrackerState(r) => batch.tracker_states.push(r),
                Record::LatestPosition(r) => batch.latest_positions.push(r),
                Record::Position(r) => batch.positions.push(r),
                Record::Event(r) => batch.events.push(r),
            }
        }
        batch
    }

    pub fn is_empty(&self) -> bool {
        self.vehicles.is_empty()
            && self.geofences.is_empty()
            && self.webhooks.is_empty()
            && self.webhook_attempts.is_empty()
            && self.tracker_states.is_empty()
            && self.latest_positions.is_empty()
            && self.positions.is_empty()
            && self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(time: &str, lat: f64) -> Record {
        Record::Position(PositionRecord {
            vehicle_id: VehicleId::from_uuid(Uuid::nil()),
            time: time.parse().expect("time"),
            fix: FixRecord {
                lat,
                lon: 13.4,
                speed: None,
                heading: Some(0.0),
                altitude: None,
                accuracy: None,
                valid: true,
                attributes: Attributes::default(),
            },
        })
    }

    #[test]
    fn canonical_bytes_are_fixed_field_order_json_with_six_digit_times() {
        let text = String::from_utf8(position("2026-11-21T08:00:00.120Z", 52.5).canonical_bytes())
            .expect("utf-8");
        assert_eq!(
            text,
            "{\"table\":\"position\",\"vehicle_id\":\"00000000-0000-0000-0000-000000000000\",\
             \"time\":\"2026-11-21T08:00:00.120000Z\",\"lat\":52.5,\"lon\":13.4,\"speed\":null,\
             \"heading\":0.0,\"altitude\":null,\"accuracy\":null,\"valid\":true,\"attributes\":{}}"
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = position("2026-11-21T08:00:00.123456Z", 1.0);
        let back: Record =
            serde_json::from_slice(&record.canonical_bytes()).expect("decodes its own encoding");
        assert_eq!(back, record);
    }

    #[test]
    fn checksum_ignores_order_and_counts_repeats() {
        let a = position("2026-11-21T08:00:00Z", 1.0);
        let b = position("2026-11-21T08:00:01Z", 2.0);
        let sum = |records: &[&Record]| {
            let mut c = Checksum::default();
            for r in records {
                c.add(r);
            }
            c.finish()
        };
        assert_eq!(sum(&[&a, &b]), sum(&[&b, &a]));
        assert_eq!(sum(&[&a, &b]).rows, 2);
        assert_ne!(sum(&[&a, &a, &b]).checksum, sum(&[&b]).checksum);
        assert_eq!(sum(&[]).checksum, "0".repeat(32));
    }

    #[test]
    fn times_are_truncated_to_the_microsecond_and_floats_lose_negative_zero() {
        let t: DateTime<Utc> = "2026-11-21T08:00:00.123456789Z".parse().expect("time");
        assert_eq!(micros(t).timestamp_subsec_nanos(), 123_456_000);
        assert!(float(-0.0).is_sign_positive());
    }

    #[test]
    fn cursors_round_trip() {
        let id = Uuid::now_v7();
        let t: DateTime<Utc> = "2026-11-21T08:00:00.123456Z".parse().expect("time");
        assert_eq!(
            Cursor::of_time_id(t, id)
                .time_id(TransferTable::Events)
                .expect("parses"),
            (t, id)
        );
        assert_eq!(
            Cursor::of_id(id).id(TransferTable::Vehicles).expect("id"),
            id
        );
        assert!(Cursor::from_string("nope")
            .time_id(TransferTable::Positions)
            .is_err());
        for table in TransferTable::ALL {
            assert_eq!(TransferTable::parse(table.as_str()), Some(table));
        }
    }

    #[test]
    fn chunks_keep_the_limit_and_point_at_the_last_kept_record() {
        let records = vec![
            position("2026-11-21T08:00:00Z", 1.0),
            position("2026-11-21T08:00:01Z", 1.0),
            position("2026-11-21T08:00:02Z", 1.0),
        ];
        let chunk = Chunk::from_overfetch(records.clone(), 2);
        assert_eq!(chunk.records.len(), 2);
        assert_eq!(chunk.next, Some(records[1].cursor()));
        assert_eq!(Chunk::from_overfetch(records, 3).next, None);
    }

    #[test]
    fn import_batches_keep_the_last_record_per_key() {
        let first = position("2026-11-21T08:00:00Z", 1.0);
        let again = position("2026-11-21T08:00:00Z", 2.0);
        let records = [first, again.clone()];
        let batch = ImportBatch::of(&records);
        assert_eq!(batch.positions.len(), 1);
        assert_eq!(Record::Position(batch.positions[0].clone()), again);
    }
}
