//! The operator's side of tenant moves (SPEC §4, §6):
//! `POST /api/admin/tenants/{id}/migrate {cell}`, `GET /api/admin/migrations`,
//! `GET /api/admin/migrations/{id}`, `POST /api/admin/migrations/{id}/rollback`
//! and `…/cancel`. The move itself is `moves.rs`.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use webhost_api::{ById, Endpoint, Json, NoBody, Operation, Verb};
use webhost_domain::{CellId, TenantId};
use webhost_http::auth::OperatorCaller;
use webhost_http::ApiError;
use webhost_move::{Event, Move};
use webhost_storage::{CellStatus, StorageError, TenantMove, TenantStatus};

use crate::ControlState;

/// A tenant move as the operator sees it.
#[derive(Serialize, ToSchema)]
pub struct MigrationView {
    #[schema(format = Uuid)]
    pub id: String,
    pub tenant_id: TenantId,
    pub source_cell: CellId,
    pub target_cell: Option<CellId>,
    /// `preparing`, `copying`, `catching_up`, `freezing`, `final_catch_up`,
    /// `verifying`, `switching`, `unfreezing`, `grace_period`,
    /// `deleting_source`, `done`, `aborting`, `aborted`, `rolling_back`,
    /// `rolled_back`.
    pub state: String,
    pub finished: bool,
    /// Step of SPEC §6 (1–7), percent, rows copied, catch-up rounds,
    /// `freeze_ms` (how long writes were held), the timings of every
    /// state, the outcome and the last error.
    #[schema(value_type = Object)]
    pub progress: serde_json::Value,
    /// Until when the source copy is kept for a rollback (grace period).
    pub rollback_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MigrationView {
    pub(crate) fn of(record: &TenantMove) -> Result<Self, ApiError> {
        let m: Move = serde_json::from_value(record.state.clone())
            .map_err(|e| ApiError::unexpected(anyhow::anyhow!("migration state: {e}")))?;
        let rollback_until = match &m.phase {
            webhost_move::Phase::GracePeriod { until } => Some(*until),
            _ => None,
        };
        Ok(Self {
            id: record.id.to_string(),
            tenant_id: record.tenant_id,
            source_cell: record.source_cell,
            target_cell: record.target_cell,
            state: record.phase.clone(),
            finished: record.finished,
            progress: serde_json::to_value(m.progress())
                .map_err(|e| ApiError::unexpected(e.into()))?,
            rollback_until,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateInput {
    /// The cell to move to (its id or name); omitted: placement picks one
    /// in the tenant's pool and region (provisioned if need be).
    #[serde(default)]
    pub cell: Option<String>,
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("tenant"))
}

fn migration_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("migration"))
}

pub struct MigrateTenant;

impl Operation<ControlState, OperatorCaller> for MigrateTenant {
    type Params = ById;
    type Body = Json<MigrateInput>;
    type Output = MigrationView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/tenants/{id}/migrate",
        "migrateTenant",
        "operator",
        "Moves a tenant to another cell, live (a job; follow GET /api/admin/migrations/{id})",
    )
    .status(StatusCode::ACCEPTED);

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        Json(input): Json<MigrateInput>,
    ) -> Result<MigrationView, ApiError> {
        let tenant = state.store.tenant(tenant_id(&params.id)?).await?;
        if tenant.status == TenantStatus::Provisioning {
            return Err(ApiError::conflict(
                "tenant_state",
                "the tenant is still being set up; move it once it is active",
            ));
        }
        let route = state.store.route(tenant.id).await?;
        let target = match &input.cell {
            None => None,
            Some(raw) => {
                let found = match raw.parse::<CellId>() {
                    Ok(id) => state.store.cell(id).await,
                    Err(_) => state.store.cell_by_name(raw).await,
                };
                let cell = match found {
                    Ok(cell) => cell,
                    Err(StorageError::NotFound(_)) => {
                        return Err(ApiError {
                            field: Some("cell"),
                            ..ApiError::new(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "unknown_cell",
                                format!("no cell '{raw}'; GET /api/admin/cells lists them"),
                            )
                        })
                    }
                    Err(err) => return Err(err.into()),
                };
                if cell.id == route.cell_id {
                    return Err(ApiError {
                        field: Some("cell"),
                        ..ApiError::conflict(
                            "same_cell",
                            format!("the tenant already lives on cell {}", cell.name),
                        )
                    });
                }
                if cell.status != CellStatus::Active {
                    return Err(ApiError {
                        field: Some("cell"),
                        ..ApiError::conflict(
                            "cell_state",
                            format!(
                                "cell {} is {}; a tenant moves only to an active cell",
                                cell.name,
                                cell.status.as_str()
                            ),
                        )
                    });
                }
                if cell.free() == 0 {
                    return Err(ApiError {
                        field: Some("cell"),
                        ..ApiError::conflict(
                            "cell_full",
                            format!(
                                "cell {} is full ({} of {} tenants)",
                                cell.name, cell.tenants, cell.capacity
                            ),
                        )
                    });
                }
                Some(cell.id)
            }
        };
        let record = state
            .moves
            .start(&state.jobs, tenant.id, route.cell_id, target, None)
            .await?;
        MigrationView::of(&record)
    }
}

