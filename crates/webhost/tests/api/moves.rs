//! Moving a tenant between cells, live (SPEC §6): under continuous ingest
//! over HTTP, OsmAnd and Teltonika; stopped after every step and resumed;
//! with a corrupted target row (aborts); between engines.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webhost::Overrides;
use webhost_protocols::teltonika::{self, AvlPacket, AvlRecord, Codec};

use crate::helpers::{device, Account, TestApp};
use crate::stories;

stories!(
    a_tenant_moves_live_under_ingest_and_nothing_is_lost,
    a_tenant_moves_to_a_cell_on_the_other_engine_and_back,
    draining_a_cell_moves_its_tenants_off_one_at_a_time,
);

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

/// The move's job stops once, after the final catch-up and before the
/// verification, with a freeze long enough for the test to act meanwhile.
fn stop_before_verifying(o: &mut Overrides) {
    o.test_stop_move_at = Some("verifying".into());
    o.move_freeze_deadline_ms = Some(120_000);
}

tuned_stories!(stop_before_verifying: a_corrupted_target_row_aborts_the_move_and_the_tenant_stays);

/// Inside the geofence (a 1 km circle around 52.5, 13.4) or well outside.
const INSIDE: f64 = 52.5;
const OUTSIDE: f64 = 52.6;

/// Fix n is at `base_time() + n s`; fixed once per test process.
fn base_time() -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        (Utc::now() - chrono::Duration::hours(2))
            .duration_trunc(chrono::Duration::seconds(1))
            .expect("trunc")
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The n-th fix's latitude: five inside, five outside, …
fn lat(n: u32) -> f64 {
    if (n / 5) % 2 == 0 {
        INSIDE
    } else {
        OUTSIDE
    }
}

/// The tenant's cell id (operator's view).
async fn tenant_cell(app: &TestApp, account: &Account) -> String {
    let tenants = app.admin(Method::GET, "/api/admin/tenants", None).await;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.body);
    tenants.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["id"] == account.tenant_id.as_str())
        .and_then(|t| t["cell_id"].as_str())
        .unwrap_or_else(|| panic!("tenant not listed with a cell: {}", tenants.body))
        .to_string()
}

/// A second active cell beside the tenant's, in its pool and region.
async fn second_cell(app: &TestApp, source: &str) -> String {
    let cell = app
        .admin(Method::GET, &format!("/api/admin/cells/{source}"), None)
        .await;
    assert_eq!(cell.status, StatusCode::OK, "{}", cell.body);
    let created = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({ "pool": cell.body["pool"], "region": cell.body["region"] })),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    wait_for(app, &format!("/api/admin/cells/{id}"), |c| {
        assert_ne!(c["status"], "failed", "{c}");
        c["status"] == "active"
    })
    .await;
    id
}

