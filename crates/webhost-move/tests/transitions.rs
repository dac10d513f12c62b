//! Each transition on its own, with hand-written events.

mod common;

use chrono::TimeDelta;
use common::*;
use webhost_move::{
    resume, Command, CommandKind, Event, Move, MoveError, MovePolicy, Outcome, Phase, RollbackStep,
};

fn kinds(commands: &[Command]) -> Vec<CommandKind> {
    commands.iter().map(Command::kind).collect()
}

#[test]
fn start_asks_for_a_target_and_refuses_the_source_as_target() {
    let ids = ids();
    let (m, commands) = Move::start(
        ids.tenant,
        ids.source,
        None,
        tables(),
        None,
        MovePolicy::default(),
        t0(),
    )
    .unwrap();
    assert_eq!(
        commands,
        vec![Command::ProvisionTarget {
            tenant: ids.tenant,
            source: ids.source,
            cell: None
        }]
    );
    assert_eq!(m.phase.name(), "preparing");
    let err = Move::start(
        ids.tenant,
        ids.source,
        Some(ids.source),
        tables(),
        None,
        MovePolicy::default(),
        t0(),
    )
    .unwrap_err();
    assert_eq!(err, MoveError::SameCell);
}

#[test]
fn preparing_waits_for_a_target_being_provisioned_then_asks_again() {
    let ids = ids();
    let (m, _) = Move::start(
        ids.tenant,
        ids.source,
        None,
        tables(),
        None,
        MovePolicy::default(),
        t0(),
    )
    .unwrap();
    let (m, commands) = feed(&m, Event::TargetProvisioning { cell: ids.target }, t0());
    let poll = t0() + TimeDelta::seconds(30);
    assert_eq!(commands, vec![Command::WaitUntil { at: poll }]);
    // Early ticks change nothing; a TargetReady now answers nothing.
    let (same, commands) = feed(&m, Event::Tick, at_ms(1_000));
    assert_eq!(same.phase, m.phase);
    assert_eq!(commands, vec![Command::WaitUntil { at: poll }]);
    assert!(matches!(
        try_feed(&m, Event::TargetReady { cell: ids.target }, at_ms(1_000)),
        Err(MoveError::UnexpectedEvent { .. })
    ));
    let (m, commands) = feed(&m, Event::Tick, poll);
    assert_eq!(
        commands,
        vec![Command::ProvisionTarget {
            tenant: ids.tenant,
            source: ids.source,
            cell: Some(ids.target)
        }]
    );
    let (m, commands) = feed(&m, Event::TargetReady { cell: ids.target }, poll);
    assert_eq!(m.target, Some(ids.target));
    assert_eq!(
        commands,
        vec![Command::CopyChunk {
            tenant: ids.tenant,
            from: ids.source,
            to: ids.target,
            table: "vehicles".into(),
            cursor: None,
            limit: 10_000,
            history_since: None,
        }]
    );
}

#[test]
fn a_fixed_target_cannot_be_swapped_and_the_source_is_never_the_target() {
    let ids = ids();
    let m = started(&ids);
    let other = webhost_domain::CellId::new();
    assert_eq!(
        try_feed(&m, Event::TargetReady { cell: other }, t0()).unwrap_err(),
        MoveError::WrongTarget {
            expected: ids.target,
            got: other
        }
    );
    assert_eq!(
        try_feed(&m, Event::TargetReady { cell: ids.source }, t0()).unwrap_err(),
        MoveError::TargetIsSource(ids.source)
    );
}

