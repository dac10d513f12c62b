//! Stripe's webhook through the edge: signatures checked, events stored
//! once and applied once by the `billing` queue, past due → suspended
//! (reads work, writes answer 402) → paid again. Events are built on the
//! shapes of `specs/providers/stripe-fixtures3.json` (event, invoice,
//! subscription), trimmed to what matters and pointed at the test's tenant.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost::Overrides;
use webhost_control::billing::signature::sign;

use crate::helpers::{Account, Answer, TestApp};
use crate::stories;

const SECRET: &str = "whsec_test_0123456789abcdef";
const WEBHOOK: &str = "/api/v1/billing/stripe/webhook";

fn stripe(o: &mut Overrides) {
    o.stripe_webhook_secret = Some(SECRET.into());
}

/// A grace period of nothing: the first failed payment suspends, so the
/// suspension is seen without waiting days.
fn stripe_without_grace(o: &mut Overrides) {
    stripe(o);
    o.billing_grace_secs = Some(0);
}

/// Stories on an application tuned by `$tune`, on both engines.
macro_rules! tuned_stories {
    ($tune:ident: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite_with(super::$tune).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres_with(super::$tune).await {
                        super::$name(app).await;
                    }
                }
            }
        )*
    };
}

stories!(without_a_webhook_secret_the_webhook_is_unavailable);

tuned_stories!(
    stripe: a_failed_payment_makes_the_tenant_past_due_once,
    bad_signatures_are_refused_and_store_nothing,
    a_paid_invoice_clears_past_due,
    subscription_events_record_stripe_ids_and_the_wanted_plan,
    events_for_unknown_tenants_and_types_are_processed_and_ignored,
    a_paid_upgrade_moves_a_hobby_tenant_from_hetzner_to_fly,
);

tuned_stories!(stripe_without_grace: past_due_beyond_the_grace_period_suspends_writes_not_reads);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn event_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// An event envelope as the fixture's `event`, carrying `object`.
fn event(id: &str, kind: &str, object: Value) -> Value {
    json!({
        "api_version": "2024-06-20",
        "created": now(),
        "data": { "object": object },
        "id": id,
        "livemode": false,
        "object": "event",
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind
    })
}

/// The fixture's `invoice`, trimmed, for `tenant` (through the
/// subscription's metadata, as Stripe copies it onto invoices) or for a
/// customer alone when `tenant` is `None`.
fn invoice(tenant: Option<&str>, customer: &str, status: &str) -> Value {
    let metadata = tenant.map_or_else(|| json!({}), |t| json!({ "tenant_id": t }));
    json!({
        "account_country": "US",
        "amount_due": 4900,
        "amount_paid": if status == "paid" { 4900 } else { 0 },
        "amount_remaining": if status == "paid" { 0 } else { 4900 },
        "attempt_count": 1,
        "attempted": true,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": now(),
        "currency": "usd",
        "customer": customer,
        "id": format!("in_{}", uuid::Uuid::new_v4().simple()),
        "livemode": false,
        "metadata": {},
        "object": "invoice",
        "parent": {
            "quote_details": null,
            "subscription_details": {
                "metadata": metadata,
                "subscription": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
            },
            "type": "subscription_details"
        },
        "status": status,
        "total": 4900
    })
}

/// The fixture's `subscription`, trimmed, for `tenant` with `metadata`.
fn subscription(tenant: &str, customer: &str, status: &str, plan: Option<&str>) -> Value {
    let mut metadata = json!({ "tenant_id": tenant });
    if let Some(plan) = plan {
        metadata["plan"] = json!(plan);
    }
    json!({
        "billing_cycle_anchor": 1_234_567_890,
        "cancel_at_period_end": false,
        "collection_method": "charge_automatically",
        "created": 1_234_567_890,
        "currency": "usd",
        "customer": customer,
        "id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
        "items": {
            "data": [{
                "id": "si_QXhVnC2h0Jczwc",
                "metadata": {},
                "object": "subscription_item",
                "price": {
                    "active": true,
                    "currency": "usd",
                    "id": "price_1PgafmB7WZ01zgkW6dKueIc5",
                    "metadata": {},
                    "object": "price",
                    "product": "prod_QXg1hqf4jFNsqG",
                    "recurring": { "interval": "month", "interval_count": 1 },
                    "type": "recurring",
                    "unit_amount": 4900
                },
                "quantity": 1,
                "subscription": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
            }],
            "has_more": false,
            "object": "list"
        },
        "livemode": false,
        "metadata": metadata,
        "object": "subscription",
        "start_date": 1_234_567_890,
        "status": status
    })
}

