//! Stories for [`CellStore`]. Each takes a store on a fresh database.

use std::sync::Arc;

use serde_json::json;
use webhost_domain::{Attributes, TenantId, VehicleId};
use webhost_storage::{
    CellStats, CellStore, CellTenant, Conflict, NewVehicle, PageRequest, StorageError, Vehicle,
    VehiclePatch,
};

use crate::fixtures::{
    assert_not_found, assert_recent, attributes, bare_vehicle, cell_tenant, device,
    expect_conflict, plan, text, vehicle_name, vehicle_with_device,
};

async fn a_tenant(store: &dyn CellStore, max_vehicles: u32) -> TenantId {
    let tenant = cell_tenant(max_vehicles);
    let id = tenant.id;
    store.put_tenant(tenant).await.expect("put tenant");
    id
}

async fn create(store: &dyn CellStore, tenant: TenantId, vehicle: NewVehicle) -> Vehicle {
    store
        .create_vehicle(tenant, vehicle)
        .await
        .expect("creating a vehicle")
}

/// All of a tenant's vehicles, following cursors.
async fn all_vehicles(store: &dyn CellStore, tenant: TenantId) -> Vec<Vehicle> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .vehicles(tenant, PageRequest { after, limit: 100 })
            .await
            .expect("listing vehicles");
        all.extend(page.data);
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => return all,
        }
    }
}

fn ids(vehicles: &[Vehicle]) -> Vec<VehicleId> {
    vehicles.iter().map(|v| v.id).collect()
}

/// put_tenant creates the tenant, then updates its plan limits in place.
pub async fn put_tenant_creates_then_updates_limits(store: &dyn CellStore) {
    store.ping().await.expect("ping");
    let tenant = cell_tenant(25);
    assert_not_found(store.tenant(tenant.id).await, "tenant before put");

    store.put_tenant(tenant.clone()).await.expect("put");
    assert_eq!(store.tenant(tenant.id).await.expect("tenant"), tenant);

    let upgraded = CellTenant {
        plan: plan("professional"),
        max_vehicles: 100,
        retention_days: 365,
        ..tenant.clone()
    };
    store.put_tenant(upgraded.clone()).await.expect("put again");
    assert_eq!(store.tenant(tenant.id).await.expect("tenant"), upgraded);
    assert_eq!(
        store.stats().await.expect("stats").tenants,
        1,
        "an update does not add a tenant"
    );

    // Updating the limits keeps the tenant's vehicles.
    let vehicle = create(store, tenant.id, bare_vehicle("Van 1")).await;
    store
        .put_tenant(CellTenant {
            max_vehicles: 10,
            ..upgraded
        })
        .await
        .expect("put a third time");
    assert_eq!(
        store.tenant(tenant.id).await.expect("tenant").max_vehicles,
        10
    );
    assert_eq!(
        store.vehicle(tenant.id, vehicle.id).await.expect("vehicle"),
        vehicle
    );
}

