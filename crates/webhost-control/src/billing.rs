//! Stripe billing, inbound: `POST /api/v1/billing/stripe/webhook` (SPEC §4).
//!
//! - **Verified**: the `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=…]`,
//!   other schemes ignored) must carry a `v1` equal to
//!   hex(HMAC-SHA256(secret, "<t>.<raw body>")), compared in constant time,
//!   with `t` within [`signature::TOLERANCE_SECS`] of now either way. The
//!   body is read as raw bytes: the edge forwards it untouched, and no JSON
//!   round trip happens before the HMAC. Anything wrong is a 400 naming it,
//!   and nothing is stored.
//! - **Deduplicated and durable**: the event is stored by its id together
//!   with an `apply_stripe_event` job (`billing` queue, unique key
//!   `stripe_event:<id>`) in one transaction, and only then answered 200.
//!   A replayed id answers 200 and changes nothing, whatever its body.
//! - **Applied by the job** ([`ApplyStripeEvent`]), once per event:
//!   `invoice.payment_failed` → past due (since the event's `created`);
//!   `invoice.paid` → paid up, and a tenant suspended for non-payment is
//!   active again; `customer.subscription.deleted` → suspended (lifted
//!   when a new subscription, another id, is `active` or `trialing`);
//!   `checkout.session.completed` and `customer.subscription.created|updated`
//!   → the Stripe customer, subscription and status recorded, and a plan
//!   asked for through Stripe (`metadata.plan` of the subscription or of its
//!   price) recorded as `plan_wanted` — not applied here: the tenant move
//!   (SPEC §6), which applies plan changes, consumes it. Other types are
//!   stored, marked processed and ignored; an event for a tenant WebHost
//!   does not know is processed and logged (no retry loop).
//! - **Suspension**: a tenant past due longer than the grace period
//!   ([`DEFAULT_GRACE`], 7 days: Stripe's default smart-retry schedule
//!   spans about a week, so the customer's card gets every retry before
//!   writes stop) is suspended by [`SuspendOverdue`], queued for the
//!   tenant's deadline when the failure is applied, and hourly as a sweep.
//!   Suspended means: reads work, writes through the API answer 402 at the
//!   edge; device fixes keep being stored (the history the customer pays
//!   for has no hole once they pay, and devices are not made to buffer and
//!   resend for days).
//!
//! Which tenant an event is for: `client_reference_id` (Checkout) or
//! `metadata.tenant_id` of the object (or of the invoice's subscription
//! details), a WebHost tenant id; failing that, the tenant whose recorded
//! Stripe customer is the object's `customer`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use webhost_domain::{JobId, PlanName, TenantId};
use webhost_http::ApiError;
use webhost_jobs::{queues, CronSchedule, Handler, JobContext, JobError, Jobs};
use webhost_storage::{
    BillingSuspension, ControlStore, Job, NewJob, NewStripeEvent, StorageError, StripeEvent,
    StripeSubscriptionUpdate,
};

use crate::ControlState;

/// Where Stripe posts its events (through the edge, no WebHost credential).
pub const WEBHOOK_PATH: &str = "/api/v1/billing/stripe/webhook";

