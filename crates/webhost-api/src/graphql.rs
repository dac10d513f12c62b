//! The GraphQL side of the declarations: an `async-graphql` dynamic schema
//! whose types are read off the same JSON schemas the OpenAPI document
//! carries, so the two cannot drift apart.
//!
//! Mapping: objects become object types (input objects get an `Input`
//! suffix), string enums become enums (values UPPER_CASE), `date-time`
//! strings the `DateTime` scalar, `uuid` strings `ID`, free-form objects and
//! genuine unions the `JSON` scalar; a property is non-null when the schema
//! requires it and does not allow `null`. Field and argument names are the
//! camelCase of the JSON names; resolvers translate both ways, so a GraphQL
//! answer carries exactly the REST answer's data.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    Schema, TypeRef,
};
use async_graphql::{ErrorExtensions, Name, Value as GqlValue};
use serde_json::{json, Value};
use webhost_http::auth::TenantCaller;
use webhost_http::ApiError;

use crate::{Components, Declared, Kind};

const DATE_TIME: &str = "DateTime";
const JSON_SCALAR: &str = "JSON";

/// Deepest query nesting accepted (the deepest type is 4 levels down).
const MAX_DEPTH: usize = 12;
/// Fields one query may select, counted with lists as one.
const MAX_COMPLEXITY: usize = 500;

/// The built schema of an [`Api`](crate::Api) of `C` callers. Resolvers
/// find the state and the caller in the request's data, so the schema itself
/// needs neither (the edge builds it for its SDL).
pub struct GraphqlSchema<C = TenantCaller>(Schema, PhantomData<fn(C)>);

impl<C> Clone for GraphqlSchema<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<C: Send + Sync + 'static> GraphqlSchema<C> {
    /// Runs one request for `caller` against `state`.
    pub async fn execute<S: Clone + Send + Sync + 'static>(
        &self,
        state: S,
        caller: C,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        self.0.execute(request.data(caller).data(state)).await
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.0.sdl()
    }
}

/// The GraphiQL page for `endpoint`, with the content security policy it
/// needs (its scripts and styles come from unpkg).
pub fn graphiql_page(endpoint: &str) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let html = async_graphql::http::GraphiQLSource::build()
        .endpoint(endpoint)
        .title("WebHost GraphQL")
        .finish();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline' https://unpkg.com; \
                 style-src 'self' 'unsafe-inline' https://unpkg.com; font-src 'self' data: https://unpkg.com; \
                 img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

#[derive(Clone, Debug)]
enum Ty {
    Scalar(&'static str),
    Enum(String),
    Object(String),
    List(Box<Shape>),
}

#[derive(Clone, Debug)]
struct Shape {
    ty: Ty,
    nullable: bool,
}

impl Shape {
    fn of(ty: Ty) -> Self {
        Self {
            ty,
            nullable: false,
        }
    }

