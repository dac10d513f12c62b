//! `/api/v1/webhooks`: a tenant's webhooks, at most
//! [`webhost_storage::MAX_WEBHOOKS`] (20). Each names a URL and the event
//! types it wants (`events`, empty: all of them). Every event committed by
//! the ingest writer is POSTed to each enabled webhook that wants it,
//! signed (docs/WEBHOOKS.md has the scheme and a verification example).
//!
//! - **Where to**: [`target`] (http(s), ≤ 2,048 characters, public hosts
//!   only unless `CellConfig::allow_private_webhooks`; checked on create
//!   and update, and again before every delivery on the resolved
//!   addresses, which are the ones connected to).
//! - **Durably**: the `deliver_webhook` jobs (one per event and webhook,
//!   unique key `webhook:<webhook_id>:<event_id>`) are written in the same
//!   transaction as the events ([`delivery_jobs`] → `IngestBatch::jobs`),
//!   so an event committed is an event that will be delivered, whatever
//!   happens to the process after the commit. The cell runs the `default`
//!   queue of its own database.
//! - **Retries**: anything but a 2xx within 10 s is a failed attempt, tried
//!   again after 30 s, 1 min, 2 min, … up to an hour, 8 attempts in all
//!   (≈ 2 h). Every attempt is logged (`GET /api/v1/webhooks/{id}/deliveries`).
//! - **Disabling**: after 5 events in a row failed all their attempts the
//!   webhook is disabled, `disabled_reason` saying when and what the last
//!   attempt got; a delivered event resets the count. Deliveries still
//!   queued for a disabled webhook are dropped; `PATCH {"enabled": true}`
//!   enables it again (and clears the reason and the count).
//! - **The secret** (`whsec_…`, 256 random bits) is shown only in the
//!   answer to the create; it is stored as is, since signing needs it.

pub(crate) mod deliver;
pub(crate) mod target;

use std::collections::HashMap;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use webhost_api::{ById, Deleted, Endpoint, Json, NoBody, NoParams, Operation, Verb};
use webhost_domain::{JobId, ShortText, TenantId, ValidationError};
use webhost_http::auth::TenantCaller;
use webhost_http::{double_option, ApiError};
use webhost_jobs::Handler;
use webhost_storage::{
    CellStore, CreateWebhookError, EventType, NewEvent, NewJob, NewWebhook, PageRequest,
    StorageResult, Webhook, WebhookAttempt, WebhookAttemptId, WebhookId, WebhookPatch,
};

use crate::CellState;
use deliver::{DeliverWebhook, Payload};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

