//! Geometry: parsing GeoJSON and circles, containment, bounding boxes.

use geo::{Destination, Distance, Haversine, Point};
use serde_json::{json, Value};
use webhost_geofence::{BoundingBox, Shape, MAX_VERTICES};

fn polygon(value: Value) -> Shape {
    match Shape::from_geojson(&value) {
        Ok(shape) => shape,
        Err(e) => panic!("{value} should parse: {e}"),
    }
}

/// The error message for a geometry that must be refused (field checked).
fn refused(value: Value) -> String {
    match Shape::from_geojson(&value) {
        Ok(_) => panic!("{value} should be refused"),
        Err(e) => {
            assert_eq!(e.field, "geometry", "{e}");
            e.message
        }
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "message {message:?} should mention {part:?}"
        );
    }
}

/// [lon, lat] square from (min, min) to (max, max), counter-clockwise.
fn square(min: f64, max: f64) -> Value {
    json!([[min, min], [max, min], [max, max], [min, max], [min, min]])
}

fn square_with_hole() -> Shape {
    polygon(json!({
        "type": "Polygon",
        "coordinates": [square(0.0, 10.0), square(4.0, 6.0)]
    }))
}

/// Longitude offset of a point `meters` due east along the parallel at
/// `lat_deg`, from the haversine formula with geo's radius:
/// sin(d / 2R) = cos(lat) · sin(Δλ / 2).
fn east_offset_deg(lat_deg: f64, meters: f64) -> f64 {
    let r = Haversine.radius();
    (2.0 * ((meters / (2.0 * r)).sin() / lat_deg.to_radians().cos()).asin()).to_degrees()
}

fn north_offset_deg(meters: f64) -> f64 {
    (meters / Haversine.radius()).to_degrees()
}

#[test]
fn polygon_with_a_hole_inside_the_hole_is_outside() {
    let shape = square_with_hole();
    assert!(shape.contains(2.0, 2.0), "between exterior and hole");
    assert!(shape.contains(8.0, 5.0), "between exterior and hole");
    assert!(!shape.contains(5.0, 5.0), "in the hole");
    assert!(!shape.contains(4.5, 5.5), "in the hole");
    assert!(!shape.contains(5.0, 11.0), "outside the exterior");
    assert!(!shape.contains(-0.5, 5.0), "outside the exterior");
}

#[test]
fn boundary_counts_as_inside() {
    let shape = square_with_hole();
    // lat, lon
    assert!(shape.contains(0.0, 5.0), "on the bottom edge");
    assert!(shape.contains(5.0, 10.0), "on the right edge");
    assert!(shape.contains(0.0, 0.0), "on a corner");
    assert!(shape.contains(10.0, 10.0), "on a corner");
    assert!(shape.contains(5.0, 4.0), "on the hole's edge");
    assert!(shape.contains(6.0, 6.0), "on the hole's corner");
    assert!(
        !shape.contains(5.0, 10.000_001),
        "just outside the right edge"
    );
    assert!(!shape.contains(5.0, 4.000_001), "just inside the hole");
}

#[test]
fn concave_polygon() {
    // A "U": the notch (lon 2..4, lat 1..4) is outside.
    let shape = polygon(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [6, 0], [6, 4], [4, 4], [4, 1], [2, 1], [2, 4], [0, 4], [0, 0]]]
    }));
    assert!(shape.contains(3.0, 1.0), "left arm");
    assert!(shape.contains(3.0, 5.0), "right arm");
    assert!(shape.contains(0.5, 3.0), "base");
    assert!(!shape.contains(3.0, 3.0), "in the notch");
    assert!(!shape.contains(2.0, 3.0), "in the notch");
    assert!(shape.contains(1.0, 3.0), "notch floor is boundary");
    assert!(shape.contains(3.0, 2.0), "notch wall is boundary");
    // The convex hull holds the notch; the bounding box too.
    let b = shape.bounding_box();
    assert!(b.contains(3.0, 3.0));
    assert_eq!(
        b,
        BoundingBox {
            min_lat: 0.0,
            min_lon: 0.0,
            max_lat: 4.0,
            max_lon: 6.0
        }
    );
}

#[test]
fn clockwise_rings_work_too() {
    let shape = polygon(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]
    }));
    assert!(shape.contains(0.5, 0.5));
    assert!(!shape.contains(1.5, 0.5));
}

