//! Rooms end to end, as `examples/channels/chat.json` configures them: real WebSocket clients
//! and the server API over loopback against the local gateway, in memory and on DynamoDB
//! Local. A three-user chat room (publish, no echo, `from` set by the bridge, typing),
//! presence before and after a disconnect, join/leave with two devices of one user, a
//! wildcard subscriber with overlapping exact subscriptions, a multi-topic broadcast, a
//! batch, and the refusals.
//!
//! "Nothing else arrived" is checked without waiting: a handler posts its fan-out and its
//! join/leave events before it answers, and a connection's frames arrive in order, so a
//! `ping` answered by `pong` first proves nothing was queued before it.

use serde_json::{Value, json};
use wsbridge::channels::Channels;
use wsbridge::config::{FanoutConfig, SessionConfig};
use wsbridge_local::{GatewayConfig, RunningGateway, Storage};
use wsbridge_tests::gateway::{
    Client, broadcast, connect, dynamodb_storage, get, receive, request, send, subscribe,
};

fn chat() -> Channels {
    wsbridge_tests::example_channels("chat")
}

async fn gateway(storage: Storage) -> RunningGateway {
    let config = GatewayConfig {
        storage,
        session: SessionConfig::default(),
        channels: chat(),
        fanout: FanoutConfig { concurrency: 16 },
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

/// Asserts nothing is queued for `client`: its next frame is the answer to a ping.
async fn nothing_more(client: &mut Client, who: &str) {
    let next = request(client, json!({"action": "ping"})).await;
    assert_eq!(
        next,
        json!({"action": "pong"}),
        "{who} got something unexpected"
    );
}

async fn publish(client: &mut Client, frame: Value) -> Value {
    let mut frame = frame;
    frame["action"] = json!("publish");
    request(client, frame).await
}

async fn presence(client: &mut Client, topic: &str) -> Value {
    request(client, json!({"action": "presence", "topic": topic})).await
}

fn join(topic: &str, user: &str) -> Value {
    json!({"topic": topic, "event": "join", "data": {"user_id": user}})
}

fn leave(topic: &str, user: &str) -> Value {
    json!({"topic": topic, "event": "leave", "data": {"user_id": user}})
}

/// The part of a join/leave frame that says who moved where (id and time vary).
fn movement(frame: &Value) -> Value {
    json!({"topic": frame["topic"], "event": frame["event"], "data": frame["data"]})
}

/// alice, bob and carol in room:1 (and typing:1), each join heard by those already there.
async fn three_in_a_room(gateway: &RunningGateway) -> (Client, Client, Client) {
    let mut alice = connect(gateway, "alice").await;
    subscribe(&mut alice, &["room:1", "typing:1"]).await;
    let mut bob = connect(gateway, "bob").await;
    subscribe(&mut bob, &["room:1", "typing:1"]).await;
    assert_eq!(movement(&receive(&mut alice).await), join("room:1", "bob"));
    let mut carol = connect(gateway, "carol").await;
    subscribe(&mut carol, &["room:1", "typing:1"]).await;
    for heard in [&mut alice, &mut bob] {
        assert_eq!(movement(&receive(heard).await), join("room:1", "carol"));
    }
    nothing_more(&mut carol, "carol, who joined last").await;
    (alice, bob, carol)
}

async fn chat_room(storage: Storage) {
    let gateway = gateway(storage).await;
    let (mut alice, mut bob, mut carol) = three_in_a_room(&gateway).await;

    // alice says hello: bob and carol hear it from her, she is told it reached two
    let reply = publish(
        &mut alice,
        json!({"topic": "room:1", "event": "message", "data": {"text": "hello"}}),
    )
    .await;
    assert_eq!(reply["action"], "published", "{reply}");
    assert_eq!(
        (reply["recipients"].as_u64(), reply["delivered"].as_u64()),
        (Some(2), Some(2)),
        "{reply}"
    );
    for (who, client) in [("bob", &mut bob), ("carol", &mut carol)] {
        let message = receive(client).await;
        assert_eq!(message["topic"], "room:1", "{who}: {message}");
        assert_eq!(message["event"], "message");
        assert_eq!(message["data"], json!({"text": "hello"}));
        assert_eq!(message["from"], "alice", "the bridge names the sender");
        assert_eq!(
            message["id"], reply["id"],
            "one id, in the reply and the message"
        );
    }
    nothing_more(&mut alice, "alice, who asked for no echo").await;

    // a client cannot say it is someone else
    let forged = publish(
        &mut bob,
        json!({"topic": "room:1", "event": "message", "data": {}, "from": "alice"}),
    )
    .await;
    assert_eq!(forged["error"], "invalid_message", "{forged}");
    nothing_more(&mut alice, "alice, after a refused forgery").await;

    // with echo, carol's message comes back to her too (before or after her reply: API
    // Gateway does not order a route's reply against posts to the same connection)
    send(
        &mut carol,
        json!({"action": "publish", "topic": "room:1", "event": "message",
               "data": {"text": "me too"}, "echo": true}),
    )
    .await;
    let (first, second) = (receive(&mut carol).await, receive(&mut carol).await);
    let (reply, echoed) = if first["action"] == "published" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        (echoed["from"].as_str(), echoed["data"].clone()),
        (Some("carol"), json!({"text": "me too"}))
    );
    assert_eq!(
        (reply["action"].as_str(), reply["recipients"].as_u64()),
        (Some("published"), Some(3))
    );
    for client in [&mut alice, &mut bob] {
        assert_eq!(receive(client).await["from"], "carol");
    }

    // typing: a publish on typing:1, a namespace that keeps nothing
    let reply = publish(
        &mut bob,
        json!({"topic": "typing:1", "event": "typing", "data": {"typing": true}}),
    )
    .await;
    assert_eq!(reply["recipients"], 2, "{reply}");
    for client in [&mut alice, &mut carol] {
        let typing = receive(client).await;
        assert_eq!(
            (
                typing["topic"].clone(),
                typing["event"].clone(),
                typing["from"].clone()
            ),
            (json!("typing:1"), json!("typing"), json!("bob"))
        );
    }
    for (who, client) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        nothing_more(client, who).await;
    }
}

