//! The control plane's data: tenants, users, API keys, cells, the routing
//! table, the global device registry and the catalog.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use webhost_domain::{
    ApiKeyId, Catalog, CellId, CompanyName, CountryCode, DeviceId, Email, PlanName, PoolName,
    ProviderKind, RegionCode, TenantId, Usage, UserId, VehicleId,
};

use crate::StorageResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Control-plane records exist; the cell has not confirmed yet.
    Provisioning,
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "provisioning" => Some(Self::Provisioning),
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub company: CompanyName,
    pub plan: PlanName,
    pub country: CountryCode,
    pub pool: PoolName,
    pub region: RegionCode,
    pub regions: Vec<RegionCode>,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct NewTenant {
    pub id: TenantId,
    pub company: CompanyName,
    pub plan: PlanName,
    pub country: CountryCode,
    pub pool: PoolName,
    pub region: RegionCode,
    pub regions: Vec<RegionCode>,
    /// The cell the routing table points at from the start.
    pub cell_id: CellId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    Owner,
    Member,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "owner" => Some(Self::Owner),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub role: UserRole,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub role: UserRole,
    /// A PHC string (argon2id); the password itself never reaches storage.
    pub password_hash: String,
}

/// A user with what login needs to check.
#[derive(Clone, Debug)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The first characters of the secret, so people can tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub prefix: String,
    /// SHA-256 of the whole secret.
    pub hash: [u8; 32],
}

/// Who an API key speaks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyPrincipal {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Recorded, and being made by its provider; tenants may already be
    /// placed on it (they wait, `provisioning`, until it is active).
    Provisioning,
    /// Up, health-checked, takes tenants.
    Active,
    /// Takes no new tenants.
    Draining,
    /// Its provider could not make it; `last_error` says why.
    Failed,
    /// Destroyed; kept for the record.
    Retired,
}

impl CellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Failed => "failed",
            Self::Retired => "retired",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "provisioning" => Some(Self::Provisioning),
            "active" => Some(Self::Active),
            "draining" => Some(Self::Draining),
            "failed" => Some(Self::Failed),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub id: CellId,
    pub name: String,
    pub pool: PoolName,
    pub region: RegionCode,
    pub provider: ProviderKind,
    /// Base URL of the cell's HTTP API.
    pub url: String,
    pub status: CellStatus,
    pub capacity: u32,
    pub monthly_cost_cents: i64,
    /// Tenants currently routed to this cell.
    pub tenants: u32,
    /// What the provider made (its own ids), once it has made something.
    pub resource: Option<serde_json::Value>,
    /// The provider's last progress report while provisioning.
    pub progress: Option<serde_json::Value>,
    pub last_error: Option<String>,
    /// The catalog template it was made from.
    pub template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Cell {
    /// Tenant slots left.
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.tenants)
    }
}

/// A change to a cell's record; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct CellUpdate {
    pub status: Option<CellStatus>,
    pub url: Option<String>,
    pub resource: Option<serde_json::Value>,
    pub progress: Option<serde_json::Value>,
    /// `Some(None)` clears it.
    pub last_error: Option<Option<String>>,
    pub monthly_cost_cents: Option<i64>,
    /// Tenants it may hold (a resized server, a benchmark).
    pub capacity: Option<u32>,
}

/// Which tenants an operator lists, and from where (keyset on the id,
/// which is time-ordered).
#[derive(Clone, Debug, Default)]
pub struct TenantFilter {
    pub plan: Option<PlanName>,
    pub status: Option<TenantStatus>,
    pub pool: Option<PoolName>,
    pub region: Option<RegionCode>,
    pub cell: Option<CellId>,
    /// Tenants with a greater id.
    pub after: Option<TenantId>,
    pub limit: u32,
}

/// A tenant with where it lives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantPlacement {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub cell_id: CellId,
    pub cell: String,
    pub routing_version: i64,
    /// What its cell last reported of it; `None` before the first report.
    pub usage: Option<MeasuredUsage>,
    /// Its billing state; `None` while Stripe has said nothing of it.
    pub billing: Option<TenantBilling>,
}