/// The `deliver_webhook` jobs for `events`: one per event and enabled
/// webhook of its tenant that wants its type. One read of the webhooks per
/// tenant that has events.
pub(crate) async fn delivery_jobs(
    store: &dyn CellStore,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> StorageResult<Vec<NewJob>> {
    let mut by_tenant: HashMap<TenantId, Vec<&NewEvent>> = HashMap::new();
    for event in events {
        by_tenant.entry(event.tenant_id).or_default().push(event);
    }
    let mut jobs = Vec::new();
    for (tenant, events) in by_tenant {
        let webhooks = store.webhooks(tenant).await?;
        if !webhooks.iter().any(|w| w.enabled) {
            continue;
        }
        for row in events {
            let event = &row.event;
            for webhook in webhooks.iter().filter(|w| w.wants(event.kind)) {
                let payload = Payload {
                    tenant_id: tenant,
                    webhook_id: webhook.id,
                    event_id: event.id,
                    event_type: event.kind,
                    event: serde_json::to_value(event)
                        .map_err(|e| webhost_storage::StorageError::Unexpected(e.into()))?,
                };
                jobs.push(NewJob {
                    id: JobId::new(),
                    queue: DeliverWebhook::queue().to_string(),
                    kind: DeliverWebhook::kind().to_string(),
                    payload: serde_json::to_value(&payload)
                        .map_err(|e| webhost_storage::StorageError::Unexpected(e.into()))?,
                    unique_key: Some(format!("webhook:{}:{}", webhook.id, event.id)),
                    max_attempts: DeliverWebhook::max_attempts(),
                    run_at: now,
                });
            }
        }
    }
    Ok(jobs)
}

/// A new secret: `whsec_` and 256 random bits in hex.
fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A webhook as the API shows it (never with its secret).
#[derive(Serialize, ToSchema)]
#[schema(as = Webhook)]
pub(crate) struct WebhookBody {
    id: WebhookId,
    url: String,
    /// The event types delivered; empty: every type.
    events: Vec<EventType>,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<ShortText>,
    /// Why it was disabled automatically, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookBody {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            description: w.description,
            disabled_reason: w.disabled_reason,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// The answer to a create: the webhook and its signing secret, shown this
/// once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedWebhook {
    id: WebhookId,
    url: String,
    events: Vec<EventType>,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<ShortText>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Signs every delivery (`WebHost-Signature`); keep it: it is not shown
    /// again.
    secret: String,
}

webhost_api::list_page!(
    /// The tenant's webhooks (all of them: at most 20).
    pub(crate) struct WebhookPage of WebhookBody
);

webhost_api::list_page!(
    /// Delivery attempts, newest first.
    pub(crate) struct WebhookAttemptPage of WebhookAttempt
);

/// A new webhook.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookInput)]
pub(crate) struct CreateInput {
    /// http(s), at most 2,048 characters, on a public host.
    #[schema(value_type = String)]
    url: Option<Value>,
    /// Event types (`geofence_enter`, `geofence_exit`, `overspeed`,
    /// `device_online`, `device_offline`); empty or left out: all.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>)]
    events: Option<Value>,
    /// Up to 100 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    description: Option<Value>,
}

/// Changes to a webhook: absent fields stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookPatch)]
pub(crate) struct UpdateInput {
    /// A new URL (`null` is refused: a webhook has one).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    url: Option<Option<Value>>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>)]
    events: Option<Value>,
    /// `true` enables again (clearing `disabled_reason`), `false` pauses.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    enabled: Option<Value>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<Value>>,
}

fn parse_events(raw: &Value) -> Result<Vec<EventType>, ValidationError> {
    let allowed = || {
        EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let items = match raw {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => {
            return Err(ValidationError::new(
                "events",
                format!("must be a list of event types ({})", allowed()),
            ))
        }
    };
    let mut events = Vec::new();
    for item in items {
        let kind = item.as_str().and_then(EventType::parse).ok_or_else(|| {
            ValidationError::new(
                "events",
                format!("{item} is not an event type; use {}", allowed()),
            )
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    Ok(events)
}

fn parse_description(raw: &Value) -> Result<Option<ShortText>, ValidationError> {
    match raw {
        Value::Null => Ok(None),
        Value::String(text) => {
            let text = ShortText::parse("description", text)?;
            Ok((!text.as_str().is_empty()).then_some(text))
        }
        _ => Err(ValidationError::new("description", "must be a string")),
    }
}

async fn parse_url(state: &CellState, raw: &Value) -> Result<String, ValidationError> {
    let text = raw
        .as_str()
        .ok_or_else(|| ValidationError::new("url", "must be a string (an http or https URL)"))?;
    let target = target::check_url(text, state.config.allow_private_webhooks).await?;
    Ok(target.url.to_string())
}

fn webhook_id(raw: &str) -> Result<WebhookId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("webhook"))
}

fn create_error(err: CreateWebhookError) -> ApiError {
    match err {
        CreateWebhookError::LimitReached { .. } => ApiError::conflict(
            "webhook_limit_reached",
            format!("{err}; delete one before creating another"),
        ),
        CreateWebhookError::Storage(err) => err.into(),
    }
}

pub(crate) struct ListWebhooks;

impl Operation<CellState> for ListWebhooks {
    type Params = NoParams;
    type Body = NoBody;
    type Output = WebhookPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/webhooks",
        "webhooks",
        "webhooks",
        "The tenant's webhooks",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<WebhookPage, ApiError> {
        let hooks = state.store.webhooks(caller.tenant).await?;
        Ok(WebhookPage::whole(
            hooks.into_iter().map(WebhookBody::from).collect(),
        ))
    }
}

pub(crate) struct CreateWebhook;

impl Operation<CellState> for CreateWebhook {
    type Params = NoParams;
    type Body = Json<CreateInput>;
    type Output = CreatedWebhook;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/webhooks",
        "createWebhook",
        "webhooks",
        "Registers a URL for events; the answer holds the signing secret, shown this once",
    )
    .status(StatusCode::CREATED);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        _: NoParams,
        Json(input): Json<CreateInput>,
    ) -> Result<CreatedWebhook, ApiError> {
        let url = match &input.url {
            None | Some(Value::Null) => {
                return Err(ValidationError::new("url", "is required").into())
            }
            Some(raw) => raw,
        };
        let events = input
            .events
            .as_ref()
            .map(parse_events)
            .transpose()?
            .unwrap_or_default();
        let description = input
            .description
            .as_ref()
            .map(parse_description)
            .transpose()?
            .flatten();
        let url = parse_url(state, url).await?;
        let w = state
            .store
            .create_webhook(
                caller.tenant,
                NewWebhook {
                    id: WebhookId::new(),
                    url,
                    events,
                    description,
                    secret: new_secret(),
                },
            )
            .await
            .map_err(create_error)?;
        Ok(CreatedWebhook {
            id: w.id,
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            description: w.description,
            created_at: w.created_at,
            updated_at: w.updated_at,
            secret: w.secret,
        })
    }
}

pub(crate) struct ShowWebhook;

impl Operation<CellState> for ShowWebhook {
    type Params = ById;
    type Body = NoBody;
    type Output = WebhookBody;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/webhooks/{id}",
        "webhook",
        "webhooks",
        "One webhook (without its secret)",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<WebhookBody, ApiError> {
        let found = state
            .store
            .webhook(caller.tenant, webhook_id(&params.id)?)
            .await?;
        Ok(found.into())
    }
}

pub(crate) struct UpdateWebhook;

impl Operation<CellState> for UpdateWebhook {
    type Params = ById;
    type Body = Json<UpdateInput>;
    type Output = WebhookBody;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Patch,
        "/api/v1/webhooks/{id}",
        "updateWebhook",
        "webhooks",
        "Changes a webhook's URL, events, description, or enables / pauses it",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        Json(input): Json<UpdateInput>,
    ) -> Result<WebhookBody, ApiError> {
        let id = webhook_id(&params.id)?;
        let enabled = match &input.enabled {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(ValidationError::new("enabled", "must be true or false").into()),
        };
        let events = input.events.as_ref().map(parse_events).transpose()?;
        let description = input
            .description
            .as_ref()
            .map(|raw| match raw {
                None => Ok(None),
                Some(raw) => parse_description(raw),
            })
            .transpose()?;
        let url = match &input.url {
            None => None,
            Some(None) | Some(Some(Value::Null)) => {
                return Err(ValidationError::new("url", "cannot be removed; give a new URL").into())
            }
            Some(Some(raw)) => Some(parse_url(state, raw).await?),
        };
        let updated = state
            .store
            .update_webhook(
                caller.tenant,
                id,
                WebhookPatch {
                    url,
                    events,
                    enabled,
                    description,
                },
            )
            .await?;
        Ok(updated.into())
    }
}

