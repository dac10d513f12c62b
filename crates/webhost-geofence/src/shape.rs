//! Geofence geometry: GeoJSON polygons (with holes) and circles, parsed once
//! with errors that say what to fix, and the exact point-in-shape tests.

use geo::coordinate_position::{CoordPos, CoordinatePosition};
use geo::line_intersection::{line_intersection, LineIntersection};
use geo::{Coord, Distance, Haversine, Line, LineString, Point, Polygon};
use rstar::{RTree, RTreeObject, AABB};
use serde_json::{json, Value};
use webhost_domain::{GeofenceId, ValidationError};

/// The most positions a polygon may have, over all its rings together
/// (closing positions included).
pub const MAX_VERTICES: usize = 10_000;

/// The largest circle radius accepted, in metres.
pub const MAX_RADIUS_M: f64 = 1_000_000.0;

const FIELD: &str = "geometry";

/// A geofence's shape. Coordinates: lon/lat degrees (WGS84).
///
/// Polygons are planar in lon/lat: their edges are straight lines on an
/// equirectangular map (as in GeoJSON, RFC 7946), not great circles, and a
/// polygon cannot cross the antimeridian (split it in two, RFC 7946 §3.1.9).
/// Circles are spherical: a point is inside when its haversine distance to
/// the centre is at most the radius, so they work anywhere, the antimeridian
/// and the poles included.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Polygon(Polygon<f64>),
    Circle { lat: f64, lon: f64, radius_m: f64 },
}

/// A box in degrees; `min_lon <= max_lon` always (a box that would cross
/// ±180° spans the whole longitude range instead).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundingBox {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

impl BoundingBox {
    /// Whether the point lies in the box (edges included).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        self.min_lat <= lat && lat <= self.max_lat && self.min_lon <= lon && lon <= self.max_lon
    }

    fn is_finite(&self) -> bool {
        self.min_lat.is_finite()
            && self.min_lon.is_finite()
            && self.max_lat.is_finite()
            && self.max_lon.is_finite()
    }

    const WORLD: BoundingBox = BoundingBox {
        min_lat: -90.0,
        min_lon: -180.0,
        max_lat: 90.0,
        max_lon: 180.0,
    };
}

/// A geofence: its identifier and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Geofence {
    pub id: GeofenceId,
    pub shape: Shape,
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError::new(FIELD, message)
}

fn ring_name(ring: usize) -> String {
    if ring == 0 {
        "the exterior ring".to_owned()
    } else {
        format!("hole {ring}")
    }
}

