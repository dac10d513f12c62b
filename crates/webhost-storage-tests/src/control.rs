//! Stories for [`ControlStore`]. Each takes a store on a fresh database.

use chrono::Utc;
use webhost_domain::{ApiKeyId, Catalog, CellId, TenantId, Usage, UserId, VehicleId};
use webhost_storage::{
    ApiKeyPrincipal, CellStatus, CellUpdate, Conflict, ControlStore, DeviceRegistration, NewUser,
    StorageError, SwitchOutcome, TenantFilter, TenantMove, TenantStatus, TenantUsageRecord,
    UserRole,
};

use crate::fixtures::{
    assert_not_found, assert_recent, device, email, expect_conflict, new_api_key, new_cell, plan,
    random_hash, tenant_seed, TenantSeed, PASSWORD_HASH,
};

/// Creates a cell and returns its id; tenants need one to be routed to.
async fn a_cell(store: &dyn ControlStore, name: &str) -> CellId {
    store
        .create_cell(new_cell(name, &format!("http://{name}.internal:8080")))
        .await
        .expect("creating a cell")
        .id
}

async fn create(store: &dyn ControlStore, seed: &TenantSeed) {
    store
        .create_tenant(seed.tenant.clone(), seed.owner.clone(), seed.key.clone())
        .await
        .expect("creating a tenant");
}

/// A new store holds the default catalog.
pub async fn catalog_is_seeded_on_open(store: &dyn ControlStore) {
    let catalog = store.catalog().await.expect("reading the catalog");
    assert_eq!(catalog, Catalog::default_seed());
    store.ping().await.expect("ping");
}

/// Every saved catalog becomes the current one.
pub async fn save_catalog_makes_the_newest_version_current(store: &dyn ControlStore) {
    let mut second = Catalog::default_seed();
    second.plans[0].price_cents += 100;
    second.plans[0].max_vehicles = 7;
    store.save_catalog(&second).await.expect("saving catalog 2");
    assert_eq!(store.catalog().await.expect("catalog"), second);

    let mut third = second.clone();
    third.plans.retain(|p| p.name != plan("business"));
    third.cell_templates.pop();
    store.save_catalog(&third).await.expect("saving catalog 3");
    assert_eq!(store.catalog().await.expect("catalog"), third);

    // Saving the original again makes it current again: "newest", not
    // "largest" or "first".
    store
        .save_catalog(&Catalog::default_seed())
        .await
        .expect("saving catalog 4");
    assert_eq!(
        store.catalog().await.expect("catalog"),
        Catalog::default_seed()
    );
}

/// create_cell, cells, cell, cell_by_name and set_cell_url agree with each
/// other, and a cell counts the tenants routed to it.
pub async fn cells_round_trip_and_count_their_tenants(store: &dyn ControlStore) {
    assert!(store.cells().await.expect("cells").is_empty());

    let new = new_cell("fly-iad-1", "http://127.0.0.1:9001");
    let created = store.create_cell(new.clone()).await.expect("create cell");
    assert_eq!(created.id, new.id);
    assert_eq!(created.name, "fly-iad-1");
    assert_eq!(created.pool, new.pool);
    assert_eq!(created.region, new.region);
    assert_eq!(created.provider, new.provider);
    assert_eq!(created.url, "http://127.0.0.1:9001");
    assert_eq!(created.status, CellStatus::Active);
    assert_eq!(created.capacity, 50);
    assert_eq!(created.monthly_cost_cents, 12_345);
    assert_eq!(created.template.as_deref(), Some("fly-regional"));
    assert_eq!(created.tenants, 0);
    assert_recent(created.created_at, "cell created_at");

    let other = store
        .create_cell(new_cell("fly-iad-2", "http://127.0.0.1:9002"))
        .await
        .expect("create second cell");

    assert_eq!(store.cell(created.id).await.expect("cell"), created);
    assert_eq!(
        store.cell_by_name("fly-iad-1").await.expect("cell by name"),
        created
    );
    let mut listed = store.cells().await.expect("cells");
    listed.sort_by_key(|c| c.name.clone());
    assert_eq!(listed, vec![created.clone(), other.clone()]);

    store
        .set_cell_url(created.id, "http://127.0.0.1:9100")
        .await
        .expect("set cell url");
    let moved = store
        .cell(created.id)
        .await
        .expect("cell after set_cell_url");
    assert_eq!(moved.url, "http://127.0.0.1:9100");
    assert_eq!(
        moved,
        store.cell_by_name("fly-iad-1").await.expect("by name")
    );
    assert_eq!(
        store.cell(other.id).await.expect("other cell").url,
        "http://127.0.0.1:9002",
        "set_cell_url changed only its cell"
    );

    // Two tenants routed to the first cell, one to the second.
    let a = tenant_seed(created.id, "A GmbH", "a@example.com");
    let b = tenant_seed(created.id, "B GmbH", "b@example.com");
    let c = tenant_seed(other.id, "C GmbH", "c@example.com");
    for seed in [&a, &b, &c] {
        create(store, seed).await;
    }
    assert_eq!(store.cell(created.id).await.expect("cell").tenants, 2);
    assert_eq!(
        store.cell_by_name("fly-iad-2").await.expect("cell").tenants,
        1
    );
    let counts: Vec<(String, u32)> = {
        let mut cells = store.cells().await.expect("cells");
        cells.sort_by_key(|c| c.name.clone());
        cells.into_iter().map(|c| (c.name, c.tenants)).collect()
    };
    assert_eq!(
        counts,
        vec![("fly-iad-1".to_string(), 2), ("fly-iad-2".to_string(), 1)]
    );

    // The route follows the cell's URL.
    store
        .set_cell_url(created.id, "http://127.0.0.1:9200")
        .await
        .expect("set cell url");
    assert_eq!(
        store.route(a.tenant.id).await.expect("route").cell_url,
        "http://127.0.0.1:9200"
    );

    store.delete_tenant(b.tenant.id).await.expect("delete b");
    assert_eq!(store.cell(created.id).await.expect("cell").tenants, 1);
}

/// Cell names are unique.
pub async fn duplicate_cell_name_is_a_conflict(store: &dyn ControlStore) {
    let first = store
        .create_cell(new_cell("hetzner-fsn1-1", "http://one"))
        .await
        .expect("create cell");
    let conflict = expect_conflict(
        store
            .create_cell(new_cell("hetzner-fsn1-1", "http://two"))
            .await,
        "second cell with the same name",
    );
    assert_eq!(
        conflict,
        Conflict::CellNameTaken("hetzner-fsn1-1".to_string())
    );
    let cells = store.cells().await.expect("cells");
    assert_eq!(cells, vec![first.clone()], "the duplicate was not stored");
    assert_eq!(
        store
            .cell_by_name("hetzner-fsn1-1")
            .await
            .expect("by name")
            .url,
        "http://one"
    );
}

