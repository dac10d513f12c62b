//! Moving a tenant between cells (SPEC §6): the `move_tenant` job drives
//! the pure state machine of `webhost-move` against the cells' transfer
//! API (`webhost-cell/src/transfer.rs`), the routing table and the edges
//! (through the routing table: a frozen route makes every edge hold the
//! tenant's writes).
//!
//! The driver loop: read the persisted move, take the first command
//! [`webhost_move::resume`] lists, carry it out, feed its answer to
//! [`webhost_move::step`], persist the new state — before anything else
//! happens — and go on. A crash anywhere resumes from the last persisted
//! state, re-issuing a command that may have been carried out already;
//! every command is idempotent (`webhost-move`'s crate docs say how).
//!
//! How each command is carried out:
//! - `ProvisionTarget`: the operator's cell must be active with room;
//!   otherwise placement picks (or queues) a cell for the tenant's plan.
//! - `CopyChunk`: the first chunk of a table creates the tenant on the
//!   target (its plan's limits) and fences it there (nothing of the
//!   tenant's is written on the target but the copy until the switch: no
//!   sweep event on a copy nobody reports to); the source's change clock is
//!   read, then a chunk exported from the source and imported on the target.
//! - `CatchUp`: the source's clock is read, then every table's changes since
//!   its watermark are paged from the source and applied on the target
//!   (upserts, then deletes); the clock read first is the new watermark.
//! - `Freeze`/`Unfreeze`: the route's `frozen_until`; `MakeReadOnly`/
//!   `MakeWritable`: the cell's write fence, whose raising returns once the
//!   cell's in-flight writes have committed.
//! - `Verify`: both cells' digests (counts + checksums per table).
//! - `SwitchRouting`: the routing table's compare-and-set; then the new
//!   cell's fence is lowered and the old one marked moved (its live sockets
//!   close with 1012, so clients reconnect to the new cell).
//! - `DeleteCopy`: `DELETE /internal/v1/tenants/{id}` on the cell.
//!
//! Under a freeze every command is bounded by the freeze's deadline; past
//! it the machine is told (`Tick`) and aborts, leaving the tenant where it
//! was. A retryable failure is retried after a short pause; the machine
//! turns repeated failures into an abort (before the switch) or an
//! operator's attention (after it).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use webhost_contract::{
    cell_audience, paths, ChangesRequest, DigestRequest, ExportRequest, ExportedRecords,
    ImportRequest, Imported, TenantDigest, Watermark, WriteFence,
};
use webhost_domain::{CellId, TenantId};
use webhost_http::client::{InternalClient, InternalRequest};
use webhost_jobs::{queues, Backoff, Handler, JobContext, JobError};
use webhost_move::{resume, step, Command, Event, Move, MovePolicy, TableSum, VerifyReport};
use webhost_storage::transfer::TransferTable;
use webhost_storage::{
    Cell, CellStatus, ControlStore, Job, StorageError, SwitchOutcome, TenantMove,
};

use crate::ControlState;

/// What moves are run with (the binary's settings).
#[derive(Clone, Debug)]
pub struct MoveSettings {
    /// The policy new moves start with (a move keeps its own).
    pub policy: MovePolicy,
    /// The longest a waiting move job sleeps before looking again (a
    /// rollback requested during the grace period is seen by then).
    pub recheck: Duration,
    /// Test hook: the process aborts right after persisting this many
    /// steps of a move (counted per job run), as `kill -9` would.
    pub kill_after_steps: Option<u32>,
    /// Test hook: the job stops (fails, as a worker dying would leave it
    /// to be retried) once per move, right after persisting the step given.
    pub stop_at: Option<StopAt>,
}

/// Where [`MoveSettings::stop_at`] stops a move's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// After this many steps of the job's first run.
    Steps(u32),
    /// When the move first enters this state (`catching_up`, …).
    Phase(String),
}

impl StopAt {
    /// `7` (steps) or a state's name.
    pub fn parse(raw: &str) -> Self {
        match raw.trim().parse() {
            Ok(steps) => Self::Steps(steps),
            Err(_) => Self::Phase(raw.trim().to_string()),
        }
    }
}