#[test]
fn copying_follows_the_cursor_table_by_table_with_the_history_cutoff() {
    let ids = ids();
    let cutoff = t0() - TimeDelta::days(30);
    let (m, _) = Move::start(
        ids.tenant,
        ids.source,
        Some(ids.target),
        tables(),
        Some(cutoff),
        MovePolicy::default(),
        t0(),
    )
    .unwrap();
    let (m, _) = feed(&m, Event::TargetReady { cell: ids.target }, t0());
    let chunk = |rows, cursor: Option<&str>, done, watermark| Event::ChunkCopied {
        table: "vehicles".into(),
        rows,
        next_cursor: cursor.map(Into::into),
        done,
        watermark,
    };
    let (m, commands) = feed(&m, chunk(10_000, Some("k1"), false, 40), t0());
    assert!(matches!(
        &commands[0],
        Command::CopyChunk { table, cursor: Some(c), history_since: Some(h), .. }
            if table == "vehicles" && c == "k1" && *h == cutoff
    ));
    // The earliest watermark seen is kept.
    let (m, commands) = feed(&m, chunk(7, None, true, 55), t0());
    assert_eq!(m.watermarks["vehicles"], 40);
    assert_eq!(m.rows_copied["vehicles"], 10_007);
    assert!(matches!(
        &commands[0],
        Command::CopyChunk { table, cursor: None, .. } if table == "positions"
    ));
    // A chunk of another table than the one outstanding does not fit.
    assert!(try_feed(&m, chunk(1, None, true, 1), t0()).is_err());
    // Not done without a cursor is an error, not a loop.
    let bad = Event::ChunkCopied {
        table: "positions".into(),
        rows: 1,
        next_cursor: None,
        done: false,
        watermark: 60,
    };
    assert_eq!(
        try_feed(&m, bad, t0()).unwrap_err(),
        MoveError::MissingCursor {
            table: "positions".into()
        }
    );
    let last = Event::ChunkCopied {
        table: "positions".into(),
        rows: 0,
        next_cursor: None,
        done: true,
        watermark: 61,
    };
    let (m, commands) = feed(&m, last, t0());
    assert_eq!(m.phase, Phase::CatchingUp { round: 0 });
    assert!(matches!(
        &commands[0],
        Command::CatchUp { since, .. } if since["vehicles"] == 40 && since["positions"] == 61
    ));
}

#[test]
fn no_tables_goes_straight_to_catch_up() {
    let ids = ids();
    let (m, _) = Move::start(
        ids.tenant,
        ids.source,
        None,
        vec![],
        None,
        MovePolicy::default(),
        t0(),
    )
    .unwrap();
    let (m, _) = feed(&m, Event::TargetReady { cell: ids.target }, t0());
    assert_eq!(m.phase, Phase::CatchingUp { round: 0 });
}

#[test]
fn catch_up_repeats_until_small_then_freezes() {
    let ids = ids();
    let m = walk_to(&ids, "catching_up");
    let big = |w| Event::CaughtUp {
        changes: 50_000,
        watermarks: marks(w),
        more: false,
    };
    let (m, commands) = feed(&m, big(100), at_ms(2_000));
    assert_eq!(m.phase, Phase::CatchingUp { round: 1 });
    assert!(matches!(&commands[0], Command::CatchUp { since, .. } if since["positions"] == 100));
    // `more`: the call stopped at its limit; not small whatever the count.
    let (m, _) = feed(
        &m,
        Event::CaughtUp {
            changes: 0,
            watermarks: marks(110),
            more: true,
        },
        at_ms(2_100),
    );
    assert_eq!(m.phase, Phase::CatchingUp { round: 2 });
    let (m, commands) = feed(
        &m,
        Event::CaughtUp {
            changes: 1_000,
            watermarks: marks(120),
            more: false,
        },
        at_ms(3_000),
    );
    assert_eq!(m.phase, Phase::Freezing);
    let deadline = at_ms(8_000);
    assert_eq!(
        commands,
        vec![
            Command::Freeze {
                tenant: ids.tenant,
                deadline
            },
            Command::MakeReadOnly {
                tenant: ids.tenant,
                cell: ids.source
            }
        ]
    );
    assert_eq!(m.freeze_deadline(), Some(deadline));
    assert_eq!(m.catch_up_rounds, 3);
}

#[test]
fn catch_up_rounds_are_capped() {
    let ids = ids();
    let mut m = walk_to(&ids, "catching_up");
    for round in 0..10 {
        assert_eq!(m.phase, Phase::CatchingUp { round });
        m = feed(
            &m,
            Event::CaughtUp {
                changes: 1_000_000,
                watermarks: marks(100 + u64::from(round)),
                more: true,
            },
            at_ms(2_000),
        )
        .0;
    }
    assert_eq!(m.phase, Phase::Freezing, "frozen anyway after 10 rounds");
}

