//! Driving a local gateway from tests: start it on free ports, connect real WebSocket
//! clients, call its HTTP APIs.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsbridge::config::BroadcastConfig;
use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};
use wsbridge_local::{GatewayConfig, Limits, RunningGateway, Storage};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway on free loopback ports, verifying tokens with the dev secret.
pub async fn start_gateway(limits: Limits, storage: Storage) -> RunningGateway {
    let config = GatewayConfig {
        limits,
        storage,
        broadcast: BroadcastConfig {
            concurrency: 16,
            ..BroadcastConfig::default()
        },
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

/// A dev token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    sign_hs256(DEV_SECRET, &Claims::new(sub, Duration::from_secs(3_600))).unwrap()
}

/// Connects as `sub`; panics if the handshake is refused.
pub async fn connect(gateway: &RunningGateway, sub: &str) -> Client {
    let url = format!("{}/?token={}", gateway.ws_url(), token(sub));
    let (client, _) = connect_async(url).await.expect("handshake accepted");
    client
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

pub async fn subscribe(client: &mut Client, topics: &[&str]) {
    let reply = request(client, json!({"action": "subscribe", "topics": topics})).await;
    assert_eq!(reply, json!({"action": "subscribed", "topics": topics}));
}

pub async fn whoami(client: &mut Client) -> String {
    let reply = request(client, json!({"action": "whoami"})).await;
    reply["connection_id"].as_str().unwrap().to_owned()
}

/// POSTs a broadcast; returns status and body.
pub async fn broadcast(gateway: &RunningGateway, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/broadcast", gateway.http_url()))
        .json(&body)
        .send()
        .await
        .expect("broadcast API answers");
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
