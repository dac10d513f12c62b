//! The R-tree index agrees with testing every geofence.

use serde_json::{json, Value};
use uuid::Uuid;
use webhost_domain::GeofenceId;
use webhost_geofence::{Geofence, GeofenceIndex, Shape};

fn gid(n: u128) -> GeofenceId {
    GeofenceId::from_uuid(Uuid::from_u128(n))
}

/// xorshift64*, fixed seed: reproducible without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, min: f64, max: f64) -> f64 {
        min + (max - min) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn ring(points: &[[f64; 2]]) -> Value {
    let mut ring: Vec<Value> = points.iter().map(|p| json!(p)).collect();
    ring.push(json!(points[0]));
    Value::Array(ring)
}

/// A random star-shaped polygon (corners at sorted angles around a centre:
/// always simple), sometimes with a small hole; or a random circle.
fn random_shape(rng: &mut XorShift, corners: &mut Vec<[f64; 2]>) -> Shape {
    let lon = rng.range(-10.0, 10.0);
    let lat = rng.range(-10.0, 10.0);
    if rng.below(3) == 0 {
        let radius_m = rng.range(500.0, 200_000.0);
        return Shape::circle(lat, lon, radius_m).unwrap();
    }
    let k = 3 + rng.below(10);
    let mut angles: Vec<f64> = (0..k)
        .map(|_| rng.range(0.0, std::f64::consts::TAU))
        .collect();
    angles.sort_by(f64::total_cmp);
    let points: Vec<[f64; 2]> = angles
        .iter()
        .map(|a| {
            let r = rng.range(0.1, 2.0);
            // Round to a grid so that some points land exactly on corners
            // and edges of other shapes too.
            let x = ((lon + r * a.cos()) * 1000.0).round() / 1000.0;
            let y = ((lat + r * a.sin()) * 1000.0).round() / 1000.0;
            [x, y]
        })
        .collect();
    let mut rings = vec![ring(&points)];
    if rng.below(4) == 0 {
        let h = 0.02;
        rings.push(ring(&[
            [lon - h, lat - h],
            [lon + h, lat - h],
            [lon + h, lat + h],
            [lon - h, lat + h],
        ]));
        corners.push([lon - h, lat + h]);
    }
    corners.extend_from_slice(&points);
    match Shape::from_geojson(&json!({"type": "Polygon", "coordinates": rings})) {
        Ok(shape) => shape,
        // Rounding may fold two close corners onto each other: make a
        // triangle instead.
        Err(_) => {
            let tri = [[lon, lat], [lon + 0.5, lat], [lon, lat + 0.5]];
            corners.extend_from_slice(&tri);
            Shape::from_geojson(&json!({"type": "Polygon", "coordinates": [ring(&tri)]})).unwrap()
        }
    }
}

#[test]
fn index_agrees_with_brute_force_on_random_fences() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut corners = Vec::new();
    let fences: Vec<Geofence> = (0..1000)
        .map(|i| Geofence {
            id: gid(1_000_000 - i), // ids not in insertion order
            shape: random_shape(&mut rng, &mut corners),
        })
        .collect();
    let index = GeofenceIndex::new(fences.clone());
    assert_eq!(index.len(), 1000);

    let mut total_hits = 0usize;
    let mut points_with_hits = 0usize;
    for i in 0..10_000 {
        let (lat, lon) = if i % 10 == 0 {
            // Exactly on a polygon corner: the box edge must count.
            let [x, y] = corners[rng.below(corners.len())];
            (y, x)
        } else {
            (rng.range(-12.5, 12.5), rng.range(-12.5, 12.5))
        };
        let mut expected: Vec<GeofenceId> = fences
            .iter()
            .filter(|f| f.shape.contains(lat, lon))
            .map(|f| f.id)
            .collect();
        expected.sort();
        let got = index.containing(lat, lon);
        assert_eq!(got, expected, "point lat {lat}, lon {lon}");
        total_hits += got.len();
        points_with_hits += usize::from(!got.is_empty());
    }
    // The test means something: many points hit one or more fences.
    assert!(points_with_hits > 2_000, "{points_with_hits}");
    assert!(total_hits > points_with_hits, "overlaps happen");
}

