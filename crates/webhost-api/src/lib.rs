//! One declaration per API operation. A resource module implements
//! [`Operation`] once for each thing it does — typed parameters, body and
//! answer, with their schemas derived by `utoipa` — and this crate turns the
//! set of declarations into:
//!
//! - the REST routes ([`Api::router`]): path and query parameters parsed
//!   together into `Params`, the JSON body into `Body`, the answer as JSON
//!   with the declared status;
//! - the OpenAPI 3.1 document ([`Api::openapi`], served at
//!   `GET /api/openapi.json`);
//! - the GraphQL schema ([`Api::graphql`], `POST /api/graphql`): each
//!   operation is a root query or mutation field whose arguments are the
//!   parameters (and the body as one input argument), whose type is built
//!   from the answer's schema. Field names are camelCase, enum values
//!   UPPER_CASE; the data is the REST answer's.
//!
//! Adding a resource is writing its operations; no route table, no OpenAPI
//! path and no GraphQL type is written by hand.
//!
//! Each operation chooses its caller: the `C` of [`Operation<S, C>`], an
//! axum extractor rejecting with an [`ApiError`]. It is
//! [`TenantCaller`] unless said otherwise (a tenant's request, signed by the
//! edge); [`Anonymous`] for what anyone may call (signup, login); any type of
//! the service's own (the operator's). An [`Api<S, C>`] gathers operations of
//! one caller type: the REST handler extracts `C` before anything else,
//! GraphQL resolvers find it in the request's data, and the OpenAPI document
//! names the security scheme it stands for ([`Api::security`]). A service
//! with several kinds of callers builds one `Api` per kind and serves one
//! document for all of them ([`merge_openapi`]).

mod graphql;
mod openapi;
mod rest;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use webhost_http::auth::TenantCaller;
use webhost_http::{ApiError, ApiJson};

pub use graphql::{graphiql_page, GraphqlSchema};
pub use openapi::merge_openapi;
pub use rest::RestRequest;

/// Schemas a declaration refers to, by name (OpenAPI `components`).
pub type Components = Vec<(String, RefOr<Schema>)>;

/// The HTTP methods operations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// Whether an operation reads (a GraphQL query) or changes (a mutation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Query,
    Mutation,
}

/// Where and how an operation is reached.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub verb: Verb,
    /// With `{name}` for path parameters, which must be fields of `Params`.
    /// Names may differ between paths that share a prefix (`{id}` and
    /// `{vehicle_id}/positions`): routes match by position.
    pub path: &'static str,
    /// The REST status of a success.
    pub status: StatusCode,
    /// The GraphQL root field, also the OpenAPI `operationId`.
    pub name: &'static str,
    pub kind: Kind,
    /// The resource, for grouping (OpenAPI tag).
    pub tag: &'static str,
    pub summary: &'static str,
    /// The GraphQL argument the body is given as.
    pub body_argument: &'static str,
}

impl Endpoint {
    /// A declaration with the common defaults: 200, a query for GET and a
    /// mutation otherwise, the body as `input`.
    pub const fn new(
        verb: Verb,
        path: &'static str,
        name: &'static str,
        tag: &'static str,
        summary: &'static str,
    ) -> Self {
        Self {
            verb,
            path,
            status: StatusCode::OK,
            name,
            kind: match verb {
                Verb::Get => Kind::Query,
                _ => Kind::Mutation,
            },
            tag,
            summary,
            body_argument: "input",
        }
    }

    pub const fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub const fn body_argument(mut self, name: &'static str) -> Self {
        self.body_argument = name;
        self
    }
}

