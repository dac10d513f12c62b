//! Builders for the records the stories store, and assertions on outcomes.

use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};
use webhost_domain::{
    ApiKeyId, Attributes, CellId, CompanyName, CountryCode, DeviceId, Email, PlanName, PoolName,
    ProviderKind, RegionCode, ShortText, TenantId, UserId, VehicleId, VehicleName,
};
use webhost_storage::{
    CellTenant, Conflict, NewApiKey, NewCell, NewTenant, NewUser, NewVehicle, StorageError,
    StorageResult, UserRole,
};

/// A password hash as the application would store it (argon2id PHC). The
/// store treats it as an opaque string.
pub const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

#[track_caller]
pub fn assert_not_found<T: Debug>(result: StorageResult<T>, what: &str) {
    match result {
        Err(StorageError::NotFound(_)) => {}
        other => panic!("{what}: expected StorageError::NotFound, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_conflict<T: Debug>(result: StorageResult<T>, what: &str) -> Conflict {
    match result {
        Err(StorageError::Conflict(conflict)) => conflict,
        other => panic!("{what}: expected StorageError::Conflict, got {other:?}"),
    }
}

/// Timestamps a store sets must be "now", give or take clock skew between
/// this process and a database server.
#[track_caller]
pub fn assert_recent(at: DateTime<Utc>, what: &str) {
    let now = Utc::now();
    let skew = Duration::minutes(5);
    assert!(
        at > now - skew && at < now + skew,
        "{what}: {at} is not close to now ({now})"
    );
}

/// A random 32-byte API key hash.
pub fn random_hash() -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    hash[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    hash
}

pub fn email(raw: &str) -> Email {
    Email::parse(raw).expect("test email is valid")
}

pub fn device(raw: &str) -> DeviceId {
    DeviceId::parse(raw).expect("test device id is valid")
}

pub fn text(raw: &str) -> ShortText {
    ShortText::parse("text", raw).expect("test short text is valid")
}

pub fn vehicle_name(raw: &str) -> VehicleName {
    VehicleName::parse(raw).expect("test vehicle name is valid")
}

pub fn attributes(value: serde_json::Value) -> Attributes {
    Attributes::parse(value).expect("test attributes are a JSON object")
}

pub fn plan(raw: &str) -> PlanName {
    PlanName::parse(raw).expect("test plan name is valid")
}

pub fn region(raw: &str) -> RegionCode {
    RegionCode::parse(raw).expect("test region is valid")
}

pub fn new_cell(name: &str, url: &str) -> NewCell {
    NewCell {
        status: webhost_storage::CellStatus::Active,
        id: CellId::new(),
        name: name.to_string(),
        pool: PoolName::parse("fly").expect("valid pool"),
        region: region("iad"),
        provider: ProviderKind::Fly,
        url: url.to_string(),
        capacity: 50,
        monthly_cost_cents: 12_345,
        template: Some("fly-regional".into()),
    }
}

/// Everything `create_tenant` takes, with fresh ids and a random key hash.
#[derive(Clone, Debug)]
pub struct TenantSeed {
    pub tenant: NewTenant,
    pub owner: NewUser,
    pub key: NewApiKey,
}

pub fn tenant_seed(cell: CellId, company: &str, owner_email: &str) -> TenantSeed {
    let id = TenantId::new();
    TenantSeed {
        tenant: NewTenant {
            id,
            company: CompanyName::parse(company).expect("test company is valid"),
            plan: plan("professional"),
            country: CountryCode::parse("SG").expect("valid country"),
            pool: PoolName::parse("fly").expect("valid pool"),
            region: region("sin"),
            regions: vec![region("sin"), region("fra")],
            cell_id: cell,
        },
        owner: NewUser {
            id: UserId::new(),
            email: email(owner_email),
            role: UserRole::Owner,
            password_hash: PASSWORD_HASH.to_string(),
        },
        key: new_api_key(id, "default"),
    }
}

pub fn new_api_key(tenant: TenantId, name: &str) -> NewApiKey {
    let id = ApiKeyId::new();
    NewApiKey {
        id,
        tenant_id: tenant,
        name: name.to_string(),
        prefix: format!("wh_{}", &id.as_uuid().simple().to_string()[24..]),
        hash: random_hash(),
    }
}

pub fn cell_tenant(max_vehicles: u32) -> CellTenant {
    CellTenant {
        id: TenantId::new(),
        plan: plan("starter"),
        max_vehicles,
        retention_days: 90,
    }
}

/// A vehicle with only a name: no device, plate or group, no attributes.
pub fn bare_vehicle(name: &str) -> NewVehicle {
    NewVehicle {
        id: VehicleId::new(),
        name: vehicle_name(name),
        device_id: None,
        plate: None,
        group: None,
        attributes: Attributes::default(),
    }
}

pub fn vehicle_with_device(name: &str, device_id: &str) -> NewVehicle {
    NewVehicle {
        device_id: Some(device(device_id)),
        ..bare_vehicle(name)
    }
}
