//! The OpenAPI side of the declarations.

use std::collections::BTreeMap;
use std::sync::Arc;

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr,
    Required, ResponseBuilder, Schema,
};
use utoipa::ToSchema;

use crate::{schema_of, Components, Declared, Security, Verb};

/// The error body every failure has (SPEC §4).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
struct Error {
    error: ErrorDetail,
}

#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// Stable, machine-readable (`vehicle_not_found`, `invalid_query`, …).
    code: String,
    /// What is wrong and how to fix it.
    message: String,
    /// The input field at fault, when there is one.
    field: Option<String>,
}

fn method(verb: Verb) -> HttpMethod {
    match verb {
        Verb::Get => HttpMethod::Get,
        Verb::Post => HttpMethod::Post,
        Verb::Patch => HttpMethod::Patch,
        Verb::Put => HttpMethod::Put,
        Verb::Delete => HttpMethod::Delete,
    }
}

/// Each property of a parameters object becomes a path parameter when the
/// path names it, a query parameter otherwise.
fn parameters(path: &str, params: &RefOr<Schema>) -> Vec<utoipa::openapi::path::Parameter> {
    let RefOr::T(Schema::Object(object)) = params else {
        return Vec::new();
    };
    object
        .properties
        .iter()
        .map(|(name, schema)| {
            let in_path = path.contains(&format!("{{{name}}}"));
            let description = match schema {
                RefOr::T(Schema::Object(property)) => property.description.clone(),
                _ => None,
            };
            ParameterBuilder::new()
                .name(name)
                .parameter_in(if in_path {
                    ParameterIn::Path
                } else {
                    ParameterIn::Query
                })
                .required(if in_path || object.required.contains(name) {
                    Required::True
                } else {
                    Required::False
                })
                .description(description)
                .schema(Some(schema.clone()))
                .build()
        })
        .collect()
}

/// The security requirements of an operation of an API secured by
/// `security`: the scheme's name, or explicitly none.
fn requirements(security: Option<Security>) -> Vec<SecurityRequirement> {
    security
        .map(|s| SecurityRequirement::new(s.name, Vec::<String>::new()))
        .into_iter()
        .collect()
}

pub(crate) fn document<S, C>(
    title: &str,
    version: &str,
    security: Option<Security>,
    operations: &[Arc<dyn Declared<S, C>>],
) -> OpenApi {
    let mut components: Components = Vec::new();
    let error = schema_of::<Error>(&mut components);
    let mut paths = PathsBuilder::new();
    for declared in operations {
        let endpoint = declared.endpoint();
        let schemas = declared.schemas(&mut components);
        let mut operation = OperationBuilder::new()
            .operation_id(Some(endpoint.name))
            .summary(Some(endpoint.summary))
            .tag(endpoint.tag)
            .parameters(Some(parameters(endpoint.path, &schemas.params)));
        if let Some(body) = schemas.body {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(body)).build(),
                    )
                    .build(),
            ));
        }
        let mut success = ResponseBuilder::new().description(endpoint.summary);
        if endpoint.status != axum::http::StatusCode::NO_CONTENT {
            success = success.content(
                "application/json",
                ContentBuilder::new().schema(Some(schemas.output)).build(),
            );
        }
        let failure = ResponseBuilder::new()
            .description("The input is wrong (the message says what to fix), the credential is missing or the item does not exist")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(error.clone())).build(),
            );
        let mut operation = operation
            .response(endpoint.status.as_str(), success.build())
            .response("4XX", failure.build())
            .build();
        // Before the operation's own additions, which may say otherwise.
        operation.security = Some(requirements(security));
        declared.document(&mut operation);
        paths = paths.path(
            endpoint.path,
            utoipa::openapi::PathItem::new(method(endpoint.verb), operation),
        );
    }
    let mut built = ComponentsBuilder::new();
    for (name, schema) in components {
        built = built.schema(name, schema);
    }
    if let Some(security) = security {
        built = built.security_scheme(
            security.name,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(security.description)
                    .build(),
            ),
        );
    }
    let built = built.build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .version(version)
                .description(Some(
                    "Every resource is the caller's tenant's. Errors are {\"error\": {\"code\", \"message\"}}. \
                     The same operations are GraphQL fields at POST /api/graphql.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(built))
        .security(security.map(|_| requirements(security)))
        .build()
}

/// The operations of a path, by method.
fn operations_mut(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 8] {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
}

/// Adds `more` to `into`, once a name.
///
/// # Panics
/// When a name stands for two different things.
fn merge_named<T: PartialEq>(
    into: &mut BTreeMap<String, T>,
    more: BTreeMap<String, T>,
    what: &str,
) {
    for (name, value) in more {
        match into.get(&name) {
            Some(known) => assert!(
                *known == value,
                "two different {what} are named {name} in the merged OpenAPI documents"
            ),
            None => {
                into.insert(name, value);
            }
        }
    }
}

/// One OpenAPI document describing the operations of several (typically
/// [`Api::openapi`](crate::Api::openapi) of APIs with different callers),
/// titled `title` and `version`. The description is the first document's
/// that has one. Each operation keeps the security it had: its own, or its
/// document's (the merged document has no top-level `security`). Components
/// of one name must be the same in every document; tags are kept once.
///
/// # Panics
/// When two documents declare the same method and path, or the same
/// `operationId`, or two different components (schemas, responses, security
/// schemes) of one name: programming errors, found by the first test that
/// merges the documents.
pub fn merge_openapi(
    title: &str,
    version: &str,
    documents: impl IntoIterator<Item = OpenApi>,
) -> OpenApi {
    let mut merged = OpenApiBuilder::new()
        .info(InfoBuilder::new().title(title).version(version).build())
        .build();
    let mut components = utoipa::openapi::Components::new();
    let mut operation_ids: BTreeMap<String, String> = BTreeMap::new();
    for document in documents {
        if merged.info.description.is_none() {
            merged.info.description = document.info.description;
        }
        for (path, mut item) in document.paths.paths {
            for (method, operation) in operations_mut(&mut item) {
                let Some(operation) = operation else {
                    continue;
                };
                if operation.security.is_none() {
                    operation.security = document.security.clone();
                }
                if let Some(id) = &operation.operation_id {
                    let at = format!("{method} {path}");
                    if let Some(known) = operation_ids.insert(id.clone(), at.clone()) {
                        panic!("two operations have the operationId {id}: {known} and {at}");
                    }
                }
            }
            match merged.paths.paths.get_mut(&path) {
                None => {
                    merged.paths.paths.insert(path, item);
                }
                Some(known) => {
                    for ((method, known), (_, more)) in operations_mut(known)
                        .into_iter()
                        .zip(operations_mut(&mut item))
                    {
                        if more.is_some() {
                            assert!(known.is_none(), "two operations answer {method} {path}");
                            *known = more.take();
                        }
                    }
                }
            }
        }
        if let Some(more) = document.components {
            merge_named(&mut components.schemas, more.schemas, "schemas");
            merge_named(&mut components.responses, more.responses, "responses");
            merge_named(
                &mut components.security_schemes,
                more.security_schemes,
                "security schemes",
            );
        }
        for tag in document.tags.into_iter().flatten() {
            let tags = merged.tags.get_or_insert_with(Vec::new);
            if !tags.iter().any(|known| known.name == tag.name) {
                tags.push(tag);
            }
        }
        if merged.servers.is_none() {
            merged.servers = document.servers;
        }
        if merged.external_docs.is_none() {
            merged.external_docs = document.external_docs;
        }
    }
    merged.components = Some(components);
    merged
}
