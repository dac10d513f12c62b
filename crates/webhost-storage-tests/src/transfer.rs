//! Stories for moving a tenant's data ([`CellStore::export_chunk`],
//! [`CellStore::import`], [`CellStore::digest`]): a copy in small chunks
//! into a fresh store is row for row the original and has the same digest;
//! importing again changes nothing; a history cutoff carries only the
//! recent positions and events; an export holds the tenant's rows only.
//!
//! The stories take two stores, source and target, so the same story runs
//! on one engine (the conformance macro: two fresh databases) and across
//! engines (`tests/cross_engine.rs`: SQLite ⇄ PostgreSQL).

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use webhost_domain::{Attributes, EventId, Fix, GeofenceId, JobId, Position, TenantId, VehicleId};
use webhost_geofence::{Shape, VehicleState};
use webhost_storage::{
    AttemptVerdict, CellStore, CellTenant, Conflict, Cursor, Event, EventQuery, EventType,
    IngestBatch, NewEvent, NewGeofence, NewPosition, NewVehicle, NewWebhook, PageRequest, Record,
    StorageError, TenantDigest, TransferTable, VehicleTracking, WebhookAttempt, WebhookAttemptId,
    WebhookId,
};

use webhost_storage::transfer::{GeofenceRecord, VehicleRecord, WebhookRecord};

use crate::fixtures::{
    assert_not_found, attributes, cell_tenant, device, expect_conflict, text, vehicle_name,
};

/// Noon (and a few milliseconds) on the first of four days of history.
fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_732_190_400_123)
        .single()
        .expect("valid time")
}

/// Days of history seeded per vehicle; positions every 6 hours.
const DAYS: i64 = 4;

/// What [`seed`] stored, to check exports against.
struct Seeded {
    tenant: CellTenant,
    vehicles: Vec<VehicleId>,
    positions: usize,
    events: usize,
}

fn fix(time: DateTime<Utc>, lat: f64, lon: f64, n: i64) -> Fix {
    Fix {
        time,
        lat,
        lon,
        speed: (n % 3 != 0).then_some(40.0 + n as f64 * 0.1),
        heading: Some((n * 37 % 360) as f64),
        altitude: (n % 2 == 0).then_some(-0.0),
        accuracy: Some(4.25),
        valid: n % 7 != 3,
        attributes: if n % 4 == 0 {
            attributes(json!({"ignition": true, "battery": 12.6, "alarm": null}))
        } else {
            Attributes::default()
        },
    }
}

