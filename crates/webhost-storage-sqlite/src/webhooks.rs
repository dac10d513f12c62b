//! Webhooks and their delivery log on SQLite. Every write goes through the
//! one writer connection, so count-then-insert (the limit) and
//! log-then-count (the failure count) need no further locking.

use chrono::Utc;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use webhost_domain::{EventId, JobId, ShortText, TenantId};
use webhost_storage::{
    fetch_limit, AttemptVerdict, CreateWebhookError, EventType, NewWebhook, Page, PageRequest,
    Quota, StorageError, StorageResult, Webhook, WebhookAttempt, WebhookAttemptId, WebhookId,
    WebhookPatch, MAX_PAGE,
};

use crate::{corrupt, parse_uuid, unexpected, SqliteCellStore};

pub(crate) const WEBHOOK_COLUMNS: &str = "id, url, events, enabled, description, secret, \
     consecutive_failures, disabled_reason, created_at, updated_at";
pub(crate) const ATTEMPT_COLUMNS: &str =
    "id, webhook_id, delivery_id, event_id, event_type, attempt, status_code, error, duration_ms, at";

pub(crate) fn events_text(events: &[EventType]) -> String {
    serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

pub(crate) fn webhook_from_row(row: &SqliteRow) -> StorageResult<Webhook> {
    let events: String = row.try_get("events").map_err(unexpected)?;
    let names: Vec<String> =
        serde_json::from_str(&events).map_err(|_| corrupt("webhook events", &events))?;
    let events = names
        .iter()
        .map(|n| EventType::parse(n).ok_or_else(|| corrupt("event type", n)))
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(Webhook {
        id: WebhookId::from_uuid(parse_uuid(
            &row.try_get::<String, _>("id").map_err(unexpected)?,
        )?),
        url: row.try_get("url").map_err(unexpected)?,
        events,
        enabled: row.try_get("enabled").map_err(unexpected)?,
        description: row
            .try_get::<Option<String>, _>("description")
            .map_err(unexpected)?
            .map(ShortText::from_trusted),
        secret: row.try_get("secret").map_err(unexpected)?,
        consecutive_failures: row
            .try_get::<i64, _>("consecutive_failures")
            .map_err(unexpected)?
            .max(0) as u32,
        disabled_reason: row.try_get("disabled_reason").map_err(unexpected)?,
        created_at: row.try_get("created_at").map_err(unexpected)?,
        updated_at: row.try_get("updated_at").map_err(unexpected)?,
    })
}

pub(crate) fn attempt_from_row(row: &SqliteRow) -> StorageResult<WebhookAttempt> {
    let uuid = |column: &str| -> StorageResult<uuid::Uuid> {
        parse_uuid(&row.try_get::<String, _>(column).map_err(unexpected)?)
    };
    let kind: String = row.try_get("event_type").map_err(unexpected)?;
    Ok(WebhookAttempt {
        id: WebhookAttemptId::from_uuid(uuid("id")?),
        webhook_id: WebhookId::from_uuid(uuid("webhook_id")?),
        delivery_id: JobId::from_uuid(uuid("delivery_id")?),
        event_id: EventId::from_uuid(uuid("event_id")?),
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt("event type", &kind))?,
        attempt: row.try_get::<i64, _>("attempt").map_err(unexpected)?.max(0) as u32,
        status_code: row
            .try_get::<Option<i64>, _>("status_code")
            .map_err(unexpected)?
            .map(|s| u16::try_from(s).unwrap_or(0)),
        error: row.try_get("error").map_err(unexpected)?,
        duration_ms: row
            .try_get::<i64, _>("duration_ms")
            .map_err(unexpected)?
            .clamp(0, i64::from(u32::MAX)) as u32,
        at: row.try_get("at").map_err(unexpected)?,
    })
}

impl SqliteCellStore {
    pub(crate) async fn create_webhook_impl(
        &self,
        tenant: TenantId,
        webhook: NewWebhook,
    ) -> Result<Webhook, CreateWebhookError> {
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unexpected)?;
        if exists.is_none() {
            return Err(StorageError::NotFound("tenant").into());
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE tenant_id = ?")
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(unexpected)?;
        Quota::webhooks(count)?;
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (id, tenant_id, url, events, enabled, description, secret, \
             consecutive_failures, created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?, 0, ?, ?) \
             RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(webhook.id.to_string())
        .bind(tenant.to_string())
        .bind(&webhook.url)
        .bind(events_text(&webhook.events))
        .bind(webhook.description.as_ref().map(ShortText::as_str))
        .bind(&webhook.secret)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(unexpected)?;
        let created = webhook_from_row(&row)?;
        tx.commit().await.map_err(unexpected)?;
        Ok(created)
    }

    pub(crate) async fn webhooks_impl(&self, tenant: TenantId) -> StorageResult<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ? ORDER BY id"
        ))
        .bind(tenant.to_string())
        .fetch_all(&self.pools.reader)
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
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pools.reader)
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
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
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
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&self.pools.writer)
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
        let mut tx = self.pools.writer.begin().await.map_err(unexpected)?;
        let current = locked_webhook(&mut tx, tenant, attempt.webhook_id).await?;
        let webhook = save_webhook(
            &mut tx,
            tenant,
            &current.after_attempt(&verdict, Utc::now()),
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO webhook_deliveries (tenant_id, {ATTEMPT_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(tenant.to_string())
        .bind(attempt.id.to_string())
        .bind(attempt.webhook_id.to_string())
        .bind(attempt.delivery_id.to_string())
        .bind(attempt.event_id.to_string())
        .bind(attempt.event_type.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(attempt.status_code.map(i64::from))
        .bind(&attempt.error)
        .bind(i64::from(attempt.duration_ms))
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
        let before = page.after.map(|id| id.to_string());
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE tenant_id = ? \
             AND webhook_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(webhook.to_string())
        .bind(&before)
        .bind(&before)
        .bind(fetch_limit(limit))
        .fetch_all(&self.pools.reader)
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
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: WebhookId,
) -> StorageResult<Webhook> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.to_string())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(unexpected)?
    .ok_or(StorageError::NotFound("webhook"))?;
    webhook_from_row(&row)
}

/// Writes what the policy decided a webhook becomes.
async fn save_webhook(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    webhook: &Webhook,
) -> StorageResult<Webhook> {
    let row = sqlx::query(&format!(
        "UPDATE webhooks SET url = ?, events = ?, description = ?, enabled = ?, \
         consecutive_failures = ?, disabled_reason = ?, updated_at = ? \
         WHERE tenant_id = ? AND id = ? RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(&webhook.url)
    .bind(events_text(&webhook.events))
    .bind(webhook.description.as_ref().map(ShortText::as_str))
    .bind(webhook.enabled)
    .bind(i64::from(webhook.consecutive_failures))
    .bind(&webhook.disabled_reason)
    .bind(webhook.updated_at)
    .bind(tenant.to_string())
    .bind(webhook.id.to_string())
    .fetch_one(&mut *conn)
    .await
    .map_err(unexpected)?;
    webhook_from_row(&row)
}
