//! The REST side of a declaration: one generic handler per operation.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use webhost_http::ApiError;

use crate::{Operation, RequestBody};

/// A REST request before its parameters are parsed.
pub struct RestRequest {
    /// Path parameters, by name.
    pub path: Vec<(String, String)>,
    /// The raw query string.
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl RestRequest {
    /// The value of a query parameter, decoded.
    pub fn query_value(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Path and query parameters together, as `T` (a struct whose fields
    /// are the parameters; unknown ones are refused when `T` says so).
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.path {
            encoded.append_pair(name, value);
        }
        let mut encoded = encoded.finish();
        if let Some(query) = self.query.as_deref().filter(|q| !q.is_empty()) {
            if !encoded.is_empty() {
                encoded.push('&');
            }
            encoded.push_str(query);
        }
        serde_urlencoded::from_str(&encoded)
            .map_err(|err| ApiError::bad_request("invalid_query", err.to_string()))
    }
}

/// The names of a template's path parameters, in order.
fn param_names(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The route the router matches for `template`: parameters named by
/// position, so that templates sharing a prefix never conflict over names.
pub(crate) fn route_path(template: &str) -> String {
    let mut index = 0;
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                index += 1;
                format!("{{p{index}}}")
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The caller is extracted first: a request it refuses goes no further.
pub(crate) async fn handle<S, C, O>(
    caller: C,
    State(state): State<S>,
    path: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
) -> Response
where
    S: Clone + Send + Sync + 'static,
    C: FromRequestParts<S, Rejection = ApiError> + Clone + Send + Sync + 'static,
    O: Operation<S, C>,
{
    match answer::<S, C, O>(caller, state, path, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn answer<S, C, O>(
    caller: C,
    state: S,
    path: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
) -> Result<Response, ApiError>
where
    S: Clone + Send + Sync + 'static,
    C: FromRequestParts<S, Rejection = ApiError> + Clone + Send + Sync + 'static,
    O: Operation<S, C>,
{
    let path = match path {
        Ok(params) => param_names(O::ENDPOINT.path)
            .zip(params.iter())
            .map(|(name, (_, value))| (name.to_owned(), value.to_owned()))
            .collect(),
        Err(RawPathParamsRejection::MissingPathParams(_)) => Vec::new(),
        Err(other) => return Err(ApiError::bad_request("invalid_path", other.body_text())),
    };
    let rest = RestRequest {
        path,
        query: request.uri().query().map(str::to_owned),
        headers: request.headers().clone(),
    };
    if let Some(answer) = O::alternative(&state, &caller, &rest).await {
        return answer;
    }
    let params: O::Params = rest.params()?;
    let body = O::Body::from_request(request).await?;
    let output = O::call(&state, &caller, params, body).await?;
    Ok(O::respond(output))
}