#[test]
fn circle_near_null_island() {
    let shape = Shape::circle(0.0, 0.0, 1000.0).unwrap();
    assert!(shape.contains(0.0, 0.0), "centre");
    assert!(shape.contains(north_offset_deg(999.0), 0.0));
    assert!(!shape.contains(north_offset_deg(1001.0), 0.0));
    assert!(shape.contains(-north_offset_deg(999.0), 0.0));
    assert!(!shape.contains(-north_offset_deg(1001.0), 0.0));
    assert!(shape.contains(0.0, east_offset_deg(0.0, 999.0)));
    assert!(!shape.contains(0.0, east_offset_deg(0.0, 1001.0)));
    assert!(shape.contains(0.0, -east_offset_deg(0.0, 999.0)));
    assert!(!shape.contains(0.0, -east_offset_deg(0.0, 1001.0)));
    // ~0.009 degrees either way.
    let b = shape.bounding_box();
    assert!(b.max_lat > 0.0089 && b.max_lat < 0.0091, "{b:?}");
    assert!(b.max_lon > 0.0089 && b.max_lon < 0.0091, "{b:?}");
}

#[test]
fn circle_at_sixty_degrees_north() {
    let (lat, lon) = (60.0, 10.0);
    let shape = Shape::circle(lat, lon, 1000.0).unwrap();
    let inside = lon + east_offset_deg(lat, 990.0);
    let outside = lon + east_offset_deg(lat, 1010.0);
    // The closed form agrees with geo's haversine distance.
    let centre = Point::new(lon, lat);
    assert!((Haversine.distance(centre, Point::new(inside, lat)) - 990.0).abs() < 1e-6);
    assert!((Haversine.distance(centre, Point::new(outside, lat)) - 1010.0).abs() < 1e-6);
    assert!(shape.contains(lat, inside), "990 m east");
    assert!(!shape.contains(lat, outside), "1010 m east");
    assert!(shape.contains(lat, 2.0 * lon - inside), "990 m west");
    assert!(!shape.contains(lat, 2.0 * lon - outside), "1010 m west");
    // A degree of longitude is half as long at 60°: the offset is about
    // twice what it is at the equator (and a naive box would be too narrow).
    let ratio = east_offset_deg(lat, 990.0) / east_offset_deg(0.0, 990.0);
    assert!((ratio - 2.0).abs() < 1e-6, "{ratio}");
    let b = shape.bounding_box();
    assert!(b.contains(lat, inside) && b.contains(lat, 2.0 * lon - inside));
    // Along the great circle heading east, 990 m out is inside as well.
    let east = Haversine.destination(centre, 90.0, 990.0);
    assert!(shape.contains(east.y(), east.x()));
    let east = Haversine.destination(centre, 90.0, 1010.0);
    assert!(!shape.contains(east.y(), east.x()));
}

/// Points just inside the circle at every bearing are inside its box.
fn assert_box_holds_circle(lat: f64, lon: f64, radius_m: f64) {
    let shape = Shape::circle(lat, lon, radius_m).unwrap();
    let b = shape.bounding_box();
    assert!(b.min_lat >= -90.0 && b.max_lat <= 90.0, "{b:?}");
    assert!(b.min_lon >= -180.0 && b.max_lon <= 180.0, "{b:?}");
    for tenth in 0..3600 {
        let bearing = f64::from(tenth) / 10.0;
        for fraction in [0.5, 0.999_999, 1.0] {
            let p = Haversine.destination(Point::new(lon, lat), bearing, radius_m * fraction);
            if shape.contains(p.y(), p.x()) {
                assert!(
                    b.contains(p.y(), p.x()),
                    "circle ({lat}, {lon}, {radius_m}): {p:?} at {bearing}° outside {b:?}"
                );
            }
        }
    }
}

#[test]
fn circle_boxes_hold_their_circles() {
    assert_box_holds_circle(0.0, 0.0, 1000.0);
    assert_box_holds_circle(60.0, 10.0, 1000.0);
    assert_box_holds_circle(-45.0, 120.0, 250_000.0);
    assert_box_holds_circle(80.0, -30.0, 1_000_000.0);
    assert_box_holds_circle(-89.0, 0.0, 50_000.0);
    assert_box_holds_circle(10.0, 179.99, 5_000.0);
    assert_box_holds_circle(-10.0, -179.99, 5_000.0);
}

