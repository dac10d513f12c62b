//! The persisted state of a move, what the driver reports, and what it is
//! told to do.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use webhost_domain::{CellId, TenantId};

use crate::policy::MovePolicy;
use crate::verify::VerifyReport;

/// One tenant's move from one cell to another: everything needed to
/// resume it after a crash. The control plane persists it (as JSON) after
/// every [`step`](crate::step), before carrying out the commands it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub tenant: TenantId,
    /// Where the tenant lives when the move starts.
    pub source: CellId,
    /// Where it goes: chosen by the operator at the start, or by placement
    /// (possibly a cell provisioned for it) during `preparing`.
    pub target: Option<CellId>,
    /// Whether the target was named at the start (then placement may not
    /// substitute another cell).
    pub target_fixed: bool,
    /// The tenant's tables, in copy order (the cells' export API names them).
    pub tables: Vec<String>,
    /// Only history newer than this is copied, caught up and verified (a
    /// downgrade to a plan that keeps less); `None`: everything.
    pub history_since: Option<DateTime<Utc>>,
    pub policy: MovePolicy,
    pub phase: Phase,
    /// Per table, the source's change sequence up to which the target has
    /// everything: the snapshot's start, then each catch-up's end.
    pub watermarks: BTreeMap<String, u64>,
    /// Rows imported per table by the snapshot copy (progress: a chunk
    /// re-sent after a crash is counted again; verification is what proves
    /// the copy).
    pub rows_copied: BTreeMap<String, u64>,
    /// Catch-up calls made before the freeze, and what the last one applied.
    pub catch_up_rounds: u32,
    pub last_catch_up_changes: Option<u64>,
    /// The forward move's freeze, once it was issued.
    pub freeze: Option<FreezeWindow>,
    pub routing: RoutingVersions,
    /// The target's change sequences when it was verified: where a
    /// rollback's reverse catch-up starts.
    pub target_watermarks: BTreeMap<String, u64>,
    /// The operator's rollback, while one runs.
    pub rollback: Option<Rollback>,
    /// Why earlier rollbacks were abandoned (the tenant stayed on the target).
    pub rollback_failures: Vec<String>,
    /// When each state was entered and left, in order.
    pub timings: Vec<StepTiming>,
    /// Tries of the current outstanding command that failed.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Set when a command failed for good at a point where the move can
    /// neither go back nor forward by itself (after the switch, or on the
    /// abort path): the command stays outstanding and an operator must
    /// look. Cleared by the next progress.
    pub attention: Option<String>,
    pub outcome: Option<Outcome>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where the move is. Forward phases follow SPEC §6; `aborting`/`aborted`
/// is the way back before the switch, `rolling_back` the operator's way
/// back after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Finding a target with room, or waiting (until `waiting_until`) for
    /// one being provisioned.
    Preparing {
        waiting_until: Option<DateTime<Utc>>,
    },
    /// Snapshot copy of `table` from `cursor` (`None`: its start).
    Copying {
        table: String,
        cursor: Option<String>,
    },
    /// Catch-up round `round` (from 0) before the freeze.
    CatchingUp {
        round: u32,
    },
    /// Waiting for the edge freeze and the source turning read-only.
    Freezing,
    /// Applying what is left, under the freeze.
    FinalCatchUp,
    /// Comparing counts and checksums, under the freeze.
    Verifying,
    /// Compare-and-set of the routing entry from `from_version`.
    Switching {
        from_version: u64,
    },
    /// Releasing the held writes (now routed to the target).
    Unfreezing,
    /// The source copy kept read-only for a rollback until `until`.
    GracePeriod {
        until: DateTime<Utc>,
    },
    DeletingSource,
    /// The tenant lives on the target; the source copy is gone.
    Done,
    /// Undoing what was done before the switch; each flag is an undo step
    /// still to be confirmed.
    Aborting {
        reason: String,
        at_step: u8,
        source_writable_needed: bool,
        unfreeze_needed: bool,
        target_cleanup_needed: bool,
    },
    /// The tenant stayed on the source, serving; the target copy is gone.
    Aborted {
        reason: String,
        at_step: u8,
    },
    RollingBack {
        step: RollbackStep,
    },
    /// The tenant is back on the source with what it wrote on the target;
    /// the target copy is gone.
    RolledBack,
}

