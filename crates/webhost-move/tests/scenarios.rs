//! Whole moves driven against the fake world (`common::World`): cells with
//! change logs, an edge that holds writes while frozen, a versioned routing
//! table, and a tenant writing throughout.

mod common;

use chrono::TimeDelta;
use common::{World, PATH};
use webhost_move::{resume, step, Command, Event, Outcome, Phase};

/// The tenant is served from `cell`, unfrozen and writable, with every
/// acknowledged write and nothing else; nothing waits at the edge.
fn assert_serving(world: &mut World, cell: webhost_domain::CellId) {
    assert_eq!(world.route.cell, cell, "routed to the expected cell");
    assert!(world.route.frozen_until.is_none(), "not frozen");
    assert!(world.held.is_empty(), "no write held");
    assert!(!world.cells[&cell].read_only, "writable");
    // Refused writes are resent by their clients and then stored.
    world.tenant_writes();
    assert!(world.resend.is_empty(), "writes accepted");
    assert_eq!(
        world.served(),
        world.expected(),
        "every acknowledged write, once"
    );
}

#[test]
fn happy_path_end_to_end() {
    let mut world = World::new();
    let m = world.start();
    let m = world.drive(m, None, None);
    assert_eq!(m.phase, Phase::Done);
    assert_eq!(
        m.outcome,
        Some(Outcome::Moved {
            to: world.ids.target
        })
    );
    let target = world.ids.target;
    assert_serving(&mut world, target);
    assert!(
        !world.cells[&world.ids.source].present,
        "source copy deleted"
    );
    assert!(m.rows_copied["vehicles"] >= 25);
    assert!(m.rows_copied["positions"] >= 1_234);
    assert_eq!(m.routing.expected, Some(2));
    assert_eq!(m.routing.switched, Some(3));

    let p = m.progress();
    assert_eq!((p.state, p.step, p.of, p.percent), ("done", 7, 7, 100));
    let freeze_ms = p.freeze_ms.expect("the freeze was measured");
    assert!(freeze_ms < 5_000, "{freeze_ms} ms");
    let states: Vec<&str> = p.timings.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, PATH, "every state timed, in order");
    assert!(p.timings.iter().all(|t| t.ended_at.is_some()));
}

#[test]
fn killed_at_every_command_the_move_still_completes_exactly() {
    // How many commands a run takes.
    let mut probe = World::new();
    let mut m = probe.start();
    let mut count = 0;
    while let Some(first) = resume(&m).first().cloned() {
        probe.tenant_writes();
        let e = probe.execute(&first);
        m = step(&m, e, probe.now).unwrap().0;
        count += 1;
    }
    assert!(count >= 14, "{count} commands");
    for crash_at in 0..count {
        let mut world = World::new();
        let m = world.start();
        let m = world.drive(m, None, Some(crash_at));
        assert_eq!(m.phase, Phase::Done, "crash at command {crash_at}");
        let target = world.ids.target;
        assert_serving(&mut world, target);
    }
}

#[test]
fn killed_during_a_rollback_it_still_rolls_back_exactly() {
    for crash_at in 0..14 {
        let mut world = World::new();
        let m = world.start();
        let m = world.drive(m, Some("grace_period"), None);
        // The tenant writes on the target for a while.
        for _ in 0..10 {
            world.tenant_writes();
        }
        let (m, _) = step(&m, Event::RollbackRequested, world.now).unwrap();
        let m = world.drive(m, None, Some(crash_at));
        assert_eq!(m.phase, Phase::RolledBack, "crash at {crash_at}");
        let source = world.ids.source;
        assert_serving(&mut world, source);
        assert!(
            !world.cells[&world.ids.target].present,
            "target copy deleted"
        );
    }
}

#[test]
fn verification_mismatch_aborts_and_the_tenant_stays_on_the_source() {
    let mut world = World::new();
    world.corrupt_target = true;
    let m = world.start();
    let m = world.drive(m, None, None);
    let Phase::Aborted { reason, at_step } = &m.phase else {
        panic!("aborted, not {:?}", m.phase)
    };
    assert_eq!(*at_step, 5);
    assert!(
        reason.starts_with("verification failed: positions: "),
        "{reason}"
    );
    assert!(reason.contains(" rows vs "), "{reason}");
    let source = world.ids.source;
    assert_serving(&mut world, source);
    assert!(
        !world.cells[&world.ids.target].present,
        "target copy dropped"
    );
    assert!(matches!(m.outcome, Some(Outcome::Aborted { .. })));
}

