//! Stories for position history on [`CellStore`].

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use webhost_domain::{Attributes, Fix, Position, TenantId, Usage, VehicleId};
use webhost_storage::{
    CellStore, HistoryQuery, IngestBatch, NewPosition, PositionBucket, StorageResult, UsageCount,
};

use crate::fixtures::{bare_vehicle, cell_tenant};

/// A fixed, millisecond-precise origin, so both engines agree exactly.
fn t0() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_732_190_400_123)
        .single()
        .expect("valid time")
}

fn fix(time: DateTime<Utc>, lat: f64, lon: f64) -> Fix {
    Fix {
        time,
        lat,
        lon,
        speed: Some(36.5),
        heading: Some(270.0),
        altitude: Some(34.0),
        accuracy: Some(8.0),
        valid: true,
        attributes: Attributes::default(),
    }
}

fn at(tenant: TenantId, vehicle: VehicleId, fix: Fix) -> NewPosition {
    NewPosition {
        tenant_id: tenant,
        position: Position {
            vehicle_id: vehicle,
            fix,
        },
    }
}

/// Positions alone, without events or tracking states.
async fn insert(store: &dyn CellStore, rows: &[NewPosition]) -> StorageResult<Vec<bool>> {
    store.insert_positions(IngestBatch::positions(rows)).await
}

async fn tenant_with_vehicle(store: &dyn CellStore) -> (TenantId, VehicleId) {
    let tenant = cell_tenant(50);
    let id = tenant.id;
    store.put_tenant(tenant).await.expect("put tenant");
    let vehicle = store
        .create_vehicle(id, bare_vehicle("Van"))
        .await
        .expect("vehicle");
    (id, vehicle.id)
}

fn all_time() -> HistoryQuery {
    HistoryQuery {
        from: t0() - Duration::days(3650),
        to: t0() + Duration::days(3650),
        after: None,
        limit: 10_000,
    }
}

async fn history(store: &dyn CellStore, tenant: TenantId, vehicle: VehicleId) -> Vec<Position> {
    store
        .positions(tenant, vehicle, all_time())
        .await
        .expect("history")
        .data
}

/// Duplicates (in the same call and across calls) are stored once; history
/// comes back oldest first with every field intact.
pub async fn positions_are_stored_once_and_read_back_in_order(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let mut with_attributes = fix(t0() + Duration::seconds(10), 52.521, 13.405);
    with_attributes.attributes =
        Attributes::parse(json!({ "batt": 76, "ignition": true })).expect("attrs");
    with_attributes.speed = None;
    with_attributes.valid = false;
    let batch = vec![
        at(
            tenant,
            vehicle,
            fix(t0() + Duration::seconds(20), 52.522, 13.406),
        ),
        at(tenant, vehicle, fix(t0(), 52.520, 13.404)),
        at(tenant, vehicle, with_attributes.clone()),
        at(tenant, vehicle, fix(t0(), 1.0, 1.0)),
    ];
    let stored = insert(store, &batch).await.expect("insert");
    assert_eq!(
        stored,
        [true, true, true, false],
        "the repeat in the same call is skipped"
    );
    let again = insert(store, &batch[1..2]).await.expect("insert again");
    assert_eq!(again, [false], "a resent position is stored once");
    // A resend mixed with new positions: the new ones are stored (the
    // PostgreSQL backend's COPY stops at the resend and falls back).
    let newer = at(
        tenant,
        vehicle,
        fix(t0() + Duration::seconds(30), 52.523, 13.407),
    );
    let mixed = insert(store, &[batch[0].clone(), newer.clone(), newer.clone()])
        .await
        .expect("insert mixed");
    assert_eq!(mixed, [false, true, false]);

    let got = history(store, tenant, vehicle).await;
    let times: Vec<_> = got.iter().map(|p| p.fix.time).collect();
    assert_eq!(
        times,
        [
            t0(),
            t0() + Duration::seconds(10),
            t0() + Duration::seconds(20),
            t0() + Duration::seconds(30)
        ]
    );
    assert_eq!(
        got[0].fix,
        fix(t0(), 52.520, 13.404),
        "the first write wins"
    );
    assert_eq!(got[1].fix, with_attributes);
    assert_eq!(got[1].vehicle_id, vehicle);
    assert!(insert(store, &[]).await.expect("empty").is_empty());
}

