//! The call discipline against a local fake that answers from a script:
//! what is retried, how long it waits, what is handed back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use reqwest::Method;
use webhost_provider_http::{Auth, Body, ProviderClient, RetryPolicy, Throttled};

/// One scripted answer.
#[derive(Clone)]
enum Step {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// Answers only after this long (longer than the client's timeout).
    Stall(Duration),
}

fn answer(status: u16, body: &'static str) -> Step {
    Step::Answer {
        status,
        headers: vec![],
        body,
    }
}

#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<(Instant, HeaderMap, String)>>>,
}

impl Fake {
    fn seen(&self) -> Vec<(Instant, HeaderMap, String)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    fake.seen
        .lock()
        .unwrap()
        .push((Instant::now(), headers, body));
    let step = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(answer(200, "{}"));
    match step {
        Step::Stall(how_long) => {
            tokio::time::sleep(how_long).await;
            (StatusCode::OK, "{\"late\": true}").into_response()
        }
        Step::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_str(&value).unwrap());
            }
            response
        }
    }
}

/// A fake serving `script`, and a client of it with quick retries.
async fn fake(script: Vec<Step>, auth: Auth) -> (Fake, ProviderClient) {
    let fake = Fake {
        script: Arc::new(Mutex::new(script.into())),
        ..Fake::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback(handle).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = ProviderClient::new(
        "Fake Cloud",
        url,
        auth,
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait_in_place: Duration::from_secs(2),
            timeout: Duration::from_millis(300),
        },
    )
    .unwrap();
    (fake, client)
}