/// A tenant with two vehicles (one with device, plate, group and
/// attributes), a polygon and a circle, a webhook with a logged attempt,
/// positions over [`DAYS`] days, events of every kind and both vehicles'
/// tracker states.
async fn seed(store: &dyn CellStore, tag: &str) -> Seeded {
    let tenant = cell_tenant(10);
    store.put_tenant(tenant.clone()).await.expect("put tenant");
    let t = tenant.id;
    let van = store
        .create_vehicle(
            t,
            NewVehicle {
                id: VehicleId::new(),
                name: vehicle_name(&format!("Van {tag}")),
                device_id: Some(device(&format!(
                    "dev-{tag}-{}",
                    uuid::Uuid::new_v4().simple()
                ))),
                plate: Some(text("B-WH 42")),
                group: Some(text("North")),
                attributes: attributes(json!({"zeta": 1, "alpha": {"b": 2.5, "a": [1, "x"]}})),
            },
        )
        .await
        .expect("van")
        .id;
    let truck = store
        .create_vehicle(
            t,
            NewVehicle {
                id: VehicleId::new(),
                name: vehicle_name(&format!("Truck {tag}")),
                device_id: None,
                plate: None,
                group: None,
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("truck")
        .id;
    let zone = store
        .create_geofence(
            t,
            NewGeofence {
                id: GeofenceId::new(),
                name: text("Depot"),
                shape: Shape::from_geojson(&json!({
                    "type": "Polygon",
                    "coordinates": [
                        [[13.0, 52.0], [14.0, 52.0], [14.0, 53.0], [13.0, 53.0], [13.0, 52.0]],
                        [[13.4, 52.4], [13.6, 52.4], [13.6, 52.6], [13.4, 52.6], [13.4, 52.4]]
                    ]
                }))
                .expect("polygon"),
            },
        )
        .await
        .expect("polygon geofence")
        .id;
    store
        .create_geofence(
            t,
            NewGeofence {
                id: GeofenceId::new(),
                name: text("Yard"),
                shape: Shape::circle(48.137_154, 11.576_124, 1_500.5).expect("circle"),
            },
        )
        .await
        .expect("circle geofence");
    let hook = store
        .create_webhook(
            t,
            NewWebhook {
                id: WebhookId::new(),
                url: "https://example.com/hooks/fleet".into(),
                events: vec![EventType::GeofenceExit, EventType::GeofenceEnter],
                description: Some(text("Dispatch")),
                secret: format!("whsec_{}", uuid::Uuid::new_v4().simple()),
            },
        )
        .await
        .expect("webhook")
        .id;
    store
        .record_webhook_attempt(
            t,
            WebhookAttempt {
                id: WebhookAttemptId::new(),
                webhook_id: hook,
                delivery_id: JobId::new(),
                event_id: EventId::new(),
                event_type: EventType::GeofenceEnter,
                attempt: 1,
                status_code: None,
                error: Some("connection refused".into()),
                duration_ms: 31,
                at: t0() + Duration::hours(1),
            },
            AttemptVerdict::GaveUp {
                disable_after: 5,
                reason: "too many failures".into(),
            },
        )
        .await
        .expect("attempt");

    let mut positions = Vec::new();
    let mut events = Vec::new();
    for (v, vehicle) in [van, truck].into_iter().enumerate() {
        for n in 0..DAYS * 4 {
            let time = t0() + Duration::hours(6 * n) + Duration::milliseconds(v as i64);
            let fix = fix(time, 52.5 + n as f64 * 0.001, 13.4 - v as f64 * 0.01, n);
            positions.push(NewPosition {
                tenant_id: t,
                position: Position {
                    vehicle_id: vehicle,
                    fix: fix.clone(),
                },
            });
            if n % 3 == 0 {
                let (kind, geofence_id) = match n % 2 {
                    0 => (EventType::GeofenceEnter, Some(zone)),
                    _ => (EventType::Overspeed, None),
                };
                events.push(NewEvent {
                    tenant_id: t,
                    event: Event {
                        id: EventId::new(),
                        kind,
                        vehicle_id: vehicle,
                        geofence_id,
                        time,
                        position: Some(Position {
                            vehicle_id: vehicle,
                            fix,
                        }),
                    },
                });
            }
        }
        events.push(NewEvent {
            tenant_id: t,
            event: Event {
                id: EventId::new(),
                kind: EventType::DeviceOffline,
                vehicle_id: vehicle,
                geofence_id: None,
                time: t0() + Duration::days(DAYS) + Duration::minutes(10),
                position: None,
            },
        });
    }
    let inside: VehicleState = serde_json::from_value(json!({
        "inside": [zone],
        "speeding": true,
        "last_time": t0() + Duration::hours(6 * (DAYS * 4 - 1)),
    }))
    .expect("a tracker state");
    let states = vec![
        VehicleTracking {
            tenant_id: t,
            vehicle_id: van,
            state: inside,
            last_seen: Some(t0() + Duration::hours(6 * (DAYS * 4 - 1))),
            online: true,
        },
        VehicleTracking {
            tenant_id: t,
            vehicle_id: truck,
            state: VehicleState::default(),
            last_seen: None,
            online: false,
        },
    ];
    store
        .insert_positions(IngestBatch {
            positions: &positions,
            events: &events,
            states: &states,
            jobs: &[],
        })
        .await
        .expect("history");
    Seeded {
        tenant,
        vehicles: vec![van, truck],
        positions: positions.len(),
        events: events.len(),
    }
}

/// Every record of one table, chunk by chunk of `chunk`.
async fn export_all(
    store: &dyn CellStore,
    tenant: TenantId,
    table: TransferTable,
    chunk: u32,
    since: Option<DateTime<Utc>>,
) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = store
            .export_chunk(tenant, table, after.as_ref(), chunk, since)
            .await
            .unwrap_or_else(|e| panic!("export {table}: {e}"));
        assert!(
            page.records.len() <= chunk as usize,
            "{table}: chunk too big"
        );
        assert!(
            page.records.iter().all(|r| r.table() == table),
            "{table}: a record of another table"
        );
        out.extend(page.records);
        match page.next {
            Some(next) => {
                assert_ne!(after.as_ref(), Some(&next), "{table}: the cursor moves on");
                after = Some(next);
            }
            None => return out,
        }
    }
}