#[test]
fn watermarks_never_go_back() {
    let ids = ids();
    let m = walk_to(&ids, "catching_up");
    let err = try_feed(
        &m,
        Event::CaughtUp {
            changes: 0,
            watermarks: marks(1),
            more: false,
        },
        at_ms(2_000),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        MoveError::WatermarkRegressed {
            had: 12,
            got: 1,
            ..
        }
    ));
}

#[test]
fn freezing_waits_for_both_the_edge_and_the_read_only_source() {
    let ids = ids();
    let m = walk_to(&ids, "freezing");
    let (m1, commands) = feed(&m, Event::ReadOnly { cell: ids.source }, at_ms(600));
    assert_eq!(m1.phase, Phase::Freezing);
    assert_eq!(kinds(&commands), vec![CommandKind::Freeze]);
    let (m2, commands) = feed(
        &m1,
        Event::Frozen {
            at: at_ms(620),
            routing_version: 7,
        },
        at_ms(650),
    );
    assert_eq!(m2.phase, Phase::FinalCatchUp);
    assert_eq!(m2.routing.expected, Some(7));
    assert_eq!(kinds(&commands), vec![CommandKind::CatchUp]);
    // A read-only answer for another cell answers nothing.
    assert!(try_feed(&m, Event::ReadOnly { cell: ids.target }, at_ms(600)).is_err());
}

#[test]
fn final_catch_up_loops_on_more_then_verifies() {
    let ids = ids();
    let m = walk_to(&ids, "final_catch_up");
    let (m, _) = feed(
        &m,
        Event::CaughtUp {
            changes: 10_000,
            watermarks: marks(30),
            more: true,
        },
        at_ms(800),
    );
    assert_eq!(m.phase, Phase::FinalCatchUp);
    let (m, commands) = feed(
        &m,
        Event::CaughtUp {
            changes: 2,
            watermarks: marks(31),
            more: false,
        },
        at_ms(900),
    );
    assert_eq!(m.phase, Phase::Verifying);
    assert_eq!(
        commands,
        vec![Command::Verify {
            tenant: ids.tenant,
            from: ids.source,
            to: ids.target,
            tables: tables(),
            history_since: None
        }]
    );
}

#[test]
fn verified_equal_switches_from_the_frozen_version() {
    let ids = ids();
    let m = walk_to(&ids, "verifying");
    let (m, commands) = feed(
        &m,
        Event::Verified {
            source: report(9, "s"),
            target: report(9, "s"),
        },
        at_ms(1_000),
    );
    assert_eq!(m.phase, Phase::Switching { from_version: 7 });
    assert_eq!(m.target_watermarks["positions"], 500);
    assert_eq!(
        commands,
        vec![Command::SwitchRouting {
            tenant: ids.tenant,
            from_version: 7,
            from_cell: ids.source,
            to_cell: ids.target
        }]
    );
}

#[test]
fn verify_mismatch_aborts_undoing_everything() {
    let ids = ids();
    let m = walk_to(&ids, "verifying");
    let (m, commands) = feed(
        &m,
        Event::Verified {
            source: report(1_000_000, "a"),
            target: report(999_999, "a"),
        },
        at_ms(1_000),
    );
    let Phase::Aborting {
        reason, at_step, ..
    } = &m.phase
    else {
        panic!("{:?}", m.phase)
    };
    assert_eq!(
        reason,
        "verification failed: positions: 1,000,000 rows vs 999,999; \
         vehicles: 1,000,000 rows vs 999,999"
    );
    assert_eq!(*at_step, 5);
    assert_eq!(
        commands,
        vec![
            Command::MakeWritable {
                tenant: ids.tenant,
                cell: ids.source
            },
            Command::Unfreeze { tenant: ids.tenant },
            Command::DeleteCopy {
                tenant: ids.tenant,
                cell: ids.target
            },
        ]
    );
    let (m, _) = feed(&m, Event::Writable { cell: ids.source }, at_ms(1_100));
    let (m, _) = feed(&m, Event::Unfrozen, at_ms(1_200));
    assert_eq!(m.phase.name(), "aborting");
    let (m, commands) = feed(&m, Event::CopyDeleted { cell: ids.target }, at_ms(1_300));
    assert!(commands.is_empty());
    assert!(m.is_finished());
    assert!(matches!(m.phase, Phase::Aborted { at_step: 5, .. }));
    assert!(matches!(&m.outcome, Some(Outcome::Aborted { reason }) if reason.contains("rows vs")));
    assert_eq!(m.progress().freeze_ms, Some(1_300 - 550));
    assert_eq!(m.progress().percent, 100);
}

