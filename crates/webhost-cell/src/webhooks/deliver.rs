//! The `deliver_webhook` job: one event to one webhook, signed, over
//! HTTP(S), every attempt logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use url::Host;
use webhost_domain::{EventId, JobId, TenantId};
use webhost_jobs::{Backoff, Handler, JobContext, JobError};
use webhost_storage::{
    AttemptVerdict, CellStore, EventType, Job, StorageError, WebhookAttempt, WebhookAttemptId,
    WebhookId,
};

use super::target;

/// One delivery's whole exchange: resolve, connect, TLS, request, answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// What is read of a receiver's answer at most (and then dropped).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Attempts per event: the first and 7 retries, 30 s doubling to an hour
/// (≈ 2 h in all).
pub const MAX_ATTEMPTS: u32 = 8;
/// Events in a row whose every attempt failed before the webhook is
/// disabled.
pub const DISABLE_AFTER_FAILED_EVENTS: u32 = 5;

pub const SIGNATURE_HEADER: &str = "webhost-signature";
pub const EVENT_ID_HEADER: &str = "webhost-event-id";
pub const EVENT_TYPE_HEADER: &str = "webhost-event-type";
pub const USER_AGENT_VALUE: &str = "WebHost-Webhooks/1";

/// What a `deliver_webhook` job carries: the event as `GET /api/v1/events`
/// shows it, so a delivery needs no other read than the webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub tenant_id: TenantId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub event: serde_json::Value,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The body of a delivery: the same bytes for every attempt.
pub(crate) fn body(delivery: JobId, created_at: DateTime<Utc>, payload: &Payload) -> Vec<u8> {
    let body = serde_json::json!({
        "id": delivery,
        "type": payload.event_type,
        "created_at": created_at,
        "data": payload.event,
    });
    body.to_string().into_bytes()
}

/// The HTTP side of deliveries: TLS roots, and whether private targets are
/// allowed.
#[derive(Clone)]
pub(crate) struct Outbound {
    allow_private: bool,
    tls: tokio_rustls::TlsConnector,
}

/// What one attempt got.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Outbound {
    pub fn new(allow_private: bool) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            allow_private,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// POSTs `body` to `url` with `headers`: 10 s in all, the answer read up
    /// to 64 KiB, redirects not followed (a 3xx is a failed attempt).
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Answer {
        match tokio::time::timeout(TIMEOUT, self.exchange(url, headers, body)).await {
            Ok(Ok(status)) => Answer {
                status: Some(status),
                error: None,
            },
            Ok(Err(error)) => Answer {
                status: None,
                error: Some(error),
            },
            Err(_) => Answer {
                status: None,
                error: Some(format!("no answer within {TIMEOUT:?}")),
            },
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<u16, String> {
        let target = target::parse(url).map_err(|e| format!("url {}", e.message))?;
        // Checked now, on what the name resolves to now; and the connection
        // goes to one of exactly these addresses.
        let addresses = target::resolve(&target, self.allow_private)
            .await
            .map_err(|why| format!("refused: {why}"))?;
        let tcp = connect(&addresses).await?;
        let io: Box<dyn Io> = if target.https() {
            let name = match target.host() {
                Host::Domain(name) => rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| format!("invalid TLS server name: {e}"))?,
                Host::Ipv4(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Host::Ipv6(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            };
            Box::new(
                self.tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let authority = match target.url.port() {
            Some(port) => format!("{}:{port}", target.host()),
            None => target.host().to_string(),
        };
        let path = &target.url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut request = hyper::Request::post(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(CONNECTION, "close");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        send(io, request).await
    }
}

async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = format!("connecting to {address}: {err}"),
        }
    }
    Err(last)
}

/// One HTTP/1.1 exchange on `io`, the connection driven here (no task is
/// left behind): the status, after reading at most [`MAX_ANSWER_BYTES`].
async fn send(io: Box<dyn Io>, request: hyper::Request<Full<Bytes>>) -> Result<u16, String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let mut answer = response.into_body();
        let mut read = 0;
        while read < MAX_ANSWER_BYTES {
            match answer.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                // The status is what counts; a broken body does not undo it.
                Some(Err(_)) | None => break,
            }
        }
        Ok::<u16, String>(status)
    };
    tokio::pin!(exchange);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        ended = &mut connection => match ended {
            // Closed after answering: the answer is already with `exchange`.
            Ok(()) => exchange.await,
            Err(e) => Err(format!("HTTP: {e}")),
        },
    }
}