/// Copies every table of `tenant` from `source` to `target` in chunks of
/// `chunk`, table by table in copy order, each chunk one import. Returns
/// the records imported.
async fn copy(
    source: &dyn CellStore,
    target: &dyn CellStore,
    tenant: TenantId,
    chunk: u32,
    since: Option<DateTime<Utc>>,
) -> u64 {
    let mut imported = 0;
    for table in TransferTable::ALL {
        let mut after: Option<Cursor> = None;
        loop {
            let page = source
                .export_chunk(tenant, table, after.as_ref(), chunk, since)
                .await
                .unwrap_or_else(|e| panic!("export {table}: {e}"));
            imported += target
                .import(tenant, &page.records)
                .await
                .unwrap_or_else(|e| panic!("import {table}: {e}"));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    imported
}

/// Each table's records on `store`, as sets (sorted by their encoding).
async fn rows(
    store: &dyn CellStore,
    tenant: TenantId,
    since: Option<DateTime<Utc>>,
) -> Vec<(TransferTable, Vec<Record>)> {
    let mut out = Vec::new();
    for table in TransferTable::ALL {
        let mut records = export_all(store, tenant, table, 1_000, since).await;
        records.sort_by_key(Record::canonical_bytes);
        out.push((table, records));
    }
    out
}

#[track_caller]
fn assert_same_rows(
    source: &[(TransferTable, Vec<Record>)],
    target: &[(TransferTable, Vec<Record>)],
) {
    for ((table, a), (_, b)) in source.iter().zip(target) {
        assert_eq!(a.len(), b.len(), "{table}: row counts");
        for (a, b) in a.iter().zip(b) {
            assert_eq!(a, b, "{table}: rows differ");
        }
    }
}

fn total(digest: &TenantDigest, table: TransferTable) -> u64 {
    digest.get(table.as_str()).map_or(0, |d| d.rows)
}

/// The copy story, for any pair of stores (same engine, or across).
pub async fn copy_is_row_for_row_and_digests_agree(source: &dyn CellStore, target: &dyn CellStore) {
    let seeded = seed(source, "a").await;
    // Another tenant on both sides: never exported, never touched.
    let other = seed(source, "b").await;
    let bystander = seed(target, "c").await;
    let tenant = seeded.tenant.id;
    let before_bystander = target
        .digest(bystander.tenant.id, None)
        .await
        .expect("digest");

    assert_not_found(
        target.import(tenant, &[]).await,
        "import before the tenant exists on the target",
    );
    target
        .put_tenant(seeded.tenant.clone())
        .await
        .expect("the tenant on the target");
    let imported = copy(source, target, tenant, 3, None).await;

    let digest = source.digest(tenant, None).await.expect("source digest");
    assert_eq!(
        digest.keys().cloned().collect::<Vec<_>>().len(),
        TransferTable::ALL.len(),
        "every table is summed"
    );
    assert_eq!(total(&digest, TransferTable::Vehicles), 2);
    assert_eq!(total(&digest, TransferTable::Geofences), 2);
    assert_eq!(total(&digest, TransferTable::Webhooks), 1);
    assert_eq!(total(&digest, TransferTable::WebhookAttempts), 1);
    assert_eq!(total(&digest, TransferTable::TrackerStates), 2);
    assert_eq!(total(&digest, TransferTable::LatestPositions), 2);
    assert_eq!(
        total(&digest, TransferTable::Positions),
        seeded.positions as u64
    );
    assert_eq!(total(&digest, TransferTable::Events), seeded.events as u64);
    assert_eq!(
        imported,
        digest.values().map(|d| d.rows).sum::<u64>(),
        "every row imported once"
    );
    assert_eq!(
        target.digest(tenant, None).await.expect("target digest"),
        digest,
        "digests agree"
    );
    let source_rows = rows(source, tenant, None).await;
    assert_same_rows(&source_rows, &rows(target, tenant, None).await);

    // What the application reads back agrees too (times to the
    // microsecond: SQLite keeps record times to the nanosecond).
    let vehicles = |page: webhost_storage::Page<webhost_storage::Vehicle, VehicleId>| {
        page.data
            .into_iter()
            .map(VehicleRecord::from)
            .collect::<Vec<_>>()
    };
    let all = || PageRequest {
        after: None,
        limit: 10,
    };
    assert_eq!(
        vehicles(target.vehicles(tenant, all()).await.expect("vehicles")),
        vehicles(source.vehicles(tenant, all()).await.expect("vehicles"))
    );
    let geofences = |list: Vec<webhost_storage::Geofence>| {
        list.into_iter()
            .map(GeofenceRecord::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        geofences(target.geofences(tenant).await.expect("geofences")),
        geofences(source.geofences(tenant).await.expect("geofences"))
    );
    let webhooks = |list: Vec<webhost_storage::Webhook>| {
        list.into_iter()
            .map(WebhookRecord::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        webhooks(target.webhooks(tenant).await.expect("webhooks")),
        webhooks(source.webhooks(tenant).await.expect("webhooks"))
    );
    assert_eq!(
        target.vehicle_tracking(tenant).await.expect("states"),
        source.vehicle_tracking(tenant).await.expect("states")
    );
    assert_eq!(
        target.latest_positions(tenant).await.expect("latest"),
        source.latest_positions(tenant).await.expect("latest")
    );
    let all_events = EventQuery {
        limit: 1_000,
        ..EventQuery::default()
    };
    assert_eq!(
        target
            .events(tenant, all_events.clone())
            .await
            .expect("events")
            .data,
        source
            .events(tenant, all_events)
            .await
            .expect("events")
            .data
    );

    // Importing again — whole, and chunk by chunk — changes nothing.
    for (_, records) in &source_rows {
        target.import(tenant, records).await.expect("re-import");
    }
    copy(source, target, tenant, 5, None).await;
    assert_eq!(target.digest(tenant, None).await.expect("digest"), digest);
    assert_same_rows(&source_rows, &rows(target, tenant, None).await);

    // The bystanders are untouched on both sides.
    assert_eq!(
        target
            .digest(bystander.tenant.id, None)
            .await
            .expect("digest"),
        before_bystander
    );
    assert_eq!(
        total(
            &source.digest(other.tenant.id, None).await.expect("digest"),
            TransferTable::Positions
        ),
        other.positions as u64
    );
}

/// A cutoff carries the positions and events since it, and everything else
/// whole; the copy's full digest is the source's digest since the cutoff.
pub async fn history_cutoff_carries_only_recent_history(
    source: &dyn CellStore,
    target: &dyn CellStore,
) {
    let seeded = seed(source, "a").await;
    let tenant = seeded.tenant.id;
    let since = t0() + Duration::days(2);

    let positions = export_all(source, tenant, TransferTable::Positions, 4, Some(since)).await;
    assert!(!positions.is_empty());
    for record in &positions {
        let Record::Position(p) = record else {
            panic!("a position")
        };
        assert!(p.time >= since, "{} is before the cutoff", p.time);
    }
    let all_positions = export_all(source, tenant, TransferTable::Positions, 4, None).await;
    let recent = all_positions
        .iter()
        .filter(|r| matches!(r, Record::Position(p) if p.time >= since))
        .count();
    assert_eq!(
        positions.len(),
        recent,
        "exactly the positions since the cutoff"
    );
    assert!(recent < seeded.positions);

    let events = export_all(source, tenant, TransferTable::Events, 2, Some(since)).await;
    let all_events = export_all(source, tenant, TransferTable::Events, 2, None).await;
    assert_eq!(
        events.len(),
        all_events
            .iter()
            .filter(|r| matches!(r, Record::Event(e) if e.time >= since))
            .count()
    );
    assert!(events.len() < seeded.events);
    assert_eq!(
        export_all(source, tenant, TransferTable::Vehicles, 1, Some(since))
            .await
            .len(),
        2,
        "vehicles are not history"
    );
    assert_eq!(
        export_all(
            source,
            tenant,
            TransferTable::LatestPositions,
            1,
            Some(since)
        )
        .await
        .len(),
        2
    );

    target
        .put_tenant(seeded.tenant.clone())
        .await
        .expect("tenant");
    copy(source, target, tenant, 3, Some(since)).await;
    let expected = source.digest(tenant, Some(since)).await.expect("digest");
    assert_eq!(
        target.digest(tenant, None).await.expect("digest"),
        expected,
        "the target holds exactly the history since the cutoff"
    );
    assert_ne!(
        source.digest(tenant, None).await.expect("digest"),
        expected,
        "the source holds more"
    );
}

/// An export holds the tenant's rows only; an unknown tenant is missing;
/// an import never writes over another tenant's row.
pub async fn exports_are_tenant_scoped(store: &dyn CellStore, other_store: &dyn CellStore) {
    let mine = seed(store, "a").await;
    let theirs = seed(store, "b").await;
    for table in TransferTable::ALL {
        let records = export_all(store, mine.tenant.id, table, 2, None).await;
        for record in &records {
            let vehicle = match record {
                Record::Vehicle(r) => Some(r.id),
                Record::TrackerState(r) => Some(r.vehicle_id),
                Record::LatestPosition(r) | Record::Position(r) => Some(r.vehicle_id),
                Record::Event(r) => Some(r.vehicle_id),
                _ => None,
            };
            if let Some(vehicle) = vehicle {
                assert!(
                    mine.vehicles.contains(&vehicle),
                    "{table}: a row of another tenant's vehicle"
                );
            }
        }
        let theirs_records = export_all(store, theirs.tenant.id, table, 2, None).await;
        for record in &records {
            assert!(
                !theirs_records.contains(record),
                "{table}: a row in both tenants' exports"
            );
        }
    }
    assert_eq!(
        export_all(store, mine.tenant.id, TransferTable::Positions, 7, None)
            .await
            .len(),
        mine.positions
    );
    assert_not_found(
        store
            .export_chunk(TenantId::new(), TransferTable::Vehicles, None, 10, None)
            .await,
        "export of a tenant not on the cell",
    );
    assert!(
        store
            .export_chunk(
                mine.tenant.id,
                TransferTable::Positions,
                Some(&Cursor::from_string("not a cursor")),
                10,
                None
            )
            .await
            .is_err(),
        "a forged cursor is refused"
    );

    // Their vehicle's row, imported as mine: refused, theirs unchanged.
    let before = store.digest(theirs.tenant.id, None).await.expect("digest");
    let their_vehicles =
        export_all(store, theirs.tenant.id, TransferTable::Vehicles, 10, None).await;
    let result = store.import(mine.tenant.id, &their_vehicles).await;
    assert!(
        matches!(
            result,
            Err(StorageError::Unexpected(_) | StorageError::Conflict(_))
        ),
        "another tenant's key is refused: {result:?}"
    );
    assert_eq!(
        store.digest(theirs.tenant.id, None).await.expect("digest"),
        before
    );
    // A store the tenant is not on takes none of its rows.
    assert_not_found(
        other_store
            .import(
                mine.tenant.id,
                &export_all(store, mine.tenant.id, TransferTable::Vehicles, 10, None).await,
            )
            .await,
        "import into a store without the tenant",
    );

    // There, a device another tenant's vehicle holds is a conflict, and
    // the batch stores nothing.
    let vehicles = export_all(store, mine.tenant.id, TransferTable::Vehicles, 10, None).await;
    let taken = vehicles
        .iter()
        .find_map(|r| match r {
            Record::Vehicle(v) => v.device_id.clone(),
            _ => None,
        })
        .expect("a vehicle with a device");
    let holder = cell_tenant(5);
    other_store
        .put_tenant(holder.clone())
        .await
        .expect("holder");
    other_store
        .create_vehicle(
            holder.id,
            NewVehicle {
                id: VehicleId::new(),
                name: vehicle_name("Holder"),
                device_id: Some(taken.clone()),
                plate: None,
                group: None,
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("the holder's vehicle");
    other_store
        .put_tenant(mine.tenant.clone())
        .await
        .expect("tenant");
    let conflict = expect_conflict(
        other_store.import(mine.tenant.id, &vehicles).await,
        "import of a vehicle whose device is taken",
    );
    assert_eq!(conflict, Conflict::DeviceTaken(taken.to_string()));
    assert_eq!(
        other_store
            .count_vehicles(mine.tenant.id)
            .await
            .expect("count"),
        0,
        "the batch is one transaction"
    );
}

// ---------------------------------------------------------------------
// Catch-up: changes since a watermark (`change_watermark`,
// `export_changes`, `remove_records`), the read-only mark.

/// Every change of one table since `since`, page by page of `limit`: the
/// records, and the deleted keys (first page only).
async fn changes_of(
    store: &dyn CellStore,
    tenant: TenantId,
    table: TransferTable,
    since: u64,
    limit: u32,
    history_since: Option<DateTime<Utc>>,
) -> (Vec<Record>, Vec<Cursor>) {
    let mut records = Vec::new();
    let mut deleted = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = store
            .export_changes(tenant, table, since, after.as_ref(), limit, history_since)
            .await
            .unwrap_or_else(|e| panic!("changes of {table}: {e}"));
        assert!(
            page.records.len() <= limit as usize,
            "{table}: page too big"
        );
        assert!(
            page.records.iter().all(|r| r.table() == table),
            "{table}: a record of another table"
        );
        if after.is_some() {
            assert!(
                page.deleted.is_empty(),
                "{table}: deletions on the first page only"
            );
        }
        records.extend(page.records);
        deleted.extend(page.deleted);
        match page.next {
            Some(next) => {
                assert_ne!(after.as_ref(), Some(&next), "{table}: the cursor moves on");
                after = Some(next);
            }
            None => return (records, deleted),
        }
    }
}

/// One catch-up round: every table's changes since `since` on `source`,
/// applied to `target` (upserts, then deletions), table by table in copy
/// order. Returns each table's (changed, deleted) keys.
async fn catch_up(
    source: &dyn CellStore,
    target: &dyn CellStore,
    tenant: TenantId,
    since: u64,
    limit: u32,
) -> Vec<(TransferTable, Vec<Cursor>, Vec<Cursor>)> {
    let mut out = Vec::new();
    for table in TransferTable::ALL {
        let (records, deleted) = changes_of(source, tenant, table, since, limit, None).await;
        for chunk in records.chunks(limit as usize) {
            target
                .import(tenant, chunk)
                .await
                .unwrap_or_else(|e| panic!("import {table}: {e}"));
        }
        target
            .remove_records(tenant, table, &deleted)
            .await
            .unwrap_or_else(|e| panic!("remove {table}: {e}"));
        let mut changed: Vec<Cursor> = records.iter().map(Record::cursor).collect();
        changed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut deleted = deleted;
        deleted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out.push((table, changed, deleted));
    }
    out
}

/// A watermark above every change of `tenant` made so far. On PostgreSQL
/// the watermark is the oldest transaction still running on the server
/// (any database: tests run side by side), so a change committed just
/// before may still be at or above it; this waits until none is.
async fn settled_watermark(store: &dyn CellStore, tenant: TenantId) -> u64 {
    for _ in 0..200 {
        let w = store.change_watermark().await.expect("watermark");
        let mut quiet = true;
        for table in TransferTable::ALL {
            let page = store
                .export_changes(tenant, table, w, None, 1, None)
                .await
                .expect("changes");
            quiet &= page.records.is_empty() && page.deleted.is_empty();
        }
        if quiet {
            return w;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the watermark never passed the tenant's earlier changes");
}

fn key_of(id: impl ToString) -> Cursor {
    Cursor::from_string(id.to_string())
}

fn sorted(mut keys: Vec<Cursor>) -> Vec<Cursor> {
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    keys
}

fn changed_in(
    round: &[(TransferTable, Vec<Cursor>, Vec<Cursor>)],
    table: TransferTable,
) -> (Vec<Cursor>, Vec<Cursor>) {
    round
        .iter()
        .find(|(t, _, _)| *t == table)
        .map(|(_, changed, deleted)| (changed.clone(), deleted.clone()))
        .unwrap_or_default()
}

/// The acceptance of a live move's catch-up: a snapshot copy, then writes
/// of every kind on the source, then the changes since a watermark taken
/// before them applied to the target make the digests equal — and exactly
/// those changes are returned, nothing written before the watermark.
pub async fn changes_since_a_watermark_bring_a_copy_up_to_date(
    source: &dyn CellStore,
    target: &dyn CellStore,
) {
    let seeded = seed(source, "a").await;
    let other = seed(source, "b").await;
    let tenant = seeded.tenant.id;
    let (van, truck) = (seeded.vehicles[0], seeded.vehicles[1]);
    target
        .put_tenant(seeded.tenant.clone())
        .await
        .expect("tenant");
    copy(source, target, tenant, 5, None).await;
    assert_eq!(
        target.digest(tenant, None).await.expect("digest"),
        source.digest(tenant, None).await.expect("digest"),
        "the snapshot copy"
    );

    let w = settled_watermark(source, tenant).await;
    for table in TransferTable::ALL {
        let (records, deleted) = changes_of(source, tenant, table, w, 10, None).await;
        assert!(
            records.is_empty() && deleted.is_empty(),
            "{table}: nothing written before the watermark is returned"
        );
    }

    // Writes of every kind after the watermark.
    let bus = store_vehicle(source, tenant, "Bus").await;
    let renamed = source
        .update_vehicle(
            tenant,
            van,
            webhost_storage::VehiclePatch {
                name: Some(vehicle_name("Van renamed")),
                device_id: None,
                plate: Some(None),
                group: None,
                attributes: None,
            },
        )
        .await
        .expect("update van");
    source
        .delete_vehicle(tenant, truck)
        .await
        .expect("delete truck");
    let geofences = source.geofences(tenant).await.expect("geofences");
    let (zone, yard) = (geofences[0].id, geofences[1].id);
    source
        .update_geofence(
            tenant,
            zone,
            webhost_storage::GeofencePatch {
                name: Some(text("Depot 2")),
                shape: None,
            },
        )
        .await
        .expect("update geofence");
    source
        .delete_geofence(tenant, yard)
        .await
        .expect("delete yard");
    let lot = source
        .create_geofence(
            tenant,
            NewGeofence {
                id: GeofenceId::new(),
                name: text("Lot"),
                shape: Shape::circle(52.0, 13.0, 250.0).expect("circle"),
            },
        )
        .await
        .expect("new geofence")
        .id;
    let old_hook = source.webhooks(tenant).await.expect("webhooks")[0].id;
    source
        .delete_webhook(tenant, old_hook)
        .await
        .expect("delete webhook");
    let hook = source
        .create_webhook(
            tenant,
            NewWebhook {
                id: WebhookId::new(),
                url: "https://example.com/hooks/new".into(),
                events: vec![],
                description: None,
                secret: format!("whsec_{}", uuid::Uuid::new_v4().simple()),
            },
        )
        .await
        .expect("webhook")
        .id;
    let attempt = WebhookAttemptId::new();
    source
        .record_webhook_attempt(
            tenant,
            WebhookAttempt {
                id: attempt,
                webhook_id: hook,
                delivery_id: JobId::new(),
                event_id: EventId::new(),
                event_type: EventType::Overspeed,
                attempt: 1,
                status_code: Some(200),
                error: None,
                duration_ms: 12,
                at: t0() + Duration::days(DAYS),
            },
            AttemptVerdict::Delivered,
        )
        .await
        .expect("attempt");
    // New history for the van and the bus, one of them out of order (older
    // than everything copied), with an event and both tracker states.
    let later = t0() + Duration::days(DAYS) + Duration::hours(1);
    let early = t0() - Duration::days(1);
    let fresh = [(van, later), (bus, later), (bus, early)]
        .into_iter()
        .enumerate()
        .map(|(n, (vehicle, time))| NewPosition {
            tenant_id: tenant,
            position: Position {
                vehicle_id: vehicle,
                fix: fix(time, 51.0 + n as f64 * 0.01, 12.0, n as i64),
            },
        })
        .collect::<Vec<_>>();
    let event = EventId::new();
    let events = [NewEvent {
        tenant_id: tenant,
        event: Event {
            id: event,
            kind: EventType::DeviceOnline,
            vehicle_id: bus,
            geofence_id: None,
            time: later,
            position: Some(fresh[1].position.clone()),
        },
    }];
    let states = [van, bus].map(|vehicle| VehicleTracking {
        tenant_id: tenant,
        vehicle_id: vehicle,
        state: VehicleState::default(),
        last_seen: Some(later),
        online: true,
    });
    source
        .insert_positions(IngestBatch {
            positions: &fresh,
            events: &events,
            states: &states,
            jobs: &[],
        })
        .await
        .expect("new history");
    // The other tenant's writes are not this tenant's changes.
    store_vehicle(source, other.tenant.id, "Elsewhere").await;

    let round = catch_up(source, target, tenant, w, 2).await;
    let expect = |table, changed: Vec<Cursor>, deleted: Vec<Cursor>| {
        assert_eq!(
            changed_in(&round, table),
            (sorted(changed), sorted(deleted)),
            "{table}: exactly the changes since the watermark"
        );
    };
    expect(
        TransferTable::Vehicles,
        vec![key_of(bus), key_of(renamed.id)],
        vec![key_of(truck)],
    );
    expect(
        TransferTable::Geofences,
        vec![key_of(zone), key_of(lot)],
        vec![key_of(yard)],
    );
    expect(
        TransferTable::Webhooks,
        vec![key_of(hook)],
        vec![key_of(old_hook)],
    );
    expect(
        TransferTable::WebhookAttempts,
        vec![key_of(attempt)],
        vec![],
    );
    // The truck's state and latest position went with it: tombstones of
    // their own, harmless to apply.
    expect(
        TransferTable::TrackerStates,
        vec![key_of(van), key_of(bus)],
        vec![key_of(truck)],
    );
    expect(
        TransferTable::LatestPositions,
        vec![key_of(van), key_of(bus)],
        vec![key_of(truck)],
    );
    let position_keys = fresh
        .iter()
        .map(|p| Record::Position(p.position.clone().into()).cursor())
        .collect();
    expect(TransferTable::Positions, position_keys, vec![]);
    let (events_changed, _) = changed_in(&round, TransferTable::Events);
    assert_eq!(events_changed.len(), 1, "the one new event");
    assert!(events_changed[0].as_str().ends_with(&event.to_string()));

    assert_eq!(
        target.digest(tenant, None).await.expect("target digest"),
        source.digest(tenant, None).await.expect("source digest"),
        "snapshot copy + changes = the source"
    );
    assert_same_rows(
        &rows(source, tenant, None).await,
        &rows(target, tenant, None).await,
    );

    // A second round from a new watermark: nothing left to carry, and a
    // change after it is carried alone.
    let w2 = settled_watermark(source, tenant).await;
    source
        .delete_geofence(tenant, lot)
        .await
        .expect("delete lot");
    let round = catch_up(source, target, tenant, w2, 2).await;
    assert_eq!(
        changed_in(&round, TransferTable::Geofences),
        (vec![], vec![key_of(lot)])
    );
    for (table, changed, deleted) in &round {
        if *table != TransferTable::Geofences {
            assert!(changed.is_empty() && deleted.is_empty(), "{table}: nothing");
        }
    }
    assert_eq!(
        target.digest(tenant, None).await.expect("target digest"),
        source.digest(tenant, None).await.expect("source digest"),
    );

    // Imported rows are changes on the target (a rollback catches up from
    // the target's watermark).
    let wt = settled_watermark(target, tenant).await;
    let again = export_all(source, tenant, TransferTable::Vehicles, 10, None).await;
    target.import(tenant, &again).await.expect("import again");
    let (records, _) = changes_of(target, tenant, TransferTable::Vehicles, wt, 10, None).await;
    assert_eq!(
        records.len(),
        again.len(),
        "imported rows get a new change sequence"
    );
}

async fn store_vehicle(store: &dyn CellStore, tenant: TenantId, name: &str) -> VehicleId {
    store
        .create_vehicle(
            tenant,
            NewVehicle {
                id: VehicleId::new(),
                name: vehicle_name(name),
                device_id: None,
                plate: None,
                group: None,
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("vehicle")
        .id
}

/// More changes than a page holds, many of them written in one
/// transaction: every change comes exactly once across the pages.
pub async fn change_pages_return_every_change_once(store: &dyn CellStore, _: &dyn CellStore) {
    let tenant = cell_tenant(50);
    store.put_tenant(tenant.clone()).await.expect("tenant");
    let t = tenant.id;
    let w = settled_watermark(store, t).await;
    let mut vehicles = Vec::new();
    // Six: every vehicle gets valid fixes (`fix` marks n % 7 == 3 invalid).
    for n in 0..6 {
        vehicles.push(store_vehicle(store, t, &format!("V{n}")).await);
    }
    // One batch: one transaction, one change sequence for all its rows.
    let positions: Vec<NewPosition> = (0..61)
        .map(|n| NewPosition {
            tenant_id: t,
            position: Position {
                vehicle_id: vehicles[n % vehicles.len()],
                fix: fix(t0() + Duration::seconds(n as i64), 50.0, 10.0, n as i64),
            },
        })
        .collect();
    let events: Vec<NewEvent> = (0..23)
        .map(|n| NewEvent {
            tenant_id: t,
            event: Event {
                id: EventId::new(),
                kind: EventType::Overspeed,
                vehicle_id: vehicles[n % vehicles.len()],
                geofence_id: None,
                // Some share a time: the id breaks the tie.
                time: t0() + Duration::seconds((n / 3) as i64),
                position: None,
            },
        })
        .collect();
    store
        .insert_positions(IngestBatch {
            positions: &positions,
            events: &events,
            states: &[],
            jobs: &[],
        })
        .await
        .expect("one batch");
    // A second batch, to page across two change sequences.
    let more: Vec<NewPosition> = (0..9)
        .map(|n| NewPosition {
            tenant_id: t,
            position: Position {
                vehicle_id: vehicles[0],
                fix: fix(t0() - Duration::hours(n + 1), 50.0, 10.0, n),
            },
        })
        .collect();
    store
        .insert_positions(IngestBatch::positions(&more))
        .await
        .expect("another batch");

    for (table, expected, limit) in [
        (TransferTable::Vehicles, vehicles.len(), 2),
        (TransferTable::LatestPositions, vehicles.len(), 3),
        (TransferTable::Positions, positions.len() + more.len(), 4),
        (TransferTable::Positions, positions.len() + more.len(), 1),
        (TransferTable::Events, events.len(), 5),
    ] {
        let (records, _) = changes_of(store, t, table, w, limit, None).await;
        let mut keys: Vec<String> = records.iter().map(|r| r.cursor().to_string()).collect();
        assert_eq!(keys.len(), expected, "{table} by {limit}: every change");
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), expected, "{table} by {limit}: each once");
    }
    // The same pages as the copy reads them: the whole table.
    let all = export_all(store, t, TransferTable::Positions, 1_000, None).await;
    assert_eq!(all.len(), positions.len() + more.len());
}

/// The read-only mark round-trips and survives nothing but an explicit
/// unmark; removing keys that are not there removes nothing; a history
/// cutoff applies to changes as to the copy; unknown tenants are not found.
pub async fn read_only_marks_and_removals_of_missing_keys(
    store: &dyn CellStore,
    _: &dyn CellStore,
) {
    let tenant = cell_tenant(5);
    let other = cell_tenant(5);
    store.put_tenant(tenant.clone()).await.expect("tenant");
    store.put_tenant(other.clone()).await.expect("other");
    let t = tenant.id;
    assert_eq!(store.read_only_tenants().await.expect("list"), vec![]);
    store.set_read_only(t, true).await.expect("mark");
    store.set_read_only(t, true).await.expect("mark again");
    assert_eq!(store.read_only_tenants().await.expect("list"), vec![t]);
    // Updating the tenant's limits keeps the mark.
    store.put_tenant(tenant.clone()).await.expect("put again");
    assert_eq!(store.read_only_tenants().await.expect("list"), vec![t]);
    store.set_read_only(t, false).await.expect("unmark");
    assert_eq!(store.read_only_tenants().await.expect("list"), vec![]);
    assert_not_found(
        store.set_read_only(TenantId::new(), true).await,
        "an unknown tenant",
    );

    let van = store_vehicle(store, t, "Van").await;
    let w = settled_watermark(store, t).await;
    let cutoff = t0() + Duration::hours(2);
    let rows: Vec<NewPosition> = (0..4)
        .map(|n| NewPosition {
            tenant_id: t,
            position: Position {
                vehicle_id: van,
                fix: fix(t0() + Duration::hours(n), 50.0, 10.0, n),
            },
        })
        .collect();
    let events: Vec<NewEvent> = (0..4)
        .map(|n| NewEvent {
            tenant_id: t,
            event: Event {
                id: EventId::new(),
                kind: EventType::Overspeed,
                vehicle_id: van,
                geofence_id: None,
                time: t0() + Duration::hours(n),
                position: None,
            },
        })
        .collect();
    store
        .insert_positions(IngestBatch {
            positions: &rows,
            events: &events,
            states: &[],
            jobs: &[],
        })
        .await
        .expect("history");
    for table in [TransferTable::Positions, TransferTable::Events] {
        let (records, _) = changes_of(store, t, table, w, 10, Some(cutoff)).await;
        assert_eq!(records.len(), 2, "{table}: only history since the cutoff");
        let (records, _) = changes_of(store, t, table, w, 10, None).await;
        assert_eq!(records.len(), 4, "{table}: all of it without a cutoff");
    }

    // Keys that are not there (or are another tenant's): nothing removed.
    let missing_time =
        Cursor::from_string(format!("{}_{}", t0().timestamp_micros(), VehicleId::new()));
    for table in TransferTable::ALL {
        let key = match table {
            TransferTable::Positions | TransferTable::Events => missing_time.clone(),
            _ => key_of(uuid::Uuid::now_v7()),
        };
        assert_eq!(
            store
                .remove_records(t, table, &[key])
                .await
                .expect("remove"),
            0,
            "{table}: a missing key"
        );
        assert_eq!(
            store.remove_records(t, table, &[]).await.expect("remove"),
            0,
            "{table}: no keys"
        );
    }
    assert_eq!(
        store
            .remove_records(other.id, TransferTable::Vehicles, &[key_of(van)])
            .await
            .expect("remove"),
        0,
        "another tenant's vehicle stays"
    );
    assert_eq!(store.count_vehicles(t).await.expect("count"), 1);
    assert!(
        store
            .remove_records(t, TransferTable::Positions, &[key_of(van)])
            .await
            .is_err(),
        "a key of the wrong shape is refused"
    );
    // Removing the vehicle takes its history along, as deleting it does.
    assert_eq!(
        store
            .remove_records(t, TransferTable::Vehicles, &[key_of(van)])
            .await
            .expect("remove"),
        1
    );
    let digest = store.digest(t, None).await.expect("digest");
    assert!(
        digest.values().all(|d| d.rows == 0),
        "nothing of the vehicle is left: {digest:?}"
    );
    assert_not_found(
        store
            .export_changes(TenantId::new(), TransferTable::Vehicles, w, None, 10, None)
            .await,
        "changes of an unknown tenant",
    );
}

/// PostgreSQL: transactions commit out of the order they began. A change
/// made by a transaction open while a watermark is read (and committed
/// after) is returned since that watermark. (SQLite has one writer: a
/// watermark is taken between two write transactions, nothing is open.)
pub async fn out_of_order_commits_are_caught_up(store: &dyn CellStore, postgres_url: &str) {
    use sqlx::Connection;

    let tenant = cell_tenant(10);
    store.put_tenant(tenant.clone()).await.expect("tenant");
    let t = tenant.id;
    let van = store_vehicle(store, t, "Van").await;
    // A position that day first: its partition exists.
    let first = [NewPosition {
        tenant_id: t,
        position: Position {
            vehicle_id: van,
            fix: fix(t0(), 50.0, 10.0, 1),
        },
    }];
    store
        .insert_positions(IngestBatch::positions(&first))
        .await
        .expect("a position");
    let w0 = settled_watermark(store, t).await;

    // A: begun first, writes a position (no lock on the tenant row, which
    // creating a vehicle takes), stays open.
    let mut a = sqlx::PgConnection::connect(postgres_url)
        .await
        .expect("connect");
    sqlx::query("BEGIN").execute(&mut a).await.expect("begin A");
    let late = t0() + Duration::minutes(1);
    sqlx::query(
        "INSERT INTO positions (vehicle_id, time, tenant_id, lat, lon, valid) \
         VALUES ($1, $2, $3, 50.5, 10.5, true)",
    )
    .bind(van.as_uuid())
    .bind(late)
    .bind(t.as_uuid())
    .execute(&mut a)
    .await
    .expect("A writes");
    // B: begun after A, committed before it.
    let early = store_vehicle(store, t, "Early").await;
    let w1 = store.change_watermark().await.expect("watermark");

    let (records, _) = changes_of(store, t, TransferTable::Vehicles, w0, 10, None).await;
    assert_eq!(
        records.iter().map(Record::cursor).collect::<Vec<_>>(),
        vec![key_of(early)],
        "B is returned"
    );
    let (records, _) = changes_of(store, t, TransferTable::Positions, w0, 10, None).await;
    assert!(records.is_empty(), "A is not committed yet");
    sqlx::query("COMMIT")
        .execute(&mut a)
        .await
        .expect("commit A");
    let _ = a.close().await;

    let (records, _) = changes_of(store, t, TransferTable::Positions, w1, 10, None).await;
    let a_key = Cursor::from_string(format!("{}_{van}", late.timestamp_micros()));
    assert_eq!(
        records.iter().map(Record::cursor).collect::<Vec<_>>(),
        vec![a_key],
        "A, committed after w1 was read, is returned since w1"
    );
}
