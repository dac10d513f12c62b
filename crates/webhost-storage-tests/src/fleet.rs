//! Stories for geofences, events and vehicle tracking states on
//! [`CellStore`].

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use webhost_domain::{
    Attributes, EventId, Fix, GeofenceId, Position, ShortText, TenantId, VehicleId,
};
use webhost_geofence::{GeofenceIndex, Shape, Tracker, VehicleState};
use webhost_storage::{
    CellStore, CreateGeofenceError, Event, EventQuery, EventType, GeofencePatch, HistoryQuery,
    IngestBatch, NewEvent, NewGeofence, NewPosition, SilentVehicle, StorageError, VehicleTracking,
    MAX_GEOFENCES,
};

use crate::fixtures::{assert_not_found, assert_recent, attributes, bare_vehicle, cell_tenant};

fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_732_190_400_123)
        .single()
        .expect("valid time")
}

fn name(raw: &str) -> ShortText {
    ShortText::parse("name", raw).expect("test name is valid")
}

/// A square with a square hole, in Berlin.
fn polygon() -> Shape {
    Shape::from_geojson(&json!({
        "type": "Polygon",
        "coordinates": [
            [[13.0, 52.0], [14.0, 52.0], [14.0, 53.0], [13.0, 53.0], [13.0, 52.0]],
            [[13.4, 52.4], [13.6, 52.4], [13.6, 52.6], [13.4, 52.6], [13.4, 52.4]]
        ]
    }))
    .expect("test polygon is valid")
}

fn circle() -> Shape {
    Shape::circle(48.137, 11.575, 1_500.0).expect("test circle is valid")
}

fn new_geofence(raw_name: &str, shape: Shape) -> NewGeofence {
    NewGeofence {
        id: GeofenceId::new(),
        name: name(raw_name),
        shape,
    }
}

async fn a_tenant(store: &dyn CellStore) -> TenantId {
    let tenant = cell_tenant(50);
    let id = tenant.id;
    store.put_tenant(tenant).await.expect("put tenant");
    id
}

async fn a_vehicle(store: &dyn CellStore, tenant: TenantId, vehicle_name: &str) -> VehicleId {
    store
        .create_vehicle(tenant, bare_vehicle(vehicle_name))
        .await
        .expect("vehicle")
        .id
}

fn fix(time: DateTime<Utc>, lat: f64, lon: f64) -> Fix {
    Fix {
        time,
        lat,
        lon,
        speed: Some(42.5),
        heading: Some(90.0),
        altitude: Some(12.0),
        accuracy: Some(4.0),
        valid: true,
        attributes: Attributes::default(),
    }
}

fn position(tenant: TenantId, vehicle: VehicleId, fix: Fix) -> NewPosition {
    NewPosition {
        tenant_id: tenant,
        position: Position {
            vehicle_id: vehicle,
            fix,
        },
    }
}

fn event(
    tenant: TenantId,
    kind: EventType,
    vehicle: VehicleId,
    geofence: Option<GeofenceId>,
    time: DateTime<Utc>,
    with_position: bool,
) -> NewEvent {
    NewEvent {
        tenant_id: tenant,
        event: Event {
            id: EventId::new(),
            kind,
            vehicle_id: vehicle,
            geofence_id: geofence,
            time,
            position: with_position.then(|| Position {
                vehicle_id: vehicle,
                fix: fix(time, 52.5, 13.4),
            }),
        },
    }
}

/// A tracker state with some content: inside one geofence, speeding, with a
/// last processed time.
fn busy_state(vehicle: VehicleId, fence: GeofenceId, time: DateTime<Utc>) -> VehicleState {
    let index = GeofenceIndex::new(vec![webhost_geofence::Geofence {
        id: fence,
        shape: circle(),
    }]);
    let mut tracker = Tracker::new();
    let mut inside = fix(time, 48.137, 11.575);
    inside.speed = Some(130.0);
    tracker.process(&index, vehicle, &[inside], Some(100.0));
    tracker.state(vehicle).cloned().expect("a state")
}

fn tracking(
    tenant: TenantId,
    vehicle: VehicleId,
    state: VehicleState,
    last_seen: Option<DateTime<Utc>>,
    online: bool,
) -> VehicleTracking {
    VehicleTracking {
        tenant_id: tenant,
        vehicle_id: vehicle,
        state,
        last_seen,
        online,
    }
}

async fn all_events(store: &dyn CellStore, tenant: TenantId) -> Vec<Event> {
    store
        .events(
            tenant,
            EventQuery {
                limit: 10_000,
                ..EventQuery::default()
            },
        )
        .await
        .expect("events")
        .data
}

