//! The contract-test helper itself: requests through a [`Tee`] reach the
//! fake (whose answer the client gets) and Prism, whose verdicts land in
//! `violations` / `undescribed`. Skipped with a note when Prism is not
//! installed (`npm ci` at the repo root), failed under `CI=true`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;
use webhost_provider_http::testing::{provider_spec, Prism, Tee};
use webhost_provider_http::{Auth, Body, Method, ProviderClient, RetryPolicy};

/// What the fake received: path and query, `Authorization`, body.
type Received = Arc<Mutex<Vec<(String, Option<String>, String)>>>;

/// A fake that answers everything with `201 {"from": "fake"}`.
async fn fake() -> (String, Received) {
    let received = Received::default();
    let router = axum::Router::new()
        .fallback(
            |State(received): State<Received>, uri: Uri, headers: HeaderMap, body: String| async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                received.lock().unwrap().push((uri.to_string(), auth, body));
                (
                    StatusCode::CREATED,
                    [("x-fake", "yes")],
                    axum::Json(json!({ "from": "fake" })),
                )
                    .into_response()
            },
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

fn client(base: String) -> ProviderClient {
    ProviderClient::new(
        "Hetzner Cloud",
        base,
        Auth::Bearer("token".into()),
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn the_tee_returns_the_fakes_answer_and_records_prisms_verdicts() {
    let Some(prism) = Prism::start(&provider_spec("hetzner-cloud.openapi.json")).await else {
        return;
    };
    let (upstream, received) = fake().await;
    let tee = Tee::start(&upstream, &prism, "/v1").await;
    let api = client(format!("{}/v1", tee.url()));

    // Valid: the description's required fields, the bearer token.
    let valid = json!({ "name": "cell-1", "server_type": "cx42", "image": "debian-12" });
    let answer = api
        .send(Method::POST, "/servers", Body::Json(&valid))
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 201);
    assert_eq!(answer.headers["x-fake"], "yes", "the fake's answer");
    assert_eq!(answer.json::<serde_json::Value>().unwrap()["from"], "fake");
    {
        let received = received.lock().unwrap();
        let (path, auth, body) = &received[0];
        assert_eq!(path, "/v1/servers", "the fake gets the path as sent");
        assert_eq!(auth.as_deref(), Some("Bearer token"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            valid
        );
    }
    let answer = api
        .send(
            Method::GET,
            "/servers?label_selector=webhost-cell%3D%3Dabc",
            Body::Empty,
        )
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 201, "still the fake's answer");
    assert_eq!(tee.violations(), Vec::<String>::new());
    assert_eq!(tee.undescribed(), Vec::<String>::new());

    // Invalid: `name` is required. The client still gets the fake's answer;
    // the violation is recorded with Prism's reason.
    let nameless = json!({ "server_type": "cx42", "image": "debian-12" });
    let answer = api
        .send(Method::POST, "/servers", Body::Json(&nameless))
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 201);
    let violations = tee.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].starts_with("POST /v1/servers: 422")
            && violations[0].contains("required property 'name'"),
        "{violations:?}"
    );

    // A wrong query parameter type is a violation too.
    api.send(Method::GET, "/servers?per_page=many", Body::Empty)
        .await
        .unwrap();
    let violations = tee.violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[1].contains("per_page"), "{violations:?}");

    // Undescribed: a path and a method the description lacks.
    api.send(Method::POST, "/servers/7/frobnicate", Body::Empty)
        .await
        .unwrap();
    api.send(Method::PATCH, "/servers", Body::Empty)
        .await
        .unwrap();
    assert_eq!(
        tee.undescribed(),
        ["POST /servers/7/frobnicate", "PATCH /servers"]
    );
    assert_eq!(tee.violations().len(), 2, "undescribed is not a violation");
    assert_eq!(tee.seen().len(), 6);
}

#[tokio::test]
async fn a_missing_token_is_a_violation_and_prefer_cannot_mask_one() {
    let Some(prism) = Prism::start(&provider_spec("hetzner-cloud.openapi.json")).await else {
        return;
    };
    let (upstream, _) = fake().await;
    let tee = Tee::start(&upstream, &prism, "/v1").await;
    let http = reqwest::Client::new();

    // No Authorization: the description asks for a bearer token.
    http.get(format!("{}/v1/servers", tee.url()))
        .send()
        .await
        .unwrap();
    let violations = tee.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("401"), "{violations:?}");

    // `Prefer: code=201` would make Prism answer 201 whatever it thinks;
    // the tee drops it, so the nameless body is still caught.
    http.post(format!("{}/v1/servers", tee.url()))
        .bearer_auth("token")
        .header("prefer", "code=201")
        .json(&json!({ "server_type": "cx42", "image": "debian-12" }))
        .send()
        .await
        .unwrap();
    let violations = tee.violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[1].contains("'name'"), "{violations:?}");
}

#[tokio::test]
async fn fly_paths_are_checked_without_the_v1_base() {
    let Some(prism) = Prism::start(&provider_spec("fly-machines.openapi.yaml")).await else {
        return;
    };
    let (upstream, received) = fake().await;
    let tee = Tee::start(&upstream, &prism, "/v1").await;
    let api = client(format!("{}/v1", tee.url()));

    api.send(Method::GET, "/apps/webhost-cell-1", Body::Empty)
        .await
        .unwrap();
    let secrets = json!({ "values": { "KEY": "value" } });
    api.send(
        Method::POST,
        "/apps/webhost-cell-1/secrets",
        Body::Json(&secrets),
    )
    .await
    .unwrap();

    assert_eq!(tee.violations(), Vec::<String>::new());
    assert_eq!(tee.undescribed(), ["POST /apps/webhost-cell-1/secrets"]);
    assert_eq!(
        received.lock().unwrap()[1].0,
        "/v1/apps/webhost-cell-1/secrets",
        "the fake still gets /v1"
    );
}
