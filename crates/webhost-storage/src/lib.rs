//! Storage traits of WebHost. Methods name domain actions, not SQL; the
//! `webhost-storage-sqlite` and `webhost-storage-postgres` crates implement
//! them and `webhost-storage-tests` holds the conformance suite both pass.
//!
//! Invariant: nothing here knows about HTTP.

mod cell;
mod control;
mod error;
mod fleet;
mod jobs;
mod policy;
pub mod transfer;
mod webhooks;

pub use cell::{
    mark_stored, newest_valid_per_vehicle, CellStats, CellStore, CellTenant, HistoryQuery,
    NewPosition, NewVehicle, Page, PageRequest, PositionBucket, RetentionReport, TenantUsageRecord,
    UsageCount, Vehicle, VehiclePatch, VehicleRef,
};
pub use control::{
    ApiKey, ApiKeyPrincipal, BillingSuspension, Cell, CellStatus, CellUpdate, ControlStore,
    DeviceRegistration, MeasuredUsage, NewApiKey, NewCell, NewStripeEvent, NewTenant, NewUser,
    Route, RoutingDirectory, StripeEvent, StripeSubscriptionUpdate, SwitchOutcome, Tenant,
    TenantBilling, TenantFilter, TenantMove, TenantPlacement, TenantStatus, User, UserCredentials,
    UserRole,
};
pub use error::{Conflict, StorageError, StorageResult};
pub use fleet::{
    last_state_per_vehicle, CreateGeofenceError, Event, EventCursor, EventQuery, EventType,
    Geofence, GeofencePatch, IngestBatch, NewEvent, NewGeofence, ShapeColumns, SilentVehicle,
    VehicleTracking, MAX_GEOFENCES,
};
pub use jobs::{
    job_run_miss, job_state_conflict, Enqueued, FirstRun, Job, JobConflict, JobFilter, JobRun,
    JobState, JobStore, NewJob, QueueCount,
};
pub use policy::{
    bytes_share, fetch_limit, keep, seed_catalog, share_storage, usage_by_tenant, Quota, MAX_PAGE,
};
pub use transfer::{
    ChangeChunk, Chunk, Cursor, Record, TableDigest, TenantDigest, TransferTable, MAX_CHUNK,
};
pub use webhooks::{
    AttemptVerdict, CreateWebhookError, NewWebhook, Webhook, WebhookAttempt, WebhookAttemptId,
    WebhookId, WebhookPatch, MAX_WEBHOOKS,
};

// What `delegate_job_store!` expands to refers to; not part of the API.
#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
#[doc(hidden)]
pub use chrono as __chrono;
#[doc(hidden)]
pub use serde_json::Value as __Json;
#[doc(hidden)]
pub use webhost_domain::JobId as __JobId;
