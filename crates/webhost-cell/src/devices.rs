//! Fixes decoded by the edge's device listeners (OsmAnd, Teltonika). The
//! answer says, per fix, what is durably stored; the edge acknowledges the
//! device with that.
//!
//! - `POST /internal/v1/device-positions`: one tenant's fixes (the tenant
//!   is the credential's), answered with one [`DeviceIngestAnswer`]. The
//!   edge now batches; this stays for an edge of the previous version
//!   during a rolling deploy.
//! - `POST /internal/v1/device-positions/batch`: the edge coalesces the
//!   fixes of many device requests bound for this cell into one call. The
//!   body is `[[tenant_id, [fix, …]], …]`, one item per device request; the
//!   answer is `[DeviceIngestAnswer, …]`, one per item, in order. Every
//!   item's rows go to the group-commit writer together, so the call
//!   answers only after the commit that holds them all, and a failed commit
//!   fails the whole call (5xx): no item is told "stored" unless it is.
//!
//! **A fix is stored only for a vehicle of the tenant it was sent for.**
//! Its device is looked up in *that tenant's* directory (the cell's own
//! vehicles, invalidated on every vehicle write before the device is
//! released in the registry), never in the registry or across tenants. So
//! an edge whose device → tenant mapping is stale (it caches them) can only
//! have fixes refused here (listed in [`DeviceIngestAnswer::unknown_devices`]
//! so it can look the device up again), never stored under the wrong
//! tenant; a tenant that is not on this cell gets all its fixes refused the
//! same way.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use webhost_contract::{paths, DeviceIngestAnswer};
use webhost_domain::{Attributes, DeviceId, Fix, Position, RawFix, TenantId};
use webhost_http::auth::{Caller, TenantCaller};
use webhost_http::{ApiError, ApiJson};
use webhost_protocols::Fix as DeviceFix;
use webhost_storage::{NewPosition, StorageError};

use crate::directory::TenantDirectory;
use crate::CellState;

pub(crate) fn routes() -> Router<CellState> {
    Router::new()
        .route(paths::DEVICE_POSITIONS, post(ingest))
        .route(paths::DEVICE_POSITIONS_BATCH, post(ingest_batch))
}

fn too_many(fixes: usize) -> Result<(), ApiError> {
    if fixes > DeviceIngestAnswer::MAX_FIXES {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {} fixes per call", DeviceIngestAnswer::MAX_FIXES),
        ));
    }
    Ok(())
}

/// Checks `fixes` against the tenant's directory and plan, appending the
/// rows to store to `rows`. `duplicates` is filled in after the commit.
fn resolve(
    tenant: TenantId,
    directory: &TenantDirectory,
    fixes: Vec<DeviceFix>,
    now: DateTime<Utc>,
    rows: &mut Vec<NewPosition>,
) -> DeviceIngestAnswer {
    let oldest = now - Duration::days(i64::from(directory.retention_days));
    let mut answer = DeviceIngestAnswer::default();
    for (index, fix) in fixes.into_iter().enumerate() {
        // The tenant's own directory decides, never the registry: see the
        // module docs for why a stale sender cannot misfile a fix.
        let vehicle = DeviceId::parse(&fix.device_id)
            .ok()
            .and_then(|d| directory.devices.get(&d).copied());
        let Some(vehicle_id) = vehicle else {
            answer.rejected.push((
                index,
                format!("device '{}' has no vehicle here", fix.device_id),
            ));
            answer.unknown_devices.push(index);
            continue;
        };
        let raw = RawFix {
            time: Some(fix.time),
            lat: fix.lat,
            lon: fix.lon,
            speed: fix.speed_kmh,
            heading: fix.heading,
            altitude: fix.altitude,
            accuracy: fix.accuracy,
            valid: Some(fix.valid),
            attributes: Attributes::from_trusted(fix.attributes),
        };
        match Fix::parse(raw, now) {
            Ok(parsed) if parsed.time >= oldest => {
                answer.accepted += 1;
                rows.push(NewPosition {
                    tenant_id: tenant,
                    position: Position {
                        vehicle_id,
                        fix: parsed,
                    },
                });
            }
            Ok(_) => answer
                .rejected
                .push((index, "older than the plan keeps history".into())),
            Err(err) => answer.rejected.push((index, err.to_string())),
        }
    }
    answer
}

/// Counts, per answer, the rows of its `span` that were already stored.
fn count_duplicates(
    answers: &mut [DeviceIngestAnswer],
    spans: &[Range<usize>],
    stored: &[bool],
) -> Result<(), ApiError> {
    for (answer, span) in answers.iter_mut().zip(spans) {
        let flags = stored.get(span.clone()).ok_or_else(|| {
            ApiError::unexpected(anyhow::anyhow!(
                "the writer answered {} flags for more rows",
                stored.len()
            ))
        })?;
        answer.duplicates = flags.iter().filter(|new| !**new).count();
    }
    Ok(())
}

