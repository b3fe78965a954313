//! Driving a local gateway from tests: start it on free ports, connect real WebSocket
//! clients, call its HTTP APIs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};
use wsbridge::config::FanoutConfig;
use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};
use wsbridge_local::{GatewayConfig, Limits, RunningGateway, Storage, local_sdk_config};

use crate::dynamodb_endpoint;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway on free loopback ports, verifying tokens with the dev secret.
pub async fn start_gateway(limits: Limits, storage: Storage) -> RunningGateway {
    let config = GatewayConfig {
        limits,
        storage,
        fanout: FanoutConfig { concurrency: 16 },
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

/// DynamoDB Local (see `dynamodb_endpoint`), in a table no other gateway of this run uses.
pub fn dynamodb_storage() -> Storage {
    static TABLES: AtomicU32 = AtomicU32::new(0);
    Storage::DynamoDb {
        endpoint: dynamodb_endpoint(),
        table: format!(
            "wsbridge-gateway-{}-{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

/// A dev token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    sign_hs256(DEV_SECRET, &Claims::new(sub, Duration::from_secs(3_600))).unwrap()
}

/// A dev token for `sub` carrying `extra` claims too (e.g. `{"channels": ["team:7"]}`).
pub fn token_with(sub: &str, extra: Value) -> String {
    let mut claims = serde_json::to_value(Claims::new(sub, Duration::from_secs(3_600))).unwrap();
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects as `sub`; panics if the handshake is refused.
pub async fn connect(gateway: &RunningGateway, sub: &str) -> Client {
    connect_with(gateway, &token(sub))
        .await
        .unwrap_or_else(|status| panic!("handshake refused with {status}"))
}

/// Connects with `token`; the HTTP status when the handshake is refused.
pub async fn connect_with(gateway: &RunningGateway, token: &str) -> Result<Client, u16> {
    let url = format!("{}/?token={token}", gateway.ws_url());
    match connect_async(url).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

/// Connects as `sub` over a socket with a small receive buffer, subscribes to `topic` and
/// returns the client with its connection id. Left unpolled, it is a client that has
/// stopped reading: once the kernel's buffers are full, the gateway cannot write to it.
pub async fn connect_then_stop_reading(
    gateway: &RunningGateway,
    sub: &str,
    topic: &str,
) -> (Client, String) {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(4 * 1024)
        .expect("a small receive buffer");
    let stream = socket
        .connect(gateway.ws_address)
        .await
        .expect("TCP connect");
    let url = format!("{}/?token={}", gateway.ws_url(), token(sub));
    let (mut client, _) = client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake accepted");
    subscribe(&mut client, &[topic]).await;
    let id = whoami(&mut client).await;
    (client, id)
}

/// The real management API client, pointed at the gateway's `@connections`.
pub fn management_client(gateway: &RunningGateway) -> aws_sdk_apigatewaymanagement::Client {
    aws_sdk_apigatewaymanagement::Client::new(&local_sdk_config(Some(&gateway.management_url())))
}

pub async fn send(client: &mut Client, frame: Value) {
    client
        .send(Message::text(frame.to_string()))
        .await
        .expect("frame sent");
}

/// The next text frame as JSON, skipping control frames.
pub async fn receive(client: &mut Client) -> Value {
    let next = tokio::time::timeout(PATIENCE, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await;
    next.expect("a frame within the patience window")
}

/// Sends a frame and returns the reply.
pub async fn request(client: &mut Client, frame: Value) -> Value {
    send(client, frame).await;
    receive(client).await
}

/// Subscribes and checks the reply names the topics (topics with history add where their
/// streams stand, which the history tests check).
pub async fn subscribe(client: &mut Client, topics: &[&str]) {
    let reply = request(client, json!({"action": "subscribe", "topics": topics})).await;
    assert_eq!(
        (&reply["action"], &reply["topics"]),
        (&json!("subscribed"), &json!(topics)),
        "{reply}"
    );
}

pub async fn whoami(client: &mut Client) -> String {
    let reply = request(client, json!({"action": "whoami"})).await;
    reply["connection_id"].as_str().unwrap().to_owned()
}

/// POSTs a broadcast; returns status and body.
pub async fn broadcast(gateway: &RunningGateway, body: Value) -> (u16, Value) {
    post(gateway, "/broadcast", body).await
}

/// POSTs to a route of the server API (`/subscribe`, `/disconnect`, …); status and body.
pub async fn post(gateway: &RunningGateway, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", gateway.http_url()))
        .json(&body)
        .send()
        .await
        .expect("the server API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// GETs a route of the server API (`/presence?topic=…`, `/online?user_id=…`); status and body.
pub async fn get(gateway: &RunningGateway, path_and_query: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path_and_query}", gateway.http_url()))
        .send()
        .await
        .expect("the server API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Text frames that arrive within `quiet` of each other, until the socket is quiet.
pub async fn drain(client: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, client.next()).await {
        if let Message::Text(text) = message {
            frames.push(serde_json::from_str(&text).unwrap());
        }
    }
    frames
}

/// Waits until `check` holds, polling; panics after the patience window.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