#[test]
fn a_freeze_past_its_deadline_aborts_unfreezes_and_keeps_the_tenant() {
    let mut world = World::new();
    world.verify_ms = 6_000;
    let m = world.start();
    let m = world.drive(m, None, None);
    let Phase::Aborted { reason, .. } = &m.phase else {
        panic!("aborted, not {:?}", m.phase)
    };
    assert_eq!(reason, "freeze deadline of 5,000 ms exceeded in verifying");
    let source = world.ids.source;
    assert_serving(&mut world, source);
    assert!(!world.cells[&world.ids.target].present);
}

#[test]
fn a_switch_refused_after_the_freeze_expired_aborts_cleanly() {
    // The freeze expires while the switch runs (e.g. the driver was slow):
    // the routing table refuses the switch, and the move aborts.
    let mut world = World::new();
    let m = world.start();
    let m = world.drive(m, Some("switching"), None);
    world.now += TimeDelta::seconds(6);
    let command = resume(&m)[0].clone();
    assert!(matches!(command, Command::SwitchRouting { .. }));
    let refused = world.execute(&command);
    assert!(matches!(
        refused,
        Event::StepFailed {
            retryable: false,
            ..
        }
    ));
    let (m, _) = step(&m, refused, world.now).unwrap();
    let m = world.drive(m, None, None);
    assert!(matches!(m.phase, Phase::Aborted { .. }), "{:?}", m.phase);
    let source = world.ids.source;
    assert_serving(&mut world, source);
}

#[test]
fn a_busy_tenant_is_frozen_after_the_cap_on_catch_up_rounds() {
    let mut world = World::new();
    // More writes per command than the catch-up threshold: rounds never
    // get small enough.
    world.writes_per_command = 10;
    let m = world.start();
    let m = world.drive(m, None, None);
    assert_eq!(m.phase, Phase::Done);
    assert_eq!(m.catch_up_rounds, World::policy().max_catch_up_rounds);
    let target = world.ids.target;
    assert_serving(&mut world, target);
}

#[test]
fn rollback_brings_the_targets_writes_back_to_the_source() {
    let mut world = World::new();
    let m = world.start();
    let m = world.drive(m, Some("grace_period"), None);
    for _ in 0..20 {
        world.tenant_writes();
    }
    let written_on_target = world.acked.len();
    let (m, commands) = step(&m, Event::RollbackRequested, world.now).unwrap();
    assert!(matches!(commands[0], Command::CatchUp { from, .. } if from == world.ids.target));
    let m = world.drive(m, None, None);
    assert_eq!(m.phase, Phase::RolledBack);
    assert_eq!(m.outcome, Some(Outcome::RolledBack));
    assert!(world.acked.len() >= written_on_target);
    let source = world.ids.source;
    assert_serving(&mut world, source);
    assert!(!world.cells[&world.ids.target].present);
    assert_eq!(m.routing.rolled_back, Some(world.route.version));
}

#[test]
fn a_rollback_that_fails_verification_is_abandoned_and_the_target_keeps_serving() {
    let mut world = World::new();
    let m = world.start();
    let m = world.drive(m, Some("grace_period"), None);
    world.corrupt_target = true; // corrupts the rollback's receiving side
    let (m, _) = step(&m, Event::RollbackRequested, world.now).unwrap();
    let m = world.drive(m, Some("grace_period"), None);
    assert_eq!(m.rollback_failures.len(), 1);
    assert!(
        m.rollback_failures[0].starts_with("rollback verification failed"),
        "{}",
        m.rollback_failures[0]
    );
    assert!(m.rollback.is_none());
    // The target serves (with every write); the source copy is still there.
    let target = world.ids.target;
    assert_eq!(world.route.cell, target);
    assert!(world.route.frozen_until.is_none());
    assert!(!world.cells[&target].read_only);
    world.tenant_writes();
    assert!(world.resend.is_empty());
    assert!(world.cells[&world.ids.source].present);
    // And the move still ends: the grace period runs out, the source goes.
    world.corrupt_target = false;
    let m = world.drive(m, None, None);
    assert_eq!(m.phase, Phase::Done);
    assert_serving(&mut world, target);
}

#[test]
fn killed_at_every_command_of_an_aborting_move_it_still_aborts_cleanly() {
    for crash_at in 0..20 {
        let mut world = World::new();
        world.corrupt_target = true;
        let m = world.start();
        let m = world.drive(m, None, Some(crash_at));
        assert!(
            matches!(m.phase, Phase::Aborted { .. }),
            "crash at {crash_at}: {:?}",
            m.phase
        );
        let source = world.ids.source;
        assert_serving(&mut world, source);
        assert!(
            !world.cells[&world.ids.target].present,
            "crash at {crash_at}"
        );
    }
}