impl Default for MoveSettings {
    fn default() -> Self {
        Self {
            policy: MovePolicy::default(),
            recheck: Duration::from_secs(30),
            kill_after_steps: None,
            stop_at: None,
        }
    }
}

/// Shared by the job and the operator endpoints.
pub(crate) struct Moves {
    store: Arc<dyn ControlStore>,
    client: InternalClient,
    settings: MoveSettings,
    /// Placement needs the whole control state; set once it exists. Weak:
    /// the state holds this (through its jobs), and the router owns it.
    state: OnceLock<Weak<ControlState>>,
    /// One step of one move at a time in this control plane: the job and
    /// an operator's rollback or cancel never both write a move.
    stepping: tokio::sync::Mutex<()>,
    /// Moves the `stop_at` test hook has stopped already.
    stopped: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

impl Moves {
    pub(crate) fn new(
        store: Arc<dyn ControlStore>,
        client: InternalClient,
        settings: MoveSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            client,
            settings,
            state: OnceLock::new(),
            stepping: tokio::sync::Mutex::new(()),
            stopped: std::sync::Mutex::default(),
        })
    }

    pub(crate) fn attach(&self, state: &Arc<ControlState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    pub(crate) fn control_state(&self) -> Option<Arc<ControlState>> {
        self.state.get().and_then(Weak::upgrade)
    }

    /// The `stop_at` test hook: whether this run stops now (once per move).
    fn stop_here(&self, id: uuid::Uuid, steps: u32, m: &Move) -> bool {
        let hit = match &self.settings.stop_at {
            None => return false,
            Some(StopAt::Steps(n)) => *n == steps,
            Some(StopAt::Phase(name)) => m.phase.name() == name,
        };
        hit && self.stopped.lock().expect("hook lock").insert(id)
    }

    /// Records a new move of `tenant` (to `target`, or where placement
    /// says) and queues its job. `Conflict::MoveInProgress` while another
    /// is unfinished.
    pub(crate) async fn start(
        &self,
        jobs: &webhost_jobs::Jobs,
        tenant: TenantId,
        source: CellId,
        target: Option<CellId>,
        history_since: Option<DateTime<Utc>>,
    ) -> Result<TenantMove, webhost_http::ApiError> {
        let now = Utc::now();
        let tables = TransferTable::ALL
            .iter()
            .map(|t| t.as_str().to_string())
            .collect();
        let (m, _) = Move::start(
            tenant,
            source,
            target,
            tables,
            history_since,
            self.settings.policy,
            now,
        )
        .map_err(|e| webhost_http::ApiError::bad_request("invalid_move", e.to_string()))?;
        let record = self
            .store
            .create_move(TenantMove {
                id: uuid::Uuid::now_v7(),
                tenant_id: tenant,
                source_cell: source,
                target_cell: target,
                phase: m.phase.name().to_string(),
                finished: false,
                state: serde_json::to_value(&m).map_err(|e| {
                    webhost_http::ApiError::unexpected(anyhow::anyhow!("encoding a move: {e}"))
                })?,
                created_at: now,
                updated_at: now,
            })
            .await?;
        jobs.enqueue::<MoveTenant>(
            serde_json::json!(MovePayload { move_id: record.id }),
            Some(format!("move:{}", record.id)),
            None,
        )
        .await?;
        tracing::info!(%tenant, migration = %record.id, "tenant move queued");
        Ok(record)
    }

    /// Feeds an operator's event (rollback, cancel) to a move.
    pub(crate) async fn request(
        &self,
        id: uuid::Uuid,
        event: Event,
    ) -> Result<TenantMove, webhost_http::ApiError> {
        let _one = self.stepping.lock().await;
        let mut record = self.store.tenant_move(id).await?;
        let m = decode(&record).map_err(webhost_http::ApiError::unexpected)?;
        let (next, _) = step(&m, event, Utc::now())
            .map_err(|e| webhost_http::ApiError::conflict("migration_state", e.to_string()))?;
        persist(&*self.store, &mut record, &next)
            .await
            .map_err(webhost_http::ApiError::unexpected)?;
        Ok(record)
    }
}

