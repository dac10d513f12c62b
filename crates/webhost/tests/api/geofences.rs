//! Geofences through the edge: polygons and circles, validation, isolation.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Account, Answer, TestApp};
use crate::stories;

stories!(
    geofences_round_trip_as_polygons_and_circles,
    geofence_input_is_checked_field_by_field,
    geofences_are_isolated_between_tenants,
);

pub fn square(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Value {
    json!({
        "type": "Polygon",
        "coordinates": [[
            [min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat],
            [min_lon, max_lat], [min_lon, min_lat]
        ]]
    })
}

pub async fn create_geofence(app: &TestApp, account: &Account, body: Value) -> Answer {
    app.post("/api/v1/geofences", Some(&account.token), body)
        .await
}

async fn patch(app: &TestApp, account: &Account, id: &str, body: Value) -> Answer {
    app.request(
        Method::PATCH,
        &format!("/api/v1/geofences/{id}"),
        Some(&account.token),
        Some(body),
    )
    .await
}

async fn delete(app: &TestApp, account: &Account, id: &str) -> Answer {
    app.request(
        Method::DELETE,
        &format!("/api/v1/geofences/{id}"),
        Some(&account.token),
        None,
    )
    .await
}

async fn geofences_round_trip_as_polygons_and_circles(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let zone = square(13.0, 52.0, 13.1, 52.1);
    let polygon =
        create_geofence(&app, &account, json!({ "name": "Depot", "geometry": zone })).await;
    assert_eq!(polygon.status, StatusCode::CREATED, "{}", polygon.body);
    let p = &polygon.body;
    let polygon_id = p["id"].as_str().expect("id").to_string();
    assert_eq!(p["name"], "Depot");
    assert_eq!(p["geometry"], zone, "the GeoJSON comes back as given");
    assert!(p.get("circle").is_none(), "{p}");
    assert!(
        p["created_at"].is_string() && p["updated_at"].is_string(),
        "{p}"
    );

    let circle = create_geofence(
        &app,
        &account,
        json!({ "name": "Customer", "circle": { "lat": 52.3, "lon": 13.05, "radius_m": 750.5 } }),
    )
    .await;
    assert_eq!(circle.status, StatusCode::CREATED, "{}", circle.body);
    let circle_id = circle.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        circle.body["circle"],
        json!({ "lat": 52.3, "lon": 13.05, "radius_m": 750.5 })
    );
    assert!(circle.body.get("geometry").is_none(), "{}", circle.body);

    let list = app.get("/api/v1/geofences", &account.token).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["next_cursor"], Value::Null);
    let data = list.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(
        data[0], polygon.body,
        "listed in creation order, as created"
    );
    assert_eq!(data[1], circle.body);
    let shown = app
        .get(&format!("/api/v1/geofences/{circle_id}"), &account.token)
        .await;
    assert_eq!(shown.body, circle.body);

    let renamed = patch(&app, &account, &polygon_id, json!({ "name": "Main depot" })).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "Main depot");
    assert_eq!(renamed.body["geometry"], zone, "the shape stays");
    assert_eq!(renamed.body["created_at"], p["created_at"]);

    // A polygon may become a circle, and back.
    let reshaped = patch(
        &app,
        &account,
        &polygon_id,
        json!({ "circle": { "lat": 1.5, "lon": -2.5, "radius_m": 100 } }),
    )
    .await;
    assert_eq!(reshaped.status, StatusCode::OK, "{}", reshaped.body);
    assert_eq!(reshaped.body["name"], "Main depot", "the name stays");
    assert_eq!(
        reshaped.body["circle"],
        json!({ "lat": 1.5, "lon": -2.5, "radius_m": 100.0 })
    );
    assert!(reshaped.body.get("geometry").is_none());
    let back = patch(&app, &account, &polygon_id, json!({ "geometry": zone })).await;
    assert_eq!(back.body["geometry"], zone);
    assert!(back.body.get("circle").is_none());

    let gone = delete(&app, &account, &polygon_id).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let missing = app
        .get(&format!("/api/v1/geofences/{polygon_id}"), &account.token)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    assert_eq!(
        delete(&app, &account, &polygon_id).await.status,
        StatusCode::NOT_FOUND
    );
    let list = app.get("/api/v1/geofences", &account.token).await;
    assert_eq!(list.body["data"].as_array().expect("data").len(), 1);
}