/// The steps of a rollback: a reverse catch-up from the target, then a
/// freeze, final catch-up, verification and switch back — the forward
/// move's steps 3 to 6 with the cells' roles swapped — and the target copy's
/// deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RollbackStep {
    CatchingUp {
        round: u32,
    },
    Freezing,
    FinalCatchUp,
    Verifying,
    SwitchingBack {
        from_version: u64,
    },
    /// Source writable again, then the held writes released to it.
    Releasing {
        source_writable_needed: bool,
        unfreeze_needed: bool,
    },
    DeletingTarget,
    /// Giving up on the rollback before the switch back: target writable
    /// again, writes released to it; then back to the grace period.
    Abandoning {
        reason: String,
        target_writable_needed: bool,
        unfreeze_needed: bool,
    },
}

/// A freeze of the tenant's writes at the edge, with the copy being left
/// made read-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeWindow {
    /// When the `Freeze` command was decided (the deadline counts from here,
    /// so a slow freeze eats into it).
    pub issued_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// When the freeze held on every edge (`Frozen.at`).
    pub frozen_at: Option<DateTime<Utc>>,
    /// The routing entry's version with the freeze in place.
    pub routing_version: Option<u64>,
    /// Whether the copy being left confirmed it refuses the tenant's writes.
    pub read_only: bool,
    /// When the held writes were released (`Unfrozen`).
    pub released_at: Option<DateTime<Utc>>,
}

impl FreezeWindow {
    pub(crate) fn new(issued_at: DateTime<Utc>, deadline: DateTime<Utc>) -> Self {
        Self {
            issued_at,
            deadline,
            frozen_at: None,
            routing_version: None,
            read_only: false,
            released_at: None,
        }
    }

    /// How long writes were held, once released.
    pub fn held_ms(&self) -> Option<u64> {
        let held = self.released_at? - self.frozen_at?;
        u64::try_from(held.num_milliseconds()).ok()
    }
}

/// An operator's rollback in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub requested_at: DateTime<Utc>,
    /// Where the grace period ends; an abandoned rollback returns to it.
    pub grace_until: DateTime<Utc>,
    /// Per table, the target's change sequence up to which the source has
    /// the target's writes.
    pub watermarks: BTreeMap<String, u64>,
    pub rounds: u32,
    pub freeze: Option<FreezeWindow>,
}

/// The routing entry's versions the move expected and set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingVersions {
    /// The version the switch compares against (the frozen entry's).
    pub expected: Option<u64>,
    /// The version the switch to the target produced.
    pub switched: Option<u64>,
    /// The version the rollback's switch back produced.
    pub rolled_back: Option<u64>,
}

/// When a state was entered and left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    /// The state's name (`copying`, `rollback_verifying`, …).
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// How a finished move ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Moved { to: CellId },
    Aborted { reason: String },
    RolledBack,
}