#[test]
fn antimeridian_circle_box_spans_all_longitudes() {
    let shape = Shape::circle(0.0, 179.995, 5_000.0).unwrap();
    let b = shape.bounding_box();
    assert_eq!((b.min_lon, b.max_lon), (-180.0, 180.0), "{b:?}");
    assert!(
        b.max_lat < 0.05 && b.min_lat > -0.05,
        "latitude stays tight: {b:?}"
    );
    // ~1.1 km across the antimeridian: inside, and inside the box.
    assert!(shape.contains(0.0, -179.995));
    assert!(b.contains(0.0, -179.995));
    assert!(!shape.contains(0.0, -179.9));
    // The same on the other side.
    let west = Shape::circle(0.0, -179.995, 5_000.0).unwrap();
    assert_eq!(
        (west.bounding_box().min_lon, west.bounding_box().max_lon),
        (-180.0, 180.0)
    );
    assert!(west.contains(0.0, 179.995));
    // A circle that does not reach ±180 keeps a narrow box.
    let near = Shape::circle(0.0, 179.0, 5_000.0).unwrap().bounding_box();
    assert!(near.min_lon > 178.9 && near.max_lon < 179.1, "{near:?}");
}

#[test]
fn polar_circle_box_is_clamped_and_spans_all_longitudes() {
    let shape = Shape::circle(89.995, 0.0, 10_000.0).unwrap();
    let b = shape.bounding_box();
    assert_eq!(b.max_lat, 90.0, "{b:?}");
    assert_eq!((b.min_lon, b.max_lon), (-180.0, 180.0), "{b:?}");
    assert!(b.min_lat > 89.9 && b.min_lat < 89.995, "{b:?}");
    // Beyond the pole, on the other side of the globe.
    assert!(shape.contains(89.999, -170.0));
    assert!(shape.contains(90.0, 0.0));
    let south = Shape::circle(-90.0, 0.0, 1000.0).unwrap().bounding_box();
    assert_eq!(south.min_lat, -90.0);
    assert_eq!((south.min_lon, south.max_lon), (-180.0, 180.0));
}

#[test]
fn polygon_bounding_box() {
    let shape = polygon(json!({
        "type": "Polygon",
        "coordinates": [[[-3.5, 40.0], [-1.0, 41.5], [-2.0, 43.25], [-3.5, 40.0]]]
    }));
    assert_eq!(
        shape.bounding_box(),
        BoundingBox {
            min_lat: 40.0,
            min_lon: -3.5,
            max_lat: 43.25,
            max_lon: -1.0
        }
    );
}

#[test]
fn geojson_round_trip() {
    let value = json!({
        "type": "Polygon",
        "coordinates": [square(0.0, 10.0), square(4.0, 6.0)]
    });
    let shape = polygon(value.clone());
    let back = shape.to_geojson().unwrap();
    assert_eq!(
        back,
        json!({
            "type": "Polygon",
            "coordinates": [
                [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]],
                [[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0], [4.0, 4.0]]
            ]
        })
    );
    assert_eq!(Shape::from_geojson(&back).unwrap(), shape);
    assert_eq!(Shape::circle(1.0, 2.0, 3.0).unwrap().to_geojson(), None);
}

#[test]
fn geojson_accepts_altitude_and_repeated_positions() {
    let shape = polygon(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0, 100], [1, 0, 100], [1, 0], [1, 1, 5.5], [0, 1], [0, 0, 100]]]
    }));
    assert!(shape.contains(0.5, 0.5));
    // Other members (bbox, properties-like extras) are ignored.
    polygon(json!({"type": "Polygon", "bbox": [0, 0, 1, 1], "coordinates": [square(0.0, 1.0)]}));
}

#[test]
fn geojson_accepts_the_maximum_number_of_vertices() {
    // A 10,000-position ring (a circle drawn with 9,999 corners).
    let n = MAX_VERTICES - 1;
    let mut ring: Vec<Value> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            json!([10.0 * a.cos(), 10.0 * a.sin()])
        })
        .collect();
    ring.push(ring[0].clone());
    let shape = polygon(json!({"type": "Polygon", "coordinates": [ring]}));
    assert!(shape.contains(0.0, 0.0));
    assert!(!shape.contains(10.0, 10.0));
}