/// A tenant's usage and when its cell measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MeasuredUsage {
    #[serde(flatten)]
    pub usage: Usage,
    pub measured_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct NewCell {
    pub id: CellId,
    pub name: String,
    pub pool: PoolName,
    pub region: RegionCode,
    pub provider: ProviderKind,
    pub url: String,
    pub status: CellStatus,
    pub capacity: u32,
    pub monthly_cost_cents: i64,
    /// The catalog template it is made from (`None`: recorded before cells
    /// remembered it, or registered by the operator).
    pub template: Option<String>,
}

/// A routing-table entry: where a tenant's requests go.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    pub tenant_id: TenantId,
    pub cell_id: CellId,
    pub cell_url: String,
    /// Bumped whenever the tenant moves to another cell, so a cached entry
    /// can be checked. (The tenant's status is read live, not versioned.)
    pub version: i64,
    pub tenant_status: TenantStatus,
    /// Set while a move freezes the tenant's writes (SPEC §6): the edges
    /// hold its writes until this passes or the freeze is lifted.
    pub frozen_until: Option<DateTime<Utc>>,
}

impl Route {
    /// Whether the tenant's writes are held at `now`.
    pub fn is_frozen(&self, now: DateTime<Utc>) -> bool {
        self.frozen_until.is_some_and(|until| until > now)
    }
}

/// What [`ControlStore::switch_route`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SwitchOutcome {
    /// The entry pointed at the expected cell and version, frozen and the
    /// freeze not expired: it now points at the new cell at `version`.
    Switched { version: i64 },
    /// The entry already points at the new cell, at `version` (an earlier
    /// try did it).
    AlreadySwitched { version: i64 },
    /// The entry is not as expected (another version, another cell, not
    /// frozen or the freeze expired): nothing changed.
    Refused { version: i64, frozen: bool },
}

/// A tenant move as the control plane keeps it: the `webhost-move` state
/// (JSON) and what the operator lists and filters by.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantMove {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub source_cell: CellId,
    pub target_cell: Option<CellId>,
    /// `webhost_move::Phase` in words (`copying`, `done`, …).
    pub phase: String,
    /// Finished: done, aborted or rolled back.
    pub finished: bool,
    pub state: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRegistration {
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub vehicle_id: VehicleId,
}

/// The little the edge reads of the control plane's data: who an API key
/// speaks for, where a tenant lives, whose a device is. A read replica or
/// a cache can serve it; nothing here writes.
#[async_trait]
pub trait RoutingDirectory: Send + Sync + 'static {
    /// Cheap round trip for health checks.
    async fn ping(&self) -> StorageResult<()>;
    /// `NotFound` unless a key with this hash exists and is not revoked.
    async fn authenticate_api_key(&self, hash: &[u8; 32]) -> StorageResult<ApiKeyPrincipal>;
    async fn route(&self, tenant: TenantId) -> StorageResult<Route>;
    async fn device(&self, device: &DeviceId) -> StorageResult<DeviceRegistration>;
}

#[async_trait]
pub trait ControlStore: RoutingDirectory + crate::JobStore {
    /// The current catalog (seeded with `Catalog::default_seed` on first open).
    async fn catalog(&self) -> StorageResult<Catalog>;
    /// Stores a new catalog version; the previous ones stay for the record.
    async fn save_catalog(&self, catalog: &Catalog) -> StorageResult<()>;

    async fn create_cell(&self, cell: NewCell) -> StorageResult<Cell>;
    async fn cells(&self) -> StorageResult<Vec<Cell>>;
    async fn cell(&self, id: CellId) -> StorageResult<Cell>;
    async fn cell_by_name(&self, name: &str) -> StorageResult<Cell>;
    /// A local cell gets a new port on every start.
    async fn set_cell_url(&self, id: CellId, url: &str) -> StorageResult<()>;
    /// Applies `update` and answers the cell as it is now.
    async fn update_cell(&self, id: CellId, update: CellUpdate) -> StorageResult<Cell>;
    /// The tenants routed to `cell`, oldest first.
    async fn cell_tenants(&self, cell: CellId) -> StorageResult<Vec<Tenant>>;

