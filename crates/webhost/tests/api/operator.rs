//! The control plane's machinery seen from outside: placement with spare
//! capacity, provisioning in the background, the operator API and its
//! authorisation, economics, failing jobs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webhost::Overrides;

use crate::helpers::{Answer, TestApp};
use crate::stories;

/// Local cells take this long to "boot", so what happens in the background
/// can be seen happening (a request that waited on the provider would
/// answer only after it).
const BOOT: u64 = 1_500;

fn slow_cells(o: &mut Overrides) {
    o.local_provision_delay_ms = Some(BOOT);
}

fn quick_retries(o: &mut Overrides) {
    // The default schedule (10 s, 20 s, … an hour) over ~5 s.
    o.job_backoff_scale = Some(0.0005);
}

/// Stories on an application tuned by `$tune`, on both engines.
macro_rules! tuned_stories {
    ($tune:ident: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite_with(super::$tune).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres_with(super::$tune).await {
                        super::$name(app).await;
                    }
                }
            }
        )*
    };
}

stories!(
    the_operator_api_wants_the_admin_token_and_nothing_leaks,
    economics_reproduce_the_seed_figures_and_count_tenants,
    operator_input_is_checked,
    retention_and_health_checks_run_as_jobs_over_every_cell,
    the_admin_command_shows_cells_jobs_and_economics,
    cells_report_usage_and_economics_attribute_cost_by_it,
);

tuned_stories!(quick_retries: a_job_that_keeps_failing_ends_failed_with_its_error_visible);

fn patient_retries(o: &mut Overrides) {
    // The default schedule (10 s, 20 s, …) over ~a minute and a half.
    o.job_backoff_scale = Some(0.01);
}

tuned_stories!(patient_retries: a_registered_cell_turns_active_only_once_its_health_check_passes);

tuned_stories!(
    slow_cells: a_signup_that_needs_a_new_cell_answers_202_and_turns_active,
    filling_the_last_slot_provisions_the_next_cell_in_the_background,
    cells_are_provisioned_drained_and_retired_by_the_operator,
);

/// Dedicated (hetzner AX52) cells take this long to deliver; cloud ones
/// come at once.
fn slow_dedicated_servers(o: &mut Overrides) {
    o.local_dedicated_delay_ms = Some(20_000);
}

tuned_stories!(
    slow_dedicated_servers: hobby_tenants_wait_on_a_stop_gap_cloud_cell_while_the_dedicated_server_is_delivered
);

fn cell<'a>(cells: &'a Answer, name: &str) -> Option<&'a Value> {
    cells.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|c| c["name"] == name)
}