async fn tracking_of(
    store: &dyn CellStore,
    tenant: TenantId,
) -> HashMap<VehicleId, VehicleTracking> {
    store
        .vehicle_tracking(tenant)
        .await
        .expect("tracking")
        .into_iter()
        .map(|t| (t.vehicle_id, t))
        .collect()
}

fn all_time() -> HistoryQuery {
    HistoryQuery {
        from: t0() - Duration::days(3650),
        to: t0() + Duration::days(3650),
        after: None,
        limit: 10_000,
    }
}

/// Polygons (with holes) and circles come back exactly as created; a patch
/// changes the name, the shape, or both (a polygon may become a circle);
/// delete removes.
pub async fn geofences_round_trip_both_shapes(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let zone = store
        .create_geofence(tenant, new_geofence("Depot zone", polygon()))
        .await
        .expect("polygon");
    assert_eq!(zone.name.as_str(), "Depot zone");
    assert_eq!(zone.shape, polygon());
    assert_recent(zone.created_at, "created_at");
    assert_eq!(zone.created_at, zone.updated_at);
    let ring = store
        .create_geofence(tenant, new_geofence("Munich", circle()))
        .await
        .expect("circle");
    assert_eq!(ring.shape, circle());

    assert_eq!(store.geofence(tenant, zone.id).await.expect("get"), zone);
    assert_eq!(store.geofence(tenant, ring.id).await.expect("get"), ring);
    let listed = store.geofences(tenant).await.expect("list");
    assert_eq!(listed, vec![zone.clone(), ring.clone()], "ordered by id");

    let renamed = store
        .update_geofence(
            tenant,
            zone.id,
            GeofencePatch {
                name: Some(name("Depot")),
                shape: None,
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name.as_str(), "Depot");
    assert_eq!(renamed.shape, polygon(), "the shape stays");
    assert_eq!(renamed.created_at, zone.created_at);
    assert!(renamed.updated_at >= zone.updated_at);

    let reshaped = store
        .update_geofence(
            tenant,
            zone.id,
            GeofencePatch {
                name: None,
                shape: Some(Shape::circle(-33.9, 151.2, 250.5).expect("circle")),
            },
        )
        .await
        .expect("reshape");
    assert_eq!(reshaped.name.as_str(), "Depot", "the name stays");
    assert_eq!(
        reshaped.shape,
        Shape::circle(-33.9, 151.2, 250.5).expect("circle")
    );
    assert_eq!(
        store.geofence(tenant, zone.id).await.expect("get"),
        reshaped
    );
    let back = store
        .update_geofence(
            tenant,
            zone.id,
            GeofencePatch {
                name: Some(name("Zone")),
                shape: Some(polygon()),
            },
        )
        .await
        .expect("back to a polygon");
    assert_eq!(back.shape, polygon());

    store
        .delete_geofence(tenant, zone.id)
        .await
        .expect("delete");
    assert_not_found(store.geofence(tenant, zone.id).await, "deleted geofence");
    assert_not_found(
        store.delete_geofence(tenant, zone.id).await,
        "deleting twice",
    );
    assert_not_found(
        store
            .update_geofence(tenant, zone.id, GeofencePatch::default())
            .await,
        "updating a deleted geofence",
    );
    assert_eq!(store.geofences(tenant).await.expect("list"), vec![ring]);
    match store
        .create_geofence(TenantId::new(), new_geofence("Nowhere", circle()))
        .await
    {
        Err(CreateGeofenceError::Storage(StorageError::NotFound(_))) => {}
        other => panic!("an unknown tenant: expected NotFound, got {other:?}"),
    }
}

/// Another tenant can neither see, change nor delete a geofence.
pub async fn geofences_are_tenant_scoped(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let other = a_tenant(store).await;
    let mine = store
        .create_geofence(tenant, new_geofence("Mine", polygon()))
        .await
        .expect("create");
    assert!(store.geofences(other).await.expect("list").is_empty());
    assert_not_found(store.geofence(other, mine.id).await, "get");
    assert_not_found(
        store
            .update_geofence(
                other,
                mine.id,
                GeofencePatch {
                    name: Some(name("Stolen")),
                    shape: None,
                },
            )
            .await,
        "update",
    );
    assert_not_found(store.delete_geofence(other, mine.id).await, "delete");
    assert_eq!(store.geofence(tenant, mine.id).await.expect("intact"), mine);
}

/// A tenant has at most MAX_GEOFENCES; deleting one frees a slot; the limit
/// is per tenant.
pub async fn geofence_limit_is_enforced(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let mut first = None;
    for i in 0..MAX_GEOFENCES {
        let created = store
            .create_geofence(
                tenant,
                new_geofence(
                    &format!("Fence {i}"),
                    Shape::circle(0.0, f64::from(i) / 10.0, 100.0).expect("circle"),
                ),
            )
            .await
            .expect("under the limit");
        first.get_or_insert(created.id);
    }
    match store
        .create_geofence(tenant, new_geofence("One too many", circle()))
        .await
    {
        Err(CreateGeofenceError::LimitReached { limit }) => assert_eq!(limit, MAX_GEOFENCES),
        other => panic!("expected LimitReached, got {other:?}"),
    }
    assert_eq!(
        store.geofences(tenant).await.expect("list").len(),
        MAX_GEOFENCES as usize
    );
    let other = a_tenant(store).await;
    store
        .create_geofence(other, new_geofence("Elsewhere", circle()))
        .await
        .expect("another tenant has its own limit");
    store
        .delete_geofence(tenant, first.expect("one was created"))
        .await
        .expect("delete");
    store
        .create_geofence(tenant, new_geofence("Freed", circle()))
        .await
        .expect("a freed slot");
}

/// Events come back with every field; filters by time range, type and
/// vehicle combine; pages follow (time, id) cursors; tenants are apart.
pub async fn events_filter_and_paginate(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let other = a_tenant(store).await;
    let van = a_vehicle(store, tenant, "Van").await;
    let truck = a_vehicle(store, tenant, "Truck").await;
    let fence = GeofenceId::new();
    let s = |n: i64| t0() + Duration::seconds(n);
    let mut events = vec![
        event(tenant, EventType::DeviceOnline, van, None, s(0), true),
        event(
            tenant,
            EventType::GeofenceEnter,
            van,
            Some(fence),
            s(10),
            true,
        ),
        event(tenant, EventType::Overspeed, van, None, s(10), true),
        event(
            tenant,
            EventType::GeofenceEnter,
            truck,
            Some(fence),
            s(20),
            true,
        ),
        event(
            tenant,
            EventType::GeofenceExit,
            van,
            Some(fence),
            s(30),
            true,
        ),
        event(tenant, EventType::DeviceOffline, truck, None, s(40), false),
        event(other, EventType::DeviceOnline, van, None, s(5), true),
    ];
    if let Some(p) = events[2].event.position.as_mut() {
        p.fix.attributes = attributes(json!({ "ignition": true, "batt": 12.5 }));
        p.fix.speed = Some(131.0);
        p.fix.heading = None;
        p.fix.valid = false;
    }
    store
        .insert_positions(IngestBatch {
            events: &events,
            ..IngestBatch::default()
        })
        .await
        .expect("insert events");

    let mut expected: Vec<Event> = events[..6].iter().map(|e| e.event.clone()).collect();
    expected.sort_by_key(|e| (e.time, e.id));
    let got = all_events(store, tenant).await;
    assert_eq!(got, expected, "every field, ordered by time then id");
    assert!(got.iter().any(|e| e.position.is_none()), "no position kept");
    let theirs = all_events(store, other).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0], events[6].event);

    let query = |q: EventQuery| async move {
        store
            .events(tenant, EventQuery { limit: 100, ..q })
            .await
            .expect("query")
            .data
            .into_iter()
            .map(|e| (e.kind, e.vehicle_id, e.time))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        query(EventQuery {
            from: Some(s(10)),
            to: Some(s(30)),
            ..EventQuery::default()
        })
        .await
        .len(),
        3,
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        query(EventQuery {
            types: vec![EventType::GeofenceEnter, EventType::GeofenceExit],
            ..EventQuery::default()
        })
        .await,
        [
            (EventType::GeofenceEnter, van, s(10)),
            (EventType::GeofenceEnter, truck, s(20)),
            (EventType::GeofenceExit, van, s(30)),
        ]
    );
    assert_eq!(
        query(EventQuery {
            vehicle: Some(truck),
            ..EventQuery::default()
        })
        .await,
        [
            (EventType::GeofenceEnter, truck, s(20)),
            (EventType::DeviceOffline, truck, s(40)),
        ]
    );
    assert_eq!(
        query(EventQuery {
            vehicle: Some(van),
            types: vec![EventType::Overspeed],
            from: Some(s(1)),
            ..EventQuery::default()
        })
        .await,
        [(EventType::Overspeed, van, s(10))]
    );

    // Pages of two, across the two events that share a time.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events(
                tenant,
                EventQuery {
                    after,
                    limit: 2,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("page");
        sizes.push(page.data.len());
        seen.extend(page.data.into_iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => {
                let text = cursor.to_string();
                assert_eq!(text.parse(), Ok(cursor), "cursors round-trip as text");
                after = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 2]);
    assert_eq!(seen, expected.iter().map(|e| e.id).collect::<Vec<_>>());
}

