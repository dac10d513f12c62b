//! Tokens. Two kinds, with different keys so one can never pass for the other:
//!
//! - **User tokens** (JWT, HS256, `TOKEN_SIGNING_SECRET`): issued by the
//!   control plane at login/signup, checked by the edge.
//! - **Internal credentials** (JWT, HS256, a key derived from
//!   `SECRET_KEY_BASE`): minted by the edge or the control plane for one
//!   request to one service (`aud`), bound to its method and path, valid for
//!   a minute. Cells and the control plane's tenant routes accept nothing
//!   else: a bare tenant id in a header means nothing to them.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, Method};
use chrono::Utc;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::Sha256;
use webhost_contract::claims::InternalClaims;
pub use webhost_contract::claims::{Subject, UserClaims};
use webhost_domain::{TenantId, UserId};

use crate::ApiError;

/// The header carrying the internal credential.
pub const INTERNAL_HEADER: HeaderName = HeaderName::from_static("x-webhost-internal");

const USER_TOKEN_ISSUER: &str = "webhost";
const USER_TOKEN_AUDIENCE: &str = "webhost-api";
/// How long an internal credential stays valid: long enough for clock skew
/// between nodes, short enough that a captured one is soon worthless.
const INTERNAL_TTL_SECS: i64 = 60;

/// Issues and checks user tokens.
#[derive(Clone)]
pub struct UserTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl UserTokens {
    pub fn new(secret: &[u8], ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[USER_TOKEN_ISSUER]);
        validation.set_audience(&[USER_TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user: UserId, tenant: TenantId) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = UserClaims {
            sub: user,
            tid: tenant,
            iss: USER_TOKEN_ISSUER.into(),
            aud: USER_TOKEN_AUDIENCE.into(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Only HS256 with this key, unexpired, for this audience: `alg: none`
    /// and tokens signed with any other algorithm or key fail here.
    pub fn verify(&self, token: &str) -> Result<UserClaims, ApiError> {
        jsonwebtoken::decode::<UserClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                let why = match err.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the token has expired; log in again"
                    }
                    _ => "the token is not valid",
                };
                ApiError::unauthorized(why)
            })
    }
}

/// Mints and checks internal credentials.
#[derive(Clone)]
pub struct InternalKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl InternalKeys {
    /// Derives the internal key from `SECRET_KEY_BASE`, so no second secret
    /// has to be distributed and user tokens' key is never reused.
    pub fn derive(secret_key_base: &[u8]) -> Self {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret_key_base).expect("HMAC accepts any key length");
        mac.update(b"webhost internal credential v1");
        let key = mac.finalize().into_bytes();
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
        }
    }

    /// A credential for one `method path` request to `audience`.
    pub fn mint(
        &self,
        issuer: &str,
        audience: &str,
        method: &Method,
        path: &str,
        tenant: Option<TenantId>,
        subject: Option<Subject>,
    ) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = InternalClaims {
            iss: issuer.into(),
            aud: audience.into(),
            tid: tenant,
            act: subject,
            htm: method.as_str().into(),
            htu: path.into(),
            iat: now,
            exp: now + INTERNAL_TTL_SECS,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    fn verify(&self, token: &str, audience: &str, method: &Method, path: &str) -> Option<Caller> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<InternalClaims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        if claims.htm != method.as_str() || claims.htu != path {
            return None;
        }
        Some(Caller {
            issuer: claims.iss,
            tenant: claims.tid,
            subject: claims.act,
        })
    }
}

/// What a service needs to check internal credentials addressed to it.
#[derive(Clone)]
pub struct InternalAuth {
    pub keys: Arc<InternalKeys>,
    /// This service's audience: `control` or `cell:<id>`.
    pub audience: String,
}

/// A request that came with a valid internal credential.
#[derive(Clone, Debug)]
pub struct Caller {
    pub issuer: String,
    pub tenant: Option<TenantId>,
    pub subject: Option<Subject>,
}