/// Polls the operator's view of a cell until `done` holds; a minute at most.
async fn wait_cell(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cells = app.admin(Method::GET, "/api/admin/cells", None).await;
        assert_eq!(cells.status, StatusCode::OK, "{}", cells.body);
        if let Some(found) = cell(&cells, name).filter(|c| done(c)) {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cell {name} never got there: {}",
            cells.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_operator_api_wants_the_admin_token_and_nothing_leaks(app: TestApp) {
    let tenant = app.signup("hobby", "DE").await;
    let paths = [
        "/api/admin/pools",
        "/api/admin/cells",
        "/api/admin/tenants",
        "/api/admin/jobs",
        "/api/admin/economics",
    ];
    for path in paths {
        let none = app.request(Method::GET, path, None, None).await;
        assert_eq!(
            none.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {}",
            none.body
        );
        assert_eq!(none.error_code(), "unauthorized");
        for credential in [&tenant.token, &tenant.api_key] {
            let refused = app.get(path, credential).await;
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "{path}: {}",
                refused.body
            );
            assert!(refused.body.get("data").is_none());
        }
        let wrong = app.get(path, "not-the-admin-token").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let ok = app.admin(Method::GET, path, None).await;
        assert_eq!(ok.status, StatusCode::OK, "{path}: {}", ok.body);
    }
    // Writes too.
    let refused = app
        .request(
            Method::POST,
            "/api/admin/cells",
            Some(&tenant.token),
            Some(json!({"pool": "fly", "region": "sin"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let cells = app.admin(Method::GET, "/api/admin/cells", None).await;
    assert_eq!(
        cells.body["data"].as_array().expect("cells").len(),
        2,
        "nothing was made"
    );

    let tenants = app.admin(Method::GET, "/api/admin/tenants", None).await;
    let row = &tenants.body["data"][0];
    assert_eq!(row["id"], tenant.tenant_id.as_str());
    assert_eq!(row["plan"], "hobby");
    assert_eq!(row["status"], "active");
    assert_eq!(row["cell"], "hetzner-fsn1-1");
    let text = tenants.body.to_string();
    for secret in [
        tenant.token.as_str(),
        tenant.api_key.as_str(),
        "password",
        "argon2",
    ] {
        assert!(!text.contains(secret), "the tenant list carries {secret}");
    }

    // The operator's token is no tenant's.
    let as_tenant = app.get("/api/v1/vehicles", &app.admin_token()).await;
    assert_eq!(as_tenant.status, StatusCode::UNAUTHORIZED);

    // The operator API is in the published description, with its security.
    let openapi = app
        .request(Method::GET, "/api/openapi.json", None, None)
        .await;
    let cells_op = &openapi.body["paths"]["/api/admin/cells"]["post"];
    assert_eq!(cells_op["operationId"], "createCell");
    assert_eq!(cells_op["security"], json!([{ "adminToken": [] }]));
    assert!(openapi.body["paths"]["/api/v1/vehicles"]["get"].is_object());
}

async fn economics_reproduce_the_seed_figures_and_count_tenants(app: TestApp) {
    let economics = app.admin(Method::GET, "/api/admin/economics", None).await;
    assert_eq!(economics.status, StatusCode::OK, "{}", economics.body);
    let plan = |name: &str| {
        economics.body["plans"]
            .as_array()
            .expect("plans")
            .iter()
            .find(|p| p["plan"] == name)
            .cloned()
            .expect("plan")
    };
    for (name, cost, margin) in [
        ("hobby", 0.43, 97.0),
        ("starter", 4.0, 92.0),
        ("professional", 16.0, 89.0),
        ("business", 60.0, 85.0),
    ] {
        let p = plan(name);
        assert_eq!(p["at_capacity"]["cost_per_customer"], json!(cost), "{name}");
        assert_eq!(p["at_capacity"]["margin_percent"], json!(margin), "{name}");
    }

    app.signup("hobby", "DE").await;
    app.signup("hobby", "DE").await;
    app.signup("starter", "US").await;
    let economics = app.admin(Method::GET, "/api/admin/economics", None).await;
    let hobby = economics.body["plans"]
        .as_array()
        .expect("plans")
        .iter()
        .find(|p| p["plan"] == "hobby")
        .cloned()
        .expect("hobby");
    assert_eq!(hobby["tenants"], 2);
    assert_eq!(hobby["revenue_cents"], 3000);
    // The two share the $65 server.
    assert_eq!(hobby["cost_cents"], json!(6500.0));
    let fsn = economics.body["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["cell"] == "hetzner-fsn1-1")
        .cloned()
        .expect("cell");
    assert_eq!(fsn["tenants"], 2);
    assert_eq!(fsn["cost_per_customer_cents"], json!(3250.0));
    assert_eq!(fsn["break_even_tenants"], 5);
    assert_eq!(
        fsn["losing_tenants"], 2,
        "two hobby tenants do not pay for a server"
    );
    assert_eq!(economics.body["totals"]["revenue_cents"], 3000 + 4900);
    assert_eq!(economics.body["totals"]["cost_cents"], 6500 + 40000);
}

async fn operator_input_is_checked(app: TestApp) {
    let post = |body: Value| app.admin(Method::POST, "/api/admin/cells", Some(body));
    for (body, field) in [
        (json!({"pool": "nope", "region": "fsn1"}), "pool"),
        (json!({"pool": "hetzner", "region": "iad"}), "region"),
        (
            json!({"pool": "fly", "region": "sin", "template": "huge"}),
            "template",
        ),
        (
            json!({"pool": "fly", "region": "sin", "kind": "dedicated"}),
            "kind",
        ),
        (
            json!({"pool": "hetzner", "region": "fsn1", "kind": "spaceship"}),
            "kind",
        ),
        (
            json!({"pool": "fly", "region": "sin", "url": "ftp://x"}),
            "url",
        ),
    ] {
        let refused = post(body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            refused.body
        );
        assert_eq!(refused.body["error"]["field"], field, "{body}");
    }
    let unknown_field = post(json!({"pool": "fly", "region": "sin", "size": 3})).await;
    assert!(unknown_field.status.is_client_error());
    for path in [
        "/api/admin/cells/not-an-id",
        "/api/admin/jobs/not-an-id",
        "/api/admin/cells/0190a000-0000-7000-8000-000000000000",
    ] {
        let missing = app.admin(Method::GET, path, None).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{path}");
    }
    for query in ["?state=sleeping", "?limit=0", "?limit=5000", "?cursor=zzz"] {
        let bad = app
            .admin(Method::GET, &format!("/api/admin/jobs{query}"), None)
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}: {}", bad.body);
    }
    for query in ["?status=gone", "?plan=", "?cell=x"] {
        let bad = app
            .admin(Method::GET, &format!("/api/admin/tenants{query}"), None)
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}: {}", bad.body);
    }
    let cells = app.admin(Method::GET, "/api/admin/cells", None).await;
    assert_eq!(
        cells.body["data"].as_array().expect("cells").len(),
        2,
        "nothing was made"
    );
}

async fn a_job_that_keeps_failing_ends_failed_with_its_error_visible(app: TestApp) {
    // Nothing listens there: the cell's health check keeps failing.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let registered = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({"pool": "fly", "region": "sin", "url": dead})),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::ACCEPTED,
        "{}",
        registered.body
    );
    assert_eq!(registered.body["status"], "provisioning");
    let name = registered.body["name"].as_str().expect("name").to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let job = loop {
        let jobs = app
            .admin(
                Method::GET,
                "/api/admin/jobs?kind=provision_cell&state=failed",
                None,
            )
            .await;
        assert_eq!(jobs.status, StatusCode::OK, "{}", jobs.body);
        if let Some(job) = jobs.body["data"].as_array().expect("data").first() {
            break job.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["attempts"], job["max_attempts"], "{job}");
    let error = job["last_error"].as_str().expect("last error");
    assert!(
        error.contains("health check of http://127.0.0.1"),
        "{error}"
    );
    let cell = wait_cell(&app, &name, |_| true).await;
    assert_eq!(cell["status"], "provisioning");
    assert!(cell["last_error"]
        .as_str()
        .expect("error")
        .contains("health check"));

    // `webhost admin jobs` shows it too.
    let mut out = Vec::new();
    webhost::admin::run(
        webhost::admin::AdminArgs {
            url: app.url.clone(),
            token: Some(app.admin_token()),
            data_dir: app.settings.data_dir.clone(),
            json: false,
            command: webhost::admin::AdminCommand::Jobs {
                command: None,
                queue: None,
                state: Some("failed".into()),
                kind: None,
                limit: None,
            },
        },
        &mut out,
    )
    .await
    .expect("webhost admin jobs");
    let table = String::from_utf8(out).expect("utf-8");
    assert!(
        table.contains("provision_cell") && table.contains("failed"),
        "{table}"
    );
    assert!(table.contains("health check of"), "{table}");

    // The operator can give it another go, or cancel it.
    let id = job["id"].as_str().expect("id");
    let cancelled = app
        .admin(Method::POST, &format!("/api/admin/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["state"], "cancelled");
    let retried = app
        .admin(Method::POST, &format!("/api/admin/jobs/{id}/retry"), None)
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["attempts"], 0);
    let counts = app.admin(Method::GET, "/api/admin/jobs", None).await;
    assert!(counts.body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .any(|q| q["queue"] == "provisioning"));
}

async fn a_signup_that_needs_a_new_cell_answers_202_and_turns_active(app: TestApp) {
    // No cell serves Singapore yet.
    let answer = app
        .signup_with(json!({
            "company": "Lion City Couriers", "email": "ops@lion.example",
            "password": "correct horse battery", "plan": "starter", "country": "SG",
        }))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["tenant"]["status"], "provisioning");
    assert_eq!(answer.body["tenant"]["cell"], "fly-sin-1");
    let token = answer.body["token"].as_str().expect("token").to_string();

    // Its cell is still booting: the API says so, and why to wait.
    let early = app.get("/api/v1/vehicles", &token).await;
    assert_eq!(
        early.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        early.body
    );
    assert_eq!(early.error_code(), "provisioning");
    assert!(early.headers.contains_key("retry-after"));
    let sub = app.get("/api/v1/subscription", &token).await;
    assert_eq!(sub.status, StatusCode::OK, "{}", sub.body);
    assert_eq!(sub.body["status"], "provisioning");
    assert_eq!(sub.body["provisioning"]["cell_status"], "provisioning");
    assert_eq!(sub.body["placement"]["cell"], "fly-sin-1");

    let account = crate::helpers::Account {
        tenant_id: answer.body["tenant"]["id"].as_str().expect("id").into(),
        token: token.clone(),
        api_key: answer.body["api_key"].as_str().expect("key").into(),
        api_key_id: answer.body["api_key_id"].as_str().expect("key id").into(),
        body: answer.body.clone(),
    };
    let active = app.wait_active(&account).await;
    assert!(active.body.get("provisioning").is_none(), "{}", active.body);
    let created = app.create_vehicle(&account, "Van", None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let cell = wait_cell(&app, "fly-sin-1", |c| c["status"] == "active").await;
    assert_eq!(cell["tenants"], 1);
    assert_eq!(cell["progress"]["state"], "ready");
    let jobs = app
        .admin(Method::GET, "/api/admin/jobs?kind=provision_cell", None)
        .await;
    assert_eq!(jobs.body["data"][0]["state"], "succeeded", "{}", jobs.body);
}

async fn filling_the_last_slot_provisions_the_next_cell_in_the_background(app: TestApp) {
    // Small hobby servers, one spare slot wanted.
    let mut catalog = app.app.store.catalog().await.expect("catalog");
    for template in &mut catalog.cell_templates {
        if template.pool.as_str() == "hetzner" {
            template.capacity = 2;
        }
    }
    for pool in &mut catalog.pools {
        if pool.name.as_str() == "hetzner" {
            pool.spare_slots = 1;
        }
    }
    app.app.store.save_catalog(&catalog).await.expect("catalog");
    let first = wait_cell(&app, "hetzner-fsn1-1", |_| true).await;
    let drained = app
        .admin(
            Method::POST,
            &format!(
                "/api/admin/cells/{}/drain",
                first["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.body);
    assert_eq!(drained.body["status"], "draining");

    // No active hobby cell has room: the first signup waits for one.
    let one = app.signup("hobby", "DE").await;
    assert_eq!(one.body["tenant"]["cell"], "hetzner-fsn1-2");
    assert_eq!(one.body["tenant"]["status"], "provisioning");

    // The second takes the last slot at once, and the next cell is on its
    // way before anyone needs it.
    let two = app.signup("hobby", "DE").await;
    assert_eq!(two.body["tenant"]["cell"], "hetzner-fsn1-2");
    assert_eq!(two.body["tenant"]["status"], "active");
    let cells = app.admin(Method::GET, "/api/admin/cells", None).await;
    let spare = cell(&cells, "hetzner-fsn1-3").expect("a spare cell was queued");
    assert_eq!(spare["status"], "provisioning", "not waited for: {spare}");
    wait_cell(&app, "hetzner-fsn1-3", |c| c["status"] == "active").await;

    let three = app.signup("hobby", "DE").await;
    assert_eq!(three.body["tenant"]["cell"], "hetzner-fsn1-3");
    assert_eq!(three.body["tenant"]["status"], "active");
    let pools = app.admin(Method::GET, "/api/admin/pools", None).await;
    let hetzner = pools.body["data"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == "hetzner")
        .cloned()
        .expect("hetzner");
    assert_eq!(hetzner["provider_in_use"], "local");
    assert_eq!(hetzner["regions"][0]["tenants"], 3);
    assert_eq!(hetzner["regions"][0]["spare_slots"], 1);
}

async fn cells_are_provisioned_drained_and_retired_by_the_operator(app: TestApp) {
    let made = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({"pool": "fly", "region": "sin", "template": "fly-global"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.body);
    assert_eq!(made.body["status"], "provisioning");
    assert_eq!(made.body["capacity"], 50);
    let id = made.body["id"].as_str().expect("id").to_string();
    let shown = app
        .admin(Method::GET, &format!("/api/admin/cells/{id}"), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    wait_cell(&app, "fly-sin-1", |c| c["status"] == "active").await;

    // A cell with tenants is not retired.
    let tenant = app.signup("starter", "SG").await;
    assert_eq!(tenant.body["tenant"]["cell"], "fly-sin-1");
    let refused = app
        .admin(Method::DELETE, &format!("/api/admin/cells/{id}"), None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "cell_not_empty");

    // An empty one is, by a job.
    let empty = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({"pool": "fly", "region": "sin"})),
        )
        .await;
    let empty_id = empty.body["id"].as_str().expect("id").to_string();
    let name = empty.body["name"].as_str().expect("name").to_string();
    wait_cell(&app, &name, |c| c["status"] == "active").await;
    let retiring = app
        .admin(
            Method::DELETE,
            &format!("/api/admin/cells/{empty_id}"),
            None,
        )
        .await;
    assert_eq!(retiring.status, StatusCode::ACCEPTED, "{}", retiring.body);
    assert_eq!(retiring.body["status"], "draining");
    let retired = wait_cell(&app, &name, |c| c["status"] == "retired").await;
    let url = retired["url"].as_str().expect("url");
    assert!(
        reqwest::get(format!("{url}/api/health")).await.is_err(),
        "a retired local cell stops listening"
    );
}

/// Waits until the job `id` has finished; answers it.
async fn wait_job(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = app
            .admin(Method::GET, &format!("/api/admin/jobs/{id}"), None)
            .await;
        assert_eq!(job.status, StatusCode::OK, "{}", job.body);
        if ["succeeded", "failed", "cancelled"]
            .contains(&job.body["state"].as_str().unwrap_or_default())
        {
            return job.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never finished: {}",
            job.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn retention_and_health_checks_run_as_jobs_over_every_cell(app: TestApp) {
    let retention = app
        .app
        .jobs
        .enqueue::<webhost_control::maintenance::Retention>(json!({}), None, None)
        .await
        .expect("enqueue");
    let done = wait_job(&app, &retention.job.id.to_string()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for cell in ["hetzner-fsn1-1", "fly-iad-1"] {
        assert!(
            done["progress"][cell].is_object(),
            "{cell} reported: {done}"
        );
    }

    let health = app
        .app
        .jobs
        .enqueue::<webhost_control::maintenance::CellHealth>(json!({}), None, None)
        .await
        .expect("enqueue");
    let done = wait_job(&app, &health.job.id.to_string()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"]["unhealthy"], json!([]));
}

async fn the_admin_command_shows_cells_jobs_and_economics(app: TestApp) {
    app.signup("hobby", "DE").await;
    let run = |command: webhost::admin::AdminCommand, json: bool| {
        let args = webhost::admin::AdminArgs {
            url: app.url.clone(),
            token: None,
            // The embedded default's secrets file, as on the same machine.
            data_dir: app.settings.data_dir.clone(),
            json,
            command,
        };
        async move {
            let mut out = Vec::new();
            webhost::admin::run(args, &mut out)
                .await
                .expect("admin command");
            String::from_utf8(out).expect("utf-8")
        }
    };
    use webhost::admin::AdminCommand;
    let cells = run(AdminCommand::Cells { command: None }, false).await;
    assert!(
        cells.contains("hetzner-fsn1-1") && cells.contains("1/150"),
        "{cells}"
    );
    let pools = run(AdminCommand::Pools, false).await;
    assert!(pools.contains("fsn1") && pools.contains("local"), "{pools}");
    let tenants = run(
        AdminCommand::Tenants {
            plan: Some("hobby".into()),
            status: None,
            pool: None,
            region: None,
            cell: None,
            limit: None,
            cursor: None,
        },
        false,
    )
    .await;
    assert!(tenants.contains("Acme Logistics"), "{tenants}");
    assert!(tenants.contains("requests 30d"), "usage columns: {tenants}");
    let economics = run(AdminCommand::Economics { tenants: 10 }, false).await;
    assert!(
        economics.contains("$0.43") && economics.contains("97%"),
        "{economics}"
    );
    // The least profitable tenants follow the plans; nothing measured yet.
    assert!(
        economics.contains("Acme Logistics") && economics.contains("equal"),
        "{economics}"
    );
    let jobs: Value = serde_json::from_str(
        &run(
            AdminCommand::Jobs {
                command: None,
                queue: None,
                state: None,
                kind: None,
                limit: None,
            },
            true,
        )
        .await,
    )
    .expect("--json prints JSON");
    assert!(jobs["data"].is_array());
    // Without a token anywhere it says what is missing.
    let args = webhost::admin::AdminArgs {
        url: app.url.clone(),
        token: None,
        data_dir: std::path::PathBuf::from("/nonexistent"),
        json: false,
        command: AdminCommand::Pools,
    };
    let err = webhost::admin::run(args, &mut Vec::new())
        .await
        .expect_err("no token");
    assert!(
        format!("{err:#}").contains("WEBHOST_ADMIN_TOKEN"),
        "{err:#}"
    );
}

/// One busy tenant and one idle one on the same $65 cell: the cell counts
/// what each stores and does, the usage job brings it to the control plane,
/// the tenants list shows it, and the economics put the cell's cost on the
/// tenant that uses it (and list it first, as the one losing money).
async fn cells_report_usage_and_economics_attribute_cost_by_it(app: TestApp) {
    let busy = app.signup("hobby", "DE").await;
    let idle = app.signup("hobby", "DE").await;
    let van = app.create_vehicle(&busy, "Van", None).await;
    assert_eq!(van.status, StatusCode::CREATED, "{}", van.body);
    let van = van.body["id"].as_str().expect("id").to_string();
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "vehicle_id": van,
                "time": (start + chrono::Duration::seconds(i)).to_rfc3339(),
                "lat": 52.5,
                "lon": 13.4,
            })
        })
        .collect();
    let stored = app
        .post("/api/v1/positions", Some(&busy.api_key), json!(batch))
        .await;
    assert!(stored.status.is_success(), "{}", stored.body);
    // The resend stores nothing new and ingests nothing.
    let again = app
        .post("/api/v1/positions", Some(&busy.api_key), json!(batch))
        .await;
    assert!(again.status.is_success(), "{}", again.body);
    for _ in 0..3 {
        let latest = app.get("/api/v1/positions/latest", &busy.token).await;
        assert_eq!(latest.status, StatusCode::OK, "{}", latest.body);
    }

    let collect = app
        .app
        .jobs
        .enqueue::<webhost_control::maintenance::CollectUsage>(json!({}), None, None)
        .await
        .expect("enqueue");
    let done = wait_job(&app, &collect.job.id.to_string()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["queue"], "sync", "{done}");

    let tenants = app.admin(Method::GET, "/api/admin/tenants", None).await;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.body);
    let usage_of = |account: &crate::helpers::Account| {
        tenants.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|t| t["id"] == account.tenant_id.as_str())
            .expect("listed")["usage"]
            .clone()
    };
    let used = usage_of(&busy);
    assert_eq!(used["positions_stored"], 40, "{used}");
    assert_eq!(
        used["positions_ingested"], 40,
        "resends not counted: {used}"
    );
    // Create the vehicle, post twice, read three times.
    assert_eq!(used["api_requests"], 6, "{used}");
    assert!(used["storage_bytes"].as_u64().expect("bytes") > 0, "{used}");
    assert!(used["measured_at"].is_string(), "{used}");
    let nothing = usage_of(&idle);
    assert_eq!(
        (
            &nothing["positions_stored"],
            &nothing["positions_ingested"],
            &nothing["api_requests"],
            &nothing["storage_bytes"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!(0)),
        "{nothing}"
    );

    let economics = app
        .admin(Method::GET, "/api/admin/economics?tenants=5", None)
        .await;
    assert_eq!(economics.status, StatusCode::OK, "{}", economics.body);
    let listed = economics.body["tenants"].as_array().expect("tenants");
    assert_eq!(listed.len(), 2, "{}", economics.body);
    assert_eq!(
        listed[0]["tenant_id"],
        busy.tenant_id.as_str(),
        "least profitable first"
    );
    assert_eq!(listed[0]["attribution"], "usage");
    assert_eq!(
        listed[0]["cost_cents"],
        json!(6500.0),
        "all of the $65 server"
    );
    assert_eq!(listed[0]["margin_cents"], json!(1500.0 - 6500.0));
    assert_eq!(
        listed[1]["cost_cents"],
        json!(0.0),
        "the idle tenant used nothing"
    );
    assert_eq!(economics.body["totals"]["losing_tenants"], 1);
    let fsn = economics.body["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["cell"] == "hetzner-fsn1-1")
        .expect("fsn cell");
    assert_eq!(fsn["attribution"], "usage");
    assert_eq!(fsn["losing_tenants"], 1);

    let refused = app
        .admin(Method::GET, "/api/admin/economics?tenants=5000", None)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tenants")),
        "{}",
        refused.body
    );
}

/// The path a bootstrapped server takes (deploy/hetzner/bootstrap.sh):
/// the cell is registered by URL before it runs, stays `provisioning` while
/// nothing answers there, and turns `active` once a `webhost cell` started
/// as the image starts it (production mode, the shared secrets, the id the
/// registration gave) answers its health check.
async fn a_registered_cell_turns_active_only_once_its_health_check_passes(app: TestApp) {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let registered = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({"pool": "fly", "region": "sin", "url": format!("http://{addr}")})),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::ACCEPTED,
        "{}",
        registered.body
    );
    let id = registered.body["id"].as_str().expect("id").to_string();
    let name = registered.body["name"].as_str().expect("name").to_string();
    let waiting = wait_cell(&app, &name, |c| c["last_error"].is_string()).await;
    assert_eq!(
        waiting["status"], "provisioning",
        "not active before it answers"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let database = format!("sqlite:{}?mode=rwc", dir.path().join("cell.db").display());
    let mut cell = std::process::Command::new(env!("CARGO_BIN_EXE_webhost"))
        .args(["cell", "--listen", &addr.to_string()])
        .env_clear()
        .env("WEBHOST_MODE", "production")
        .env("WEBHOST_CELL_ID", &id)
        .env("WEBHOST_CONTROL_URL", &app.url)
        .env("DATABASE_URL", &database)
        .env(
            "SECRET_KEY_BASE",
            app.settings.secret_key_base().expect("secret"),
        )
        .env(
            "TOKEN_SIGNING_SECRET",
            app.settings.token_signing_secret().expect("secret"),
        )
        .env("WEBHOST_ADMIN_TOKEN", app.admin_token())
        .env("PRIMARY_REGION", "sin")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("webhost cell starts");
    let active = wait_cell(&app, &name, |c| c["status"] == "active").await;
    let _ = cell.kill();
    let _ = cell.wait();
    assert_eq!(active["last_error"], Value::Null, "{active}");
    assert_eq!(active["url"], format!("http://{addr}"), "{active}");
    // The job marks the cell active, then itself done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let jobs = app
            .admin(
                Method::GET,
                "/api/admin/jobs?kind=provision_cell&state=succeeded",
                None,
            )
            .await;
        if let Some(job) = jobs.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|j| j["payload"]["cell_id"] == id.as_str())
        {
            break job.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provisioning job never succeeded: {}",
            jobs.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(job["attempts"].as_u64().expect("attempts") >= 2, "{job}");
}

async fn hobby_tenants_wait_on_a_stop_gap_cloud_cell_while_the_dedicated_server_is_delivered(
    app: TestApp,
) {
    // First start ordered the hobby pool's dedicated server; it is not
    // delivered yet.
    let dedicated = wait_cell(&app, "hetzner-fsn1-1", |_| true).await;
    assert_eq!(dedicated["status"], "provisioning", "{dedicated}");
    assert_eq!(dedicated["template"], "hetzner-ax52");
    assert_eq!(dedicated["stop_gap"], false);

    // A hobby signup does not wait for it: a cloud server (the pool's
    // stop-gap template) takes the tenant, and no second dedicated server
    // is ordered while one is on its way.
    let early = app.signup("hobby", "DE").await;
    assert_eq!(
        early.body["tenant"]["cell"], "hetzner-fsn1-2",
        "{}",
        early.body
    );
    let gap = wait_cell(&app, "hetzner-fsn1-2", |c| c["status"] == "active").await;
    assert_eq!(gap["template"], "hetzner-cloud-cx42");
    assert_eq!(gap["stop_gap"], true);
    assert_eq!(gap["capacity"], 40);
    let cells = app
        .admin(Method::GET, "/api/admin/cells?pool=hetzner", None)
        .await;
    assert_eq!(
        cells.body["data"].as_array().expect("cells").len(),
        2,
        "{}",
        cells.body
    );
    let second = app.signup("hobby", "AT").await;
    assert_eq!(
        second.body["tenant"]["cell"], "hetzner-fsn1-2",
        "the stop-gap has room"
    );

    // The tenants on it are marked for moving; the operator sees what the
    // stop-gap costs.
    let tenants = app
        .admin(Method::GET, "/api/admin/tenants?pool=hetzner", None)
        .await;
    for row in tenants.body["data"].as_array().expect("tenants") {
        let why = row["move_wanted"].as_str().unwrap_or_default();
        assert!(why.contains("stop-gap cell hetzner-fsn1-2"), "{row}");
    }
    let economics = app.admin(Method::GET, "/api/admin/economics", None).await;
    assert_eq!(
        economics.body["totals"]["stop_gap_cost_cents"], 2000,
        "{}",
        economics.body
    );
    let pools = app.admin(Method::GET, "/api/admin/pools", None).await;
    let hetzner = pools.body["data"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == "hetzner")
        .expect("hetzner pool");
    let templates = &hetzner["templates"];
    assert!(
        templates
            .as_array()
            .expect("templates")
            .iter()
            .any(|t| t["name"] == "hetzner-cloud-cx42"
                && t["stop_gap"] == true
                && t["kind"] == "cloud"),
        "{templates}"
    );

    // Once the dedicated server is active, new tenants go there.
    wait_cell(&app, "hetzner-fsn1-1", |c| c["status"] == "active").await;
    let late = app.signup("hobby", "DE").await;
    assert_eq!(
        late.body["tenant"]["cell"], "hetzner-fsn1-1",
        "{}",
        late.body
    );
    assert_eq!(late.body["tenant"]["status"], "active");
    let tenants = app
        .admin(Method::GET, "/api/admin/tenants?pool=hetzner", None)
        .await;
    let moving = tenants.body["data"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| !t["move_wanted"].is_null())
        .count();
    assert_eq!(moving, 2, "{}", tenants.body);
}
