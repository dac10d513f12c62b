//! The transitions: [`step`] and [`resume`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use webhost_domain::{CellId, TenantId};

use crate::model::{
    Command, Event, FreezeWindow, Move, MoveError, Outcome, Phase, Rollback, RollbackStep,
    RoutingVersions, StepTiming,
};
use crate::policy::MovePolicy;
use crate::verify::{describe, mismatches, thousands};

impl Move {
    /// A move of `tenant` off `source`, to `target` when the operator named
    /// one (else placement picks). `tables` in copy order; `history_since`
    /// from [`history_cutoff`](crate::history_cutoff) on a downgrade.
    /// Returns the move (persist it) and its first commands.
    pub fn start(
        tenant: TenantId,
        source: CellId,
        target: Option<CellId>,
        tables: Vec<String>,
        history_since: Option<DateTime<Utc>>,
        policy: MovePolicy,
        now: DateTime<Utc>,
    ) -> Result<(Move, Vec<Command>), MoveError> {
        if target == Some(source) {
            return Err(MoveError::SameCell);
        }
        let phase = Phase::Preparing {
            waiting_until: None,
        };
        let m = Move {
            tenant,
            source,
            target,
            target_fixed: target.is_some(),
            tables,
            history_since,
            policy,
            timings: vec![StepTiming {
                state: phase.timing_name(),
                started_at: now,
                ended_at: None,
            }],
            phase,
            watermarks: BTreeMap::new(),
            rows_copied: BTreeMap::new(),
            catch_up_rounds: 0,
            last_catch_up_changes: None,
            freeze: None,
            routing: RoutingVersions::default(),
            target_watermarks: BTreeMap::new(),
            rollback: None,
            rollback_failures: Vec::new(),
            attempts: 0,
            last_error: None,
            attention: None,
            outcome: None,
            created_at: now,
            updated_at: now,
        };
        let commands = resume(&m);
        Ok((m, commands))
    }

    /// Whether the move has finished (moved, aborted or rolled back).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            Phase::Done | Phase::Aborted { .. } | Phase::RolledBack
        )
    }

    /// The time by which the running freeze must have led to a switch, if
    /// a freeze is running: the driver bounds the commands it runs under
    /// the freeze by it and reports a `Tick` once it has passed.
    pub fn freeze_deadline(&self) -> Option<DateTime<Utc>> {
        match &self.phase {
            Phase::Freezing | Phase::FinalCatchUp | Phase::Verifying | Phase::Switching { .. } => {
                self.freeze.as_ref().map(|f| f.deadline)
            }
            Phase::RollingBack {
                step:
                    RollbackStep::Freezing
                    | RollbackStep::FinalCatchUp
                    | RollbackStep::Verifying
                    | RollbackStep::SwitchingBack { .. },
            } => self
                .rollback
                .as_ref()
                .and_then(|r| r.freeze.as_ref())
                .map(|f| f.deadline),
            _ => None,
        }
    }
}

impl Phase {
    /// The state's snake_case name, as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Preparing { .. } => "preparing",
            Phase::Copying { .. } => "copying",
            Phase::CatchingUp { .. } => "catching_up",
            Phase::Freezing => "freezing",
            Phase::FinalCatchUp => "final_catch_up",
            Phase::Verifying => "verifying",
            Phase::Switching { .. } => "switching",
            Phase::Unfreezing => "unfreezing",
            Phase::GracePeriod { .. } => "grace_period",
            Phase::DeletingSource => "deleting_source",
            Phase::Done => "done",
            Phase::Aborting { .. } => "aborting",
            Phase::Aborted { .. } => "aborted",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// The step of SPEC §6 (1–7) this state belongs to; an abort keeps
    /// the step it happened at.
    pub fn spec_step(&self) -> u8 {
        match self {
            Phase::Preparing { .. } => 1,
            Phase::Copying { .. } => 2,
            Phase::CatchingUp { .. } => 3,
            Phase::Freezing => 4,
            Phase::FinalCatchUp | Phase::Verifying => 5,
            Phase::Switching { .. } | Phase::Unfreezing => 6,
            Phase::GracePeriod { .. }
            | Phase::DeletingSource
            | Phase::Done
            | Phase::RollingBack { .. }
            | Phase::RolledBack => 7,
            Phase::Aborting { at_step, .. } | Phase::Aborted { at_step, .. } => *at_step,
        }
    }