    fn type_ref(&self) -> TypeRef {
        let inner = match &self.ty {
            Ty::Scalar(name) => TypeRef::named(*name),
            Ty::Enum(name) | Ty::Object(name) => TypeRef::named(name.clone()),
            Ty::List(item) => TypeRef::List(Box::new(item.type_ref())),
        };
        if self.nullable {
            inner
        } else {
            TypeRef::NonNull(Box::new(inner))
        }
    }
}

#[derive(Clone, Debug)]
struct FieldDef {
    json: String,
    graphql: String,
    shape: Shape,
    description: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct ObjectDef {
    fields: Vec<FieldDef>,
    description: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Input,
    Output,
}

/// The types read off the schemas, by GraphQL name.
#[derive(Default)]
struct Types {
    components: BTreeMap<String, Value>,
    outputs: BTreeMap<String, ObjectDef>,
    inputs: BTreeMap<String, ObjectDef>,
    /// JSON values of each enum.
    enums: BTreeMap<String, Vec<String>>,
    started: BTreeSet<String>,
}

fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn pascal(name: &str) -> String {
    let camel = camel(name);
    let mut chars = camel.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn enum_value(json: &str) -> String {
    json.to_uppercase()
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

fn description(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl Types {
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or(reference);
                self.components.get(name).unwrap_or(&Value::Null)
            }
            None => schema,
        }
    }

    /// Properties and required names of an object schema, `allOf` merged.
    fn properties(&self, schema: &Value) -> (Vec<(String, Value)>, BTreeSet<String>) {
        let schema = self.resolve(schema);
        let mut properties = Vec::new();
        let mut required = BTreeSet::new();
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                let (more, needed) = self.properties(part);
                properties.extend(more);
                required.extend(needed);
            }
        }
        if let Some(own) = schema.get("properties").and_then(Value::as_object) {
            properties.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(names) = schema.get("required").and_then(Value::as_array) {
            required.extend(names.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        (properties, required)
    }

    fn is_object(&self, schema: &Value) -> bool {
        let schema = self.resolve(schema);
        schema.get("allOf").is_some()
            || schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty())
    }

    fn shape(&mut self, schema: &Value, hint: &str, mode: Mode) -> Shape {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or(reference).to_owned();
            let target = self.components.get(&name).cloned().unwrap_or(Value::Null);
            return self.shape(&target, &name, mode);
        }
        let variants = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array);
        if let Some(variants) = variants {
            let present: Vec<&Value> = variants.iter().filter(|v| !is_null_schema(v)).collect();
            if let [only] = present.as_slice() {
                let mut shape = self.shape(only, hint, mode);
                shape.nullable |= present.len() < variants.len();
                return shape;
            }
            // A genuine union (no GraphQL input can be one).
            return Shape {
                ty: Ty::Scalar(JSON_SCALAR),
                nullable: true,
            };
        }
        if self.is_object(schema) {
            return Shape::of(Ty::Object(self.object(hint, schema, mode)));
        }
        let (kind, nullable) = match schema.get("type") {
            Some(Value::String(kind)) => (Some(kind.as_str()), false),
            Some(Value::Array(kinds)) => {
                let present: Vec<&str> = kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "null")
                    .collect();
                (
                    if present.len() == 1 {
                        Some(present[0])
                    } else {
                        None
                    },
                    present.len() < kinds.len(),
                )
            }
            _ => (None, false),
        };
        let format = schema.get("format").and_then(Value::as_str);
        let ty = match kind {
            Some("string") => match schema.get("enum").and_then(Value::as_array) {
                Some(values) => {
                    let values = values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    self.enums.entry(hint.to_owned()).or_insert(values);
                    Ty::Enum(hint.to_owned())
                }
                None => match format {
                    Some("date-time") => Ty::Scalar(DATE_TIME),
                    Some("uuid") => Ty::Scalar(TypeRef::ID),
                    _ => Ty::Scalar(TypeRef::STRING),
                },
            },
            Some("integer") => Ty::Scalar(TypeRef::INT),
            Some("number") => Ty::Scalar(TypeRef::FLOAT),
            Some("boolean") => Ty::Scalar(TypeRef::BOOLEAN),
            Some("array") => {
                let items = schema.get("items").cloned().unwrap_or(Value::Null);
                Ty::List(Box::new(self.shape(&items, hint, mode)))
            }
            _ => Ty::Scalar(JSON_SCALAR),
        };
        Shape { ty, nullable }
    }

    /// Registers the object type for `schema`, returning its GraphQL name.
    fn object(&mut self, name: &str, schema: &Value, mode: Mode) -> String {
        let type_name = match mode {
            Mode::Output => name.to_owned(),
            Mode::Input if name.ends_with("Input") => name.to_owned(),
            Mode::Input => format!("{name}Input"),
        };
        if !self.started.insert(type_name.clone()) {
            return type_name;
        }
        let (properties, required) = self.properties(schema);
        let mut def = ObjectDef {
            fields: Vec::new(),
            description: description(self.resolve(schema)),
        };
        for (json_name, property) in properties {
            let mut shape = self.shape(&property, &format!("{name}{}", pascal(&json_name)), mode);
            if !required.contains(&json_name) {
                shape.nullable = true;
            }
            def.fields.push(FieldDef {
                graphql: camel(&json_name),
                description: description(&property),
                json: json_name,
                shape,
            });
        }
        match mode {
            Mode::Output => self.outputs.insert(type_name.clone(), def),
            Mode::Input => self.inputs.insert(type_name.clone(), def),
        };
        type_name
    }
}