/// A vehicle with every field set round-trips exactly, and so does one with
/// only a name.
pub async fn vehicle_round_trips_with_all_fields(store: &dyn CellStore) {
    let tenant = a_tenant(store, 25).await;
    let attrs = attributes(json!({
        "color": "Rot ✓",
        "axles": 2,
        "payload_kg": 1250.5,
        "refrigerated": true,
        "tags": ["north", "night"],
        "service": { "last": "2025-01-02", "km": 120000, "notes": null },
    }));
    let full = NewVehicle {
        id: VehicleId::new(),
        name: vehicle_name("Kühlwagen 7"),
        device_id: Some(device("868683020000001")),
        plate: Some(text("B-WH 1234")),
        group: Some(text("Nord")),
        attributes: attrs.clone(),
    };
    let created = create(store, tenant, full.clone()).await;
    assert_eq!(created.id, full.id);
    assert_eq!(created.name, full.name);
    assert_eq!(created.device_id, full.device_id);
    assert_eq!(created.plate, full.plate);
    assert_eq!(created.group, full.group);
    assert_eq!(created.attributes, attrs);
    assert_recent(created.created_at, "vehicle created_at");
    assert!(created.updated_at >= created.created_at);
    assert_eq!(
        store.vehicle(tenant, full.id).await.expect("get vehicle"),
        created
    );

    let bare = bare_vehicle("Trailer");
    let created_bare = create(store, tenant, bare.clone()).await;
    assert_eq!(created_bare.name, bare.name);
    assert_eq!(created_bare.device_id, None);
    assert_eq!(created_bare.plate, None);
    assert_eq!(created_bare.group, None);
    assert_eq!(created_bare.attributes, Attributes::default());
    assert_eq!(
        store.vehicle(tenant, bare.id).await.expect("get bare"),
        created_bare
    );

    // Several vehicles may have no device at all.
    let another_bare = create(store, tenant, bare_vehicle("Trailer 2")).await;
    assert_eq!(another_bare.device_id, None);

    assert_eq!(
        all_vehicles(store, tenant).await,
        vec![created, created_bare, another_bare]
    );
}

/// The plan's vehicle limit holds, per tenant, and follows put_tenant.
pub async fn vehicle_limit_is_enforced(store: &dyn CellStore) {
    let tenant = a_tenant(store, 2).await;
    let other = a_tenant(store, 2).await;
    create(store, tenant, bare_vehicle("One")).await;
    create(store, tenant, vehicle_with_device("Two", "dev-2")).await;

    let third = vehicle_with_device("Three", "dev-3");
    let conflict = expect_conflict(
        store.create_vehicle(tenant, third.clone()).await,
        "third vehicle with a limit of 2",
    );
    assert_eq!(conflict, Conflict::VehicleLimit { limit: 2 });
    assert_not_found(store.vehicle(tenant, third.id).await, "refused vehicle");
    assert_eq!(all_vehicles(store, tenant).await.len(), 2);
    assert_eq!(store.count_vehicles(tenant).await.expect("count"), 2);

    // The refused vehicle's device is not held by anything.
    create(store, other, vehicle_with_device("Other", "dev-3")).await;
    // Another tenant's count is its own.
    create(store, other, bare_vehicle("Other 2")).await;
    assert_eq!(store.count_vehicles(other).await.expect("count"), 2);
    assert_eq!(store.count_vehicles(tenant).await.expect("count"), 2);

    // Raising the limit admits more; lowering it refuses again.
    store
        .put_tenant(CellTenant {
            max_vehicles: 3,
            ..store.tenant(tenant).await.expect("tenant")
        })
        .await
        .expect("raise limit");
    create(store, tenant, bare_vehicle("Three")).await;
    let conflict = expect_conflict(
        store.create_vehicle(tenant, bare_vehicle("Four")).await,
        "fourth vehicle with a limit of 3",
    );
    assert_eq!(conflict, Conflict::VehicleLimit { limit: 3 });

    store
        .put_tenant(CellTenant {
            max_vehicles: 1,
            ..store.tenant(tenant).await.expect("tenant")
        })
        .await
        .expect("lower limit");
    let conflict = expect_conflict(
        store.create_vehicle(tenant, bare_vehicle("Five")).await,
        "vehicle over a lowered limit",
    );
    assert_eq!(conflict, Conflict::VehicleLimit { limit: 1 });
    assert_eq!(
        all_vehicles(store, tenant).await.len(),
        3,
        "lowering the limit deletes nothing"
    );
    assert_eq!(store.count_vehicles(tenant).await.expect("count"), 3);
}