#[tokio::test]
async fn a_three_user_chat_room_in_memory() {
    chat_room(Storage::Memory).await;
}

#[tokio::test]
async fn a_three_user_chat_room_on_dynamodb_local() {
    chat_room(dynamodb_storage()).await;
}

async fn presence_across_a_disconnect(storage: Storage) {
    let gateway = gateway(storage).await;
    let (mut alice, bob, mut carol) = three_in_a_room(&gateway).await;
    let mut alice_phone = connect(&gateway, "alice").await;
    subscribe(&mut alice_phone, &["room:1"]).await;
    nothing_more(&mut carol, "carol (alice's second device is no new join)").await;

    // before: three users, alice on two devices
    let before = presence(&mut carol, "room:1").await;
    assert_eq!(
        before,
        json!({
            "action": "presence", "topic": "room:1",
            "users": [
                {"user_id": "alice", "connections": 2},
                {"user_id": "bob", "connections": 1},
                {"user_id": "carol", "connections": 1}
            ],
            "total_users": 3, "total_connections": 4, "complete": true
        })
    );
    // the backend sees the same
    let (status, server) = get(&gateway, "/presence?topic=room:1").await;
    assert_eq!(status, 200, "{server}");
    assert_eq!(server["users"], before["users"]);

    // bob's socket closes: the others hear him leave, and presence no longer has him
    drop(bob);
    assert_eq!(movement(&receive(&mut carol).await), leave("room:1", "bob"));
    assert_eq!(movement(&receive(&mut alice).await), leave("room:1", "bob"));
    assert_eq!(
        movement(&receive(&mut alice_phone).await),
        leave("room:1", "bob")
    );
    let after = presence(&mut alice, "room:1").await;
    assert_eq!(
        after["users"],
        json!([
            {"user_id": "alice", "connections": 2},
            {"user_id": "carol", "connections": 1}
        ])
    );
    assert_eq!(after["total_connections"], 3);
    let (_, online) = get(&gateway, "/online?user_id=bob").await;
    assert_eq!(
        online,
        json!({"user_id": "bob", "online": false, "connections": []})
    );
    let (_, online) = get(&gateway, "/online?user_id=alice").await;
    assert_eq!(online["connections"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn presence_before_and_after_a_disconnect_in_memory() {
    presence_across_a_disconnect(Storage::Memory).await;
}

#[tokio::test]
async fn presence_before_and_after_a_disconnect_on_dynamodb_local() {
    presence_across_a_disconnect(dynamodb_storage()).await;
}

async fn two_devices(storage: Storage) {
    let gateway = gateway(storage).await;
    let mut alice = connect(&gateway, "alice").await;
    subscribe(&mut alice, &["room:2"]).await;

    // bob's laptop enters: one join, not echoed to him
    let mut laptop = connect(&gateway, "bob").await;
    subscribe(&mut laptop, &["room:2"]).await;
    assert_eq!(movement(&receive(&mut alice).await), join("room:2", "bob"));
    nothing_more(&mut laptop, "bob's laptop (no echo of his own join)").await;

    // his phone enters too: he was already there, so no second join
    let mut phone = connect(&gateway, "bob").await;
    subscribe(&mut phone, &["room:2"]).await;
    nothing_more(&mut alice, "alice (bob's second device)").await;

    // the laptop leaves: bob is still there on his phone, so no leave
    let reply = request(
        &mut laptop,
        json!({"action": "unsubscribe", "topic": "room:2"}),
    )
    .await;
    assert_eq!(reply["action"], "unsubscribed");
    nothing_more(&mut alice, "alice (bob's phone is still in)").await;

    // the phone disconnects: bob's last connection, so now he left
    drop(phone);
    assert_eq!(movement(&receive(&mut alice).await), leave("room:2", "bob"));
    nothing_more(&mut laptop, "bob's laptop, out of the room").await;

    // the laptop comes back: a join again
    subscribe(&mut laptop, &["room:2"]).await;
    assert_eq!(movement(&receive(&mut alice).await), join("room:2", "bob"));
}

#[tokio::test]
async fn join_and_leave_count_users_not_devices_in_memory() {
    two_devices(Storage::Memory).await;
}

#[tokio::test]
async fn join_and_leave_count_users_not_devices_on_dynamodb_local() {
    two_devices(dynamodb_storage()).await;
}

/// The data of every message `client` has queued, in order, up to its ping's pong.
async fn received_data(client: &mut Client) -> Vec<Value> {
    send(client, json!({"action": "ping"})).await;
    let mut data = Vec::new();
    loop {
        let frame = receive(client).await;
        if frame == json!({"action": "pong"}) {
            return data;
        }
        data.push(frame["data"].clone());
    }
}

async fn wildcards_and_multi_topic(storage: Storage) {
    let gateway = gateway(storage).await;
    // a dashboard on every list, and on list:7 as well; a viewer of list:8 only
    let mut dashboard = connect(&gateway, "dana").await;
    subscribe(&mut dashboard, &["list:*", "list:7"]).await;
    let mut viewer = connect(&gateway, "victor").await;
    subscribe(&mut viewer, &["list:8"]).await;

    for n in 1..=2 {
        let (status, report) = broadcast(
            &gateway,
            json!({"topic": "list:7", "event": "card", "data": {"n": n}}),
        )
        .await;
        assert_eq!(
            (status, report["recipients"].as_u64()),
            (200, Some(1)),
            "{report}"
        );
    }
    let (_, report) = broadcast(
        &gateway,
        json!({"topic": "list:8", "event": "card", "data": {"n": 3}}),
    )
    .await;
    assert_eq!(report["recipients"], 2, "{report}");
    // one message to three topics: the dashboard holds two of them, through two keys
    let (status, report) = broadcast(
        &gateway,
        json!({"topics": ["list:7", "list:8", "list:9"], "event": "card", "data": {"n": 4}}),
    )
    .await;
    assert_eq!(
        (status, report["recipients"].as_u64()),
        (200, Some(2)),
        "{report}"
    );

    assert_eq!(
        received_data(&mut dashboard).await,
        vec![
            json!({"n": 1}),
            json!({"n": 2}),
            json!({"n": 3}),
            json!({"n": 4})
        ],
        "each message once, in order"
    );
    assert_eq!(
        received_data(&mut viewer).await,
        vec![json!({"n": 3}), json!({"n": 4})]
    );

    // a batch: each message to its own target, one report each, in order
    let (status, reports) = broadcast(
        &gateway,
        json!({"batch": [
            {"topic": "list:8", "event": "card", "data": {"n": 5}},
            {"user_id": "dana", "event": "note", "data": {"n": 6}},
            {"topic": "list:nobody", "event": "card", "data": {"n": 7}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{reports}");
    let recipients: Vec<_> = reports["results"]
        .as_array()
        .unwrap_or_else(|| panic!("a batch answers with results: {reports}"))
        .iter()
        .map(|r| r["recipients"].as_u64())
        .collect();
    assert_eq!(recipients, vec![Some(2), Some(1), Some(1)]);
    assert_eq!(
        received_data(&mut dashboard).await,
        vec![json!({"n": 5}), json!({"n": 6}), json!({"n": 7})]
    );
    assert_eq!(received_data(&mut viewer).await, vec![json!({"n": 5})]);
}

#[tokio::test]
async fn wildcards_multi_topic_and_batches_deliver_once_in_memory() {
    wildcards_and_multi_topic(Storage::Memory).await;
}

#[tokio::test]
async fn wildcards_multi_topic_and_batches_deliver_once_on_dynamodb_local() {
    wildcards_and_multi_topic(dynamodb_storage()).await;
}

async fn refusals(storage: Storage) {
    let gateway = gateway(storage).await;
    let mut alice = connect(&gateway, "alice").await;
    subscribe(&mut alice, &["list:1", "room:1"]).await;
    let mut bob = connect(&gateway, "bob").await;
    subscribe(&mut bob, &["list:1"]).await;

    // lists take no client messages
    let refused = publish(
        &mut alice,
        json!({"topic": "list:1", "event": "card", "data": {}}),
    )
    .await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    assert!(
        refused["details"]
            .as_str()
            .unwrap_or_default()
            .contains("list:1")
    );
    // rooms take them from their subscribers only
    let refused = publish(
        &mut bob,
        json!({"topic": "room:1", "event": "message", "data": {}}),
    )
    .await;
    assert_eq!(refused["error"], "not_subscribed", "{refused}");
    // lists keep no presence
    let refused = presence(&mut alice, "list:1").await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    // rooms take no wildcards; the subscribe is refused whole
    let refused = request(
        &mut bob,
        json!({"action": "subscribe", "topics": ["list:2", "room:*"]}),
    )
    .await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    let (_, report) = broadcast(
        &gateway,
        json!({"topic": "list:2", "event": "card", "data": {}}),
    )
    .await;
    assert_eq!(
        report["recipients"], 0,
        "nothing of a refused subscribe applies"
    );
    // another user's private channel has no presence to show either
    let refused = presence(&mut bob, "user:alice").await;
    assert_eq!(refused["error"], "forbidden", "{refused}");
    // nobody heard anything of it
    nothing_more(&mut alice, "alice").await;
    nothing_more(&mut bob, "bob").await;
}

#[tokio::test]
async fn refusals_leave_nothing_behind_in_memory() {
    refusals(Storage::Memory).await;
}

#[tokio::test]
async fn refusals_leave_nothing_behind_on_dynamodb_local() {
    refusals(dynamodb_storage()).await;
}