/// POSTs `body` (exactly these bytes) to the webhook with `signature`.
async fn deliver_raw(app: &TestApp, body: &[u8], signature: Option<String>) -> Answer {
    let mut request = app
        .client
        .post(format!("{}{WEBHOOK}", app.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    TestApp::answer(request.send().await.expect("request sent")).await
}

fn signed(body: &[u8], secret: &str, t: i64) -> String {
    format!("t={t},v1={}", sign(secret.as_bytes(), t, body))
}

/// Delivers `event` signed as Stripe signs it; asserts 200.
async fn deliver(app: &TestApp, event: &Value) -> Answer {
    let body = serde_json::to_vec(event).expect("json");
    let answer = deliver_raw(app, &body, Some(signed(&body, SECRET, now()))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["received"], true, "{}", answer.body);
    answer
}

/// Polls until `done` holds; a minute at most.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The operator's row of `account`'s tenant.
async fn tenant_row(app: &TestApp, account: &Account) -> Value {
    let list = app
        .admin(Method::GET, "/api/admin/tenants?limit=1000", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["id"] == account.tenant_id.as_str())
        .cloned()
        .expect("the tenant is listed")
}

/// The `apply_stripe_event` jobs of event `id`.
async fn event_jobs(app: &TestApp, id: &str) -> Vec<Value> {
    let list = app
        .admin(
            Method::GET,
            "/api/admin/jobs?kind=apply_stripe_event&limit=1000",
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|j| j["unique_key"] == format!("stripe_event:{id}").as_str())
        .cloned()
        .collect()
}

/// Waits until event `id`'s one job has succeeded; answers it.
async fn applied(app: &TestApp, id: &str) -> Value {
    eventually(&format!("event {id} applied"), async || {
        let jobs = event_jobs(app, id).await;
        assert!(jobs.len() <= 1, "one job per event: {jobs:?}");
        jobs.into_iter().find(|j| {
            assert_ne!(j["state"], "failed", "{j}");
            j["state"] == "succeeded"
        })
    })
    .await
}

async fn without_a_webhook_secret_the_webhook_is_unavailable(app: TestApp) {
    let body = serde_json::to_vec(&event(&event_id(), "invoice.paid", json!({}))).expect("json");
    let answer = deliver_raw(&app, &body, Some(signed(&body, SECRET, now()))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error_code(), "billing_not_configured");
    assert!(answer.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("STRIPE_WEBHOOK_SECRET")));
}

async fn a_failed_payment_makes_the_tenant_past_due_once(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let id = event_id();
    let failed = event(
        &id,
        "invoice.payment_failed",
        invoice(Some(&account.tenant_id), "cus_QXg1o8vcGmoR32", "open"),
    );
    let first = deliver(&app, &failed).await;
    assert_eq!(first.body["duplicate"], false);
    let job = applied(&app, &id).await;
    assert_eq!(job["queue"], "billing");
    assert_eq!(job["progress"]["applied"], "past_due");

    let row = tenant_row(&app, &account).await;
    let since = row["billing"]["past_due_since"].clone();
    assert!(since.is_string(), "past due: {row}");
    assert_eq!(row["status"], "active", "within the grace period");
    // Past due is not suspended: writes still work.
    let vehicle = app.create_vehicle(&account, "Van 1", None).await;
    assert_eq!(vehicle.status, StatusCode::CREATED, "{}", vehicle.body);

    // Stripe redelivers the same event: acknowledged, nothing more.
    let again = deliver(&app, &failed).await;
    assert_eq!(again.body["duplicate"], true);
    // The same id with another body, signed again: still the first one.
    let mut forged = event(
        &id,
        "invoice.paid",
        invoice(Some(&account.tenant_id), "cus_QXg1o8vcGmoR32", "paid"),
    );
    forged["created"] = json!(now() + 1);
    let replay = deliver(&app, &forged).await;
    assert_eq!(replay.body["duplicate"], true);

    let jobs = event_jobs(&app, &id).await;
    assert_eq!(jobs.len(), 1, "applied once: {jobs:?}");
    let row = tenant_row(&app, &account).await;
    assert_eq!(row["billing"]["past_due_since"], since, "{row}");
    assert_eq!(row["status"], "active");
}

async fn bad_signatures_are_refused_and_store_nothing(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let id = event_id();
    let failed = event(
        &id,
        "invoice.payment_failed",
        invoice(Some(&account.tenant_id), "cus_QXg1o8vcGmoR32", "open"),
    );
    let body = serde_json::to_vec(&failed).expect("json");

    let refusals = [
        (None, "signature_missing", "missing"),
        (
            Some(signed(&body, "whsec_someone_else", now())),
            "signature_mismatch",
            "matches",
        ),
        (
            Some(format!(
                "t={},v0={}",
                now(),
                sign(SECRET.as_bytes(), now(), &body)
            )),
            "signature_malformed",
            "v1",
        ),
        (
            Some(signed(&body, SECRET, now() - 600)),
            "signature_expired",
            "old",
        ),
    ];
    for (signature, code, words) in refusals {
        let answer = deliver_raw(&app, &body, signature.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{signature:?}");
        assert_eq!(answer.error_code(), code, "{}", answer.body);
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(words)),
            "{}",
            answer.body
        );
    }
    // A body changed after signing.
    let signature = signed(&body, SECRET, now());
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let answer = deliver_raw(&app, &tampered, Some(signature)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "signature_mismatch");

    assert!(event_jobs(&app, &id).await.is_empty());
    assert!(tenant_row(&app, &account).await["billing"].is_null());
    // Nothing was stored: the genuine delivery is the first one.
    let genuine = deliver(&app, &failed).await;
    assert_eq!(genuine.body["duplicate"], false);
    applied(&app, &id).await;
}