/// Runs `deliver_webhook` jobs.
pub(crate) struct DeliverWebhook {
    store: Arc<dyn CellStore>,
    outbound: Outbound,
}

impl DeliverWebhook {
    pub fn new(store: Arc<dyn CellStore>, outbound: Outbound) -> Self {
        Self { store, outbound }
    }
}

#[async_trait]
impl Handler for DeliverWebhook {
    fn kind() -> &'static str {
        "deliver_webhook"
    }

    fn max_attempts() -> u32 {
        MAX_ATTEMPTS
    }

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(30),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<(), JobError> {
        let payload: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(anyhow::anyhow!("bad payload: {e}")))?;
        let webhook = match self
            .store
            .webhook(payload.tenant_id, payload.webhook_id)
            .await
        {
            Ok(webhook) => webhook,
            // Deleted (or its tenant was) since the event: nothing to do.
            Err(StorageError::NotFound(_)) => return Ok(()),
            Err(err) => return Err(JobError::retry(err)),
        };
        if !webhook.enabled {
            // Deliveries queued before it was disabled are dropped, not
            // kept for later: enabling it again starts from new events.
            tracing::debug!(webhook = %webhook.id, "webhook disabled; delivery dropped");
            return Ok(());
        }
        let body = Bytes::from(body(job.id, job.created_at, &payload));
        let at = Utc::now();
        let headers = [
            (
                SIGNATURE_HEADER,
                signature(&webhook.secret, at.timestamp(), &body),
            ),
            (EVENT_ID_HEADER, payload.event_id.to_string()),
            (EVENT_TYPE_HEADER, payload.event_type.to_string()),
        ];
        let started = Instant::now();
        let answer = self.outbound.post(&webhook.url, &headers, body).await;
        let duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let attempt = WebhookAttempt {
            id: WebhookAttemptId::new(),
            webhook_id: webhook.id,
            delivery_id: job.id,
            event_id: payload.event_id,
            event_type: payload.event_type,
            attempt: ctx.attempt(),
            status_code: answer.status,
            error: answer.error.clone(),
            duration_ms,
            at,
        };
        let delivered = attempt.delivered();
        let failure = match (&answer.status, &answer.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".into(),
        };
        let verdict = if delivered {
            AttemptVerdict::Delivered
        } else if ctx.attempt() < job.max_attempts {
            AttemptVerdict::WillRetry
        } else {
            AttemptVerdict::GaveUp {
                disable_after: DISABLE_AFTER_FAILED_EVENTS,
                reason: format!(
                    "disabled at {}: {DISABLE_AFTER_FAILED_EVENTS} events in a row failed all \
                     {} delivery attempts; the last attempt got: {failure}",
                    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    job.max_attempts,
                ),
            }
        };
        match self
            .store
            .record_webhook_attempt(payload.tenant_id, attempt, verdict)
            .await
        {
            Ok(after) if !after.enabled && !delivered => {
                tracing::warn!(webhook = %after.id, reason = ?after.disabled_reason, "webhook disabled");
            }
            Ok(_) => {}
            Err(StorageError::NotFound(_)) => return Ok(()),
            // The receiver may have the event already; a retry sends it
            // again with the same id, which receivers dedupe by.
            Err(err) => return Err(JobError::retry(err)),
        }
        if delivered {
            Ok(())
        } else {
            Err(JobError::retry(anyhow::anyhow!(
                "delivering to webhook {}: {failure}",
                webhook.id
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_scheme() {
        // The example of docs/WEBHOOKS.md: recomputed there with openssl.
        let sig = signature("whsec_test", 1_700_000_000, br#"{"id":"x"}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=80e8d098018f757aa814ab1abb924f35d304affa1d93d29611a54696207eb7c3"
        );
    }
}
