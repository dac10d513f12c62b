//! Signup, placement, login, API keys.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;
use crate::stories;

stories!(
    signup_places_tenants_by_plan_and_country,
    tour_signup_token_create_and_list_vehicles,
    login_issues_a_token_and_rejects_wrong_passwords,
    failed_logins_are_rate_limited,
    api_keys_are_shown_once_work_and_can_be_revoked,
    data_residency_region_is_honoured_or_refused,
);

async fn signup_places_tenants_by_plan_and_country(app: TestApp) {
    let hobby = app.signup("hobby", "DE").await;
    assert_eq!(hobby.body["tenant"]["pool"], "hetzner");
    assert_eq!(hobby.body["tenant"]["region"], "fsn1");
    assert_eq!(hobby.body["tenant"]["cell"], "hetzner-fsn1-1");
    assert_eq!(hobby.body["tenant"]["status"], "active");
    assert!(hobby.api_key.starts_with("whk_"));
    assert!(hobby.body["user"].get("password_hash").is_none());

    let sub = app.get("/api/v1/subscription", &hobby.token).await;
    assert_eq!(sub.status, StatusCode::OK, "{}", sub.body);
    assert_eq!(sub.body["plan"], "hobby");
    assert_eq!(sub.body["limits"]["vehicles"], 5);
    assert_eq!(sub.body["limits"]["history_days"], 30);
    assert_eq!(sub.body["placement"]["pool"], "hetzner");
    assert_eq!(sub.body["placement"]["region"], "fsn1");
    assert_eq!(sub.body["placement"]["cell"], "hetzner-fsn1-1");

    let starter = app.signup("starter", "US").await;
    let sub = app.get("/api/v1/subscription", &starter.api_key).await;
    assert_eq!(sub.status, StatusCode::OK, "{}", sub.body);
    assert_eq!(sub.body["placement"]["pool"], "fly");
    assert_eq!(sub.body["placement"]["region"], "iad");
    assert_eq!(sub.body["placement"]["cell"], "fly-iad-1");
    assert_eq!(sub.body["limits"]["vehicles"], 25);

    // A region with no cell yet gets one from the provider, in the
    // background: the signup answers 202 and the tenant turns active.
    let eu = app.signup("professional", "FR").await;
    assert_eq!(eu.body["tenant"]["status"], "provisioning");
    assert_eq!(eu.body["tenant"]["region"], "fra");
    assert_eq!(eu.body["tenant"]["regions"], json!(["fra"]));
    let sub = app.get("/api/v1/subscription", &eu.token).await;
    assert_eq!(sub.body["placement"]["cell"], "fly-fra-1");
    assert_eq!(
        app.create_vehicle(&eu, "Truck", None).await.status,
        StatusCode::CREATED
    );
}

async fn tour_signup_token_create_and_list_vehicles(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let created = app
        .create_vehicle(&account, "Van 1", Some("868683020000001"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], "Van 1");
    assert_eq!(created.body["device_id"], "868683020000001");

    // The same through the API key.
    let list = app.get("/api/v1/vehicles", &account.api_key).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let data = list.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], created.body["id"]);
    assert_eq!(list.body["next_cursor"], json!(null));
}

