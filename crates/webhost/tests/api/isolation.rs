//! Isolation on every route: bad credentials answer 401, another tenant's
//! ids answer 404, and cells refuse anything that did not come through the
//! edge or the control plane.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost_domain::{TenantId, UserId};
use webhost_http::auth::{InternalKeys, Subject, UserTokens, INTERNAL_HEADER};

use crate::helpers::{Account, TestApp};
use crate::stories;

stories!(
    bad_credentials_are_refused_on_every_route,
    another_tenants_ids_answer_not_found,
    cells_refuse_requests_that_did_not_come_through_the_edge,
);

/// Every tenant route, with a body where it takes one. `{vehicle}`,
/// `{key}` and `{fence}` are filled in with ids that exist.
fn routes(vehicle: &str, key: &str, fence: &str) -> Vec<(Method, String, Option<Value>)> {
    let circle = json!({ "name": "z", "circle": { "lat": 1.0, "lon": 1.0, "radius_m": 100.0 } });
    vec![
        (
            Method::POST,
            "/api/v1/positions".into(),
            Some(json!([{ "vehicle_id": vehicle, "lat": 1.0, "lon": 1.0 }])),
        ),
        (Method::GET, "/api/v1/positions/latest".into(), None),
        (
            Method::GET,
            format!("/api/v1/vehicles/{vehicle}/positions"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/vehicles/{vehicle}/trips"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/vehicles/{vehicle}/stops"),
            None,
        ),
        (Method::GET, "/api/v1/geofences".into(), None),
        (
            Method::POST,
            "/api/v1/geofences".into(),
            Some(circle.clone()),
        ),
        (Method::GET, format!("/api/v1/geofences/{fence}"), None),
        (
            Method::PATCH,
            format!("/api/v1/geofences/{fence}"),
            Some(json!({ "name": "renamed" })),
        ),
        (Method::DELETE, format!("/api/v1/geofences/{fence}"), None),
        (Method::GET, "/api/v1/events".into(), None),
        (Method::GET, "/api/v1/vehicles".into(), None),
        (
            Method::POST,
            "/api/v1/vehicles".into(),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, format!("/api/v1/vehicles/{vehicle}"), None),
        (
            Method::PATCH,
            format!("/api/v1/vehicles/{vehicle}"),
            Some(json!({ "name": "y" })),
        ),
        (Method::DELETE, format!("/api/v1/vehicles/{vehicle}"), None),
        (Method::GET, "/api/v1/api-keys".into(), None),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(json!({ "name": "k" })),
        ),
        (Method::DELETE, format!("/api/v1/api-keys/{key}"), None),
        (Method::GET, "/api/v1/subscription".into(), None),
    ]
}

async fn geofence(app: &TestApp, account: &Account) -> String {
    let created = app
        .post(
            "/api/v1/geofences",
            Some(&account.token),
            json!({ "name": "Depot", "circle": { "lat": 52.5, "lon": 13.4, "radius_m": 200.0 } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn bad_credentials_are_refused_on_every_route(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let vehicle = app.create_vehicle(&account, "Van", None).await.body["id"]
        .as_str()
        .expect("id")
        .to_string();
    let revoked = app
        .post(
            "/api/v1/api-keys",
            Some(&account.token),
            json!({ "name": "old" }),
        )
        .await;
    let revoked_secret = revoked.body["secret"].as_str().expect("secret").to_string();
    let revoked_id = revoked.body["id"].as_str().expect("id");
    let gone = app
        .request(
            Method::DELETE,
            &format!("/api/v1/api-keys/{revoked_id}"),
            Some(&account.token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);

    let user: UserId = account.body["user"]["id"]
        .as_str()
        .expect("user")
        .parse()
        .expect("uuid");
    let tenant: TenantId = account.tenant_id.parse().expect("uuid");
    let secret = app
        .settings
        .token_signing_secret()
        .expect("secret")
        .as_bytes()
        .to_vec();
    let expired = UserTokens::new(&secret, -3600)
        .issue(user, tenant)
        .expect("token");
    let forged = UserTokens::new(b"not-the-real-secret-not-the-real-secret", 3600)
        .issue(user, tenant)
        .expect("token");
    let real = UserTokens::new(&secret, 3600)
        .issue(user, tenant)
        .expect("token");
    let claims = real.split('.').nth(1).expect("claims").to_string();
    let alg_none = format!("{}.{claims}.", b64(&json!({ "alg": "none", "typ": "JWT" })));
    let tampered = {
        let mut payload: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&claims)
                .expect("b64"),
        )
        .expect("json");
        payload["tid"] = json!(TenantId::new());
        let mut parts: Vec<String> = real.split('.').map(String::from).collect();
        parts[1] = b64(&payload);
        parts.join(".")
    };

    let bad: [(&str, Option<&str>); 8] = [
        ("no credential", None),
        ("expired JWT", Some(&expired)),
        ("forged JWT", Some(&forged)),
        ("alg none JWT", Some(&alg_none)),
        ("tampered JWT", Some(&tampered)),
        ("revoked API key", Some(&revoked_secret)),
        (
            "unknown API key",
            Some("whk_000000000000000000000000000000000000000000000000"),
        ),
        ("garbage", Some("not-a-token")),
    ];
    let fence = geofence(&app, &account).await;
    let before = app.vehicle_count(&account).await;
    for (method, path, body) in routes(&vehicle, &account.api_key_id, &fence) {
        for (what, bearer) in &bad {
            let answer = app
                .request(method.clone(), &path, *bearer, body.clone())
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what} on {method} {path}: {}",
                answer.body
            );
            assert_eq!(answer.error_code(), "unauthorized");
        }
    }
    assert_eq!(
        app.vehicle_count(&account).await,
        before,
        "nothing was written"
    );
    assert_eq!(
        app.get("/api/v1/vehicles", &account.api_key).await.status,
        StatusCode::OK
    );
}

async fn another_tenants_ids_answer_not_found(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    // B on the same cell as A, and C on another cell.
    let b = app.signup("hobby", "DE").await;
    let c = app.signup("starter", "US").await;
    let vehicle = app
        .create_vehicle(&a, "A's van", Some(&crate::helpers::device()))
        .await;
    let vehicle_id = vehicle.body["id"].as_str().expect("id").to_string();

    let fence = geofence(&app, &a).await;
    for other in [&b, &c] {
        for (method, path, body) in routes(&vehicle_id, &a.api_key_id, &fence) {
            let foreign =
                path.contains(&vehicle_id) || path.contains(&a.api_key_id) || path.contains(&fence);
            if !foreign {
                continue;
            }
            let answer = app
                .request(method.clone(), &path, Some(&other.token), body)
                .await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                answer.body
            );
            assert_eq!(answer.error_code(), "not_found");
        }
        let list = app.get("/api/v1/vehicles", &other.token).await;
        assert_eq!(list.body["data"], json!([]));
        let keys = app.get("/api/v1/api-keys", &other.token).await;
        assert!(!keys.body.to_string().contains(&a.api_key_id));
    }
    // A's data is untouched.
    let mine = app
        .get(&format!("/api/v1/vehicles/{vehicle_id}"), &a.token)
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["name"], "A's van");
    assert_eq!(
        app.get("/api/v1/vehicles", &a.api_key).await.status,
        StatusCode::OK
    );
    // Ids that are not ids are simply not found.
    let junk = app.get("/api/v1/vehicles/not-a-uuid", &a.token).await;
    assert_eq!(junk.status, StatusCode::NOT_FOUND);
}

