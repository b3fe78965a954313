//! History and recovery end to end: real WebSocket clients and the server API against the
//! local gateway, in memory and on DynamoDB Local. A subscriber that was away recovers
//! exactly what it missed, in order, then gets live messages; a trimmed gap says
//! `recovered: false`; a recovery racing a stream of broadcasts loses nothing and, with the
//! protocol's rule (drop a live message whose offset is not above the last one held),
//! shows nothing twice; idempotent broadcasts; history reads from a client and a backend.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wsbridge::channels::Channels;
use wsbridge::config::{FanoutConfig, SessionConfig};
use wsbridge::limits::RateLimit;
use wsbridge_local::{GatewayConfig, RunningGateway, Storage};
use wsbridge_tests::gateway::{
    Client, broadcast, connect, dynamodb_storage, get, receive, request, send, subscribe,
};

fn chat() -> Channels {
    wsbridge_tests::example_channels("chat")
}

/// Rooms that keep only five messages, for gaps.
fn short_history() -> Channels {
    Channels::parse(
        &json!({"namespaces": {"room": {"subscribe": "authenticated", "publish": "subscribers",
                "history": {"size": 5, "ttl_seconds": 600}},
                "list": {"subscribe": "authenticated"}}})
        .to_string(),
    )
    .unwrap()
}