#[test]
fn the_freeze_deadline_aborts_in_every_frozen_state_before_the_switch() {
    let ids = ids();
    for state in ["freezing", "final_catch_up", "verifying"] {
        let m = walk_to(&ids, state);
        let deadline = m.freeze_deadline().expect("a freeze runs");
        // Just before: nothing happens on a tick.
        let before = deadline - TimeDelta::milliseconds(1);
        assert_eq!(feed(&m, Event::Tick, before).0.phase.name(), state);
        // At the deadline, a tick or any answer aborts.
        let (aborted, commands) = feed(&m, Event::Tick, deadline);
        assert!(
            matches!(&aborted.phase, Phase::Aborting { reason, unfreeze_needed: true, source_writable_needed: true, target_cleanup_needed: true, .. }
                if reason == &format!("freeze deadline of 5,000 ms exceeded in {state}")),
            "{state}: {:?}",
            aborted.phase
        );
        assert_eq!(
            kinds(&commands),
            vec![
                CommandKind::MakeWritable,
                CommandKind::Unfreeze,
                CommandKind::DeleteCopy
            ]
        );
    }
    // A late answer aborts too.
    let m = walk_to(&ids, "verifying");
    let late = m.freeze_deadline().unwrap() + TimeDelta::seconds(1);
    let (m, _) = feed(
        &m,
        Event::Verified {
            source: report(1, "x"),
            target: report(1, "x"),
        },
        late,
    );
    assert_eq!(m.phase.name(), "aborting");
}

#[test]
fn a_tick_never_aborts_a_switch_in_flight_and_a_late_switch_stands() {
    let ids = ids();
    let m = walk_to(&ids, "switching");
    let late = m.freeze_deadline().unwrap() + TimeDelta::seconds(10);
    let (same, commands) = feed(&m, Event::Tick, late);
    assert_eq!(same.phase, m.phase);
    assert_eq!(kinds(&commands), vec![CommandKind::SwitchRouting]);
    let (m, commands) = feed(&m, Event::Switched { version: 8 }, late);
    assert_eq!(m.phase, Phase::Unfreezing);
    assert_eq!(m.routing.switched, Some(8));
    assert_eq!(commands, vec![Command::Unfreeze { tenant: ids.tenant }]);
}

#[test]
fn a_switch_must_advance_the_version() {
    let ids = ids();
    let m = walk_to(&ids, "switching");
    assert_eq!(
        try_feed(&m, Event::Switched { version: 7 }, at_ms(1_000)).unwrap_err(),
        MoveError::VersionNotAfter { from: 7, got: 7 }
    );
}

#[test]
fn unfreezing_starts_the_grace_period_which_ends_in_deleting_the_source() {
    let ids = ids();
    let m = walk_to(&ids, "unfreezing");
    let (m, commands) = feed(&m, Event::Unfrozen, at_ms(1_000));
    let until = at_ms(1_000) + TimeDelta::days(7);
    assert_eq!(m.phase, Phase::GracePeriod { until });
    assert_eq!(commands, vec![Command::WaitUntil { at: until }]);
    assert_eq!(m.progress().freeze_ms, Some(1_000 - 550));
    let (m, _) = feed(&m, Event::Tick, until - TimeDelta::seconds(1));
    assert_eq!(m.phase.name(), "grace_period");
    let (m, commands) = feed(&m, Event::Tick, until);
    assert_eq!(m.phase, Phase::DeletingSource);
    assert_eq!(
        commands,
        vec![Command::DeleteCopy {
            tenant: ids.tenant,
            cell: ids.source
        }]
    );
    let (m, commands) = feed(&m, Event::CopyDeleted { cell: ids.source }, until);
    assert_eq!(m.phase, Phase::Done);
    assert!(commands.is_empty());
    assert_eq!(m.outcome, Some(Outcome::Moved { to: ids.target }));
}

