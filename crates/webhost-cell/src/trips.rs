//! Trips and stops derived from a vehicle's positions.
//!
//! Each valid position is *moving* when its speed (reported, or derived from
//! the distance to the previous position) exceeds `moving_kmh`. A run of
//! non-moving positions lasting at least `min_stop` is a **stop** (from its
//! first position to the next moving one); shorter pauses (traffic lights)
//! stay inside the trip. A **trip** runs from the end of one stop (or the
//! first position) to the start of the next stop (or the last position), and
//! counts only if it covers `min_trip_distance_m` and lasts `min_trip`:
//! GPS jitter while parked is neither.

use chrono::{DateTime, Duration, Utc};
use geo::{Distance, Haversine, Point};
use serde::Serialize;
use webhost_domain::{Position, VehicleId};

#[derive(Clone, Debug)]
pub struct Thresholds {
    pub moving_kmh: f64,
    pub min_stop: Duration,
    pub min_trip_distance_m: f64,
    pub min_trip: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            moving_kmh: 5.0,
            min_stop: Duration::minutes(5),
            min_trip_distance_m: 200.0,
            min_trip: Duration::minutes(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Trip {
    pub vehicle_id: VehicleId,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub duration_s: i64,
    pub distance_m: f64,
    /// km/h.
    pub max_speed: f64,
    /// km/h, distance over duration.
    pub average_speed: f64,
    pub start: Place,
    pub end: Place,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stop {
    pub vehicle_id: VehicleId,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub duration_s: i64,
    pub lat: f64,
    pub lon: f64,
}

fn point(p: &Position) -> Point<f64> {
    Point::new(p.fix.lon, p.fix.lat)
}

fn metres(a: &Position, b: &Position) -> f64 {
    Haversine.distance(point(a), point(b))
}

/// Trips and stops of one vehicle, oldest first.
pub fn analyze(positions: &[Position], t: &Thresholds) -> (Vec<Trip>, Vec<Stop>) {
    let mut points: Vec<&Position> = positions.iter().filter(|p| p.fix.valid).collect();
    points.sort_by_key(|p| p.fix.time);
    points.dedup_by_key(|p| p.fix.time);
    if points.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let speed: Vec<f64> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.fix
                .speed
                .unwrap_or_else(|| match i.checked_sub(1).map(|j| points[j]) {
                    Some(prev) => {
                        let seconds =
                            (p.fix.time - prev.fix.time).num_milliseconds() as f64 / 1000.0;
                        if seconds > 0.0 {
                            metres(prev, p) / seconds * 3.6
                        } else {
                            0.0
                        }
                    }
                    None => 0.0,
                })
        })
        .collect();
    let mut moving: Vec<bool> = speed.iter().map(|s| *s > t.moving_kmh).collect();

    // Runs of equal state: (moving, first index, last index).
    let runs = |moving: &[bool]| {
        let mut runs: Vec<(bool, usize, usize)> = Vec::new();
        for (i, m) in moving.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if run.0 == *m => run.2 = i,
                _ => runs.push((*m, i, i)),
            }
        }
        runs
    };
    // A still run ends when the next moving position arrives.
    let still_until = |run: &(bool, usize, usize)| {
        points
            .get(run.2 + 1)
            .map_or(points[run.2].fix.time, |p| p.fix.time)
    };
    // Short pauses between movements belong to the trip.
    for run in runs(&moving) {
        let inner = run.1 > 0 && run.2 + 1 < points.len();
        if !run.0 && inner && still_until(&run) - points[run.1].fix.time < t.min_stop {
            moving[run.1..=run.2].iter_mut().for_each(|m| *m = true);
        }
    }

    let vehicle = points[0].vehicle_id;
    let mut trips = Vec::new();
    let mut stops = Vec::new();
    for run in runs(&moving) {
        if !run.0 {
            let end = still_until(&run);
            if end - points[run.1].fix.time >= t.min_stop {
                let n = (run.2 - run.1 + 1) as f64;
                stops.push(Stop {
                    vehicle_id: vehicle,
                    start_time: points[run.1].fix.time,
                    end_time: end,
                    duration_s: (end - points[run.1].fix.time).num_seconds(),
                    lat: points[run.1..=run.2].iter().map(|p| p.fix.lat).sum::<f64>() / n,
                    lon: points[run.1..=run.2].iter().map(|p| p.fix.lon).sum::<f64>() / n,
                });
            }
            continue;
        }
        // From the last still position before (the stop's end) to the first
        // still position after (the next stop's start).
        let from = run.1.saturating_sub(1);
        let to = (run.2 + 1).min(points.len() - 1);
        let span = &points[from..=to];
        let distance: f64 = span.windows(2).map(|w| metres(w[0], w[1])).sum();
        let duration = span[span.len() - 1].fix.time - span[0].fix.time;
        if distance < t.min_trip_distance_m || duration < t.min_trip {
            continue;
        }
        let seconds = duration.num_milliseconds() as f64 / 1000.0;
        trips.push(Trip {
            vehicle_id: vehicle,
            start_time: span[0].fix.time,
            end_time: span[span.len() - 1].fix.time,
            duration_s: duration.num_seconds(),
            distance_m: distance,
            max_speed: speed[from..=to].iter().copied().fold(0.0, f64::max),
            average_speed: if seconds > 0.0 {
                distance / seconds * 3.6
            } else {
                0.0
            },
            start: Place {
                lat: span[0].fix.lat,
                lon: span[0].fix.lon,
            },
            end: Place {
                lat: span[span.len() - 1].fix.lat,
                lon: span[span.len() - 1].fix.lon,
            },
        });
    }
    (trips, stops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use webhost_domain::{Attributes, Fix};

    struct Track {
        vehicle: VehicleId,
        time: DateTime<Utc>,
        lat: f64,
        out: Vec<Position>,
    }

    impl Track {
        fn new() -> Self {
            Self {
                vehicle: VehicleId::new(),
                time: Utc
                    .with_ymd_and_hms(2024, 11, 21, 8, 0, 0)
                    .single()
                    .expect("time"),
                lat: 52.0,
                out: Vec::new(),
            }
        }
        fn push(&mut self, speed: Option<f64>) {
            self.out.push(Position {
                vehicle_id: self.vehicle,
                fix: Fix {
                    time: self.time,
                    lat: self.lat,
                    lon: 13.0,
                    speed,
                    heading: None,
                    altitude: None,
                    accuracy: None,
                    valid: true,
                    attributes: Attributes::default(),
                },
            });
        }
        /// One report every 10 s for `minutes`, parked.
        fn park(&mut self, minutes: i64) -> &mut Self {
            for _ in 0..minutes * 6 {
                self.push(Some(0.0));
                self.time += Duration::seconds(10);
            }
            self
        }
        /// One report every 10 s for `minutes`, driving north at 36 km/h
        /// (100 m per report); `reported` false leaves speed out.
        fn drive(&mut self, minutes: i64, reported: bool) -> &mut Self {
            for _ in 0..minutes * 6 {
                self.push(reported.then_some(36.0));
                self.time += Duration::seconds(10);
                self.lat += 100.0 / 111_195.0;
            }
            self
        }
    }

    #[test]
    fn park_drive_park_is_one_trip_between_two_stops() {
        let mut t = Track::new();
        t.park(10).drive(10, true).park(10);
        let (trips, stops) = analyze(&t.out, &Thresholds::default());
        assert_eq!(stops.len(), 2, "{stops:?}");
        assert_eq!(trips.len(), 1, "{trips:?}");
        let trip = &trips[0];
        assert_eq!(trip.start_time, stops[0].end_time - Duration::seconds(10));
        assert_eq!(trip.end_time, stops[1].start_time);
        assert!(
            (trip.distance_m - 6_000.0).abs() < 50.0,
            "{}",
            trip.distance_m
        );
        assert_eq!(trip.max_speed, 36.0);
        assert!(
            (trip.average_speed - 36.0).abs() < 1.5,
            "{}",
            trip.average_speed
        );
        assert_eq!(stops[0].duration_s, 600);
    }

    #[test]
    fn a_traffic_light_does_not_split_a_trip() {
        let mut t = Track::new();
        t.park(6).drive(5, true).park(2).drive(5, true).park(6);
        let (trips, stops) = analyze(&t.out, &Thresholds::default());
        assert_eq!((trips.len(), stops.len()), (1, 2), "{trips:?} {stops:?}");
    }

    #[test]
    fn speed_is_derived_when_not_reported() {
        let mut t = Track::new();
        t.park(10).drive(10, false).park(10);
        let (trips, stops) = analyze(&t.out, &Thresholds::default());
        assert_eq!((trips.len(), stops.len()), (1, 2));
        assert!((trips[0].max_speed - 36.0).abs() < 0.5);
    }

    #[test]
    fn parked_jitter_is_no_trip() {
        let mut t = Track::new();
        t.park(10);
        for i in 0..6 {
            t.push(Some(8.0));
            t.lat += if i % 2 == 0 { 0.00002 } else { -0.00002 };
            t.time += Duration::seconds(10);
        }
        t.park(10);
        let (trips, stops) = analyze(&t.out, &Thresholds::default());
        assert!(trips.is_empty(), "{trips:?}");
        assert_eq!(stops.len(), 2);
    }

    #[test]
    fn empty_and_invalid_input() {
        assert_eq!(analyze(&[], &Thresholds::default()), (vec![], vec![]));
        let mut t = Track::new();
        t.drive(10, true);
        for p in &mut t.out {
            p.fix.valid = false;
        }
        assert_eq!(analyze(&t.out, &Thresholds::default()), (vec![], vec![]));
    }
}
