//! Health, headers, compression, settings, restart.

use reqwest::StatusCode;
use serde_json::json;
use webhost::{Application, Mode, Overrides, Settings};

use crate::helpers::TestApp;
use crate::stories;

stories!(
    health_reports_services_as_the_spec_says,
    every_response_carries_the_security_headers,
    responses_are_compressed_when_the_client_accepts_it,
);

/// `webhost health`, the container health check, exits 0 against a
/// healthy service and non-zero (saying why) when nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_checks_a_running_service() {
    let app = TestApp::sqlite().await;
    let health = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_webhost"))
                .args(["health", "--url", &url])
                .output()
                .expect("webhost health runs")
        })
        .await
        .expect("joined")
    };
    let ok = health(format!("{}/api/health", app.url)).await;
    assert!(ok.status.success(), "{ok:?}");
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let down = health(format!("http://{unused}/api/health")).await;
    assert!(!down.status.success(), "{down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("no answer"),
        "{down:?}"
    );
}

async fn health_reports_services_as_the_spec_says(app: TestApp) {
    let response = app
        .client
        .get(format!("{}/api/health", app.url))
        .send()
        .await
        .expect("sent");
    let answer = TestApp::answer(response).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "healthy");
    assert_eq!(answer.body["services"]["database"], "healthy");
    assert_eq!(answer.body["services"]["redis"], "disabled");
    assert!(answer.body["version"].is_string());
    assert!(answer.body["region"].is_string());
    let timestamp = answer.body["timestamp"].as_str().expect("timestamp");
    chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339 timestamp");
}

async fn every_response_carries_the_security_headers(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let paths = [
        ("/api/health", None),
        ("/api/v1/vehicles", Some(account.token.as_str())),
        ("/api/v1/vehicles", None),
        ("/api/v1/nope", Some(account.token.as_str())),
        ("/nowhere", None),
        ("/api/v1/subscription", Some(account.api_key.as_str())),
    ];
    for (path, bearer) in paths {
        let mut request = app.client.get(format!("{}{path}", app.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.expect("sent");
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        for name in [
            "strict-transport-security",
            "content-security-policy",
            "referrer-policy",
        ] {
            assert!(headers.contains_key(name), "{name} missing on {path}");
        }
        if !response.status().is_success() {
            let body: serde_json::Value = response.json().await.expect("JSON error body");
            assert!(body["error"]["code"].is_string(), "{path}: {body}");
        }
    }
}

async fn responses_are_compressed_when_the_client_accepts_it(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    for i in 0..5 {
        app.create_vehicle(
            &account,
            &format!("Vehicle with a fairly long name {i}"),
            None,
        )
        .await;
    }
    let gz = app
        .client
        .get(format!("{}/api/v1/vehicles", app.url))
        .bearer_auth(&account.token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let plain = app
        .client
        .get(format!("{}/api/v1/vehicles", app.url))
        .bearer_auth(&account.token)
        .send()
        .await
        .expect("sent");
    assert!(plain.headers().get("content-encoding").is_none());
    let body: serde_json::Value = plain.json().await.expect("json");
    assert_eq!(body["data"].as_array().expect("data").len(), 5);
}

#[tokio::test]
async fn redis_health_is_reported_when_configured() {
    let Some(redis) = std::env::var("WEBHOST_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must set WEBHOST_TEST_REDIS_URL"
        );
        eprintln!("WEBHOST_TEST_REDIS_URL not set; skipping the Redis variant");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = Settings::load(&Overrides {
        data_dir: Some(dir.path().into()),
        listen: Some("127.0.0.1:0".into()),
        osmand_listen: Some("127.0.0.1:0".into()),
        teltonika_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    })
    .expect("settings");
    settings.redis_url = Some(redis);
    let app = Application::build(&settings).await.expect("boots");
    let body: serde_json::Value = reqwest::get(format!("{}/api/health", app.url()))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(body["services"]["redis"], "healthy", "{body}");
    assert_eq!(body["status"], "healthy");
    app.stop().await;
}

#[tokio::test]
async fn unreachable_redis_fails_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = Settings::load(&Overrides {
        data_dir: Some(dir.path().into()),
        listen: Some("127.0.0.1:0".into()),
        osmand_listen: Some("127.0.0.1:0".into()),
        teltonika_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    })
    .expect("settings");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    settings.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let err = Application::build(&settings)
        .await
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("Redis"), "{err:#}");
}

#[test]
fn production_mode_names_the_missing_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let err = Settings::load(&Overrides {
        mode: Some(Mode::Production),
        data_dir: Some(dir.path().into()),
        ..Overrides::default()
    })
    .expect_err("production needs secrets");
    let message = format!("{err:#}");
    assert!(
        message.contains("must be set in production mode"),
        "{message}"
    );
    assert!(
        [
            "SECRET_KEY_BASE",
            "TOKEN_SIGNING_SECRET",
            "WEBHOST_ADMIN_TOKEN",
            "DATABASE_URL"
        ]
        .iter()
        .any(|name| message.contains(name)),
        "{message}"
    );
    assert!(
        !dir.path().join("secrets.toml").exists(),
        "production generates nothing"
    );
}

