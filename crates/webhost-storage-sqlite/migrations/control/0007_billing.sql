-- Stripe webhook events as received: the id deduplicates redeliveries, the
-- payload is kept for the record and for the job that applies it.
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    created      TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    processed_at TEXT
);

-- What Stripe has told the control plane of each tenant. A row appears with
-- the first event about the tenant; none means "nothing heard".
CREATE TABLE tenant_billing (
    tenant_id              TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    stripe_customer_id     TEXT,
    stripe_subscription_id TEXT,
    subscription_status    TEXT,
    past_due_since         TEXT,
    suspended_for          TEXT,
    plan_wanted            TEXT,
    payment_event_at       TEXT,
    updated_at             TEXT NOT NULL
);
CREATE INDEX tenant_billing_customer ON tenant_billing(stripe_customer_id);
CREATE INDEX tenant_billing_past_due ON tenant_billing(past_due_since)
    WHERE past_due_since IS NOT NULL;