/// A device id is unique within the cell, across tenants; a refused vehicle
/// leaves nothing behind.
pub async fn duplicate_device_id_is_a_conflict_and_stores_nothing(store: &dyn CellStore) {
    let a = a_tenant(store, 10).await;
    let b = a_tenant(store, 10).await;
    let first = create(store, a, vehicle_with_device("First", "868683020000001")).await;

    let same_tenant = vehicle_with_device("Second", "868683020000001");
    let conflict = expect_conflict(
        store.create_vehicle(a, same_tenant.clone()).await,
        "same device, same tenant",
    );
    assert_eq!(
        conflict,
        Conflict::DeviceTaken("868683020000001".to_string())
    );
    assert_not_found(store.vehicle(a, same_tenant.id).await, "refused vehicle");
    assert_eq!(ids(&all_vehicles(store, a).await), vec![first.id]);

    let other_tenant = vehicle_with_device("Theirs", "868683020000001");
    let conflict = expect_conflict(
        store.create_vehicle(b, other_tenant.clone()).await,
        "same device, other tenant of the cell",
    );
    assert_eq!(
        conflict,
        Conflict::DeviceTaken("868683020000001".to_string())
    );
    assert_not_found(store.vehicle(b, other_tenant.id).await, "refused vehicle");
    assert!(all_vehicles(store, b).await.is_empty());
    assert_eq!(store.count_vehicles(a).await.expect("count"), 1);
    assert_eq!(store.count_vehicles(b).await.expect("count"), 0);
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 2,
            vehicles: 1
        }
    );

    // The refused ids are free: the same vehicle id works with another device.
    let retried = create(
        store,
        a,
        NewVehicle {
            device_id: Some(device("868683020000002")),
            ..same_tenant
        },
    )
    .await;
    assert_eq!(
        retried.device_id.as_ref().map(|d| d.as_str()),
        Some("868683020000002")
    );
}

/// Tenant B can neither see nor change tenant A's vehicles.
pub async fn tenants_are_isolated(store: &dyn CellStore) {
    let a = a_tenant(store, 5).await;
    let b = a_tenant(store, 5).await;
    let theirs = create(
        store,
        a,
        NewVehicle {
            plate: Some(text("A-1")),
            ..vehicle_with_device("A's van", "dev-a")
        },
    )
    .await;

    assert_not_found(store.vehicle(b, theirs.id).await, "B reads A's vehicle");
    assert_not_found(
        store
            .update_vehicle(
                b,
                theirs.id,
                VehiclePatch {
                    name: Some(vehicle_name("Stolen")),
                    plate: Some(None),
                    ..VehiclePatch::default()
                },
            )
            .await,
        "B updates A's vehicle",
    );
    assert_not_found(
        store.delete_vehicle(b, theirs.id).await,
        "B deletes A's vehicle",
    );
    let page = store
        .vehicles(
            b,
            PageRequest {
                after: None,
                limit: 50,
            },
        )
        .await
        .expect("B lists");
    assert!(page.data.is_empty());
    assert_eq!(page.next_cursor, None);
    assert_eq!(store.count_vehicles(b).await.expect("B counts"), 0);

    // A's vehicle is untouched.
    assert_eq!(store.vehicle(a, theirs.id).await.expect("A reads"), theirs);

    // B's vehicles are B's only.
    let mine = create(store, b, bare_vehicle("B's van")).await;
    assert_eq!(ids(&all_vehicles(store, a).await), vec![theirs.id]);
    assert_eq!(ids(&all_vehicles(store, b).await), vec![mine.id]);
    assert_not_found(store.vehicle(a, mine.id).await, "A reads B's vehicle");
    assert_eq!(store.count_vehicles(a).await.expect("A counts"), 1);
    assert_eq!(store.count_vehicles(b).await.expect("B counts"), 1);
}