impl Shape {
    /// Parses a GeoJSON geometry object
    /// `{"type":"Polygon","coordinates":[[[lon,lat],...], holes...]}`.
    ///
    /// A position is `[lon, lat]`; an optional third number (altitude, RFC
    /// 7946 §3.1.1) is accepted and ignored. Refused, with field `geometry`
    /// and a message that says what to fix: anything but a `Polygon`; rings
    /// with fewer than 4 positions, fewer than 3 distinct corners, or not
    /// closed (first != last); positions that are not `[lon, lat]` numbers,
    /// or out of range; a ring (exterior or hole) whose edges cross or touch
    /// each other; more than [`MAX_VERTICES`] positions in total.
    pub fn from_geojson(value: &Value) -> Result<Shape, ValidationError> {
        let object = value.as_object().ok_or_else(|| {
            invalid(
                "must be a GeoJSON geometry object like \
                 {\"type\": \"Polygon\", \"coordinates\": [[[lon, lat], ...]]}",
            )
        })?;
        match object.get("type") {
            Some(Value::String(kind)) if kind == "Polygon" => {}
            Some(Value::String(kind)) => {
                return Err(invalid(format!(
                    "type \"{kind}\" is not supported: use a \"Polygon\", \
                     or a circle given as {{\"circle\": {{\"lat\", \"lon\", \"radius_m\"}}}}"
                )))
            }
            _ => {
                return Err(invalid(
                    "needs \"type\": \"Polygon\" (a GeoJSON geometry object)",
                ))
            }
        }
        let rings = object
            .get("coordinates")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                invalid(
                    "\"coordinates\" must be an array of linear rings: \
                     [[[lon, lat], ...], holes...]",
                )
            })?;
        if rings.is_empty() {
            return Err(invalid(
                "\"coordinates\" is empty: give at least the exterior ring [[lon, lat], ...]",
            ));
        }
        // Count first, so that a huge input is refused before any work on it.
        let mut total = 0usize;
        for (r, ring) in rings.iter().enumerate() {
            let positions = ring.as_array().ok_or_else(|| {
                invalid(format!(
                    "{} must be an array of [lon, lat] positions",
                    ring_name(r)
                ))
            })?;
            total = total.saturating_add(positions.len());
        }
        if total > MAX_VERTICES {
            return Err(invalid(format!(
                "has {total} positions in total; at most {MAX_VERTICES} are allowed: \
                 simplify the outline"
            )));
        }
        let mut parsed = Vec::with_capacity(rings.len());
        for (r, ring) in rings.iter().enumerate() {
            let positions = ring.as_array().map(Vec::as_slice).unwrap_or_default();
            parsed.push(parse_ring(r, positions)?);
        }
        let mut parsed = parsed.into_iter();
        let exterior = parsed.next().unwrap_or_else(|| LineString::new(Vec::new()));
        Ok(Shape::Polygon(Polygon::new(exterior, parsed.collect())))
    }

    /// A circle around (`lat`, `lon`) with a radius in metres. `lat` in
    /// [-90, 90], `lon` in [-180, 180], `radius_m` finite and in
    /// (0, [`MAX_RADIUS_M`]]. Fields `circle.lat`, `circle.lon`,
    /// `circle.radius_m`.
    pub fn circle(lat: f64, lon: f64, radius_m: f64) -> Result<Shape, ValidationError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(ValidationError::new(
                "circle.lat",
                "must be a number between -90 and 90 (degrees)",
            ));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(ValidationError::new(
                "circle.lon",
                "must be a number between -180 and 180 (degrees)",
            ));
        }
        if !radius_m.is_finite() || radius_m <= 0.0 || radius_m > MAX_RADIUS_M {
            return Err(ValidationError::new(
                "circle.radius_m",
                format!("must be greater than 0 and at most {MAX_RADIUS_M} (metres)"),
            ));
        }
        Ok(Shape::Circle { lat, lon, radius_m })
    }

    /// The GeoJSON `Polygon` geometry object of a polygon; `None` for a
    /// circle (which the API shows as `{"circle": {lat, lon, radius_m}}`).
    pub fn to_geojson(&self) -> Option<Value> {
        match self {
            Shape::Polygon(polygon) => {
                let ring = |ring: &LineString<f64>| -> Value {
                    Value::Array(ring.coords().map(|c| json!([c.x, c.y])).collect())
                };
                let mut rings = vec![ring(polygon.exterior())];
                rings.extend(polygon.interiors().iter().map(ring));
                Some(json!({"type": "Polygon", "coordinates": rings}))
            }
            Shape::Circle { .. } => None,
        }
    }

    /// Whether the point is in the shape; the boundary counts as inside.
    /// A point in a polygon's hole is outside (on the hole's edge: inside).
    /// Circles compare the haversine distance (geo's [`Haversine`], mean
    /// earth radius 6,371,008.8 m) with the radius. Non-finite input: false.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if !lat.is_finite() || !lon.is_finite() {
            return false;
        }
        match self {
            Shape::Polygon(polygon) => matches!(
                polygon.coordinate_position(&Coord { x: lon, y: lat }),
                CoordPos::Inside | CoordPos::OnBoundary
            ),
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => Haversine.distance(Point::new(*clon, *clat), Point::new(lon, lat)) <= *radius_m,
        }
    }

    /// The smallest lon/lat box that holds the whole shape. A circle's box
    /// is widened by a hair against rounding; it is clamped to ±90° of
    /// latitude, spans all longitudes when the circle holds a pole, and
    /// spans all longitudes when it would cross ±180°.
    pub fn bounding_box(&self) -> BoundingBox {
        match self {
            Shape::Polygon(polygon) => {
                let mut coords = polygon.exterior().coords();
                let Some(first) = coords.next() else {
                    // An empty polygon contains nothing; any box will do.
                    return BoundingBox {
                        min_lat: 0.0,
                        min_lon: 0.0,
                        max_lat: 0.0,
                        max_lon: 0.0,
                    };
                };
                coords.fold(
                    BoundingBox {
                        min_lat: first.y,
                        min_lon: first.x,
                        max_lat: first.y,
                        max_lon: first.x,
                    },
                    |b, c| BoundingBox {
                        min_lat: b.min_lat.min(c.y),
                        min_lon: b.min_lon.min(c.x),
                        max_lat: b.max_lat.max(c.y),
                        max_lon: b.max_lon.max(c.x),
                    },
                )
            }
            Shape::Circle { lat, lon, radius_m } => circle_box(*lat, *lon, *radius_m),
        }
    }
}

