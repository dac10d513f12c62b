use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use webhost::{Application, Overrides, Settings};

/// Expands each story into a SQLite test and a PostgreSQL test.
#[macro_export]
macro_rules! stories {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres().await {
                        super::$name(app).await;
                    }
                }
            }
        )*
    };
}

pub struct TestApp {
    pub app: Application,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub url: String,
    _dir: TempDir,
    /// Dropped after `app` (fields drop in order): removes the databases.
    _postgres: Option<webhost_storage_tests::backends::PostgresDatabase>,
}

/// A signed-up tenant, as a test holds it.
#[derive(Clone, Debug)]
pub struct Account {
    pub tenant_id: String,
    pub token: String,
    pub api_key: String,
    pub api_key_id: String,
    pub body: Value,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of a SPEC error body, asserting the shape.
    pub fn error_code(&self) -> &str {
        let message = self.body["error"]["message"].as_str();
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "error bodies carry a message: {}",
            self.body
        );
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }
}

impl TestApp {
    async fn boot(postgres: Option<webhost_storage_tests::backends::PostgresDatabase>) -> Self {
        Self::boot_with(postgres, |_| {}).await
    }

    async fn boot_with(
        postgres: Option<webhost_storage_tests::backends::PostgresDatabase>,
        tune: impl FnOnce(&mut Overrides),
    ) -> Self {
        let database_url = postgres.as_ref().map(|db| db.url().to_string());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut overrides = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some("127.0.0.1:0".into()),
            osmand_listen: Some("127.0.0.1:0".into()),
            teltonika_listen: Some("127.0.0.1:0".into()),
            database_url,
            // Background jobs are picked up quickly in tests.
            job_poll_ms: Some(20),
            // A move waiting out its grace period sees a rollback soon.
            move_recheck_ms: Some(200),
            ..Overrides::default()
        };
        tune(&mut overrides);
        let settings = Settings::load(&overrides).expect("settings load");
        let app = Application::build(&settings)
            .await
            .expect("application boots");
        let url = app.url();
        Self {
            app,
            settings,
            client: reqwest::Client::builder()
                .no_gzip()
                .build()
                .expect("client"),
            url,
            _dir: dir,
            _postgres: postgres,
        }
    }

    pub async fn sqlite() -> Self {
        Self::boot(None).await
    }

    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(|_| {}).await
    }

    pub async fn sqlite_with(tune: impl FnOnce(&mut Overrides)) -> Self {
        Self::boot_with(None, tune).await
    }

    pub async fn postgres_with(tune: impl FnOnce(&mut Overrides)) -> Option<Self> {
        let admin = webhost_storage_tests::backends::postgres_admin_url()?;
        let database = webhost_storage_tests::backends::PostgresDatabase::create(&admin).await;
        Some(Self::boot_with(Some(database), tune).await)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("request sent")).await
    }

    pub async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Answer {
        self.request(Method::GET, path, Some(bearer), None).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Answer {
        self.request(Method::POST, path, bearer, Some(body)).await
    }

    pub async fn signup_with(&self, body: Value) -> Answer {
        self.post("/api/v1/signup", None, body).await
    }

    pub async fn signup(&self, plan: &str, country: &str) -> Account {
        let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
        let answer = self
            .signup_with(json!({
                "company": "Acme Logistics",
                "email": email,
                "password": "correct horse battery",
                "plan": plan,
                "country": country,
            }))
            .await;
        assert!(
            [StatusCode::CREATED, StatusCode::ACCEPTED].contains(&answer.status),
            "{}",
            answer.body
        );
        let waits = answer.status == StatusCode::ACCEPTED;
        let b = &answer.body;
        let account = Account {
            tenant_id: b["tenant"]["id"].as_str().expect("tenant id").into(),
            token: b["token"].as_str().expect("token").into(),
            api_key: b["api_key"].as_str().expect("api key").into(),
            api_key_id: b["api_key_id"].as_str().expect("api key id").into(),
            body: answer.body,
        };
        if waits {
            // Its cell is being made (in the background): wait until it is
            // up, as a client would.
            self.wait_active(&account).await;
        }
        account
    }

    /// Polls `GET /api/v1/subscription` until the tenant is active; panics
    /// with the last answer after a minute.
    pub async fn wait_active(&self, account: &Account) -> Answer {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let sub = self.get("/api/v1/subscription", &account.token).await;
            if sub.body["status"] == "active" {
                return sub;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the tenant never turned active: {}",
                sub.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The operator's token of this application.
    pub fn admin_token(&self) -> String {
        self.settings
            .admin_token()
            .expect("embedded mode generates one")
            .to_string()
    }

    /// A request to the operator API with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let token = self.admin_token();
        self.request(method, path, Some(&token), body).await
    }

    pub async fn create_vehicle(
        &self,
        account: &Account,
        name: &str,
        device: Option<&str>,
    ) -> Answer {
        let mut body = json!({ "name": name });
        if let Some(device) = device {
            body["device_id"] = json!(device);
        }
        self.post("/api/v1/vehicles", Some(&account.token), body)
            .await
    }

    pub async fn vehicle_count(&self, account: &Account) -> usize {
        let list = self.get("/api/v1/vehicles", &account.token).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["data"].as_array().expect("data array").len()
    }
}

/// A unique device id.
pub fn device() -> String {
    format!("dev-{}", uuid::Uuid::new_v4().simple())
}