/// The latest position is the newest valid one; older or invalid reports
/// never replace it.
pub async fn latest_position_is_the_newest_valid_one(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let other = store
        .create_vehicle(tenant, bare_vehicle("Other"))
        .await
        .expect("v")
        .id;
    let idle = store
        .create_vehicle(tenant, bare_vehicle("Idle"))
        .await
        .expect("v")
        .id;
    let _ = idle;
    let mut no_fix = fix(t0() + Duration::seconds(30), 0.0, 0.0);
    no_fix.valid = false;
    insert(
        store,
        &[
            at(
                tenant,
                vehicle,
                fix(t0() + Duration::seconds(10), 10.0, 10.0),
            ),
            at(tenant, vehicle, no_fix),
            at(
                tenant,
                vehicle,
                fix(t0() + Duration::seconds(20), 20.0, 20.0),
            ),
            at(tenant, other, fix(t0(), 5.0, 5.0)),
        ],
    )
    .await
    .expect("insert");
    insert(store, &[at(tenant, vehicle, fix(t0(), -1.0, -1.0))])
        .await
        .expect("older, later");

    let mut latest = store.latest_positions(tenant).await.expect("latest");
    latest.sort_by_key(|p| p.vehicle_id != vehicle);
    assert_eq!(latest.len(), 2, "a vehicle without positions has no latest");
    assert_eq!(latest[0].vehicle_id, vehicle);
    assert_eq!(latest[0].fix.time, t0() + Duration::seconds(20));
    assert_eq!((latest[0].fix.lat, latest[0].fix.lon), (20.0, 20.0));
    assert_eq!(latest[1].vehicle_id, other);

    insert(
        store,
        &[at(
            tenant,
            vehicle,
            fix(t0() + Duration::seconds(40), 40.0, 40.0),
        )],
    )
    .await
    .expect("newer");
    let latest = store.latest_positions(tenant).await.expect("latest");
    let mine = latest
        .iter()
        .find(|p| p.vehicle_id == vehicle)
        .expect("mine");
    assert_eq!(mine.fix.lat, 40.0);
}