#[test]
fn geojson_refuses_non_objects_and_other_types() {
    let m = refused(json!("POLYGON((0 0, 1 0, 1 1, 0 0))"));
    assert_mentions(&m, &["GeoJSON geometry object", "\"Polygon\""]);
    let m = refused(json!({"type": "Point", "coordinates": [1, 2]}));
    assert_mentions(&m, &["\"Point\" is not supported", "Polygon", "circle"]);
    let m = refused(json!({"type": "MultiPolygon", "coordinates": [[square(0.0, 1.0)]]}));
    assert_mentions(&m, &["\"MultiPolygon\" is not supported"]);
    let m = refused(json!({"type": "Feature", "geometry": {"type": "Polygon"}}));
    assert_mentions(&m, &["\"Feature\" is not supported"]);
    let m = refused(json!({"coordinates": [square(0.0, 1.0)]}));
    assert_mentions(&m, &["needs \"type\": \"Polygon\""]);
    let m = refused(json!({"type": 7, "coordinates": [square(0.0, 1.0)]}));
    assert_mentions(&m, &["needs \"type\": \"Polygon\""]);
}

#[test]
fn geojson_refuses_missing_or_malformed_coordinates() {
    let m = refused(json!({"type": "Polygon"}));
    assert_mentions(&m, &["\"coordinates\" must be an array of linear rings"]);
    let m = refused(json!({"type": "Polygon", "coordinates": "0 0 1 1"}));
    assert_mentions(&m, &["\"coordinates\" must be an array of linear rings"]);
    let m = refused(json!({"type": "Polygon", "coordinates": []}));
    assert_mentions(&m, &["\"coordinates\" is empty", "exterior ring"]);
    let m = refused(json!({"type": "Polygon", "coordinates": [{"lon": 0}]}));
    assert_mentions(
        &m,
        &["the exterior ring must be an array of [lon, lat] positions"],
    );
    let m = refused(json!({"type": "Polygon", "coordinates": [square(0.0, 9.0), 5]}));
    assert_mentions(&m, &["hole 1 must be an array of [lon, lat] positions"]);
}

#[test]
fn geojson_refuses_short_rings() {
    let m = refused(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}));
    assert_mentions(
        &m,
        &[
            "the exterior ring has 3 positions",
            "at least 4",
            "repeated",
        ],
    );
    let m = refused(json!({"type": "Polygon", "coordinates": [[]]}));
    assert_mentions(&m, &["the exterior ring has 0 positions"]);
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [square(0.0, 9.0), [[1, 1], [2, 1], [1, 1]]]
    }));
    assert_mentions(&m, &["hole 1 has 3 positions", "at least 4"]);
}

#[test]
fn geojson_refuses_unclosed_rings() {
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]
    }));
    assert_mentions(
        &m,
        &[
            "the exterior ring is not closed",
            "last position must repeat the first",
        ],
    );
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [square(0.0, 9.0), [[1, 1], [2, 1], [2, 2], [1, 2], [1, 1.5]]]
    }));
    assert_mentions(&m, &["hole 1 is not closed"]);
}

#[test]
fn geojson_refuses_out_of_range_coordinates() {
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]
    }));
    assert_mentions(
        &m,
        &[
            "position 1 of the exterior ring",
            "longitude 200 must be between -180 and 180",
            "[lon, lat]",
        ],
    );
    // Swapped [lat, lon] is a classic mistake; the message says the order.
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[10, 0], [11, 0], [11, 95], [10, 0]]]
    }));
    assert_mentions(
        &m,
        &[
            "position 2 of the exterior ring",
            "latitude 95 must be between -90 and 90",
            "positions are [lon, lat]",
        ],
    );
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 0], [1, -90.5], [0, 0]]]
    }));
    assert_mentions(&m, &["latitude -90.5"]);
}

#[test]
fn geojson_refuses_positions_that_are_not_lon_lat_numbers() {
    for (bad, what) in [
        (json!([1]), "one number"),
        (json!([1, 2, 3, 4]), "four numbers"),
        (json!(["1", 2]), "a string"),
        (json!([1, null]), "a null"),
        (json!({"lon": 1, "lat": 2}), "an object"),
        (json!(5), "a number"),
    ] {
        let m = refused(json!({
            "type": "Polygon",
            "coordinates": [[[0, 0], [1, 0], bad, [0, 0]]]
        }));
        assert_mentions(
            &m,
            &["position 2 of the exterior ring must be a [lon, lat] pair of numbers"],
        );
        let _ = what;
    }
}