/// What the driver observed: the answer to a command, time passing, or an
/// operator's request. Every command is answered by exactly one event
/// (its success, or [`Event::StepFailed`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `ProvisionTarget`: the target is being provisioned; ask again later.
    TargetProvisioning { cell: CellId },
    /// `ProvisionTarget`: the target is active and has room for the tenant.
    TargetReady { cell: CellId },
    /// `CopyChunk`: `rows` imported; `watermark` is the source's change
    /// sequence for `table` read before the chunk was read.
    ChunkCopied {
        table: String,
        rows: u64,
        next_cursor: Option<String>,
        done: bool,
        watermark: u64,
    },
    /// `CatchUp`: `changes` applied, everything up to `watermarks` is on
    /// the receiving side; `more`: the call stopped at its limit.
    CaughtUp {
        changes: u64,
        watermarks: BTreeMap<String, u64>,
        more: bool,
    },
    /// `Freeze`: every edge holds the tenant's writes since `at`; the
    /// routing entry is at `routing_version`.
    Frozen {
        at: DateTime<Utc>,
        routing_version: u64,
    },
    /// `MakeReadOnly`: `cell` refuses the tenant's writes.
    ReadOnly { cell: CellId },
    /// `MakeWritable`: `cell` accepts the tenant's writes again.
    Writable { cell: CellId },
    /// `Verify`: each side's sums (`source` is the command's `from`).
    Verified {
        source: VerifyReport,
        target: VerifyReport,
    },
    /// `SwitchRouting`: the entry now points at `to_cell`, at `version`.
    Switched { version: u64 },
    /// `Unfreeze`: the held writes are released.
    Unfrozen,
    /// `DeleteCopy`: the tenant's data on `cell` is gone.
    CopyDeleted { cell: CellId },
    /// A command failed. `retryable`: try the same command again.
    StepFailed {
        step: CommandKind,
        error: String,
        retryable: bool,
    },
    /// Time passed (a `WaitUntil` came due, or the driver checks deadlines).
    Tick,
    /// `POST /api/admin/migrations/{id}/rollback`.
    RollbackRequested,
    /// The operator cancels a move that has not switched yet.
    CancelRequested,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::TargetProvisioning { .. } => "target_provisioning",
            Event::TargetReady { .. } => "target_ready",
            Event::ChunkCopied { .. } => "chunk_copied",
            Event::CaughtUp { .. } => "caught_up",
            Event::Frozen { .. } => "frozen",
            Event::ReadOnly { .. } => "read_only",
            Event::Writable { .. } => "writable",
            Event::Verified { .. } => "verified",
            Event::Switched { .. } => "switched",
            Event::Unfrozen => "unfrozen",
            Event::CopyDeleted { .. } => "copy_deleted",
            Event::StepFailed { .. } => "step_failed",
            Event::Tick => "tick",
            Event::RollbackRequested => "rollback_requested",
            Event::CancelRequested => "cancel_requested",
        }
    }

    /// Whether this event is the answer to `command`.
    pub(crate) fn answers(&self, command: &Command) -> bool {
        match (self, command) {
            (Event::TargetProvisioning { .. }, Command::ProvisionTarget { .. })
            | (Event::TargetReady { .. }, Command::ProvisionTarget { .. })
            | (Event::CaughtUp { .. }, Command::CatchUp { .. })
            | (Event::Frozen { .. }, Command::Freeze { .. })
            | (Event::Verified { .. }, Command::Verify { .. })
            | (Event::Switched { .. }, Command::SwitchRouting { .. })
            | (Event::Unfrozen, Command::Unfreeze { .. }) => true,
            (Event::ChunkCopied { table, .. }, Command::CopyChunk { table: t, .. }) => table == t,
            (Event::ReadOnly { cell }, Command::MakeReadOnly { cell: c, .. })
            | (Event::Writable { cell }, Command::MakeWritable { cell: c, .. })
            | (Event::CopyDeleted { cell }, Command::DeleteCopy { cell: c, .. }) => cell == c,
            (Event::StepFailed { step, .. }, command) => *step == command.kind(),
            _ => false,
        }
    }
}

/// What the driver must do next. Each command is idempotent: carrying it
/// out twice (a crash after doing it and before persisting its answer)
/// has the effect of once — see the crate docs for what each guarantees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Make sure `cell` (or, when `None`, a cell placement picks, provisioned
    /// if need be) is active and has room for the tenant, which is not on
    /// `source`. Answer: `TargetReady` or `TargetProvisioning`.
    ProvisionTarget {
        tenant: TenantId,
        source: CellId,
        cell: Option<CellId>,
    },
    /// Read up to `limit` rows of `table` from `from` after `cursor` (only
    /// history since `history_since`) and upsert them into `to`, creating
    /// the tenant on `to` first if it is missing. Answer: `ChunkCopied`.
    CopyChunk {
        tenant: TenantId,
        from: CellId,
        to: CellId,
        table: String,
        cursor: Option<String>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    },
    /// Apply to `to`, in sequence order, up to `limit` of `from`'s changes
    /// (inserts, updates, deletes) after `since` per table (a table missing
    /// from `since`: from its beginning). Answer: `CaughtUp`.
    CatchUp {
        tenant: TenantId,
        from: CellId,
        to: CellId,
        since: BTreeMap<String, u64>,
        limit: u32,
        history_since: Option<DateTime<Utc>>,
    },
    /// Hold the tenant's writes on every edge (held, not dropped; device
    /// route caches for the tenant dropped), until `Unfreeze` or until
    /// `deadline`, whichever comes first. Answer: `Frozen`.
    Freeze {
        tenant: TenantId,
        deadline: DateTime<Utc>,
    },
    /// `cell` refuses the tenant's writes from the API and devices (the
    /// move's own imports still apply). Answer: `ReadOnly`.
    MakeReadOnly { tenant: TenantId, cell: CellId },
    /// `cell` accepts the tenant's writes again. Answer: `Writable`.
    MakeWritable { tenant: TenantId, cell: CellId },
    /// Sum every table on both sides over the same rows. Answer: `Verified`.
    Verify {
        tenant: TenantId,
        from: CellId,
        to: CellId,
        tables: Vec<String>,
        history_since: Option<DateTime<Utc>>,
    },
    /// Compare-and-set the tenant's routing entry: from (`from_cell`,
    /// `from_version`, frozen and the freeze not expired) to `to_cell` at a
    /// higher version, still frozen. Answer: `Switched`.
    SwitchRouting {
        tenant: TenantId,
        from_version: u64,
        from_cell: CellId,
        to_cell: CellId,
    },
    /// Release the held writes to wherever the routing entry points.
    /// Answer: `Unfrozen`.
    Unfreeze { tenant: TenantId },
    /// Delete the tenant's data on `cell`. Answer: `CopyDeleted`.
    DeleteCopy { tenant: TenantId, cell: CellId },
    /// Nothing to do before `at`: come back with `Tick` then.
    WaitUntil { at: DateTime<Utc> },
}

