//! Signup, login and API keys.

use std::num::NonZeroU32;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use webhost_contract::{hash_api_key, API_KEY_PREFIX};
use webhost_domain::{
    ApiKeyId, CompanyName, CountryCode, Email, Password, PlanName, RegionCode, TenantId, UserId,
};
use webhost_http::auth::TenantCaller;
use webhost_http::{ApiError, ApiJson};
use webhost_storage::{
    ApiKey, NewApiKey, NewTenant, NewUser, StorageError, Tenant, TenantStatus, User, UserRole,
};

use crate::provider::place_tenant;
use crate::ControlState;

/// A freshly generated API key; the secret is shown once and never stored.
pub struct ApiKeySecret {
    pub secret: String,
    pub hash: [u8; 32],
    pub prefix: String,
}

impl ApiKeySecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
        Self {
            hash: hash_api_key(&secret),
            prefix: secret[..API_KEY_PREFIX.len() + 8].to_string(),
            secret,
        }
    }
}

fn hash_password(password: &Password) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// argon2's verification compares in constant time.
fn verify_password(password: &Password, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Hashed once, so that a login for an unknown email costs as much as one
/// for a known email and timing does not reveal which accounts exist.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password(&Password::parse_attempt("not-a-real-password").expect("valid"))
        .expect("hashing works")
});