/// A future the trait objects can hold.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One thing the API does, declared once, for callers of type `C` (a
/// tenant's unless said otherwise).
pub trait Operation<S, C = TenantCaller>: Send + Sync + 'static
where
    S: Clone + Send + Sync + 'static,
{
    /// Path and query parameters together (GraphQL: the field's arguments).
    type Params: DeserializeOwned + ToSchema + Send + 'static;
    type Body: RequestBody;
    type Output: Serialize + ToSchema + Send + 'static;

    const ENDPOINT: Endpoint;

    fn call(
        state: &S,
        caller: &C,
        params: Self::Params,
        body: Self::Body,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;

    /// The REST answer to a success.
    fn respond(output: Self::Output) -> Response {
        json_answer(Self::ENDPOINT.status, &output)
    }

    /// Another REST representation than the typed answer (an export), when
    /// the request asks for one; looked at before `Params` are parsed.
    fn alternative(
        _state: &S,
        _caller: &C,
        _request: &RestRequest,
    ) -> impl Future<Output = Option<Result<Response, ApiError>>> + Send {
        async { None }
    }

    /// Adds to the OpenAPI operation what only REST has (alternatives).
    fn document(_operation: &mut utoipa::openapi::path::Operation) {}
}

/// `status` with `output` as JSON; no body for 204.
pub fn json_answer<T: Serialize>(status: StatusCode, output: &T) -> Response {
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    // Lists run to megabytes (a day's track is ~2 MB): start bigger than
    // axum's 128 bytes so that the buffer is not regrown a dozen times.
    let mut body = Vec::with_capacity(16 * 1024);
    match serde_json::to_writer(&mut body, output) {
        Ok(()) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(err) => ApiError::unexpected(err.into()).into_response(),
    }
}

/// How an operation takes a request body.
pub trait RequestBody: Sized + Send + 'static {
    /// The body's schema (adding what it refers to), `None` for no body.
    fn schema(components: &mut Components) -> Option<RefOr<Schema>>;

    fn from_request(request: Request) -> impl Future<Output = Result<Self, ApiError>> + Send;

    /// From the GraphQL argument, already converted to the REST shape.
    fn from_json(value: Option<serde_json::Value>) -> Result<Self, ApiError>;
}

/// An operation without a body.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBody;

impl RequestBody for NoBody {
    fn schema(_: &mut Components) -> Option<RefOr<Schema>> {
        None
    }

    async fn from_request(_: Request) -> Result<Self, ApiError> {
        Ok(NoBody)
    }

    fn from_json(_: Option<serde_json::Value>) -> Result<Self, ApiError> {
        Ok(NoBody)
    }
}

/// A JSON body.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T> RequestBody for Json<T>
where
    T: DeserializeOwned + ToSchema + Send + 'static,
{
    fn schema(components: &mut Components) -> Option<RefOr<Schema>> {
        Some(schema_of::<T>(components))
    }

    async fn from_request(request: Request) -> Result<Self, ApiError> {
        ApiJson::<T>::from_request(request, &())
            .await
            .map(|body| Json(body.0))
    }

    fn from_json(value: Option<serde_json::Value>) -> Result<Self, ApiError> {
        serde_json::from_value(value.unwrap_or(serde_json::Value::Null))
            .map(Json)
            .map_err(|err| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    err.to_string(),
                )
            })
    }
}

/// A JSON body that may be left out (no body, or an empty one).
impl<T> RequestBody for Option<Json<T>>
where
    T: DeserializeOwned + ToSchema + Send + 'static,
{
    fn schema(components: &mut Components) -> Option<RefOr<Schema>> {
        Json::<T>::schema(components)
    }

    async fn from_request(request: Request) -> Result<Self, ApiError> {
        let empty = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|length| length == "0")
            || (!request
                .headers()
                .contains_key(axum::http::header::CONTENT_LENGTH)
                && !request
                    .headers()
                    .contains_key(axum::http::header::TRANSFER_ENCODING));
        if empty {
            return Ok(None);
        }
        Json::<T>::from_request(request).await.map(Some)
    }

    fn from_json(value: Option<serde_json::Value>) -> Result<Self, ApiError> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            some => Json::<T>::from_json(some).map(Some),
        }
    }
}

/// `T`'s schema: a reference when `T` is a named component (added to
/// `components` with what it refers to), else inline.
pub fn schema_of<T: ToSchema>(components: &mut Components) -> RefOr<Schema> {
    T::schemas(components);
    let name = T::name();
    let schema = <T as PartialSchema>::schema();
    if name.is_empty() || !matches!(schema, RefOr::T(_)) {
        return schema;
    }
    if !components.iter().any(|(known, _)| *known == name) {
        components.push((name.to_string(), schema));
    }
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

/// Operations without parameters.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The `{id}` of one item.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ById {
    /// The item's id.
    #[schema(format = Uuid)]
    pub id: String,
}

