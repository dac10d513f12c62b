//! Stories for webhooks on [`CellStore`]: the records, the limit, tenant
//! scoping, the delivery log with its failure count, and delivery jobs that
//! commit with their events.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use webhost_domain::{EventId, JobId, TenantId, VehicleId};
use webhost_storage::{
    AttemptVerdict, CellStore, CreateWebhookError, Event, EventType, IngestBatch, JobFilter,
    JobState, JobStore, NewEvent, NewJob, NewWebhook, PageRequest, WebhookAttempt,
    WebhookAttemptId, WebhookId, WebhookPatch, MAX_WEBHOOKS,
};

use crate::fixtures::{assert_not_found, assert_recent, bare_vehicle, cell_tenant, text};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

async fn a_tenant(store: &dyn CellStore) -> TenantId {
    let tenant = cell_tenant(50);
    let id = tenant.id;
    store.put_tenant(tenant).await.expect("put tenant");
    id
}

fn new_webhook(url: &str, events: Vec<EventType>) -> NewWebhook {
    NewWebhook {
        id: WebhookId::new(),
        url: url.to_string(),
        events,
        description: Some(text("Dispatch board")),
        secret: format!("whsec_{}", uuid::Uuid::new_v4().simple()),
    }
}

fn attempt(webhook: WebhookId, n: u32, status: Option<u16>) -> WebhookAttempt {
    WebhookAttempt {
        id: WebhookAttemptId::new(),
        webhook_id: webhook,
        delivery_id: JobId::new(),
        event_id: EventId::new(),
        event_type: EventType::GeofenceEnter,
        attempt: n,
        status_code: status,
        error: status.is_none().then(|| "connection refused".to_string()),
        duration_ms: 12,
        at: t0() + Duration::seconds(i64::from(n)),
    }
}

pub async fn webhooks_round_trip_and_patch(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let new = new_webhook("https://hooks.example.com/a", vec![EventType::Overspeed]);
    let created = store
        .create_webhook(tenant, new.clone())
        .await
        .expect("create");
    assert_eq!(created.id, new.id);
    assert_eq!(created.url, new.url);
    assert_eq!(created.events, [EventType::Overspeed]);
    assert!(created.enabled);
    assert_eq!(created.description, new.description);
    assert_eq!(created.secret, new.secret, "the secret is kept as given");
    assert_eq!(created.consecutive_failures, 0);
    assert_eq!(created.disabled_reason, None);
    assert_recent(created.created_at, "created_at");
    assert_eq!(
        store.webhook(tenant, new.id).await.expect("get"),
        created,
        "read back as created"
    );

    let every = store
        .create_webhook(tenant, new_webhook("http://hooks.example.com/b", vec![]))
        .await
        .expect("create");
    assert!(every.wants(EventType::DeviceOffline), "empty: every type");
    assert!(created.wants(EventType::Overspeed));
    assert!(!created.wants(EventType::GeofenceEnter));
    let listed = store.webhooks(tenant).await.expect("list");
    assert_eq!(listed, [created.clone(), every.clone()], "by id");

    let patched = store
        .update_webhook(
            tenant,
            created.id,
            WebhookPatch {
                url: Some("https://hooks.example.com/moved".into()),
                events: Some(vec![EventType::GeofenceEnter, EventType::GeofenceExit]),
                enabled: Some(false),
                description: Some(None),
            },
        )
        .await
        .expect("patch");
    assert_eq!(patched.url, "https://hooks.example.com/moved");
    assert_eq!(
        patched.events,
        [EventType::GeofenceEnter, EventType::GeofenceExit]
    );
    assert!(!patched.enabled);
    assert!(!patched.wants(EventType::GeofenceEnter), "disabled");
    assert_eq!(patched.description, None);
    assert_eq!(patched.secret, created.secret);
    assert!(patched.updated_at >= created.updated_at);

    let untouched = store
        .update_webhook(tenant, created.id, WebhookPatch::default())
        .await
        .expect("empty patch");
    assert_eq!(untouched.url, patched.url);
    assert_eq!(untouched.events, patched.events);
    assert!(!untouched.enabled);

    store
        .delete_webhook(tenant, every.id)
        .await
        .expect("delete");
    assert_not_found(store.webhook(tenant, every.id).await, "deleted webhook");
    assert_not_found(
        store.delete_webhook(tenant, every.id).await,
        "deleted twice",
    );
    assert_eq!(store.webhooks(tenant).await.expect("list").len(), 1);
}