/// Keyset pagination returns everything once, in creation order.
pub async fn vehicles_paginate_in_creation_order(store: &dyn CellStore) {
    let tenant = a_tenant(store, 10).await;
    let noise = a_tenant(store, 10).await;
    let mut created = Vec::new();
    for i in 1..=5 {
        created.push(
            create(store, tenant, bare_vehicle(&format!("Van {i}")))
                .await
                .id,
        );
        // Another tenant's vehicles in between must not show up.
        create(store, noise, bare_vehicle(&format!("Noise {i}"))).await;
    }

    let first = store
        .vehicles(
            tenant,
            PageRequest {
                after: None,
                limit: 2,
            },
        )
        .await
        .expect("page 1");
    assert_eq!(ids(&first.data), created[0..2]);
    assert_eq!(first.next_cursor, Some(created[1]));

    let second = store
        .vehicles(
            tenant,
            PageRequest {
                after: first.next_cursor,
                limit: 2,
            },
        )
        .await
        .expect("page 2");
    assert_eq!(ids(&second.data), created[2..4]);
    assert_eq!(second.next_cursor, Some(created[3]));

    let third = store
        .vehicles(
            tenant,
            PageRequest {
                after: second.next_cursor,
                limit: 2,
            },
        )
        .await
        .expect("page 3");
    assert_eq!(ids(&third.data), created[4..5]);
    assert_eq!(third.next_cursor, None, "no cursor after the last page");

    // A page that ends exactly at the last vehicle has no cursor either.
    let exact = store
        .vehicles(
            tenant,
            PageRequest {
                after: None,
                limit: 5,
            },
        )
        .await
        .expect("exact page");
    assert_eq!(ids(&exact.data), created);
    assert_eq!(exact.next_cursor, None);

    let past_the_end = store
        .vehicles(
            tenant,
            PageRequest {
                after: Some(created[4]),
                limit: 2,
            },
        )
        .await
        .expect("after the last");
    assert!(past_the_end.data.is_empty());
    assert_eq!(past_the_end.next_cursor, None);

    // The cursor is "strictly after": a deleted vehicle still works as one.
    store
        .delete_vehicle(tenant, created[1])
        .await
        .expect("delete");
    let after_deleted = store
        .vehicles(
            tenant,
            PageRequest {
                after: Some(created[1]),
                limit: 10,
            },
        )
        .await
        .expect("after a deleted cursor");
    assert_eq!(ids(&after_deleted.data), created[2..5]);
}