fn decode(record: &TenantMove) -> anyhow::Result<Move> {
    serde_json::from_value(record.state.clone())
        .map_err(|e| anyhow::anyhow!("migration {} has an unreadable state: {e}", record.id))
}

async fn persist(
    store: &dyn ControlStore,
    record: &mut TenantMove,
    m: &Move,
) -> anyhow::Result<()> {
    record.phase = m.phase.name().to_string();
    record.finished = m.is_finished();
    record.target_cell = m.target;
    record.state = serde_json::to_value(m)?;
    record.updated_at = m.updated_at;
    store.save_move(record).await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MovePayload {
    pub move_id: uuid::Uuid,
}

/// The `move_tenant` job: drives one move to its end (see the module docs).
pub struct MoveTenant {
    pub(crate) moves: Arc<Moves>,
}

/// A command that did not succeed: whether trying it again may help.
struct Failure {
    retryable: bool,
    error: anyhow::Error,
}

impl Failure {
    fn retry(error: impl Into<anyhow::Error>) -> Self {
        Self {
            retryable: true,
            error: error.into(),
        }
    }

    fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self {
            retryable: false,
            error: error.into(),
        }
    }
}

impl From<StorageError> for Failure {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(_) | StorageError::Conflict(_) => Self::permanent(err),
            other => Self::retry(other),
        }
    }
}

#[async_trait::async_trait]
impl Handler for MoveTenant {
    fn kind() -> &'static str {
        "move_tenant"
    }

    fn queue() -> &'static str {
        queues::PROVISIONING
    }

    fn max_attempts() -> u32 {
        // The machine counts a command's failures itself; these are the
        // driver's own (the control store unreachable).
        20
    }

    fn backoff() -> Backoff {
        Backoff::default()
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload: MovePayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(anyhow::anyhow!("bad payload: {e}")))?;
        let moves = &self.moves;
        let mut steps = 0u32;
        loop {
            if ctx.shutdown().is_cancelled() {
                return Err(JobError::retry(anyhow::anyhow!("shutting down")));
            }
            let one = moves.stepping.lock().await;
            let mut record = match moves.store.tenant_move(payload.move_id).await {
                Ok(record) => record,
                Err(StorageError::NotFound(_)) => {
                    return Err(JobError::permanent(anyhow::anyhow!("the move is gone")))
                }
                Err(err) => return Err(JobError::retry(err)),
            };
            let m = decode(&record).map_err(JobError::permanent)?;
            if m.is_finished() {
                return Ok(());
            }
            let Some(command) = resume(&m).into_iter().next() else {
                return Ok(());
            };
            let now = Utc::now();
            let event = match &command {
                Command::WaitUntil { at } if *at > now => {
                    drop(one);
                    let wait = (*at - now).to_std().unwrap_or_default();
                    return Err(JobError::Snooze(wait.min(moves.settings.recheck)));
                }
                Command::WaitUntil { .. } => Event::Tick,
                _ => match m.freeze_deadline() {
                    Some(deadline) if deadline <= now => Event::Tick,
                    Some(deadline) => {
                        let left = (deadline - now).to_std().unwrap_or_default();
                        match tokio::time::timeout(left, carry_out(moves, &m, &command)).await {
                            Ok(event) => event,
                            Err(_) => Event::Tick,
                        }
                    }
                    None => carry_out(moves, &m, &command).await,
                },
            };
            let failed_retryable = matches!(
                event,
                Event::StepFailed {
                    retryable: true,
                    ..
                }
            );
            if let Event::StepFailed { error, .. } = &event {
                tracing::warn!(migration = %record.id, step = %command.kind(), %error, "move step failed");
            }
            let (next, _) = step(&m, event, Utc::now())
                .map_err(|e| JobError::permanent(anyhow::anyhow!("{e}")))?;
            persist(&*moves.store, &mut record, &next)
                .await
                .map_err(JobError::retry)?;
            drop(one);
            steps += 1;
            if turn(&m) && !turn(&next) {
                // The source cell's turn ended (switched, aborted): its
                // next tenant may go.
                if let Some(state) = moves.control_state() {
                    Rebalance::queue(&state.jobs).await;
                }
            }
            if moves.settings.kill_after_steps == Some(steps) {
                tracing::warn!(steps, "test hook: aborting the process after this step");
                std::process::abort();
            }
            if moves.stop_here(record.id, steps, &next) {
                return Err(JobError::permanent(anyhow::anyhow!(
                    "test hook: stopped after step {steps} ({})",
                    next.phase.name()
                )));
            }
            let _ = ctx
                .progress(serde_json::to_value(next.progress()).unwrap_or_default())
                .await;
            if failed_retryable && next.freeze_deadline().is_none() {
                let pause = Duration::from_millis(200 * u64::from(next.attempts.clamp(1, 25)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = ctx.shutdown().cancelled() => {}
                }
            }
        }
    }
}

