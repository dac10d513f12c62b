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