#[derive(Deserialize, ToSchema, IntoParams)]
pub struct MigrationQuery {
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct MigrationList {
    pub items: Vec<MigrationView>,
}

pub struct ListMigrations;

impl Operation<ControlState, OperatorCaller> for ListMigrations {
    type Params = MigrationQuery;
    type Body = NoBody;
    type Output = MigrationList;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/migrations",
        "migrations",
        "operator",
        "Tenant moves, newest first",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        q: MigrationQuery,
        _: NoBody,
    ) -> Result<MigrationList, ApiError> {
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be between 1 and 1000",
            ));
        }
        let items = state
            .store
            .moves(limit)
            .await?
            .iter()
            .map(MigrationView::of)
            .collect::<Result<_, _>>()?;
        Ok(MigrationList { items })
    }
}

pub struct ShowMigration;

impl Operation<ControlState, OperatorCaller> for ShowMigration {
    type Params = ById;
    type Body = NoBody;
    type Output = MigrationView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/migrations/{id}",
        "migration",
        "operator",
        "One tenant move: state, step, rows copied, progress, timings, freeze duration",
    );

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<MigrationView, ApiError> {
        MigrationView::of(&state.store.tenant_move(migration_id(&params.id)?).await?)
    }
}

pub struct RollbackMigration;

impl Operation<ControlState, OperatorCaller> for RollbackMigration {
    type Params = ById;
    type Body = NoBody;
    type Output = MigrationView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/migrations/{id}/rollback",
        "rollbackMigration",
        "operator",
        "Moves the tenant back to the source cell (only during the grace period)",
    )
    .status(StatusCode::ACCEPTED);

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<MigrationView, ApiError> {
        let record = state
            .moves
            .request(migration_id(&params.id)?, Event::RollbackRequested)
            .await?;
        MigrationView::of(&record)
    }
}

pub struct CancelMigration;

impl Operation<ControlState, OperatorCaller> for CancelMigration {
    type Params = ById;
    type Body = NoBody;
    type Output = MigrationView;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/admin/migrations/{id}/cancel",
        "cancelMigration",
        "operator",
        "Stops a move before its switch; the tenant stays where it was",
    )
    .status(StatusCode::ACCEPTED);

    async fn call(
        state: &ControlState,
        _: &OperatorCaller,
        params: ById,
        _: NoBody,
    ) -> Result<MigrationView, ApiError> {
        let record = state
            .moves
            .request(migration_id(&params.id)?, Event::CancelRequested)
            .await?;
        MigrationView::of(&record)
    }
}
