//! The tenant move of SPEC §6 as a pure state machine: a persisted
//! [`Move`] and an [`Event`] go in, the next `Move` and the [`Command`]s
//! now outstanding come out ([`step`]). No I/O, no clock: time is an
//! argument. The control plane's migration job is the driver: it persists
//! the move after every step (before carrying out any command — "every
//! step persisted before its effects"), runs the commands against cells,
//! edges and the routing table, and feeds their answers back.
//!
//! # Driving a move
//!
//! ```text
//! let (mut m, _) = Move::start(tenant, source, target, tables, cutoff, policy, now)?;
//! persist(&m);
//! loop {
//!     let commands = resume(&m);          // after a crash: the same call
//!     let Some(first) = commands.first() else { break };   // finished
//!     let event = carry_out(first);       // exactly one event per command
//!     m = step(&m, event, now())?.0;
//!     persist(&m);
//! }
//! ```
//!
//! The commands of a state are a function of the state ([`resume`]), so
//! what `step` returns and what a restarted driver re-issues are the same
//! list. The driver runs the first and reports its answer; a list with
//! several entries (a freeze and the source turning read-only; the undo
//! steps of an abort) is in the order they must happen.
//! `WaitUntil { at }` is answered by [`Event::Tick`] once `at` has come
//! (the job snoozes meanwhile). While a freeze runs the driver bounds each
//! command by [`Move::freeze_deadline`] and reports a `Tick` when it passed.
//!
//! # States
//!
//! 1. `preparing` — `ProvisionTarget`: a target cell that is active and has
//!    room (the operator's, or placement's — provisioned if needed, then
//!    `WaitUntil` the next poll while it is made).
//! 2. `copying` — `CopyChunk` per table, in chunks of `chunk_rows`, from a
//!    persisted keyset cursor; on a downgrade only history since
//!    [`Move::history_since`] ([`history_cutoff`]). Each table's watermark
//!    is the source's change sequence read before its first chunk.
//! 3. `catching_up` — `CatchUp` from the watermarks, round after round,
//!    until a round applied at most `catch_up_threshold` changes — or after
//!    `max_catch_up_rounds`, when it freezes anyway.
//! 4. `freezing` — `Freeze` (the edges hold the tenant's writes, until a
//!    deadline) and `MakeReadOnly` on the source (so no stale route can
//!    write past the final catch-up). The deadline (`freeze_deadline_ms`,
//!    default 5 s) counts from the decision to freeze.
//! 5. `final_catch_up`, then `verifying` — per table, row counts and
//!    order-independent checksums equal on both sides ([`mismatches`]), or
//!    the move aborts.
//! 6. `switching` — `SwitchRouting`, a compare-and-set on the routing entry's
//!    version; then `unfreezing` — `Unfreeze` releases the held writes,
//!    now routed to the target. From `Switched` on, the move cannot abort.
//! 7. `grace_period` — the source copy stays, read-only, until the grace
//!    period ends (a rollback is possible meanwhile); `deleting_source` —
//!    `DeleteCopy` on the source; `done`.
//!
//! The way back before the switch: `aborting` undoes, in order, what may
//! have been done (source writable again, writes released to it, the
//! target's copy deleted), then `aborted`: the tenant is on the source,
//! serving, as before. It happens on a verification mismatch, a freeze past
//! its deadline, a command failed for good (a permanent error, or
//! `max_attempts` retryable ones), or the operator's cancel.
//!
//! # What each command guarantees (idempotency)
//!
//! A command may be carried out twice: the driver crashed after doing it
//! and before persisting its answer, and [`resume`] issues it again.
//!
//! - `ProvisionTarget` finds the cell an earlier attempt placed or ordered
//!   (the provider finds its work by the cell's unique name) instead of
//!   ordering another.
//! - `CopyChunk` reads from the persisted cursor and *upserts* on the
//!   target (creating the tenant there first if missing: an idempotent
//!   `PUT`): a repeat re-copies at most one chunk and stores nothing twice.
//! - `CatchUp` applies changes in sequence order as upserts and deletes by
//!   key, with full row images: replaying changes already applied leaves the
//!   same rows. The watermarks only advance after the answer is persisted.
//! - `Freeze` on a frozen tenant is a no-op that answers the current
//!   version; it expires by itself at its deadline, so a control plane that
//!   died mid-move never holds a tenant's writes for good. It also drops
//!   the edges' device-route cache entries for the tenant.
//! - `MakeReadOnly` / `MakeWritable` set a flag; setting it again is a no-op.
//! - `Verify` only reads. It runs under the freeze, so the cells must
//!   answer within the deadline (sums kept incrementally per table, or
//!   computed from indexes); a tenant whose verification cannot fit aborts
//!   and stays where it was. Both sides sum the same window (history since
//!   the cutoff, fixed at the start), so neither side may expire the
//!   tenant's history while the move runs.
//! - `SwitchRouting` is a compare-and-set from (`from_cell`,
//!   `from_version`, frozen, freeze not expired): when the entry already
//!   points at `to_cell` at a later version, the switch was done and is
//!   answered `Switched`; a refusal is reported as a permanent failure only
//!   when the entry is known unchanged. A retryable failure of the switch
//!   is retried for ever (with the operator told), never turned into an
//!   abort: the switch may have happened.
//! - `Unfreeze` on an unfrozen tenant is a no-op.
//! - `DeleteCopy` of a copy that is gone is a no-op.
//!
//! # Crashes
//!
//! Killing the driver at any point and restarting it from the persisted
//! move either repeats an idempotent command or moves on: before the
//! switch the tenant is served by the source (writes only held during the
//! freeze, never dropped: held writes that outlive a freeze's deadline are
//! refused unacknowledged by the read-only source, so the client resends;
//! none is acknowledged and lost); after it by the target. Nothing is
//! copied twice (upserts), nothing acknowledged is lost (the source is
//! read-only before the final catch-up, verification compares everything).
//!
//! # Rollback
//!
//! `POST /api/admin/migrations/{id}/rollback` is accepted only in the grace
//! period. The target may have taken writes since the switch, so a
//! rollback is a reverse move without the snapshot: catch-up rounds from
//! the target (from its change sequences at verification), freeze (target
//! read-only), final catch-up, verify, switch the routing back, source
//! writable, unfreeze, delete the target copy → `rolled_back`. It
//! guarantees that every write acknowledged by the target is on the source
//! before the switch back — verified like the forward move. Writes older
//! than the history cutoff were never removed from the source, so a
//! rollback of a downgrade loses nothing either. If the rollback fails
//! before its switch back (verification mismatch, freeze deadline, a
//! command failed for good) it is abandoned: the target is made writable
//! again, writes released to it, and the move returns to its grace period
//! (the reason kept in [`Move::rollback_failures`]); it can be requested
//! again. After the grace period (`deleting_source`, `done`) it is refused.

mod machine;
mod model;
mod policy;
mod progress;
mod verify;

pub use machine::{resume, step};
pub use model::{
    Command, CommandKind, Event, FreezeWindow, Move, MoveError, Outcome, Phase, Rollback,
    RollbackStep, RoutingVersions, StepTiming,
};
pub use policy::{history_cutoff, MovePolicy};
pub use progress::MoveProgress;
pub use verify::{describe, mismatches, Mismatch, Side, TableSum, VerifyReport};
