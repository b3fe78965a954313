//! Channel permissions and limits end to end: real WebSocket clients and the server API over
//! loopback against the local gateway, in memory and on DynamoDB Local: the permission matrix
//! of `examples/channels/feed.json`, simultaneous connects at the per-user limit under both
//! policies, and a frame flood meeting the rate limit.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use wsbridge::channels::Channels;
use wsbridge::config::{FanoutConfig, SessionConfig};
use wsbridge::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use wsbridge::protocol::UserId;
use wsbridge_local::{GatewayConfig, RunningGateway, Storage};
use wsbridge_tests::dynamodb_endpoint;
use wsbridge_tests::gateway::{
    Client, broadcast, connect, connect_with, drain, eventually, post, receive, request, token,
    token_with, whoami,
};

fn feed() -> Channels {
    wsbridge_tests::example_channels("feed")
}

fn dynamodb() -> Storage {
    Storage::DynamoDb {
        endpoint: dynamodb_endpoint(),
        table: format!("wsbridge-channels-{}", uuid_like()),
    }
}

/// A table name no other test run uses.
fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

async fn gateway(storage: Storage, session: SessionConfig, channels: Channels) -> RunningGateway {
    let config = GatewayConfig {
        storage,
        session,
        channels,
        fanout: FanoutConfig { concurrency: 16 },
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

async fn try_subscribe(client: &mut Client, topic: &str) -> Value {
    request(client, json!({"action": "subscribe", "topic": topic})).await
}

fn subscribed(topic: &str) -> Value {
    json!({"action": "subscribed", "topics": [topic]})
}

async fn permission_matrix(storage: Storage) {
    // GIVEN the notification feed: user owner-only, team by claim, admin server-only;
    // alice's token grants team:7, bob's nothing
    let gateway = gateway(storage, SessionConfig::default(), feed()).await;
    let alice_token = token_with("alice", json!({"channels": ["team:7"]}));
    let mut alice = connect_with(&gateway, &alice_token).await.unwrap();
    let mut bob = connect(&gateway, "bob").await;

    // THEN alice cannot read bob's channel, but reads her own
    let refused = try_subscribe(&mut alice, "user:bob").await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    assert!(refused["details"].as_str().unwrap().contains("owner-only"));
    assert_eq!(
        try_subscribe(&mut alice, "user:alice").await,
        subscribed("user:alice")
    );
    assert_eq!(
        try_subscribe(&mut bob, "user:bob").await,
        subscribed("user:bob")
    );

    // AND the claim-granted team works, another team does not
    assert_eq!(
        try_subscribe(&mut alice, "team:7").await,
        subscribed("team:7")
    );
    assert_eq!(
        try_subscribe(&mut alice, "team:8").await["error"],
        "forbidden"
    );
    assert_eq!(
        try_subscribe(&mut bob, "team:7").await["error"],
        "forbidden"
    );

    // AND the server-only namespace refuses the client, and accepts the backend's subscribe
    assert_eq!(
        try_subscribe(&mut alice, "admin:alerts").await["error"],
        "forbidden"
    );
    let alice_id = whoami(&mut alice).await;
    let (status, report) = post(
        &gateway,
        "/subscribe",
        json!({"topic": "admin:alerts", "user_id": "alice"}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["connections"], json!([alice_id]));

    // WHEN the backend broadcasts to each of these topics
    for topic in ["admin:alerts", "user:bob", "team:7"] {
        let (status, _) = broadcast(
            &gateway,
            json!({"topic": topic, "event": "note", "data": topic}),
        )
        .await;
        assert_eq!(status, 200);
    }

    // THEN each reaches exactly those the rules let in
    let alice_got: Vec<Value> = drain(&mut alice, Duration::from_millis(300))
        .await
        .into_iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(alice_got, [json!("admin:alerts"), json!("team:7")]);
    let bob_got: Vec<Value> = drain(&mut bob, Duration::from_millis(300))
        .await
        .into_iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(bob_got, [json!("user:bob")]);

    // AND the backend can disconnect bob: his socket is closed and he is forgotten
    let (status, report) = post(&gateway, "/disconnect", json!({"user_id": "bob"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["disconnected"].as_array().unwrap().len(), 1);
    let store = gateway.store();
    eventually("bob is gone", || {
        let store = store.clone();
        async move {
            store
                .user_connections(&UserId::new("bob"))
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    eventually("bob's socket is closed", || async {
        gateway.open_connections() == 1
    })
    .await;
}

#[tokio::test]
async fn the_permission_matrix_holds_end_to_end_in_memory() {
    permission_matrix(Storage::Memory).await;
}

#[tokio::test]
async fn the_permission_matrix_holds_end_to_end_on_dynamodb_local() {
    permission_matrix(dynamodb()).await;
}

fn limited(per_user: usize, policy: LimitPolicy) -> SessionConfig {
    SessionConfig {
        connection_limit: ConnectionLimit { per_user, policy },
        ..SessionConfig::default()
    }
}

/// Opens `count` connections of `sub` at the same moment.
async fn simultaneous_connects(
    gateway: &RunningGateway,
    sub: &str,
    count: usize,
) -> Vec<Result<Client, u16>> {
    let token = token(sub);
    join_all((0..count).map(|_| connect_with(gateway, &token))).await
}

async fn limit_refuses_past_it(storage: Storage) {
    // GIVEN a limit of three connections per user, refusing past it
    let gateway = gateway(
        storage,
        limited(3, LimitPolicy::Refuse),
        Channels::default(),
    )
    .await;

    // WHEN carol opens eight at once
    let outcomes = simultaneous_connects(&gateway, "carol", 8).await;

    // THEN exactly three handshakes succeed and five are refused with 429
    let refused: Vec<u16> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().copied())
        .collect();
    assert_eq!(refused, vec![429; 5], "{refused:?}");
    let mut open: Vec<Client> = outcomes.into_iter().filter_map(Result::ok).collect();
    assert_eq!(open.len(), 3);
    for client in &mut open {
        assert_eq!(
            request(client, json!({"action": "whoami"})).await["user_id"],
            "carol"
        );
    }
    let counted = gateway
        .store()
        .user_connections(&UserId::new("carol"))
        .await
        .unwrap();
    assert_eq!(counted.len(), 3);
}

#[tokio::test]
async fn simultaneous_connects_at_the_limit_admit_exactly_it_in_memory() {
    limit_refuses_past_it(Storage::Memory).await;
}

#[tokio::test]
async fn simultaneous_connects_at_the_limit_admit_exactly_it_on_dynamodb_local() {
    limit_refuses_past_it(dynamodb()).await;
}

async fn limit_closes_the_oldest(storage: Storage) {
    // GIVEN a limit of three connections per user, closing the oldest past it
    let gateway = gateway(
        storage,
        limited(3, LimitPolicy::CloseOldest),
        Channels::default(),
    )
    .await;

    // WHEN dan opens eight at once
    let outcomes = simultaneous_connects(&gateway, "dan", 8).await;

    // THEN every handshake succeeds, and once the evictions are done exactly three remain,
    // open and counted
    let clients: Vec<Client> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|status| panic!("refused with {status} under close_oldest")))
        .collect();
    eventually("five connections are closed", || async {
        gateway.open_connections() == 3
    })
    .await;
    let store = gateway.store();
    eventually("three connections are counted", || {
        let store = store.clone();
        async move {
            store
                .user_connections(&UserId::new("dan"))
                .await
                .unwrap()
                .len()
                == 3
        }
    })
    .await;
    drop(clients);
}

#[tokio::test]
async fn simultaneous_connects_under_close_oldest_keep_exactly_the_limit_in_memory() {
    limit_closes_the_oldest(Storage::Memory).await;
}

#[tokio::test]
async fn simultaneous_connects_under_close_oldest_keep_exactly_the_limit_on_dynamodb_local() {
    limit_closes_the_oldest(dynamodb()).await;
}

async fn flood_is_rate_limited(storage: Storage) {
    // GIVEN a budget of 2 frames a second, bursts of 5
    let session = SessionConfig {
        rate_limit: Some(RateLimit {
            per_second: 2,
            burst: 5,
        }),
        ..SessionConfig::default()
    };
    let gateway = gateway(storage, session, Channels::default()).await;
    let mut eve = connect(&gateway, "eve").await;

    // WHEN she sends 60 whoami frames without waiting
    for _ in 0..60 {
        wsbridge_tests::gateway::send(&mut eve, json!({"action": "whoami"})).await;
    }
    let mut replies = Vec::new();
    for _ in 0..60 {
        replies.push(receive(&mut eve).await);
    }

    // THEN most are refused with the wait, and pings still get pongs
    let limited: Vec<&Value> = replies
        .iter()
        .filter(|r| r["error"] == "rate_limited")
        .collect();
    assert!(limited.len() >= 40, "{} refused of 60", limited.len());
    assert!(
        limited
            .iter()
            .all(|r| r["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0))
    );
    assert_eq!(
        request(&mut eve, json!({"action": "ping"})).await,
        json!({"action": "pong"})
    );
}

#[tokio::test]
async fn a_flood_meets_the_rate_limit_in_memory() {
    flood_is_rate_limited(Storage::Memory).await;
}

#[tokio::test]
async fn a_flood_meets_the_rate_limit_on_dynamodb_local() {
    flood_is_rate_limited(dynamodb()).await;
}