/// Login attempts per email: a burst of 5, then one every 3 minutes.
pub(crate) struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl LoginLimiter {
    pub(crate) fn new() -> Self {
        let quota = Quota::per_hour(NonZeroU32::new(20).expect("non-zero"))
            .allow_burst(NonZeroU32::new(5).expect("non-zero"));
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    fn check(&self, email: &Email) -> Result<(), ApiError> {
        self.limiter
            .check_key(&email.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::too_many_requests(
                    wait.as_secs() + 1,
                    "too many login attempts for this account; wait and try again",
                )
            })?;
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    company: String,
    email: String,
    password: String,
    plan: String,
    country: String,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct TenantView {
    #[serde(flatten)]
    tenant: Tenant,
    cell: String,
}

#[derive(Serialize)]
pub(crate) struct SignupResponse {
    tenant: TenantView,
    user: User,
    token: String,
    token_expires_in: i64,
    /// The API key's secret: shown here once, stored only as a hash.
    api_key: String,
    api_key_id: ApiKeyId,
}

pub(crate) async fn signup(
    State(state): State<ControlState>,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<(StatusCode, ApiJson<SignupResponse>), ApiError> {
    let company = CompanyName::parse(&body.company)?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse_new(&body.password)?;
    let plan_name = PlanName::parse(&body.plan)?;
    let country = CountryCode::parse(&body.country)?;
    let requested = body.region.as_deref().map(RegionCode::parse).transpose()?;

    let catalog = state.store.catalog().await?;
    let plan = catalog
        .plan(&plan_name)
        .map_err(|e| ApiError {
            field: Some("plan"),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_plan",
                e.to_string(),
            )
        })?
        .clone();
    let placement = catalog
        .place(&plan_name, &country, requested.as_ref())
        .map_err(|e| ApiError {
            field: Some("region"),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "region_not_offered",
                e.to_string(),
            )
        })?;

    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::unexpected(e.into()))?
        .map_err(ApiError::unexpected)?;
    let cell = place_tenant(&state, &catalog, &plan, &placement).await?;

    let tenant_id = TenantId::new();
    let key = ApiKeySecret::generate();
    let (tenant, user, api_key) = state
        .store
        .create_tenant(
            NewTenant {
                id: tenant_id,
                company,
                plan: plan_name,
                country,
                pool: placement.pool.clone(),
                region: placement.region.clone(),
                regions: placement.regions.clone(),
                cell_id: cell.id,
            },
            NewUser {
                id: UserId::new(),
                email,
                role: UserRole::Owner,
                password_hash,
            },
            NewApiKey {
                id: ApiKeyId::new(),
                tenant_id,
                name: "default".into(),
                prefix: key.prefix.clone(),
                hash: key.hash,
            },
        )
        .await?;

    // The cell must know the tenant before the tenant can use it; if it
    // cannot be told, nothing of the signup stays behind.
    if let Err(err) = crate::subscription::push_limits(&state, &cell, tenant_id, &plan).await {
        tracing::error!(error = format!("{err:#}"), cell = %cell.name, "creating tenant on cell failed");
        if let Err(cleanup) = state.store.delete_tenant(tenant_id).await {
            tracing::error!(error = %cleanup, %tenant_id, "could not roll back failed signup");
        }
        return Err(ApiError::unavailable(
            "the tenant's cell is not reachable right now; nothing was created, try again shortly",
        ));
    }
    state
        .store
        .set_tenant_status(tenant_id, TenantStatus::Active)
        .await?;

    let token = state
        .tokens
        .issue(user.id, tenant_id)
        .map_err(ApiError::unexpected)?;
    tracing::info!(%tenant_id, plan = %tenant.plan, cell = %cell.name, "tenant signed up");
    Ok((
        StatusCode::CREATED,
        ApiJson(SignupResponse {
            tenant: TenantView {
                tenant: Tenant {
                    status: TenantStatus::Active,
                    ..tenant
                },
                cell: cell.name,
            },
            user,
            token,
            token_expires_in: state.tokens.ttl_secs(),
            api_key: key.secret,
            api_key_id: api_key.id,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub(crate) struct LoginResponse {
    token: String,
    expires_in: i64,
    user: User,
}

pub(crate) async fn login(
    State(state): State<ControlState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<ApiJson<LoginResponse>, ApiError> {
    let email = Email::parse(&body.email)?;
    let password = Password::parse_attempt(&body.password)?;
    state.login_limiter.check(&email)?;

    let credentials = match state.store.user_by_email(&email).await {
        Ok(found) => Some(found),
        Err(StorageError::NotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    let phc = credentials
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.clone());
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::unexpected(e.into()))?;
    let user = match credentials {
        Some(c) if valid => c.user,
        _ => return Err(ApiError::unauthorized("the email or the password is wrong")),
    };
    let token = state
        .tokens
        .issue(user.id, user.tenant_id)
        .map_err(ApiError::unexpected)?;
    Ok(ApiJson(LoginResponse {
        token,
        expires_in: state.tokens.ttl_secs(),
        user,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    key: ApiKey,
    /// Shown once.
    secret: String,
}

pub(crate) async fn list_api_keys(
    caller: TenantCaller,
    State(state): State<ControlState>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    let keys = state.store.api_keys(caller.tenant).await?;
    Ok(ApiJson(
        serde_json::json!({ "data": keys, "next_cursor": null }),
    ))
}

pub(crate) async fn create_api_key(
    caller: TenantCaller,
    State(state): State<ControlState>,
    body: Option<ApiJson<CreateKeyBody>>,
) -> Result<(StatusCode, ApiJson<CreatedKey>), ApiError> {
    let name = body
        .and_then(|b| b.0.name)
        .unwrap_or_else(|| "api key".into());
    let name = webhost_domain::ShortText::parse("name", &name)?.to_string();
    let secret = ApiKeySecret::generate();
    let key = state
        .store
        .create_api_key(NewApiKey {
            id: ApiKeyId::new(),
            tenant_id: caller.tenant,
            name,
            prefix: secret.prefix.clone(),
            hash: secret.hash,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedKey {
            key,
            secret: secret.secret,
        }),
    ))
}

pub(crate) async fn revoke_api_key(
    caller: TenantCaller,
    State(state): State<ControlState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ApiKeyId = id.parse().map_err(|_| ApiError::not_found("api key"))?;
    state.store.revoke_api_key(caller.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_prefixed_random_and_hashed() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert!(a.secret.starts_with(API_KEY_PREFIX));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash_api_key(&a.secret));
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.secret.len(), API_KEY_PREFIX.len() + 48);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let password = Password::parse_new("correct horse battery").unwrap();
        let phc = hash_password(&password).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&password, &phc));
        let wrong = Password::parse_attempt("wrong horse battery").unwrap();
        assert!(!verify_password(&wrong, &phc));
    }
}