    /// The name timings are kept under: the state, and a rollback's step.
    pub(crate) fn timing_name(&self) -> String {
        match self {
            Phase::RollingBack { step } => format!("rollback_{}", step.name()),
            other => other.name().to_string(),
        }
    }
}

impl RollbackStep {
    pub fn name(&self) -> &'static str {
        match self {
            RollbackStep::CatchingUp { .. } => "catching_up",
            RollbackStep::Freezing => "freezing",
            RollbackStep::FinalCatchUp => "final_catch_up",
            RollbackStep::Verifying => "verifying",
            RollbackStep::SwitchingBack { .. } => "switching_back",
            RollbackStep::Releasing { .. } => "releasing",
            RollbackStep::DeletingTarget => "deleting_target",
            RollbackStep::Abandoning { .. } => "abandoning",
        }
    }
}

/// What to (re)issue for a persisted move: the commands still outstanding
/// in its state, in order. After a crash the driver loads the move and runs
/// these; every command is idempotent, so one that had already been carried
/// out before the crash has no second effect. Also what [`step`] returns.
///
/// The driver runs the first command, reports its answer to [`step`], and
/// continues with the list `step` returns (the rest of a list may depend
/// on the first: e.g. the source turns writable before held writes are
/// released to it).
pub fn resume(m: &Move) -> Vec<Command> {
    let tenant = m.tenant;
    let source = m.source;
    // Every phase past `preparing` has a target.
    let target = m.target.unwrap_or(m.source);
    let policy = &m.policy;
    match &m.phase {
        Phase::Preparing {
            waiting_until: Some(at),
        } => vec![Command::WaitUntil { at: *at }],
        Phase::Preparing {
            waiting_until: None,
        } => vec![Command::ProvisionTarget {
            tenant,
            source,
            cell: m.target,
        }],
        Phase::Copying { table, cursor } => vec![Command::CopyChunk {
            tenant,
            from: source,
            to: target,
            table: table.clone(),
            cursor: cursor.clone(),
            limit: policy.chunk_rows,
            history_since: m.history_since,
        }],
        Phase::CatchingUp { .. } | Phase::FinalCatchUp => vec![Command::CatchUp {
            tenant,
            from: source,
            to: target,
            since: m.watermarks.clone(),
            limit: policy.chunk_rows,
            history_since: m.history_since,
        }],
        Phase::Freezing => freeze_commands(tenant, source, m.freeze.as_ref()),
        Phase::Verifying => vec![Command::Verify {
            tenant,
            from: source,
            to: target,
            tables: m.tables.clone(),
            history_since: m.history_since,
        }],
        Phase::Switching { from_version } => vec![Command::SwitchRouting {
            tenant,
            from_version: *from_version,
            from_cell: source,
            to_cell: target,
        }],
        Phase::Unfreezing => vec![Command::Unfreeze { tenant }],
        Phase::GracePeriod { until } => vec![Command::WaitUntil { at: *until }],
        Phase::DeletingSource => vec![Command::DeleteCopy {
            tenant,
            cell: source,
        }],
        Phase::Aborting {
            source_writable_needed,
            unfreeze_needed,
            target_cleanup_needed,
            ..
        } => {
            let mut commands = Vec::new();
            if *source_writable_needed {
                commands.push(Command::MakeWritable {
                    tenant,
                    cell: source,
                });
            }
            if *unfreeze_needed {
                commands.push(Command::Unfreeze { tenant });
            }
            if *target_cleanup_needed {
                commands.push(Command::DeleteCopy {
                    tenant,
                    cell: target,
                });
            }
            commands
        }
        Phase::RollingBack { step } => {
            let watermarks = m
                .rollback
                .as_ref()
                .map(|r| r.watermarks.clone())
                .unwrap_or_default();
            match step {
                RollbackStep::CatchingUp { .. } | RollbackStep::FinalCatchUp => {
                    vec![Command::CatchUp {
                        tenant,
                        from: target,
                        to: source,
                        since: watermarks,
                        limit: policy.chunk_rows,
                        history_since: m.history_since,
                    }]
                }
                RollbackStep::Freezing => freeze_commands(
                    tenant,
                    target,
                    m.rollback.as_ref().and_then(|r| r.freeze.as_ref()),
                ),
                RollbackStep::Verifying => vec![Command::Verify {
                    tenant,
                    from: target,
                    to: source,
                    tables: m.tables.clone(),
                    history_since: m.history_since,
                }],
                RollbackStep::SwitchingBack { from_version } => {
                    vec![Command::SwitchRouting {
                        tenant,
                        from_version: *from_version,
                        from_cell: target,
                        to_cell: source,
                    }]
                }
                RollbackStep::Releasing {
                    source_writable_needed,
                    unfreeze_needed,
                } => {
                    let mut commands = Vec::new();
                    if *source_writable_needed {
                        commands.push(Command::MakeWritable {
                            tenant,
                            cell: source,
                        });
                    }
                    if *unfreeze_needed {
                        commands.push(Command::Unfreeze { tenant });
                    }
                    commands
                }
                RollbackStep::DeletingTarget => vec![Command::DeleteCopy {
                    tenant,
                    cell: target,
                }],
                RollbackStep::Abandoning {
                    target_writable_needed,
                    unfreeze_needed,
                    ..
                } => {
                    let mut commands = Vec::new();
                    if *target_writable_needed {
                        commands.push(Command::MakeWritable {
                            tenant,
                            cell: target,
                        });
                    }
                    if *unfreeze_needed {
                        commands.push(Command::Unfreeze { tenant });
                    }
                    commands
                }
            }
        }
        Phase::Done | Phase::Aborted { .. } | Phase::RolledBack => Vec::new(),
    }
}