#[test]
fn results_are_sorted_by_id() {
    let fences = (0..20)
        .map(|i| Geofence {
            id: gid(1000 - i * 37),
            shape: Shape::circle(0.0, 0.0, 1000.0 + i as f64).unwrap(),
        })
        .collect();
    let index = GeofenceIndex::new(fences);
    let got = index.containing(0.0, 0.0);
    assert_eq!(got.len(), 20);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(index.containing(0.0, 0.0), got, "deterministic");
}

#[test]
fn empty_index() {
    let index = GeofenceIndex::new(Vec::new());
    assert!(index.is_empty());
    assert_eq!(index.len(), 0);
    assert!(index.containing(0.0, 0.0).is_empty());
}

#[test]
fn non_finite_points_match_nothing() {
    let index = GeofenceIndex::new(vec![Geofence {
        id: gid(1),
        shape: Shape::circle(0.0, 0.0, 1_000_000.0).unwrap(),
    }]);
    assert!(index.containing(f64::NAN, 0.0).is_empty());
    assert!(index.containing(0.0, f64::NEG_INFINITY).is_empty());
    assert_eq!(index.containing(0.0, 0.0), vec![gid(1)]);
}

#[test]
fn duplicate_ids_keep_the_last_fence() {
    let index = GeofenceIndex::new(vec![
        Geofence {
            id: gid(1),
            shape: Shape::circle(0.0, 0.0, 1000.0).unwrap(),
        },
        Geofence {
            id: gid(1),
            shape: Shape::circle(50.0, 50.0, 1000.0).unwrap(),
        },
    ]);
    assert_eq!(index.len(), 1);
    assert!(index.containing(0.0, 0.0).is_empty());
    assert_eq!(index.containing(50.0, 50.0), vec![gid(1)]);
    assert!(index.contains_id(gid(1)));
    assert!(!index.contains_id(gid(2)));
    assert_eq!(index.get(gid(1)).map(|f| f.id), Some(gid(1)));
}

#[test]
fn antimeridian_and_polar_circles_are_found_from_every_side() {
    let index = GeofenceIndex::new(vec![
        Geofence {
            id: gid(1),
            shape: Shape::circle(-16.0, 179.99, 20_000.0).unwrap(),
        },
        Geofence {
            id: gid(2),
            shape: Shape::circle(89.99, 45.0, 5_000.0).unwrap(),
        },
    ]);
    assert_eq!(index.containing(-16.0, 179.999), vec![gid(1)]);
    assert_eq!(index.containing(-16.0, -179.95), vec![gid(1)]);
    assert_eq!(index.containing(-16.0, 180.0), vec![gid(1)]);
    assert_eq!(index.containing(-16.0, -180.0), vec![gid(1)]);
    assert!(index.containing(-16.0, -179.5).is_empty());
    assert!(index.containing(-16.0, 0.0).is_empty());
    // Across the pole, at the opposite longitude.
    assert_eq!(index.containing(89.995, -135.0), vec![gid(2)]);
    assert_eq!(index.containing(90.0, 0.0), vec![gid(2)]);
    assert!(index.containing(89.0, 45.0).is_empty());
}

#[test]
fn polygon_hole_through_the_index() {
    let shape = Shape::from_geojson(&json!({
        "type": "Polygon",
        "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
        ]
    }))
    .unwrap();
    let index = GeofenceIndex::new(vec![Geofence { id: gid(7), shape }]);
    assert_eq!(index.containing(2.0, 2.0), vec![gid(7)]);
    assert!(index.containing(5.0, 5.0).is_empty());
    assert_eq!(index.containing(10.0, 10.0), vec![gid(7)], "corner");
    assert_eq!(index.containing(0.0, 5.0), vec![gid(7)], "edge");
}