async fn cells_refuse_requests_that_did_not_come_through_the_edge(app: TestApp) {
    let account: Account = app.signup("hobby", "DE").await;
    let tenant: TenantId = account.tenant_id.parse().expect("uuid");
    let cell = app
        .app
        .cells
        .iter()
        .find(|c| c.name == "hetzner-fsn1-1")
        .expect("cell")
        .clone();
    let other_cell = app
        .app
        .cells
        .iter()
        .find(|c| c.name == "fly-iad-1")
        .expect("cell")
        .clone();
    let keys = InternalKeys::derive(app.settings.secret_key_base().expect("secret").as_bytes());
    let wrong_keys = InternalKeys::derive(b"some other secret key base entirely");
    let audience = webhost_contract::cell_audience(cell.id);
    let mint = |keys: &InternalKeys, audience: &str, method: &Method, path: &str| {
        keys.mint(
            "edge",
            audience,
            method,
            path,
            Some(tenant),
            Some(Subject::User(UserId::new())),
        )
        .expect("mint")
    };
    let path = "/api/v1/vehicles";
    let url = format!("{}{path}", cell.url);
    let send = |headers: Vec<(String, String)>| {
        let mut request = app.client.get(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { TestApp::answer(request.send().await.expect("sent")).await }
    };

    let attempts: Vec<(&str, Vec<(String, String)>)> = vec![
        ("nothing", vec![]),
        (
            "a bare tenant id",
            vec![("x-webhost-tenant".into(), tenant.to_string())],
        ),
        (
            "the user's JWT",
            vec![("authorization".into(), format!("Bearer {}", account.token))],
        ),
        (
            "the user's API key",
            vec![(
                "authorization".into(),
                format!("Bearer {}", account.api_key),
            )],
        ),
        (
            "a credential for another cell",
            vec![(
                INTERNAL_HEADER.to_string(),
                mint(
                    &keys,
                    &webhost_contract::cell_audience(other_cell.id),
                    &Method::GET,
                    path,
                ),
            )],
        ),
        (
            "a credential for another method",
            vec![(
                INTERNAL_HEADER.to_string(),
                mint(&keys, &audience, &Method::DELETE, path),
            )],
        ),
        (
            "a credential for another path",
            vec![(
                INTERNAL_HEADER.to_string(),
                mint(&keys, &audience, &Method::GET, "/api/v1/other"),
            )],
        ),
        (
            "a credential signed with another key",
            vec![(
                INTERNAL_HEADER.to_string(),
                mint(&wrong_keys, &audience, &Method::GET, path),
            )],
        ),
    ];
    for (what, headers) in attempts {
        let answer = send(headers).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "cell accepted {what}: {}",
            answer.body
        );
    }
    // The same request with a proper credential goes through: the refusals
    // above are about the credential, not a broken route.
    let ok = send(vec![(
        INTERNAL_HEADER.to_string(),
        mint(&keys, &audience, &Method::GET, path),
    )])
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // The cell's internal API is for the control plane only.
    let internal = format!("/internal/v1/tenants/{tenant}");
    let edge_minted = keys
        .mint(
            "edge",
            &audience,
            &Method::DELETE,
            &internal,
            Some(tenant),
            None,
        )
        .expect("mint");
    let refused = app
        .client
        .delete(format!("{}{internal}", cell.url))
        .header(INTERNAL_HEADER, edge_minted)
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The edge never exposes internal routes.
    let hidden = app.get(&internal, &account.token).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // And the control plane's tenant routes want a credential too.
    let control = app
        .client
        .get(format!("{}/api/v1/api-keys", app.app.control.url()))
        .header("x-webhost-tenant", tenant.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(control.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.vehicle_count(&account).await, 0);
}
