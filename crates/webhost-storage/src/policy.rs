//! Storage policy, written once for both backends: keyset pagination, how a
//! patch merges into a stored record, plan-limit checks and catalog
//! seeding. A backend reads and writes rows; what the rows should become is
//! decided here.

use chrono::{DateTime, Utc};

use crate::{
    AttemptVerdict, Conflict, ControlStore, CreateGeofenceError, CreateWebhookError, Geofence,
    GeofencePatch, Page, PageRequest, StorageError, StorageResult, TenantUsageRecord, UsageCount,
    Vehicle, VehiclePatch, Webhook, WebhookPatch, MAX_GEOFENCES, MAX_WEBHOOKS,
};
use webhost_domain::{Catalog, TenantId};

/// The most rows one page of a listing returns, whatever was asked.
pub const MAX_PAGE: u32 = 1_000;

/// Keyset pagination: a query asks for [`fetch_limit`] rows ordered by the
/// cursor, and [`Page::from_overfetch`] keeps `page_size` of them; the one
/// extra row says whether another page exists without a `COUNT`.
pub fn fetch_limit(page_size: u32) -> i64 {
    i64::from(page_size.max(1)) + 1
}

impl<C> PageRequest<C> {
    /// The rows a page holds (at least one).
    pub fn page_size(&self) -> u32 {
        self.limit.max(1)
    }

    /// The rows to ask the database for: one more than the page holds.
    pub fn fetch_limit(&self) -> i64 {
        fetch_limit(self.limit)
    }
}

impl<T, C> Page<T, C> {
    /// The page of `rows`, fetched with [`fetch_limit`]`(page_size)` in
    /// cursor order: at most `page_size` items, and the cursor of the last
    /// one when more rows followed.
    pub fn from_overfetch(mut rows: Vec<T>, page_size: u32, cursor: impl FnOnce(&T) -> C) -> Self {
        let page_size = page_size.max(1) as usize;
        let next_cursor = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last().map(cursor)
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }
}

impl VehiclePatch {
    /// `current` with the patch applied (`updated_at` is the writer's).
    pub fn merge(self, current: Vehicle) -> Vehicle {
        Vehicle {
            name: self.name.unwrap_or(current.name),
            device_id: self.device_id.unwrap_or(current.device_id),
            plate: self.plate.unwrap_or(current.plate),
            group: self.group.unwrap_or(current.group),
            attributes: self.attributes.unwrap_or(current.attributes),
            ..current
        }
    }
}

impl GeofencePatch {
    /// `current` with the patch applied (`updated_at` is the writer's).
    pub fn merge(self, current: Geofence) -> Geofence {
        Geofence {
            name: self.name.unwrap_or(current.name),
            shape: self.shape.unwrap_or(current.shape),
            ..current
        }
    }
}

impl WebhookPatch {
    /// `current` with the patch applied, stamped `now`. Enabling a webhook
    /// gives it a fresh start: no failure count, no disabled reason.
    pub fn merge(self, current: Webhook, now: DateTime<Utc>) -> Webhook {
        let enabling = self.enabled == Some(true);
        Webhook {
            url: self.url.unwrap_or(current.url),
            events: self.events.unwrap_or(current.events),
            enabled: self.enabled.unwrap_or(current.enabled),
            description: self.description.unwrap_or(current.description),
            consecutive_failures: if enabling {
                0
            } else {
                current.consecutive_failures
            },
            disabled_reason: if enabling {
                None
            } else {
                current.disabled_reason
            },
            updated_at: now,
            ..current
        }
    }
}

impl Webhook {
    /// This webhook after an attempt judged `verdict`, at `now`: a delivery
    /// clears the failure count, a given-up event adds one, and reaching
    /// the verdict's threshold disables an enabled webhook with its reason.
    pub fn after_attempt(self, verdict: &AttemptVerdict, now: DateTime<Utc>) -> Webhook {
        match verdict {
            AttemptVerdict::Delivered => Webhook {
                consecutive_failures: 0,
                ..self
            },
            AttemptVerdict::WillRetry => self,
            AttemptVerdict::GaveUp {
                disable_after,
                reason,
            } => {
                let failures = self.consecutive_failures.saturating_add(1);
                if self.enabled && failures >= *disable_after {
                    Webhook {
                        consecutive_failures: failures,
                        enabled: false,
                        disabled_reason: Some(reason.clone()),
                        updated_at: now,
                        ..self
                    }
                } else {
                    Webhook {
                        consecutive_failures: failures,
                        ..self
                    }
                }
            }
        }
    }
}

/// A plan limit: `used` of `limit` taken. Checked inside the writer's
/// transaction that inserts, so two creations cannot both take the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub used: i64,
    pub limit: u32,
}

impl Quota {
    fn full(self) -> bool {
        self.used >= i64::from(self.limit)
    }

