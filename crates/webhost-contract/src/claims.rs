//! The claims of the two kinds of token. Minting and checking (keys,
//! algorithms, validation) is `webhost-http::auth`; what a token says is
//! part of the contract, because one service mints what another checks.

use serde::{Deserialize, Serialize};
use webhost_domain::{ApiKeyId, TenantId, UserId};

/// Who a request speaks for, as the edge established it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    User(UserId),
    ApiKey(ApiKeyId),
    /// The operator, authenticated by the edge (the admin token).
    Operator,
}

/// A user token (issued by the control plane, checked by the edge).
#[derive(Debug, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: UserId,
    pub tid: TenantId,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// An internal credential: one request, to one service, for a minute.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InternalClaims {
    /// [`crate::EDGE`], [`crate::CONTROL`] or [`crate::CELL`].
    pub iss: String,
    /// The service the credential is for: [`crate::CONTROL`] or
    /// [`crate::cell_audience`].
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<TenantId>,
    /// The acting user or API key. Not `sub`: that registered claim must be
    /// a string, and this is structured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Subject>,
    /// Method and path the credential is bound to.
    pub htm: String,
    pub htu: String,
    pub iat: i64,
    pub exp: i64,
}