/// How long a tenant may stay past due before it is suspended.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the control plane needs for Stripe billing.
#[derive(Clone)]
pub struct BillingSettings {
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`); without it the webhook answers
    /// 503 (see [`stripe_webhook`]).
    pub webhook_secret: Option<WebhookSecret>,
    /// Past due longer than this: suspended. [`DEFAULT_GRACE`] in
    /// production; tests shorten it instead of waiting.
    pub grace: Duration,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            webhook_secret: None,
            grace: DEFAULT_GRACE,
        }
    }
}

/// The webhook signing secret; `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookSecret(Arc<[u8]>);

impl WebhookSecret {
    pub fn new(secret: &str) -> Self {
        Self(Arc::from(secret.as_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// The `Stripe-Signature` scheme, as pure functions (no clock: `now` is a
/// parameter).
pub mod signature {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    /// How far `t` may be from now, either way, in seconds (Stripe's
    /// libraries use the same default against replays).
    pub const TOLERANCE_SECS: i64 = 300;

    /// What is wrong with a signature; each says what to fix.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum SignatureError {
        #[error("the Stripe-Signature header is missing")]
        Missing,
        #[error(
            "the Stripe-Signature header has no timestamp: expected t=<unix seconds>,v1=<hex>"
        )]
        NoTimestamp,
        #[error(
            "the Stripe-Signature header has no v1 signature: expected t=<unix seconds>,v1=<hex>"
        )]
        NoV1,
        #[error(
            "the Stripe-Signature timestamp is {age} s old, more than the {TOLERANCE_SECS} s \
             tolerated (a replayed or delayed delivery)"
        )]
        Stale { age: i64 },
        #[error(
            "the Stripe-Signature timestamp is {ahead} s in the future, more than the \
             {TOLERANCE_SECS} s tolerated"
        )]
        Future { ahead: i64 },
        #[error(
            "no v1 signature in Stripe-Signature matches the body and the webhook secret \
             (check STRIPE_WEBHOOK_SECRET and that the body reaches us unchanged)"
        )]
        Mismatch,
    }

    /// A parsed `Stripe-Signature` header.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct SignatureHeader {
        pub timestamp: i64,
        /// The `v1` values as sent (hex, not checked yet).
        pub v1: Vec<String>,
    }

    /// Parses `t=<unix>,v1=<hex>[,v1=…]`; other schemes (`v0`, …) and
    /// unknown keys are ignored; the first `t` counts.
    pub fn parse(raw: &str) -> Result<SignatureHeader, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in raw.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                continue;
            };
            match key.trim() {
                "t" if timestamp.is_none() => {
                    timestamp = Some(
                        value
                            .trim()
                            .parse::<i64>()
                            .map_err(|_| SignatureError::NoTimestamp)?,
                    );
                }
                "v1" => v1.push(value.trim().to_string()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1);
        }
        Ok(SignatureHeader { timestamp, v1 })
    }

    fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// hex(HMAC-SHA256(secret, "<t>.<body>")): what Stripe sends as `v1`.
    pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    }

    /// Checks `header` against `body` and `secret` at `now` (unix seconds):
    /// some `v1` must match (each compared in constant time by
    /// `verify_slice`), then the timestamp must be within the tolerance.
    /// Answers the signed timestamp.
    pub fn verify(
        header: Option<&str>,
        body: &[u8],
        secret: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        let header = parse(header.ok_or(SignatureError::Missing)?)?;
        let matches = header.v1.iter().any(|candidate| {
            hex::decode(candidate).is_ok_and(|bytes| {
                mac(secret, header.timestamp, body)
                    .verify_slice(&bytes)
                    .is_ok()
            })
        });
        if !matches {
            return Err(SignatureError::Mismatch);
        }
        let age = now.saturating_sub(header.timestamp);
        if age > TOLERANCE_SECS {
            return Err(SignatureError::Stale { age });
        }
        if -age > TOLERANCE_SECS {
            return Err(SignatureError::Future { ahead: -age });
        }
        Ok(header.timestamp)
    }
}

/// The fields of an event the webhook reads before storing it.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// `POST /api/v1/billing/stripe/webhook`.
///
/// Without `STRIPE_WEBHOOK_SECRET` it answers **503** `billing_not_configured`:
/// the endpoint exists (SPEC §4) but cannot authenticate anything, and a 5xx
/// makes Stripe keep redelivering (for up to three days), so events sent
/// while the secret is missing are applied once it is set; a 404 would read
/// as a wrong URL.
pub(crate) async fn stripe_webhook(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match receive(&state, &headers, &body).await {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn receive(
    state: &ControlState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let Some(secret) = &state.billing.webhook_secret else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "billing_not_configured",
            "Stripe billing is not configured here: STRIPE_WEBHOOK_SECRET is not set",
        ));
    };
    let header = match headers.get("stripe-signature") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            bad(
                "signature_invalid",
                "the Stripe-Signature header is not ASCII",
            )
        })?),
    };
    signature::verify(header, body, &secret.0, Utc::now().timestamp()).map_err(|err| {
        let code = match err {
            signature::SignatureError::Missing => "signature_missing",
            signature::SignatureError::NoTimestamp | signature::SignatureError::NoV1 => {
                "signature_malformed"
            }
            signature::SignatureError::Stale { .. } | signature::SignatureError::Future { .. } => {
                "signature_expired"
            }
            signature::SignatureError::Mismatch => "signature_mismatch",
        };
        tracing::warn!(error = %err, "Stripe webhook refused");
        bad(code, err.to_string())
    })?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| bad("invalid_event", format!("the body is not JSON: {e}")))?;
    let envelope: Envelope = serde_json::from_value(payload.clone()).map_err(|e| {
        bad(
            "invalid_event",
            format!("the body is not a Stripe event (id, type, created): {e}"),
        )
    })?;
    let id = envelope.id.trim();
    if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "invalid_event",
            "the event id must be 1 to 255 printable ASCII characters",
        ));
    }
    let created = DateTime::from_timestamp(envelope.created, 0)
        .ok_or_else(|| bad("invalid_event", "the event's created is not a unix time"))?;
    let job = NewJob {
        id: JobId::new(),
        queue: ApplyStripeEvent::queue().to_string(),
        kind: ApplyStripeEvent::kind().to_string(),
        payload: json!({ "event_id": id }),
        unique_key: Some(format!("stripe_event:{id}")),
        max_attempts: ApplyStripeEvent::max_attempts(),
        run_at: Utc::now(),
    };
    let new = state
        .store
        .record_stripe_event(
            NewStripeEvent {
                id: id.to_string(),
                event_type: envelope.event_type.clone(),
                created,
                payload,
            },
            job,
        )
        .await?;
    tracing::info!(event = id, r#type = %envelope.event_type, duplicate = !new, "Stripe event received");
    Ok(json!({ "received": true, "id": id, "duplicate": !new }))
}