/// Positions, events and states of one batch commit together: all are
/// visible after it, and a batch that fails (here: an event id repeated)
/// leaves nothing of itself behind.
pub async fn positions_events_and_states_commit_together(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let van = a_vehicle(store, tenant, "Van").await;
    let fence = GeofenceId::new();
    let positions = vec![
        position(tenant, van, fix(t0(), 48.137, 11.575)),
        position(tenant, van, fix(t0() + Duration::seconds(5), 48.2, 11.6)),
    ];
    let events = vec![
        event(tenant, EventType::DeviceOnline, van, None, t0(), true),
        event(
            tenant,
            EventType::GeofenceEnter,
            van,
            Some(fence),
            t0(),
            true,
        ),
    ];
    let state = busy_state(van, fence, t0());
    let states = vec![tracking(
        tenant,
        van,
        state.clone(),
        Some(t0() + Duration::seconds(5)),
        true,
    )];
    let stored = store
        .insert_positions(IngestBatch {
            positions: &positions,
            events: &events,
            states: &states,
            jobs: &[],
        })
        .await
        .expect("batch");
    assert_eq!(stored, [true, true]);
    assert_eq!(
        store
            .positions(tenant, van, all_time())
            .await
            .expect("history")
            .data
            .len(),
        2
    );
    assert_eq!(all_events(store, tenant).await.len(), 2);
    assert_eq!(tracking_of(store, tenant).await[&van], states[0]);

    // A failing batch: nothing of it is stored, the previous state stays.
    let later = t0() + Duration::minutes(1);
    let failing_positions = vec![position(tenant, van, fix(later, 48.3, 11.7))];
    let repeated = event(
        tenant,
        EventType::GeofenceExit,
        van,
        Some(fence),
        later,
        true,
    );
    let failing_events = vec![repeated.clone(), repeated];
    let failing_states = vec![tracking(
        tenant,
        van,
        VehicleState::default(),
        Some(later),
        false,
    )];
    let failed = store
        .insert_positions(IngestBatch {
            positions: &failing_positions,
            events: &failing_events,
            states: &failing_states,
            jobs: &[],
        })
        .await;
    assert!(failed.is_err(), "a repeated event id fails the batch");
    assert_eq!(
        store
            .positions(tenant, van, all_time())
            .await
            .expect("history")
            .data
            .len(),
        2,
        "no position of the failed batch"
    );
    assert_eq!(all_events(store, tenant).await.len(), 2, "no event of it");
    assert_eq!(
        tracking_of(store, tenant).await[&van],
        states[0],
        "the state before it"
    );

    // States are replaced, not added; the last of a repeated one wins.
    let offline = vec![
        tracking(tenant, van, state.clone(), Some(later), true),
        tracking(tenant, van, VehicleState::default(), Some(later), false),
    ];
    store
        .insert_positions(IngestBatch {
            states: &offline,
            ..IngestBatch::default()
        })
        .await
        .expect("states only");
    let now = tracking_of(store, tenant).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[&van], offline[1]);
}

