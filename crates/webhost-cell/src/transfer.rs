//! The cell's side of a tenant move (SPEC §6), for the control plane only:
//! `/internal/v1/tenants/{id}/transfer/{watermark|export|changes|import|digest}`
//! and the write fence `PUT /internal/v1/tenants/{id}/fence`. Cells never
//! talk to each other: the control plane reads from the source and writes
//! to the target, passing the records through untouched. What the records
//! are, and why the digest is the same on both engines:
//! `webhost_storage::transfer`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use webhost_contract::{
    paths, ChangesRequest, DigestRequest, ExportRequest, ExportedRecords, ImportRequest, Imported,
    TableDigest, TenantDigest, Watermark, WriteFence,
};
use webhost_domain::TenantId;
use webhost_http::auth::ControlCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::transfer::{Cursor, Record, TransferTable};

use crate::CellState;

pub(crate) fn routes() -> Router<CellState> {
    Router::new()
        .route(paths::TRANSFER_ROUTE, get(read).post(act))
        .route(paths::FENCE_ROUTE, put(fence))
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", "tenant id must be a UUID"))
}

fn table(raw: &str) -> Result<TransferTable, ApiError> {
    TransferTable::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = TransferTable::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::bad_request(
            "unknown_table",
            format!("unknown table '{raw}'; one of {}", known.join(", ")),
        )
    })
}

fn encode(records: Vec<Record>) -> Result<Vec<serde_json::Value>, ApiError> {
    records
        .into_iter()
        .map(|record| serde_json::to_value(record).map_err(|e| ApiError::unexpected(e.into())))
        .collect()
}

async fn read(
    _: ControlCaller,
    State(state): State<CellState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<ApiJson<Watermark>, ApiError> {
    tenant_id(&id)?;
    if action != "watermark" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("'{action}' is a POST; GET serves 'watermark' only"),
        ));
    }
    Ok(ApiJson(Watermark {
        watermark: state.store.change_watermark().await?,
    }))
}

async fn act(
    _: ControlCaller,
    State(state): State<CellState>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let tenant = tenant_id(&id)?;
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid body: {e}")))
    }
    match action.as_str() {
        "export" => {
            let request: ExportRequest = parse(&body)?;
            let cursor = request.after.map(Cursor::from_string);
            let chunk = state
                .store
                .export_chunk(
                    tenant,
                    table(&request.table)?,
                    cursor.as_ref(),
                    request.limit,
                    request.history_since,
                )
                .await?;
            Ok(ApiJson(ExportedRecords {
                records: encode(chunk.records)?,
                deleted: Vec::new(),
                next: chunk.next.map(|c| c.as_str().to_string()),
            })
            .into_response())
        }
        "changes" => {
            let request: ChangesRequest = parse(&body)?;
            let cursor = request.after.map(Cursor::from_string);
            let chunk = state
                .store
                .export_changes(
                    tenant,
                    table(&request.table)?,
                    request.since,
                    cursor.as_ref(),
                    request.limit,
                    request.history_since,
                )
                .await?;
            Ok(ApiJson(ExportedRecords {
                records: encode(chunk.records)?,
                deleted: chunk
                    .deleted
                    .into_iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                next: chunk.next.map(|c| c.as_str().to_string()),
            })
            .into_response())
        }
        "import" => {
            let request: ImportRequest = parse(&body)?;
            let records: Vec<Record> = request
                .records
                .into_iter()
                .map(|value| {
                    serde_json::from_value(value).map_err(|e| {
                        ApiError::bad_request("invalid_record", format!("invalid record: {e}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let mut imported = Imported::default();
            if !records.is_empty() {
                imported.written = state.store.import(tenant, &records).await?;
            }
            if !request.deleted.is_empty() {
                let Some(name) = request.table.as_deref() else {
                    return Err(ApiError::bad_request(
                        "missing_table",
                        "'deleted' keys need the 'table' they belong to",
                    ));
                };
                let keys: Vec<Cursor> = request
                    .deleted
                    .into_iter()
                    .map(Cursor::from_string)
                    .collect();
                imported.deleted = state
                    .store
                    .remove_records(tenant, table(name)?, &keys)
                    .await?;
            }
            // What this cell holds in memory of the tenant (latest
            // positions, tracker states, geofences, devices) is stale now.
            forget(&state, tenant).await;
            Ok(ApiJson(imported).into_response())
        }
        "digest" => {
            let request: DigestRequest = if body.is_empty() {
                DigestRequest::default()
            } else {
                parse(&body)?
            };
            // Read first: whatever commits after it is caught up from here.
            let watermark = state.store.change_watermark().await?;
            let digest = state.store.digest(tenant, request.history_since).await?;
            Ok(ApiJson(TenantDigest {
                tables: digest
                    .into_iter()
                    .map(|(table, d)| {
                        (
                            table,
                            TableDigest {
                                rows: d.rows,
                                checksum: d.checksum,
                            },
                        )
                    })
                    .collect(),
                watermark,
            })
            .into_response())
        }
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no transfer action '{other}': watermark, export, changes, import or digest"),
        )),
    }
}

async fn forget(state: &CellState, tenant: TenantId) {
    state.directory.invalidate(tenant).await;
    state.ingest.latest().forget_tenant(tenant).await;
}

async fn fence(
    _: ControlCaller,
    State(state): State<CellState>,
    Path(id): Path<String>,
    ApiJson(fence): ApiJson<WriteFence>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_id(&id)?;
    state.fence.set(tenant, fence.read_only).await?;
    if !fence.read_only {
        // Writes start here again (a rollback, an aborted move, the target
        // after the switch): memory is reloaded from what was imported.
        forget(&state, tenant).await;
    }
    if fence.moved {
        state.bus.close_tenant(tenant);
    }
    Ok(StatusCode::NO_CONTENT)
}