/// What deleting answers (REST: 204 without a body).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
}

/// Declares a named list-page type `{data: [T], next_cursor}`; named, so
/// that OpenAPI components and GraphQL types get distinct names.
#[macro_export]
macro_rules! list_page {
    ($(#[$meta:meta])* $vis:vis struct $name:ident of $item:ty) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::utoipa::ToSchema)]
        $vis struct $name {
            pub data: Vec<$item>,
            /// Give it as `cursor` for the next page; `null` on the last.
            pub next_cursor: Option<String>,
        }

        impl $name {
            /// Everything in one page.
            pub fn whole(data: Vec<$item>) -> Self {
                Self { data, next_cursor: None }
            }
        }
    };
}

/// A caller anyone is: the extractor always succeeds. For what needs no
/// credential (signup, login); an [`Api`] of anonymous callers declares no
/// security in its OpenAPI document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anonymous;

impl<S: Send + Sync> FromRequestParts<S> for Anonymous {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Anonymous)
    }
}

/// The HTTP bearer scheme an API's callers authenticate with (OpenAPI
/// `components.securitySchemes` and each operation's `security`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Security {
    pub(crate) name: &'static str,
    pub(crate) description: Option<&'static str>,
}

/// The scheme of tenants' callers: what the edge accepts from them.
const TENANT_SECURITY: Security = Security {
    name: "bearer",
    description: Some("A user token from POST /api/v1/login, or an API key (whk_…)"),
};

/// What the API layer needs of an operation, without its types.
trait Declared<S, C>: Send + Sync {
    fn endpoint(&self) -> Endpoint;
    fn route(&self) -> axum::routing::MethodRouter<S>;
    fn schemas(&self, components: &mut Components) -> OperationSchemas;
    fn document(&self, operation: &mut utoipa::openapi::path::Operation);
    /// GraphQL: arguments in their REST shape in, the answer as JSON out.
    fn invoke(
        &self,
        state: S,
        caller: C,
        params: serde_json::Value,
        body: Option<serde_json::Value>,
    ) -> BoxFuture<Result<serde_json::Value, ApiError>>;
}

struct OperationSchemas {
    params: RefOr<Schema>,
    body: Option<RefOr<Schema>>,
    output: RefOr<Schema>,
}

struct Declaration<O>(std::marker::PhantomData<fn() -> O>);

impl<S, C, O> Declared<S, C> for Declaration<O>
where
    S: Clone + Send + Sync + 'static,
    C: FromRequestParts<S, Rejection = ApiError> + Clone + Send + Sync + 'static,
    O: Operation<S, C>,
{
    fn endpoint(&self) -> Endpoint {
        O::ENDPOINT
    }

    fn route(&self) -> axum::routing::MethodRouter<S> {
        axum::routing::on(O::ENDPOINT.verb.filter(), rest::handle::<S, C, O>)
    }

    fn schemas(&self, components: &mut Components) -> OperationSchemas {
        OperationSchemas {
            params: schema_inline::<O::Params>(components),
            body: O::Body::schema(components),
            output: schema_of::<O::Output>(components),
        }
    }

    fn document(&self, operation: &mut utoipa::openapi::path::Operation) {
        O::document(operation);
    }

    fn invoke(
        &self,
        state: S,
        caller: C,
        params: serde_json::Value,
        body: Option<serde_json::Value>,
    ) -> BoxFuture<Result<serde_json::Value, ApiError>> {
        Box::pin(async move {
            let params: O::Params = serde_json::from_value(params)
                .map_err(|err| ApiError::bad_request("invalid_arguments", err.to_string()))?;
            let body = O::Body::from_json(body)?;
            let output = O::call(&state, &caller, params, body).await?;
            serde_json::to_value(output).map_err(|err| ApiError::unexpected(err.into()))
        })
    }
}

/// `T`'s own schema inline (parameters are listed one by one), with what it
/// refers to added to `components`.
fn schema_inline<T: ToSchema>(components: &mut Components) -> RefOr<Schema> {
    T::schemas(components);
    <T as PartialSchema>::schema()
}

