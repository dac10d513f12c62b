//! The per-vehicle state machine: positions in, events out.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;
use webhost_domain::{Attributes, Fix, GeofenceId, VehicleId};
use webhost_geofence::{
    Detected, EventKind, Geofence, GeofenceIndex, Shape, Tracker, VehicleState,
};

use EventKind::{GeofenceEnter as Enter, GeofenceExit as Exit, Overspeed};

fn gid(n: u128) -> GeofenceId {
    GeofenceId::from_uuid(Uuid::from_u128(n))
}

fn vid(n: u128) -> VehicleId {
    VehicleId::from_uuid(Uuid::from_u128(n))
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn fix(seconds: i64, lat: f64, lon: f64) -> Fix {
    Fix {
        time: at(seconds),
        lat,
        lon,
        speed: None,
        heading: None,
        altitude: None,
        accuracy: None,
        valid: true,
        attributes: Attributes::default(),
    }
}

fn moving(seconds: i64, speed: f64) -> Fix {
    Fix {
        speed: Some(speed),
        ..fix(seconds, 50.0, 50.0)
    }
}

fn square(id: u128, min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Geofence {
    let shape = Shape::from_geojson(&json!({
        "type": "Polygon",
        "coordinates": [[
            [min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat],
            [min_lon, max_lat], [min_lon, min_lat]
        ]]
    }))
    .unwrap();
    Geofence { id: gid(id), shape }
}

/// Fence 1: lon 0..10, lat 0..10.
fn one_fence() -> GeofenceIndex {
    GeofenceIndex::new(vec![square(1, 0.0, 0.0, 10.0, 10.0)])
}

/// (kind, geofence, seconds) of each event: what the assertions compare.
fn summary(events: &[Detected]) -> Vec<(EventKind, Option<GeofenceId>, i64)> {
    events
        .iter()
        .map(|e| (e.kind, e.geofence_id, e.time.timestamp() - 1_700_000_000))
        .collect()
}

/// West to east along lat 5, lon -3..=13 one degree per second: inside
/// (boundary included) from lon 0 (t = 3) to lon 10 (t = 13).
fn crossing_path() -> Vec<Fix> {
    (0..=16).map(|t| fix(t, 5.0, -3.0 + t as f64)).collect()
}

#[test]
fn a_crossing_yields_enter_then_exit_exactly_once() {
    let index = one_fence();
    let mut tracker = Tracker::new();
    let events = tracker.process(&index, vid(1), &crossing_path(), None);
    assert_eq!(
        summary(&events),
        vec![(Enter, Some(gid(1)), 3), (Exit, Some(gid(1)), 14)]
    );
    let enter = &events[0];
    assert_eq!(enter.vehicle_id, vid(1));
    assert_eq!(enter.time, enter.fix.time);
    assert_eq!(
        (enter.fix.lat, enter.fix.lon),
        (5.0, 0.0),
        "boundary is inside"
    );
    assert_eq!(events[1].fix.lon, 11.0);
    let state = tracker.state(vid(1)).unwrap();
    assert!(state.inside().is_empty());
    assert_eq!(state.last_time(), Some(at(16)));
    // Nothing more on replay.
    assert!(tracker
        .process(&index, vid(1), &crossing_path(), None)
        .is_empty());
}

#[test]
fn batch_boundaries_do_not_matter() {
    let index = GeofenceIndex::new(vec![
        square(1, 0.0, 0.0, 10.0, 10.0),
        square(2, 5.0, 0.0, 8.0, 10.0),
    ]);
    let path: Vec<Fix> = (0..=16)
        .map(|t| Fix {
            speed: Some(if (4..9).contains(&t) { 120.0 } else { 50.0 }),
            ..fix(t, 5.0, -3.0 + t as f64)
        })
        .collect();
    let limit = Some(100.0);
    let whole = Tracker::new().process(&index, vid(1), &path, limit);
    assert_eq!(
        summary(&whole),
        vec![
            (Enter, Some(gid(1)), 3),
            (Overspeed, None, 4),
            (Enter, Some(gid(2)), 8),
            (Exit, Some(gid(2)), 12),
            (Exit, Some(gid(1)), 14),
        ]
    );
    // Split once at every possible boundary.
    for split in 0..=path.len() {
        let mut tracker = Tracker::new();
        let mut events = tracker.process(&index, vid(1), &path[..split], limit);
        events.extend(tracker.process(&index, vid(1), &path[split..], limit));
        assert_eq!(events, whole, "split at {split}");
    }
    // Split twice at every pair of boundaries.
    for a in 0..=path.len() {
        for b in a..=path.len() {
            let mut tracker = Tracker::new();
            let mut events = Vec::new();
            for part in [&path[..a], &path[a..b], &path[b..]] {
                events.extend(tracker.process(&index, vid(1), part, limit));
            }
            assert_eq!(events, whole, "split at {a} and {b}");
        }
    }
    // One position per call.
    let mut tracker = Tracker::new();
    let events: Vec<Detected> = path
        .iter()
        .flat_map(|f| tracker.process(&index, vid(1), std::slice::from_ref(f), limit))
        .collect();
    assert_eq!(events, whole);
}

#[test]
fn positions_within_a_call_may_come_in_any_order() {
    let index = one_fence();
    let whole = Tracker::new().process(&index, vid(1), &crossing_path(), None);
    let mut reversed = crossing_path();
    reversed.reverse();
    assert_eq!(
        Tracker::new().process(&index, vid(1), &reversed, None),
        whole
    );
    let mut shuffled = crossing_path();
    // A fixed permutation: stride 5 through 17 positions.
    shuffled = (0..shuffled.len())
        .map(|i| shuffled[(i * 5) % 17].clone())
        .collect();
    assert_eq!(
        Tracker::new().process(&index, vid(1), &shuffled, None),
        whole
    );
}

#[test]
fn persisted_state_resumes_where_it_left_off() {
    let index = one_fence();
    let path = crossing_path();
    let whole = Tracker::new().process(&index, vid(1), &path, None);
    for split in 0..=path.len() {
        let mut first = Tracker::new();
        let mut events = first.process(&index, vid(1), &path[..split], None);
        let saved = serde_json::to_string(first.states()).unwrap();
        let states: HashMap<VehicleId, VehicleState> = serde_json::from_str(&saved).unwrap();
        let mut second = Tracker::with_states(states);
        events.extend(second.process(&index, vid(1), &path[split..], None));
        assert_eq!(events, whole, "split at {split}");
    }
    // Missing fields read as defaults (forward compatibility).
    let state: VehicleState = serde_json::from_str("{}").unwrap();
    assert_eq!(state, VehicleState::default());
}

#[test]
fn duplicate_and_older_positions_are_ignored() {
    let index = one_fence();
    let mut tracker = Tracker::new();
    let events = tracker.process(
        &index,
        vid(1),
        &[fix(10, 5.0, -1.0), fix(20, 5.0, 5.0)],
        None,
    );
    assert_eq!(summary(&events), vec![(Enter, Some(gid(1)), 20)]);
    // The same positions again: nothing.
    let events = tracker.process(
        &index,
        vid(1),
        &[fix(10, 5.0, -1.0), fix(20, 5.0, 5.0)],
        None,
    );
    assert!(events.is_empty());
    // A late position from before the last one, outside: no exit.
    assert!(tracker
        .process(&index, vid(1), &[fix(15, 5.0, -1.0)], None)
        .is_empty());
    // Same time as the last one but somewhere else: ignored as well.
    assert!(tracker
        .process(&index, vid(1), &[fix(20, 5.0, -1.0)], None)
        .is_empty());
    assert_eq!(tracker.state(vid(1)).unwrap().last_time(), Some(at(20)));
    assert!(tracker.state(vid(1)).unwrap().inside().contains(&gid(1)));
    // Newer positions still count.
    let events = tracker.process(&index, vid(1), &[fix(21, 5.0, -1.0)], None);
    assert_eq!(summary(&events), vec![(Exit, Some(gid(1)), 21)]);
}

#[test]
fn duplicates_within_one_call_yield_one_event_whatever_their_order() {
    let index = one_fence();
    let inside = fix(10, 5.0, 5.0);
    let elsewhere = fix(10, 6.0, 6.0);
    let a = Tracker::new().process(
        &index,
        vid(1),
        &[inside.clone(), inside.clone(), elsewhere.clone()],
        None,
    );
    let b = Tracker::new().process(&index, vid(1), &[elsewhere, inside.clone(), inside], None);
    assert_eq!(summary(&a), vec![(Enter, Some(gid(1)), 10)]);
    assert_eq!(a, b, "same-time positions are ordered by their numbers");
    assert_eq!(a[0].fix.lat, 5.0, "the lowest latitude wins a tie");
}

#[test]
fn invalid_positions_are_ignored() {
    let index = one_fence();
    let invalid = |t, lat, lon| Fix {
        valid: false,
        speed: Some(300.0),
        ..fix(t, lat, lon)
    };
    let mut tracker = Tracker::new();
    // Never seen validly: no state at all.
    assert!(tracker
        .process(&index, vid(1), &[invalid(1, 5.0, 5.0)], Some(100.0))
        .is_empty());
    assert!(tracker.state(vid(1)).is_none());
    // Outside, then an invalid position inside (and "speeding"), then
    // outside again: nothing.
    let events = tracker.process(
        &index,
        vid(1),
        &[
            fix(10, 5.0, -1.0),
            invalid(11, 5.0, 5.0),
            fix(12, 5.0, -2.0),
        ],
        Some(100.0),
    );
    assert!(events.is_empty(), "{:?}", summary(&events));
    // An invalid position does not advance the last processed time.
    assert!(tracker
        .process(&index, vid(1), &[invalid(30, 5.0, -1.0)], Some(100.0))
        .is_empty());
    assert_eq!(tracker.state(vid(1)).unwrap().last_time(), Some(at(12)));
    let events = tracker.process(&index, vid(1), &[fix(20, 5.0, 5.0)], Some(100.0));
    assert_eq!(summary(&events), vec![(Enter, Some(gid(1)), 20)]);
    // Inside: an invalid position outside does not exit.
    assert!(tracker
        .process(&index, vid(1), &[invalid(21, 50.0, 50.0)], Some(100.0))
        .is_empty());
    assert!(tracker.state(vid(1)).unwrap().inside().contains(&gid(1)));
    // Non-finite coordinates count as invalid.
    assert!(tracker
        .process(&index, vid(1), &[fix(22, f64::NAN, 5.0)], Some(100.0))
        .is_empty());
    assert!(tracker.state(vid(1)).unwrap().inside().contains(&gid(1)));
    assert!(!tracker.state(vid(1)).unwrap().is_speeding());
}

#[test]
fn overspeed_fires_once_and_rearms_below_the_hysteresis() {
    let index = GeofenceIndex::default();
    let limit = Some(80.0);
    let speeds: Vec<Option<f64>> = vec![
        Some(70.0),  // 0
        Some(80.0),  // 1: at the limit is not above it
        Some(85.0),  // 2: fires
        Some(90.0),  // 3: still above: nothing
        Some(80.0),  // 4: at the limit: not re-armed (hysteresis)
        Some(79.0),  // 5: not re-armed: above 78
        Some(85.0),  // 6: nothing
        None,        // 7: unknown speed changes nothing
        Some(81.0),  // 8: nothing
        Some(78.0),  // 9: re-arms (80 - 2)
        Some(80.5),  // 10: fires again
        None,        // 11
        Some(60.0),  // 12: re-arms
        None,        // 13
        Some(100.0), // 14: fires
    ];
    let fixes: Vec<Fix> = speeds
        .iter()
        .enumerate()
        .map(|(t, s)| Fix {
            speed: *s,
            ..moving(t as i64, 0.0)
        })
        .collect();
    let mut tracker = Tracker::new();
    let events = tracker.process(&index, vid(1), &fixes, limit);
    assert_eq!(
        summary(&events),
        vec![
            (Overspeed, None, 2),
            (Overspeed, None, 10),
            (Overspeed, None, 14)
        ]
    );
    assert_eq!(events[0].fix.speed, Some(85.0));
    assert!(tracker.state(vid(1)).unwrap().is_speeding());
    // And the same one position at a time.
    let mut tracker = Tracker::new();
    let one_by_one: Vec<Detected> = fixes
        .iter()
        .flat_map(|f| tracker.process(&index, vid(1), std::slice::from_ref(f), limit))
        .collect();
    assert_eq!(one_by_one, events);
}

#[test]
fn overspeed_without_limit_or_speed() {
    let index = GeofenceIndex::default();
    let mut tracker = Tracker::new();
    // No limit: nothing, whatever the speed.
    assert!(tracker
        .process(&index, vid(1), &[moving(0, 300.0)], None)
        .is_empty());
    // No speed: nothing.
    assert!(tracker
        .process(&index, vid(1), &[fix(1, 0.0, 0.0)], Some(50.0))
        .is_empty());
    let events = tracker.process(&index, vid(1), &[moving(2, 51.0)], Some(50.0));
    assert_eq!(summary(&events), vec![(Overspeed, None, 2)]);
    // The limit is removed: the vehicle is no longer "speeding", so when a
    // limit comes back the next speeding position fires.
    assert!(tracker
        .process(&index, vid(1), &[moving(3, 51.0)], None)
        .is_empty());
    assert!(!tracker.state(vid(1)).unwrap().is_speeding());
    let events = tracker.process(&index, vid(1), &[moving(4, 51.0)], Some(50.0));
    assert_eq!(summary(&events), vec![(Overspeed, None, 4)]);
    // A hysteresis floor at 0 for tiny limits.
    let mut tracker = Tracker::new();
    let events = tracker.process(
        &index,
        vid(2),
        &[
            moving(0, 3.0),
            moving(1, 0.5),
            moving(2, 0.0),
            moving(3, 2.0),
        ],
        Some(1.0),
    );
    assert_eq!(
        summary(&events),
        vec![(Overspeed, None, 0), (Overspeed, None, 3)]
    );
}

#[test]
fn first_position_inside_is_an_enter() {
    let index = one_fence();
    let mut tracker = Tracker::new();
    let events = tracker.process(&index, vid(1), &[fix(0, 5.0, 5.0)], None);
    assert_eq!(summary(&events), vec![(Enter, Some(gid(1)), 0)]);
    // Staying inside: nothing.
    assert!(tracker
        .process(&index, vid(1), &[fix(1, 6.0, 6.0)], None)
        .is_empty());
    // First position outside: nothing, but the state exists.
    let events = tracker.process(&index, vid(2), &[fix(0, 50.0, 50.0)], None);
    assert!(events.is_empty());
    assert!(tracker.state(vid(2)).unwrap().inside().is_empty());
    // First position speeding, inside: enter, then overspeed.
    let events = tracker.process(
        &index,
        vid(3),
        &[Fix {
            speed: Some(150.0),
            ..fix(0, 5.0, 5.0)
        }],
        Some(90.0),
    );
    assert_eq!(
        summary(&events),
        vec![(Enter, Some(gid(1)), 0), (Overspeed, None, 0)]
    );
    assert_eq!(events[1].geofence_id, None);
}

#[test]
fn retain_geofences_forgets_deleted_and_waits_for_the_next_position() {
    let a = square(1, 0.0, 0.0, 10.0, 10.0);
    let b = square(2, 4.0, 4.0, 6.0, 6.0);
    let mut tracker = Tracker::new();
    let index = GeofenceIndex::new(vec![a.clone()]);
    let events = tracker.process(&index, vid(1), &[fix(0, 5.0, 5.0)], None);
    assert_eq!(summary(&events), vec![(Enter, Some(gid(1)), 0)]);

    // A is deleted and B (around the vehicle) is created.
    let index = GeofenceIndex::new(vec![b.clone()]);
    tracker.retain_geofences(&index);
    let state = tracker.state(vid(1)).unwrap();
    assert!(state.inside().is_empty(), "membership in A is forgotten");
    assert_eq!(state.last_time(), Some(at(0)), "nothing else changes");
    // The next position: enter B, and no exit for the deleted A.
    let events = tracker.process(&index, vid(1), &[fix(1, 5.0, 5.0)], None);
    assert_eq!(summary(&events), vec![(Enter, Some(gid(2)), 1)]);

    // A comes back (same id): entered again at the next position.
    let index = GeofenceIndex::new(vec![a.clone(), b.clone()]);
    tracker.retain_geofences(&index);
    assert_eq!(tracker.state(vid(1)).unwrap().inside().len(), 1);
    let events = tracker.process(&index, vid(1), &[fix(2, 5.0, 5.0)], None);
    assert_eq!(summary(&events), vec![(Enter, Some(gid(1)), 2)]);

    // B is edited (same id, moved away): the membership is kept until the
    // next position, which then exits it.
    let moved = square(2, 20.0, 20.0, 30.0, 30.0);
    let index = GeofenceIndex::new(vec![a, moved]);
    tracker.retain_geofences(&index);
    assert_eq!(tracker.state(vid(1)).unwrap().inside().len(), 2);
    let events = tracker.process(&index, vid(1), &[fix(3, 5.0, 5.0)], None);
    assert_eq!(summary(&events), vec![(Exit, Some(gid(2)), 3)]);

    // Everything is deleted: no exits, ever.
    let index = GeofenceIndex::default();
    tracker.retain_geofences(&index);
    assert!(tracker.state(vid(1)).unwrap().inside().is_empty());
    assert!(tracker
        .process(&index, vid(1), &[fix(4, 50.0, 50.0)], None)
        .is_empty());
}

#[test]
fn overlapping_fences_are_entered_and_left_independently() {
    // A: lon 0..6, B: lon 4..10, along lat 5 from lon -1 to 11.
    let index = GeofenceIndex::new(vec![
        square(1, 0.0, 0.0, 6.0, 10.0),
        square(2, 4.0, 0.0, 10.0, 10.0),
    ]);
    let path: Vec<Fix> = (0..=12)
        .map(|t| fix(t, 5.0, -1.0 + t as f64 + 0.5))
        .collect();
    let events = Tracker::new().process(&index, vid(1), &path, None);
    // lon -0.5, 0.5 (A), ... 4.5 (A, B), 5.5 (A, B), 6.5 (B), ... 10.5 (out)
    assert_eq!(
        summary(&events),
        vec![
            (Enter, Some(gid(1)), 1),
            (Enter, Some(gid(2)), 5),
            (Exit, Some(gid(1)), 7),
            (Exit, Some(gid(2)), 11),
        ]
    );
    // Back and forth inside A only: B alone is entered and left.
    let mut tracker = Tracker::new();
    let wobble = [
        fix(0, 5.0, 3.0),
        fix(1, 5.0, 5.0),
        fix(2, 5.0, 3.0),
        fix(3, 5.0, 5.0),
    ];
    let events = tracker.process(&index, vid(1), &wobble, None);
    assert_eq!(
        summary(&events),
        vec![
            (Enter, Some(gid(1)), 0),
            (Enter, Some(gid(2)), 1),
            (Exit, Some(gid(2)), 2),
            (Enter, Some(gid(2)), 3),
        ]
    );
}

#[test]
fn same_time_events_are_ordered_exits_then_enters_by_id() {
    let index = GeofenceIndex::new(vec![
        square(3, 0.0, 0.0, 1.0, 1.0),
        square(1, 0.0, 0.0, 1.0, 1.0),
        square(4, 5.0, 5.0, 6.0, 6.0),
        square(2, 5.0, 5.0, 6.0, 6.0),
    ]);
    let mut tracker = Tracker::new();
    let events = tracker.process(
        &index,
        vid(1),
        &[
            Fix {
                speed: Some(200.0),
                ..fix(0, 0.5, 0.5)
            },
            fix(1, 5.5, 5.5),
        ],
        Some(100.0),
    );
    assert_eq!(
        summary(&events),
        vec![
            (Enter, Some(gid(1)), 0),
            (Enter, Some(gid(3)), 0),
            (Overspeed, None, 0),
            (Exit, Some(gid(1)), 1),
            (Exit, Some(gid(3)), 1),
            (Enter, Some(gid(2)), 1),
            (Enter, Some(gid(4)), 1),
        ]
    );
}

#[test]
fn vehicles_are_independent() {
    let index = one_fence();
    let mut tracker = Tracker::new();
    let a = tracker.process(&index, vid(1), &[fix(10, 5.0, 5.0)], None);
    let b = tracker.process(&index, vid(2), &[fix(5, 5.0, 5.0)], None);
    assert_eq!(summary(&a), vec![(Enter, Some(gid(1)), 10)]);
    assert_eq!(summary(&b), vec![(Enter, Some(gid(1)), 5)], "own clock");
    assert_eq!(b[0].vehicle_id, vid(2));
    assert_eq!(tracker.states().len(), 2);
    assert!(tracker.remove(vid(1)).is_some());
    // Forgotten: its next position is a first position again.
    let a = tracker.process(&index, vid(1), &[fix(1, 5.0, 5.0)], None);
    assert_eq!(summary(&a), vec![(Enter, Some(gid(1)), 1)]);
}

#[test]
fn event_kinds_serialize_as_the_api_names() {
    assert_eq!(
        serde_json::to_value(Enter).unwrap(),
        json!("geofence_enter")
    );
    assert_eq!(serde_json::to_value(Exit).unwrap(), json!("geofence_exit"));
    assert_eq!(serde_json::to_value(Overspeed).unwrap(), json!("overspeed"));
    assert_eq!(
        serde_json::from_value::<EventKind>(json!("geofence_exit")).unwrap(),
        Exit
    );
    for kind in [Enter, Exit, Overspeed] {
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        assert_eq!(kind.to_string(), kind.as_str());
    }
}

#[test]
fn circles_work_in_the_tracker_too() {
    let index = GeofenceIndex::new(vec![Geofence {
        id: gid(9),
        shape: Shape::circle(60.0, 10.0, 1000.0).unwrap(),
    }]);
    // 0.018 degrees of longitude at 60°N is about 1000 m.
    let path: Vec<Fix> = (0..=8)
        .map(|t| fix(t, 60.0, 10.0 - 0.04 + 0.01 * t as f64))
        .collect();
    let events = Tracker::new().process(&index, vid(1), &path, None);
    // lon 9.99 (≈ 557 m west) is the first inside; 10.02 (≈ 1115 m) is out.
    assert_eq!(
        summary(&events),
        vec![(Enter, Some(gid(9)), 3), (Exit, Some(gid(9)), 6)]
    );
}

#[test]
fn processing_on_a_copy_changes_nothing_until_inserted() {
    let index = one_fence();
    let path = crossing_path();
    let mut tracker = Tracker::new();
    tracker.process(&index, vid(1), &path[..1], None);
    let before = tracker.state(vid(1)).cloned();

    let mut copy = Tracker::with_states(tracker.states().clone());
    let events = copy.process(&index, vid(1), &path[1..], None);
    assert!(!events.is_empty());
    assert_eq!(
        tracker.state(vid(1)).cloned(),
        before,
        "the original is untouched"
    );

    // Kept: the copy's state replaces the original's, which then resumes
    // from it (a resend yields nothing).
    let kept = copy.state(vid(1)).cloned().unwrap();
    tracker.insert(vid(1), kept.clone());
    assert_eq!(tracker.state(vid(1)), Some(&kept));
    assert!(tracker.process(&index, vid(1), &path, None).is_empty());
}