async fn geofence_input_is_checked_field_by_field(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let zone = square(13.0, 52.0, 13.1, 52.1);
    let circle = json!({ "lat": 52.3, "lon": 13.05, "radius_m": 500 });
    let open_ring = json!({
        "type": "Polygon",
        "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1]]]
    });
    let bow_tie = json!({
        "type": "Polygon",
        "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]
    });
    let cases = [
        (json!({ "geometry": zone }), "name"),
        (json!({ "name": "", "geometry": zone }), "name"),
        (json!({ "name": 5, "geometry": zone }), "name"),
        (
            json!({ "name": "Both", "geometry": zone, "circle": circle }),
            "geometry",
        ),
        (json!({ "name": "Neither" }), "geometry"),
        (json!({ "name": "Open", "geometry": open_ring }), "geometry"),
        (
            json!({ "name": "Bow tie", "geometry": bow_tie }),
            "geometry",
        ),
        (
            json!({ "name": "Point", "geometry": { "type": "Point", "coordinates": [13.0, 52.0] } }),
            "geometry",
        ),
        (
            json!({ "name": "Swapped", "geometry": square(52.0, 13.0, 52.1, 200.0) }),
            "geometry",
        ),
        (
            json!({ "name": "Flat", "circle": { "lat": 52.3, "lon": 13.05, "radius_m": 0 } }),
            "circle.radius_m",
        ),
        (
            json!({ "name": "Far", "circle": { "lat": 95, "lon": 13.05, "radius_m": 10 } }),
            "circle.lat",
        ),
        (
            json!({ "name": "Half", "circle": { "lat": 52.3, "radius_m": 10 } }),
            "circle.lon",
        ),
        (
            json!({ "name": "Text", "circle": "52.3,13.05,10" }),
            "circle",
        ),
    ];
    for (body, field) in cases {
        let answer = create_geofence(&app, &account, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "invalid_field", "{body}");
        assert_eq!(
            answer.body["error"]["field"], field,
            "{body}: {}",
            answer.body
        );
    }
    let unknown = create_geofence(
        &app,
        &account,
        json!({ "name": "Extra", "geometry": zone, "colour": "red" }),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "{}",
        unknown.body
    );
    let malformed = app
        .client
        .post(format!("{}/api/v1/geofences", app.url))
        .bearer_auth(&account.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("sent");
    let malformed = TestApp::answer(malformed).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "malformed_json");

    // Updates are checked the same way, and a refused one changes nothing.
    let created =
        create_geofence(&app, &account, json!({ "name": "Zone", "geometry": zone })).await;
    let id = created.body["id"].as_str().expect("id").to_string();
    for (body, field) in [
        (json!({ "geometry": zone, "circle": circle }), "geometry"),
        (json!({ "name": null }), "name"),
        (json!({ "name": "  " }), "name"),
        (json!({ "geometry": open_ring }), "geometry"),
    ] {
        let answer = patch(&app, &account, &id, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            answer.body["error"]["field"], field,
            "{body}: {}",
            answer.body
        );
    }
    let unchanged = app
        .get(&format!("/api/v1/geofences/{id}"), &account.token)
        .await;
    assert_eq!(unchanged.body, created.body);
    for bad_id in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let answer = app
            .get(&format!("/api/v1/geofences/{bad_id}"), &account.token)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{bad_id}");
    }
}

async fn geofences_are_isolated_between_tenants(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("hobby", "DE").await;
    let created = create_geofence(
        &app,
        &a,
        json!({ "name": "A's yard", "geometry": square(13.0, 52.0, 13.1, 52.1) }),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();

    let listed = app.get("/api/v1/geofences", &b.token).await;
    assert_eq!(listed.body["data"], json!([]));
    let read = app
        .get(&format!("/api/v1/geofences/{id}"), &b.api_key)
        .await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let changed = patch(&app, &b, &id, json!({ "name": "Mine now" })).await;
    assert_eq!(changed.status, StatusCode::NOT_FOUND);
    let deleted = delete(&app, &b, &id).await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);

    let intact = app.get(&format!("/api/v1/geofences/{id}"), &a.token).await;
    assert_eq!(intact.body, created.body);
    let unauthenticated = app
        .request(Method::GET, "/api/v1/geofences", None, None)
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}
