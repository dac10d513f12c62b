//! The OpenAPI side of the declarations.

use std::sync::Arc;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr,
    Required, ResponseBuilder, Schema,
};
use utoipa::ToSchema;

use crate::{schema_of, Components, Declared, Verb};

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

pub(crate) fn document<S>(
    title: &str,
    version: &str,
    operations: &[Arc<dyn Declared<S>>],
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
    let built = built
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A user token from POST /api/v1/login, or an API key (whk_…)",
                    ))
                    .build(),
            ),
        )
        .build();
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
        .security(Some([SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}