#[test]
fn retryable_failures_reissue_the_same_command_until_attempts_run_out() {
    let ids = ids();
    let m = walk_to(&ids, "copying");
    let outstanding = resume(&m);
    let mut cur = m.clone();
    for attempt in 1..5 {
        let (next, commands) = feed(&cur, failed(CommandKind::CopyChunk, true), at_ms(500));
        assert_eq!(commands, outstanding, "attempt {attempt}: same command");
        assert_eq!(next.attempts, attempt);
        assert_eq!(next.last_error.as_deref(), Some("copy_chunk: boom"));
        cur = next;
    }
    // The fifth retryable failure counts as permanent: abort.
    let (aborted, commands) = feed(&cur, failed(CommandKind::CopyChunk, true), at_ms(500));
    assert!(matches!(
        aborted.phase,
        Phase::Aborting {
            at_step: 2,
            source_writable_needed: false,
            unfreeze_needed: false,
            target_cleanup_needed: true,
            ..
        }
    ));
    assert_eq!(kinds(&commands), vec![CommandKind::DeleteCopy]);
    // Progress resets the count.
    let (ok, _) = feed(
        &cur,
        Event::ChunkCopied {
            table: "vehicles".into(),
            rows: 1,
            next_cursor: None,
            done: true,
            watermark: 1,
        },
        at_ms(600),
    );
    assert_eq!(ok.attempts, 0);
    assert_eq!(ok.last_error, None);
}

#[test]
fn a_failure_of_a_command_not_outstanding_is_an_error() {
    let ids = ids();
    let m = walk_to(&ids, "copying");
    assert_eq!(
        try_feed(&m, failed(CommandKind::Verify, false), at_ms(500)).unwrap_err(),
        MoveError::UnexpectedEvent {
            state: "copying",
            event: "step_failed"
        }
    );
}

#[test]
fn permanent_failures_before_the_switch_abort_from_each_state() {
    let ids = ids();
    for (state, kind, step, cleanup, frozen) in [
        ("preparing", CommandKind::ProvisionTarget, 1, false, false),
        ("copying", CommandKind::CopyChunk, 2, true, false),
        ("catching_up", CommandKind::CatchUp, 3, true, false),
        ("freezing", CommandKind::Freeze, 4, true, true),
        ("final_catch_up", CommandKind::CatchUp, 5, true, true),
        ("verifying", CommandKind::Verify, 5, true, true),
        ("switching", CommandKind::SwitchRouting, 6, true, true),
    ] {
        let m = walk_to(&ids, state);
        let (m, commands) = feed(&m, failed(kind, false), at_ms(1_000));
        match &m.phase {
            Phase::Aborting {
                at_step,
                target_cleanup_needed,
                unfreeze_needed,
                source_writable_needed,
                ..
            } => {
                assert_eq!(*at_step, step, "{state}");
                assert_eq!(*target_cleanup_needed, cleanup, "{state}");
                assert_eq!(*unfreeze_needed, frozen, "{state}");
                assert_eq!(*source_writable_needed, frozen, "{state}");
            }
            Phase::Aborted { at_step, .. } => {
                assert_eq!(state, "preparing");
                assert_eq!(*at_step, 1);
                assert!(commands.is_empty());
            }
            other => panic!("{state}: {other:?}"),
        }
    }
}

#[test]
fn a_switch_with_an_unknown_outcome_is_retried_not_aborted() {
    let ids = ids();
    let mut m = walk_to(&ids, "switching");
    for _ in 0..8 {
        let (next, commands) = feed(&m, failed(CommandKind::SwitchRouting, true), at_ms(900));
        assert_eq!(next.phase.name(), "switching");
        assert_eq!(kinds(&commands), vec![CommandKind::SwitchRouting]);
        m = next;
    }
    assert!(m.attention.is_some(), "the operator is told");
}