/// Carries out one command and answers with its event (a failure too).
async fn carry_out(moves: &Moves, m: &Move, command: &Command) -> Event {
    match try_carry_out(moves, m, command).await {
        Ok(event) => event,
        Err(failure) => Event::StepFailed {
            step: command.kind(),
            error: format!("{:#}", failure.error),
            retryable: failure.retryable,
        },
    }
}

async fn try_carry_out(moves: &Moves, m: &Move, command: &Command) -> Result<Event, Failure> {
    let cells = CellCalls {
        store: &*moves.store,
        client: &moves.client,
    };
    match command {
        Command::ProvisionTarget {
            tenant,
            source,
            cell,
        } => provision_target(moves, *tenant, *source, *cell).await,
        Command::CopyChunk {
            tenant,
            from,
            to,
            table,
            cursor,
            limit,
            history_since,
        } => {
            let source = cells.cell(*from).await?;
            let target = cells.cell(*to).await?;
            if cursor.is_none() {
                // The table's first chunk: the tenant exists on the target
                // (idempotent) and writes nothing there but the copy.
                prepare_target(moves, *tenant, &target).await?;
            }
            let watermark: Watermark = cells
                .call(
                    &source,
                    Method::GET,
                    &paths::transfer(*tenant, "watermark"),
                    None::<&()>,
                )
                .await?;
            let chunk: ExportedRecords = cells
                .call(
                    &source,
                    Method::POST,
                    &paths::transfer(*tenant, "export"),
                    Some(&ExportRequest {
                        table: table.clone(),
                        after: cursor.clone(),
                        limit: *limit,
                        history_since: *history_since,
                    }),
                )
                .await?;
            let rows = chunk.records.len() as u64;
            if rows > 0 {
                let _: Imported = cells
                    .call(
                        &target,
                        Method::POST,
                        &paths::transfer(*tenant, "import"),
                        Some(&ImportRequest {
                            records: chunk.records,
                            table: None,
                            deleted: Vec::new(),
                        }),
                    )
                    .await?;
            }
            Ok(Event::ChunkCopied {
                table: table.clone(),
                rows,
                done: chunk.next.is_none(),
                next_cursor: chunk.next,
                watermark: watermark.watermark,
            })
        }
        Command::CatchUp {
            tenant,
            from,
            to,
            since,
            limit,
            history_since,
        } => {
            let source = cells.cell(*from).await?;
            let target = cells.cell(*to).await?;
            let clock: Watermark = cells
                .call(
                    &source,
                    Method::GET,
                    &paths::transfer(*tenant, "watermark"),
                    None::<&()>,
                )
                .await?;
            let mut changes = 0u64;
            let mut watermarks = std::collections::BTreeMap::new();
            for table in &m.tables {
                let from_mark = since.get(table).copied().unwrap_or(0);
                let mut after = None;
                loop {
                    let page: ExportedRecords = cells
                        .call(
                            &source,
                            Method::POST,
                            &paths::transfer(*tenant, "changes"),
                            Some(&ChangesRequest {
                                table: table.clone(),
                                since: from_mark,
                                after: after.clone(),
                                limit: *limit,
                                history_since: *history_since,
                            }),
                        )
                        .await?;
                    changes += (page.records.len() + page.deleted.len()) as u64;
                    if !page.records.is_empty() || !page.deleted.is_empty() {
                        let _: Imported = cells
                            .call(
                                &target,
                                Method::POST,
                                &paths::transfer(*tenant, "import"),
                                Some(&ImportRequest {
                                    records: page.records,
                                    table: Some(table.clone()),
                                    deleted: page.deleted,
                                }),
                            )
                            .await?;
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                watermarks.insert(table.clone(), clock.watermark.max(from_mark));
            }
            Ok(Event::CaughtUp {
                changes,
                watermarks,
                more: false,
            })
        }
        Command::Freeze { tenant, deadline } => {
            let route = moves.store.freeze_route(*tenant, *deadline).await?;
            Ok(Event::Frozen {
                at: Utc::now(),
                routing_version: u64::try_from(route.version).unwrap_or_default(),
            })
        }
        Command::MakeReadOnly { tenant, cell } => {
            cells.fence(*tenant, *cell, true, false).await?;
            Ok(Event::ReadOnly { cell: *cell })
        }
        Command::MakeWritable { tenant, cell } => {
            cells.fence(*tenant, *cell, false, false).await?;
            Ok(Event::Writable { cell: *cell })
        }
        Command::Verify {
            tenant,
            from,
            to,
            tables,
            history_since,
        } => {
            // Both sides at once: this runs under the freeze.
            let (source, target) = tokio::try_join!(
                cells.digest(*tenant, *from, *history_since),
                cells.digest(*tenant, *to, *history_since)
            )?;
            Ok(Event::Verified {
                source: report(source, tables),
                target: report(target, tables),
            })
        }
        Command::SwitchRouting {
            tenant,
            from_version,
            from_cell,
            to_cell,
        } => {
            let from_version = i64::try_from(*from_version)
                .map_err(|_| Failure::permanent(anyhow::anyhow!("version out of range")))?;
            let version = match moves
                .store
                .switch_route(*tenant, *from_cell, from_version, *to_cell, Utc::now())
                .await
                .map_err(Failure::retry)?
            {
                SwitchOutcome::Switched { version }
                | SwitchOutcome::AlreadySwitched { version } => version,
                SwitchOutcome::Refused { version, frozen } => {
                    return Err(Failure::permanent(anyhow::anyhow!(
                        "the routing entry is at version {version} (frozen: {frozen}), not \
                         {from_version} on the source frozen: not switched"
                    )))
                }
            };
            // After the switch there is no going back by abort: failures
            // here are retried (the switch answers AlreadySwitched).
            cells
                .fence(*tenant, *to_cell, false, false)
                .await
                .map_err(|f| Failure::retry(f.error))?;
            cells
                .fence(*tenant, *from_cell, true, true)
                .await
                .map_err(|f| Failure::retry(f.error))?;
            Ok(Event::Switched {
                version: u64::try_from(version).unwrap_or_default(),
            })
        }
        Command::Unfreeze { tenant } => {
            moves.store.unfreeze_route(*tenant).await?;
            Ok(Event::Unfrozen)
        }
        Command::DeleteCopy { tenant, cell } => {
            let cell_record = cells.cell(*cell).await?;
            let path = paths::tenant(*tenant);
            let answer = moves
                .client
                .call(
                    InternalRequest {
                        method: Method::DELETE,
                        base_url: &cell_record.url,
                        path: &path,
                        audience: &cell_audience(cell_record.id),
                        tenant: None,
                        subject: None,
                    },
                    None::<&()>,
                )
                .await
                .map_err(Failure::retry)?;
            if !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
                return Err(classify(answer.status, &answer.body));
            }
            Ok(Event::CopyDeleted { cell: *cell })
        }
        Command::WaitUntil { .. } => Ok(Event::Tick),
    }
}

fn report(digest: TenantDigest, tables: &[String]) -> VerifyReport {
    VerifyReport {
        tables: digest
            .tables
            .into_iter()
            .filter(|(name, _)| tables.contains(name))
            .map(|(name, d)| {
                (
                    name,
                    TableSum {
                        rows: d.rows,
                        checksum: d.checksum,
                    },
                )
            })
            .collect(),
        watermarks: tables
            .iter()
            .map(|name| (name.clone(), digest.watermark))
            .collect(),
    }
}

/// The tenant exists on `target` with its plan's limits and is fenced
/// there until the switch.
async fn prepare_target(moves: &Moves, tenant: TenantId, target: &Cell) -> Result<(), Failure> {
    let record = moves.store.tenant(tenant).await?;
    let catalog = moves.store.catalog().await?;
    let plan = catalog
        .plan(&record.plan)
        .map_err(|e| Failure::permanent(anyhow::anyhow!("{e}")))?;
    crate::cells::push_limits(&moves.client, target, tenant, plan)
        .await
        .map_err(Failure::retry)?;
    CellCalls {
        store: &*moves.store,
        client: &moves.client,
    }
    .fence(tenant, target.id, true, false)
    .await
}

async fn provision_target(
    moves: &Moves,
    tenant: TenantId,
    source: CellId,
    cell: Option<CellId>,
) -> Result<Event, Failure> {
    let chosen = match cell {
        Some(id) => moves.store.cell(id).await?,
        None => {
            let state = moves.control_state().ok_or_else(|| {
                Failure::retry(anyhow::anyhow!("the control plane is not serving"))
            })?;
            let record = moves.store.tenant(tenant).await?;
            let catalog = moves.store.catalog().await?;
            let plan = catalog
                .plan(&record.plan)
                .map_err(|e| Failure::permanent(anyhow::anyhow!("{e}")))?
                .clone();
            let placement = webhost_domain::Placement {
                pool: record.pool.clone(),
                region: record.region.clone(),
                regions: record.regions.clone(),
            };
            crate::cells::place_tenant(&state, &catalog, &plan, &placement)
                .await
                .map_err(|e| Failure::retry(anyhow::anyhow!("placement: {}", e.message)))?
        }
    };
    if chosen.id == source {
        return Err(Failure::permanent(anyhow::anyhow!(
            "the tenant already lives on cell {}",
            chosen.name
        )));
    }
    match chosen.status {
        CellStatus::Active if chosen.free() > 0 => Ok(Event::TargetReady { cell: chosen.id }),
        CellStatus::Active => Err(Failure::permanent(anyhow::anyhow!(
            "cell {} is full ({} of {} tenants)",
            chosen.name,
            chosen.tenants,
            chosen.capacity
        ))),
        CellStatus::Provisioning => Ok(Event::TargetProvisioning { cell: chosen.id }),
        other => Err(Failure::permanent(anyhow::anyhow!(
            "cell {} is {}; a tenant can move only to an active cell",
            chosen.name,
            other.as_str()
        ))),
    }
}

/// A cell's answer that is not a success: a 4xx will not get better.
fn classify(status: StatusCode, body: &[u8]) -> Failure {
    let error = anyhow::anyhow!(
        "the cell answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
        Failure::permanent(error)
    } else {
        Failure::retry(error)
    }
}

struct CellCalls<'a> {
    store: &'a dyn ControlStore,
    client: &'a InternalClient,
}