    /// Creates the tenant, its first user and API key and its route, all or
    /// nothing. `Conflict::EmailTaken` if the email is in use.
    async fn create_tenant(
        &self,
        tenant: NewTenant,
        owner: NewUser,
        key: NewApiKey,
    ) -> StorageResult<(Tenant, User, ApiKey)>;
    async fn set_tenant_status(&self, id: TenantId, status: TenantStatus) -> StorageResult<()>;
    /// Records a plan change with the new plan's placement (pool, primary
    /// region, regions); the route is the move's to change.
    async fn set_tenant_plan(
        &self,
        id: TenantId,
        plan: &PlanName,
        placement: &webhost_domain::Placement,
    ) -> StorageResult<()>;
    /// Removes a tenant and everything the control plane holds for it.
    async fn delete_tenant(&self, id: TenantId) -> StorageResult<()>;
    async fn tenant(&self, id: TenantId) -> StorageResult<Tenant>;
    async fn tenants(&self) -> StorageResult<Vec<Tenant>>;
    /// One page of tenants with their placement, by ascending id.
    async fn tenant_placements(&self, filter: &TenantFilter)
        -> StorageResult<Vec<TenantPlacement>>;
    /// Records what cell `cell` measured of its tenants at `measured_at`,
    /// replacing their previous figures. Tenants the control plane does not
    /// know are skipped.
    async fn record_usage(
        &self,
        cell: CellId,
        measured_at: DateTime<Utc>,
        records: &[crate::TenantUsageRecord],
    ) -> StorageResult<()>;

    async fn user_by_email(&self, email: &Email) -> StorageResult<UserCredentials>;
    async fn user(&self, id: UserId) -> StorageResult<User>;

    async fn create_api_key(&self, key: NewApiKey) -> StorageResult<ApiKey>;
    /// The tenant's keys, newest first, revoked ones included.
    async fn api_keys(&self, tenant: TenantId) -> StorageResult<Vec<ApiKey>>;
    /// `NotFound` for another tenant's key or one already revoked.
    async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StorageResult<()>;

    /// Registers `device` for the tenant's vehicle. `Ok(true)` when this call
    /// registered it, `Ok(false)` when the tenant already held it (left as
    /// it was), `Conflict::DeviceTaken` when another tenant holds it. Only a
    /// caller that got `true` may undo its claim.
    async fn claim_device(
        &self,
        device: &DeviceId,
        tenant: TenantId,
        vehicle: VehicleId,
    ) -> StorageResult<bool>;
    /// Frees `device` if this tenant holds it; a no-op otherwise.
    async fn release_device(&self, device: &DeviceId, tenant: TenantId) -> StorageResult<()>;

    /// Holds the tenant's writes at the edges until `until` (or
    /// `unfreeze_route`): sets the route's `frozen_until`, version
    /// unchanged. Answers the route as it is now.
    async fn freeze_route(&self, tenant: TenantId, until: DateTime<Utc>) -> StorageResult<Route>;
    /// Lifts a freeze (a no-op on an unfrozen route); answers the route.
    async fn unfreeze_route(&self, tenant: TenantId) -> StorageResult<Route>;
    /// Compare-and-set of the routing entry (SPEC §6 step 6): from
    /// (`from_cell`, `from_version`, frozen past `now`) to `to_cell` at
    /// version + 1, still frozen, in one statement.
    async fn switch_route(
        &self,
        tenant: TenantId,
        from_cell: CellId,
        from_version: i64,
        to_cell: CellId,
        now: DateTime<Utc>,
    ) -> StorageResult<SwitchOutcome>;

    /// Records a new move; `Conflict::MoveInProgress` while another move of
    /// the tenant is unfinished.
    async fn create_move(&self, new: TenantMove) -> StorageResult<TenantMove>;
    /// Replaces a move's state (phase, target, finished, state JSON,
    /// updated_at).
    async fn save_move(&self, record: &TenantMove) -> StorageResult<()>;
    async fn tenant_move(&self, id: uuid::Uuid) -> StorageResult<TenantMove>;
    /// The tenant's unfinished move, if any.
    async fn active_move(&self, tenant: TenantId) -> StorageResult<Option<TenantMove>>;
    /// Moves, newest first, at most `limit`.
    async fn moves(&self, limit: u32) -> StorageResult<Vec<TenantMove>>;