#[test]
fn after_the_switch_failures_never_abort_they_wait_for_attention() {
    let ids = ids();
    for (state, kind) in [
        ("unfreezing", CommandKind::Unfreeze),
        ("deleting_source", CommandKind::DeleteCopy),
    ] {
        let m = walk_to(&ids, state);
        let (m, commands) = feed(&m, failed(kind, false), at_ms(5_000));
        assert_eq!(m.phase.name(), state);
        assert_eq!(kinds(&commands), vec![kind]);
        assert_eq!(m.attention.as_deref(), Some(&*format!("{kind}: boom")));
    }
    // The abort path too: its undo steps are retried for ever.
    let m = walk_to(&ids, "verifying");
    let (m, _) = feed(&m, Event::CancelRequested, at_ms(900));
    let (m, commands) = feed(&m, failed(CommandKind::MakeWritable, false), at_ms(950));
    assert_eq!(m.phase.name(), "aborting");
    assert_eq!(commands[0].kind(), CommandKind::MakeWritable);
    assert!(m.attention.is_some());
}

#[test]
fn cancel_is_an_abort_before_the_switch_and_refused_after_it() {
    let ids = ids();
    let m = walk_to(&ids, "catching_up");
    let (m2, commands) = feed(&m, Event::CancelRequested, at_ms(900));
    assert!(
        matches!(&m2.phase, Phase::Aborting { reason, .. } if reason == "cancelled by the operator")
    );
    assert_eq!(kinds(&commands), vec![CommandKind::DeleteCopy]);
    let m = walk_to(&ids, "grace_period");
    assert_eq!(
        try_feed(&m, Event::CancelRequested, at_ms(900)).unwrap_err(),
        MoveError::CancelNotAllowed("grace_period")
    );
}

#[test]
fn rollback_is_allowed_only_within_the_grace_period() {
    let ids = ids();
    for state in [
        "copying",
        "verifying",
        "switching",
        "unfreezing",
        "deleting_source",
        "done",
    ] {
        let m = walk_to(&ids, state);
        assert_eq!(
            try_feed(&m, Event::RollbackRequested, at_ms(2_000)).unwrap_err(),
            MoveError::RollbackNotAllowed(state),
        );
    }
    let m = walk_to(&ids, "grace_period");
    let (m, commands) = feed(&m, Event::RollbackRequested, at_ms(2_000));
    assert_eq!(
        m.phase,
        Phase::RollingBack {
            step: RollbackStep::CatchingUp { round: 0 }
        }
    );
    assert_eq!(
        commands,
        vec![Command::CatchUp {
            tenant: ids.tenant,
            from: ids.target,
            to: ids.source,
            since: marks(500),
            limit: 10_000,
            history_since: None,
        }]
    );
}

/// The rollback's steps, each answered by hand.
#[test]
fn rollback_steps_mirror_the_move_with_the_cells_swapped() {
    let ids = ids();
    let m = walk_to(&ids, "grace_period");
    let Phase::GracePeriod { until } = m.phase else {
        unreachable!()
    };
    let now = at_ms(10_000);
    let (m, _) = feed(&m, Event::RollbackRequested, now);
    let (m, commands) = feed(
        &m,
        Event::CaughtUp {
            changes: 3,
            watermarks: marks(600),
            more: false,
        },
        now,
    );
    assert_eq!(
        commands,
        vec![
            Command::Freeze {
                tenant: ids.tenant,
                deadline: now + TimeDelta::seconds(5)
            },
            Command::MakeReadOnly {
                tenant: ids.tenant,
                cell: ids.target
            }
        ]
    );
    let (m, _) = feed(
        &m,
        Event::Frozen {
            at: now,
            routing_version: 9,
        },
        now,
    );
    let (m, commands) = feed(&m, Event::ReadOnly { cell: ids.target }, now);
    assert_eq!(kinds(&commands), vec![CommandKind::CatchUp]);
    let (m, commands) = feed(
        &m,
        Event::CaughtUp {
            changes: 0,
            watermarks: marks(601),
            more: false,
        },
        now,
    );
    assert!(
        matches!(&commands[0], Command::Verify { from, to, .. } if *from == ids.target && *to == ids.source)
    );
    let (m, commands) = feed(
        &m,
        Event::Verified {
            source: report(5, "z"),
            target: report(5, "z"),
        },
        now,
    );
    assert_eq!(
        commands,
        vec![Command::SwitchRouting {
            tenant: ids.tenant,
            from_version: 9,
            from_cell: ids.target,
            to_cell: ids.source
        }]
    );
    // Past the grace period's end: the rollback under way wins.
    let (m, _) = feed(&m, Event::Tick, until + TimeDelta::days(1));
    assert_eq!(m.phase.name(), "rolling_back");
    let (m, commands) = feed(&m, Event::Switched { version: 10 }, now);
    assert_eq!(
        commands,
        vec![
            Command::MakeWritable {
                tenant: ids.tenant,
                cell: ids.source
            },
            Command::Unfreeze { tenant: ids.tenant }
        ]
    );
    let (m, _) = feed(&m, Event::Writable { cell: ids.source }, now);
    let (m, commands) = feed(&m, Event::Unfrozen, now);
    assert_eq!(
        commands,
        vec![Command::DeleteCopy {
            tenant: ids.tenant,
            cell: ids.target
        }]
    );
    let (m, commands) = feed(&m, Event::CopyDeleted { cell: ids.target }, now);
    assert_eq!(m.phase, Phase::RolledBack);
    assert!(commands.is_empty());
    assert_eq!(m.routing.rolled_back, Some(10));
    assert_eq!(m.progress().state, "rolled_back");
}