/// create_tenant stores the tenant (provisioning), its owner, its first API
/// key and its route (version 1, to the given cell).
pub async fn create_tenant_stores_tenant_owner_key_and_route(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-sin-1").await;
    let seed = tenant_seed(cell, "Müller Logistik ✓", "Owner@Example.com");
    let (tenant, user, key) = store
        .create_tenant(seed.tenant.clone(), seed.owner.clone(), seed.key.clone())
        .await
        .expect("create tenant");

    assert_eq!(tenant.id, seed.tenant.id);
    assert_eq!(tenant.company.as_str(), "Müller Logistik ✓");
    assert_eq!(tenant.plan, seed.tenant.plan);
    assert_eq!(tenant.country, seed.tenant.country);
    assert_eq!(tenant.pool, seed.tenant.pool);
    assert_eq!(tenant.region, seed.tenant.region);
    assert_eq!(
        tenant.regions, seed.tenant.regions,
        "regions keep their order"
    );
    assert_eq!(tenant.status, TenantStatus::Provisioning);
    assert_recent(tenant.created_at, "tenant created_at");
    assert_eq!(store.tenant(tenant.id).await.expect("tenant"), tenant);
    assert_eq!(
        store.tenants().await.expect("tenants"),
        vec![tenant.clone()]
    );

    assert_eq!(user.id, seed.owner.id);
    assert_eq!(user.tenant_id, tenant.id);
    assert_eq!(user.email.as_str(), "owner@example.com");
    assert_eq!(user.role, UserRole::Owner);
    assert_recent(user.created_at, "user created_at");
    assert_eq!(store.user(user.id).await.expect("user"), user);

    assert_eq!(key.id, seed.key.id);
    assert_eq!(key.tenant_id, tenant.id);
    assert_eq!(key.name, "default");
    assert_eq!(key.prefix, seed.key.prefix);
    assert_eq!(key.revoked_at, None);
    assert_recent(key.created_at, "api key created_at");
    assert_eq!(
        store.api_keys(tenant.id).await.expect("api keys"),
        vec![key.clone()]
    );
    assert_eq!(
        store
            .authenticate_api_key(&seed.key.hash)
            .await
            .expect("authenticate the first key"),
        ApiKeyPrincipal {
            key_id: key.id,
            tenant_id: tenant.id
        }
    );

    let route = store.route(tenant.id).await.expect("route");
    assert_eq!(route.tenant_id, tenant.id);
    assert_eq!(route.cell_id, cell);
    assert_eq!(route.cell_url, "http://fly-sin-1.internal:8080");
    assert_eq!(route.version, 1);
    assert_eq!(route.tenant_status, TenantStatus::Provisioning);
    assert_eq!(store.cell(cell).await.expect("cell").tenants, 1);
}

/// An email in use (by any tenant) refuses the whole signup: none of the
/// second tenant's records are stored, and retrying with another email works.
pub async fn duplicate_email_stores_nothing_of_the_second_tenant(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let first = tenant_seed(cell, "First", "dispatch@example.com");
    create(store, &first).await;

    // Same address, typed differently: Email normalises it.
    let second = tenant_seed(cell, "Second", "  DISPATCH@example.com ");
    let conflict = expect_conflict(
        store
            .create_tenant(
                second.tenant.clone(),
                second.owner.clone(),
                second.key.clone(),
            )
            .await,
        "second tenant with a taken email",
    );
    assert_eq!(conflict, Conflict::EmailTaken);

    assert_not_found(store.tenant(second.tenant.id).await, "second tenant");
    assert_eq!(store.tenants().await.expect("tenants").len(), 1);
    assert_not_found(store.user(second.owner.id).await, "second owner");
    assert_not_found(store.route(second.tenant.id).await, "second route");
    assert!(store
        .api_keys(second.tenant.id)
        .await
        .expect("api keys")
        .is_empty());
    assert_not_found(
        store.authenticate_api_key(&second.key.hash).await,
        "second tenant's key",
    );
    assert_eq!(store.cell(cell).await.expect("cell").tenants, 1);
    // The address still belongs to the first tenant.
    let owner = store
        .user_by_email(&email("dispatch@example.com"))
        .await
        .expect("first owner");
    assert_eq!(owner.user.tenant_id, first.tenant.id);

    // Nothing half-written blocks the same ids and key hash from being used
    // with another address.
    let retry = TenantSeed {
        owner: NewUser {
            email: email("dispatch2@example.com"),
            ..second.owner.clone()
        },
        ..second.clone()
    };
    create(store, &retry).await;
    assert_eq!(store.tenants().await.expect("tenants").len(), 2);
    assert_eq!(
        store
            .authenticate_api_key(&second.key.hash)
            .await
            .expect("retried tenant's key")
            .tenant_id,
        second.tenant.id
    );
}

/// set_tenant_status changes the tenant and what its route reports.
pub async fn set_tenant_status_changes_tenant_and_route(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let seed = tenant_seed(cell, "Status Co", "status@example.com");
    let other = tenant_seed(cell, "Other Co", "other@example.com");
    create(store, &seed).await;
    create(store, &other).await;

    for status in [
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Active,
    ] {
        store
            .set_tenant_status(seed.tenant.id, status)
            .await
            .expect("set status");
        assert_eq!(
            store.tenant(seed.tenant.id).await.expect("tenant").status,
            status
        );
        assert_eq!(
            store
                .route(seed.tenant.id)
                .await
                .expect("route")
                .tenant_status,
            status
        );
    }
    assert_eq!(
        store.tenant(other.tenant.id).await.expect("other").status,
        TenantStatus::Provisioning,
        "only the named tenant changed"
    );
}

/// Login finds the user by email (normalised) with the stored hash.
pub async fn user_by_email_returns_the_password_hash(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let seed = tenant_seed(cell, "Login Co", "login@example.com");
    create(store, &seed).await;

    let credentials = store
        .user_by_email(&email("LOGIN@example.COM"))
        .await
        .expect("user by email");
    assert_eq!(credentials.password_hash, PASSWORD_HASH);
    assert_eq!(credentials.user.id, seed.owner.id);
    assert_eq!(credentials.user.tenant_id, seed.tenant.id);
    assert_eq!(credentials.user.email, email("login@example.com"));
    assert_eq!(credentials.user.role, UserRole::Owner);
    assert_eq!(
        credentials.user,
        store.user(seed.owner.id).await.expect("user by id")
    );

    assert_not_found(
        store.user_by_email(&email("nobody@example.com")).await,
        "unknown email",
    );
}