impl CellCalls<'_> {
    async fn cell(&self, id: CellId) -> Result<Cell, Failure> {
        Ok(self.store.cell(id).await?)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        cell: &Cell,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Failure> {
        let answer = self
            .client
            .call(
                InternalRequest {
                    method,
                    base_url: &cell.url,
                    path,
                    audience: &cell_audience(cell.id),
                    tenant: None,
                    subject: None,
                },
                body,
            )
            .await
            .map_err(Failure::retry)?;
        if !answer.status.is_success() {
            return Err(classify(answer.status, &answer.body));
        }
        if answer.status == StatusCode::NO_CONTENT {
            return serde_json::from_value(serde_json::Value::Null).map_err(Failure::permanent);
        }
        answer.json().map_err(Failure::permanent)
    }

    async fn fence(
        &self,
        tenant: TenantId,
        cell: CellId,
        read_only: bool,
        moved: bool,
    ) -> Result<(), Failure> {
        let cell = self.cell(cell).await?;
        let () = self
            .call(
                &cell,
                Method::PUT,
                &paths::fence(tenant),
                Some(&WriteFence { read_only, moved }),
            )
            .await?;
        Ok(())
    }

    async fn digest(
        &self,
        tenant: TenantId,
        cell: CellId,
        history_since: Option<DateTime<Utc>>,
    ) -> Result<TenantDigest, Failure> {
        let cell = self.cell(cell).await?;
        self.call(
            &cell,
            Method::POST,
            &paths::transfer(tenant, "digest"),
            Some(&DigestRequest { history_since }),
        )
        .await
    }
}

