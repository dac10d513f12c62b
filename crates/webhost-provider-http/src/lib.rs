//! How WebHost calls an infrastructure provider's API (Hetzner Cloud and
//! Robot, Fly.io Machines): every request has a timeout; what may pass —
//! timeouts, connection errors, `408`, `429`, `5xx`, Robot's `403
//! RATE_LIMIT_EXCEEDED` — is tried again with exponential backoff and
//! jitter, waiting at least what `Retry-After` asks; a spent rate limit
//! (`RateLimit-Remaining: 0`, Hetzner Cloud) holds the next request until
//! `RateLimit-Reset`. A wait longer than a call should block becomes a
//! [`Throttled`] error, on which the provisioning job waits without
//! counting an attempt. Any other answer is the caller's to read: a `404`
//! may mean "already gone", a `422` a refusal ([`Answer::ok`]).
//!
//! Written here rather than taken from `reqwest-retry`, which decides its
//! delays without seeing the answer, so it cannot honour `Retry-After`
//! (TrueLayer/reqwest-middleware#146) or rate-limit headers.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::HeaderMap;

pub use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
pub use webhost_provider::{Refused, Throttled};

#[cfg(feature = "testing")]
pub mod testing;

/// How a provider authenticates its callers.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer([redacted])"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, [redacted])"),
        }
    }
}

/// Timeouts and retries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first retry's delay; each next one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest a call waits in place (for `Retry-After` or a rate-limit
    /// reset); longer, and the call returns [`Throttled`].
    pub max_wait_in_place: Duration,
    /// Per request, connection to last byte.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_wait_in_place: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Empty,
    Json(&'a serde_json::Value),
    /// `application/x-www-form-urlencoded` (Hetzner Robot).
    Form(&'a [(&'a str, String)]),
}

/// An answer that is not a transient failure.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// What was asked, for error messages.
    what: String,
}

impl Answer {
    /// This answer if it is a success, else the provider's refusal with its
    /// body (what a human needs to fix it): a [`Refused`] for a `4xx`
    /// (final: the job fails with it), a plain error otherwise.
    pub fn ok(self) -> anyhow::Result<Self> {
        if self.status.is_success() {
            return Ok(self);
        }
        let body = String::from_utf8_lossy(&self.body)
            .chars()
            .take(2000)
            .collect::<String>();
        if self.status.is_client_error() {
            return Err(Refused {
                what: self.what,
                status: self.status.as_u16(),
                body,
            }
            .into());
        }
        anyhow::bail!("{} was refused: {} {body}", self.what, self.status)
    }

    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "{} answered {} with a body we cannot read ({e}): {}",
                self.what,
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One provider's API.
pub struct ProviderClient {
    http: reqwest::Client,
    /// What the errors call it (`Hetzner Cloud`, `Fly Machines`, …).
    name: &'static str,
    base: String,
    auth: Auth,
    policy: RetryPolicy,
    /// Requests wait until then (a spent rate limit).
    not_before: Mutex<Option<Instant>>,
}

/// Why one try did not give an answer to hand back.
enum Transient {
    /// Try again after at least this long (`None`: the backoff decides).
    /// `ambiguous`: the request may have been carried out (no answer in
    /// time, a connection lost, 500/502/504), so only an idempotent request
    /// may simply be sent again.
    Retry {
        after: Option<Duration>,
        why: String,
        ambiguous: bool,
    },
}

/// A create that may or may not have been carried out: no answer in time,
/// a lost connection, a 500/502/504. Look for what it would have made
/// before trying again ([`ProviderClient::create`] does).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why} (it may or may not have been done)")]
pub struct Ambiguous {
    pub what: String,
    pub why: String,
}

/// What [`ProviderClient::create`] ended with.
pub enum Created<T> {
    /// The provider's answer to the create (a success or a refusal).
    Answer(Answer),
    /// What an earlier try whose answer was lost had made.
    Found(T),
}

impl ProviderClient {
    /// A client for the API at `base` (no trailing slash needed).
    pub fn new(
        name: &'static str,
        base: impl Into<String>,
        auth: Auth,
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("webhost/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            name,
            base: base.into().trim_end_matches('/').to_string(),
            auth,
            policy,
            not_before: Mutex::new(None),
        })
    }

    /// Sends `method path` with `body`, retrying what may pass; returns the
    /// first answer that is not a transient failure, whatever its status.
    /// For idempotent requests (GET, PUT, DELETE, and POSTs that set
    /// values); a POST that makes something goes through [`Self::create`].
    pub async fn send(&self, method: Method, path: &str, body: Body<'_>) -> anyhow::Result<Answer> {
        self.send_inner(method, path, body, true).await
    }