#[test]
fn embedded_mode_generates_secrets_once_and_keeps_them() {
    let dir = tempfile::tempdir().expect("dir");
    let load = || {
        Settings::load(&Overrides {
            data_dir: Some(dir.path().into()),
            ..Overrides::default()
        })
        .expect("settings")
    };
    let first = load();
    let second = load();
    assert_eq!(
        first.secret_key_base().expect("set"),
        second.secret_key_base().expect("set")
    );
    assert_eq!(
        first.token_signing_secret().expect("set"),
        second.token_signing_secret().expect("set")
    );
    assert_ne!(
        first.secret_key_base().expect("set"),
        first.token_signing_secret().expect("set")
    );
    assert!(
        !format!("{first:?}").contains(first.secret_key_base().expect("set")),
        "Debug hides secrets"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.toml"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secrets are private to the owner");
    }
}

#[test]
fn a_config_file_sits_between_defaults_and_flags() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("webhost.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:4999\"\npool_size = 3\n").expect("write");
    let from_file = Settings::load(&Overrides {
        config: Some(config.clone()),
        data_dir: Some(dir.path().into()),
        ..Overrides::default()
    })
    .expect("settings");
    assert_eq!(from_file.listen, "127.0.0.1:4999");
    assert_eq!(from_file.pool_size, 3);
    let flagged = Settings::load(&Overrides {
        config: Some(config),
        data_dir: Some(dir.path().into()),
        listen: Some("127.0.0.1:5000".into()),
        ..Overrides::default()
    })
    .expect("settings");
    assert_eq!(flagged.listen, "127.0.0.1:5000");
}

#[tokio::test]
async fn data_and_cells_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = || {
        Settings::load(&Overrides {
            data_dir: Some(dir.path().into()),
            listen: Some("127.0.0.1:0".into()),
            osmand_listen: Some("127.0.0.1:0".into()),
            teltonika_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        })
        .expect("settings")
    };
    let client = reqwest::Client::new();
    let app = Application::build(&settings()).await.expect("boots");
    let signup: serde_json::Value = client
        .post(format!("{}/api/v1/signup", app.url()))
        .json(&json!({ "company": "Acme", "email": "ops@acme.example", "password": "correct horse battery",
                       "plan": "hobby", "country": "DE" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let key = signup["api_key"].as_str().expect("key").to_string();
    let created = client
        .post(format!("{}/api/v1/vehicles", app.url()))
        .bearer_auth(&key)
        .json(&json!({ "name": "Van" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let cells_before = app.cells.len();
    app.stop().await;

    let app = Application::build(&settings()).await.expect("boots again");
    assert_eq!(
        app.cells.len(),
        cells_before,
        "no duplicate cells on restart"
    );
    let list: serde_json::Value = client
        .get(format!("{}/api/v1/vehicles", app.url()))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["name"], "Van", "{list}");
    let login = client
        .post(format!("{}/api/v1/login", app.url()))
        .json(&json!({ "email": "ops@acme.example", "password": "correct horse battery" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        login.status(),
        StatusCode::OK,
        "the kept secrets still verify the password hash and sign"
    );
    app.stop().await;
}
