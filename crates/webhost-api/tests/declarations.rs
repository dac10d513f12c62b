//! A resource declared once answers REST, appears in OpenAPI and is a
//! GraphQL field, with one spelling of its data translated both ways.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::ServiceExt;
use utoipa::ToSchema;
use webhost_api::{merge_openapi, Anonymous, Api, ById, Endpoint, Json, NoBody, Operation, Verb};
use webhost_domain::TenantId;
use webhost_http::auth::{InternalAuth, InternalKeys, TenantCaller, INTERNAL_HEADER};
use webhost_http::ApiError;

#[derive(Clone)]
struct Board {
    notes: Arc<Mutex<Vec<Note>>>,
    auth: InternalAuth,
}

impl FromRef<Board> for InternalAuth {
    fn from_ref(board: &Board) -> Self {
        board.auth.clone()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Colour {
    Yellow,
    DarkBlue,
}

#[derive(Clone, Serialize, ToSchema)]
struct Author {
    display_name: String,
}

#[derive(Clone, Serialize, ToSchema)]
struct Note {
    #[schema(value_type = String, format = Uuid)]
    id: String,
    text: String,
    colour: Colour,
    pinned_at: Option<DateTime<Utc>>,
    tags: Vec<String>,
    #[schema(value_type = Object)]
    meta: Value,
    author: Author,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNote {
    text: String,
    colour: Colour,
    #[serde(default)]
    pinned_at: Option<DateTime<Utc>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    meta: Option<Value>,
}

webhost_api::list_page!(struct NotePage of Note);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NoteFilter {
    colour: Option<Colour>,
}

struct ListNotes;

impl Operation<Board> for ListNotes {
    type Params = NoteFilter;
    type Body = NoBody;
    type Output = NotePage;
    const ENDPOINT: Endpoint =
        Endpoint::new(Verb::Get, "/api/v1/notes", "notes", "notes", "The notes");

    async fn call(
        board: &Board,
        _: &TenantCaller,
        filter: NoteFilter,
        _: NoBody,
    ) -> Result<NotePage, ApiError> {
        let notes = board.notes.lock().expect("notes").clone();
        Ok(NotePage::whole(
            notes
                .into_iter()
                .filter(|n| filter.colour.is_none_or(|c| c == n.colour))
                .collect(),
        ))
    }
}

struct CreateNote;

impl Operation<Board> for CreateNote {
    type Params = webhost_api::NoParams;
    type Body = Json<NewNote>;
    type Output = Note;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Post,
        "/api/v1/notes",
        "createNote",
        "notes",
        "Adds a note",
    )
    .status(StatusCode::CREATED);

    async fn call(
        board: &Board,
        caller: &TenantCaller,
        _: webhost_api::NoParams,
        Json(new): Json<NewNote>,
    ) -> Result<Note, ApiError> {
        if new.text.trim().is_empty() {
            return Err(ApiError::bad_request(
                "empty_text",
                "text must not be empty",
            ));
        }
        let mut notes = board.notes.lock().expect("notes");
        let note = Note {
            id: format!("00000000-0000-7000-8000-{:012}", notes.len()),
            text: new.text,
            colour: new.colour,
            pinned_at: new.pinned_at,
            tags: new.tags,
            meta: new.meta.unwrap_or(json!({})),
            author: Author {
                display_name: caller.tenant.to_string(),
            },
        };
        notes.push(note.clone());
        Ok(note)
    }
}

struct ShowNote;

impl Operation<Board> for ShowNote {
    type Params = ById;
    type Body = NoBody;
    type Output = Note;
    const ENDPOINT: Endpoint =
        Endpoint::new(Verb::Get, "/api/v1/notes/{id}", "note", "notes", "One note");

    async fn call(board: &Board, _: &TenantCaller, by: ById, _: NoBody) -> Result<Note, ApiError> {
        let notes = board.notes.lock().expect("notes");
        notes
            .iter()
            .find(|n| n.id == by.id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("note"))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TagsOf {
    note_id: String,
    prefix: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Tags {
    tags: Vec<String>,
}

/// A path that shares `/api/v1/notes/{…}` with `ShowNote` under another
/// parameter name.
struct NoteTags;

impl Operation<Board> for NoteTags {
    type Params = TagsOf;
    type Body = NoBody;
    type Output = Tags;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/notes/{note_id}/tags",
        "noteTags",
        "notes",
        "A note's tags",
    );

    async fn call(
        board: &Board,
        caller: &TenantCaller,
        of: TagsOf,
        _: NoBody,
    ) -> Result<Tags, ApiError> {
        let note = ShowNote::call(board, caller, ById { id: of.note_id }, NoBody).await?;
        let prefix = of.prefix.unwrap_or_default();
        Ok(Tags {
            tags: note
                .tags
                .into_iter()
                .filter(|t| t.starts_with(&prefix))
                .collect(),
        })
    }
}

fn api() -> Api<Board> {
    Api::new("Notes", "1")
        .operation::<ListNotes>()
        .operation::<CreateNote>()
        .operation::<ShowNote>()
        .operation::<NoteTags>()
}

struct Fixture {
    board: Board,
    keys: Arc<InternalKeys>,
    tenant: TenantId,
    router: axum::Router,
}

fn fixture() -> Fixture {
    let keys = Arc::new(InternalKeys::derive(b"test secret key base"));
    let board = Board {
        notes: Arc::default(),
        auth: InternalAuth {
            keys: keys.clone(),
            audience: "cell:test".into(),
        },
    };
    let api = api();
    let router = api
        .router()
        .merge(api.graphql_router("/api/graphql").expect("schema"))
        .with_state(board.clone());
    Fixture {
        board,
        keys,
        tenant: TenantId::new(),
        router,
    }
}

impl Fixture {
    async fn rest(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let path = uri.split('?').next().expect("path");
        let credential = self
            .keys
            .mint("edge", "cell:test", &method, path, Some(self.tenant), None)
            .expect("mint");
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(INTERNAL_HEADER, credential);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self
            .rest(
                Method::POST,
                "/api/graphql",
                Some(json!({ "query": query, "variables": variables })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

#[tokio::test]
async fn one_declaration_answers_rest_and_graphql_alike() {
    let f = fixture();
    let (status, created) = f
        .rest(
            Method::POST,
            "/api/v1/notes",
            Some(json!({ "text": "Oil change", "colour": "dark_blue", "pinned_at": "2026-11-21T08:00:00Z", "tags": ["van", "vat"], "meta": { "km": 1200 } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();

    // GraphQL: camelCase fields, UPPER_CASE enum values, nested objects,
    // JSON scalars as they are; the data is REST's.
    let answer = f
        .graphql(
            "query($c: Colour) { notes(colour: $c) { data { id text colour pinnedAt tags meta author { displayName } } nextCursor } }",
            json!({ "c": "DARK_BLUE" }),
        )
        .await;
    assert_eq!(
        answer["data"]["notes"]["data"][0],
        json!({
            "id": id, "text": "Oil change", "colour": "DARK_BLUE",
            "pinnedAt": created["pinned_at"], "tags": ["van", "vat"], "meta": { "km": 1200 },
            "author": { "displayName": f.tenant.to_string() },
        }),
        "{answer}"
    );
    let (_, rest) = f
        .rest(Method::GET, "/api/v1/notes?colour=yellow", None)
        .await;
    assert_eq!(rest["data"], json!([]));
    let yellow = f
        .graphql("{ notes(colour: YELLOW) { data { id } } }", json!({}))
        .await;
    assert_eq!(yellow["data"]["notes"]["data"], json!([]));

    // A mutation's input object: camelCase in, snake_case to the operation.
    let made = f
        .graphql(
            "mutation { createNote(input: { text: \"Tyres\", colour: YELLOW, pinnedAt: \"2026-11-21T09:00:00Z\" }) { id colour pinnedAt author { displayName } } }",
            json!({}),
        )
        .await;
    assert_eq!(made["data"]["createNote"]["colour"], "YELLOW", "{made}");
    assert_eq!(f.board.notes.lock().expect("notes").len(), 2);
    assert!(f.board.notes.lock().expect("notes")[1].pinned_at.is_some());

    // Path parameters match by position, whatever their names.
    let (status, tags) = f
        .rest(
            Method::GET,
            &format!("/api/v1/notes/{id}/tags?prefix=va"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tags}");
    assert_eq!(tags, json!({ "tags": ["van", "vat"] }));
    let by_graphql = f
        .graphql(
            "query($n: String!) { noteTags(noteId: $n, prefix: \"vat\") { tags } note(id: $n) { text } }",
            json!({ "n": id }),
        )
        .await;
    assert_eq!(by_graphql["data"]["noteTags"]["tags"], json!(["vat"]));
    assert_eq!(by_graphql["data"]["note"]["text"], "Oil change");
}

#[tokio::test]
async fn bad_input_is_refused_the_same_way_on_both_sides() {
    let f = fixture();
    let (status, body) = f
        .rest(Method::GET, "/api/v1/notes?colur=yellow", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("colur"));
    let (status, body) = f
        .rest(
            Method::POST,
            "/api/v1/notes",
            Some(json!({ "text": "x", "colour": "green" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = f
        .rest(
            Method::POST,
            "/api/v1/notes",
            Some(json!({ "text": " ", "colour": "yellow" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "empty_text");
    let answer = f
        .graphql(
            "mutation { createNote(input: { text: \" \", colour: YELLOW }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "empty_text",
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["extensions"]["status"], 400);
    let answer = f
        .graphql(
            "mutation { createNote(input: { text: \"x\", colour: GREEN }) { id } }",
            json!({}),
        )
        .await;
    assert!(answer["errors"][0]["message"]
        .as_str()
        .expect("message")
        .contains("GREEN"));

    // Without the edge's credential nothing answers.
    let request = Request::builder()
        .uri("/api/v1/notes")
        .body(Body::empty())
        .expect("request");
    let response = f.router.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn openapi_places_parameters_bodies_and_answers() {
    let document = serde_json::to_value(api().openapi()).expect("json");
    let tags = &document["paths"]["/api/v1/notes/{note_id}/tags"]["get"];
    assert_eq!(tags["operationId"], "noteTags");
    let params: Vec<(String, String, bool)> = tags["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["in"].as_str().expect("in").to_owned(),
                p["required"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        params,
        [
            ("note_id".to_owned(), "path".to_owned(), true),
            ("prefix".to_owned(), "query".to_owned(), false),
        ]
    );
    let create = &document["paths"]["/api/v1/notes"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewNote"
    );
    assert_eq!(
        create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Note"
    );
    assert!(create["responses"]["4XX"].is_object());
    let schemas = &document["components"]["schemas"];
    for name in ["Note", "NewNote", "Colour", "Author", "NotePage", "Error"] {
        assert!(schemas.get(name).is_some(), "{name} in components");
    }
}

#[test]
#[should_panic(expected = "two operations are named notes")]
fn a_name_is_declared_once() {
    struct AlsoNotes;
    impl Operation<Board> for AlsoNotes {
        type Params = webhost_api::NoParams;
        type Body = NoBody;
        type Output = Tags;
        const ENDPOINT: Endpoint =
            Endpoint::new(Verb::Get, "/api/v1/other", "notes", "notes", "Clash");
        async fn call(
            _: &Board,
            _: &TenantCaller,
            _: webhost_api::NoParams,
            _: NoBody,
        ) -> Result<Tags, ApiError> {
            Ok(Tags { tags: Vec::new() })
        }
    }
    let _ = api().operation::<AlsoNotes>();
}

/// The operator, as a service of its own might define its caller: a token
/// in a header, refused with a 401 `ApiError` otherwise.
#[derive(Clone)]
struct AdminCaller {
    operator: String,
}

const ADMIN_TOKEN: &str = "Bearer operator-secret";

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some(ADMIN_TOKEN) => Ok(AdminCaller {
                operator: "ops".to_owned(),
            }),
            _ => Err(ApiError::unauthorized(
                "this endpoint needs the operator's token",
            )),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct Cleared {
    removed: usize,
    by: String,
}

/// Every tenant's notes gone: the operator's alone.
struct ClearNotes;

impl Operation<Board, AdminCaller> for ClearNotes {
    type Params = webhost_api::NoParams;
    type Body = NoBody;
    type Output = Cleared;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Delete,
        "/api/admin/notes",
        "clearNotes",
        "admin",
        "Removes every note",
    );

    async fn call(
        board: &Board,
        admin: &AdminCaller,
        _: webhost_api::NoParams,
        _: NoBody,
    ) -> Result<Cleared, ApiError> {
        let mut notes = board.notes.lock().expect("notes");
        let removed = notes.len();
        notes.clear();
        Ok(Cleared {
            removed,
            by: admin.operator.clone(),
        })
    }
}

struct CountNotes;

impl Operation<Board, AdminCaller> for CountNotes {
    type Params = webhost_api::NoParams;
    type Body = NoBody;
    type Output = Cleared;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/admin/notes/count",
        "noteCount",
        "admin",
        "How many notes there are",
    );

    async fn call(
        board: &Board,
        admin: &AdminCaller,
        _: webhost_api::NoParams,
        _: NoBody,
    ) -> Result<Cleared, ApiError> {
        Ok(Cleared {
            removed: board.notes.lock().expect("notes").len(),
            by: admin.operator.clone(),
        })
    }
}

fn admin_api() -> Api<Board, AdminCaller> {
    Api::new("Notes admin", "1")
        .security("adminToken", "The operator's token")
        .operation::<ClearNotes>()
        .operation::<CountNotes>()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Visitor {
    name: String,
}

#[derive(Serialize, ToSchema)]
struct Greeting {
    greeting: String,
}

/// Anyone may call it.
struct Hello;

impl Operation<Board, Anonymous> for Hello {
    type Params = webhost_api::NoParams;
    type Body = Json<Visitor>;
    type Output = Greeting;
    const ENDPOINT: Endpoint =
        Endpoint::new(Verb::Post, "/api/v1/hello", "hello", "public", "Says hello")
            .status(StatusCode::CREATED);

    async fn call(
        _: &Board,
        _: &Anonymous,
        _: webhost_api::NoParams,
        Json(visitor): Json<Visitor>,
    ) -> Result<Greeting, ApiError> {
        Ok(Greeting {
            greeting: format!("Hello, {}", visitor.name),
        })
    }
}

/// A GraphQL schema needs a query.
struct NoteCountPublic;

impl Operation<Board, Anonymous> for NoteCountPublic {
    type Params = webhost_api::NoParams;
    type Body = NoBody;
    type Output = Greeting;
    const ENDPOINT: Endpoint = Endpoint::new(
        Verb::Get,
        "/api/v1/hello",
        "welcome",
        "public",
        "Says how many notes there are",
    );

    async fn call(
        board: &Board,
        _: &Anonymous,
        _: webhost_api::NoParams,
        _: NoBody,
    ) -> Result<Greeting, ApiError> {
        let count = board.notes.lock().expect("notes").len();
        Ok(Greeting {
            greeting: format!("{count} notes"),
        })
    }
}

fn public_api() -> Api<Board, Anonymous> {
    Api::new("Notes public", "1")
        .operation::<Hello>()
        .operation::<NoteCountPublic>()
}

/// A request with exactly the headers given, no internal credential.
async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn operations_choose_their_caller() {
    let f = fixture();
    f.rest(
        Method::POST,
        "/api/v1/notes",
        Some(json!({ "text": "Brakes", "colour": "yellow" })),
    )
    .await;
    let admin = admin_api();
    let router = f.router.clone().merge(
        admin
            .router()
            .merge(admin.graphql_router("/api/admin/graphql").expect("schema"))
            .merge(public_api().router())
            .merge(
                public_api()
                    .graphql_router("/api/public/graphql")
                    .expect("schema"),
            )
            .with_state(f.board.clone()),
    );

    // The operator's operations want the operator's token, and get the
    // caller it makes.
    let (status, body) = send(&router, Method::DELETE, "/api/admin/notes", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = send(
        &router,
        Method::DELETE,
        "/api/admin/notes",
        Some("Bearer not-it"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(f.board.notes.lock().expect("notes").len(), 1);
    let query = json!({ "query": "{ noteCount { removed by } }" });
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/admin/graphql",
        None,
        Some(query.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/admin/graphql",
        Some(ADMIN_TOKEN),
        Some(query),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["noteCount"],
        json!({ "removed": 1, "by": "ops" })
    );
    let (status, body) = send(
        &router,
        Method::DELETE,
        "/api/admin/notes",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "removed": 1, "by": "ops" }));
    assert!(f.board.notes.lock().expect("notes").is_empty());

    // The operator's token is no tenant's credential.
    let (status, _) = send(
        &router,
        Method::GET,
        "/api/v1/notes",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Anonymous operations answer anyone.
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/v1/hello",
        None,
        Some(json!({ "name": "Ada" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({ "greeting": "Hello, Ada" }));
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/public/graphql",
        None,
        Some(json!({ "query": "mutation { hello(input: { name: \"Bo\" }) { greeting } }" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["hello"]["greeting"], "Hello, Bo");
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/v1/hello",
        None,
        Some(json!({ "nom": "Ada" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = send(&router, Method::GET, "/api/v1/hello", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "greeting": "0 notes" }));
}

#[test]
fn each_api_documents_its_security() {
    let tenants = serde_json::to_value(api().openapi()).expect("json");
    assert_eq!(tenants["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        tenants["paths"]["/api/v1/notes"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
    let bearer = &tenants["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");

    let public = serde_json::to_value(public_api().openapi()).expect("json");
    assert!(public.get("security").is_none(), "{public}");
    assert!(public["components"].get("securitySchemes").is_none());
    assert_eq!(
        public["paths"]["/api/v1/hello"]["post"]["security"],
        json!([])
    );
}

#[test]
fn merged_openapi_covers_every_caller() {
    let merged = merge_openapi(
        "Notes, all of it",
        "2",
        [
            api().openapi(),
            admin_api().openapi(),
            public_api().openapi(),
        ],
    );
    let document = serde_json::to_value(&merged).expect("json");
    assert_eq!(document["info"]["title"], "Notes, all of it");
    assert_eq!(document["info"]["version"], "2");
    assert!(document.get("security").is_none(), "per operation only");
    let paths = &document["paths"];
    let security = |path: &str, method: &str| paths[path][method]["security"].clone();
    assert_eq!(security("/api/v1/notes", "get"), json!([{ "bearer": [] }]));
    assert_eq!(security("/api/v1/notes", "post"), json!([{ "bearer": [] }]));
    assert_eq!(
        security("/api/v1/notes/{note_id}/tags", "get"),
        json!([{ "bearer": [] }])
    );
    assert_eq!(
        security("/api/admin/notes", "delete"),
        json!([{ "adminToken": [] }])
    );
    assert_eq!(
        security("/api/admin/notes/count", "get"),
        json!([{ "adminToken": [] }])
    );
    assert_eq!(security("/api/v1/hello", "post"), json!([]));
    assert_eq!(security("/api/v1/hello", "get"), json!([]));
    let mut ids: Vec<&str> = paths
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("item").values())
        .map(|operation| operation["operationId"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "clearNotes",
            "createNote",
            "hello",
            "note",
            "noteCount",
            "noteTags",
            "notes",
            "welcome"
        ]
    );
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes.as_object().expect("schemes").len(), 2, "{schemes}");
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    assert_eq!(schemes["adminToken"]["description"], "The operator's token");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let schemas = &document["components"]["schemas"];
    for name in ["Note", "Error", "Cleared", "Visitor", "Greeting"] {
        assert!(schemas.get(name).is_some(), "{name} in components");
    }
    // Every reference resolves.
    let text = document.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').expect("closing quote")];
        assert!(schemas.get(name).is_some(), "{name} is referenced");
    }
}

#[test]
fn merging_keeps_a_foreign_documents_security_on_its_operations() {
    let mut foreign = public_api().openapi();
    for item in foreign.paths.paths.values_mut() {
        if let Some(operation) = item.post.as_mut() {
            operation.security = None;
        }
    }
    foreign.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "cookie",
        Vec::<String>::new(),
    )]);
    let merged =
        serde_json::to_value(merge_openapi("All", "1", [api().openapi(), foreign])).expect("json");
    assert_eq!(
        merged["paths"]["/api/v1/hello"]["post"]["security"],
        json!([{ "cookie": [] }])
    );
}

/// The operator's listing, at the tenants' path.
struct AllNotes;

impl Operation<Board, AdminCaller> for AllNotes {
    type Params = webhost_api::NoParams;
    type Body = NoBody;
    type Output = Cleared;
    const ENDPOINT: Endpoint =
        Endpoint::new(Verb::Get, "/api/v1/notes", "allNotes", "admin", "Clash");

    async fn call(
        _: &Board,
        _: &AdminCaller,
        _: webhost_api::NoParams,
        _: NoBody,
    ) -> Result<Cleared, ApiError> {
        Err(ApiError::not_found("notes"))
    }
}

#[test]
#[should_panic(expected = "two operations answer GET /api/v1/notes")]
fn a_path_and_method_is_declared_once_across_apis() {
    let clashing = Api::<Board, AdminCaller>::new("Clash", "1").operation::<AllNotes>();
    let _ = merge_openapi("All", "1", [api().openapi(), clashing.openapi()]);
}

#[test]
#[should_panic(expected = "two operations have the operationId notes")]
fn an_operation_id_is_declared_once_across_apis() {
    struct AlsoNotes;
    impl Operation<Board, Anonymous> for AlsoNotes {
        type Params = webhost_api::NoParams;
        type Body = NoBody;
        type Output = Greeting;
        const ENDPOINT: Endpoint =
            Endpoint::new(Verb::Get, "/api/v1/other", "notes", "public", "Clash");
        async fn call(
            _: &Board,
            _: &Anonymous,
            _: webhost_api::NoParams,
            _: NoBody,
        ) -> Result<Greeting, ApiError> {
            Err(ApiError::not_found("notes"))
        }
    }
    let clashing = Api::<Board, Anonymous>::new("Clash", "1").operation::<AlsoNotes>();
    let _ = merge_openapi("All", "1", [api().openapi(), clashing.openapi()]);
}

#[test]
#[should_panic(expected = "two different schemas are named Greeting")]
fn a_component_name_means_one_schema_across_apis() {
    #[derive(Serialize, ToSchema)]
    #[schema(as = Greeting)]
    struct OtherGreeting {
        words: Vec<String>,
    }
    struct Wave;
    impl Operation<Board, Anonymous> for Wave {
        type Params = webhost_api::NoParams;
        type Body = NoBody;
        type Output = OtherGreeting;
        const ENDPOINT: Endpoint =
            Endpoint::new(Verb::Get, "/api/v1/wave", "wave", "public", "Waves");
        async fn call(
            _: &Board,
            _: &Anonymous,
            _: webhost_api::NoParams,
            _: NoBody,
        ) -> Result<OtherGreeting, ApiError> {
            Ok(OtherGreeting { words: Vec::new() })
        }
    }
    let waving = Api::<Board, Anonymous>::new("Wave", "1").operation::<Wave>();
    let _ = merge_openapi("All", "1", [public_api().openapi(), waving.openapi()]);
}