async fn a_paid_invoice_clears_past_due(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let failed = event_id();
    deliver(
        &app,
        &event(
            &failed,
            "invoice.payment_failed",
            invoice(Some(&account.tenant_id), "cus_A", "open"),
        ),
    )
    .await;
    applied(&app, &failed).await;
    assert!(tenant_row(&app, &account).await["billing"]["past_due_since"].is_string());

    let paid = event_id();
    let mut body = event(
        &paid,
        "invoice.paid",
        invoice(Some(&account.tenant_id), "cus_A", "paid"),
    );
    body["created"] = json!(now() + 1);
    deliver(&app, &body).await;
    let job = applied(&app, &paid).await;
    assert_eq!(job["progress"]["applied"], "paid");
    let row = tenant_row(&app, &account).await;
    assert!(row["billing"]["past_due_since"].is_null(), "{row}");
    assert_eq!(row["status"], "active");
}

async fn past_due_beyond_the_grace_period_suspends_writes_not_reads(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let vehicle = app.create_vehicle(&account, "Van 1", None).await;
    assert_eq!(vehicle.status, StatusCode::CREATED, "{}", vehicle.body);

    let failed = event_id();
    deliver(
        &app,
        &event(
            &failed,
            "invoice.payment_failed",
            invoice(Some(&account.tenant_id), "cus_B", "open"),
        ),
    )
    .await;
    applied(&app, &failed).await;
    let row = eventually("the tenant is suspended", async || {
        let row = tenant_row(&app, &account).await;
        (row["status"] == "suspended").then_some(row)
    })
    .await;
    assert_eq!(row["billing"]["suspended_for"], "non_payment", "{row}");

    // Reads work.
    assert_eq!(app.vehicle_count(&account).await, 1);
    let latest = app.get("/api/v1/positions/latest", &account.api_key).await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.body);
    // Writes ask for the payment.
    let refused = app.create_vehicle(&account, "Van 2", None).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.body
    );
    assert_eq!(refused.error_code(), "payment_required");
    assert!(refused.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("payment method")));
    // The account's own pages stay reachable (to see the subscription).
    let sub = app.get("/api/v1/subscription", &account.token).await;
    assert_eq!(sub.status, StatusCode::OK, "{}", sub.body);

    // Paying lifts it.
    let paid = event_id();
    let mut body = event(
        &paid,
        "invoice.paid",
        invoice(Some(&account.tenant_id), "cus_B", "paid"),
    );
    body["created"] = json!(now() + 1);
    deliver(&app, &body).await;
    applied(&app, &paid).await;
    let row = tenant_row(&app, &account).await;
    assert_eq!(row["status"], "active", "{row}");
    assert!(row["billing"]["suspended_for"].is_null(), "{row}");
    let accepted = app.create_vehicle(&account, "Van 2", None).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
}

