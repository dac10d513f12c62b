//! Signup, login and API keys.

use std::num::NonZeroU32;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::StatusCode;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webhost_api::{
    json_answer, Anonymous, ById, Deleted, Endpoint, Json, NoBody, NoParams, Operation, Verb,
};
use webhost_contract::{hash_api_key, API_KEY_PREFIX};
use webhost_domain::{
    ApiKeyId, CompanyName, CountryCode, Email, Password, PlanName, RegionCode, TenantId, UserId,
};
use webhost_http::auth::TenantCaller;
use webhost_http::ApiError;
use webhost_storage::{
    ApiKey, CellStatus, NewApiKey, NewTenant, NewUser, StorageError, Tenant, TenantStatus, User,
    UserRole,
};

use crate::cells::{place_tenant, push_limits};
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

/// A new customer: the company, its owner, the plan and where it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    company: String,
    email: String,
    password: String,
    plan: String,
    /// ISO 3166-1 alpha-2; picks the region (US → iad, DE → fra, SG → sin, …).
    country: String,
    /// Data residency: a region of the plan's pool instead of the
    /// country's default.
    #[serde(default)]
    region: Option<String>,
}

/// The new tenant, with the cell it is placed on.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantView {
    #[serde(flatten)]
    tenant: Tenant,
    cell: String,
}

/// A signed-up customer: 201 when its cell is up, 202 while the cell is
/// still being made (the tenant turns `active` by itself).
#[derive(Serialize, ToSchema)]
pub(crate) struct SignupResponse {
    tenant: TenantView,
    user: User,
    token: String,
    token_expires_in: i64,
    /// The API key's secret: shown here once, stored only as a hash.
    api_key: String,
    api_key_id: ApiKeyId,
}

/// `POST /api/v1/signup`.
pub(crate) struct Signup;

impl Operation<ControlState, Anonymous> for Signup {
    type Params = NoParams;
    type Body = Json<SignupBody>;
    type Output = SignupResponse;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/signup",
        "signup",
        "account",
        "Creates a customer: tenant, owner, first API key; placed on a cell that fits the plan",
    )
    .status(StatusCode::CREATED);

    async fn call(
        state: &ControlState,
        _: &Anonymous,
        _: NoParams,
        Json(body): Json<SignupBody>,
    ) -> Result<SignupResponse, ApiError> {
        signup(state, body).await
    }

    fn respond(output: SignupResponse) -> Response {
        let status = if output.tenant.tenant.status == TenantStatus::Active {
            StatusCode::CREATED
        } else {
            StatusCode::ACCEPTED
        };
        json_answer(status, &output)
    }

    fn document(operation: &mut utoipa::openapi::path::Operation) {
        operation.responses.responses.insert(
            "202".into(),
            utoipa::openapi::ResponseBuilder::new()
                .description(
                    "Signed up; the tenant's cell is still being made, the tenant is \
                     `provisioning` (GET /api/v1/subscription shows the progress)",
                )
                .into(),
        );
    }
}

async fn signup(state: &ControlState, body: SignupBody) -> Result<SignupResponse, ApiError> {
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
    let cell = place_tenant(state, &catalog, &plan, &placement).await?;

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

    // A cell still being made creates the tenant when it turns active
    // (`cells::ProvisionCell`); the signup answers 202 meanwhile. Read the
    // cell again: it may have turned active since it was picked, before
    // this tenant existed to be created there.
    let cell = state.store.cell(cell.id).await?;
    let status = if cell.status == CellStatus::Provisioning {
        TenantStatus::Provisioning
    } else {
        // The cell must know the tenant before the tenant can use it; if it
        // cannot be told, nothing of the signup stays behind.
        if let Err(err) = push_limits(&state.cells, &cell, tenant_id, &plan).await {
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
        TenantStatus::Active
    };

    let token = state
        .tokens
        .issue(user.id, tenant_id)
        .map_err(ApiError::unexpected)?;
    tracing::info!(%tenant_id, plan = %tenant.plan, cell = %cell.name, status = status.as_str(), "tenant signed up");
    Ok(SignupResponse {
        tenant: TenantView {
            tenant: Tenant { status, ..tenant },
            cell: cell.name,
        },
        user,
        token,
        token_expires_in: state.tokens.ttl_secs(),
        api_key: key.secret,
        api_key_id: api_key.id,
    })
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

/// A user token (JWT) for `Authorization: Bearer`.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    token: String,
    /// Seconds.
    expires_in: i64,
    user: User,
}

/// `POST /api/v1/login`.
pub(crate) struct Login;

impl Operation<ControlState, Anonymous> for Login {
    type Params = NoParams;
    type Body = Json<LoginBody>;
    type Output = LoginResponse;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/login",
        "login",
        "account",
        "Exchanges email and password for a token (limited per email: 5, then one every 3 minutes)",
    );

    async fn call(
        state: &ControlState,
        _: &Anonymous,
        _: NoParams,
        Json(body): Json<LoginBody>,
    ) -> Result<LoginResponse, ApiError> {
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
        Ok(LoginResponse {
            token,
            expires_in: state.tokens.ttl_secs(),
            user,
        })
    }
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    /// What the key is for; "api key" when left out.
    #[serde(default)]
    name: Option<String>,
}

/// A created key, with its secret: shown this once, stored only hashed.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    key: ApiKey,
    secret: String,
}

webhost_api::list_page!(
    /// The tenant's API keys, newest first, revoked ones included.
    pub(crate) struct ApiKeyPage of ApiKey
);

/// `GET /api/v1/api-keys`.
pub(crate) struct ListApiKeys;

impl Operation<ControlState> for ListApiKeys {
    type Params = NoParams;
    type Body = NoBody;
    type Output = ApiKeyPage;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/api-keys",
        "apiKeys",
        "account",
        "The tenant's API keys (prefixes only; secrets are never shown again)",
    );

    async fn call(
        state: &ControlState,
        caller: &TenantCaller,
        _: NoParams,
        _: NoBody,
    ) -> Result<ApiKeyPage, ApiError> {
        Ok(ApiKeyPage::whole(
            state.store.api_keys(caller.tenant).await?,
        ))
    }
}

/// `POST /api/v1/api-keys`.
pub(crate) struct CreateApiKey;

impl Operation<ControlState> for CreateApiKey {
    type Params = NoParams;
    type Body = Option<Json<CreateKeyBody>>;
    type Output = CreatedKey;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/api-keys",
        "createApiKey",
        "account",
        "Creates an API key; its secret is in this answer only",
    )
    .status(StatusCode::CREATED);

    async fn call(
        state: &ControlState,
        caller: &TenantCaller,
        _: NoParams,
        body: Option<Json<CreateKeyBody>>,
    ) -> Result<CreatedKey, ApiError> {
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
        Ok(CreatedKey {
            key,
            secret: secret.secret,
        })
    }
}

/// `DELETE /api/v1/api-keys/{id}`.
pub(crate) struct RevokeApiKey;

impl Operation<ControlState> for RevokeApiKey {
    type Params = ById;
    type Body = NoBody;
    type Output = Deleted;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/v1/api-keys/{id}",
        "revokeApiKey",
        "account",
        "Revokes an API key at once",
    )
    .status(StatusCode::NO_CONTENT);

    async fn call(
        state: &ControlState,
        caller: &TenantCaller,
        params: ById,
        _: NoBody,
    ) -> Result<Deleted, ApiError> {
        let id: ApiKeyId = params
            .id
            .parse()
            .map_err(|_| ApiError::not_found("api key"))?;
        state.store.revoke_api_key(caller.tenant, id).await?;
        Ok(Deleted { id: params.id })
    }
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