#[test]
fn geojson_refuses_self_intersecting_rings() {
    // A bow tie: edges 0 and 2 cross at (1, 1).
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]
    }));
    assert_mentions(
        &m,
        &[
            "the exterior ring intersects itself",
            "near [1, 1]",
            "neither cross nor touch",
        ],
    );
    // Two lobes touching at one vertex (a figure eight through (1, 1)).
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 1], [2, 0], [2, 2], [1, 1], [0, 2], [0, 0]]]
    }));
    assert_mentions(&m, &["the exterior ring intersects itself", "near [1, 1]"]);
    // A spike that doubles back over its own edge.
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [2, 0], [2, 2], [2, 1], [0, 2], [0, 0]]]
    }));
    assert_mentions(&m, &["the exterior ring intersects itself"]);
    // A vertex touching another edge's middle.
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [4, 0], [4, 4], [2, 0], [0, 4], [0, 0]]]
    }));
    assert_mentions(&m, &["the exterior ring intersects itself", "near [2, 0]"]);
    // Holes are checked too.
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [square(0.0, 10.0), [[1, 1], [3, 3], [3, 1], [1, 3], [1, 1]]]
    }));
    assert_mentions(&m, &["hole 1 intersects itself", "near [2, 2]"]);
}

#[test]
fn geojson_refuses_degenerate_rings() {
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 1], [1, 1], [0, 0]]]
    }));
    assert_mentions(&m, &["the exterior ring has fewer than 3 distinct corners"]);
    // Three collinear corners enclose nothing: the closing edge overlaps.
    let m = refused(json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]
    }));
    assert_mentions(&m, &["the exterior ring intersects itself"]);
}

#[test]
fn geojson_refuses_too_many_vertices() {
    let n = MAX_VERTICES; // + the closing position = 10,001
    let mut ring: Vec<Value> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            json!([a.cos(), a.sin()])
        })
        .collect();
    ring.push(ring[0].clone());
    let m = refused(json!({"type": "Polygon", "coordinates": [ring]}));
    assert_mentions(
        &m,
        &["has 10001 positions in total", "at most 10000", "simplify"],
    );
    // Counted over all rings together.
    let big: Vec<Value> = (0..6000).map(|i| json!([i as f64 * 0.001, 0.0])).collect();
    let m = refused(json!({"type": "Polygon", "coordinates": [big.clone(), big]}));
    assert_mentions(&m, &["has 12000 positions in total"]);
}

#[test]
fn circle_validation() {
    assert!(Shape::circle(90.0, 180.0, MAX_RADIUS).is_ok());
    assert!(Shape::circle(-90.0, -180.0, 0.001).is_ok());
    for (lat, lon, radius, field, part) in [
        (90.5, 0.0, 10.0, "circle.lat", "between -90 and 90"),
        (f64::NAN, 0.0, 10.0, "circle.lat", "between -90 and 90"),
        (0.0, -180.5, 10.0, "circle.lon", "between -180 and 180"),
        (
            0.0,
            f64::INFINITY,
            10.0,
            "circle.lon",
            "between -180 and 180",
        ),
        (0.0, 0.0, 0.0, "circle.radius_m", "greater than 0"),
        (0.0, 0.0, -5.0, "circle.radius_m", "greater than 0"),
        (0.0, 0.0, 1_000_000.5, "circle.radius_m", "at most 1000000"),
        (0.0, 0.0, f64::NAN, "circle.radius_m", "metres"),
        (0.0, 0.0, f64::INFINITY, "circle.radius_m", "metres"),
    ] {
        let e = Shape::circle(lat, lon, radius).unwrap_err();
        assert_eq!(e.field, field, "({lat}, {lon}, {radius})");
        assert_mentions(&e.message, &[part]);
    }
}

const MAX_RADIUS: f64 = webhost_geofence::MAX_RADIUS_M;

#[test]
fn non_finite_points_are_outside() {
    let square = square_with_hole();
    let circle = Shape::circle(0.0, 0.0, 1000.0).unwrap();
    for shape in [square, circle] {
        assert!(!shape.contains(f64::NAN, 0.0));
        assert!(!shape.contains(0.0, f64::INFINITY));
    }
}