/// `None` leaves a field alone, `Some(None)` clears it, `Some(Some(x))` sets it.
pub async fn update_vehicle_patch_semantics(store: &dyn CellStore) {
    let tenant = a_tenant(store, 10).await;
    let original = create(
        store,
        tenant,
        NewVehicle {
            plate: Some(text("M-AB 123")),
            group: Some(text("south")),
            attributes: attributes(json!({ "a": 1 })),
            ..vehicle_with_device("Truck", "dev-1")
        },
    )
    .await;

    // An empty patch changes nothing but (perhaps) updated_at.
    let same = store
        .update_vehicle(tenant, original.id, VehiclePatch::default())
        .await
        .expect("empty patch");
    assert_eq!(
        Vehicle {
            updated_at: original.updated_at,
            ..same.clone()
        },
        original
    );
    assert!(same.updated_at >= original.updated_at);

    // Only the name.
    let renamed = store
        .update_vehicle(
            tenant,
            original.id,
            VehiclePatch {
                name: Some(vehicle_name("Truck 2")),
                ..VehiclePatch::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, vehicle_name("Truck 2"));
    assert_eq!(renamed.device_id, original.device_id);
    assert_eq!(renamed.plate, original.plate);
    assert_eq!(renamed.group, original.group);
    assert_eq!(renamed.attributes, original.attributes);
    assert_eq!(renamed.created_at, original.created_at);
    assert!(renamed.updated_at >= original.updated_at);

    // Clear plate and device, set group, replace attributes.
    let changed = store
        .update_vehicle(
            tenant,
            original.id,
            VehiclePatch {
                name: None,
                device_id: Some(None),
                plate: Some(None),
                group: Some(Some(text("north"))),
                attributes: Some(attributes(json!({ "b": [true, 2.5] }))),
            },
        )
        .await
        .expect("patch");
    assert_eq!(changed.name, vehicle_name("Truck 2"));
    assert_eq!(changed.device_id, None);
    assert_eq!(changed.plate, None);
    assert_eq!(changed.group, Some(text("north")));
    assert_eq!(changed.attributes, attributes(json!({ "b": [true, 2.5] })));
    assert_eq!(changed.created_at, original.created_at);
    assert_eq!(
        store.vehicle(tenant, original.id).await.expect("get"),
        changed,
        "the returned vehicle is what is stored"
    );

    // The cleared device is really free.
    create(store, tenant, vehicle_with_device("Reuses dev-1", "dev-1")).await;

    // Set device and plate again; clear group.
    let set = store
        .update_vehicle(
            tenant,
            original.id,
            VehiclePatch {
                device_id: Some(Some(device("dev-9"))),
                plate: Some(Some(text("HH-X 9"))),
                group: Some(None),
                ..VehiclePatch::default()
            },
        )
        .await
        .expect("set");
    assert_eq!(set.device_id, Some(device("dev-9")));
    assert_eq!(set.plate, Some(text("HH-X 9")));
    assert_eq!(set.group, None);
    assert_eq!(set.attributes, changed.attributes);
    assert_eq!(store.vehicle(tenant, original.id).await.expect("get"), set);

    // Setting a vehicle's device to the one it already has is no conflict.
    let unchanged = store
        .update_vehicle(
            tenant,
            original.id,
            VehiclePatch {
                device_id: Some(Some(device("dev-9"))),
                ..VehiclePatch::default()
            },
        )
        .await
        .expect("same device again");
    assert_eq!(unchanged.device_id, Some(device("dev-9")));

    assert_not_found(
        store
            .update_vehicle(tenant, VehicleId::new(), VehiclePatch::default())
            .await,
        "updating an unknown vehicle",
    );
}

/// Moving a vehicle to a device another vehicle holds is refused and
/// changes nothing.
pub async fn update_to_a_taken_device_id_is_a_conflict(store: &dyn CellStore) {
    let a = a_tenant(store, 10).await;
    let b = a_tenant(store, 10).await;
    let holder = create(store, a, vehicle_with_device("Holder", "dev-held")).await;
    let elsewhere = create(store, b, vehicle_with_device("Elsewhere", "dev-b")).await;
    let mover = create(store, a, vehicle_with_device("Mover", "dev-own")).await;

    let conflict = expect_conflict(
        store
            .update_vehicle(
                a,
                mover.id,
                VehiclePatch {
                    name: Some(vehicle_name("Renamed too")),
                    device_id: Some(Some(device("dev-held"))),
                    ..VehiclePatch::default()
                },
            )
            .await,
        "taking a device of the same tenant",
    );
    assert_eq!(conflict, Conflict::DeviceTaken("dev-held".to_string()));
    assert_eq!(
        store.vehicle(a, mover.id).await.expect("mover"),
        mover,
        "a refused update changes nothing, not even the name"
    );
    assert_eq!(store.vehicle(a, holder.id).await.expect("holder"), holder);

    let conflict = expect_conflict(
        store
            .update_vehicle(
                a,
                mover.id,
                VehiclePatch {
                    device_id: Some(Some(device("dev-b"))),
                    ..VehiclePatch::default()
                },
            )
            .await,
        "taking a device of another tenant in the cell",
    );
    assert_eq!(conflict, Conflict::DeviceTaken("dev-b".to_string()));
    assert_eq!(store.vehicle(a, mover.id).await.expect("mover"), mover);
    assert_eq!(
        store.vehicle(b, elsewhere.id).await.expect("elsewhere"),
        elsewhere
    );

    // The store is usable after the refusals.
    let moved = store
        .update_vehicle(
            a,
            mover.id,
            VehiclePatch {
                device_id: Some(Some(device("dev-new"))),
                ..VehiclePatch::default()
            },
        )
        .await
        .expect("moving to a free device");
    assert_eq!(moved.device_id, Some(device("dev-new")));
}

/// delete_vehicle hands back what it deleted; afterwards it is gone.
pub async fn delete_vehicle_returns_it_then_not_found(store: &dyn CellStore) {
    let tenant = a_tenant(store, 2).await;
    let doomed = create(
        store,
        tenant,
        NewVehicle {
            plate: Some(text("K-D 1")),
            attributes: attributes(json!({ "x": "y" })),
            ..vehicle_with_device("Doomed", "dev-doomed")
        },
    )
    .await;
    let kept = create(store, tenant, bare_vehicle("Kept")).await;

    let deleted = store
        .delete_vehicle(tenant, doomed.id)
        .await
        .expect("delete");
    assert_eq!(deleted, doomed, "delete returns the whole vehicle");
    assert_not_found(store.vehicle(tenant, doomed.id).await, "deleted vehicle");
    assert_not_found(
        store.delete_vehicle(tenant, doomed.id).await,
        "deleting twice",
    );
    assert_not_found(
        store
            .update_vehicle(tenant, doomed.id, VehiclePatch::default())
            .await,
        "updating a deleted vehicle",
    );
    assert_eq!(ids(&all_vehicles(store, tenant).await), vec![kept.id]);
    assert_eq!(store.count_vehicles(tenant).await.expect("count"), 1);

    // Its slot under the limit and its device are free again.
    create(
        store,
        tenant,
        vehicle_with_device("Successor", "dev-doomed"),
    )
    .await;
    assert_eq!(store.stats().await.expect("stats").vehicles, 2);
}

/// Deleting a tenant deletes its vehicles, and only its own.
pub async fn delete_tenant_removes_its_vehicles(store: &dyn CellStore) {
    let gone = a_tenant(store, 5).await;
    let kept = a_tenant(store, 5).await;
    let v1 = create(store, gone, vehicle_with_device("G1", "dev-g1")).await;
    create(store, gone, bare_vehicle("G2")).await;
    let k1 = create(store, kept, vehicle_with_device("K1", "dev-k1")).await;

    store.delete_tenant(gone).await.expect("delete tenant");
    assert_not_found(store.tenant(gone).await, "deleted tenant");
    assert_not_found(store.vehicle(gone, v1.id).await, "deleted tenant's vehicle");
    assert_not_found(store.delete_tenant(gone).await, "deleting twice");
    assert_not_found(
        store.create_vehicle(gone, bare_vehicle("After")).await,
        "creating a vehicle for a deleted tenant",
    );
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 1,
            vehicles: 1
        }
    );
    assert_eq!(store.vehicle(kept, k1.id).await.expect("kept vehicle"), k1);

    // The deleted tenant's devices are free; a re-created tenant starts empty.
    create(store, kept, vehicle_with_device("K2", "dev-g1")).await;
    store
        .put_tenant(CellTenant {
            id: gone,
            ..cell_tenant(5)
        })
        .await
        .expect("put the tenant again");
    assert!(all_vehicles(store, gone).await.is_empty());
    assert_eq!(store.count_vehicles(gone).await.expect("count"), 0);
    assert_eq!(store.count_vehicles(kept).await.expect("count"), 2);
}