    /// Stores a Stripe event unless its id is stored already, and in the
    /// same transaction enqueues `job` (which applies it; its unique key
    /// keeps one unfinished job per event). A known event whose processing
    /// has not finished gets `job` again (a no-op while the first is
    /// unfinished, a new try after it failed for good); a processed one
    /// gets nothing. Answers whether the event was new.
    async fn record_stripe_event(
        &self,
        event: NewStripeEvent,
        job: crate::NewJob,
    ) -> StorageResult<bool>;
    /// `NotFound` for an id never received.
    async fn stripe_event(&self, id: &str) -> StorageResult<StripeEvent>;
    /// Marks a received event processed (applied, or ignored as unknown).
    async fn mark_stripe_event_processed(&self, id: &str, at: DateTime<Utc>) -> StorageResult<()>;

    /// The tenant's billing state; empty (default) when Stripe has said
    /// nothing of it yet, `NotFound` for an unknown tenant.
    async fn tenant_billing(&self, tenant: TenantId) -> StorageResult<TenantBilling>;
    /// The tenant whose recorded Stripe customer is `customer`.
    async fn tenant_by_stripe_customer(&self, customer: &str) -> StorageResult<TenantId>;
    /// Records Stripe's ids, subscription status and requested plan (a
    /// `None` leaves the field as it is), and lifts a suspension for an
    /// ended subscription when a new one is active
    /// ([`TenantBilling::record`]). `NotFound` for an unknown tenant.
    async fn record_stripe_subscription(
        &self,
        tenant: TenantId,
        update: StripeSubscriptionUpdate,
    ) -> StorageResult<TenantBilling>;
    /// A payment failed at `at`: the tenant is past due since `at`, unless
    /// it was already (the earliest failure counts) or a later payment
    /// event has been recorded (events arrive out of order).
    async fn record_payment_failed(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
    ) -> StorageResult<TenantBilling>;
    /// A payment succeeded at `at`: no longer past due, and a tenant
    /// suspended for non-payment is active again, in one transaction —
    /// unless a later payment event has been recorded.
    async fn record_payment_succeeded(
        &self,
        tenant: TenantId,
        at: DateTime<Utc>,
    ) -> StorageResult<TenantBilling>;
    /// An active tenant becomes `suspended` for `reason`; `Ok(false)` when
    /// it was not active (provisioning, already suspended).
    async fn suspend_for_billing(
        &self,
        tenant: TenantId,
        reason: BillingSuspension,
    ) -> StorageResult<bool>;
    /// Active tenants past due since `since` or earlier, oldest id first.
    async fn overdue_tenants(&self, since: DateTime<Utc>) -> StorageResult<Vec<TenantId>>;
}

/// A Stripe webhook event as it is being stored (payload: the whole event).
#[derive(Clone, Debug, PartialEq)]
pub struct NewStripeEvent {
    /// Stripe's `evt_…` id: the deduplication key.
    pub id: String,
    pub event_type: String,
    /// When Stripe created it (its `created`).
    pub created: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// A received Stripe event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    /// Set once applied (or ignored as a type WebHost does not act on).
    pub processed_at: Option<DateTime<Utc>>,
}

/// Why billing suspended a tenant (only these are lifted by billing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingSuspension {
    /// Past due longer than the grace period.
    NonPayment,
    /// Its Stripe subscription was deleted (cancelled).
    SubscriptionEnded,
}

impl BillingSuspension {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonPayment => "non_payment",
            Self::SubscriptionEnded => "subscription_ended",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "non_payment" => Some(Self::NonPayment),
            "subscription_ended" => Some(Self::SubscriptionEnded),
            _ => None,
        }
    }
}