impl<S> FromRequestParts<S> for Caller
where
    InternalAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = InternalAuth::from_ref(state);
        let token = parts
            .headers
            .get(&INTERNAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "this service accepts only requests signed by the edge or the control plane",
                )
            })?;
        auth.keys
            .verify(token, &auth.audience, &parts.method, parts.uri.path())
            .ok_or_else(|| {
                ApiError::unauthorized("the internal credential is not valid for this request")
            })
    }
}

/// Counts tenants' requests for a service that meters usage: put in the
/// request extensions (an `Extension` layer), it is told the tenant of
/// every request that extracts a [`TenantCaller`].
#[derive(Clone)]
pub struct TenantRequests(Arc<dyn Fn(TenantId) + Send + Sync>);

impl TenantRequests {
    pub fn new(count: impl Fn(TenantId) + Send + Sync + 'static) -> Self {
        Self(Arc::new(count))
    }
}

/// A caller acting for a tenant.
#[derive(Clone, Debug)]
pub struct TenantCaller {
    pub tenant: TenantId,
    pub subject: Option<Subject>,
}

impl<S> FromRequestParts<S> for TenantCaller
where
    InternalAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let tenant = caller
            .tenant
            .ok_or_else(|| ApiError::unauthorized("this endpoint needs a tenant's credentials"))?;
        if let Some(TenantRequests(count)) = parts.extensions.get::<TenantRequests>() {
            count(tenant);
        }
        Ok(Self {
            tenant,
            subject: caller.subject,
        })
    }
}

/// A caller that is the control plane itself (for a cell's internal API).
#[derive(Clone, Debug)]
pub struct ControlCaller;

impl<S> FromRequestParts<S> for ControlCaller
where
    InternalAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.issuer != webhost_contract::CONTROL {
            return Err(ApiError::forbidden(
                "only the control plane may call this endpoint",
            ));
        }
        Ok(Self)
    }
}

/// The operator, as the edge authenticated it (`/api/admin/*`).
#[derive(Clone, Copy, Debug)]
pub struct OperatorCaller;

impl<S> FromRequestParts<S> for OperatorCaller
where
    InternalAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.subject {
            Some(Subject::Operator) if caller.issuer == webhost_contract::EDGE => Ok(Self),
            _ => Err(ApiError::forbidden(
                "this is the operator API; a tenant's credentials cannot use it",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_token_round_trip_and_rejections() {
        let tokens = UserTokens::new(b"secret-one-secret-one-secret-one", 3600);
        let (user, tenant) = (UserId::new(), TenantId::new());
        let token = tokens.issue(user, tenant).unwrap();
        let claims = tokens.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.tid), (user, tenant));

        let other = UserTokens::new(b"secret-two-secret-two-secret-two", 3600);
        assert!(other.verify(&token).is_err(), "another key must not verify");

        let expired = UserTokens::new(b"secret-one-secret-one-secret-one", -3600);
        let old = expired.issue(user, tenant).unwrap();
        assert!(tokens.verify(&old).is_err(), "expired must not verify");
    }

    #[test]
    fn internal_credential_is_bound_to_audience_method_and_path() {
        let keys = InternalKeys::derive(b"base");
        let tenant = Some(TenantId::new());
        let subject = Some(Subject::User(UserId::new()));
        let token = keys
            .mint(
                "edge",
                "cell:a",
                &Method::GET,
                "/api/v1/vehicles",
                tenant,
                subject,
            )
            .unwrap();
        let ok = keys
            .verify(&token, "cell:a", &Method::GET, "/api/v1/vehicles")
            .unwrap();
        assert_eq!((ok.tenant, ok.subject), (tenant, subject));
        assert!(keys
            .verify(&token, "cell:b", &Method::GET, "/api/v1/vehicles")
            .is_none());
        assert!(keys
            .verify(&token, "cell:a", &Method::DELETE, "/api/v1/vehicles")
            .is_none());
        assert!(keys
            .verify(&token, "cell:a", &Method::GET, "/api/v1/other")
            .is_none());
        assert!(InternalKeys::derive(b"other")
            .verify(&token, "cell:a", &Method::GET, "/api/v1/vehicles")
            .is_none());
    }
}