/// Rebalancing: tenants leave draining cells, and stop-gap cells once a
/// regular cell of their pool and region has room — one move at a time per
/// cell. Runs when a cell starts draining, after each move switches or
/// ends, and every five minutes.
pub struct Rebalance {
    pub(crate) moves: Arc<Moves>,
}

/// A move past its switch no longer holds its source cell's turn.
fn holds_turn(record: &TenantMove) -> bool {
    !record.finished && !matches!(record.phase.as_str(), "grace_period" | "deleting_source")
}

fn turn(m: &Move) -> bool {
    !m.is_finished() && !matches!(m.phase.name(), "grace_period" | "deleting_source")
}

impl Rebalance {
    pub(crate) async fn queue(jobs: &webhost_jobs::Jobs) {
        if let Err(err) = jobs
            .enqueue::<Rebalance>(serde_json::json!({}), Some("rebalance".into()), None)
            .await
        {
            tracing::warn!(error = %err, "queueing a rebalance failed; the next one runs within minutes");
        }
    }
}

#[async_trait::async_trait]
impl Handler for Rebalance {
    fn kind() -> &'static str {
        "rebalance"
    }

    fn queue() -> &'static str {
        queues::PROVISIONING
    }

    async fn run(&self, _job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let moves = &self.moves;
        let Some(state) = moves.control_state() else {
            return Err(JobError::retry(anyhow::anyhow!(
                "the control plane is not serving"
            )));
        };
        let store = &moves.store;
        let catalog = store.catalog().await.map_err(JobError::retry)?;
        let cells = store.cells().await.map_err(JobError::retry)?;
        let recent = store.moves(1_000).await.map_err(JobError::retry)?;
        let mut started = 0u32;
        for cell in &cells {
            if cell.tenants == 0 {
                continue;
            }
            let draining = cell.status == CellStatus::Draining;
            let stop_gap =
                cell.status == CellStatus::Active && catalog.is_stop_gap(cell.template.as_deref());
            if !draining && !stop_gap {
                continue;
            }
            if stop_gap {
                // Only once a regular cell of its pool and region has room.
                let room = cells.iter().any(|c| {
                    c.pool == cell.pool
                        && c.region == cell.region
                        && c.status == CellStatus::Active
                        && c.free() > 0
                        && !catalog.is_stop_gap(c.template.as_deref())
                });
                if !room {
                    continue;
                }
            }
            if recent
                .iter()
                .any(|m| m.source_cell == cell.id && holds_turn(m))
            {
                continue;
            }
            let tenants = store.cell_tenants(cell.id).await.map_err(JobError::retry)?;
            let Some(tenant) = tenants.iter().find(|t| {
                t.status != webhost_storage::TenantStatus::Provisioning
                    && !recent.iter().any(|m| m.tenant_id == t.id && !m.finished)
            }) else {
                continue;
            };
            match moves
                .start(&state.jobs, tenant.id, cell.id, None, None)
                .await
            {
                Ok(record) => {
                    started += 1;
                    tracing::info!(cell = %cell.name, tenant = %tenant.id, migration = %record.id, draining, "rebalancing: moving a tenant off");
                }
                Err(err) => {
                    tracing::warn!(cell = %cell.name, tenant = %tenant.id, error = %err.message, "rebalancing could not start a move")
                }
            }
        }
        let _ = ctx
            .progress(serde_json::json!({ "started": started }))
            .await;
        Ok(())
    }
}
