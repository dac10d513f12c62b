//! Bad input answers 4xx with the SPEC error JSON and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{device, TestApp};
use crate::stories;

stories!(
    malformed_and_mistyped_bodies_are_refused,
    bodies_over_the_limit_answer_413,
    signup_input_is_checked_field_by_field,
    duplicate_email_is_a_conflict,
    duplicate_device_id_is_refused_across_tenants_and_cells,
    one_vehicle_more_than_the_plan_allows_is_refused,
);

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: &'static str,
) -> crate::helpers::Answer {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    TestApp::answer(request.send().await.expect("sent")).await
}

async fn malformed_and_mistyped_bodies_are_refused(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let token = Some(account.token.as_str());
    let cases: [(&str, &'static str, StatusCode, &str); 6] = [
        (
            "/api/v1/vehicles",
            "{\"name\": ",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/api/v1/vehicles",
            "[1, 2]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/v1/vehicles",
            "{\"name\": 42}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/v1/vehicles",
            "{\"name\": \"a\", \"colour\": \"red\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/v1/vehicles",
            "{\"name\": \"  \"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "/api/v1/vehicles",
            "{\"name\": \"a\", \"attributes\": [1]}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (path, body, status, code) in cases {
        let answer = raw(&app, Method::POST, path, token, body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.error_code(), code, "{body}");
    }
    let typed = raw(
        &app,
        Method::POST,
        "/api/v1/vehicles",
        token,
        "{\"name\": 42}",
    )
    .await;
    assert!(
        typed.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("name"),
        "{}",
        typed.body
    );

    let bad_device = app
        .create_vehicle(&account, "Van", Some("has spaces in it"))
        .await;
    assert_eq!(bad_device.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_device.body["error"]["field"], "device_id");

    let no_type = app
        .client
        .post(format!("{}/api/v1/vehicles", app.url))
        .bearer_auth(&account.token)
        .body("{\"name\": \"Van\"}")
        .send()
        .await
        .expect("sent");
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let signup = raw(
        &app,
        Method::POST,
        "/api/v1/signup",
        None,
        "{\"company\": \"A\"",
    )
    .await;
    assert_eq!(signup.status, StatusCode::BAD_REQUEST);
    let login = raw(
        &app,
        Method::POST,
        "/api/v1/login",
        None,
        "{\"email\": 1, \"password\": 2}",
    )
    .await;
    assert_eq!(login.status, StatusCode::UNPROCESSABLE_ENTITY);

    let bad_limit = app.get("/api/v1/vehicles?limit=0", &account.token).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    let bad_cursor = app
        .get("/api/v1/vehicles?cursor=nope", &account.token)
        .await;
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);
    let bad_type = app.get("/api/v1/vehicles?limit=many", &account.token).await;
    assert_eq!(bad_type.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_type.error_code(), "invalid_query");

    let wrong_method = app
        .request(
            Method::PUT,
            "/api/v1/vehicles",
            Some(&account.token),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "method_not_allowed");
    let health_post = app.request(Method::POST, "/api/health", None, None).await;
    assert_eq!(health_post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(health_post.error_code(), "method_not_allowed");

    assert_eq!(app.vehicle_count(&account).await, 0, "nothing was written");
}

async fn bodies_over_the_limit_answer_413(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(9 * 1024 * 1024));
    for path in ["/api/v1/vehicles", "/api/v1/signup"] {
        let response = app
            .client
            .post(format!("{}{path}", app.url))
            .bearer_auth(&account.token)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .expect("sent");
        let answer = TestApp::answer(response).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(answer.error_code(), "payload_too_large");
    }
    assert_eq!(app.vehicle_count(&account).await, 0);
}

async fn signup_input_is_checked_field_by_field(app: TestApp) {
    let good = json!({
        "company": "Acme", "email": "ops@acme.example", "password": "correct horse battery",
        "plan": "hobby", "country": "DE",
    });
    let cases = [
        ("plan", json!("platinum"), "unknown_plan"),
        ("country", json!("XX"), "invalid_field"),
        ("country", json!("Germany"), "invalid_field"),
        ("email", json!("not-an-email"), "invalid_field"),
        ("password", json!("short"), "invalid_field"),
        ("company", json!(""), "invalid_field"),
        ("region", json!("mars"), "region_not_offered"),
    ];
    for (field, value, code) in cases {
        let mut body = good.clone();
        body[field] = value.clone();
        let answer = app.signup_with(body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), code, "{field}={value}");
        assert_eq!(answer.body["error"]["field"], field, "{field}={value}");
    }
    let unknown_plan = {
        let mut body = good.clone();
        body["plan"] = json!("platinum");
        app.signup_with(body).await
    };
    assert!(unknown_plan.body["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("hobby"));
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("plan");
    assert_eq!(
        app.signup_with(missing).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // None of it created an account: the good body still signs up.
    assert_eq!(app.signup_with(good).await.status, StatusCode::CREATED);
}

async fn duplicate_email_is_a_conflict(app: TestApp) {
    let first = app.signup("hobby", "DE").await;
    let email = first.body["user"]["email"]
        .as_str()
        .expect("email")
        .to_uppercase();
    let answer = app
        .signup_with(json!({
            "company": "Copycat", "email": email, "password": "another good password",
            "plan": "starter", "country": "US",
        }))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.error_code(), "email_taken");
    // The first account is intact and no second tenant exists.
    let tenants = app.app.store.tenants().await.expect("tenants");
    assert_eq!(tenants.len(), 1);
    assert_eq!(
        app.get("/api/v1/vehicles", &first.token).await.status,
        StatusCode::OK
    );
}

async fn duplicate_device_id_is_refused_across_tenants_and_cells(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("hobby", "DE").await;
    let c = app.signup("starter", "US").await;
    let imei = device();
    assert_eq!(
        app.create_vehicle(&a, "A", Some(&imei)).await.status,
        StatusCode::CREATED
    );

    for (who, account) in [("same tenant", &a), ("same cell", &b), ("other cell", &c)] {
        let answer = app.create_vehicle(account, "Dup", Some(&imei)).await;
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{who}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "device_id_taken");
    }
    // PATCHing a device onto a vehicle is checked the same way.
    let other = app.create_vehicle(&c, "C", None).await;
    let id = other.body["id"].as_str().expect("id");
    let patched = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{id}"),
            Some(&c.token),
            Some(json!({ "device_id": imei })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::CONFLICT);
    assert_eq!(app.vehicle_count(&a).await, 1);
    assert_eq!(app.vehicle_count(&b).await, 0);
    assert_eq!(app.vehicle_count(&c).await, 1);

    // A's failed duplicate did not release A's own registration.
    let after = app.create_vehicle(&b, "Still taken", Some(&imei)).await;
    assert_eq!(after.status, StatusCode::CONFLICT);
}

async fn one_vehicle_more_than_the_plan_allows_is_refused(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    for i in 0..5 {
        let answer = app
            .create_vehicle(&account, &format!("Van {i}"), Some(&device()))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let imei = device();
    let sixth = app.create_vehicle(&account, "Van 6", Some(&imei)).await;
    assert_eq!(sixth.status, StatusCode::PAYMENT_REQUIRED, "{}", sixth.body);
    assert_eq!(sixth.error_code(), "vehicle_limit_reached");
    assert!(sixth.body["error"]["message"]
        .as_str()
        .expect("msg")
        .contains('5'));
    assert_eq!(app.vehicle_count(&account).await, 5);
    // The refused vehicle's device was never registered: another tenant can use it.
    let other = app.signup("hobby", "DE").await;
    assert_eq!(
        app.create_vehicle(&other, "Van", Some(&imei)).await.status,
        StatusCode::CREATED
    );
}