/// The tenant's states round-trip; the sweep finds online vehicles silent
/// since before a time (any tenant, the longest silent first, bounded).
pub async fn tracking_states_round_trip_and_silent_vehicles_are_found(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let other = a_tenant(store).await;
    let quiet = a_vehicle(store, tenant, "Quiet").await;
    let quieter = a_vehicle(store, other, "Quieter").await;
    let talking = a_vehicle(store, tenant, "Talking").await;
    let offline = a_vehicle(store, tenant, "Offline").await;
    let never = a_vehicle(store, tenant, "Never").await;
    let fence = GeofenceId::new();
    let states = vec![
        tracking(
            tenant,
            quiet,
            busy_state(quiet, fence, t0()),
            Some(t0()),
            true,
        ),
        tracking(
            other,
            quieter,
            VehicleState::default(),
            Some(t0() - Duration::minutes(5)),
            true,
        ),
        tracking(
            tenant,
            talking,
            VehicleState::default(),
            Some(t0() + Duration::minutes(20)),
            true,
        ),
        tracking(tenant, offline, VehicleState::default(), Some(t0()), false),
        tracking(tenant, never, VehicleState::default(), None, false),
    ];
    store
        .insert_positions(IngestBatch {
            states: &states,
            ..IngestBatch::default()
        })
        .await
        .expect("states");
    let mine = tracking_of(store, tenant).await;
    assert_eq!(mine.len(), 4);
    for s in states.iter().filter(|s| s.tenant_id == tenant) {
        assert_eq!(&mine[&s.vehicle_id], s);
    }
    assert!(
        !mine[&quiet].state.inside().is_empty(),
        "the tracker state is kept whole"
    );
    assert_eq!(tracking_of(store, other).await.len(), 1);

    let cutoff = t0() + Duration::minutes(10);
    assert_eq!(
        store.silent_vehicles(cutoff, 100).await.expect("sweep"),
        [
            SilentVehicle {
                tenant_id: other,
                vehicle_id: quieter
            },
            SilentVehicle {
                tenant_id: tenant,
                vehicle_id: quiet
            },
        ]
    );
    assert_eq!(
        store.silent_vehicles(cutoff, 1).await.expect("sweep").len(),
        1
    );
    assert!(store
        .silent_vehicles(t0() - Duration::minutes(5), 100)
        .await
        .expect("sweep")
        .is_empty());
}