fn bearer() -> Auth {
    Auth::Bearer("token-1".into())
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after_says() {
    let (fake, client) = fake(
        vec![Step::Answer {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: "{\"error\": {\"code\": \"rate_limit_exceeded\"}}",
        }],
        bearer(),
    )
    .await;
    let json = serde_json::json!({"name": "hetzner-fsn1-2"});
    let answer = client
        .send(Method::POST, "/servers", Body::Json(&json))
        .await
        .expect("succeeds on the retry")
        .ok()
        .expect("2xx");
    assert_eq!(answer.status, 200);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one retry, no more");
    assert!(
        seen[1].0 - seen[0].0 >= Duration::from_secs(1),
        "waited as Retry-After asked"
    );
    assert_eq!(seen[1].2, json.to_string(), "the same body again");
    assert_eq!(seen[1].1["authorization"], "Bearer token-1");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_with_backoff() {
    let (fake, client) = fake(
        vec![
            answer(503, "busy"),
            Step::Stall(Duration::from_secs(2)),
            answer(502, "bad gateway"),
            answer(201, "{\"server\": {\"id\": 42}}"),
        ],
        bearer(),
    )
    .await;
    let answer = client
        .send(Method::GET, "/servers/42", Body::Empty)
        .await
        .expect("the fourth try answers");
    assert_eq!(answer.status, 201);
    let id: serde_json::Value = answer.json().expect("json");
    assert_eq!(id["server"]["id"], 42);
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn a_permanent_refusal_is_handed_back_at_once_with_its_reason() {
    let (fake, client) = fake(
        vec![answer(
            422,
            "{\"error\": {\"code\": \"invalid_input\", \"message\": \"server_type unknown\"}}",
        )],
        bearer(),
    )
    .await;
    let answer = client
        .send(Method::POST, "/servers", Body::Empty)
        .await
        .expect("an answer");
    assert_eq!(answer.status, 422);
    let err = answer.ok().expect_err("a refusal");
    let message = format!("{err:#}");
    assert!(
        message.contains("Fake Cloud POST /servers") && message.contains("server_type unknown"),
        "{message}"
    );
    assert_eq!(fake.seen().len(), 1, "not retried");
}

#[tokio::test]
async fn a_404_is_an_answer_not_an_error() {
    let (_, client) = fake(vec![answer(404, "{}")], bearer()).await;
    let answer = client
        .send(Method::DELETE, "/servers/7", Body::Empty)
        .await
        .expect("an answer");
    assert_eq!(answer.status, 404, "the caller decides: already gone");
}

#[tokio::test]
async fn giving_up_says_what_failed_last() {
    let (fake, client) = fake(vec![answer(503, "maintenance"); 4], bearer()).await;
    let err = client
        .send(Method::GET, "/actions/1", Body::Empty)
        .await
        .expect_err("four 503s");
    let message = format!("{err:#}");
    assert!(
        message.contains("failed 4 times") && message.contains("maintenance"),
        "{message}"
    );
    assert_eq!(Throttled::in_error(&err), None);
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn a_long_retry_after_is_handed_to_the_job_as_throttled() {
    let (fake, client) = fake(
        vec![Step::Answer {
            status: 503,
            headers: vec![("retry-after", "120".into())],
            body: "insufficient capacity",
        }],
        bearer(),
    )
    .await;
    let started = Instant::now();
    let err = client
        .send(Method::POST, "/apps/x/machines", Body::Empty)
        .await
        .expect_err("too long to wait in place");
    assert_eq!(Throttled::in_error(&err), Some(Duration::from_secs(120)));
    assert!(started.elapsed() < Duration::from_secs(60), "did not wait");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn a_spent_rate_limit_holds_the_next_request_until_reset() {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let (fake, client) = fake(
        vec![Step::Answer {
            status: 200,
            headers: vec![
                ("ratelimit-limit", "3600".into()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", reset.to_string()),
            ],
            body: "{}",
        }],
        bearer(),
    )
    .await;
    client
        .send(Method::GET, "/servers", Body::Empty)
        .await
        .expect("first");
    client
        .send(Method::GET, "/servers", Body::Empty)
        .await
        .expect("second");
    let seen = fake.seen();
    // The reset is 1 to 2 s away in whole seconds.
    assert!(
        seen[1].0 - seen[0].0 >= Duration::from_millis(900),
        "held until the reset"
    );
}

#[tokio::test]
async fn robot_style_calls_send_forms_with_basic_auth_and_retry_its_403_rate_limit() {
    let (fake, client) = fake(
        vec![answer(
            403,
            "{\"error\": {\"status\": 403, \"code\": \"RATE_LIMIT_EXCEEDED\"}}",
        )],
        Auth::Basic {
            user: "robot-user".into(),
            password: "secret".into(),
        },
    )
    .await;
    let form = [
        ("product_id", "AX52".to_string()),
        ("location", "FSN1".to_string()),
    ];
    client
        .send(Method::POST, "/order/server/transaction", Body::Form(&form))
        .await
        .expect("answered after the retry")
        .ok()
        .expect("2xx");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the rate-limit 403 was retried");
    assert_eq!(seen[1].2, "product_id=AX52&location=FSN1");
    assert_eq!(
        seen[1].1["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert!(seen[1].1["authorization"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
}

#[tokio::test]
async fn a_create_that_may_have_happened_looks_before_posting_again() {
    use webhost_provider_http::Created;
    // 502 after a POST: maybe done. The lookup finds nothing, so the POST
    // goes again; then a lost answer: the lookup finds it.
    let (fake, client) = fake(
        vec![answer(502, "bad gateway"), answer(201, "{\"id\": 1}")],
        bearer(),
    )
    .await;
    let looked = std::sync::atomic::AtomicUsize::new(0);
    let created = client
        .create("/machines", &serde_json::json!({"name": "m"}), || async {
            looked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(None::<u64>)
        })
        .await
        .expect("created");
    assert!(matches!(created, Created::Answer(a) if a.status == 201));
    assert_eq!(looked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(fake.seen().len(), 2);

    let (fake, client) = fake_with_stall().await;
    let created = client
        .create("/machines", &serde_json::json!({"name": "m"}), || async {
            Ok(Some("found-it"))
        })
        .await
        .expect("found");
    assert!(matches!(created, Created::Found("found-it")));
    assert_eq!(fake.seen().len(), 1, "not posted twice");
}

async fn fake_with_stall() -> (Fake, ProviderClient) {
    fake(vec![Step::Stall(Duration::from_secs(2))], bearer()).await
}

#[tokio::test]
async fn a_503_on_create_is_retried_in_place_it_was_not_done() {
    use webhost_provider_http::Created;
    let (fake, client) = fake(vec![answer(503, "busy"), answer(201, "{}")], bearer()).await;
    let created = client
        .create("/servers", &serde_json::json!({}), || async {
            panic!("a 503 says nothing was done: no lookup");
            #[allow(unreachable_code)]
            Ok(None::<()>)
        })
        .await
        .expect("created");
    assert!(matches!(created, Created::Answer(a) if a.status == 201));
    assert_eq!(fake.seen().len(), 2);
}