fn freeze_commands(
    tenant: TenantId,
    leaving: CellId,
    freeze: Option<&FreezeWindow>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    match freeze {
        Some(f) => {
            if f.frozen_at.is_none() {
                commands.push(Command::Freeze {
                    tenant,
                    deadline: f.deadline,
                });
            }
            if !f.read_only {
                commands.push(Command::MakeReadOnly {
                    tenant,
                    cell: leaving,
                });
            }
        }
        // Not reachable through `step` (the window is recorded on entering
        // the state); answering with nothing would stall, so freeze.
        None => commands.push(Command::MakeReadOnly {
            tenant,
            cell: leaving,
        }),
    }
    commands
}

/// Feed one event to the move: the next state (persist it before doing
/// anything else) and the commands now outstanding (as [`resume`] would
/// give for it). Pure: `now` is when the event was observed. An event
/// that does not fit the state is an error and changes nothing.
pub fn step(
    state: &Move,
    event: Event,
    now: DateTime<Utc>,
) -> Result<(Move, Vec<Command>), MoveError> {
    if !matches!(
        event,
        Event::Tick | Event::RollbackRequested | Event::CancelRequested
    ) && !resume(state).iter().any(|c| event.answers(c))
    {
        return Err(MoveError::UnexpectedEvent {
            state: state.phase.name(),
            event: event.name(),
        });
    }
    let mut m = state.clone();
    transition(&mut m, event, now)?;
    m.updated_at = now;
    record_timing(&mut m, now);
    let commands = resume(&m);
    Ok((m, commands))
}

fn record_timing(m: &mut Move, now: DateTime<Utc>) {
    let name = m.phase.timing_name();
    let finished = m.is_finished();
    match m.timings.last_mut() {
        Some(last) if last.state == name => {}
        last => {
            if let Some(last) = last {
                last.ended_at.get_or_insert(now);
            }
            m.timings.push(StepTiming {
                state: name,
                started_at: now,
                ended_at: finished.then_some(now),
            });
        }
    }
}