/// The kinds of [`Command`], to say which one failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    ProvisionTarget,
    CopyChunk,
    CatchUp,
    Freeze,
    MakeReadOnly,
    MakeWritable,
    Verify,
    SwitchRouting,
    Unfreeze,
    DeleteCopy,
    WaitUntil,
}

impl Command {
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::ProvisionTarget { .. } => CommandKind::ProvisionTarget,
            Command::CopyChunk { .. } => CommandKind::CopyChunk,
            Command::CatchUp { .. } => CommandKind::CatchUp,
            Command::Freeze { .. } => CommandKind::Freeze,
            Command::MakeReadOnly { .. } => CommandKind::MakeReadOnly,
            Command::MakeWritable { .. } => CommandKind::MakeWritable,
            Command::Verify { .. } => CommandKind::Verify,
            Command::SwitchRouting { .. } => CommandKind::SwitchRouting,
            Command::Unfreeze { .. } => CommandKind::Unfreeze,
            Command::DeleteCopy { .. } => CommandKind::DeleteCopy,
            Command::WaitUntil { .. } => CommandKind::WaitUntil,
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandKind::ProvisionTarget => "provision_target",
            CommandKind::CopyChunk => "copy_chunk",
            CommandKind::CatchUp => "catch_up",
            CommandKind::Freeze => "freeze",
            CommandKind::MakeReadOnly => "make_read_only",
            CommandKind::MakeWritable => "make_writable",
            CommandKind::Verify => "verify",
            CommandKind::SwitchRouting => "switch_routing",
            CommandKind::Unfreeze => "unfreeze",
            CommandKind::DeleteCopy => "delete_copy",
            CommandKind::WaitUntil => "wait_until",
        })
    }
}

/// An event that does not fit the move's state, or a request it refuses.
/// The state is unchanged when `step` returns one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("a move cannot go to the cell it starts from")]
    SameCell,
    #[error("event {event} does not answer anything outstanding in state {state}")]
    UnexpectedEvent {
        state: &'static str,
        event: &'static str,
    },
    #[error("the target was fixed to {expected}, placement answered {got}")]
    WrongTarget { expected: CellId, got: CellId },
    #[error("the target cannot be the source cell {0}")]
    TargetIsSource(CellId),
    #[error("chunk of {table} reported not done without a cursor to continue from")]
    MissingCursor { table: String },
    #[error("watermark of {table} went back from {had} to {got}")]
    WatermarkRegressed { table: String, had: u64, got: u64 },
    #[error("switched to version {got}, which is not after {from}")]
    VersionNotAfter { from: u64, got: u64 },
    #[error("a rollback is possible only during the grace period, not in state {0}")]
    RollbackNotAllowed(&'static str),
    #[error("a move can be cancelled only before the switch, not in state {0}")]
    CancelNotAllowed(&'static str),
}