/// Polls an operator path until `done` holds; two minutes at most.
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = app.admin(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        if done(&answer.body) {
            return answer.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn migrate(app: &TestApp, account: &Account, to: &str) -> String {
    let started = app
        .admin(
            Method::POST,
            &format!("/api/admin/tenants/{}/migrate", account.tenant_id),
            Some(json!({ "cell": to })),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    started.body["id"]
        .as_str()
        .expect("migration id")
        .to_string()
}

async fn vehicle(app: &TestApp, account: &Account, name: &str, device: Option<&str>) -> String {
    let created = app.create_vehicle(account, name, device).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

/// Every stored position time of a vehicle, oldest first.
async fn stored_times(app: &TestApp, account: &Account, vehicle: &str) -> Vec<String> {
    let from = iso(base_time() - chrono::Duration::hours(1));
    let to = iso(Utc::now() + chrono::Duration::hours(1));
    let page = app
        .get(
            &format!("/api/v1/vehicles/{vehicle}/positions?from={from}&to={to}&limit=10000"),
            &account.token,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| {
            let t: DateTime<Utc> = p["time"].as_str().expect("time").parse().expect("a time");
            iso(t)
        })
        .collect()
}

/// Posts one position over REST until it is acknowledged (a client
/// retries what was not); answers how many tries were refused.
async fn post_until_stored(app: &TestApp, account: &Account, van: &str, n: u32) -> u32 {
    let t = base_time() + chrono::Duration::seconds(i64::from(n));
    let mut refused = 0;
    loop {
        let answer = app
            .post(
                "/api/v1/positions",
                Some(&account.api_key),
                json!({ "positions": [{ "vehicle_id": van, "time": iso(t), "lat": lat(n), "lon": 13.4 }] }),
            )
            .await;
        if answer.status.is_success() {
            return refused;
        }
        assert!(
            answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS,
            "a write during a move is held or retried, never refused as bad: {} {}",
            answer.status,
            answer.body
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one OsmAnd fix until it is acknowledged.
async fn osmand_until_stored(app: &TestApp, device: &str, n: u32) {
    let t = base_time() + chrono::Duration::seconds(i64::from(n));
    let url = format!(
        "http://{}/?id={device}&timestamp={}&lat={}&lon=13.4",
        app.app.devices.osmand.addr,
        t.timestamp(),
        lat(n)
    );
    loop {
        let response = app.client.get(&url).send().await.expect("osmand");
        if response.status() == StatusCode::OK {
            return;
        }
        assert!(
            response.status().is_server_error(),
            "a fix during a move is held or refused for a resend, not rejected: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Teltonika {
    stream: TcpStream,
    imei: String,
    /// Connections the edge closed (it does so when it cannot store a
    /// packet, so the device resends).
    reconnects: u32,
}

impl Teltonika {
    async fn connect(app: &TestApp, imei: &str) -> TcpStream {
        let mut stream = TcpStream::connect(app.app.devices.teltonika)
            .await
            .expect("connect");
        stream
            .write_all(&teltonika::encode_imei(imei).expect("imei"))
            .await
            .expect("handshake");
        let mut answer = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut answer))
            .await
            .expect("handshake answered")
            .expect("read");
        assert_eq!(answer[0], teltonika::ACCEPT);
        stream
    }

    /// Sends one record until it is acknowledged as stored.
    async fn send_until_stored(&mut self, app: &TestApp, n: u32) {
        let t = base_time() + chrono::Duration::seconds(i64::from(n));
        let packet = teltonika::encode_avl(&AvlPacket {
            codec: Codec::Codec8,
            records: vec![AvlRecord {
                time: t,
                priority: 0,
                lon: 13.4,
                lat: lat(n),
                altitude: 40,
                angle: 90,
                satellites: 9,
                speed_kmh: 30,
                event_id: 0,
                io: vec![],
            }],
        })
        .expect("encode");
        loop {
            let mut ack = [0u8; 4];
            let sent = self.stream.write_all(&packet).await.is_ok();
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.stream.read_exact(&mut ack))
                    .await
                    .expect("an answer or a close within 30 s");
            match (sent, read) {
                (true, Ok(_)) if u32::from_be_bytes(ack) == 1 => return,
                (true, Ok(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => {
                    self.reconnects += 1;
                    self.stream = Self::connect(app, &self.imei).await;
                }
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(app: &TestApp, account: &Account) -> Socket {
    let url = format!("{}/api/v1/socket", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", account.token).parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("socket")
        .0
}

/// Reads the socket until it is closed; answers the close code.
async fn closed_with(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("closed within 30 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// The geofence transitions a vehicle reporting fixes 0..n in order makes.
fn expected_transitions(n: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut inside = false;
    for i in 0..n {
        let now = lat(i) == INSIDE;
        if now != inside {
            out.push(if now {
                "geofence_enter"
            } else {
                "geofence_exit"
            });
            inside = now;
        }
    }
    out
}

async fn geofence_events(app: &TestApp, account: &Account, vehicle: &str) -> Vec<String> {
    let answer = app
        .get(
            &format!(
                "/api/v1/events?type=geofence_enter,geofence_exit&vehicle_id={vehicle}&limit=1000"
            ),
            &account.token,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let mut events: Vec<(String, String)> = answer.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| {
            (
                e["time"].as_str().expect("time").to_string(),
                e["type"].as_str().expect("type").to_string(),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, kind)| kind).collect()
}

async fn a_tenant_moves_live_under_ingest_and_nothing_is_lost(app: TestApp) {
    let app = Arc::new(app);
    let account = app.signup("hobby", "DE").await;
    let source = tenant_cell(&app, &account).await;
    let target = second_cell(&app, &source).await;

    let geofence = app
        .post(
            "/api/v1/geofences",
            Some(&account.token),
            json!({ "name": "Depot", "circle": { "lat": INSIDE, "lon": 13.4, "radius_m": 1000 } }),
        )
        .await;
    assert_eq!(geofence.status, StatusCode::CREATED, "{}", geofence.body);
    let van = vehicle(&app, &account, "Van", None).await;
    let osm_device = device();
    let truck = vehicle(&app, &account, "Truck", Some(&osm_device)).await;
    let imei = format!("35{:013}", rand_digits());
    let bike = vehicle(&app, &account, "Bike", Some(&imei)).await;
    let mut live = socket(&app, &account).await;

    // Continuous ingest over the three paths, each in time order, each fix
    // sent until it is acknowledged; counted as it is.
    let stop = Arc::new(AtomicBool::new(false));
    let rest = tokio::spawn({
        let (app, account, van, stop) = (app.clone(), account.clone(), van.clone(), stop.clone());
        async move {
            let mut n = 0;
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                refused += post_until_stored(&app, &account, &van, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, refused)
        }
    });
    let osmand = tokio::spawn({
        let (app, device, stop) = (app.clone(), osm_device.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                osmand_until_stored(&app, &device, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        }
    });
    let tracker = tokio::spawn({
        let (app, imei, stop) = (app.clone(), imei.clone(), stop.clone());
        async move {
            let mut device = Teltonika {
                stream: Teltonika::connect(&app, &imei).await,
                imei,
                reconnects: 0,
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                device.send_until_stored(&app, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, device.reconnects)
        }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = migrate(&app, &account, &target).await;
    let moved = wait_for(&app, &format!("/api/admin/migrations/{id}"), |m| {
        assert!(
            !matches!(m["state"].as_str(), Some("aborted" | "aborting")),
            "the move aborted: {m}"
        );
        m["state"] == "grace_period"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (rest_sent, rest_refused) = rest.await.expect("rest ingest");
    let osmand_sent = osmand.await.expect("osmand ingest");
    let (tracker_sent, reconnects) = tracker.await.expect("teltonika ingest");

    // The tenant lives on the target now, reached with the same credentials.
    assert_eq!(tenant_cell(&app, &account).await, target);
    assert_eq!(moved["progress"]["step"], 7, "{moved}");
    assert!(moved["progress"]["freeze_ms"].is_u64(), "{moved}");
    assert!(moved["rollback_until"].is_string(), "{moved}");

    // Every acknowledged position is there exactly once.
    for (vehicle, sent) in [
        (&van, rest_sent),
        (&truck, osmand_sent),
        (&bike, tracker_sent),
    ] {
        let times = stored_times(&app, &account, vehicle).await;
        let unique: BTreeSet<&String> = times.iter().collect();
        assert_eq!(unique.len(), times.len(), "no position twice");
        let expected: BTreeSet<String> = (0..sent)
            .map(|n| iso(base_time() + chrono::Duration::seconds(i64::from(n))))
            .collect();
        let got: BTreeSet<String> = times.into_iter().collect();
        assert_eq!(got, expected, "every acknowledged position, nothing else");
    }
    // No geofence event lost or doubled across the switch.
    for (vehicle, sent) in [
        (&van, rest_sent),
        (&truck, osmand_sent),
        (&bike, tracker_sent),
    ] {
        assert_eq!(
            geofence_events(&app, &account, vehicle).await,
            expected_transitions(sent)
        );
    }
    assert_eq!(
        reconnects, 0,
        "the Teltonika connection stays open across the switch"
    );
    // Writes were held rather than bounced, as a rule; a few may have been
    // answered 503 when a freeze ended without a route (never lost).
    assert!(rest_refused <= rest_sent, "{rest_refused} of {rest_sent}");

    // The live socket was told to reconnect; a new one lands on the target.
    assert_eq!(closed_with(&mut live).await, Some(1012));
    let mut live = socket(&app, &account).await;
    post_until_stored(&app, &account, &van, rest_sent).await;
    let message = loop {
        match tokio::time::timeout(Duration::from_secs(30), live.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("message")
        {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).expect("json"),
            _ => continue,
        }
    };
    assert_eq!(message["positions"][0]["vehicle_id"], van.as_str());

    // Every API works unchanged: REST reads, GraphQL, writes.
    let graphql = app
        .post(
            "/api/graphql",
            Some(&account.api_key),
            json!({ "query": "{ vehicles { data { id name } } }" }),
        )
        .await;
    assert_eq!(graphql.status, StatusCode::OK, "{}", graphql.body);
    assert_eq!(
        graphql.body["data"]["vehicles"]["data"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{}",
        graphql.body
    );
    let renamed = app
        .request(
            Method::PATCH,
            &format!("/api/v1/vehicles/{van}"),
            Some(&account.token),
            Some(json!({ "name": "Moved van" })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
}

/// 13 pseudo-random digits for an IMEI.
fn rand_digits() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32) * 1_000 % 10_000_000_000_000
}

async fn a_corrupted_target_row_aborts_the_move_and_the_tenant_stays(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let source = tenant_cell(&app, &account).await;
    let target = second_cell(&app, &source).await;
    let van = vehicle(&app, &account, "Van", None).await;
    for n in 0..10 {
        post_until_stored(&app, &account, &van, n).await;
    }
    let id = migrate(&app, &account, &target).await;
    // The test hook stops the move's job once everything is copied (the
    // tenant frozen, the source read-only), before verifying.
    let job = wait_for(&app, "/api/admin/jobs?kind=move_tenant", |jobs| {
        jobs["data"][0]["state"] == "failed"
    })
    .await;
    let job_id = job["data"][0]["id"].as_str().expect("job id").to_string();
    let paused = app
        .admin(Method::GET, &format!("/api/admin/migrations/{id}"), None)
        .await;
    assert_eq!(paused.body["state"], "verifying", "{}", paused.body);

    // One position's latitude changes on the target copy behind the move's back.
    corrupt_one_position(&app, &target, &account.tenant_id).await;

    let retried = app
        .admin(
            Method::POST,
            &format!("/api/admin/jobs/{job_id}/retry"),
            None,
        )
        .await;
    assert!(retried.status.is_success(), "{}", retried.body);
    let ended = wait_for(&app, &format!("/api/admin/migrations/{id}"), |m| {
        m["finished"] == true
    })
    .await;
    assert_eq!(ended["state"], "aborted", "{ended}");
    let reason = ended["progress"]["outcome"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("positions"),
        "the reason names the table: {ended}"
    );

    // The tenant is on the source, serving reads and writes.
    assert_eq!(tenant_cell(&app, &account).await, source);
    assert_eq!(stored_times(&app, &account, &van).await.len(), 10);
    post_until_stored(&app, &account, &van, 10).await;
    assert_eq!(stored_times(&app, &account, &van).await.len(), 11);
}

/// Changes one of the tenant's positions in the target cell's own database.
async fn corrupt_one_position(app: &TestApp, cell: &str, tenant: &str) {
    let cell = app
        .admin(Method::GET, &format!("/api/admin/cells/{cell}"), None)
        .await;
    let name = cell.body["name"].as_str().expect("cell name").to_string();
    let sql = "UPDATE positions SET lat = lat + 0.001 WHERE tenant_id = $1 \
               AND time = (SELECT MIN(time) FROM positions WHERE tenant_id = $1)";
    match &app.settings.database_url {
        Some(url) if app.settings.is_postgres() => {
            let (server, database) = url.rsplit_once('/').expect("a database in the URL");
            let database = database.split('?').next().unwrap_or(database);
            let suffix = name.replace('-', "_");
            let url = format!("{server}/{database}_cell_{suffix}");
            let pool = sqlx::PgPool::connect(&url).await.expect("target database");
            let done = sqlx::query(sql)
                .bind(uuid::Uuid::parse_str(tenant).expect("uuid"))
                .execute(&pool)
                .await
                .expect("corrupt");
            assert_eq!(done.rows_affected(), 1);
        }
        _ => {
            let path = app
                .settings
                .data_dir
                .join("cells")
                .join(format!("{name}.db"));
            let url = format!("sqlite://{}", path.display());
            let pool = sqlx::SqlitePool::connect(&url)
                .await
                .expect("target database");
            let done = sqlx::query(&sql.replace("$1", "?1"))
                .bind(tenant)
                .execute(&pool)
                .await
                .expect("corrupt");
            assert_eq!(done.rows_affected(), 1);
        }
    }
}

/// A cell of the other engine than the app's (PostgreSQL beside SQLite,
/// SQLite beside PostgreSQL), running alone and registered by URL; `None`
/// when PostgreSQL is not available for a SQLite app.
async fn other_engine_cell(
    app: &TestApp,
    source: &str,
) -> Option<(
    String,
    webhost::app::CellServer,
    Option<webhost_storage_tests::backends::PostgresDatabase>,
)> {
    let (database_url, database) = if app.settings.is_postgres() {
        let path = app.settings.data_dir.join("other-engine-cell.db");
        (format!("sqlite://{}", path.display()), None)
    } else {
        let admin = webhost_storage_tests::backends::postgres_admin_url()?;
        let database = webhost_storage_tests::backends::PostgresDatabase::create(&admin).await;
        (database.url().to_string(), Some(database))
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let cell = app
        .admin(Method::GET, &format!("/api/admin/cells/{source}"), None)
        .await;
    let registered = app
        .admin(
            Method::POST,
            "/api/admin/cells",
            Some(json!({
                "pool": cell.body["pool"],
                "region": cell.body["region"],
                "url": format!("http://127.0.0.1:{port}"),
            })),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::ACCEPTED,
        "{}",
        registered.body
    );
    let id = registered.body["id"].as_str().expect("id").to_string();
    let settings = webhost::Settings::load(&Overrides {
        data_dir: Some(app.settings.data_dir.clone()),
        listen: Some(format!("127.0.0.1:{port}")),
        control_url: Some(app.app.control.url()),
        cell_id: Some(id.clone()),
        database_url: Some(database_url),
        ..Overrides::default()
    })
    .expect("cell settings");
    let server = webhost::app::CellServer::start(&settings)
        .await
        .expect("the other engine's cell starts");
    wait_for(app, &format!("/api/admin/cells/{id}"), |c| {
        c["status"] == "active"
    })
    .await;
    Some((id, server, database))
}

async fn a_tenant_moves_to_a_cell_on_the_other_engine_and_back(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    let source = tenant_cell(&app, &account).await;
    let Some((other, server, _database)) = other_engine_cell(&app, &source).await else {
        return;
    };
    let geofence = app
        .post(
            "/api/v1/geofences",
            Some(&account.token),
            json!({ "name": "Depot", "circle": { "lat": INSIDE, "lon": 13.4, "radius_m": 1000 } }),
        )
        .await;
    assert_eq!(geofence.status, StatusCode::CREATED, "{}", geofence.body);
    let van = vehicle(&app, &account, "Van", None).await;
    for n in 0..30 {
        post_until_stored(&app, &account, &van, n).await;
    }
    // There: the move verified equal counts and checksums per table
    // across the engines before switching.
    let id = migrate(&app, &account, &other).await;
    wait_for(&app, &format!("/api/admin/migrations/{id}"), |m| {
        assert!(
            !matches!(m["state"].as_str(), Some("aborted" | "aborting")),
            "the move aborted: {m}"
        );
        m["state"] == "grace_period"
    })
    .await;
    assert_eq!(tenant_cell(&app, &account).await, other);
    for n in 30..60 {
        post_until_stored(&app, &account, &van, n).await;
    }
    // And back, within the grace period: a rollback catches the source up
    // with what the target took meanwhile, verified the same way.
    let rollback = app
        .admin(
            Method::POST,
            &format!("/api/admin/migrations/{id}/rollback"),
            None,
        )
        .await;
    assert_eq!(rollback.status, StatusCode::ACCEPTED, "{}", rollback.body);
    let back = wait_for(&app, &format!("/api/admin/migrations/{id}"), |m| {
        m["finished"] == true
    })
    .await;
    assert_eq!(back["state"], "rolled_back", "{back}");
    assert_eq!(tenant_cell(&app, &account).await, source);
    for n in 60..90 {
        post_until_stored(&app, &account, &van, n).await;
    }
    let times = stored_times(&app, &account, &van).await;
    assert_eq!(times.len(), 90);
    assert_eq!(
        geofence_events(&app, &account, &van).await,
        expected_transitions(90)
    );
    server.stop().await;
}

async fn draining_a_cell_moves_its_tenants_off_one_at_a_time(app: TestApp) {
    let first = app.signup("hobby", "DE").await;
    let second = app.signup("hobby", "DE").await;
    let source = tenant_cell(&app, &first).await;
    assert_eq!(tenant_cell(&app, &second).await, source);
    let mut vans = Vec::new();
    for account in [&first, &second] {
        let van = vehicle(&app, account, "Van", None).await;
        for n in 0..5 {
            post_until_stored(&app, account, &van, n).await;
        }
        vans.push(van);
    }
    let target = second_cell(&app, &source).await;
    let drained = app
        .admin(
            Method::POST,
            &format!("/api/admin/cells/{source}/drain"),
            None,
        )
        .await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tenant_cell(&app, &first).await != target || tenant_cell(&app, &second).await != target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenants never left the drained cell"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (account, van) in [(&first, &vans[0]), (&second, &vans[1])] {
        assert_eq!(stored_times(&app, account, van).await.len(), 5);
    }
    // One at a time: the second move started after the first switched.
    let list = app.admin(Method::GET, "/api/admin/migrations", None).await;
    let moves = list.body["items"].as_array().expect("items");
    assert_eq!(moves.len(), 2, "{}", list.body);
    let switched = |m: &Value| {
        m["progress"]["timings"]
            .as_array()
            .and_then(|t| t.iter().find(|s| s["state"] == "switching"))
            .and_then(|s| s["ended_at"].as_str())
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .expect("switched")
    };
    let created = |m: &Value| {
        m["created_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .expect("created_at")
    };
    // Newest first.
    assert!(created(&moves[0]) >= switched(&moves[1]), "{}", list.body);
}