/// What Stripe has told the control plane of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantBilling {
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    /// The Stripe subscription's `status` (`active`, `past_due`,
    /// `canceled`, …) as last reported.
    pub subscription_status: Option<String>,
    /// Since when a payment has been failing; `None` when paid up.
    pub past_due_since: Option<DateTime<Utc>>,
    /// Set while billing holds the tenant `suspended`.
    pub suspended_for: Option<BillingSuspension>,
    /// A plan asked for through Stripe and not applied yet: the tenant move
    /// (SPEC §6), which applies plan changes, consumes it.
    #[schema(value_type = Option<String>)]
    pub plan_wanted: Option<PlanName>,
    /// `created` of the newest payment event applied (orders late arrivals).
    pub payment_event_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// What both backends decide the same way: a backend reads the billing row
/// and the tenant's status, asks one of these what they become, and writes
/// both in the same transaction.
impl TenantBilling {
    /// Whether a payment event created at `at` is older than one applied
    /// already (Stripe does not promise order).
    fn superseded(&self, at: DateTime<Utc>) -> bool {
        self.payment_event_at.is_some_and(|applied| applied > at)
    }

    /// A failed payment at `at`: past due since the earliest failure.
    pub fn payment_failed(&mut self, at: DateTime<Utc>) {
        if self.superseded(at) {
            return;
        }
        self.payment_event_at = Some(at);
        self.past_due_since.get_or_insert(at);
    }

    /// A paid invoice at `at`: paid up; the tenant's new status when it was
    /// suspended for non-payment.
    pub fn payment_succeeded(
        &mut self,
        at: DateTime<Utc>,
        status: TenantStatus,
    ) -> Option<TenantStatus> {
        if self.superseded(at) {
            return None;
        }
        self.payment_event_at = Some(at);
        self.past_due_since = None;
        if status == TenantStatus::Suspended
            && self.suspended_for == Some(BillingSuspension::NonPayment)
        {
            self.suspended_for = None;
            return Some(TenantStatus::Active);
        }
        None
    }

    /// Suspends an active tenant for `reason`; the new status, if any. A
    /// tenant billing holds suspended already for non-payment whose
    /// subscription then ends keeps the stronger reason (a payment alone
    /// no longer lifts it).
    pub fn suspend(
        &mut self,
        reason: BillingSuspension,
        status: TenantStatus,
    ) -> Option<TenantStatus> {
        match status {
            TenantStatus::Active => {
                self.suspended_for = Some(reason);
                Some(TenantStatus::Suspended)
            }
            TenantStatus::Suspended
                if self.suspended_for.is_some()
                    && reason == BillingSuspension::SubscriptionEnded =>
            {
                self.suspended_for = Some(reason);
                None
            }
            _ => None,
        }
    }

    /// Merges what a checkout or subscription event said; the new status
    /// when it lifts a suspension: a tenant suspended because its
    /// subscription ended is active again when a *new* subscription (another
    /// id) is `active` or `trialing` — an old event about the ended one,
    /// arriving late, lifts nothing.
    pub fn record(
        &mut self,
        update: StripeSubscriptionUpdate,
        status: TenantStatus,
    ) -> Option<TenantStatus> {
        let resumes = status == TenantStatus::Suspended
            && self.suspended_for == Some(BillingSuspension::SubscriptionEnded)
            && matches!(update.status.as_deref(), Some("active" | "trialing"))
            && update.subscription_id.is_some()
            && update.subscription_id != self.stripe_subscription_id;
        if let Some(customer) = update.customer_id {
            self.stripe_customer_id = Some(customer);
        }
        if let Some(subscription) = update.subscription_id {
            self.stripe_subscription_id = Some(subscription);
        }
        if let Some(status) = update.status {
            self.subscription_status = Some(status);
        }
        if let Some(plan) = update.plan_wanted {
            self.plan_wanted = plan;
        }
        resumes.then(|| {
            self.suspended_for = None;
            TenantStatus::Active
        })
    }
}

/// A change to a tenant's Stripe records; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StripeSubscriptionUpdate {
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub status: Option<String>,
    /// `Some(None)` clears it (the subscription is on the current plan).
    pub plan_wanted: Option<Option<PlanName>>,
}