async fn subscription_events_record_stripe_ids_and_the_wanted_plan(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let updated = event_id();
    deliver(
        &app,
        &event(
            &updated,
            "customer.subscription.updated",
            subscription(&account.tenant_id, "cus_C", "active", Some("business")),
        ),
    )
    .await;
    assert_eq!(
        applied(&app, &updated).await["progress"]["applied"],
        "recorded"
    );
    let row = tenant_row(&app, &account).await;
    let billing = &row["billing"];
    assert_eq!(billing["stripe_customer_id"], "cus_C", "{row}");
    assert_eq!(
        billing["stripe_subscription_id"],
        "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    );
    assert_eq!(billing["subscription_status"], "active");
    // The paid plan is applied (same pool and region: limits in place),
    // and no longer wanted.
    assert_eq!(row["plan"], "business", "{row}");
    assert!(billing["plan_wanted"].is_null(), "{row}");

    // An invoice naming only the customer finds the tenant by it.
    let failed = event_id();
    deliver(
        &app,
        &event(
            &failed,
            "invoice.payment_failed",
            invoice(None, "cus_C", "open"),
        ),
    )
    .await;
    assert_eq!(
        applied(&app, &failed).await["progress"]["applied"],
        "past_due"
    );
    assert!(tenant_row(&app, &account).await["billing"]["past_due_since"].is_string());

    // The subscription ends: suspended.
    let deleted = event_id();
    deliver(
        &app,
        &event(
            &deleted,
            "customer.subscription.deleted",
            subscription(&account.tenant_id, "cus_C", "canceled", None),
        ),
    )
    .await;
    applied(&app, &deleted).await;
    let row = tenant_row(&app, &account).await;
    assert_eq!(row["status"], "suspended", "{row}");
    assert_eq!(row["billing"]["suspended_for"], "subscription_ended");
    assert_eq!(row["billing"]["subscription_status"], "canceled");

    // The customer subscribes again: a new subscription, active.
    let created = event_id();
    let mut again = subscription(&account.tenant_id, "cus_C", "active", None);
    again["id"] = json!("sub_1Pgc6rB7WZ01zgkWNewOne00");
    deliver(
        &app,
        &event(&created, "customer.subscription.created", again),
    )
    .await;
    applied(&app, &created).await;
    let row = tenant_row(&app, &account).await;
    assert_eq!(row["status"], "active", "{row}");
    assert!(row["billing"]["suspended_for"].is_null(), "{row}");
}

async fn events_for_unknown_tenants_and_types_are_processed_and_ignored(app: TestApp) {
    let stranger = event_id();
    deliver(
        &app,
        &event(
            &stranger,
            "invoice.payment_failed",
            invoice(
                Some(&uuid::Uuid::now_v7().to_string()),
                "cus_nobody",
                "open",
            ),
        ),
    )
    .await;
    let job = applied(&app, &stranger).await;
    assert_eq!(job["progress"]["applied"], "unknown_tenant");
    assert_eq!(job["attempts"], 1, "no retry loop");

    let other = event_id();
    deliver(
        &app,
        &event(
            &other,
            "plan.created",
            json!({ "id": "price_1", "object": "plan" }),
        ),
    )
    .await;
    assert_eq!(
        applied(&app, &other).await["progress"]["applied"],
        "ignored"
    );
}

/// Hobby → starter paid through Stripe: the signed webhook applies the plan
/// and the tenant moves from the `hetzner` pool to a `fly` cell in its
/// region, its data and credentials with it.
async fn a_paid_upgrade_moves_a_hobby_tenant_from_hetzner_to_fly(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let van = app.create_vehicle(&account, "Van", None).await;
    assert_eq!(van.status, StatusCode::CREATED, "{}", van.body);
    let van = van.body["id"].as_str().expect("id").to_string();
    let at = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let posted = app
        .post(
            "/api/v1/positions",
            Some(&account.api_key),
            json!({ "positions": [{ "vehicle_id": van, "time": at, "lat": 52.5, "lon": 13.4 }] }),
        )
        .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
    assert_eq!(tenant_row(&app, &account).await["pool"], "hetzner");

    let paid = event_id();
    deliver(
        &app,
        &event(
            &paid,
            "customer.subscription.updated",
            subscription(&account.tenant_id, "cus_UP", "active", Some("starter")),
        ),
    )
    .await;
    applied(&app, &paid).await;
    let moved = eventually("the tenant moved to a fly cell", async || {
        let row = tenant_row(&app, &account).await;
        let cell = app
            .admin(
                Method::GET,
                &format!("/api/admin/cells/{}", row["cell_id"].as_str()?),
                None,
            )
            .await;
        (cell.body["pool"] == "fly").then_some((row, cell.body))
    })
    .await;
    assert_eq!(moved.0["plan"], "starter", "{}", moved.0);
    assert_eq!(moved.1["region"], "fra", "{}", moved.1);
    let list = app.get("/api/v1/positions/latest", &account.token).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(
        list.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );
}