    /// Room for one more vehicle, or the plan's vehicle-limit conflict.
    pub fn vehicles(used: i64, limit: u32) -> StorageResult<()> {
        if (Quota { used, limit }).full() {
            return Err(StorageError::Conflict(Conflict::VehicleLimit { limit }));
        }
        Ok(())
    }

    /// Room for one more geofence ([`MAX_GEOFENCES`] per account).
    pub fn geofences(used: i64) -> Result<(), CreateGeofenceError> {
        let limit = MAX_GEOFENCES;
        if (Quota { used, limit }).full() {
            return Err(CreateGeofenceError::LimitReached { limit });
        }
        Ok(())
    }

    /// Room for one more webhook ([`MAX_WEBHOOKS`] per account).
    pub fn webhooks(used: i64) -> Result<(), CreateWebhookError> {
        let limit = MAX_WEBHOOKS;
        if (Quota { used, limit }).full() {
            return Err(CreateWebhookError::LimitReached { limit });
        }
        Ok(())
    }
}

/// Seeds [`Catalog::default_seed`] into a control store that holds no
/// catalog yet (a new database); an existing catalog is left alone.
pub async fn seed_catalog(store: &impl ControlStore) -> StorageResult<()> {
    match store.catalog().await {
        Ok(_) => Ok(()),
        Err(StorageError::NotFound(_)) => store.save_catalog(&Catalog::default_seed()).await,
        Err(err) => Err(err),
    }
}

/// How long finished jobs and logs are kept before the daily purge.
pub mod keep {
    use chrono::TimeDelta;

    /// Succeeded and cancelled jobs.
    pub const SUCCEEDED_JOBS: TimeDelta = TimeDelta::days(7);
    /// Failed jobs: longer, someone may still be looking into them.
    pub const FAILED_JOBS: TimeDelta = TimeDelta::days(30);
    /// Webhook delivery attempts (`GET /api/v1/webhooks/{id}/deliveries`).
    pub const WEBHOOK_ATTEMPTS: TimeDelta = TimeDelta::days(30);
}

/// `counts` with one entry per tenant (a tally flushed twice in one call
/// is summed), so one upsert touches each row once.
pub fn usage_by_tenant(counts: &[UsageCount]) -> Vec<UsageCount> {
    let mut summed: std::collections::BTreeMap<TenantId, UsageCount> = Default::default();
    for c in counts {
        let entry = summed.entry(c.tenant_id).or_insert(UsageCount {
            tenant_id: c.tenant_id,
            ..UsageCount::default()
        });
        entry.positions_ingested += c.positions_ingested;
        entry.api_requests += c.api_requests;
    }
    summed.into_values().collect()
}

/// The bytes of `total_bytes` that `rows` of `all_rows` take: storage is
/// shared out in proportion to rows, the rows of one table being alike.
pub fn bytes_share(total_bytes: u64, rows: u64, all_rows: u64) -> u64 {
    if all_rows == 0 {
        return 0;
    }
    (u128::from(total_bytes) * u128::from(rows) / u128::from(all_rows)) as u64
}

/// Sets each record's `storage_bytes`: the position storage's
/// `total_bytes` in its share of the positions stored.
pub fn share_storage(records: &mut [TenantUsageRecord], total_bytes: u64) {
    let all: u64 = records.iter().map(|r| r.usage.positions_stored).sum();
    for r in records {
        r.usage.storage_bytes = bytes_share(total_bytes, r.usage.positions_stored, all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overfetch_keeps_page_size_and_points_at_the_last_kept_row() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |n: &i32| *n);
        assert_eq!(page.data, vec![1, 2]);
        assert_eq!(page.next_cursor, Some(2));
        let last = Page::from_overfetch(vec![1, 2], 2, |n: &i32| *n);
        assert_eq!(last.next_cursor, None);
        assert_eq!(fetch_limit(0), 2, "a zero limit still pages one row");
    }

    #[test]
    fn quotas_refuse_at_the_limit_not_before() {
        assert!(Quota::vehicles(4, 5).is_ok());
        assert!(matches!(
            Quota::vehicles(5, 5),
            Err(StorageError::Conflict(Conflict::VehicleLimit { limit: 5 }))
        ));
        assert!(Quota::webhooks(i64::from(MAX_WEBHOOKS) - 1).is_ok());
        assert!(Quota::webhooks(i64::from(MAX_WEBHOOKS)).is_err());
        assert!(Quota::geofences(i64::from(MAX_GEOFENCES)).is_err());
    }

    #[test]
    fn storage_is_shared_by_rows_and_usage_is_summed_per_tenant() {
        assert_eq!(bytes_share(1_000, 1, 4), 250);
        assert_eq!(bytes_share(1_000, 0, 0), 0);
        let t = TenantId::new();
        let count = |p, r| UsageCount {
            tenant_id: t,
            positions_ingested: p,
            api_requests: r,
        };
        assert_eq!(
            usage_by_tenant(&[count(2, 1), count(3, 4)]),
            vec![count(5, 5)]
        );
    }
}