pub async fn webhooks_are_tenant_scoped(store: &dyn CellStore) {
    let mine = a_tenant(store).await;
    let theirs = a_tenant(store).await;
    let hook = store
        .create_webhook(mine, new_webhook("https://hooks.example.com/x", vec![]))
        .await
        .expect("create");
    assert!(store.webhooks(theirs).await.expect("list").is_empty());
    assert_not_found(store.webhook(theirs, hook.id).await, "get");
    assert_not_found(
        store
            .update_webhook(
                theirs,
                hook.id,
                WebhookPatch {
                    enabled: Some(false),
                    ..WebhookPatch::default()
                },
            )
            .await,
        "update",
    );
    assert_not_found(store.delete_webhook(theirs, hook.id).await, "delete");
    assert_not_found(
        store
            .record_webhook_attempt(
                theirs,
                attempt(hook.id, 1, Some(200)),
                AttemptVerdict::Delivered,
            )
            .await,
        "record",
    );
    assert_not_found(
        store
            .webhook_attempts(
                theirs,
                hook.id,
                PageRequest {
                    after: None,
                    limit: 10,
                },
            )
            .await,
        "attempts",
    );
    let still = store.webhook(mine, hook.id).await.expect("still there");
    assert!(still.enabled, "untouched by the other tenant");

    // Deleting the tenant removes its webhooks.
    store.delete_tenant(mine).await.expect("delete tenant");
    assert_not_found(store.webhook(mine, hook.id).await, "after tenant delete");
}

pub async fn webhook_limit_is_enforced(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let mut ids = Vec::new();
    for n in 0..MAX_WEBHOOKS {
        let url = format!("https://hooks.example.com/{n}");
        ids.push(
            store
                .create_webhook(tenant, new_webhook(&url, vec![]))
                .await
                .expect("within the limit")
                .id,
        );
    }
    let refused = store
        .create_webhook(
            tenant,
            new_webhook("https://hooks.example.com/over", vec![]),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(CreateWebhookError::LimitReached {
                limit: MAX_WEBHOOKS
            })
        ),
        "{refused:?}"
    );
    // Another tenant has its own allowance; a deleted one frees a slot.
    let other = a_tenant(store).await;
    store
        .create_webhook(other, new_webhook("https://hooks.example.com/o", vec![]))
        .await
        .expect("other tenant");
    store.delete_webhook(tenant, ids[0]).await.expect("delete");
    store
        .create_webhook(
            tenant,
            new_webhook("https://hooks.example.com/again", vec![]),
        )
        .await
        .expect("a slot was freed");
    assert_not_found(
        store
            .create_webhook(
                TenantId::new(),
                new_webhook("https://a.example.com", vec![]),
            )
            .await
            .map_err(|e| match e {
                CreateWebhookError::Storage(e) => e,
                other => panic!("{other:?}"),
            }),
        "unknown tenant",
    );
}

/// Every attempt is logged, newest first; events that used up their
/// attempts count up, a delivery resets the count, and reaching the
/// threshold disables the webhook with the reason given. Enabling it again
/// clears both.
pub async fn attempts_are_logged_and_failures_disable(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let hook = store
        .create_webhook(tenant, new_webhook("https://hooks.example.com/f", vec![]))
        .await
        .expect("create");
    let gave_up = |n: u32| AttemptVerdict::GaveUp {
        disable_after: 3,
        reason: format!("failed {n} events in a row"),
    };
    let record = |a: WebhookAttempt, v: AttemptVerdict| store.record_webhook_attempt(tenant, a, v);

    let after = record(attempt(hook.id, 1, Some(500)), AttemptVerdict::WillRetry)
        .await
        .expect("retry");
    assert_eq!(after.consecutive_failures, 0, "a retry counts nothing yet");
    let after = record(attempt(hook.id, 2, None), gave_up(1))
        .await
        .expect("gave up");
    assert_eq!(after.consecutive_failures, 1);
    let after = record(attempt(hook.id, 1, Some(204)), AttemptVerdict::Delivered)
        .await
        .expect("delivered");
    assert_eq!(after.consecutive_failures, 0, "a delivery resets");
    for n in 1..=2 {
        let after = record(attempt(hook.id, 1, Some(410)), gave_up(n))
            .await
            .expect("gave up");
        assert_eq!(after.consecutive_failures, n);
        assert!(after.enabled);
    }
    let after = record(attempt(hook.id, 1, Some(503)), gave_up(3))
        .await
        .expect("third");
    assert!(!after.enabled, "disabled at the threshold");
    assert_eq!(
        after.disabled_reason.as_deref(),
        Some("failed 3 events in a row")
    );
    // Late results of a disabled webhook change nothing but the count.
    let after = record(attempt(hook.id, 1, Some(500)), gave_up(4))
        .await
        .expect("late");
    assert_eq!(
        after.disabled_reason.as_deref(),
        Some("failed 3 events in a row"),
        "the first reason stays"
    );

    let page = store
        .webhook_attempts(
            tenant,
            hook.id,
            PageRequest {
                after: None,
                limit: 4,
            },
        )
        .await
        .expect("attempts");
    assert_eq!(page.data.len(), 4);
    assert_eq!(page.data[0].status_code, Some(500), "newest first");
    assert_eq!(page.data[1].status_code, Some(503));
    assert!(page.data.windows(2).all(|w| w[0].id > w[1].id));
    let rest = store
        .webhook_attempts(
            tenant,
            hook.id,
            PageRequest {
                after: page.next_cursor,
                limit: 4,
            },
        )
        .await
        .expect("next page");
    assert_eq!(rest.data.len(), 3, "7 attempts in all");
    assert_eq!(rest.next_cursor, None);
    let oldest = rest.data.last().expect("oldest");
    assert_eq!(oldest.attempt, 1);
    assert_eq!(oldest.status_code, Some(500));
    assert!(!oldest.delivered());
    let errored = &rest.data[1];
    assert_eq!(errored.status_code, None);
    assert_eq!(errored.error.as_deref(), Some("connection refused"));
    assert_eq!(errored.duration_ms, 12);
    assert!(rest.data[0].delivered());

    let enabled = store
        .update_webhook(
            tenant,
            hook.id,
            WebhookPatch {
                enabled: Some(true),
                ..WebhookPatch::default()
            },
        )
        .await
        .expect("enable");
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.consecutive_failures, 0);

    // Deleting the webhook deletes its log.
    store.delete_webhook(tenant, hook.id).await.expect("delete");
    assert_not_found(
        store
            .webhook_attempts(
                tenant,
                hook.id,
                PageRequest {
                    after: None,
                    limit: 10,
                },
            )
            .await,
        "log of a deleted webhook",
    );
}