/// Keys are listed newest first, authenticate by hash until revoked, and
/// revoking twice is NotFound.
pub async fn api_key_lifecycle(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let seed = tenant_seed(cell, "Keys Co", "keys@example.com");
    create(store, &seed).await;
    let tenant = seed.tenant.id;

    let second = new_api_key(tenant, "ci");
    let created = store
        .create_api_key(second.clone())
        .await
        .expect("create key 2");
    assert_eq!(created.id, second.id);
    assert_eq!(created.tenant_id, tenant);
    assert_eq!(created.name, "ci");
    assert_eq!(created.prefix, second.prefix);
    assert_eq!(created.revoked_at, None);
    assert_recent(created.created_at, "key created_at");
    let third = new_api_key(tenant, "ingest");
    store
        .create_api_key(third.clone())
        .await
        .expect("create key 3");

    let listed: Vec<ApiKeyId> = store
        .api_keys(tenant)
        .await
        .expect("api keys")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(
        listed,
        vec![third.id, second.id, seed.key.id],
        "newest first"
    );

    for key in [&seed.key, &second, &third] {
        assert_eq!(
            store
                .authenticate_api_key(&key.hash)
                .await
                .expect("authenticate"),
            ApiKeyPrincipal {
                key_id: key.id,
                tenant_id: tenant
            }
        );
    }
    assert_not_found(
        store.authenticate_api_key(&random_hash()).await,
        "unknown hash",
    );

    store
        .revoke_api_key(tenant, second.id)
        .await
        .expect("revoke key 2");
    assert_not_found(
        store.authenticate_api_key(&second.hash).await,
        "revoked key",
    );
    assert_not_found(
        store.revoke_api_key(tenant, second.id).await,
        "revoking twice",
    );
    // The others still work, and the revoked one is still listed.
    store
        .authenticate_api_key(&third.hash)
        .await
        .expect("key 3 still works");
    store
        .authenticate_api_key(&seed.key.hash)
        .await
        .expect("key 1 still works");
    let keys = store.api_keys(tenant).await.expect("api keys");
    assert_eq!(keys.len(), 3, "revoked keys stay listed");
    let revoked = keys
        .iter()
        .find(|k| k.id == second.id)
        .expect("revoked key listed");
    let revoked_at = revoked.revoked_at.expect("revoked_at is set");
    assert_recent(revoked_at, "revoked_at");
    assert!(revoked_at >= revoked.created_at);
    assert!(keys
        .iter()
        .filter(|k| k.id != second.id)
        .all(|k| k.revoked_at.is_none()));

    assert_not_found(
        store.revoke_api_key(tenant, ApiKeyId::new()).await,
        "revoking an unknown key",
    );
}

/// A tenant cannot revoke another tenant's key.
pub async fn api_key_of_another_tenant_cannot_be_revoked(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let a = tenant_seed(cell, "A", "a@example.com");
    let b = tenant_seed(cell, "B", "b@example.com");
    create(store, &a).await;
    create(store, &b).await;

    assert_not_found(
        store.revoke_api_key(b.tenant.id, a.key.id).await,
        "B revoking A's key",
    );
    assert_eq!(
        store
            .authenticate_api_key(&a.key.hash)
            .await
            .expect("A's key still works"),
        ApiKeyPrincipal {
            key_id: a.key.id,
            tenant_id: a.tenant.id
        }
    );
    assert!(store
        .api_keys(a.tenant.id)
        .await
        .expect("keys")
        .iter()
        .all(|k| k.revoked_at.is_none()));
    // Each tenant lists only its own keys.
    let b_keys: Vec<ApiKeyId> = store
        .api_keys(b.tenant.id)
        .await
        .expect("keys")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(b_keys, vec![b.key.id]);
}

/// Deleting a tenant removes its users, keys, route and devices, and
/// nothing of other tenants.
pub async fn delete_tenant_cascades(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let gone = tenant_seed(cell, "Gone", "gone@example.com");
    let kept = tenant_seed(cell, "Kept", "kept@example.com");
    create(store, &gone).await;
    create(store, &kept).await;
    let extra_key = new_api_key(gone.tenant.id, "extra");
    store
        .create_api_key(extra_key.clone())
        .await
        .expect("extra key");
    let gone_device = device("868683020000001");
    let kept_device = device("868683020000002");
    for (device_id, tenant) in [
        (&gone_device, gone.tenant.id),
        (&kept_device, kept.tenant.id),
    ] {
        assert!(store
            .claim_device(device_id, tenant, VehicleId::new())
            .await
            .expect("claim"));
    }

    store
        .delete_tenant(gone.tenant.id)
        .await
        .expect("delete tenant");

    assert_not_found(store.tenant(gone.tenant.id).await, "deleted tenant");
    assert_not_found(
        store.user_by_email(&gone.owner.email).await,
        "deleted tenant's owner by email",
    );
    assert_not_found(store.user(gone.owner.id).await, "deleted tenant's owner");
    assert_not_found(store.route(gone.tenant.id).await, "deleted tenant's route");
    assert_not_found(
        store.authenticate_api_key(&gone.key.hash).await,
        "deleted tenant's key",
    );
    assert_not_found(
        store.authenticate_api_key(&extra_key.hash).await,
        "deleted tenant's extra key",
    );
    assert!(store
        .api_keys(gone.tenant.id)
        .await
        .expect("keys")
        .is_empty());
    assert_not_found(store.device(&gone_device).await, "deleted tenant's device");
    assert_not_found(store.delete_tenant(gone.tenant.id).await, "deleting twice");
    assert_eq!(store.cell(cell).await.expect("cell").tenants, 1);

    // The other tenant is untouched.
    let tenants = store.tenants().await.expect("tenants");
    assert_eq!(
        tenants.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![kept.tenant.id]
    );
    store
        .user_by_email(&kept.owner.email)
        .await
        .expect("kept owner");
    store.route(kept.tenant.id).await.expect("kept route");
    store
        .authenticate_api_key(&kept.key.hash)
        .await
        .expect("kept key");
    assert_eq!(
        store
            .device(&kept_device)
            .await
            .expect("kept device")
            .tenant_id,
        kept.tenant.id
    );

    // What was released can be taken again: the email and the device.
    let again = tenant_seed(cell, "Gone Again", "gone@example.com");
    create(store, &again).await;
    assert!(store
        .claim_device(&gone_device, kept.tenant.id, VehicleId::new())
        .await
        .expect("released device can be claimed by another tenant"));
}

