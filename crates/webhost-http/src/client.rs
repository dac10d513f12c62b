//! The HTTP client for calls between the parts (edge → cell, control → cell,
//! cell → control). Every call carries a freshly minted internal credential;
//! remote and local cells are reached the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use webhost_domain::TenantId;

use crate::auth::{InternalKeys, Subject, INTERNAL_HEADER};

/// Plain HTTP/1 client with connection pooling, buffered bodies.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

#[derive(Clone)]
pub struct InternalClient {
    http: HttpClient,
    keys: Arc<InternalKeys>,
    issuer: &'static str,
    timeout: Duration,
}

/// One internal call: `base_url` + `path`, addressed to `audience`.
pub struct InternalRequest<'a> {
    pub method: Method,
    pub base_url: &'a str,
    pub path: &'a str,
    pub audience: &'a str,
    pub tenant: Option<TenantId>,
    pub subject: Option<Subject>,
}

#[derive(Debug)]
pub struct InternalResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl InternalResponse {
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "decoding a {} answer: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The answer if it is a success, an error naming status and body if not.
    pub fn success(self) -> anyhow::Result<Self> {
        if self.status.is_success() {
            Ok(self)
        } else {
            anyhow::bail!(
                "internal call answered {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        }
    }
}

impl InternalClient {
    pub fn new(keys: Arc<InternalKeys>, issuer: &'static str) -> Self {
        Self {
            http: http_client(),
            keys,
            issuer,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn keys(&self) -> &Arc<InternalKeys> {
        &self.keys
    }

    pub fn issuer(&self) -> &'static str {
        self.issuer
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub async fn call<B: Serialize>(
        &self,
        request: InternalRequest<'_>,
        body: Option<&B>,
    ) -> anyhow::Result<InternalResponse> {
        let credential = self.keys.mint(
            self.issuer,
            request.audience,
            &request.method,
            request.path.split('?').next().unwrap_or(request.path),
            request.tenant,
            request.subject,
        )?;
        let url = format!("{}{}", request.base_url.trim_end_matches('/'), request.path);
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(&url)
            .header(INTERNAL_HEADER, credential);
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(serde_json::to_vec(body)?))
            }
            None => Full::new(Bytes::new()),
        };
        let send = self.http.request(builder.body(body)?);
        let response = tokio::time::timeout(self.timeout, send)
            .await
            .with_context(|| format!("{} {url} timed out", request.method))?
            .with_context(|| format!("{} {url}", request.method))?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .with_context(|| format!("reading {url} timed out"))?
            .with_context(|| format!("reading {url}"))?
            .to_bytes();
        Ok(InternalResponse { status, body })
    }
}