fn transition(m: &mut Move, event: Event, now: DateTime<Utc>) -> Result<(), MoveError> {
    // Deadlines first: a freeze past its deadline aborts whatever the event
    // says — except in the switch, whose own answer decides (the routing
    // table refuses a switch once the freeze expired, so a late `Switched`
    // is a fact and a Tick must not abort a switch that may be in flight).
    if let Some(deadline) = m.freeze_deadline() {
        if !switching(&m.phase) && now >= deadline && !matches!(event, Event::RollbackRequested) {
            let reason = format!(
                "freeze deadline of {} ms exceeded in {}",
                thousands(m.policy.freeze_deadline_ms),
                m.phase.timing_name()
            );
            give_up(m, reason, now);
            return Ok(());
        }
    }

    match event {
        Event::Tick => {
            on_tick(m, now);
            Ok(())
        }
        Event::CancelRequested => {
            if before_switch(&m.phase) {
                give_up(m, "cancelled by the operator".into(), now);
                Ok(())
            } else {
                Err(MoveError::CancelNotAllowed(m.phase.name()))
            }
        }
        Event::RollbackRequested => match &m.phase {
            Phase::GracePeriod { until } => {
                m.rollback = Some(Rollback {
                    requested_at: now,
                    grace_until: *until,
                    watermarks: m.target_watermarks.clone(),
                    rounds: 0,
                    freeze: None,
                });
                m.phase = Phase::RollingBack {
                    step: RollbackStep::CatchingUp { round: 0 },
                };
                Ok(())
            }
            other => Err(MoveError::RollbackNotAllowed(other.name())),
        },
        Event::StepFailed {
            step,
            error,
            retryable,
        } => {
            m.attempts += 1;
            let message = format!("{step}: {error}");
            m.last_error = Some(message.clone());
            if retryable && m.attempts < m.policy.max_attempts {
                return Ok(());
            }
            if retryable && switching(&m.phase) {
                // A switch whose outcome is unknown must not be given up:
                // aborting would delete a copy the routing may point at.
                // Only its definite refusal (permanent) aborts.
                m.attention = Some(message);
                return Ok(());
            }
            if before_switch(&m.phase) || rollback_before_switch(&m.phase) {
                give_up(m, format!("{message} (failed for good)"), now);
            } else {
                // Past the point of no return, or already undoing: there is
                // nothing safer to fall back to; keep the command outstanding.
                m.attention = Some(message);
            }
            Ok(())
        }
        progress => {
            m.attempts = 0;
            m.last_error = None;
            m.attention = None;
            on_progress(m, progress, now)
        }
    }
}

fn switching(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::Switching { .. }
            | Phase::RollingBack {
                step: RollbackStep::SwitchingBack { .. }
            }
    )
}

fn before_switch(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::Preparing { .. }
            | Phase::Copying { .. }
            | Phase::CatchingUp { .. }
            | Phase::Freezing
            | Phase::FinalCatchUp
            | Phase::Verifying
            | Phase::Switching { .. }
    )
}

fn rollback_before_switch(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::RollingBack {
            step: RollbackStep::CatchingUp { .. }
                | RollbackStep::Freezing
                | RollbackStep::FinalCatchUp
                | RollbackStep::Verifying
                | RollbackStep::SwitchingBack { .. }
        }
    )
}

/// Abort the forward move (before the switch) or abandon a rollback
/// (before the switch back); anything else is left as it is.
fn give_up(m: &mut Move, reason: String, now: DateTime<Utc>) {
    if rollback_before_switch(&m.phase) {
        let frozen = m.rollback.as_ref().is_some_and(|r| r.freeze.is_some());
        m.phase = Phase::RollingBack {
            step: RollbackStep::Abandoning {
                reason,
                target_writable_needed: frozen,
                unfreeze_needed: frozen,
            },
        };
        finish_abandoning(m, now);
        return;
    }
    if !before_switch(&m.phase) {
        return;
    }
    // The freeze is recorded before `Freeze` and `MakeReadOnly` are issued,
    // so either may have taken effect: undo both (each undo is a no-op when
    // there is nothing to undo). The target holds data once copying began.
    let frozen = m.freeze.is_some();
    let copied = !matches!(m.phase, Phase::Preparing { .. });
    m.phase = Phase::Aborting {
        reason,
        at_step: m.phase.spec_step(),
        source_writable_needed: frozen,
        unfreeze_needed: frozen,
        target_cleanup_needed: copied && m.target.is_some(),
    };
    finish_aborting(m, now);
}