async fn gateway(storage: Storage, channels: Channels) -> RunningGateway {
    let config = GatewayConfig {
        storage,
        // The tests send frames faster than a person would.
        session: SessionConfig {
            rate_limit: Some(RateLimit {
                per_second: 1_000,
                burst: 1_000,
            }),
            ..SessionConfig::default()
        },
        channels,
        fanout: FanoutConfig { concurrency: 16 },
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

async fn say(gateway: &RunningGateway, topic: &str, n: u64) -> Value {
    let (status, report) = broadcast(
        gateway,
        json!({"topic": topic, "event": "message", "data": {"n": n}}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Subscribes with `since` and returns the reply's stream of `topic`.
async fn resubscribe(client: &mut Client, topic: &str, offset: u64, epoch: &str) -> Value {
    let reply = request(
        client,
        json!({"action": "subscribe", "topic": topic,
               "since": {"offset": offset, "epoch": epoch}}),
    )
    .await;
    assert_eq!(reply["action"], "subscribed", "{reply}");
    reply["history"][topic].clone()
}

fn numbers(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("messages: {messages}"))
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect()
}

async fn recovers_what_it_missed(storage: Storage) {
    let gateway = gateway(storage, chat()).await;
    let mut client = connect(&gateway, "alice").await;
    subscribe(&mut client, &["room:1"]).await;
    for n in 1..=3 {
        say(&gateway, "room:1", n).await;
    }
    let mut last = Value::Null;
    for _ in 1..=3 {
        last = receive(&mut client).await;
    }
    let (offset, epoch) = (last["offset"].as_u64().unwrap(), last["epoch"].clone());
    assert_eq!(offset, 3, "{last}");

    // away: 20 messages go out while the client is gone
    drop(client);
    for n in 4..=23 {
        say(&gateway, "room:1", n).await;
    }

    // back: exactly those 20, in order, then live ones
    let mut client = connect(&gateway, "alice").await;
    let stream = resubscribe(&mut client, "room:1", offset, epoch.as_str().unwrap()).await;
    assert_eq!(stream["recovered"], true, "{stream}");
    assert_eq!(numbers(&stream["messages"]), (4..=23).collect::<Vec<_>>());
    let offsets: Vec<u64> = stream["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (4..=23).collect::<Vec<_>>());
    assert_eq!(
        (stream["offset"].as_u64(), stream["more"].as_bool()),
        (Some(23), Some(false))
    );
    say(&gateway, "room:1", 24).await;
    let live = receive(&mut client).await;
    assert_eq!(
        (live["data"]["n"].as_u64(), live["offset"].as_u64()),
        (Some(24), Some(24))
    );

    // the history read gives the same, to a client and to a backend
    let history = request(
        &mut client,
        json!({"action": "history", "topic": "room:1", "limit": 5}),
    )
    .await;
    assert_eq!(numbers(&history["messages"]), (20..=24).collect::<Vec<_>>());
    let (status, backend) = get(&gateway, "/history?topic=room:1&limit=5").await;
    assert_eq!(status, 200, "{backend}");
    assert_eq!(backend["messages"], history["messages"]);
    let (_, after) = get(
        &gateway,
        &format!(
            "/history?topic=room:1&since_offset=22&since_epoch={}",
            epoch.as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        (numbers(&after["messages"]), after["recovered"].clone()),
        (vec![23, 24], json!(true))
    );
    // lists keep nothing
    let refused = request(&mut client, json!({"action": "history", "topic": "list:1"})).await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
}

#[tokio::test]
async fn a_returning_subscriber_recovers_exactly_what_it_missed_in_memory() {
    recovers_what_it_missed(Storage::Memory).await;
}

#[tokio::test]
async fn a_returning_subscriber_recovers_exactly_what_it_missed_on_dynamodb_local() {
    recovers_what_it_missed(dynamodb_storage()).await;
}

async fn trimmed_gap(storage: Storage) {
    let gateway = gateway(storage, short_history()).await;
    let first = say(&gateway, "room:9", 1).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for n in 2..=20 {
        say(&gateway, "room:9", n).await;
    }
    // a client at offset 1 missed 2..20, of which only 16..20 are kept
    let mut client = connect(&gateway, "bob").await;
    let stream = resubscribe(&mut client, "room:9", 1, &epoch).await;
    assert_eq!(
        stream,
        json!({"epoch": epoch, "offset": 20, "recovered": false, "messages": [], "more": false})
    );
    // an unknown epoch cannot be continued either, and the client is subscribed regardless
    let mut other = connect(&gateway, "carol").await;
    let stream = resubscribe(&mut other, "room:9", 20, "not-this-one").await;
    assert_eq!(stream["recovered"], false);
    say(&gateway, "room:9", 21).await;
    assert_eq!(receive(&mut other).await["offset"], 21);
    // a topic that keeps no history refuses since, and nothing is subscribed
    let refused = request(
        &mut other,
        json!({"action": "subscribe", "topic": "list:1", "since": {"offset": 1, "epoch": "e"}}),
    )
    .await;
    assert_eq!(refused["error"], "invalid_since", "{refused}");
    let (_, report) = broadcast(&gateway, json!({"topic": "list:1", "event": "x"})).await;
    assert_eq!(
        report["recipients"], 0,
        "the refused subscribe applied nothing"
    );
}

#[tokio::test]
async fn a_trimmed_gap_is_not_recovered_in_memory() {
    trimmed_gap(Storage::Memory).await;
}

#[tokio::test]
async fn a_trimmed_gap_is_not_recovered_on_dynamodb_local() {
    trimmed_gap(dynamodb_storage()).await;
}

/// Frames until `n` messages past `after` are held, applying the protocol's rule: a live
/// message at or below the last offset held is a duplicate of one already held.
async fn follow(client: &mut Client, mut held: Vec<u64>, until: u64) -> (Vec<u64>, usize) {
    let mut duplicates = 0;
    while held.last().copied().unwrap_or(0) < until {
        let message = receive(client).await;
        let offset = message["offset"].as_u64().unwrap();
        if held.last().is_some_and(|last| offset <= *last) {
            duplicates += 1;
            continue;
        }
        held.push(offset);
    }
    (held, duplicates)
}

async fn recovery_racing_broadcasts(storage: Storage) {
    let gateway = gateway(storage, chat()).await;
    let first = say(&gateway, "room:race", 0).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for round in 0..8 {
        // broadcasts keep arriving while the client comes back
        let start = say(&gateway, "room:race", 0).await["offset"]
            .as_u64()
            .unwrap();
        let url = gateway.http_url();
        let burst = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut last = 0;
            for n in 0..15 {
                let report: Value = http
                    .post(format!("{url}/broadcast"))
                    .json(&json!({"topic": "room:race", "event": "message", "data": {"n": n}}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                last = report["offset"].as_u64().unwrap();
            }
            last
        });
        let mut client = connect(&gateway, "dana").await;
        let stream = resubscribe(&mut client, "room:race", start, &epoch).await;
        assert_eq!(stream["recovered"], true, "round {round}: {stream}");
        let recovered: Vec<u64> = stream["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        let last = burst.await.unwrap();
        let (held, duplicates) = follow(&mut client, recovered.clone(), last).await;
        // every message after the position, once, in order: nothing lost
        assert_eq!(
            held,
            (start + 1..=last).collect::<Vec<_>>(),
            "round {round}: recovered {recovered:?}"
        );
        // and a duplicate only ever of a message the reply carried
        assert!(duplicates <= recovered.len(), "round {round}");
        // nothing else is pending
        let pong = request(&mut client, json!({"action": "ping"})).await;
        assert_eq!(pong, json!({"action": "pong"}), "round {round}");
    }
}

#[tokio::test]
async fn a_recovery_racing_broadcasts_loses_nothing_in_memory() {
    recovery_racing_broadcasts(Storage::Memory).await;
}

#[tokio::test]
async fn a_recovery_racing_broadcasts_loses_nothing_on_dynamodb_local() {
    recovery_racing_broadcasts(dynamodb_storage()).await;
}

async fn idempotent(storage: Storage) {
    let gateway = gateway(storage, chat()).await;
    let mut client = connect(&gateway, "erin").await;
    subscribe(&mut client, &["room:5", "list:5"]).await;
    let body =
        json!({"topic": "room:5", "event": "paid", "data": {"order": 42}, "id": "order-42-paid"});
    let (status, first) = broadcast(&gateway, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = broadcast(&gateway, body).await;
    assert_eq!(status, 200, "{again}");
    // the same report, marked as a repeat; one message, carrying the backend's id
    assert_eq!(again["replayed"], true);
    let mut first_replayed = first.clone();
    first_replayed["replayed"] = json!(true);
    assert_eq!(again, first_replayed);
    let message = receive(&mut client).await;
    assert_eq!(
        (message["id"].clone(), message["offset"].clone()),
        (json!("order-42-paid"), first["offset"].clone())
    );
    // a different id is another message
    let (_, other) = broadcast(
        &gateway,
        json!({"topic": "list:5", "event": "paid", "data": {}, "id": "order-43-paid"}),
    )
    .await;
    assert!(other.get("replayed").is_none(), "{other}");
    assert_eq!(receive(&mut client).await["id"], "order-43-paid");
    send(&mut client, json!({"action": "ping"})).await;
    assert_eq!(
        receive(&mut client).await,
        json!({"action": "pong"}),
        "nothing twice"
    );
    // history holds the message once
    let (_, kept) = get(&gateway, "/history?topic=room:5").await;
    assert_eq!(kept["messages"].as_array().map(Vec::len), Some(1));
    // a message a recovery reply could not carry is not kept, nor sent
    let big = "x".repeat(121 * 1024);
    let (status, refused) = broadcast(
        &gateway,
        json!({"topic": "room:5", "event": "big", "data": big}),
    )
    .await;
    assert_eq!(
        (status, refused["error"].clone()),
        (400, json!("payload_too_large")),
        "{refused}"
    );
    // what cannot carry an offset is refused on a topic with history
    let (status, refused) =
        broadcast(&gateway, json!({"topic": "room:5", "message": {"raw": 1}})).await;
    assert_eq!(
        (status, refused["error"].clone()),
        (400, json!("invalid_request"))
    );
    let (status, refused) = broadcast(
        &gateway,
        json!({"topics": ["list:5", "room:5"], "event": "x", "data": {}}),
    )
    .await;
    assert_eq!(
        (status, refused["error"].clone()),
        (400, json!("invalid_target"))
    );
    let ids: BTreeSet<&str> = ["order-42-paid"].into();
    assert!(ids.contains(message["id"].as_str().unwrap()));
}

#[tokio::test]
async fn a_repeated_broadcast_id_is_sent_once_in_memory() {
    idempotent(Storage::Memory).await;
}

#[tokio::test]
async fn a_repeated_broadcast_id_is_sent_once_on_dynamodb_local() {
    idempotent(dynamodb_storage()).await;
}