/// What applying an event did (the job's progress).
#[derive(Debug, PartialEq)]
enum Applied {
    PastDue,
    Paid,
    Recorded,
    Suspended,
    UnknownTenant,
    Ignored,
}

impl Applied {
    fn as_str(&self) -> &'static str {
        match self {
            Self::PastDue => "past_due",
            Self::Paid => "paid",
            Self::Recorded => "recorded",
            Self::Suspended => "suspended",
            Self::UnknownTenant => "unknown_tenant",
            Self::Ignored => "ignored",
        }
    }
}

fn text(value: &Value) -> Option<String> {
    value
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The `customer` of an object: an id, or an expanded customer object.
fn customer_of(object: &Value) -> Option<String> {
    text(&object["customer"]).or_else(|| text(&object["customer"]["id"]))
}

/// A WebHost tenant id the object names itself.
fn named_tenant(object: &Value) -> Option<TenantId> {
    [
        &object["client_reference_id"],
        &object["metadata"]["tenant_id"],
        &object["parent"]["subscription_details"]["metadata"]["tenant_id"],
        &object["subscription_details"]["metadata"]["tenant_id"],
    ]
    .into_iter()
    .filter_map(text)
    .find_map(|raw| raw.parse().ok())
}

/// The tenant an event's object is about, if WebHost knows it.
async fn tenant_of(store: &dyn ControlStore, object: &Value) -> Result<Option<TenantId>, JobError> {
    if let Some(tenant) = named_tenant(object) {
        return Ok(Some(tenant));
    }
    let Some(customer) = customer_of(object) else {
        return Ok(None);
    };
    match store.tenant_by_stripe_customer(&customer).await {
        Ok(tenant) => Ok(Some(tenant)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(err) => Err(JobError::retry(err)),
    }
}

/// The plan a subscription asks for: its `metadata.plan`, else the first
/// item's price `metadata.plan`.
fn plan_asked(subscription: &Value) -> Option<String> {
    text(&subscription["metadata"]["plan"]).or_else(|| {
        subscription["items"]["data"]
            .as_array()?
            .iter()
            .find_map(|item| text(&item["price"]["metadata"]["plan"]))
    })
}

/// Runs a store call about `tenant`; a tenant that is gone is "unknown".
fn known<T>(result: Result<T, StorageError>) -> Result<Option<T>, JobError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(err) => Err(JobError::retry(err)),
    }
}

/// Applies a stored Stripe event (payload `{"event_id"}`), once: a
/// processed event is left alone, and every step is safe to repeat (a
/// failure keeps the earliest time, a payment older than the last one
/// applied changes nothing, records overwrite with the same values).
pub struct ApplyStripeEvent {
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) grace: Duration,
    /// Applies a paid plan change (and starts its move).
    pub(crate) moves: Arc<crate::moves::Moves>,
}