fn finish_aborting(m: &mut Move, now: DateTime<Utc>) {
    if let Phase::Aborting {
        reason,
        at_step,
        source_writable_needed: false,
        unfreeze_needed: false,
        target_cleanup_needed: false,
    } = &m.phase
    {
        if let Some(f) = m.freeze.as_mut() {
            f.released_at.get_or_insert(now);
        }
        m.outcome = Some(Outcome::Aborted {
            reason: reason.clone(),
        });
        m.phase = Phase::Aborted {
            reason: reason.clone(),
            at_step: *at_step,
        };
    }
}

fn finish_abandoning(m: &mut Move, now: DateTime<Utc>) {
    if let Phase::RollingBack {
        step:
            RollbackStep::Abandoning {
                reason,
                target_writable_needed: false,
                unfreeze_needed: false,
            },
    } = &m.phase
    {
        m.rollback_failures.push(reason.clone());
        let until = m.rollback.take().map(|r| r.grace_until).unwrap_or(now);
        m.phase = Phase::GracePeriod { until };
    }
}

fn on_tick(m: &mut Move, now: DateTime<Utc>) {
    match &m.phase {
        Phase::Preparing {
            waiting_until: Some(at),
        } if now >= *at => {
            m.phase = Phase::Preparing {
                waiting_until: None,
            };
        }
        Phase::GracePeriod { until } if now >= *until => {
            m.phase = Phase::DeletingSource;
        }
        _ => {}
    }
}

/// Merge a catch-up's watermarks: they may only move forward.
fn advance(
    watermarks: &mut BTreeMap<String, u64>,
    reported: BTreeMap<String, u64>,
) -> Result<(), MoveError> {
    for (table, got) in &reported {
        if let Some(&had) = watermarks.get(table) {
            if *got < had {
                return Err(MoveError::WatermarkRegressed {
                    table: table.clone(),
                    had,
                    got: *got,
                });
            }
        }
    }
    watermarks.extend(reported);
    Ok(())
}

/// After a catch-up round that left nothing waiting: small enough, or too
/// many rounds already → freeze.
fn small_enough(policy: &MovePolicy, changes: u64, more: bool, rounds_done: u32) -> bool {
    (!more && changes <= policy.catch_up_threshold) || rounds_done >= policy.max_catch_up_rounds
}