fn delivery_job(key: &str) -> NewJob {
    NewJob {
        id: JobId::new(),
        queue: "default".into(),
        kind: "deliver_webhook".into(),
        payload: json!({ "key": key }),
        unique_key: Some(key.to_string()),
        max_attempts: 8,
        run_at: t0(),
    }
}

fn offline_event(tenant: TenantId, vehicle: VehicleId) -> NewEvent {
    NewEvent {
        tenant_id: tenant,
        event: Event {
            id: EventId::new(),
            kind: EventType::DeviceOffline,
            vehicle_id: vehicle,
            geofence_id: None,
            time: t0(),
            position: None,
        },
    }
}

/// Jobs given with a batch commit with its events (the cell's store is its
/// own job queue); a unique key an unfinished job holds is not enqueued
/// twice, and a batch that fails enqueues nothing.
pub async fn delivery_jobs_commit_with_their_events(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let van = store
        .create_vehicle(tenant, bare_vehicle("Van"))
        .await
        .expect("vehicle")
        .id;
    let queue: &dyn JobStore = store;
    let events = vec![offline_event(tenant, van)];
    let jobs = vec![delivery_job("webhook:a:1"), delivery_job("webhook:b:1")];
    store
        .insert_positions(IngestBatch {
            events: &events,
            jobs: &jobs,
            ..IngestBatch::default()
        })
        .await
        .expect("batch");
    let queued = queue
        .jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(queued.data.len(), 2);
    for job in &jobs {
        let stored = queue.job(job.id).await.expect("stored");
        assert_eq!(stored.state, JobState::Queued);
        assert_eq!(stored.payload, job.payload);
        assert_eq!(stored.unique_key, job.unique_key);
        assert_eq!(stored.max_attempts, 8);
        assert_eq!(stored.run_at, t0());
    }

    // The same key again (a second key new): only the new one is added.
    let again = vec![delivery_job("webhook:a:1"), delivery_job("webhook:c:1")];
    let more = vec![offline_event(tenant, van)];
    store
        .insert_positions(IngestBatch {
            events: &more,
            jobs: &again,
            ..IngestBatch::default()
        })
        .await
        .expect("batch");
    assert_not_found(queue.job(again[0].id).await, "a held key");
    queue.job(again[1].id).await.expect("a new key");

    // A failing batch (an event id repeated) enqueues nothing.
    let repeated = offline_event(tenant, van);
    let failing = vec![repeated.clone(), repeated];
    let lost = vec![delivery_job("webhook:d:1")];
    let failed = store
        .insert_positions(IngestBatch {
            events: &failing,
            jobs: &lost,
            ..IngestBatch::default()
        })
        .await;
    assert!(failed.is_err());
    assert_not_found(queue.job(lost[0].id).await, "job of a failed batch");

    // Jobs alone are a batch too.
    let alone = vec![delivery_job("webhook:e:1")];
    store
        .insert_positions(IngestBatch {
            jobs: &alone,
            ..IngestBatch::default()
        })
        .await
        .expect("jobs alone");
    queue.job(alone[0].id).await.expect("stored");
}

/// Delivery attempts logged before the cutoff go; newer ones stay.
pub async fn old_delivery_attempts_are_purged(store: &dyn CellStore) {
    let tenant = a_tenant(store).await;
    let hook = store
        .create_webhook(tenant, new_webhook("https://hooks.example.com/p", vec![]))
        .await
        .expect("create");
    for n in 1..=4 {
        store
            .record_webhook_attempt(
                tenant,
                attempt(hook.id, n, Some(200)),
                AttemptVerdict::Delivered,
            )
            .await
            .expect("record");
    }
    // Attempts 1 and 2 were logged before t0 + 3 s.
    let purged = store
        .purge_webhook_attempts(t0() + Duration::seconds(3))
        .await
        .expect("purge");
    assert_eq!(purged, 2);
    let left = store
        .webhook_attempts(
            tenant,
            hook.id,
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("attempts");
    let numbers: Vec<u32> = left.data.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, vec![4, 3], "newest first, the old ones gone");
}