#[test]
fn a_rollback_past_its_freeze_deadline_is_abandoned_back_to_the_grace_period() {
    let ids = ids();
    let m = walk_to(&ids, "grace_period");
    let Phase::GracePeriod { until } = m.phase else {
        unreachable!()
    };
    let now = at_ms(10_000);
    let (m, _) = feed(&m, Event::RollbackRequested, now);
    let (m, _) = feed(
        &m,
        Event::CaughtUp {
            changes: 0,
            watermarks: marks(600),
            more: false,
        },
        now,
    );
    let (m, commands) = feed(&m, Event::Tick, now + TimeDelta::seconds(5));
    assert_eq!(
        commands,
        vec![
            Command::MakeWritable {
                tenant: ids.tenant,
                cell: ids.target
            },
            Command::Unfreeze { tenant: ids.tenant }
        ]
    );
    let (m, _) = feed(&m, Event::Writable { cell: ids.target }, now);
    let (m, commands) = feed(&m, Event::Unfrozen, now);
    assert_eq!(m.phase, Phase::GracePeriod { until });
    assert_eq!(commands, vec![Command::WaitUntil { at: until }]);
    assert_eq!(
        m.rollback_failures,
        vec!["freeze deadline of 5,000 ms exceeded in rollback_freezing".to_string()]
    );
    // It may be asked for again.
    assert!(try_feed(&m, Event::RollbackRequested, now).is_ok());
}

#[test]
fn a_rollback_failing_for_good_before_freezing_is_abandoned_without_undo() {
    let ids = ids();
    let m = walk_to(&ids, "grace_period");
    let (m, _) = feed(&m, Event::RollbackRequested, at_ms(10_000));
    let (m, commands) = feed(&m, failed(CommandKind::CatchUp, false), at_ms(10_000));
    assert_eq!(m.phase.name(), "grace_period");
    assert_eq!(kinds(&commands), vec![CommandKind::WaitUntil]);
    assert_eq!(m.rollback_failures.len(), 1);
}

#[test]
fn finished_moves_answer_nothing_but_ticks() {
    let ids = ids();
    let m = walk_to(&ids, "done");
    let (same, commands) = feed(&m, Event::Tick, at_ms(1));
    assert_eq!(same.phase, Phase::Done);
    assert!(commands.is_empty());
    assert!(try_feed(&m, Event::Unfrozen, at_ms(1)).is_err());
}

