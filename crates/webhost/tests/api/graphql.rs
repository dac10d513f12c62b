//! GraphQL and OpenAPI, derived from the same declarations as REST: the
//! same data through both, mutations REST sees, errors that say what to fix,
//! and documents that list every operation.

use chrono::{Duration, DurationRound, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::helpers::{device, Account, TestApp};
use crate::stories;

stories!(
    graphql_and_rest_return_the_same_data,
    graphql_mutations_are_what_rest_sees,
    graphql_errors_say_what_to_fix,
    openapi_and_graphql_describe_every_operation,
);

impl TestApp {
    /// `data` of a GraphQL request, asserting it had no errors.
    async fn graphql(&self, account: &Account, query: &str, variables: Value) -> Value {
        let answer = self.graphql_answer(account, query, variables).await;
        assert!(answer.get("errors").is_none(), "{query}: {answer}");
        answer["data"].clone()
    }

    async fn graphql_answer(&self, account: &Account, query: &str, variables: Value) -> Value {
        let answer = self
            .post(
                "/api/graphql",
                Some(&account.token),
                json!({ "query": query, "variables": variables }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A GraphQL answer in REST's spelling: snake_case keys, enum values in
/// lower case. JSON scalars (`attributes`, `geometry`) are left as they are.
fn as_rest(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| {
                    let item = match key.as_str() {
                        "attributes" | "geometry" => item.clone(),
                        "type" => json!(item.as_str().map(str::to_lowercase)),
                        _ => as_rest(item),
                    };
                    (snake(key), item)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(as_rest).collect()),
        other => other.clone(),
    }
}

/// REST's answer without the fields REST leaves out when empty (GraphQL
/// answers them as `null`), for comparison.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn assert_same(what: &str, graphql: &Value, rest: &Value) {
    assert_eq!(
        without_nulls(&as_rest(graphql)),
        without_nulls(rest),
        "{what}: GraphQL and REST differ"
    );
}

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const POSITION: &str = "vehicleId time lat lon speed heading altitude accuracy valid attributes";

async fn graphql_and_rest_return_the_same_data(app: TestApp) {
    let account = app.signup("starter", "DE").await;
    let imei = device();
    let created = app
        .graphql(
            &account,
            "mutation($input: NewVehicleInput!) { createVehicle(input: $input) { id name deviceId plate group attributes createdAt updatedAt } }",
            json!({ "input": { "name": "Van 7", "deviceId": imei, "plate": "B-WH 7", "attributes": { "colour": "red" } } }),
        )
        .await;
    let van = created["createVehicle"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rest_van = app
        .get(&format!("/api/v1/vehicles/{van}"), &account.token)
        .await;
    assert_eq!(rest_van.status, StatusCode::OK, "{}", rest_van.body);
    assert_same("createVehicle", &created["createVehicle"], &rest_van.body);

    // A fence on the route, then a drive through it: parked 10 minutes,
    // 20 minutes at ~60 km/h eastwards, parked 10 minutes.
    let fence = app
        .post(
            "/api/v1/geofences",
            Some(&account.token),
            json!({ "name": "Depot", "circle": { "lat": 52.5, "lon": 13.45, "radius_m": 800 } }),
        )
        .await;
    assert_eq!(fence.status, StatusCode::CREATED, "{}", fence.body);
    let fence_id = fence.body["id"].as_str().expect("fence id").to_owned();
    let start = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::minutes(1))
        .expect("trunc");
    let mut lon = 13.3;
    let positions: Vec<Value> = (0..80)
        .map(|i| {
            let minute = f64::from(i) / 2.0;
            let moving = (10.0..30.0).contains(&minute);
            if moving {
                lon += 0.0074; // ~500 m per 30 s at 52.5°N
            }
            json!({
                "vehicleId": van,
                "time": iso(start + Duration::seconds(30 * i64::from(i))),
                "lat": 52.5,
                "lon": lon,
                "speed": if moving { 60.0 } else { 0.0 },
                "heading": 90.0,
                "attributes": { "ignition": moving },
            })
        })
        .collect();
    let ingested = app
        .graphql(
            &account,
            "mutation($positions: [PositionInput!]!) { ingestPositions(positions: $positions) { accepted duplicates rejected { index error } } }",
            json!({ "positions": positions }),
        )
        .await;
    assert_eq!(
        ingested["ingestPositions"],
        json!({ "accepted": 80, "duplicates": 0, "rejected": [] })
    );

    let from = iso(start - Duration::minutes(1));
    let to = iso(start + Duration::hours(1));
    let range = json!({ "v": van, "from": from, "to": to });
    let data = app
        .graphql(
            &account,
            &format!(
                "query($v: ID!, $from: DateTime, $to: DateTime) {{
                    vehicles(limit: 10) {{ data {{ id name deviceId plate group attributes createdAt updatedAt }} nextCursor }}
                    vehicle(id: $v) {{ id name deviceId plate group attributes createdAt updatedAt }}
                    latestPositions {{ data {{ {POSITION} }} nextCursor }}
                    positions(vehicleId: $v, from: $from, to: $to, limit: 50) {{ data {{ {POSITION} }} nextCursor }}
                    trips(vehicleId: $v, from: $from, to: $to) {{ data {{ vehicleId startTime endTime durationS distanceM maxSpeed averageSpeed start {{ lat lon }} end {{ lat lon }} }} nextCursor }}
                    stops(vehicleId: $v, from: $from, to: $to) {{ data {{ vehicleId startTime endTime durationS lat lon }} nextCursor }}
                    geofences {{ data {{ id name geometry circle {{ lat lon radiusM }} createdAt updatedAt }} nextCursor }}
                    geofence(id: \"{fence_id}\") {{ id name geometry circle {{ lat lon radiusM }} createdAt updatedAt }}
                    events(vehicleId: $v) {{ data {{ id type vehicleId geofenceId time position {{ {POSITION} }} }} nextCursor }}
                }}"
            ),
            range,
        )
        .await;

    let q = format!("from={from}&to={to}");
    for (field, path) in [
        ("vehicles", "/api/v1/vehicles?limit=10".to_owned()),
        ("vehicle", format!("/api/v1/vehicles/{van}")),
        ("latestPositions", "/api/v1/positions/latest".to_owned()),
        (
            "positions",
            format!("/api/v1/vehicles/{van}/positions?{q}&limit=50"),
        ),
        ("trips", format!("/api/v1/vehicles/{van}/trips?{q}")),
        ("stops", format!("/api/v1/vehicles/{van}/stops?{q}")),
        ("geofences", "/api/v1/geofences".to_owned()),
        ("geofence", format!("/api/v1/geofences/{fence_id}")),
        ("events", format!("/api/v1/events?vehicle_id={van}")),
    ] {
        let rest = app.get(&path, &account.token).await;
        assert_eq!(rest.status, StatusCode::OK, "{path}: {}", rest.body);
        assert_same(field, &data[field], &rest.body);
    }

    // The comparisons compared something: the drive made each kind.
    assert_eq!(
        data["positions"]["data"].as_array().expect("page").len(),
        50
    );
    assert!(data["positions"]["nextCursor"].is_string());
    assert_eq!(
        data["positions"]["data"][0]["attributes"],
        json!({ "ignition": false })
    );
    assert_eq!(
        data["trips"]["data"].as_array().expect("trips").len(),
        1,
        "{data}"
    );
    assert_eq!(
        data["stops"]["data"].as_array().expect("stops").len(),
        2,
        "{data}"
    );
    let types: Vec<&str> = data["events"]["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["DEVICE_ONLINE", "GEOFENCE_ENTER", "GEOFENCE_EXIT"],
        "{data}"
    );
    assert_eq!(data["latestPositions"]["data"][0]["speed"], 0.0);

    // The next page through the cursor, both ways.
    let cursor = data["positions"]["nextCursor"].as_str().expect("cursor");
    let next = app
        .graphql(
            &account,
            &format!("query($v: ID!, $c: String) {{ positions(vehicleId: $v, cursor: $c, from: \"{from}\", to: \"{to}\") {{ data {{ {POSITION} }} nextCursor }} }}"),
            json!({ "v": van, "c": cursor }),
        )
        .await;
    let rest = app
        .get(
            &format!("/api/v1/vehicles/{van}/positions?{q}&cursor={cursor}"),
            &account.token,
        )
        .await;
    assert_same("positions after the cursor", &next["positions"], &rest.body);
    assert_eq!(
        next["positions"]["data"].as_array().expect("page").len(),
        30
    );

    // Buckets: a query of their own, the same as ?bucket= on the history.
    let buckets = app
        .graphql(
            &account,
            "query($v: ID!, $from: DateTime, $to: DateTime) { positionBuckets(vehicleId: $v, bucket: \"10m\", from: $from, to: $to) { data { time lat lon speed maxSpeed count } nextCursor bucketSeconds } }",
            json!({ "v": van, "from": from, "to": to }),
        )
        .await;
    let rest = app
        .get(
            &format!("/api/v1/vehicles/{van}/positions?{q}&bucket=10m"),
            &account.token,
        )
        .await;
    assert_same("positionBuckets", &buckets["positionBuckets"], &rest.body);
    assert_eq!(buckets["positionBuckets"]["bucketSeconds"], 600);
}

async fn graphql_mutations_are_what_rest_sees(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let made = app.create_vehicle(&account, "Truck", Some(&device())).await;
    let truck = made.body["id"].as_str().expect("id").to_owned();
    let plate = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{truck}"),
            Some(&account.token),
            Some(json!({ "plate": "M-AB 1" })),
        )
        .await;
    assert_eq!(plate.status, StatusCode::OK, "{}", plate.body);

    // Absent fields stay, null clears: the same PATCH semantics.
    let updated = app
        .graphql(
            &account,
            "mutation($id: ID!) { updateVehicle(id: $id, input: { name: \"Truck 2\", deviceId: null }) { name deviceId plate } }",
            json!({ "id": truck }),
        )
        .await;
    assert_eq!(
        updated["updateVehicle"],
        json!({ "name": "Truck 2", "deviceId": null, "plate": "M-AB 1" })
    );
    let rest = app
        .get(&format!("/api/v1/vehicles/{truck}"), &account.token)
        .await;
    assert_eq!(rest.body["name"], "Truck 2");
    assert_eq!(rest.body["device_id"], Value::Null);

    let polygon = json!({ "type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.0]]] });
    let fence = app
        .graphql(
            &account,
            "mutation($g: JSON) { createGeofence(input: { name: \"Yard\", geometry: $g }) { id name geometry circle { radiusM } } }",
            json!({ "g": polygon }),
        )
        .await;
    let fence_id = fence["createGeofence"]["id"]
        .as_str()
        .expect("fence id")
        .to_owned();
    assert_eq!(fence["createGeofence"]["geometry"], polygon);
    assert_eq!(fence["createGeofence"]["circle"], Value::Null);
    let circle = app
        .graphql(
            &account,
            "mutation($id: ID!) { updateGeofence(id: $id, input: { circle: { lat: 52.05, lon: 13.05, radiusM: 250 } }) { name circle { lat lon radiusM } geometry } }",
            json!({ "id": fence_id }),
        )
        .await;
    assert_eq!(
        circle["updateGeofence"],
        json!({ "name": "Yard", "circle": { "lat": 52.05, "lon": 13.05, "radiusM": 250.0 }, "geometry": null })
    );
    let rest = app
        .get(&format!("/api/v1/geofences/{fence_id}"), &account.token)
        .await;
    assert_eq!(rest.body["circle"]["radius_m"], 250.0);

    let deleted = app
        .graphql(
            &account,
            "mutation($f: ID!, $v: ID!) { deleteGeofence(id: $f) { id } deleteVehicle(id: $v) { id } }",
            json!({ "f": fence_id, "v": truck }),
        )
        .await;
    assert_eq!(deleted["deleteGeofence"]["id"], fence_id.as_str());
    assert_eq!(deleted["deleteVehicle"]["id"], truck.as_str());
    for path in [
        format!("/api/v1/geofences/{fence_id}"),
        format!("/api/v1/vehicles/{truck}"),
    ] {
        assert_eq!(
            app.get(&path, &account.token).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

async fn graphql_errors_say_what_to_fix(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let other = app.signup("hobby", "DE").await;
    let made = app.create_vehicle(&other, "Theirs", None).await;
    let theirs = made.body["id"].as_str().expect("id").to_owned();

    let error = |answer: &Value| -> (String, String) {
        let first = &answer["errors"][0];
        (
            first["extensions"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            first["message"].as_str().unwrap_or_default().to_owned(),
        )
    };

    // Another tenant's vehicle does not exist for this one.
    let answer = app
        .graphql_answer(
            &account,
            "query($id: ID!) { vehicle(id: $id) { name } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(error(&answer).0, "not_found", "{answer}");
    assert_eq!(answer["data"], Value::Null);

    // Input errors name the field, as REST does.
    let answer = app
        .graphql_answer(
            &account,
            "mutation { createVehicle(input: { name: \"  \" }) { id } }",
            json!({}),
        )
        .await;
    let first = &answer["errors"][0];
    assert_eq!(first["extensions"]["field"], "name", "{answer}");
    assert_eq!(first["extensions"]["status"], 422, "{answer}");
    let answer = app
        .graphql_answer(
            &account,
            "{ events(type: \"teleport\") { data { id } } }",
            json!({}),
        )
        .await;
    let (code, message) = error(&answer);
    assert_eq!(code, "invalid_query");
    assert!(
        message.contains("geofence_enter"),
        "names the allowed types: {message}"
    );

    // Ill-typed documents never reach a resolver.
    for (query, hint) in [
        ("{ vehicles(limit: \"ten\") { data { id } } }", "limit"),
        (
            "{ positions(vehicleId: \"x\", from: \"yesterday\") { data { lat } } }",
            "from",
        ),
        ("{ vehicles { data { colour } } }", "colour"),
        (
            "mutation { ingestPositions(positions: [{ lat: 1 }]) { accepted } }",
            "lon",
        ),
    ] {
        let answer = app.graphql_answer(&account, query, json!({})).await;
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{query}: {answer}");
    }

    // Rejected positions are data, not errors: index and reason.
    let answer = app
        .graphql(
            &account,
            "mutation { ingestPositions(positions: [{ deviceId: \"nobody\", lat: 1, lon: 2 }]) { accepted rejected { index error } } }",
            json!({}),
        )
        .await;
    assert_eq!(answer["ingestPositions"]["accepted"], 0);
    assert_eq!(answer["ingestPositions"]["rejected"][0]["index"], 0);

    // No credential, no GraphQL.
    let anonymous = app
        .post(
            "/api/graphql",
            None,
            json!({ "query": "{ vehicles { data { id } } }" }),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let malformed = app
        .post(
            "/api/graphql",
            Some(&account.token),
            json!({ "variables": {} }),
        )
        .await;
    assert!(malformed.status.is_client_error(), "{}", malformed.body);
}

async fn openapi_and_graphql_describe_every_operation(app: TestApp) {
    let document = app
        .request(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"]
        .as_str()
        .expect("version")
        .starts_with("3."));
    let sdl = app
        .client
        .get(format!("{}/api/graphql/schema.graphql", app.url))
        .send()
        .await
        .expect("sdl")
        .text()
        .await
        .expect("sdl text");

    let mut operations = Vec::new();
    for (path, item) in document.body["paths"].as_object().expect("paths") {
        // The control plane's APIs (accounts, operator) are REST only; they
        // are checked in identity.rs and operator.rs.
        let control = [
            "/api/admin/",
            "/api/v1/signup",
            "/api/v1/login",
            "/api/v1/api-keys",
            "/api/v1/subscription",
        ];
        if control.iter().any(|prefix| path.starts_with(prefix)) {
            continue;
        }
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(
                sdl.contains(&format!("\t{id}")),
                "{id} is a GraphQL root field too"
            );
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /api/v1/geofences/{id}",
            "DELETE /api/v1/vehicles/{id}",
            "DELETE /api/v1/webhooks/{id}",
            "GET /api/v1/events",
            "GET /api/v1/geofences",
            "GET /api/v1/geofences/{id}",
            "GET /api/v1/positions/latest",
            "GET /api/v1/vehicles",
            "GET /api/v1/vehicles/{id}",
            "GET /api/v1/vehicles/{vehicle_id}/positions",
            "GET /api/v1/vehicles/{vehicle_id}/positions/buckets",
            "GET /api/v1/vehicles/{vehicle_id}/stops",
            "GET /api/v1/vehicles/{vehicle_id}/trips",
            "GET /api/v1/webhooks",
            "GET /api/v1/webhooks/{id}",
            "GET /api/v1/webhooks/{id}/deliveries",
            "PATCH /api/v1/geofences/{id}",
            "PATCH /api/v1/vehicles/{id}",
            "PATCH /api/v1/webhooks/{id}",
            "POST /api/v1/geofences",
            "POST /api/v1/positions",
            "POST /api/v1/vehicles",
            "POST /api/v1/webhooks",
        ]
    );
    // SPEC's root fields, all of them.
    for field in [
        "vehicles(",
        "vehicle(",
        "latestPositions:",
        "positions(",
        "trips(",
        "stops(",
        "geofences:",
        "geofence(",
        "events(",
        "createVehicle(",
        "updateVehicle(",
        "deleteVehicle(",
        "createGeofence(",
        "updateGeofence(",
        "deleteGeofence(",
        "ingestPositions(",
    ] {
        assert!(sdl.contains(&format!("\t{field}")), "{field} in:\n{sdl}");
    }

    // Every documented path answers through the edge (here: unauthorised,
    // not 404), and every schema it refers to exists.
    // Signup and login need no credentials: they answer the missing body.
    for (path, item) in document.body["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{id}", "0192f6a0-0000-7000-8000-000000000000")
            .replace("{vehicle_id}", "0192f6a0-0000-7000-8000-000000000000");
        let method = item
            .as_object()
            .expect("path item")
            .keys()
            .next()
            .expect("a method")
            .to_uppercase();
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = app.request(method, &concrete, None, None).await;
        let public = ["/api/v1/signup", "/api/v1/login"].contains(&path.as_str());
        if public {
            assert!(answer.status.is_client_error(), "{path}: {}", answer.status);
            assert!(
                ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&answer.status),
                "{path}"
            );
        } else {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    let text = document.body.to_string();
    let schemas = &document.body["components"]["schemas"];
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').expect("closing quote")];
        assert!(
            schemas.get(name).is_some(),
            "{name} is referenced but missing"
        );
    }

    // GraphiQL for a browser, no credential needed to load it.
    let page = app
        .client
        .get(format!("{}/api/graphql", app.url))
        .send()
        .await
        .expect("graphiql");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(page.text().await.expect("html").contains("graphiql"));
}