#[async_trait]
impl Handler for ApplyStripeEvent {
    fn kind() -> &'static str {
        "apply_stripe_event"
    }

    fn queue() -> &'static str {
        queues::BILLING
    }

    fn max_attempts() -> u32 {
        10
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let Some(id) = job.payload["event_id"].as_str() else {
            return Err(JobError::permanent(anyhow::anyhow!(
                "payload has no event_id: {}",
                job.payload
            )));
        };
        let event = match self.store.stripe_event(id).await {
            Ok(event) => event,
            Err(StorageError::NotFound(_)) => {
                return Err(JobError::permanent(anyhow::anyhow!(
                    "Stripe event {id} is not stored"
                )))
            }
            Err(err) => return Err(JobError::retry(err)),
        };
        if event.processed_at.is_some() {
            return Ok(());
        }
        let applied = self.apply(&event).await?;
        if applied == Applied::UnknownTenant {
            tracing::warn!(event = %event.id, r#type = %event.event_type, "Stripe event for a tenant WebHost does not know; ignored");
        }
        self.store
            .mark_stripe_event_processed(&event.id, Utc::now())
            .await
            .map_err(JobError::retry)?;
        let _ = ctx
            .progress(json!({ "type": event.event_type, "applied": applied.as_str() }))
            .await;
        Ok(())
    }
}

impl ApplyStripeEvent {
    async fn apply(&self, event: &StripeEvent) -> Result<Applied, JobError> {
        let store = self.store.as_ref();
        let object = &event.payload["data"]["object"];
        let handled = matches!(
            event.event_type.as_str(),
            "invoice.payment_failed"
                | "invoice.paid"
                | "checkout.session.completed"
                | "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"
        );
        if !handled {
            return Ok(Applied::Ignored);
        }
        let Some(tenant) = tenant_of(store, object).await? else {
            return Ok(Applied::UnknownTenant);
        };
        let applied = match event.event_type.as_str() {
            "invoice.payment_failed" => {
                let Some(billing) =
                    known(store.record_payment_failed(tenant, event.created).await)?
                else {
                    return Ok(Applied::UnknownTenant);
                };
                if let Some(since) = billing.past_due_since {
                    let deadline =
                        since + TimeDelta::from_std(self.grace).unwrap_or(TimeDelta::MAX);
                    store
                        .enqueue(SuspendOverdue::job(
                            Some(format!("suspend_overdue:{tenant}")),
                            deadline,
                        ))
                        .await
                        .map_err(JobError::retry)?;
                }
                Applied::PastDue
            }
            "invoice.paid" => {
                if known(store.record_payment_succeeded(tenant, event.created).await)?.is_none() {
                    return Ok(Applied::UnknownTenant);
                }
                Applied::Paid
            }
            "checkout.session.completed" => {
                let update = StripeSubscriptionUpdate {
                    customer_id: customer_of(object),
                    subscription_id: text(&object["subscription"])
                        .or_else(|| text(&object["subscription"]["id"])),
                    ..StripeSubscriptionUpdate::default()
                };
                if known(store.record_stripe_subscription(tenant, update).await)?.is_none() {
                    return Ok(Applied::UnknownTenant);
                }
                Applied::Recorded
            }
            kind => {
                let deleted = kind == "customer.subscription.deleted";
                let Some(current) = known(store.tenant(tenant).await)? else {
                    return Ok(Applied::UnknownTenant);
                };
                let plan_wanted = if deleted {
                    None
                } else {
                    self.plan_wanted(object, &current.plan).await?
                };
                let update = StripeSubscriptionUpdate {
                    customer_id: customer_of(object),
                    subscription_id: text(&object["id"]),
                    status: text(&object["status"]),
                    plan_wanted,
                };
                let wanted = update.plan_wanted.clone().flatten();
                if known(store.record_stripe_subscription(tenant, update).await)?.is_none() {
                    return Ok(Applied::UnknownTenant);
                }
                if let Some(plan) = wanted {
                    self.apply_plan(tenant, &plan).await?;
                }
                if deleted {
                    known(
                        store
                            .suspend_for_billing(tenant, BillingSuspension::SubscriptionEnded)
                            .await,
                    )?;
                    Applied::Suspended
                } else {
                    Applied::Recorded
                }
            }
        };
        Ok(applied)
    }

    /// Applies the plan Stripe says was paid for (limits, or a move to the
    /// new plan's pool), then clears `plan_wanted`. A move already under
    /// way is waited for (retried); a plan the data does not fit stays
    /// wanted, with the reason on the job, for the operator.
    async fn apply_plan(&self, tenant: TenantId, plan: &PlanName) -> Result<(), JobError> {
        let Some(state) = self.moves.control_state() else {
            return Err(JobError::retry(anyhow::anyhow!(
                "the control plane is starting"
            )));
        };
        match crate::subscription::change_plan(&state, tenant, plan).await {
            Ok(()) => {}
            Err(err) if err.code == "move_in_progress" => {
                return Err(JobError::retry(anyhow::anyhow!("{}", err.message)))
            }
            Err(err) if err.status.is_client_error() => {
                return Err(JobError::permanent(anyhow::anyhow!(
                    "the paid plan {plan} cannot be applied: {}",
                    err.message
                )))
            }
            Err(err) => return Err(JobError::retry(anyhow::anyhow!("{}", err.message))),
        }
        self.store
            .record_stripe_subscription(
                tenant,
                StripeSubscriptionUpdate {
                    plan_wanted: Some(None),
                    ..StripeSubscriptionUpdate::default()
                },
            )
            .await
            .map_err(JobError::retry)?;
        Ok(())
    }