/// The global device registry: one tenant per device. `claim_device` says
/// whether this call registered the device (`true`) or the tenant already
/// held it (`false`, registration left as it was).
pub async fn device_registry_claims_and_releases(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let a = tenant_seed(cell, "A", "a@example.com");
    let b = tenant_seed(cell, "B", "b@example.com");
    create(store, &a).await;
    create(store, &b).await;
    let imei = device("356938035643809");
    let (v1, v2, v3) = (VehicleId::new(), VehicleId::new(), VehicleId::new());
    let held_by = |tenant_id: TenantId, vehicle_id: VehicleId| DeviceRegistration {
        device_id: imei.clone(),
        tenant_id,
        vehicle_id,
    };

    assert_not_found(store.device(&imei).await, "unclaimed device");
    assert!(
        store
            .claim_device(&imei, a.tenant.id, v1)
            .await
            .expect("A claims"),
        "the first claim registers the device"
    );
    assert_eq!(
        store.device(&imei).await.expect("device"),
        held_by(a.tenant.id, v1)
    );

    // Same tenant again, for another vehicle or the same one: succeeds, says
    // it registered nothing, and leaves the registration as it was.
    assert!(
        !store
            .claim_device(&imei, a.tenant.id, v2)
            .await
            .expect("A claims again for another vehicle"),
        "a repeated claim by the holder reports false"
    );
    assert_eq!(
        store.device(&imei).await.expect("device"),
        held_by(a.tenant.id, v1),
        "a repeated claim leaves the registration as it was"
    );
    assert!(!store
        .claim_device(&imei, a.tenant.id, v1)
        .await
        .expect("A claims again, same vehicle"));

    // Another tenant is refused and changes nothing.
    let conflict = expect_conflict(
        store.claim_device(&imei, b.tenant.id, v3).await,
        "B claims A's device",
    );
    assert_eq!(conflict, Conflict::DeviceTaken(imei.to_string()));
    assert_eq!(
        store.device(&imei).await.expect("device"),
        held_by(a.tenant.id, v1)
    );

    // Release by a non-owner: a no-op.
    store
        .release_device(&imei, b.tenant.id)
        .await
        .expect("B releasing A's device is not an error");
    assert_eq!(
        store.device(&imei).await.expect("device"),
        held_by(a.tenant.id, v1)
    );

    // Release by the owner; then B may claim it.
    store
        .release_device(&imei, a.tenant.id)
        .await
        .expect("A releases");
    assert_not_found(store.device(&imei).await, "released device");
    store
        .release_device(&imei, a.tenant.id)
        .await
        .expect("releasing a free device is a no-op");
    assert!(store
        .claim_device(&imei, b.tenant.id, v3)
        .await
        .expect("B claims the released device"));
    assert_eq!(
        store.device(&imei).await.expect("device"),
        held_by(b.tenant.id, v3)
    );
    let conflict = expect_conflict(
        store.claim_device(&imei, a.tenant.id, v2).await,
        "A claims B's device",
    );
    assert_eq!(conflict, Conflict::DeviceTaken(imei.to_string()));

    // Devices are independent of each other.
    let phone = device("phone-ab:12.x_Y");
    assert!(store
        .claim_device(&phone, a.tenant.id, v2)
        .await
        .expect("A claims another device"));
    assert_eq!(
        store.device(&phone).await.expect("phone").tenant_id,
        a.tenant.id
    );
    assert_eq!(
        store.device(&imei).await.expect("imei"),
        held_by(b.tenant.id, v3)
    );
}

/// Every lookup or change of something that does not exist is NotFound.
pub async fn unknown_ids_are_not_found(store: &dyn ControlStore) {
    let tenant = TenantId::new();
    let cell = CellId::new();
    assert_not_found(store.tenant(tenant).await, "tenant");
    assert_not_found(store.route(tenant).await, "route");
    assert_not_found(
        store.set_tenant_status(tenant, TenantStatus::Active).await,
        "set_tenant_status",
    );
    assert_not_found(store.delete_tenant(tenant).await, "delete_tenant");
    assert_not_found(store.user(UserId::new()).await, "user");
    assert_not_found(
        store.user_by_email(&email("ghost@example.com")).await,
        "user_by_email",
    );
    assert_not_found(store.cell(cell).await, "cell");
    assert_not_found(store.cell_by_name("no-such-cell").await, "cell_by_name");
    assert_not_found(
        store.set_cell_url(cell, "http://nowhere").await,
        "set_cell_url",
    );
    assert_not_found(
        store.authenticate_api_key(&random_hash()).await,
        "authenticate_api_key",
    );
    assert_not_found(
        store.revoke_api_key(tenant, ApiKeyId::new()).await,
        "revoke_api_key",
    );
    assert_not_found(store.device(&device("unknown-device")).await, "device");
    assert!(store.api_keys(tenant).await.expect("api keys").is_empty());
    store
        .release_device(&device("unknown-device"), tenant)
        .await
        .expect("releasing an unknown device is a no-op");
    assert!(store.tenants().await.expect("tenants").is_empty());
    assert!(store.cells().await.expect("cells").is_empty());
}