/// Margin added to a circle's box, in degrees (about 0.1 mm).
const BOX_MARGIN_DEG: f64 = 1e-9;

/// The box of a spherical cap (Matuschek, "Finding points within a distance
/// of a latitude/longitude using bounding coordinates"): latitudes
/// `lat ± δ`; longitudes `lon ± asin(sin δ / cos lat)` when no pole is in
/// the cap, where δ is the angular radius.
fn circle_box(lat: f64, lon: f64, radius_m: f64) -> BoundingBox {
    let delta = radius_m / Haversine.radius(); // radians
    let delta_deg = delta.to_degrees() * (1.0 + 1e-9) + BOX_MARGIN_DEG;
    let min_lat = lat - delta_deg;
    let max_lat = lat + delta_deg;
    if min_lat <= -90.0 || max_lat >= 90.0 || !delta_deg.is_finite() {
        // The cap holds a pole: every longitude is reached.
        return BoundingBox {
            min_lat: min_lat.max(-90.0),
            min_lon: -180.0,
            max_lat: max_lat.min(90.0),
            max_lon: 180.0,
        };
    }
    let ratio = delta.sin() / lat.to_radians().cos();
    if ratio.is_nan() || ratio >= 1.0 {
        return BoundingBox {
            min_lat,
            min_lon: -180.0,
            max_lat,
            max_lon: 180.0,
        };
    }
    let half = ratio.asin().to_degrees() * (1.0 + 1e-9) + BOX_MARGIN_DEG;
    let (min_lon, max_lon) = (lon - half, lon + half);
    if min_lon < -180.0 || max_lon > 180.0 {
        // Crosses the antimeridian: one box over all longitudes rather than
        // two boxes (the exact haversine test sorts out the candidates).
        return BoundingBox {
            min_lat,
            min_lon: -180.0,
            max_lat,
            max_lon: 180.0,
        };
    }
    BoundingBox {
        min_lat,
        min_lon,
        max_lat,
        max_lon,
    }
}

/// A finite box for the index: a shape built by hand with non-finite
/// coordinates gets the whole world (and the exact test decides).
pub(crate) fn index_box(shape: &Shape) -> BoundingBox {
    let b = shape.bounding_box();
    if b.is_finite() && b.min_lat <= b.max_lat && b.min_lon <= b.max_lon {
        b
    } else {
        BoundingBox::WORLD
    }
}

fn parse_position(ring: usize, index: usize, value: &Value) -> Result<Coord<f64>, ValidationError> {
    let where_ = || format!("position {index} of {}", ring_name(ring));
    let numbers = value
        .as_array()
        .filter(|a| a.len() == 2 || a.len() == 3)
        .ok_or_else(|| invalid(format!("{} must be a [lon, lat] pair of numbers", where_())))?;
    let mut xy = [0.0f64; 3];
    for (slot, number) in xy.iter_mut().zip(numbers) {
        *slot = number
            .as_f64()
            .ok_or_else(|| invalid(format!("{} must be a [lon, lat] pair of numbers", where_())))?;
        if !slot.is_finite() {
            return Err(invalid(format!("{} must hold finite numbers", where_())));
        }
    }
    let [lon, lat, _altitude] = xy;
    if !(-180.0..=180.0).contains(&lon) {
        return Err(invalid(format!(
            "{}: longitude {lon} must be between -180 and 180 (positions are [lon, lat])",
            where_()
        )));
    }
    if !(-90.0..=90.0).contains(&lat) {
        return Err(invalid(format!(
            "{}: latitude {lat} must be between -90 and 90 (positions are [lon, lat])",
            where_()
        )));
    }
    Ok(Coord { x: lon, y: lat })
}