pub(crate) struct DeleteWebhook;

impl Operation<CellState> for DeleteWebhook {
    type Params = ById;
    type Body = NoBody;
    type Output = Deleted;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/v1/webhooks/{id}",
        "deleteWebhook",
        "webhooks",
        "Deletes a webhook and its delivery log; queued deliveries are dropped",
    )
    .status(StatusCode::NO_CONTENT);

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<Deleted, ApiError> {
        let id = webhook_id(&params.id)?;
        state.store.delete_webhook(caller.tenant, id).await?;
        Ok(Deleted { id: id.to_string() })
    }
}

/// Which attempts, a page at a time.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryParams {
    #[schema(format = Uuid)]
    id: String,
    /// 1 to 1,000; 100 when left out.
    limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    cursor: Option<String>,
}

pub(crate) struct ListWebhookDeliveries;

impl Operation<CellState> for ListWebhookDeliveries {
    type Params = DeliveryParams;
    type Body = NoBody;
    type Output = WebhookAttemptPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/webhooks/{id}/deliveries",
        "webhookDeliveries",
        "webhooks",
        "A webhook's delivery attempts (status or error, duration), newest first",
    );

    async fn call(
        state: &CellState,
        caller: &TenantCaller,
        params: DeliveryParams,
        _: NoBody,
    ) -> Result<WebhookAttemptPage, ApiError> {
        let id = webhook_id(&params.id)?;
        let limit = params.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let after = params
            .cursor
            .as_deref()
            .map(|raw| {
                raw.parse::<WebhookAttemptId>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        "cursor must be a next_cursor from a previous page",
                    )
                })
            })
            .transpose()?;
        let page = state
            .store
            .webhook_attempts(caller.tenant, id, PageRequest { after, limit })
            .await?;
        Ok(WebhookAttemptPage {
            data: page.data,
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_are_a_list_of_known_types() {
        assert_eq!(
            parse_events(&json!(["overspeed", "geofence_enter", "overspeed"])).expect("events"),
            [EventType::Overspeed, EventType::GeofenceEnter]
        );
        assert_eq!(parse_events(&json!([])).expect("empty"), []);
        assert_eq!(parse_events(&Value::Null).expect("null"), []);
        for bad in [json!("overspeed"), json!(["speeding"]), json!([3])] {
            let err = parse_events(&bad).expect_err("bad");
            assert_eq!(err.field, "events", "{bad}");
            assert!(err.message.contains("device_offline"), "{}", err.message);
        }
    }

    #[test]
    fn secrets_are_long_and_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
        assert_ne!(a, b);
    }
}