/// History pages follow cursors and honour `[from, to)`.
pub async fn history_paginates_and_honours_the_range(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let batch: Vec<_> = (0..10)
        .map(|i| {
            at(
                tenant,
                vehicle,
                fix(t0() + Duration::seconds(i * 10), i as f64, 0.0),
            )
        })
        .collect();
    insert(store, &batch).await.expect("insert");

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .positions(
                tenant,
                vehicle,
                HistoryQuery {
                    after,
                    limit: 3,
                    ..all_time()
                },
            )
            .await
            .expect("page");
        sizes.push(page.data.len());
        seen.extend(page.data.iter().map(|p| p.fix.lat as i64));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(seen, (0..10).collect::<Vec<_>>());

    let window = store
        .positions(
            tenant,
            vehicle,
            HistoryQuery {
                from: t0() + Duration::seconds(20),
                to: t0() + Duration::seconds(50),
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("window");
    let lats: Vec<i64> = window.data.iter().map(|p| p.fix.lat as i64).collect();
    assert_eq!(lats, [2, 3, 4], "from is inclusive, to exclusive");
    assert_eq!(window.next_cursor, None);
}

/// Another tenant sees nothing of a vehicle's positions, even by its id.
pub async fn positions_are_tenant_scoped(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let (other, _) = tenant_with_vehicle(store).await;
    insert(store, &[at(tenant, vehicle, fix(t0(), 1.0, 2.0))])
        .await
        .expect("insert");
    assert!(history(store, other, vehicle).await.is_empty());
    assert!(store
        .latest_positions(other)
        .await
        .expect("latest")
        .is_empty());
    let buckets = store
        .position_buckets(
            other,
            vehicle,
            t0() - Duration::days(1),
            t0() + Duration::days(1),
            60,
        )
        .await
        .expect("buckets");
    assert!(buckets.is_empty());
    assert_eq!(history(store, tenant, vehicle).await.len(), 1);
}

/// Buckets average valid positions per interval; empty ones are left out.
pub async fn buckets_average_each_interval(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    // Align to a 5-minute boundary so bucket edges are predictable.
    let base = Utc.timestamp_opt(1_732_190_400, 0).single().expect("time");
    let mut invalid = fix(base + Duration::seconds(30), 80.0, 80.0);
    invalid.valid = false;
    let mut slow = fix(base + Duration::seconds(60), 12.0, 22.0);
    slow.speed = Some(10.0);
    let mut silent = fix(base + Duration::seconds(120), 14.0, 24.0);
    silent.speed = None;
    let mut fast = fix(base + Duration::seconds(900), 30.0, 40.0);
    fast.speed = Some(90.0);
    insert(
        store,
        &[
            at(tenant, vehicle, fix(base, 10.0, 20.0)),
            at(tenant, vehicle, invalid),
            at(tenant, vehicle, slow),
            at(tenant, vehicle, silent),
            at(tenant, vehicle, fast),
        ],
    )
    .await
    .expect("insert");
    let buckets = store
        .position_buckets(tenant, vehicle, base, base + Duration::hours(1), 300)
        .await
        .expect("buckets");
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    let first: &PositionBucket = &buckets[0];
    assert_eq!(first.time, base);
    assert_eq!(first.count, 3, "the invalid position is left out");
    assert!(
        (first.lat - 12.0).abs() < 1e-9 && (first.lon - 22.0).abs() < 1e-9,
        "{first:?}"
    );
    let avg = first.speed.expect("speed");
    assert!(
        (avg - (36.5 + 10.0) / 2.0).abs() < 1e-9,
        "positions without speed do not count: {avg}"
    );
    assert_eq!(first.max_speed, Some(36.5));
    assert_eq!(buckets[1].time, base + Duration::seconds(900));
    assert_eq!(buckets[1].count, 1);
}

/// Deleting a vehicle or a tenant removes its history and latest position.
pub async fn deleting_removes_history(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let keep = store
        .create_vehicle(tenant, bare_vehicle("Keep"))
        .await
        .expect("v")
        .id;
    insert(
        store,
        &[
            at(tenant, vehicle, fix(t0(), 1.0, 1.0)),
            at(tenant, keep, fix(t0(), 2.0, 2.0)),
        ],
    )
    .await
    .expect("insert");
    store
        .delete_vehicle(tenant, vehicle)
        .await
        .expect("delete vehicle");
    assert!(history(store, tenant, vehicle).await.is_empty());
    let latest = store.latest_positions(tenant).await.expect("latest");
    assert_eq!(
        latest.iter().map(|p| p.vehicle_id).collect::<Vec<_>>(),
        [keep]
    );

    store.delete_tenant(tenant).await.expect("delete tenant");
    assert!(history(store, tenant, keep).await.is_empty());
    assert!(store
        .latest_positions(tenant)
        .await
        .expect("latest")
        .is_empty());
}

/// Large batches (spread over many days: PostgreSQL partitions) go in one
/// call, and data far in the past lands as well as today's.
pub async fn large_batches_over_many_days_are_stored(store: &dyn CellStore) {
    let (tenant, vehicle) = tenant_with_vehicle(store).await;
    let start = Utc::now() - Duration::days(40);
    let start = Utc
        .timestamp_millis_opt(start.timestamp_millis())
        .single()
        .expect("ms");
    let batch: Vec<_> = (0..6000)
        .map(|i| {
            at(
                tenant,
                vehicle,
                fix(start + Duration::minutes(i * 10), 48.0, 11.0),
            )
        })
        .collect();
    let stored = insert(store, &batch).await.expect("insert");
    assert!(stored.iter().all(|s| *s));
    assert_eq!(history(store, tenant, vehicle).await.len(), 6000);
    let stored = insert(store, &batch).await.expect("insert again");
    assert!(stored.iter().all(|s| !*s));
    assert_eq!(history(store, tenant, vehicle).await.len(), 6000);
}

fn tenant_keeping(days: u32) -> webhost_storage::CellTenant {
    webhost_storage::CellTenant {
        retention_days: days,
        ..cell_tenant(50)
    }
}

/// Retention removes exactly what each tenant's plan no longer keeps:
/// positions and events strictly older than its cutoff, nothing of a tenant
/// that was not listed, and nothing more on a second run.
pub async fn retention_removes_exactly_each_tenants_expired_history(store: &dyn CellStore) {
    use webhost_domain::EventId;
    use webhost_storage::{Event, EventQuery, EventType, IngestBatch, NewEvent};

    let now = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("now");
    let mut tenants = Vec::new();
    for days in [30, 365, 30] {
        let tenant = tenant_keeping(days);
        let id = tenant.id;
        store.put_tenant(tenant).await.expect("tenant");
        let vehicle = store
            .create_vehicle(id, bare_vehicle("Van"))
            .await
            .expect("vehicle")
            .id;
        tenants.push((id, vehicle));
    }
    let short_cutoff = now - Duration::days(30);
    let long_cutoff = now - Duration::days(365);
    let times = [
        now - Duration::days(400),
        now - Duration::days(100),
        short_cutoff - Duration::milliseconds(1),
        short_cutoff,
        now - Duration::hours(1),
    ];
    for (tenant, vehicle) in &tenants {
        let positions: Vec<_> = times
            .iter()
            .map(|t| at(*tenant, *vehicle, fix(*t, 1.0, 2.0)))
            .collect();
        let events: Vec<_> = [now - Duration::days(100), now - Duration::hours(1)]
            .iter()
            .map(|t| NewEvent {
                tenant_id: *tenant,
                event: Event {
                    id: EventId::new(),
                    kind: EventType::DeviceOnline,
                    vehicle_id: *vehicle,
                    geofence_id: None,
                    time: *t,
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
            .expect("insert");
    }
    let (short, long, unlisted) = (tenants[0], tenants[1], tenants[2]);
    let report = store
        .expire_positions(&[(short.0, short_cutoff), (long.0, long_cutoff)])
        .await
        .expect("retention");
    assert_eq!(report.positions_removed, 3 + 1, "{report:?}");
    assert_eq!(report.events_removed, 1, "{report:?}");

    let kept = |(tenant, vehicle): (TenantId, VehicleId)| async move {
        history(store, tenant, vehicle)
            .await
            .iter()
            .map(|p| p.fix.time)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kept(short).await,
        [short_cutoff, now - Duration::hours(1)],
        "time < cutoff goes, = cutoff stays"
    );
    assert_eq!(kept(long).await, times[1..].to_vec());
    assert_eq!(
        kept(unlisted).await,
        times.to_vec(),
        "a tenant not listed keeps everything"
    );
    let events = |tenant: TenantId| async move {
        store
            .events(
                tenant,
                EventQuery {
                    from: None,
                    to: None,
                    types: vec![],
                    vehicle: None,
                    after: None,
                    limit: 100,
                },
            )
            .await
            .expect("events")
            .data
            .len()
    };
    assert_eq!(
        (
            events(short.0).await,
            events(long.0).await,
            events(unlisted.0).await
        ),
        (1, 2, 2)
    );

    let again = store
        .expire_positions(&[(short.0, short_cutoff), (long.0, long_cutoff)])
        .await
        .expect("retention again");
    assert_eq!((again.positions_removed, again.events_removed), (0, 0));

    // With every tenant listed, expired days go whole (PostgreSQL drops the
    // partition), still exactly.
    let report = store
        .expire_positions(&[
            (short.0, short_cutoff),
            (long.0, long_cutoff),
            (unlisted.0, short_cutoff),
        ])
        .await
        .expect("retention, all tenants");
    assert_eq!(report.positions_removed, 3, "{report:?}");
    assert_eq!(
        kept(unlisted).await,
        [short_cutoff, now - Duration::hours(1)]
    );
    assert_eq!(
        kept(long).await,
        times[1..].to_vec(),
        "the long plan's rows survive partition drops"
    );
    let listed = store.tenants().await.expect("tenants");
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .any(|t| t.id == long.0 && t.retention_days == 365));
}

/// Daily tallies add up per tenant and day; the report counts the days
/// from `since`, positions stored now, and shares the position storage by
/// rows. Every tenant is listed, idle ones with zeros, and tallies of
/// tenants not on the cell are dropped.
pub async fn usage_counts_the_window_and_shares_storage_by_rows(store: &dyn CellStore) {
    let (busy, vehicle) = tenant_with_vehicle(store).await;
    let idle = cell_tenant(5);
    let idle_id = idle.id;
    store.put_tenant(idle).await.expect("idle tenant");
    let rows: Vec<_> = (0..30)
        .map(|i| at(busy, vehicle, fix(t0() + Duration::seconds(i), 52.5, 13.4)))
        .collect();
    insert(store, &rows).await.expect("insert");

    let today = Utc::now().date_naive();
    let count = |tenant, positions, requests| UsageCount {
        tenant_id: tenant,
        positions_ingested: positions,
        api_requests: requests,
    };
    let long_ago = today - Duration::days(40);
    store
        .add_usage(long_ago, &[count(busy, 1_000, 1_000)])
        .await
        .expect("old tally");
    store
        .add_usage(today, &[count(busy, 20, 3), count(TenantId::new(), 7, 7)])
        .await
        .expect("tally");
    store
        .add_usage(today, &[count(busy, 10, 2), count(busy, 0, 1)])
        .await
        .expect("tally again");

    let report = store
        .usage(today - Duration::days(29))
        .await
        .expect("usage");
    assert_eq!(report.len(), 2, "every tenant, no stranger: {report:?}");
    let of = |tenant| {
        report
            .iter()
            .find(|r| r.tenant_id == tenant)
            .expect("listed")
            .usage
    };
    let busy_usage = of(busy);
    assert_eq!(busy_usage.positions_stored, 30);
    assert_eq!(
        busy_usage.positions_ingested, 30,
        "the 40-day-old tally is outside"
    );
    assert_eq!(busy_usage.api_requests, 6);
    assert!(busy_usage.storage_bytes > 0, "{busy_usage:?}");
    assert_eq!(of(idle_id), Usage::default());

    store.delete_tenant(busy).await.expect("delete");
    let report = store.usage(long_ago).await.expect("usage");
    assert_eq!(report.len(), 1, "the deleted tenant's tallies went with it");
}