/// What a crash does: the state goes through JSON, and `resume` gives the
/// commands to (re)issue — for every state a move can be in.
#[test]
fn resume_after_a_json_round_trip_in_every_state() {
    let ids = ids();
    for state in PATH {
        let m = walk_to(&ids, state);
        let back = reload(&m);
        assert_eq!(back, m, "{state}: JSON round trip is exact");
        let commands = resume(&back);
        let expected: Vec<CommandKind> = match *state {
            "preparing" => vec![CommandKind::ProvisionTarget],
            "copying" => vec![CommandKind::CopyChunk],
            "catching_up" | "final_catch_up" => vec![CommandKind::CatchUp],
            "freezing" => vec![CommandKind::Freeze, CommandKind::MakeReadOnly],
            "verifying" => vec![CommandKind::Verify],
            "switching" => vec![CommandKind::SwitchRouting],
            "unfreezing" => vec![CommandKind::Unfreeze],
            "grace_period" => vec![CommandKind::WaitUntil],
            "deleting_source" => vec![CommandKind::DeleteCopy],
            "done" => vec![],
            other => panic!("{other}"),
        };
        assert_eq!(kinds(&commands), expected, "{state}");
    }
    // The abort path, part-way through its undo.
    let m = walk_to(&ids, "verifying");
    let (m, _) = feed(&m, Event::CancelRequested, at_ms(900));
    let (m, _) = feed(&m, Event::Writable { cell: ids.source }, at_ms(950));
    assert_eq!(
        kinds(&resume(&reload(&m))),
        vec![CommandKind::Unfreeze, CommandKind::DeleteCopy]
    );
    // Every rollback step.
    let mut m = walk_to(&ids, "grace_period");
    let now = at_ms(10_000);
    let script = vec![
        (Event::RollbackRequested, vec![CommandKind::CatchUp]),
        (
            Event::CaughtUp {
                changes: 0,
                watermarks: marks(600),
                more: false,
            },
            vec![CommandKind::Freeze, CommandKind::MakeReadOnly],
        ),
        (
            Event::Frozen {
                at: now,
                routing_version: 9,
            },
            vec![CommandKind::MakeReadOnly],
        ),
        (
            Event::ReadOnly { cell: ids.target },
            vec![CommandKind::CatchUp],
        ),
        (
            Event::CaughtUp {
                changes: 0,
                watermarks: marks(600),
                more: false,
            },
            vec![CommandKind::Verify],
        ),
        (
            Event::Verified {
                source: report(1, "q"),
                target: report(1, "q"),
            },
            vec![CommandKind::SwitchRouting],
        ),
        (
            Event::Switched { version: 10 },
            vec![CommandKind::MakeWritable, CommandKind::Unfreeze],
        ),
        (
            Event::Writable { cell: ids.source },
            vec![CommandKind::Unfreeze],
        ),
        (Event::Unfrozen, vec![CommandKind::DeleteCopy]),
        (Event::CopyDeleted { cell: ids.target }, vec![]),
    ];
    for (event, expected) in script {
        let name = event.name();
        m = feed(&m, event, now).0;
        assert_eq!(kinds(&resume(&reload(&m))), expected, "after {name}");
    }
}

#[test]
fn progress_reports_state_step_and_percent() {
    let ids = ids();
    let expected = [
        ("preparing", 1, 0),
        ("copying", 2, 5),
        ("catching_up", 3, 60),
        ("freezing", 4, 72),
        ("final_catch_up", 5, 76),
        ("verifying", 5, 80),
        ("switching", 6, 85),
        ("unfreezing", 6, 90),
        ("grace_period", 7, 95),
        ("deleting_source", 7, 98),
        ("done", 7, 100),
    ];
    for (state, step, percent) in expected {
        let p = walk_to(&ids, state).progress();
        assert_eq!(
            (p.state, p.step, p.of, p.percent),
            (state, step, 7, percent)
        );
    }
    let p = walk_to(&ids, "catching_up").progress();
    assert_eq!(p.rows_copied, 1_003);
    assert_eq!(p.freeze_ms, None);
    let json = serde_json::to_value(walk_to(&ids, "done").progress()).unwrap();
    assert_eq!(json["state"], "done");
    assert_eq!(json["freeze_ms"], 450);
    assert_eq!(json["timings"][0]["state"], "preparing");
}

#[test]
fn history_cutoff_only_on_a_downgrade() {
    let now = t0();
    assert_eq!(webhost_move::history_cutoff(now, 90, 365), None);
    assert_eq!(webhost_move::history_cutoff(now, 90, 90), None);
    assert_eq!(
        webhost_move::history_cutoff(now, 365, 30),
        Some(now - TimeDelta::days(30))
    );
}

#[test]
fn the_persisted_shape_is_tagged_snake_case() {
    let ids = ids();
    let m = walk_to(&ids, "switching");
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["phase"]["state"], "switching");
    assert_eq!(json["phase"]["from_version"], 7);
    let commands = serde_json::to_value(resume(&m)).unwrap();
    assert_eq!(commands[0]["command"], "switch_routing");
}