/// A GraphQL argument value in its REST (JSON) shape.
fn to_json(types: &Types, shape: &Shape, value: &GqlValue) -> Value {
    match (&shape.ty, value) {
        (_, GqlValue::Null) => Value::Null,
        (Ty::Object(name), GqlValue::Object(fields)) => {
            let def = types.inputs.get(name);
            let mut out = serde_json::Map::new();
            for (key, item) in fields {
                match def.and_then(|d| d.fields.iter().find(|f| f.graphql == key.as_str())) {
                    Some(field) => {
                        out.insert(field.json.clone(), to_json(types, &field.shape, item));
                    }
                    None => {
                        out.insert(
                            key.to_string(),
                            item.clone().into_json().unwrap_or_default(),
                        );
                    }
                }
            }
            Value::Object(out)
        }
        (Ty::List(item), GqlValue::List(items)) => {
            Value::Array(items.iter().map(|v| to_json(types, item, v)).collect())
        }
        (Ty::Enum(_), GqlValue::Enum(name)) => json!(name.as_str().to_lowercase()),
        (Ty::Enum(_), GqlValue::String(name)) => json!(name.to_lowercase()),
        (_, other) => other.clone().into_json().unwrap_or_default(),
    }
}

/// A piece of a REST answer as the value of a GraphQL field of `shape`,
/// borrowing nested objects from the answer.
fn to_field<'a>(shape: &Shape, value: &'a Value) -> Option<FieldValue<'a>> {
    if value.is_null() {
        return None;
    }
    Some(match &shape.ty {
        Ty::Object(_) => FieldValue::borrowed_any(value),
        Ty::List(item) => FieldValue::list(
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| to_field(item, v).unwrap_or(FieldValue::NULL)),
        ),
        Ty::Enum(_) => FieldValue::value(GqlValue::Enum(Name::new(enum_value(
            value.as_str().unwrap_or_default(),
        )))),
        Ty::Scalar(_) => FieldValue::value(GqlValue::from_json(value.clone()).unwrap_or_default()),
    })
}

/// A whole REST answer as the value of a root field of `shape`.
fn to_root_field(shape: &Shape, value: Value) -> Option<FieldValue<'static>> {
    match (&shape.ty, value) {
        (_, Value::Null) => None,
        (Ty::Object(_), value) => Some(FieldValue::owned_any(value)),
        (Ty::List(item), Value::Array(items)) => Some(FieldValue::list(
            items
                .into_iter()
                .map(|v| to_root_field(item, v).unwrap_or(FieldValue::NULL)),
        )),
        (_, value) => to_field(shape, &value).map(|field| match field.as_value() {
            Some(v) => FieldValue::value(v.clone()),
            None => FieldValue::NULL,
        }),
    }
}

fn graphql_error(err: ApiError) -> async_graphql::Error {
    if err.status.is_server_error() {
        tracing::error!(error = %err, "GraphQL resolver failed");
    }
    let message = if err.status.is_server_error() {
        "internal error".to_owned()
    } else {
        err.message.clone()
    };
    async_graphql::Error::new(message).extend_with(|_, extensions| {
        extensions.set("code", err.code);
        extensions.set("status", err.status.as_u16());
        if let Some(field) = err.field {
            extensions.set("field", field);
        }
    })
}

struct Argument {
    graphql: String,
    json: String,
    shape: Shape,
}