/// A set of declared operations of callers of type `C`: an API.
pub struct Api<S, C = TenantCaller> {
    title: &'static str,
    version: &'static str,
    security: Option<Security>,
    operations: Vec<Arc<dyn Declared<S, C>>>,
}

impl<S, C> Api<S, C>
where
    S: Clone + Send + Sync + 'static,
    C: FromRequestParts<S, Rejection = ApiError> + Clone + Send + Sync + 'static,
{
    /// An API without operations yet. Its OpenAPI security is the tenants'
    /// `bearer` scheme, or none when `C` is [`Anonymous`]; [`Api::security`]
    /// and [`Api::without_security`] say otherwise.
    pub fn new(title: &'static str, version: &'static str) -> Self {
        let anonymous = std::any::TypeId::of::<C>() == std::any::TypeId::of::<Anonymous>();
        Self {
            title,
            version,
            security: (!anonymous).then_some(TENANT_SECURITY),
            operations: Vec::new(),
        }
    }

    /// Documents the callers as authenticating with the HTTP bearer scheme
    /// `name` (say `adminToken`): in `components.securitySchemes`, and as
    /// every operation's `security`.
    pub fn security(mut self, name: &'static str, description: &'static str) -> Self {
        self.security = Some(Security {
            name,
            description: Some(description),
        });
        self
    }

    /// Documents the operations as needing no credential (`security: []`).
    pub fn without_security(mut self) -> Self {
        self.security = None;
        self
    }

    /// Declares `O` part of the API.
    ///
    /// # Panics
    /// When another operation has the same name or method and path: a
    /// programming error, found by the first test that builds the API.
    pub fn operation<O: Operation<S, C>>(mut self) -> Self {
        let new = O::ENDPOINT;
        for known in self.operations.iter().map(|o| o.endpoint()) {
            assert!(
                known.name != new.name,
                "two operations are named {}",
                new.name
            );
            assert!(
                known.path != new.path || known.verb != new.verb,
                "two operations answer {:?} {}",
                new.verb,
                new.path
            );
        }
        self.operations
            .push(Arc::new(Declaration::<O>(std::marker::PhantomData)));
        self
    }

    /// The REST routes of every operation.
    pub fn router(&self) -> axum::Router<S> {
        let mut paths: std::collections::BTreeMap<String, axum::routing::MethodRouter<S>> =
            std::collections::BTreeMap::new();
        for operation in &self.operations {
            let path = rest::route_path(operation.endpoint().path);
            let route = match paths.remove(&path) {
                Some(existing) => existing.merge(operation.route()),
                None => operation.route(),
            };
            paths.insert(path, route);
        }
        paths
            .into_iter()
            .fold(axum::Router::new(), |router, (path, route)| {
                router.route(&path, route)
            })
    }

    /// The OpenAPI 3.1 document of the API.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        openapi::document(self.title, self.version, self.security, &self.operations)
    }

    /// The GraphQL schema of the API.
    ///
    /// # Errors
    /// When the declarations do not make a valid schema (a programming
    /// error: two types of one name, say), with what is wrong.
    pub fn graphql(&self) -> Result<GraphqlSchema<C>, String> {
        graphql::build(&self.operations)
    }

    /// `POST {endpoint}`: GraphQL requests of a `C` caller (extracted as the
    /// REST routes do), answered `200 {"data", "errors"}` as GraphQL over
    /// HTTP does.
    ///
    /// # Errors
    /// As [`Api::graphql`].
    pub fn graphql_router(&self, endpoint: &str) -> Result<axum::Router<S>, String> {
        let schema = self.graphql()?;
        let execute =
            move |caller: C,
                  axum::extract::State(state): axum::extract::State<S>,
                  ApiJson(request): ApiJson<async_graphql::Request>| {
                let schema = schema.clone();
                async move {
                    if request.query.trim().is_empty() {
                        return ApiError::bad_request(
                        "missing_query",
                        "send the GraphQL document as {\"query\": \"...\", \"variables\": {...}}",
                    )
                    .into_response();
                    }
                    axum::Json(schema.execute(state, caller, request).await).into_response()
                }
            };
        Ok(axum::Router::new().route(endpoint, axum::routing::post(execute)))
    }
}