fn on_progress(m: &mut Move, event: Event, now: DateTime<Utc>) -> Result<(), MoveError> {
    let phase = m.phase.clone();
    match (phase, event) {
        (Phase::Preparing { .. }, Event::TargetProvisioning { cell }) => {
            check_target(m, cell)?;
            m.target = Some(cell);
            m.phase = Phase::Preparing {
                waiting_until: Some(m.policy.next_provision_poll(now)),
            };
        }
        (Phase::Preparing { .. }, Event::TargetReady { cell }) => {
            check_target(m, cell)?;
            m.target = Some(cell);
            m.phase = match m.tables.first() {
                Some(table) => Phase::Copying {
                    table: table.clone(),
                    cursor: None,
                },
                None => Phase::CatchingUp { round: 0 },
            };
        }
        (
            Phase::Copying { table, .. },
            Event::ChunkCopied {
                rows,
                next_cursor,
                done,
                watermark,
                ..
            },
        ) => {
            *m.rows_copied.entry(table.clone()).or_default() += rows;
            // The earliest sequence read is the safe start for catch-up.
            let mark = m.watermarks.entry(table.clone()).or_insert(watermark);
            *mark = (*mark).min(watermark);
            m.phase = if done {
                let next = m
                    .tables
                    .iter()
                    .position(|t| *t == table)
                    .and_then(|i| m.tables.get(i + 1));
                match next {
                    Some(next) => Phase::Copying {
                        table: next.clone(),
                        cursor: None,
                    },
                    None => Phase::CatchingUp { round: 0 },
                }
            } else {
                match next_cursor {
                    Some(cursor) => Phase::Copying {
                        table,
                        cursor: Some(cursor),
                    },
                    None => return Err(MoveError::MissingCursor { table }),
                }
            };
        }
        (
            Phase::CatchingUp { round },
            Event::CaughtUp {
                changes,
                watermarks,
                more,
            },
        ) => {
            advance(&mut m.watermarks, watermarks)?;
            m.catch_up_rounds += 1;
            m.last_catch_up_changes = Some(changes);
            if small_enough(&m.policy, changes, more, round + 1) {
                m.freeze = Some(FreezeWindow::new(now, m.policy.freeze_deadline(now)));
                m.phase = Phase::Freezing;
            } else {
                m.phase = Phase::CatchingUp { round: round + 1 };
            }
        }
        (Phase::Freezing, event @ (Event::Frozen { .. } | Event::ReadOnly { .. })) => {
            let f = m
                .freeze
                .get_or_insert_with(|| FreezeWindow::new(now, m.policy.freeze_deadline(now)));
            let done = apply_freeze_answer(f, event);
            if let Some(version) = done {
                m.routing.expected = Some(version);
                m.phase = Phase::FinalCatchUp;
            }
        }
        (
            Phase::FinalCatchUp,
            Event::CaughtUp {
                changes,
                watermarks,
                more,
            },
        ) => {
            advance(&mut m.watermarks, watermarks)?;
            m.last_catch_up_changes = Some(changes);
            if !more {
                m.phase = Phase::Verifying;
            }
        }
        (Phase::Verifying, Event::Verified { source, target }) => {
            let found = mismatches(&m.tables, &source, &target);
            if found.is_empty() {
                m.target_watermarks = target.watermarks;
                let from_version = m.routing.expected.unwrap_or_default();
                m.phase = Phase::Switching { from_version };
            } else {
                give_up(m, format!("verification failed: {}", describe(&found)), now);
            }
        }
        (Phase::Switching { from_version }, Event::Switched { version }) => {
            if version <= from_version {
                return Err(MoveError::VersionNotAfter {
                    from: from_version,
                    got: version,
                });
            }
            m.routing.switched = Some(version);
            m.phase = Phase::Unfreezing;
        }
        (Phase::Unfreezing, Event::Unfrozen) => {
            if let Some(f) = m.freeze.as_mut() {
                f.released_at = Some(now);
            }
            m.phase = Phase::GracePeriod {
                until: m.policy.grace_end(now),
            };
        }
        (Phase::DeletingSource, Event::CopyDeleted { .. }) => {
            m.outcome = m.target.map(|to| Outcome::Moved { to });
            m.phase = Phase::Done;
        }
        (
            Phase::Aborting {
                reason,
                at_step,
                mut source_writable_needed,
                mut unfreeze_needed,
                mut target_cleanup_needed,
            },
            event,
        ) => {
            match event {
                Event::Writable { .. } => source_writable_needed = false,
                Event::Unfrozen => unfreeze_needed = false,
                Event::CopyDeleted { .. } => target_cleanup_needed = false,
                other => return Err(unexpected(m, &other)),
            }
            m.phase = Phase::Aborting {
                reason,
                at_step,
                source_writable_needed,
                unfreeze_needed,
                target_cleanup_needed,
            };
            finish_aborting(m, now);
        }
        (Phase::RollingBack { step }, event) => on_rollback(m, step, event, now)?,
        (_, other) => return Err(unexpected(m, &other)),
    }
    Ok(())
}

/// Record `Frozen` or `ReadOnly`; the routing version once both are in.
fn apply_freeze_answer(f: &mut FreezeWindow, event: Event) -> Option<u64> {
    match event {
        Event::Frozen {
            at,
            routing_version,
        } => {
            f.frozen_at = Some(at);
            f.routing_version = Some(routing_version);
        }
        Event::ReadOnly { .. } => f.read_only = true,
        _ => {}
    }
    match (f.frozen_at, f.routing_version, f.read_only) {
        (Some(_), Some(version), true) => Some(version),
        _ => None,
    }
}