pub(crate) fn build<S, C>(
    operations: &[Arc<dyn Declared<S, C>>],
) -> Result<GraphqlSchema<C>, String>
where
    S: Clone + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    let mut components: Components = Vec::new();
    let schemas: Vec<_> = operations
        .iter()
        .map(|op| op.schemas(&mut components))
        .collect();
    let mut types = Types::default();
    for (name, schema) in &components {
        let json = serde_json::to_value(schema).map_err(|e| e.to_string())?;
        types.components.insert(name.clone(), json);
    }

    struct Root {
        kind: Kind,
        name: &'static str,
        description: &'static str,
        arguments: Vec<Argument>,
        body: Option<Argument>,
        output: Shape,
        index: usize,
    }
    let mut roots = Vec::new();
    for (index, (declared, schemas)) in operations.iter().zip(&schemas).enumerate() {
        let endpoint = declared.endpoint();
        let hint = pascal(endpoint.name);
        let params = serde_json::to_value(&schemas.params).map_err(|e| e.to_string())?;
        let (properties, required) = types.properties(&params);
        let mut arguments = Vec::new();
        for (json_name, property) in properties {
            let mut shape = types.shape(
                &property,
                &format!("{hint}{}", pascal(&json_name)),
                Mode::Input,
            );
            if !required.contains(&json_name) {
                shape.nullable = true;
            }
            arguments.push(Argument {
                graphql: camel(&json_name),
                json: json_name,
                shape,
            });
        }
        let body = match &schemas.body {
            Some(body) => {
                let body = serde_json::to_value(body).map_err(|e| e.to_string())?;
                Some(Argument {
                    graphql: endpoint.body_argument.to_owned(),
                    json: String::new(),
                    shape: types.shape(&body, &format!("{hint}Body"), Mode::Input),
                })
            }
            None => None,
        };
        let output = serde_json::to_value(&schemas.output).map_err(|e| e.to_string())?;
        let output = types.shape(&output, &format!("{hint}Result"), Mode::Output);
        roots.push(Root {
            kind: endpoint.kind,
            name: endpoint.name,
            description: endpoint.summary,
            arguments,
            body,
            output,
            index,
        });
    }

    let types = Arc::new(types);
    let mut query = Object::new("Query");
    let mut mutation = Object::new("Mutation");
    let mut has_mutation = false;
    for root in roots {
        let declared = operations[root.index].clone();
        let resolver_types = types.clone();
        let arguments = Arc::new((root.arguments, root.body, root.output.clone()));
        let resolver_arguments = arguments.clone();
        let mut field = Field::new(
            root.name,
            root.output.type_ref(),
            move |ctx: ResolverContext| {
                let declared = declared.clone();
                let types = resolver_types.clone();
                let arguments = resolver_arguments.clone();
                FieldFuture::new(async move {
                    let (params, body, output) = &*arguments;
                    let caller = ctx.data::<C>()?.clone();
                    let state = ctx.data::<S>()?.clone();
                    let mut json_params = serde_json::Map::new();
                    for argument in params {
                        if let Some(value) = ctx.args.get(&argument.graphql) {
                            json_params.insert(
                                argument.json.clone(),
                                to_json(&types, &argument.shape, value.as_value()),
                            );
                        }
                    }
                    let json_body = body.as_ref().map(|argument| {
                        ctx.args
                            .get(&argument.graphql)
                            .map(|v| to_json(&types, &argument.shape, v.as_value()))
                            .unwrap_or(Value::Null)
                    });
                    let answer = declared
                        .invoke(state, caller, Value::Object(json_params), json_body)
                        .await
                        .map_err(graphql_error)?;
                    Ok(to_root_field(output, answer))
                })
            },
        )
        .description(root.description);
        for argument in arguments.0.iter().chain(arguments.1.iter()) {
            field = field.argument(InputValue::new(
                argument.graphql.clone(),
                argument.shape.type_ref(),
            ));
        }
        match root.kind {
            Kind::Query => query = query.field(field),
            Kind::Mutation => {
                mutation = mutation.field(field);
                has_mutation = true;
            }
        }
    }

    let mut builder = Schema::build("Query", has_mutation.then_some("Mutation"), None)
        .register(query)
        .register(
            Scalar::new(DATE_TIME)
                .description("An RFC 3339 time in UTC, like 2024-11-21T12:00:00.000Z")
                .specified_by_url("https://www.rfc-editor.org/rfc/rfc3339")
                .validator(|value| match value {
                    GqlValue::String(text) => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    _ => false,
                }),
        )
        .register(Scalar::new(JSON_SCALAR).description("Any JSON value"))
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    if has_mutation {
        builder = builder.register(mutation);
    }
    for (name, values) in &types.enums {
        builder =
            builder.register(Enum::new(name.clone()).items(values.iter().map(|v| enum_value(v))));
    }
    for (name, def) in &types.outputs {
        let mut object = Object::new(name.clone());
        if let Some(text) = &def.description {
            object = object.description(text.clone());
        }
        for field in &def.fields {
            let json_name = field.json.clone();
            let shape = field.shape.clone();
            let mut built = Field::new(field.graphql.clone(), field.shape.type_ref(), move |ctx| {
                let parent = ctx.parent_value;
                let value = parent
                    .try_downcast_ref::<Value>()
                    .ok()
                    .and_then(|parent| parent.get(&json_name));
                FieldFuture::Value(value.and_then(|v| to_field(&shape, v)))
            });
            if let Some(text) = &field.description {
                built = built.description(text.clone());
            }
            object = object.field(built);
        }
        builder = builder.register(object);
    }
    for (name, def) in &types.inputs {
        let mut object = InputObject::new(name.clone());
        if let Some(text) = &def.description {
            object = object.description(text.clone());
        }
        for field in &def.fields {
            let mut value = InputValue::new(field.graphql.clone(), field.shape.type_ref());
            if let Some(text) = &field.description {
                value = value.description(text.clone());
            }
            object = object.field(value);
        }
        builder = builder.register(object);
    }
    builder
        .finish()
        .map(|schema| GraphqlSchema(schema, PhantomData))
        .map_err(|err| err.to_string())
}