    /// What to record as the wanted plan: a catalog plan other than the
    /// current one (`Some(Some)`), the current one (`Some(None)`: nothing
    /// wanted any more), or nothing said or not a plan (`None`: left alone).
    async fn plan_wanted(
        &self,
        subscription: &Value,
        current: &PlanName,
    ) -> Result<Option<Option<PlanName>>, JobError> {
        let Some(raw) = plan_asked(subscription) else {
            return Ok(None);
        };
        let catalog = self.store.catalog().await.map_err(JobError::retry)?;
        match PlanName::parse(&raw) {
            Ok(plan) if catalog.plan(&plan).is_ok() => Ok(Some((&plan != current).then_some(plan))),
            _ => {
                tracing::warn!(plan = %raw, "Stripe subscription names a plan the catalog does not have; not recorded");
                Ok(None)
            }
        }
    }
}

/// Suspends every active tenant past due for longer than the grace period
/// (reason: non-payment). Queued for a tenant's deadline when its payment
/// failure is applied, and hourly as a sweep (a deadline job lost, the
/// grace period changed). Idempotent: a tenant already suspended, paid up
/// or no longer overdue is left alone.
pub struct SuspendOverdue {
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) grace: Duration,
}

impl SuspendOverdue {
    fn job(unique_key: Option<String>, run_at: DateTime<Utc>) -> NewJob {
        NewJob {
            id: JobId::new(),
            queue: Self::queue().to_string(),
            kind: Self::kind().to_string(),
            payload: json!({}),
            unique_key,
            max_attempts: Self::max_attempts(),
            run_at,
        }
    }
}

#[async_trait]
impl Handler for SuspendOverdue {
    fn kind() -> &'static str {
        "suspend_overdue"
    }

    fn queue() -> &'static str {
        queues::BILLING
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let since = Utc::now() - TimeDelta::from_std(self.grace).unwrap_or(TimeDelta::MAX);
        let overdue = self
            .store
            .overdue_tenants(since)
            .await
            .map_err(JobError::retry)?;
        let mut suspended = Vec::new();
        for tenant in overdue {
            if known(
                self.store
                    .suspend_for_billing(tenant, BillingSuspension::NonPayment)
                    .await,
            )?
            .unwrap_or(false)
            {
                tracing::warn!(%tenant, "tenant suspended: past due longer than the grace period");
                suspended.push(tenant.to_string());
            }
        }
        let _ = ctx.progress(json!({ "suspended": suspended })).await;
        Ok(())
    }
}

/// Registers the billing jobs and the hourly overdue sweep.
pub(crate) fn schedule(
    jobs: Jobs,
    store: &Arc<dyn ControlStore>,
    grace: Duration,
    moves: &Arc<crate::moves::Moves>,
) -> Jobs {
    jobs.register(ApplyStripeEvent {
        store: store.clone(),
        grace,
        moves: moves.clone(),
    })
    .register(SuspendOverdue {
        store: store.clone(),
        grace,
    })
    .add_cron(
        "suspend_overdue",
        CronSchedule::Every(Duration::from_secs(3600)),
        SuspendOverdue::kind(),
        json!({}),
    )
}

#[cfg(test)]
mod tests {
    use super::signature::{parse, sign, verify, SignatureError, TOLERANCE_SECS};
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const T: i64 = 1_700_000_000;
    /// Computed independently: Python's
    /// `hmac.new(b"whsec_test_secret", b'1700000000.{"id":"evt_1","object":"event"}',
    /// hashlib.sha256).hexdigest()`.
    const KNOWN: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

    #[test]
    fn signing_matches_an_independent_implementation() {
        assert_eq!(sign(SECRET, T, BODY), KNOWN);
        let header = format!("t={T},v1={KNOWN}");
        assert_eq!(verify(Some(&header), BODY, SECRET, T), Ok(T));
    }