fn on_rollback(
    m: &mut Move,
    step: RollbackStep,
    event: Event,
    now: DateTime<Utc>,
) -> Result<(), MoveError> {
    let policy = m.policy;
    let Some(rollback) = m.rollback.as_mut() else {
        return Err(unexpected(m, &event));
    };
    let next = match (step, event) {
        (
            RollbackStep::CatchingUp { round },
            Event::CaughtUp {
                changes,
                watermarks,
                more,
            },
        ) => {
            advance(&mut rollback.watermarks, watermarks)?;
            rollback.rounds += 1;
            if small_enough(&policy, changes, more, round + 1) {
                rollback.freeze = Some(FreezeWindow::new(now, policy.freeze_deadline(now)));
                RollbackStep::Freezing
            } else {
                RollbackStep::CatchingUp { round: round + 1 }
            }
        }
        (RollbackStep::Freezing, event @ (Event::Frozen { .. } | Event::ReadOnly { .. })) => {
            let f = rollback
                .freeze
                .get_or_insert_with(|| FreezeWindow::new(now, policy.freeze_deadline(now)));
            match apply_freeze_answer(f, event) {
                Some(_) => RollbackStep::FinalCatchUp,
                None => RollbackStep::Freezing,
            }
        }
        (
            RollbackStep::FinalCatchUp,
            Event::CaughtUp {
                watermarks, more, ..
            },
        ) => {
            advance(&mut rollback.watermarks, watermarks)?;
            if more {
                RollbackStep::FinalCatchUp
            } else {
                RollbackStep::Verifying
            }
        }
        (RollbackStep::Verifying, Event::Verified { source, target }) => {
            let found = mismatches(&m.tables, &source, &target);
            if !found.is_empty() {
                give_up(
                    m,
                    format!("rollback verification failed: {}", describe(&found)),
                    now,
                );
                return Ok(());
            }
            let from_version = rollback
                .freeze
                .as_ref()
                .and_then(|f| f.routing_version)
                .unwrap_or_default();
            RollbackStep::SwitchingBack { from_version }
        }
        (RollbackStep::SwitchingBack { from_version }, Event::Switched { version }) => {
            if version <= from_version {
                return Err(MoveError::VersionNotAfter {
                    from: from_version,
                    got: version,
                });
            }
            m.routing.rolled_back = Some(version);
            RollbackStep::Releasing {
                source_writable_needed: true,
                unfreeze_needed: true,
            }
        }
        (
            RollbackStep::Releasing {
                mut source_writable_needed,
                mut unfreeze_needed,
            },
            event,
        ) => {
            match event {
                Event::Writable { .. } => source_writable_needed = false,
                Event::Unfrozen => {
                    unfreeze_needed = false;
                    if let Some(f) = rollback.freeze.as_mut() {
                        f.released_at = Some(now);
                    }
                }
                other => return Err(unexpected(m, &other)),
            }
            if source_writable_needed || unfreeze_needed {
                RollbackStep::Releasing {
                    source_writable_needed,
                    unfreeze_needed,
                }
            } else {
                RollbackStep::DeletingTarget
            }
        }
        (RollbackStep::DeletingTarget, Event::CopyDeleted { .. }) => {
            m.outcome = Some(Outcome::RolledBack);
            m.phase = Phase::RolledBack;
            return Ok(());
        }
        (
            RollbackStep::Abandoning {
                reason,
                mut target_writable_needed,
                mut unfreeze_needed,
            },
            event,
        ) => {
            match event {
                Event::Writable { .. } => target_writable_needed = false,
                Event::Unfrozen => {
                    unfreeze_needed = false;
                    if let Some(f) = rollback.freeze.as_mut() {
                        f.released_at = Some(now);
                    }
                }
                other => return Err(unexpected(m, &other)),
            }
            m.phase = Phase::RollingBack {
                step: RollbackStep::Abandoning {
                    reason,
                    target_writable_needed,
                    unfreeze_needed,
                },
            };
            finish_abandoning(m, now);
            return Ok(());
        }
        (_, other) => return Err(unexpected(m, &other)),
    };
    m.phase = Phase::RollingBack { step: next };
    Ok(())
}

fn check_target(m: &Move, cell: CellId) -> Result<(), MoveError> {
    if cell == m.source {
        return Err(MoveError::TargetIsSource(cell));
    }
    match m.target {
        Some(expected) if m.target_fixed && expected != cell => Err(MoveError::WrongTarget {
            expected,
            got: cell,
        }),
        _ => Ok(()),
    }
}

fn unexpected(m: &Move, event: &Event) -> MoveError {
    MoveError::UnexpectedEvent {
        state: m.phase.name(),
        event: event.name(),
    }
}
