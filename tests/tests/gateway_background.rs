//! Background broadcasts end to end: the local gateway runs the parts as tasks (as Lambda
//! runs them as invocations), real WebSocket clients count what they receive, and the status
//! route is read over HTTP. In memory and on DynamoDB Local (started by scripts/test.sh;
//! without it the DynamoDB cases fail, never skip).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use wsbridge::config::{BroadcastConfig, FanoutConfig};
use wsbridge::handlers::broadcast::CONTINUE_MARGIN;
use wsbridge_local::{GatewayConfig, RunningGateway, Storage};
use wsbridge_tests::gateway::{
    Client, broadcast, connect, drain, dynamodb_storage, get, subscribe,
};

const CLIENTS: usize = 150;

/// A gateway whose synchronous budget is spent after one page (a hundred rows in memory;
/// DynamoDB's pages of a thousand hold the whole audience, hence the overrun case runs in
/// memory only), whose broadcasts run in
/// three parts, and whose part runs stop reading half a second in, so that parts continue.
async fn gateway(storage: Storage) -> RunningGateway {
    let config = GatewayConfig {
        storage,
        broadcast: BroadcastConfig {
            sync_budget: Duration::from_millis(1),
            shards: 3,
            ..BroadcastConfig::default()
        },
        fanout: FanoutConfig { concurrency: 8 },
        shard_run_time: CONTINUE_MARGIN + Duration::from_millis(500),
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

async fn audience(gateway: &RunningGateway) -> Vec<Client> {
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let mut client = connect(gateway, &format!("user-{n}")).await;
        subscribe(&mut client, &["news:today"]).await;
        clients.push(client);
    }
    clients
}

/// Polls the status until it is done; returns it.
async fn until_done(gateway: &RunningGateway, id: &str) -> Value {
    for _ in 0..600 {
        let (code, status) = get(gateway, &format!("/broadcasts/{id}")).await;
        assert_eq!(code, 200, "{status}");
        if status["status"] == "done" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broadcast {id} not done within 30 s");
}

/// How many envelopes of broadcast `id` each client received.
async fn received(clients: &mut [Client], id: &str) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let frames = drain(client, Duration::from_millis(100)).await;
        let mine = frames.iter().filter(|f| f["id"] == id).count();
        counts.insert(n, mine);
    }
    counts
}

async fn every_client_gets_an_async_broadcast_once(storage: Storage) {
    // GIVEN 150 real clients on news:today
    let gateway = gateway(storage).await;
    let mut clients = audience(&gateway).await;

    // WHEN a backend sends a broadcast to the background
    let body = json!({"topic": "news:today", "event": "story", "data": {"n": 1}, "async": true});
    let (code, accepted) = broadcast(&gateway, body).await;

    // THEN it is accepted at once, and once done every client has had it exactly once
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["status"], "running");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let status = until_done(&gateway, &id).await;
    assert_eq!(status["recipients"], CLIENTS as u64, "{status}");
    assert_eq!(status["delivered"], CLIENTS as u64, "{status}");
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert!(shards.iter().all(|s| s["status"] == "done"));
    let counts = received(&mut clients, &id).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

async fn a_broadcast_over_its_budget_ends_in_the_background_with_everyone_reached_once(
    storage: Storage,
) {
    // GIVEN 150 real clients on news:today
    let gateway = gateway(storage).await;
    let mut clients = audience(&gateway).await;

    // WHEN a backend broadcasts, and the budget runs out after the first page
    let body = json!({"topic": "news:today", "event": "story", "data": {"n": 2}});
    let (code, accepted) = broadcast(&gateway, body).await;

    // THEN the answer is 202 with what was sent, and the rest arrives from the parts
    assert_eq!(code, 202, "{accepted}");
    let sent = accepted["delivered"].as_u64().unwrap();
    assert!(sent > 0 && sent < CLIENTS as u64, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let status = until_done(&gateway, &id).await;
    assert_eq!(status["delivered"], CLIENTS as u64, "{status}");
    let counts = received(&mut clients, &id).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test]
async fn in_memory_every_client_gets_an_async_broadcast_once() {
    every_client_gets_an_async_broadcast_once(Storage::Memory).await;
}

#[tokio::test]
async fn on_dynamodb_every_client_gets_an_async_broadcast_once() {
    every_client_gets_an_async_broadcast_once(dynamodb_storage()).await;
}

#[tokio::test]
async fn in_memory_a_broadcast_over_its_budget_ends_in_the_background() {
    a_broadcast_over_its_budget_ends_in_the_background_with_everyone_reached_once(Storage::Memory)
        .await;
}

#[tokio::test]
async fn an_unknown_broadcast_is_not_found() {
    let gateway = gateway(Storage::Memory).await;
    let (code, body) = get(&gateway, "/broadcasts/nothing-like-it").await;
    assert_eq!(code, 404);
    assert_eq!(body["error"], "not_found");
}
