//! Webhooks and their delivery log on PostgreSQL. Creates lock the tenant
//! row (count-then-insert cannot overshoot the limit); an attempt's failure
//! count moves in one `UPDATE`, so concurrent deliveries of one webhook
//! never lose a count.

use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use webhost_domain::{EventId, JobId, ShortText, TenantId};
use webhost_storage::{
    fetch_limit, AttemptVerdict, CreateWebhookError, EventType, NewWebhook, Page, PageRequest,
    Quota, StorageError, StorageResult, Webhook, WebhookAttempt, WebhookAttemptId, WebhookId,
    WebhookPatch, MAX_PAGE,
};

use crate::{corrupt, unexpected, PgCellStore};

pub(crate) const WEBHOOK_COLUMNS: &str = "id, url, events, enabled, description, secret, \
     consecutive_failures, disabled_reason, created_at, updated_at";
pub(crate) const ATTEMPT_COLUMNS: &str =
    "id, webhook_id, delivery_id, event_id, event_type, attempt, status_code, error, duration_ms, at";

pub(crate) fn event_names(events: &[EventType]) -> Vec<&'static str> {
    events.iter().map(|e| e.as_str()).collect()
}

pub(crate) fn webhook_from_row(row: &PgRow) -> StorageResult<Webhook> {
    let names: Vec<String> = row.try_get("events").map_err(unexpected)?;
    let events = names
        .iter()
        .map(|n| EventType::parse(n).ok_or_else(|| corrupt("event type", n)))
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(Webhook {
        id: WebhookId::from_uuid(row.try_get("id").map_err(unexpected)?),
        url: row.try_get("url").map_err(unexpected)?,
        events,
        enabled: row.try_get("enabled").map_err(unexpected)?,
        description: row
            .try_get::<Option<String>, _>("description")
            .map_err(unexpected)?
            .map(ShortText::from_trusted),
        secret: row.try_get("secret").map_err(unexpected)?,
        consecutive_failures: row
            .try_get::<i32, _>("consecutive_failures")
            .map_err(unexpected)?
            .max(0) as u32,
        disabled_reason: row.try_get("disabled_reason").map_err(unexpected)?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

pub(crate) fn attempt_from_row(row: &PgRow) -> StorageResult<WebhookAttempt> {
    let kind: String = row.try_get("event_type").map_err(unexpected)?;
    Ok(WebhookAttempt {
        id: WebhookAttemptId::from_uuid(row.try_get("id").map_err(unexpected)?),
        webhook_id: WebhookId::from_uuid(row.try_get("webhook_id").map_err(unexpected)?),
        delivery_id: JobId::from_uuid(row.try_get("delivery_id").map_err(unexpected)?),
        event_id: EventId::from_uuid(row.try_get("event_id").map_err(unexpected)?),
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt("event type", &kind))?,
        attempt: row.try_get::<i32, _>("attempt").map_err(unexpected)?.max(0) as u32,
        status_code: row
            .try_get::<Option<i32>, _>("status_code")
            .map_err(unexpected)?
            .map(|s| u16::try_from(s).unwrap_or(0)),
        error: row.try_get("error").map_err(unexpected)?,
        duration_ms: row
            .try_get::<i32, _>("duration_ms")
            .map_err(unexpected)?
            .max(0) as u32,
        at: row.try_get("at").map_err(unexpected)?,
    })
}

pub(crate) fn int4(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgCellStore {
    pub(crate) async fn create_webhook_impl(
        &self,
        tenant: TenantId,
        webhook: NewWebhook,
    ) -> Result<Webhook, CreateWebhookError> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // Locking the tenant row serialises concurrent creates of one tenant.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant").into());
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?;
        Quota::webhooks(count)?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (id, tenant_id, url, events, enabled, description, secret, \
             consecutive_failures, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, TRUE, $5, $6, 0, $7, $7) RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(webhook.id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(&webhook.url)
        .bind(event_names(&webhook.events))
        .bind(webhook.description.as_ref().map(ShortText::as_str))
        .bind(&webhook.secret)
        .bind(Utc::now())
        .fetch_one(&mut *tx)
        .await
        .map_err(unexpected)?;
        let created = webhook_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(created)
    }

    pub(crate) async fn webhooks_impl(&self, tenant: TenantId) -> StorageResult<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        rows.iter().map(webhook_from_row).collect()
    }

    pub(crate) async fn webhook_impl(
        &self,
        tenant: TenantId,
        id: WebhookId,
    ) -> StorageResult<Webhook> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unexpected)?
        .ok_or(StorageError::NotFound("webhook"))?;
        webhook_from_row(&row)
    }

    pub(crate) async fn update_webhook_impl(
        &self,
        tenant: TenantId,
        id: WebhookId,
        patch: WebhookPatch,
    ) -> StorageResult<Webhook> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let current = locked_webhook(&mut tx, tenant, id).await?;
        let saved = save_webhook(&mut tx, tenant, &patch.merge(current, Utc::now())).await?;
        tx.commit().await.map_err(unexpected)?;
        Ok(saved)
    }

    pub(crate) async fn delete_webhook_impl(
        &self,
        tenant: TenantId,
        id: WebhookId,
    ) -> StorageResult<()> {
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(unexpected)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("webhook"));
        }
        Ok(())
    }

    pub(crate) async fn record_webhook_attempt_impl(
        &self,
        tenant: TenantId,
        attempt: WebhookAttempt,
        verdict: AttemptVerdict,
    ) -> StorageResult<Webhook> {
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        let current = locked_webhook(&mut tx, tenant, attempt.webhook_id).await?;
        let webhook = save_webhook(
            &mut tx,
            tenant,
            &current.after_attempt(&verdict, Utc::now()),
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO webhook_deliveries (tenant_id, {ATTEMPT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(tenant.as_uuid())
        .bind(attempt.id.as_uuid())
        .bind(attempt.webhook_id.as_uuid())
        .bind(attempt.delivery_id.as_uuid())
        .bind(attempt.event_id.as_uuid())
        .bind(attempt.event_type.as_str())
        .bind(int4(attempt.attempt))
        .bind(attempt.status_code.map(i32::from))
        .bind(&attempt.error)
        .bind(int4(attempt.duration_ms))
        .bind(attempt.at)
        .execute(&mut *tx)
        .await
        .map_err(unexpected)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(webhook)
    }

    pub(crate) async fn webhook_attempts_impl(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        page: PageRequest<WebhookAttemptId>,
    ) -> StorageResult<Page<WebhookAttempt, WebhookAttemptId>> {
        // The webhook must be the tenant's: another tenant's id is missing.
        self.webhook_impl(tenant, webhook).await?;
        let limit = page.limit.clamp(1, MAX_PAGE);
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE tenant_id = $1 \
             AND webhook_id = $2 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(tenant.as_uuid())
        .bind(webhook.as_uuid())
        .bind(page.after.map(|id| id.as_uuid()))
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected)?;
        let data = rows
            .iter()
            .map(attempt_from_row)
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(data, limit, |a| a.id))
    }
}

/// The tenant's webhook `id`, locked for the rest of the transaction.
async fn locked_webhook(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: WebhookId,
) -> StorageResult<Webhook> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(unexpected)?
    .ok_or(StorageError::NotFound("webhook"))?;
    webhook_from_row(&row)
}

/// Writes what the policy decided a webhook becomes.
async fn save_webhook(
    conn: &mut PgConnection,
    tenant: TenantId,
    webhook: &Webhook,
) -> StorageResult<Webhook> {
    let row = sqlx::query(&format!(
        "UPDATE webhooks SET url = $1, events = $2, description = $3, enabled = $4, \
         consecutive_failures = $5, disabled_reason = $6, updated_at = $7 \
         WHERE tenant_id = $8 AND id = $9 RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(&webhook.url)
    .bind(event_names(&webhook.events))
    .bind(webhook.description.as_ref().map(ShortText::as_str))
    .bind(webhook.enabled)
    .bind(int4(webhook.consecutive_failures))
    .bind(&webhook.disabled_reason)
    .bind(webhook.updated_at)
    .bind(tenant.as_uuid())
    .bind(webhook.id.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(unexpected)?;
    webhook_from_row(&row)
}
