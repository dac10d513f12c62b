-- Stripe webhook events as received: the id deduplicates redeliveries, the
-- payload is kept for the record and for the job that applies it.
-- (New tables only: the version still running is unaffected.)
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    created      TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    payload      JSONB NOT NULL,
    processed_at TIMESTAMPTZ
);

-- What Stripe has told the control plane of each tenant. A row appears with
-- the first event about the tenant; none means "nothing heard".
CREATE TABLE tenant_billing (
    tenant_id              UUID PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    stripe_customer_id     TEXT,
    stripe_subscription_id TEXT,
    subscription_status    TEXT,
    past_due_since         TIMESTAMPTZ,
    suspended_for          TEXT,
    plan_wanted            TEXT,
    payment_event_at       TIMESTAMPTZ,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX tenant_billing_customer ON tenant_billing(stripe_customer_id);
CREATE INDEX tenant_billing_past_due ON tenant_billing(past_due_since)
    WHERE past_due_since IS NOT NULL;