/// stats counts all tenants and vehicles of the cell.
pub async fn stats_count_tenants_and_vehicles(store: &dyn CellStore) {
    assert_eq!(store.stats().await.expect("stats"), CellStats::default());
    let a = a_tenant(store, 5).await;
    let b = a_tenant(store, 5).await;
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 2,
            vehicles: 0
        }
    );
    let a1 = create(store, a, bare_vehicle("A1")).await;
    create(store, a, bare_vehicle("A2")).await;
    create(store, b, bare_vehicle("B1")).await;
    assert_eq!(store.count_vehicles(a).await.expect("count a"), 2);
    assert_eq!(store.count_vehicles(b).await.expect("count b"), 1);
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 2,
            vehicles: 3
        }
    );
    store.delete_vehicle(a, a1.id).await.expect("delete");
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 2,
            vehicles: 2
        }
    );
    store.delete_tenant(b).await.expect("delete tenant");
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 1,
            vehicles: 1
        }
    );
}

/// Every lookup or change of something that does not exist is NotFound.
pub async fn unknown_ids_are_not_found(store: &dyn CellStore) {
    let ghost = TenantId::new();
    assert_not_found(store.tenant(ghost).await, "tenant");
    assert_not_found(store.delete_tenant(ghost).await, "delete_tenant");
    assert_not_found(
        store.create_vehicle(ghost, bare_vehicle("Orphan")).await,
        "create_vehicle for an unknown tenant",
    );
    let tenant = a_tenant(store, 5).await;
    let unknown = VehicleId::new();
    assert_not_found(store.vehicle(tenant, unknown).await, "vehicle");
    assert_not_found(
        store
            .update_vehicle(tenant, unknown, VehiclePatch::default())
            .await,
        "update_vehicle",
    );
    assert_not_found(
        store.delete_vehicle(tenant, unknown).await,
        "delete_vehicle",
    );
    let page = store
        .vehicles(
            ghost,
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("listing an unknown tenant's vehicles");
    assert!(page.data.is_empty());
    assert_eq!(
        store.stats().await.expect("stats"),
        CellStats {
            tenants: 1,
            vehicles: 0
        }
    );
}

/// Ten creates at once against a limit of five: exactly five succeed.
pub async fn concurrent_creates_never_exceed_the_limit(store: Arc<dyn CellStore>) {
    const LIMIT: u32 = 5;
    let tenant = a_tenant(store.as_ref(), LIMIT).await;
    let other = a_tenant(store.as_ref(), LIMIT).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let racer = Arc::clone(&store);
        tasks.spawn(async move {
            racer
                .create_vehicle(
                    tenant,
                    vehicle_with_device(&format!("Racer {i}"), &format!("race-{i}")),
                )
                .await
        });
        // Another tenant racing alongside, within its own limit.
        if i < 3 {
            let rival = Arc::clone(&store);
            tasks.spawn(async move {
                rival
                    .create_vehicle(other, bare_vehicle(&format!("Other {i}")))
                    .await
            });
        }
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("create task panicked") {
            Ok(_) => created += 1,
            Err(StorageError::Conflict(Conflict::VehicleLimit { limit })) => {
                assert_eq!(limit, LIMIT);
                refused += 1;
            }
            Err(err) => panic!("unexpected error from a concurrent create: {err:?}"),
        }
    }
    assert_eq!(
        (created, refused),
        (5 + 3, 5),
        "5 of the tenant's 10 creates and all 3 of the other tenant's succeed"
    );
    assert_eq!(all_vehicles(store.as_ref(), tenant).await.len(), 5);
    assert_eq!(store.count_vehicles(tenant).await.expect("count"), 5);
    assert_eq!(all_vehicles(store.as_ref(), other).await.len(), 3);
    assert_eq!(store.stats().await.expect("stats").vehicles, 8);
}

/// Five tenants create a vehicle with the same device id at once: exactly
/// one gets it, the others are told it is taken.
pub async fn concurrent_creates_with_one_device_id_admit_one(store: Arc<dyn CellStore>) {
    let mut tenants = Vec::new();
    for _ in 0..5 {
        tenants.push(a_tenant(store.as_ref(), 5).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, tenant) in tenants.iter().copied().enumerate() {
        let claimant = Arc::clone(&store);
        tasks.spawn(async move {
            claimant
                .create_vehicle(
                    tenant,
                    vehicle_with_device(&format!("Claimant {i}"), "contested-device"),
                )
                .await
        });
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("create task panicked") {
            Ok(vehicle) => winners.push(vehicle),
            Err(StorageError::Conflict(Conflict::DeviceTaken(id))) => {
                assert_eq!(id, "contested-device");
                refused += 1;
            }
            Err(err) => panic!("unexpected error from a concurrent create: {err:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (1, 4));
    assert_eq!(store.stats().await.expect("stats").vehicles, 1);
}