    /// `POST path` with `body` to make something, never twice: a try that
    /// may have been carried out is not simply repeated — `find` looks for
    /// what it would have made first, and only if nothing is there is the
    /// POST sent again. Clear failures (429, 503, …) are retried as `send`
    /// does.
    pub async fn create<T, Find, Fut>(
        &self,
        path: &str,
        body: &serde_json::Value,
        find: Find,
    ) -> anyhow::Result<Created<T>>
    where
        Find: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        self.create_with(path, Body::Json(body), find).await
    }

    /// [`Self::create`] with any body (Hetzner Robot's orders are forms).
    pub async fn create_with<T, Find, Fut>(
        &self,
        path: &str,
        body: Body<'_>,
        find: Find,
    ) -> anyhow::Result<Created<T>>
    where
        Find: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let tries = self.policy.attempts.max(1);
        let mut last = None;
        for _ in 0..tries {
            match self.send_inner(Method::POST, path, body, false).await {
                Ok(answer) => return Ok(Created::Answer(answer)),
                Err(err) if err.is::<Ambiguous>() => {
                    tracing::warn!(provider = self.name, path, error = %err, "create may have happened; looking before trying again");
                    if let Some(found) = find().await? {
                        return Ok(Created::Found(found));
                    }
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{} POST {path}: no try was made", self.name)))
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        retry_ambiguous: bool,
    ) -> anyhow::Result<Answer> {
        let what = format!("{} {method} {path}", self.name);
        let mut last = String::new();
        for attempt in 0..self.policy.attempts.max(1) {
            self.wait_for_rate_limit()?;
            match self.try_once(&method, path, body, &what).await {
                Ok(answer) => return Ok(answer),
                Err(Transient::Retry {
                    after,
                    why,
                    ambiguous,
                }) => {
                    if ambiguous && !retry_ambiguous {
                        return Err(Ambiguous { what, why }.into());
                    }
                    last = why;
                    if attempt + 1 == self.policy.attempts.max(1) {
                        break;
                    }
                    let delay = after.unwrap_or_else(|| self.backoff(attempt));
                    if delay > self.policy.max_wait_in_place {
                        return Err(anyhow::Error::new(Throttled { retry_after: delay })
                            .context(format!("{what}: {last}")));
                    }
                    tracing::warn!(provider = self.name, %method, path, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, why = %last, "provider call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        anyhow::bail!(
            "{what} failed {} times; last: {last}",
            self.policy.attempts.max(1)
        )
    }

    /// Refuses to wait in place for a spent rate limit that resets later
    /// than a call should block (the wait itself is in `try_once`).
    fn wait_for_rate_limit(&self) -> anyhow::Result<()> {
        let until = *self.not_before.lock().expect("rate limit lock");
        let Some(until) = until else {
            return Ok(());
        };
        let left = until.saturating_duration_since(Instant::now());
        if left > self.policy.max_wait_in_place {
            return Err(anyhow::Error::new(Throttled { retry_after: left })
                .context(format!("{}: rate limit spent", self.name)));
        }
        Ok(())
    }

    async fn try_once(
        &self,
        method: &Method,
        path: &str,
        body: Body<'_>,
        what: &str,
    ) -> Result<Answer, Transient> {
        let not_before = *self.not_before.lock().expect("rate limit lock");
        if let Some(until) = not_before {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                tokio::time::sleep(left).await;
            }
        }
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        request = match &self.auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        request = match body {
            Body::Empty => request,
            Body::Json(value) => request.json(value),
            Body::Form(fields) => request.form(fields),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let why = if err.is_timeout() {
                    format!("no answer within {} s", self.policy.timeout.as_secs_f32())
                } else {
                    format!("{err}")
                };
                // A request that failed to connect was never sent.
                let ambiguous = !err.is_connect();
                return Err(Transient::Retry {
                    after: None,
                    why,
                    ambiguous,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        self.note_rate_limit(&headers);
        let body = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            Err(err) => {
                return Err(Transient::Retry {
                    after: None,
                    why: format!("reading the answer: {err}"),
                    ambiguous: true,
                })
            }
        };
        let throttled_403 = status == StatusCode::FORBIDDEN
            && String::from_utf8_lossy(&body).contains("RATE_LIMIT_EXCEEDED");
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
            || throttled_403
        {
            // These say the request was not carried out; 500, 502 and 504
            // do not say.
            let ambiguous = matches!(status.as_u16(), 500 | 502 | 504);
            return Err(Transient::Retry {
                ambiguous,
                after: retry_after(&headers),
                why: format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(500)
                        .collect::<String>()
                ),
            });
        }
        Ok(Answer {
            status,
            headers,
            body,
            what: what.to_string(),
        })
    }

    /// `RateLimit-Remaining: 0` with `RateLimit-Reset` (a Unix time):
    /// nothing more until then.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut not_before = self.not_before.lock().expect("rate limit lock");
        match (number("ratelimit-remaining"), number("ratelimit-reset")) {
            (Some(0), Some(reset)) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                *not_before = Some(Instant::now() + Duration::from_secs(reset.saturating_sub(now)));
            }
            (Some(_), _) => *not_before = None,
            _ => {}
        }
    }

    /// Exponential, capped, with jitter (half fixed, half random), so
    /// retries of many cells do not arrive together.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .policy
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.policy.max_delay);
        let half = full / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// `Retry-After` in seconds (the HTTP-date form falls back to the backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