async fn login_issues_a_token_and_rejects_wrong_passwords(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let email = account.body["user"]["email"]
        .as_str()
        .expect("email")
        .to_string();

    let ok = app
        .post(
            "/api/v1/login",
            None,
            json!({ "email": email.to_uppercase(), "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let token = ok.body["token"].as_str().expect("token");
    assert_eq!(
        app.get("/api/v1/vehicles", token).await.status,
        StatusCode::OK
    );

    let wrong = app
        .post(
            "/api/v1/login",
            None,
            json!({ "email": email, "password": "wrong horse battery" }),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_code(), "unauthorized");
    let unknown = app
        .post(
            "/api/v1/login",
            None,
            json!({ "email": "nobody@example.com", "password": "whatever it is" }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.body["error"]["message"], wrong.body["error"]["message"],
        "no account enumeration"
    );
}

async fn failed_logins_are_rate_limited(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let email = account.body["user"]["email"]
        .as_str()
        .expect("email")
        .to_string();
    let attempt = |password: &'static str| {
        let email = email.clone();
        let app = &app;
        async move {
            app.post(
                "/api/v1/login",
                None,
                json!({ "email": email, "password": password }),
            )
            .await
        }
    };
    for _ in 0..5 {
        assert_eq!(
            attempt("wrong horse battery").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = attempt("wrong horse battery").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error_code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    // Even the right password waits: the limit is on attempts, not guesses.
    assert_eq!(
        attempt("correct horse battery").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Other accounts are unaffected.
    let other = app.signup("hobby", "DE").await;
    let ok = app
        .post(
            "/api/v1/login",
            None,
            json!({ "email": other.body["user"]["email"], "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

async fn api_keys_are_shown_once_work_and_can_be_revoked(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    // The name may be left out, body and all.
    let unnamed = app
        .request(Method::POST, "/api/v1/api-keys", Some(&account.token), None)
        .await;
    assert_eq!(unnamed.status, StatusCode::CREATED, "{}", unnamed.body);
    assert_eq!(unnamed.body["name"], "api key");
    // The account's operations are described like the fleet's.
    let openapi = app
        .request(Method::GET, "/api/openapi.json", None, None)
        .await;
    for (path, method, id) in [
        ("/api/v1/signup", "post", "signup"),
        ("/api/v1/login", "post", "login"),
        ("/api/v1/api-keys", "get", "apiKeys"),
        ("/api/v1/api-keys", "post", "createApiKey"),
        ("/api/v1/api-keys/{id}", "delete", "revokeApiKey"),
        ("/api/v1/subscription", "get", "subscription"),
    ] {
        assert_eq!(
            openapi.body["paths"][path][method]["operationId"], id,
            "{path}"
        );
    }
    assert!(openapi.body["paths"]["/api/v1/signup"]["post"]["responses"]["202"].is_object());
    let created = app
        .post(
            "/api/v1/api-keys",
            Some(&account.token),
            json!({ "name": "ci" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    assert!(secret.starts_with("whk_"));
    assert!(secret.starts_with(created.body["prefix"].as_str().expect("prefix")));
    assert_eq!(
        app.get("/api/v1/vehicles", &secret).await.status,
        StatusCode::OK
    );

    let list = app.get("/api/v1/api-keys", &account.token).await;
    assert_eq!(list.status, StatusCode::OK);
    let keys = list.body["data"].as_array().expect("data");
    assert_eq!(keys.len(), 3, "default, unnamed, ci");
    assert!(
        !list.body.to_string().contains(&secret),
        "secrets are never listed"
    );
    assert!(keys.iter().all(|k| k.get("hash").is_none()));

    let id = created.body["id"].as_str().expect("id");
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = app.get("/api/v1/vehicles", &secret).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_code(), "unauthorized");
    let again = app
        .request(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // The other key still works.
    assert_eq!(
        app.get("/api/v1/vehicles", &account.api_key).await.status,
        StatusCode::OK
    );
}

async fn data_residency_region_is_honoured_or_refused(app: TestApp) {
    let body = |plan: &str, region: &str| {
        json!({
            "company": "Acme", "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            "password": "correct horse battery", "plan": plan, "country": "US", "region": region,
        })
    };
    let fra = app.signup_with(body("starter", "fra")).await;
    assert_eq!(
        fra.status,
        StatusCode::ACCEPTED,
        "no fra cell yet: {}",
        fra.body
    );
    assert_eq!(fra.body["tenant"]["region"], "fra");

    let refused = app.signup_with(body("hobby", "iad")).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.error_code(), "region_not_offered");
    assert!(refused.body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("fsn1"));
}