/// Deleting a vehicle removes its events and state; deleting a geofence
/// keeps its past events; deleting the tenant removes everything.
pub async fn deleting_vehicles_and_tenants_removes_events_and_states(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let gone = a_vehicle(store, tenant, "Gone").await;
    let kept = a_vehicle(store, tenant, "Kept").await;
    let fence = store
        .create_geofence(tenant, new_geofence("Zone", circle()))
        .await
        .expect("fence");
    let events = vec![
        event(
            tenant,
            EventType::GeofenceEnter,
            gone,
            Some(fence.id),
            t0(),
            true,
        ),
        event(
            tenant,
            EventType::GeofenceEnter,
            kept,
            Some(fence.id),
            t0(),
            true,
        ),
    ];
    let states = vec![
        tracking(tenant, gone, VehicleState::default(), Some(t0()), true),
        tracking(tenant, kept, VehicleState::default(), Some(t0()), true),
    ];
    store
        .insert_positions(IngestBatch {
            events: &events,
            states: &states,
            ..IngestBatch::default()
        })
        .await
        .expect("batch");

    store.delete_vehicle(tenant, gone).await.expect("delete");
    let left = all_events(store, tenant).await;
    assert_eq!(
        left.iter().map(|e| e.vehicle_id).collect::<Vec<_>>(),
        [kept]
    );
    assert_eq!(
        tracking_of(store, tenant)
            .await
            .into_keys()
            .collect::<Vec<_>>(),
        [kept]
    );
    assert_eq!(
        store
            .silent_vehicles(t0() + Duration::hours(1), 10)
            .await
            .expect("sweep")
            .len(),
        1
    );

    store
        .delete_geofence(tenant, fence.id)
        .await
        .expect("delete fence");
    let left = all_events(store, tenant).await;
    assert_eq!(left.len(), 1, "past events outlive their geofence");
    assert_eq!(left[0].geofence_id, Some(fence.id));

    store
        .create_geofence(tenant, new_geofence("Another", polygon()))
        .await
        .expect("fence");
    store.delete_tenant(tenant).await.expect("delete tenant");
    assert!(all_events(store, tenant).await.is_empty());
    assert!(tracking_of(store, tenant).await.is_empty());
    assert!(store.geofences(tenant).await.expect("list").is_empty());
    assert!(store
        .silent_vehicles(t0() + Duration::hours(1), 10)
        .await
        .expect("sweep")
        .is_empty());
}

/// The ingest writer reads the vehicles of a batch by id: only the
/// tenant's own, missing ones left out.
pub async fn vehicles_with_ids_are_tenant_scoped(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let other = a_tenant(store).await;
    let van = store
        .create_vehicle(
            tenant,
            webhost_storage::NewVehicle {
                attributes: attributes(json!({ "speed_limit_kmh": 80 })),
                ..bare_vehicle("Van")
            },
        )
        .await
        .expect("van");
    let truck = a_vehicle(store, tenant, "Truck").await;
    let theirs = a_vehicle(store, other, "Theirs").await;
    let _idle = a_vehicle(store, tenant, "Idle").await;
    let mut got = store
        .vehicles_with_ids(tenant, &[van.id, truck, theirs, VehicleId::new()])
        .await
        .expect("by ids");
    got.sort_by_key(|v| v.id);
    let mut want = vec![van.id, truck];
    want.sort();
    assert_eq!(got.iter().map(|v| v.id).collect::<Vec<_>>(), want);
    let read_van = got.iter().find(|v| v.id == van.id).expect("van");
    assert_eq!(read_van.attributes, van.attributes);
    assert!(store
        .vehicles_with_ids(tenant, &[])
        .await
        .expect("none")
        .is_empty());
}
