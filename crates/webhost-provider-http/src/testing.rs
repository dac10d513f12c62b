//! Contract tests against a provider's published API description (feature
//! `testing`, for the provider crates' dev-dependencies).
//!
//! A stateful fake can drive a whole flow (create → poll → ready), but it
//! only checks what its author thought of; Prism (`prism mock SPEC`) knows
//! the description but answers with fixed examples, which cannot drive a
//! flow. So a [`Tee`] sits between the client and the fake: every request
//! goes to the fake, whose answer the client gets, and the same request
//! goes to [`Prism`], whose verdict is recorded. A test runs its flow and
//! then asserts that [`Tee::violations`] and [`Tee::undescribed`] are
//! empty.
//!
//! Prism is found at `$WEBHOST_PRISM`, else `<repo>/node_modules/.bin/prism`
//! (`npm ci` at the repo root installs it). Without it the test is skipped
//! with a note — except under `CI=true` or with `WEBHOST_PRISM` set, where a
//! missing Prism is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in <repo>/crates/")
        .to_path_buf()
}

/// A description in `specs/providers/` (`hetzner-cloud.openapi.json`,
/// `fly-machines.openapi.yaml`).
pub fn provider_spec(file: &str) -> PathBuf {
    repo_root().join("specs/providers").join(file)
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// How long Prism may take to parse a description and listen (the Hetzner
/// one takes seconds; a loaded 2-core machine, more). Not a test threshold:
/// only how long to wait before calling Prism broken.
const STARTUP: Duration = Duration::from_secs(120);

/// `prism mock` serving one description on a free local port; killed when
/// dropped.
pub struct Prism {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prism {
    /// Starts Prism on `spec` and waits until it answers. `None` when Prism
    /// is not installed (the reason is printed; the test should return and
    /// pass).
    ///
    /// # Panics
    ///
    /// When Prism is missing under `CI=true` or although `WEBHOST_PRISM`
    /// names it (a missing tool there is a failure, not a skip), or when it
    /// is installed but does not start.
    pub async fn start(spec: &Path) -> Option<Prism> {
        let binary = match std::env::var_os("WEBHOST_PRISM").filter(|v| !v.is_empty()) {
            Some(explicit) => {
                let binary = PathBuf::from(explicit);
                assert!(
                    binary.exists(),
                    "WEBHOST_PRISM={} does not exist",
                    binary.display()
                );
                binary
            }
            None => {
                let binary = repo_root().join("node_modules/.bin/prism");
                if !binary.exists() {
                    let why = format!(
                        "Prism is not installed ({} is missing; run `npm ci` at the repo root \
                         or set WEBHOST_PRISM)",
                        binary.display()
                    );
                    assert!(
                        !running_in_ci(),
                        "{why}, but CI=true: contract tests must run in CI"
                    );
                    eprintln!("SKIPPED: {why}");
                    return None;
                }
                binary
            }
        };
        assert!(spec.exists(), "no API description at {}", spec.display());

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Prism logs every request; a file never fills up the way an
        // unread pipe would.
        let log =
            std::env::temp_dir().join(format!("webhost-prism-{}-{port}.log", std::process::id()));
        let output = std::fs::File::create(&log).expect("Prism's log file");
        let child = Command::new(&binary)
            .args(["mock", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--verboseLevel", "warn"])
            .arg(spec)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut prism = Prism {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        prism.wait_until_up().await;
        Some(prism)
    }

    /// Where Prism listens (`http://127.0.0.1:<port>`), the description's
    /// paths right under it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What Prism has logged (warnings and errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_until_up(&mut self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("Prism's state") {
                panic!("Prism exited ({status}) before answering:\n{}", self.log());
            }
            // Any HTTP answer (a 404 for `/`) means it is listening.
            if http.get(&self.url).send().await.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < STARTUP,
                "Prism did not answer within {} s:\n{}",
                STARTUP.as_secs(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What the tee has seen.
#[derive(Default)]
struct Record {
    seen: Vec<String>,
    violations: Vec<String>,
    undescribed: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    http: reqwest::Client,
    upstream: String,
    prism: String,
    strip_prefix: String,
    record: Arc<Mutex<Record>>,
}

/// An HTTP server that forwards every request to `upstream` (the test's
/// fake, whose answer it returns) and to Prism (whose verdict it records).
/// Stops when dropped.
pub struct Tee {
    url: String,
    record: Arc<Mutex<Record>>,
    server: tokio::task::JoinHandle<()>,
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 5] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

impl Tee {
    /// A tee on `127.0.0.1:<free port>` in front of `upstream` (the fake's
    /// base URL, no trailing slash). `strip_prefix` is taken off the path for
    /// Prism only: the description's paths omit its server's base path (Fly:
    /// the client sends `/v1/apps/…`, the description has `/apps/…`).
    pub async fn start(upstream: &str, prism: &Prism, strip_prefix: &str) -> Tee {
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = Shared {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            upstream: upstream.trim_end_matches('/').to_string(),
            prism: prism.url().to_string(),
            strip_prefix: strip_prefix.trim_end_matches('/').to_string(),
            record: record.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the tee");
        let url = format!("http://{}", listener.local_addr().expect("tee address"));
        let router = axum::Router::new().fallback(tee).with_state(shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the tee");
        });
        Tee {
            url,
            record,
            server,
        }
    }

    /// Where to point the client (`http://127.0.0.1:<port>`; add the API's
    /// base path, e.g. `/v1`, as the real endpoint has it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests the description does not allow, each as `METHOD /path?query:
    /// <status> <Prism's answer>` (which names the field and the rule).
    /// Also here: requests Prism could not check (it failed or is gone) —
    /// a check not made is not a pass.
    pub fn violations(&self) -> Vec<String> {
        self.record.lock().expect("tee record").violations.clone()
    }

    /// Requests to a path or method the description does not have, each
    /// once, as `METHOD /path` (the path as Prism saw it, without query).
    pub fn undescribed(&self) -> Vec<String> {
        self.record.lock().expect("tee record").undescribed.clone()
    }

    /// Every request that went through, as `METHOD /path?query` (the path as
    /// the client sent it), so a test can show its flow was checked at all.
    pub fn seen(&self) -> Vec<String> {
        self.record.lock().expect("tee record").seen.clone()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn tee(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, 64 * 1024 * 1024).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("tee: {e}")).into_response(),
    };
    let path = parts.uri.path().to_string();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let prism_path = path
        .strip_prefix(shared.strip_prefix.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(&path);
    let prism_path = if prism_path.is_empty() {
        "/"
    } else {
        prism_path
    };
    // `Prefer: code=…` would make Prism answer as asked instead of with its
    // own verdict; a client never sends it to the real API anyway.
    let mut prism_headers = headers.clone();
    prism_headers.remove(HeaderName::from_static("prefer"));

    let to_prism = shared
        .http
        .request(
            parts.method.clone(),
            format!("{}{prism_path}{query}", shared.prism),
        )
        .headers(prism_headers)
        .body(body.clone())
        .send();
    let to_upstream = shared
        .http
        .request(
            parts.method.clone(),
            format!("{}{path}{query}", shared.upstream),
        )
        .headers(headers)
        .body(body)
        .send();
    let (verdict, answer) = tokio::join!(
        async {
            let response = to_prism.await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        },
        to_upstream
    );

    let method = parts.method.as_str();
    {
        let mut record = shared.record.lock().expect("tee record");
        record.seen.push(format!("{method} {path}{query}"));
        match verdict {
            Err(e) => record.violations.push(format!(
                "{method} {path}{query}: Prism could not check it: {e}"
            )),
            Ok((status, text)) => match judge(status.as_u16(), &text) {
                Verdict::Valid => {}
                Verdict::Undescribed => {
                    let what = format!("{method} {prism_path}");
                    if !record.undescribed.contains(&what) {
                        record.undescribed.push(what);
                    }
                }
                Verdict::Violation => record
                    .violations
                    .push(format!("{method} {path}{query}: {status} {text}")),
            },
        }
    }

    match answer {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response
                .body(Body::from(bytes))
                .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, format!("tee: {e}")).into_response())
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("tee: the fake did not answer: {e}"),
        )
            .into_response(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Violation,
    Undescribed,
}

/// Prism's answer read as a verdict on the request. Prism validates every
/// request before it mocks an answer: a valid one gets the operation's
/// 2xx example; an invalid one a 4xx — 422 (or the description's own 400 /
/// `4XX` answer) for a parameter or body that breaks a rule, 401 for a
/// missing or wrong `Authorization`, 415 for a content type the operation
/// does not take, 406 for an `Accept` it cannot serve. A path or method
/// the description lacks is `NO_PATH_MATCHED_ERROR` (404) or
/// `NO_METHOD_MATCHED_ERROR` (405). Anything Prism fails at (5xx) counts as
/// a violation: the request was not shown valid.
fn judge(status: u16, body: &str) -> Verdict {
    if body.contains("#NO_PATH_MATCHED_ERROR") || body.contains("#NO_METHOD_MATCHED_ERROR") {
        return Verdict::Undescribed;
    }
    if (200..400).contains(&status) {
        Verdict::Valid
    } else {
        Verdict::Violation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisms_answers_are_read_as_verdicts() {
        assert_eq!(judge(200, "{}"), Verdict::Valid);
        assert_eq!(judge(201, "{}"), Verdict::Valid);
        assert_eq!(judge(204, ""), Verdict::Valid);
        assert_eq!(
            judge(
                422,
                r#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY"}"#
            ),
            Verdict::Violation
        );
        assert_eq!(
            judge(
                401,
                r#"{"type":"https://stoplight.io/prism/errors#UNAUTHORIZED"}"#
            ),
            Verdict::Violation
        );
        assert_eq!(judge(400, r#"{"error":"example"}"#), Verdict::Violation);
        assert_eq!(
            judge(
                404,
                r#"{"type":"https://stoplight.io/prism/errors#NO_PATH_MATCHED_ERROR"}"#
            ),
            Verdict::Undescribed
        );
        assert_eq!(
            judge(
                405,
                r#"{"type":"https://stoplight.io/prism/errors#NO_METHOD_MATCHED_ERROR"}"#
            ),
            Verdict::Undescribed
        );
        assert_eq!(judge(500, "boom"), Verdict::Violation);
    }
}
