//! The vehicles resource through the edge.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{device, TestApp};
use crate::stories;

stories!(
    vehicle_crud_and_patch_semantics,
    deleting_a_vehicle_frees_its_device,
    vehicles_paginate_with_cursors
);

async fn vehicle_crud_and_patch_semantics(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let imei = device();
    let created = app
        .post(
            "/api/v1/vehicles",
            Some(&account.token),
            json!({ "name": " Truck 7 ", "device_id": imei, "plate": "B-WH 42", "group": "north",
                    "attributes": { "fuel": "diesel", "axles": 3 } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], "Truck 7", "names are trimmed");
    assert_eq!(created.body["attributes"]["axles"], 3);
    let id = created.body["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/vehicles/{id}");

    let patched = app
        .request(
            Method::PATCH,
            &path,
            Some(&account.token),
            Some(json!({ "plate": null, "group": "south" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["plate"], json!(null), "null clears");
    assert_eq!(patched.body["group"], "south");
    assert_eq!(patched.body["name"], "Truck 7", "absent leaves alone");
    assert_eq!(patched.body["device_id"], imei.as_str());

    let shown = app.get(&path, &account.api_key).await;
    assert_eq!(shown.body, patched.body);

    let deleted = app
        .request(Method::DELETE, &path, Some(&account.token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&path, &account.token).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.request(Method::DELETE, &path, Some(&account.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn deleting_a_vehicle_frees_its_device(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("starter", "US").await;
    let imei = device();
    let created = app.create_vehicle(&a, "A", Some(&imei)).await;
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        app.create_vehicle(&b, "B", Some(&imei)).await.status,
        StatusCode::CONFLICT
    );

    // Moving the device to another identifier frees the old one...
    let moved = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{id}"),
            Some(&a.token),
            Some(json!({ "device_id": device() })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let taken = app.create_vehicle(&b, "B", Some(&imei)).await;
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.body);

    // ...and deleting a vehicle frees its device.
    let b_id = taken.body["id"].as_str().expect("id");
    let gone = app
        .request(
            Method::DELETE,
            &format!("/api/v1/vehicles/{b_id}"),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.create_vehicle(&a, "A2", Some(&imei)).await.status,
        StatusCode::CREATED
    );
}

async fn vehicles_paginate_with_cursors(app: TestApp) {
    let account = app.signup("starter", "US").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app.create_vehicle(&account, &format!("V{i}"), None).await;
        ids.push(created.body["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/vehicles?limit=2&cursor={c}"),
            None => "/api/v1/vehicles?limit=2".into(),
        };
        let page = app.get(&path, &account.token).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for v in page.body["data"].as_array().expect("data") {
            seen.push(v["id"].as_str().expect("id").to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.into()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every vehicle once, in creation order");
}