    #[test]
    fn headers_parse_with_several_v1_and_unknown_schemes() {
        let parsed = parse("t=12,v0=abc, v1=aa ,foo,v1=bb,x=1").expect("parses");
        assert_eq!(parsed.timestamp, 12);
        assert_eq!(parsed.v1, vec!["aa".to_string(), "bb".to_string()]);
        assert_eq!(parse("v1=aa"), Err(SignatureError::NoTimestamp));
        assert_eq!(parse("t=abc,v1=aa"), Err(SignatureError::NoTimestamp));
        assert_eq!(parse("t=12,v0=aa"), Err(SignatureError::NoV1));
        assert_eq!(parse(""), Err(SignatureError::NoTimestamp));
    }

    #[test]
    fn any_matching_v1_verifies_and_garbage_ones_are_skipped() {
        let header = format!(
            "t={T},v1=nothex,v1={},v1={KNOWN},v0={KNOWN}",
            "00".repeat(32)
        );
        assert_eq!(verify(Some(&header), BODY, SECRET, T + 10), Ok(T));
    }

    #[test]
    fn tampering_is_refused() {
        let good = format!("t={T},v1={KNOWN}");
        assert_eq!(verify(None, BODY, SECRET, T), Err(SignatureError::Missing));
        let body = br#"{"id":"evt_2","object":"event"}"#;
        assert_eq!(
            verify(Some(&good), body, SECRET, T),
            Err(SignatureError::Mismatch),
            "another body"
        );
        assert_eq!(
            verify(Some(&good), BODY, b"whsec_other", T),
            Err(SignatureError::Mismatch),
            "another secret"
        );
        let moved = format!("t={},v1={KNOWN}", T + 1);
        assert_eq!(
            verify(Some(&moved), BODY, SECRET, T),
            Err(SignatureError::Mismatch),
            "another timestamp with the old signature"
        );
        let v0_only = format!("t={T},v0={KNOWN}");
        assert_eq!(
            verify(Some(&v0_only), BODY, SECRET, T),
            Err(SignatureError::NoV1)
        );
        let upper = format!("t={T},v1={}", KNOWN.to_uppercase());
        assert_eq!(
            verify(Some(&upper), BODY, SECRET, T),
            Ok(T),
            "hex is hex whatever its case"
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_either_way() {
        let good = format!("t={T},v1={KNOWN}");
        assert_eq!(verify(Some(&good), BODY, SECRET, T + TOLERANCE_SECS), Ok(T));
        assert_eq!(
            verify(Some(&good), BODY, SECRET, T + TOLERANCE_SECS + 1),
            Err(SignatureError::Stale {
                age: TOLERANCE_SECS + 1
            })
        );
        assert_eq!(verify(Some(&good), BODY, SECRET, T - TOLERANCE_SECS), Ok(T));
        assert_eq!(
            verify(Some(&good), BODY, SECRET, T - TOLERANCE_SECS - 1),
            Err(SignatureError::Future {
                ahead: TOLERANCE_SECS + 1
            })
        );
        assert!(SignatureError::Stale { age: 301 }
            .to_string()
            .contains("301 s old"));
    }

    #[test]
    fn tenants_are_found_by_reference_or_metadata() {
        let tenant = TenantId::new();
        let checkout = json!({ "client_reference_id": tenant.to_string(), "metadata": {} });
        assert_eq!(named_tenant(&checkout), Some(tenant));
        let invoice = json!({
            "metadata": {},
            "parent": { "subscription_details": { "metadata": { "tenant_id": tenant.to_string() } } }
        });
        assert_eq!(named_tenant(&invoice), Some(tenant));
        let junk = json!({ "client_reference_id": "not-a-tenant", "metadata": { "tenant_id": tenant.to_string() } });
        assert_eq!(named_tenant(&junk), Some(tenant));
        assert_eq!(named_tenant(&json!({ "customer": "cus_1" })), None);
        assert_eq!(
            customer_of(&json!({ "customer": { "id": "cus_2" } })).as_deref(),
            Some("cus_2")
        );
    }

    #[test]
    fn the_wanted_plan_comes_from_the_subscription_or_its_price() {
        assert_eq!(
            plan_asked(&json!({ "metadata": { "plan": "business" } })).as_deref(),
            Some("business")
        );
        let by_price = json!({
            "metadata": {},
            "items": { "data": [ { "price": { "metadata": { "plan": "starter" } } } ] }
        });
        assert_eq!(plan_asked(&by_price).as_deref(), Some("starter"));
        assert_eq!(plan_asked(&json!({ "metadata": {} })), None);
    }
}