async fn ingest(
    caller: TenantCaller,
    State(state): State<CellState>,
    ApiJson(fixes): ApiJson<Vec<DeviceFix>>,
) -> Result<ApiJson<DeviceIngestAnswer>, ApiError> {
    too_many(fixes.len())?;
    // Held until the commit: a fence raised meanwhile waits for it.
    let _permit = state.fence.permit().await?;
    if state.fence.is_read_only(caller.tenant).await? {
        return Ok(ApiJson(DeviceIngestAnswer::all_read_only(fixes.len())));
    }
    let directory = state.directory.get(caller.tenant).await?;
    let mut rows = Vec::with_capacity(fixes.len());
    let mut answer = resolve(caller.tenant, &directory, fixes, Utc::now(), &mut rows);
    let span = 0..rows.len();
    let stored = state.ingest.store(rows).await?;
    count_duplicates(
        std::slice::from_mut(&mut answer),
        std::slice::from_ref(&span),
        &stored,
    )?;
    Ok(ApiJson(answer))
}

#[tracing::instrument(skip_all, fields(items = items.len()))]
async fn ingest_batch(
    caller: Caller,
    State(state): State<CellState>,
    ApiJson(items): ApiJson<Vec<(TenantId, Vec<DeviceFix>)>>,
) -> Result<ApiJson<Vec<DeviceIngestAnswer>>, ApiError> {
    if caller.issuer != webhost_contract::EDGE {
        return Err(ApiError::forbidden(
            "only the edge may post device fixes for several tenants",
        ));
    }
    // A credential bound to one tenant speaks for that tenant only.
    if let Some(only) = caller.tenant {
        if items.iter().any(|(tenant, _)| *tenant != only) {
            return Err(ApiError::forbidden(
                "the credential's tenant does not match the items",
            ));
        }
    }
    // Items count as at least one fix each, so an item list of empty
    // fix lists is bounded too.
    too_many(items.iter().map(|(_, fixes)| fixes.len().max(1)).sum())?;
    let now = Utc::now();
    // Held until the commit: a fence raised meanwhile waits for it.
    let _permit = state.fence.permit().await?;
    // Most items of a call share a few tenants: one directory read each.
    let mut directories: HashMap<TenantId, Option<Arc<TenantDirectory>>> = HashMap::new();
    let mut rows = Vec::with_capacity(items.len());
    let mut answers = Vec::with_capacity(items.len());
    let mut spans = Vec::with_capacity(items.len());
    for (tenant, fixes) in items {
        if state.fence.is_read_only(tenant).await? {
            // Being moved: nothing stored here; the edge resends them where
            // the route points once the freeze ends.
            answers.push(DeviceIngestAnswer::all_read_only(fixes.len()));
            spans.push(rows.len()..rows.len());
            continue;
        }
        let directory = match directories.get(&tenant) {
            Some(found) => found.clone(),
            None => {
                let found = match state.directory.get(tenant).await {
                    Ok(directory) => Some(directory),
                    Err(StorageError::NotFound(_)) => None,
                    Err(err) => return Err(err.into()),
                };
                directories.insert(tenant, found.clone());
                found
            }
        };
        let start = rows.len();
        answers.push(match directory {
            Some(directory) => resolve(tenant, &directory, fixes, now, &mut rows),
            None => DeviceIngestAnswer::all_unknown(fixes.len(), "the tenant is not on this cell"),
        });
        spans.push(start..rows.len());
    }
    tracing::debug!(rows = rows.len(), "storing device fixes");
    let stored = state.ingest.store(rows).await?;
    count_duplicates(&mut answers, &spans, &stored)?;
    Ok(ApiJson(answers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use webhost_domain::VehicleId;

    fn fix(device: &str, time: DateTime<Utc>) -> DeviceFix {
        DeviceFix {
            device_id: device.into(),
            time,
            lat: 52.5,
            lon: 13.4,
            speed_kmh: None,
            heading: None,
            altitude: None,
            accuracy: None,
            valid: true,
            attributes: serde_json::Map::new(),
        }
    }

    #[test]
    fn only_the_tenants_own_devices_are_stored() {
        let (tenant, van) = (TenantId::new(), VehicleId::new());
        let directory = TenantDirectory {
            retention_days: 30,
            vehicles: HashSet::from([van]),
            devices: HashMap::from([(DeviceId::parse("mine").expect("id"), van)]),
        };
        let now = Utc::now();
        let mut rows = Vec::new();
        let answer = resolve(
            tenant,
            &directory,
            vec![
                fix("mine", now),
                fix("someone-elses", now),
                fix("mine", now - Duration::days(31)),
            ],
            now,
            &mut rows,
        );
        assert_eq!(answer.accepted, 1);
        assert_eq!(answer.unknown_devices, [1], "only the foreign device");
        let refused: Vec<usize> = answer.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, [1, 2]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tenant_id, tenant);
        assert_eq!(rows[0].position.vehicle_id, van);
    }

    #[test]
    fn duplicates_are_counted_per_item() {
        let mut answers = vec![DeviceIngestAnswer::default(), DeviceIngestAnswer::default()];
        let spans = [0..2, 2..3];
        count_duplicates(&mut answers, &spans, &[true, false, false]).expect("counted");
        assert_eq!((answers[0].duplicates, answers[1].duplicates), (1, 1));
        assert!(count_duplicates(&mut answers, &spans, &[true]).is_err());
    }

    #[test]
    fn answers_without_unknown_devices_keep_the_old_shape() {
        let old = r#"{"accepted":1,"duplicates":0,"rejected":[]}"#;
        let answer: DeviceIngestAnswer = serde_json::from_str(old).expect("old answers parse");
        assert!(answer.unknown_devices.is_empty());
        assert_eq!(serde_json::to_string(&answer).expect("serialises"), old);
    }
}