fn parse_ring(ring: usize, positions: &[Value]) -> Result<LineString<f64>, ValidationError> {
    let coords = positions
        .iter()
        .enumerate()
        .map(|(i, p)| parse_position(ring, i, p))
        .collect::<Result<Vec<_>, _>>()?;
    if coords.len() < 4 {
        return Err(invalid(format!(
            "{} has {} positions; a ring needs at least 4 \
             (3 corners, then the first position repeated to close it)",
            ring_name(ring),
            coords.len()
        )));
    }
    if coords.first() != coords.last() {
        return Err(invalid(format!(
            "{} is not closed: its last position must repeat the first",
            ring_name(ring)
        )));
    }
    check_simple(ring, &coords)?;
    Ok(LineString::new(coords))
}

struct Segment {
    index: usize,
    envelope: AABB<[f64; 2]>,
}

impl RTreeObject for Segment {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// Refuses a closed ring whose edges cross, overlap or touch anywhere but
/// at the shared corner of consecutive edges. Repeated consecutive
/// positions are tolerated (they add no edge).
fn check_simple(ring: usize, closed: &[Coord<f64>]) -> Result<(), ValidationError> {
    let mut corners: Vec<Coord<f64>> = Vec::with_capacity(closed.len());
    for c in closed {
        if corners.last() != Some(c) {
            corners.push(*c);
        }
    }
    // `corners` is closed again (last == first); edges are its windows.
    let edges: Vec<Line<f64>> = corners.windows(2).map(|w| Line::new(w[0], w[1])).collect();
    if edges.len() < 3 {
        return Err(invalid(format!(
            "{} has fewer than 3 distinct corners; draw an area",
            ring_name(ring)
        )));
    }
    let n = edges.len();
    let tree = RTree::bulk_load(
        edges
            .iter()
            .enumerate()
            .map(|(index, e)| Segment {
                index,
                envelope: AABB::from_corners([e.start.x, e.start.y], [e.end.x, e.end.y]),
            })
            .collect(),
    );
    for (i, edge) in edges.iter().enumerate() {
        let envelope = AABB::from_corners([edge.start.x, edge.start.y], [edge.end.x, edge.end.y]);
        for other in tree.locate_in_envelope_intersecting(&envelope) {
            let j = other.index;
            if j <= i {
                continue;
            }
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            let Some(hit) = edges.get(j).and_then(|e| line_intersection(*edge, *e)) else {
                continue;
            };
            let at = match hit {
                // Consecutive edges meet at their shared corner: fine.
                LineIntersection::SinglePoint { .. } if adjacent => continue,
                LineIntersection::SinglePoint { intersection, .. } => intersection,
                LineIntersection::Collinear { intersection } => intersection.start,
            };
            return Err(invalid(format!(
                "{} intersects itself near [{}, {}] (edges {i} and {j}); \
                 redraw the outline so that its edges neither cross nor touch",
                ring_name(ring),
                at.x,
                at.y
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_box_is_symmetric_and_small_at_the_equator() {
        let b = circle_box(0.0, 0.0, 1000.0);
        let deg = (1000.0 / Haversine.radius()).to_degrees();
        assert!((b.max_lat - deg).abs() < 1e-8);
        assert!((b.min_lat + deg).abs() < 1e-8);
        assert!((b.max_lon - deg).abs() < 1e-8);
        assert!((b.min_lon + deg).abs() < 1e-8);
    }

    #[test]
    fn index_box_replaces_non_finite_boxes() {
        let shape = Shape::Circle {
            lat: f64::NAN,
            lon: 0.0,
            radius_m: 1.0,
        };
        assert_eq!(index_box(&shape), BoundingBox::WORLD);
    }
}
