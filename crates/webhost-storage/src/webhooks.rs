//! Records of a tenant's webhooks and the log of their delivery attempts
//! (see `webhost-cell/src/webhooks.rs` for how events reach them).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webhost_domain::{EventId, JobId, ShortText};

use crate::{EventType, StorageError};

/// The most webhooks one tenant may have.
pub const MAX_WEBHOOKS: u32 = 20;

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered identifier (UUIDv7).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

record_id!(
    /// A webhook of a tenant.
    WebhookId
);
record_id!(
    /// One logged delivery attempt.
    WebhookAttemptId
);

/// A stored webhook. `secret` signs every delivery; the API shows it only
/// in the answer that created the webhook.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    /// Checked when it was stored (scheme, length, target).
    pub url: String,
    /// The event types delivered; empty: every type.
    pub events: Vec<EventType>,
    pub enabled: bool,
    pub description: Option<ShortText>,
    pub secret: String,
    /// Events in a row whose every attempt failed; a delivery resets it.
    pub consecutive_failures: u32,
    /// Why it was disabled automatically (`None` when enabled, or disabled
    /// by the tenant).
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether an event of type `kind` goes to this webhook.
    pub fn wants(&self, kind: EventType) -> bool {
        self.enabled && (self.events.is_empty() || self.events.contains(&kind))
    }
}

/// The secret stays out of logs.
impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("description", &self.description)
            .field("secret", &"[redacted]")
            .field("consecutive_failures", &self.consecutive_failures)
            .field("disabled_reason", &self.disabled_reason)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[derive(Clone)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<ShortText>,
    pub secret: String,
}

/// A partial update: `None` leaves a field alone. Setting `enabled` to true
/// clears `disabled_reason` and the failure count.
#[derive(Clone, Debug, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
    pub description: Option<Option<ShortText>>,
}

/// Why a webhook was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateWebhookError {
    #[error("an account may have at most {limit} webhooks and all are in use")]
    LimitReached { limit: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One attempt to deliver one event to one webhook, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    pub id: WebhookAttemptId,
    pub webhook_id: WebhookId,
    /// The delivery (the `id` of the body sent): the same for every attempt
    /// of one event.
    #[schema(value_type = String, format = Uuid)]
    pub delivery_id: JobId,
    #[schema(value_type = String, format = Uuid)]
    pub event_id: EventId,
    pub event_type: EventType,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong when it did not answer (timeout, refused, TLS, …).
    pub error: Option<String>,
    pub duration_ms: u32,
    /// When the attempt started.
    pub at: DateTime<Utc>,
}

impl WebhookAttempt {
    /// A 2xx answer.
    pub fn delivered(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What an attempt means for the webhook's failure count.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptVerdict {
    /// Delivered: the count goes back to 0.
    Delivered,
    /// Failed, and will be tried again: the count stays.
    WillRetry,
    /// Failed, and was the event's last attempt: the count goes up by one,
    /// and when it reaches `disable_after` the webhook is disabled with
    /// `reason`.
    GaveUp { disable_after: u32, reason: String },
}
