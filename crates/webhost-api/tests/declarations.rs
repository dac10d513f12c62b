//! A resource declared once answers REST, appears in OpenAPI and is a
//! GraphQL field, with one spelling of its data translated both ways.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::ServiceExt;
use utoipa::ToSchema;
use webhost_api::{Api, ById, Endpoint, Json, NoBody, Operation, Verb};
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
