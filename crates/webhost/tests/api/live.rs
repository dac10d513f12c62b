//! The live stream through the edge.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestApp;
use crate::stories;

stories!(
    socket_pushes_the_tenants_positions_and_nothing_else,
    socket_refuses_bad_credentials
);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    app: &TestApp,
    bearer: Option<&str>,
    query: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}/api/v1/socket{query}", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    if let Some(bearer) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {bearer}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next text message, skipping pings; bounded so a missing message fails
/// the test instead of hanging it.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")
            .expect("stream open")
            .expect("message");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn socket_pushes_the_tenants_positions_and_nothing_else(app: TestApp) {
    let a = app.signup("hobby", "DE").await;
    let b = app.signup("hobby", "DE").await;
    let van = app.create_vehicle(&a, "Van", None).await.body["id"]
        .as_str()
        .expect("id")
        .to_string();
    let b_van = app.create_vehicle(&b, "B", None).await.body["id"]
        .as_str()
        .expect("id")
        .to_string();

    let mut a_socket = connect(&app, Some(&a.token), "").await.expect("A connects");
    // Browsers pass the credential in the query.
    let mut b_socket = connect(&app, None, &format!("?access_token={}", b.api_key))
        .await
        .expect("B connects");

    // B writes first: A must not see it.
    let answer = app
        .post(
            "/api/v1/positions",
            Some(&b.api_key),
            json!([{ "vehicle_id": b_van, "lat": 9.0, "lon": 9.0 }]),
        )
        .await;
    assert_eq!(answer.body["accepted"], 1);
    let answer = app
        .post(
            "/api/v1/positions",
            Some(&a.api_key),
            json!([{ "vehicle_id": van, "lat": 52.5, "lon": 13.4, "speed": 50.0 }]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let pushed = next_json(&mut a_socket).await;
    let positions = pushed["positions"].as_array().expect("positions message");
    assert_eq!(positions.len(), 1, "{pushed}");
    assert_eq!(positions[0]["vehicle_id"], van.as_str());
    assert_eq!(positions[0]["lat"], 52.5);
    assert_eq!(positions[0]["speed"], 50.0);

    let b_pushed = next_json(&mut b_socket).await;
    assert_eq!(b_pushed["positions"][0]["vehicle_id"], b_van.as_str());

    // A resend is not news.
    app.post(
        "/api/v1/positions",
        Some(&a.api_key),
        json!([{ "vehicle_id": van, "time": positions[0]["time"], "lat": 52.5, "lon": 13.4 }]),
    )
    .await;
    app.post(
        "/api/v1/positions",
        Some(&a.api_key),
        json!([{ "vehicle_id": van, "lat": 1.0, "lon": 2.0 }]),
    )
    .await;
    let next = next_json(&mut a_socket).await;
    assert_eq!(
        next["positions"][0]["lat"], 1.0,
        "the duplicate was not pushed: {next}"
    );

    a_socket.send(Message::Close(None)).await.expect("close");
}

async fn socket_refuses_bad_credentials(app: TestApp) {
    let account = app.signup("hobby", "DE").await;
    for (bearer, query) in [
        (None, ""),
        (Some("not-a-token"), ""),
        (None, "?access_token=whk_nope"),
    ] {
        match connect(&app, bearer, query).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{bearer:?} {query}");
            }
            other => panic!(
                "{bearer:?} {query}: expected a 401, got {:?}",
                other.map(|_| "a socket")
            ),
        }
    }
    // A token in the query is only for upgrades, never for plain requests.
    let plain = app
        .client
        .get(format!(
            "{}/api/v1/vehicles?access_token={}",
            app.url, account.token
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
}