/// Three signups with one email at once: exactly one tenant is created.
/// (The futures run concurrently on one task; with a pooled backend their
/// queries are in flight at the same time.)
pub async fn concurrent_signups_with_one_email_admit_one(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let seeds = [
        tenant_seed(cell, "One", "race@example.com"),
        tenant_seed(cell, "Two", "race@example.com"),
        tenant_seed(cell, "Three", "race@example.com"),
    ];
    let signup = |seed: &TenantSeed| {
        store.create_tenant(seed.tenant.clone(), seed.owner.clone(), seed.key.clone())
    };
    let (r0, r1, r2) = tokio::join!(signup(&seeds[0]), signup(&seeds[1]), signup(&seeds[2]));

    let mut winners = Vec::new();
    for (seed, result) in seeds.iter().zip([r0, r1, r2]) {
        match result {
            Ok((tenant, _, _)) => winners.push(tenant.id),
            Err(StorageError::Conflict(Conflict::EmailTaken)) => {
                assert_not_found(store.tenant(seed.tenant.id).await, "losing tenant");
                assert_not_found(
                    store.authenticate_api_key(&seed.key.hash).await,
                    "losing tenant's key",
                );
            }
            Err(err) => panic!("unexpected error from a concurrent signup: {err:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one signup wins");
    let tenants = store.tenants().await.expect("tenants");
    assert_eq!(tenants.iter().map(|t| t.id).collect::<Vec<_>>(), winners);
    assert_eq!(
        store
            .user_by_email(&email("race@example.com"))
            .await
            .expect("the winner's owner")
            .user
            .tenant_id,
        winners[0]
    );
    assert_eq!(store.cell(cell).await.expect("cell").tenants, 1);
}

/// Concurrent claims of one device: exactly one call registers it
/// (`Ok(true)`); the holder's other calls get `Ok(false)`, other tenants
/// `DeviceTaken`.
pub async fn concurrent_claims_of_one_device_admit_one(store: &dyn ControlStore) {
    let cell = a_cell(store, "fly-iad-1").await;
    let a = tenant_seed(cell, "A", "a@example.com");
    let b = tenant_seed(cell, "B", "b@example.com");
    let c = tenant_seed(cell, "C", "c@example.com");
    for seed in [&a, &b, &c] {
        create(store, seed).await;
    }
    let imei = device("868683020000009");
    let claim = |tenant: TenantId| store.claim_device(&imei, tenant, VehicleId::new());
    let (a1, a2, b1, c1) = tokio::join!(
        claim(a.tenant.id),
        claim(a.tenant.id),
        claim(b.tenant.id),
        claim(c.tenant.id)
    );

    let holder = store.device(&imei).await.expect("registered").tenant_id;
    let mut registered = 0;
    for (tenant, result) in [
        (a.tenant.id, a1),
        (a.tenant.id, a2),
        (b.tenant.id, b1),
        (c.tenant.id, c1),
    ] {
        match result {
            Ok(true) => {
                assert_eq!(tenant, holder, "the registering call's tenant holds it");
                registered += 1;
            }
            Ok(false) => assert_eq!(tenant, holder, "only the holder is told `false`"),
            Err(StorageError::Conflict(Conflict::DeviceTaken(id))) => {
                assert_ne!(tenant, holder, "the holder is never refused");
                assert_eq!(id, imei.to_string());
            }
            Err(err) => panic!("unexpected error from a concurrent claim: {err:?}"),
        }
    }
    assert_eq!(registered, 1, "exactly one call registered the device");
}

/// A cell recorded while its provider makes it carries the provider's
/// progress and resource, and turns active with its URL; untouched fields
/// stay as they were.
pub async fn cells_record_provisioning_and_updates_merge(store: &dyn ControlStore) {
    let mut new = new_cell("fly-sin-1", "");
    new.status = CellStatus::Provisioning;
    let created = store.create_cell(new).await.expect("create cell");
    assert_eq!(created.status, CellStatus::Provisioning);
    assert_eq!(
        (created.resource.clone(), created.progress.clone()),
        (None, None)
    );
    assert_recent(created.updated_at, "updated_at");

    let progress = serde_json::json!({ "step": "booting", "percent": 40 });
    let resource = serde_json::json!({ "provider": "fly", "external_id": "app-1" });
    let during = store
        .update_cell(
            created.id,
            CellUpdate {
                progress: Some(progress.clone()),
                resource: Some(resource.clone()),
                last_error: Some(Some("503 from the provider; retrying".into())),
                ..CellUpdate::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(during.status, CellStatus::Provisioning);
    assert_eq!(during.progress, Some(progress));
    assert_eq!(during.resource, Some(resource.clone()));
    assert_eq!(
        during.last_error.as_deref(),
        Some("503 from the provider; retrying")
    );

    let ready = store
        .update_cell(
            created.id,
            CellUpdate {
                status: Some(CellStatus::Active),
                url: Some("http://10.0.0.7:4000".into()),
                last_error: Some(None),
                monthly_cost_cents: Some(40_000),
                capacity: Some(120),
                ..CellUpdate::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(ready.status, CellStatus::Active);
    assert_eq!(ready.url, "http://10.0.0.7:4000");
    assert_eq!(ready.resource, Some(resource), "left as it was");
    assert_eq!(ready.last_error, None, "cleared");
    assert_eq!(ready.monthly_cost_cents, 40_000);
    assert_eq!(ready.capacity, 120);
    assert_eq!(store.cell(created.id).await.expect("cell"), ready);

    assert_not_found(
        store
            .update_cell(CellId::new(), CellUpdate::default())
            .await,
        "cell",
    );
}

/// Tenants are listed by cell, and page by id with filters.
pub async fn tenants_list_by_cell_and_page_with_filters(store: &dyn ControlStore) {
    let one = a_cell(store, "fly-sin-1").await;
    let two = a_cell(store, "fly-sin-2").await;
    let mut ids = Vec::new();
    for (i, cell) in [one, two, one, one, two].into_iter().enumerate() {
        let seed = tenant_seed(cell, "Acme", &format!("owner{i}@example.com"));
        ids.push(seed.tenant.id);
        create(store, &seed).await;
    }
    store
        .set_tenant_status(ids[2], TenantStatus::Active)
        .await
        .expect("status");

    let on_one: Vec<_> = store
        .cell_tenants(one)
        .await
        .expect("cell tenants")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(on_one, vec![ids[0], ids[2], ids[3]]);
    assert!(store
        .cell_tenants(CellId::new())
        .await
        .expect("none")
        .is_empty());

    // Pages of two, in id order, until a short page.
    let mut seen = Vec::new();
    let mut filter = TenantFilter {
        limit: 2,
        ..TenantFilter::default()
    };
    loop {
        let page = store.tenant_placements(&filter).await.expect("page");
        seen.extend(page.iter().map(|p| (p.tenant.id, p.cell_id)));
        if page.len() < 2 {
            break;
        }
        filter.after = page.last().map(|p| p.tenant.id);
    }
    let mut expected: Vec<_> = ids
        .iter()
        .zip([one, two, one, one, two])
        .map(|(t, c)| (*t, c))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    let placed = store
        .tenant_placements(&TenantFilter {
            cell: Some(two),
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("by cell");
    assert_eq!(placed.len(), 2);
    assert!(placed
        .iter()
        .all(|p| p.cell == "fly-sin-2" && p.routing_version >= 1));

    let active = store
        .tenant_placements(&TenantFilter {
            status: Some(TenantStatus::Active),
            plan: Some(plan("professional")),
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("by status");
    assert_eq!(
        active.iter().map(|p| p.tenant.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    let none = store
        .tenant_placements(&TenantFilter {
            plan: Some(plan("hobby")),
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("by plan");
    assert!(none.is_empty());
}

/// A cell's usage report replaces each tenant's previous figures, shows in
/// the tenant's placement, skips tenants the control plane does not know,
/// and goes with the tenant.
pub async fn usage_reports_replace_and_show_in_placements(store: &dyn ControlStore) {
    let cell = a_cell(store, "hetzner-fsn1-1").await;
    let seed = tenant_seed(cell, "Acme", "owner@example.com");
    let tenant = seed.tenant.id;
    create(store, &seed).await;
    let listed = store
        .tenant_placements(&TenantFilter {
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("placements");
    assert_eq!(listed[0].usage, None, "no report yet");

    let figures = |n: u64| Usage {
        positions_stored: n,
        storage_bytes: n * 100,
        positions_ingested: n * 2,
        api_requests: n * 3,
    };
    let first = Utc::now() - chrono::Duration::hours(1);
    let unknown = TenantUsageRecord {
        tenant_id: TenantId::new(),
        usage: figures(9),
    };
    for (at, n) in [(first, 5), (Utc::now(), 7)] {
        store
            .record_usage(
                cell,
                at,
                &[
                    TenantUsageRecord {
                        tenant_id: tenant,
                        usage: figures(n),
                    },
                    unknown,
                ],
            )
            .await
            .expect("record usage");
    }
    let listed = store
        .tenant_placements(&TenantFilter {
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("placements");
    assert_eq!(listed.len(), 1, "the unknown tenant was not invented");
    let measured = listed[0].usage.expect("reported");
    assert_eq!(
        measured.usage,
        figures(7),
        "the newer report replaced the older"
    );
    assert_recent(measured.measured_at, "measured_at");

    store.delete_tenant(tenant).await.expect("delete tenant");
    store
        .record_usage(cell, Utc::now(), &[])
        .await
        .expect("an empty report is fine");
}

fn stripe_event(id: &str, created: chrono::DateTime<Utc>) -> webhost_storage::NewStripeEvent {
    webhost_storage::NewStripeEvent {
        id: id.into(),
        event_type: "invoice.payment_failed".into(),
        created,
        payload: serde_json::json!({ "id": id, "type": "invoice.payment_failed" }),
    }
}

fn apply_job(id: &str) -> webhost_storage::NewJob {
    webhost_storage::NewJob {
        id: webhost_domain::JobId::new(),
        queue: "billing".into(),
        kind: "apply_stripe_event".into(),
        payload: serde_json::json!({ "event_id": id }),
        unique_key: Some(format!("stripe_event:{id}")),
        max_attempts: 3,
        run_at: Utc::now(),
    }
}

async fn apply_jobs(store: &dyn ControlStore) -> Vec<webhost_storage::Job> {
    store
        .jobs(&webhost_storage::JobFilter {
            kind: Some("apply_stripe_event".into()),
            limit: 100,
            ..webhost_storage::JobFilter::default()
        })
        .await
        .expect("jobs")
        .data
}

/// A Stripe event is stored once with its job; a redelivery stores
/// nothing and queues nothing while the first job is unfinished or once
/// the event is processed; an unprocessed event whose job failed for good
/// gets a new job.
pub async fn stripe_events_are_stored_once_with_their_job(store: &dyn ControlStore) {
    let created = Utc::now() - chrono::TimeDelta::minutes(1);
    assert!(store
        .record_stripe_event(stripe_event("evt_1", created), apply_job("evt_1"))
        .await
        .expect("first delivery"));
    let stored = store.stripe_event("evt_1").await.expect("stored");
    assert_eq!(stored.event_type, "invoice.payment_failed");
    assert_eq!(stored.payload["id"], "evt_1");
    assert_eq!(stored.created.timestamp(), created.timestamp());
    assert_recent(stored.received_at, "received_at");
    assert_eq!(stored.processed_at, None);
    assert_eq!(apply_jobs(store).await.len(), 1);

    let mut other_body = stripe_event("evt_1", Utc::now());
    other_body.payload = serde_json::json!({ "forged": true });
    assert!(!store
        .record_stripe_event(other_body, apply_job("evt_1"))
        .await
        .expect("redelivery"));
    assert_eq!(
        store.stripe_event("evt_1").await.expect("stored").payload,
        stored.payload,
        "the first body stays"
    );
    assert_eq!(apply_jobs(store).await.len(), 1, "the job is unfinished");

    // The job fails for good; a redelivery gives the event another try.
    let job = store
        .claim("billing", 10, chrono::TimeDelta::minutes(1), Utc::now())
        .await
        .expect("claim")
        .pop()
        .expect("the job");
    store
        .fail(job.run(), "boom", None)
        .await
        .expect("fail for good");
    assert!(!store
        .record_stripe_event(stripe_event("evt_1", created), apply_job("evt_1"))
        .await
        .expect("redelivery"));
    assert_eq!(apply_jobs(store).await.len(), 2, "retried");

    let at = Utc::now();
    store
        .mark_stripe_event_processed("evt_1", at)
        .await
        .expect("mark");
    store
        .mark_stripe_event_processed("evt_1", at + chrono::TimeDelta::hours(1))
        .await
        .expect("mark again");
    let processed = store.stripe_event("evt_1").await.expect("stored");
    assert_eq!(
        processed.processed_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis()),
        "the first mark stays"
    );
    let queued = store
        .claim("billing", 10, chrono::TimeDelta::minutes(1), Utc::now())
        .await
        .expect("claim");
    for job in queued {
        store.complete(job.run()).await.expect("complete");
    }
    assert!(!store
        .record_stripe_event(stripe_event("evt_1", created), apply_job("evt_1"))
        .await
        .expect("redelivery"));
    assert_eq!(
        apply_jobs(store).await.len(),
        2,
        "processed: nothing queued"
    );

    assert_not_found(store.stripe_event("evt_unknown").await, "unknown event");
    assert_not_found(
        store
            .mark_stripe_event_processed("evt_unknown", Utc::now())
            .await,
        "marking an unknown event",
    );
}

/// Payment events move a tenant's billing state and status as the policy
/// says, in order of their creation; Stripe ids find the tenant; the
/// placements list shows it all.
pub async fn billing_state_follows_payments_and_shows_in_placements(store: &dyn ControlStore) {
    use webhost_storage::{BillingSuspension, StripeSubscriptionUpdate, TenantBilling};

    let cell = a_cell(store, "fly-iad-1").await;
    let seed = tenant_seed(cell, "Billing Co", "billing@example.com");
    let other = tenant_seed(cell, "Other Co", "other@example.com");
    create(store, &seed).await;
    create(store, &other).await;
    let tenant = seed.tenant.id;
    store
        .set_tenant_status(tenant, TenantStatus::Active)
        .await
        .expect("active");
    store
        .set_tenant_status(other.tenant.id, TenantStatus::Active)
        .await
        .expect("active");
    assert_eq!(
        store.tenant_billing(tenant).await.expect("billing"),
        TenantBilling::default()
    );

    let recorded = store
        .record_stripe_subscription(
            tenant,
            StripeSubscriptionUpdate {
                customer_id: Some("cus_1".into()),
                subscription_id: Some("sub_1".into()),
                status: Some("active".into()),
                plan_wanted: Some(Some(plan("business"))),
            },
        )
        .await
        .expect("record");
    assert_eq!(recorded.stripe_customer_id.as_deref(), Some("cus_1"));
    assert_eq!(recorded.plan_wanted, Some(plan("business")));
    assert_eq!(
        store
            .tenant_by_stripe_customer("cus_1")
            .await
            .expect("by customer"),
        tenant
    );
    assert_not_found(
        store.tenant_by_stripe_customer("cus_nobody").await,
        "unknown customer",
    );
    // None leaves fields alone; Some(None) clears the wanted plan.
    let kept = store
        .record_stripe_subscription(
            tenant,
            StripeSubscriptionUpdate {
                status: Some("past_due".into()),
                plan_wanted: Some(None),
                ..StripeSubscriptionUpdate::default()
            },
        )
        .await
        .expect("record");
    assert_eq!(kept.stripe_subscription_id.as_deref(), Some("sub_1"));
    assert_eq!(kept.subscription_status.as_deref(), Some("past_due"));
    assert_eq!(kept.plan_wanted, None);

    let t0 = Utc::now() - chrono::TimeDelta::days(10);
    let failed = store
        .record_payment_failed(tenant, t0)
        .await
        .expect("failed");
    assert_eq!(
        failed.past_due_since.map(|t| t.timestamp()),
        Some(t0.timestamp())
    );
    let again = store
        .record_payment_failed(tenant, t0 + chrono::TimeDelta::days(1))
        .await
        .expect("failed again");
    assert_eq!(
        again.past_due_since.map(|t| t.timestamp()),
        Some(t0.timestamp()),
        "the earliest failure counts"
    );
    assert_eq!(
        store
            .overdue_tenants(t0 + chrono::TimeDelta::days(2))
            .await
            .expect("overdue"),
        vec![tenant]
    );
    assert!(store
        .overdue_tenants(t0 - chrono::TimeDelta::days(1))
        .await
        .expect("overdue")
        .is_empty());

    assert!(store
        .suspend_for_billing(tenant, BillingSuspension::NonPayment)
        .await
        .expect("suspend"));
    assert!(!store
        .suspend_for_billing(tenant, BillingSuspension::NonPayment)
        .await
        .expect("suspend twice"));
    assert_eq!(
        store.route(tenant).await.expect("route").tenant_status,
        TenantStatus::Suspended
    );
    assert!(
        store
            .overdue_tenants(Utc::now())
            .await
            .expect("overdue")
            .is_empty(),
        "a suspended tenant is not overdue again"
    );

    // A payment older than the last one applied changes nothing.
    let stale = store
        .record_payment_succeeded(tenant, t0 - chrono::TimeDelta::days(1))
        .await
        .expect("stale paid");
    assert!(stale.past_due_since.is_some());
    assert_eq!(
        store.tenant(tenant).await.expect("tenant").status,
        TenantStatus::Suspended
    );
    let paid = store
        .record_payment_succeeded(tenant, t0 + chrono::TimeDelta::days(3))
        .await
        .expect("paid");
    assert_eq!(paid.past_due_since, None);
    assert_eq!(paid.suspended_for, None);
    assert_eq!(
        store.tenant(tenant).await.expect("tenant").status,
        TenantStatus::Active,
        "suspended for non-payment: lifted"
    );
    let late_failure = store
        .record_payment_failed(tenant, t0 + chrono::TimeDelta::days(2))
        .await
        .expect("late failure");
    assert_eq!(late_failure.past_due_since, None, "older than the payment");

    // A suspension for an ended subscription is not lifted by a payment.
    assert!(store
        .suspend_for_billing(tenant, BillingSuspension::SubscriptionEnded)
        .await
        .expect("suspend"));
    store
        .record_payment_succeeded(tenant, t0 + chrono::TimeDelta::days(4))
        .await
        .expect("paid");
    assert_eq!(
        store.tenant(tenant).await.expect("tenant").status,
        TenantStatus::Suspended
    );

    let rows = store
        .tenant_placements(&TenantFilter {
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .expect("placements");
    let mine = rows.iter().find(|r| r.tenant.id == tenant).expect("listed");
    let billing = mine.billing.as_ref().expect("billing shown");
    assert_eq!(billing.stripe_customer_id.as_deref(), Some("cus_1"));
    assert_eq!(
        billing.suspended_for,
        Some(BillingSuspension::SubscriptionEnded)
    );
    assert!(billing.updated_at.is_some());
    let theirs = rows
        .iter()
        .find(|r| r.tenant.id == other.tenant.id)
        .expect("listed");
    assert_eq!(theirs.billing, None, "nothing heard of the other tenant");

    // A late event about the ended subscription lifts nothing; a new
    // active subscription does.
    let ended = |id: &str| StripeSubscriptionUpdate {
        subscription_id: Some(id.into()),
        status: Some("active".into()),
        ..StripeSubscriptionUpdate::default()
    };
    store
        .record_stripe_subscription(tenant, ended("sub_1"))
        .await
        .expect("late update");
    assert_eq!(
        store.tenant(tenant).await.expect("tenant").status,
        TenantStatus::Suspended
    );
    let resumed = store
        .record_stripe_subscription(tenant, ended("sub_2"))
        .await
        .expect("new subscription");
    assert_eq!(resumed.suspended_for, None);
    assert_eq!(resumed.stripe_subscription_id.as_deref(), Some("sub_2"));
    assert_eq!(
        store.tenant(tenant).await.expect("tenant").status,
        TenantStatus::Active
    );

    let nobody = TenantId::new();
    assert_not_found(
        store.tenant_billing(nobody).await,
        "billing of an unknown tenant",
    );
    assert_not_found(
        store.record_payment_failed(nobody, Utc::now()).await,
        "failure of an unknown tenant",
    );
    assert_not_found(
        store
            .suspend_for_billing(nobody, BillingSuspension::NonPayment)
            .await,
        "suspending an unknown tenant",
    );
    // Deleting the tenant removes its billing.
    store.delete_tenant(tenant).await.expect("delete");
    assert_not_found(
        store.tenant_by_stripe_customer("cus_1").await,
        "a deleted tenant's customer",
    );
}

/// Times the stories hand the store, at the precision both engines keep.
fn micros(at: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

/// A tenant routed to a cell, and a second cell it can move to.
async fn a_tenant_and_two_cells(store: &dyn ControlStore) -> (TenantId, CellId, CellId) {
    let from = a_cell(store, "fly-iad-1").await;
    let to = a_cell(store, "fly-iad-2").await;
    let seed = tenant_seed(from, "Moving GmbH", "moving@example.com");
    create(store, &seed).await;
    (seed.tenant.id, from, to)
}

/// freeze_route sets `frozen_until` (version and cell unchanged) and the
/// route reports it; unfreeze_route clears it, and is a no-op when unfrozen.
pub async fn routes_freeze_and_unfreeze(store: &dyn ControlStore) {
    let (tenant, cell, _) = a_tenant_and_two_cells(store).await;
    let before = store.route(tenant).await.expect("route");
    assert_eq!(before.frozen_until, None, "a new route is not frozen");
    assert!(!before.is_frozen(Utc::now()));

    let until = micros(Utc::now() + chrono::Duration::seconds(30));
    let frozen = store.freeze_route(tenant, until).await.expect("freeze");
    assert_eq!(frozen.frozen_until, Some(until));
    assert_eq!((frozen.cell_id, frozen.version), (cell, before.version));
    assert!(frozen.is_frozen(Utc::now()));
    assert!(!frozen.is_frozen(until), "the freeze ends at frozen_until");
    assert_eq!(store.route(tenant).await.expect("route"), frozen);

    // Freezing again moves the deadline.
    let later = until + chrono::Duration::seconds(5);
    assert_eq!(
        store
            .freeze_route(tenant, later)
            .await
            .expect("refreeze")
            .frozen_until,
        Some(later)
    );

    let lifted = store.unfreeze_route(tenant).await.expect("unfreeze");
    assert_eq!(lifted, before, "unfreezing restores the route as it was");
    assert_eq!(store.route(tenant).await.expect("route"), before);
    assert_eq!(
        store.unfreeze_route(tenant).await.expect("unfreeze twice"),
        before
    );

    assert_not_found(
        store.freeze_route(TenantId::new(), until).await,
        "freezing an unknown tenant",
    );
    assert_not_found(
        store.unfreeze_route(TenantId::new()).await,
        "unfreezing an unknown tenant",
    );
}

/// switch_route changes the entry only from the expected cell and version
/// while frozen; a repeat answers AlreadySwitched; a refusal changes
/// nothing.
pub async fn switch_route_is_a_compare_and_set(store: &dyn ControlStore) {
    let (tenant, from, to) = a_tenant_and_two_cells(store).await;
    let original = store.route(tenant).await.expect("route");
    let now = Utc::now();

    // Not frozen.
    assert_eq!(
        store
            .switch_route(tenant, from, original.version, to, now)
            .await
            .expect("switch unfrozen"),
        SwitchOutcome::Refused {
            version: original.version,
            frozen: false
        }
    );

    // A freeze that has expired.
    store
        .freeze_route(tenant, now - chrono::Duration::seconds(1))
        .await
        .expect("freeze in the past");
    assert_eq!(
        store
            .switch_route(tenant, from, original.version, to, now)
            .await
            .expect("switch after the freeze expired"),
        SwitchOutcome::Refused {
            version: original.version,
            frozen: false
        }
    );
    let until = now + chrono::Duration::seconds(60);
    store.freeze_route(tenant, until).await.expect("freeze");
    assert_eq!(
        store
            .switch_route(tenant, from, original.version, to, until)
            .await
            .expect("switch at the deadline"),
        SwitchOutcome::Refused {
            version: original.version,
            frozen: false
        },
        "a freeze is over at frozen_until"
    );

    // Frozen, but the wrong version or the wrong cell.
    assert_eq!(
        store
            .switch_route(tenant, from, original.version + 1, to, now)
            .await
            .expect("switch at the wrong version"),
        SwitchOutcome::Refused {
            version: original.version,
            frozen: true
        }
    );
    assert_eq!(
        store
            .switch_route(tenant, CellId::new(), original.version, to, now)
            .await
            .expect("switch from the wrong cell"),
        SwitchOutcome::Refused {
            version: original.version,
            frozen: true
        }
    );
    let unchanged = store.route(tenant).await.expect("route");
    assert_eq!(
        (unchanged.cell_id, unchanged.version),
        (from, original.version),
        "a refused switch changes nothing"
    );

    // The real thing: the new cell at version + 1, still frozen.
    let switched = store
        .switch_route(tenant, from, original.version, to, now)
        .await
        .expect("switch");
    assert_eq!(
        switched,
        SwitchOutcome::Switched {
            version: original.version + 1
        }
    );
    let route = store.route(tenant).await.expect("route after the switch");
    assert_eq!(route.cell_id, to);
    assert_eq!(route.cell_url, "http://fly-iad-2.internal:8080");
    assert_eq!(route.version, original.version + 1);
    assert!(route.is_frozen(now), "the switch leaves the freeze on");
    assert_eq!(store.cell(from).await.expect("source").tenants, 0);
    assert_eq!(store.cell(to).await.expect("target").tenants, 1);

    // A repeat (a retry after a lost answer) is recognised, and changes
    // nothing, frozen or not.
    let again = SwitchOutcome::AlreadySwitched {
        version: original.version + 1,
    };
    assert_eq!(
        store
            .switch_route(tenant, from, original.version, to, now)
            .await
            .expect("switch twice"),
        again
    );
    store.unfreeze_route(tenant).await.expect("unfreeze");
    assert_eq!(
        store
            .switch_route(tenant, from, original.version, to, Utc::now())
            .await
            .expect("switch twice, unfrozen"),
        again
    );
    let after = store.route(tenant).await.expect("route");
    assert_eq!((after.cell_id, after.version), (to, original.version + 1));
    assert_eq!(after.frozen_until, None);

    assert_not_found(
        store.switch_route(TenantId::new(), from, 1, to, now).await,
        "switching an unknown tenant",
    );
}

fn a_move(
    tenant: TenantId,
    source: CellId,
    created_at: chrono::DateTime<Utc>,
    phase: &str,
) -> TenantMove {
    TenantMove {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        source_cell: source,
        target_cell: None,
        phase: phase.into(),
        finished: false,
        state: serde_json::json!({ "phase": phase, "copied": { "vehicles": 0 } }),
        created_at: micros(created_at),
        updated_at: micros(created_at),
    }
}

/// Moves round-trip; a tenant has at most one unfinished move (the second
/// is `MoveInProgress` naming the first, and stores nothing); a finished
/// move blocks nothing; moves list newest first.
pub async fn moves_round_trip_with_one_unfinished_per_tenant(store: &dyn ControlStore) {
    let (tenant, from, to) = a_tenant_and_two_cells(store).await;
    let other = tenant_seed(from, "Other GmbH", "other@example.com");
    create(store, &other).await;
    assert_eq!(store.active_move(tenant).await.expect("none yet"), None);
    assert!(store.moves(10).await.expect("moves").is_empty());

    let start = Utc::now() - chrono::Duration::seconds(60);
    let first = a_move(tenant, from, start, "preparing");
    let created = store.create_move(first.clone()).await.expect("create move");
    assert_eq!(created, first);
    assert_eq!(store.tenant_move(first.id).await.expect("read"), first);
    assert_eq!(
        store.active_move(tenant).await.expect("active"),
        Some(first.clone())
    );

    // A second unfinished move of the same tenant.
    let second = a_move(
        tenant,
        from,
        start + chrono::Duration::seconds(1),
        "preparing",
    );
    assert_eq!(
        expect_conflict(store.create_move(second.clone()).await, "second move"),
        Conflict::MoveInProgress(first.id)
    );
    assert_not_found(store.tenant_move(second.id).await, "the refused move");

    // Another tenant moves independently.
    let others = a_move(
        other.tenant.id,
        from,
        start + chrono::Duration::seconds(2),
        "preparing",
    );
    store
        .create_move(others.clone())
        .await
        .expect("other tenant's move");

    // Progress is saved.
    let mut progressed = first.clone();
    progressed.phase = "copying".into();
    progressed.target_cell = Some(to);
    progressed.state = serde_json::json!({ "phase": "copying", "cursor": "abc" });
    progressed.updated_at = micros(start + chrono::Duration::seconds(10));
    store.save_move(&progressed).await.expect("save");
    assert_eq!(store.tenant_move(first.id).await.expect("read"), progressed);
    assert_eq!(
        store.active_move(tenant).await.expect("active"),
        Some(progressed.clone())
    );

    // Once finished, it blocks nothing.
    let mut done = progressed.clone();
    done.phase = "done".into();
    done.finished = true;
    store.save_move(&done).await.expect("finish");
    assert_eq!(store.active_move(tenant).await.expect("active"), None);
    let third = a_move(
        tenant,
        to,
        start + chrono::Duration::seconds(3),
        "preparing",
    );
    store
        .create_move(third.clone())
        .await
        .expect("a new move after the finished one");
    assert_eq!(
        store.active_move(tenant).await.expect("active"),
        Some(third.clone())
    );

    // Re-opening the finished move while another is unfinished is refused.
    assert_eq!(
        expect_conflict(store.save_move(&progressed).await, "reopening"),
        Conflict::MoveInProgress(third.id)
    );
    assert_eq!(store.tenant_move(first.id).await.expect("read"), done);

    let listed: Vec<uuid::Uuid> = store
        .moves(10)
        .await
        .expect("moves")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![third.id, others.id, first.id], "newest first");
    assert_eq!(store.moves(2).await.expect("moves").len(), 2);

    assert_not_found(
        store.tenant_move(uuid::Uuid::now_v7()).await,
        "unknown move",
    );
    assert_not_found(
        store
            .save_move(&a_move(tenant, from, start, "copying"))
            .await,
        "saving an unknown move",
    );
}

/// Concurrent creations of a tenant's move admit exactly one.
pub async fn concurrent_moves_of_one_tenant_admit_one(store: &dyn ControlStore) {
    let (tenant, from, _) = a_tenant_and_two_cells(store).await;
    let now = Utc::now();
    let tries = [
        a_move(tenant, from, now, "preparing"),
        a_move(tenant, from, now, "preparing"),
        a_move(tenant, from, now, "preparing"),
    ];
    let (r0, r1, r2) = tokio::join!(
        store.create_move(tries[0].clone()),
        store.create_move(tries[1].clone()),
        store.create_move(tries[2].clone())
    );
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for result in [r0, r1, r2] {
        match result {
            Ok(created) => winners.push(created.id),
            Err(StorageError::Conflict(Conflict::MoveInProgress(id))) => conflicts.push(id),
            Err(err) => panic!("unexpected error from a concurrent move: {err:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one move is created");
    assert_eq!(conflicts, vec![winners[0]; 2], "the losers name the winner");
    assert_eq!(store.moves(10).await.expect("moves").len(), 1);
}
