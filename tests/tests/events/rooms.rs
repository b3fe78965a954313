//! The rooms samples under `examples/channels/chat.json`: alice publishes into room:1 and
//! asks who is there; a backend asks the same, and whether alice is online.

use super::*;

/// The chat app's channels: `room` with client publish, presence and join/leave.
pub(super) fn chat() -> Channels {
    wsbridge_tests::example_channels("chat")
}

/// Runs the `$default` handler on a sample event under the chat channels.
pub(super) async fn run_chat_default(
    store: &MemoryStore,
    sender: &RecordingSender,
    name: &str,
) -> ApiGatewayProxyResponse {
    let settings = Settings {
        channels: chat(),
        ..Settings::default()
    };
    default::handle(&ws_event(name), &settings.context(store, sender)).await
}

/// A connection in room:1, counted in its presence (as a subscribe under chat.json does).
pub(super) async fn enter_room(store: &MemoryStore, id: &str) {
    let room = TopicPattern::parse("room:1").unwrap();
    let presence = chat().presence_topics(std::slice::from_ref(&room));
    store
        .subscribe(&ConnectionId::new(id), &[room], &presence, 50)
        .await
        .unwrap();
}

/// alice (the samples' connection), bob on two devices and carol, all in room:1.
async fn room_store() -> MemoryStore {
    let store = connected_store().await;
    enter_room(&store, CONNECTION_ID).await;
    for (id, user) in [
        ("bob-laptop=", "bob"),
        ("bob-phone=", "bob"),
        ("carol-1=", "carol"),
    ] {
        seed(&store, id, user, &[]).await;
        enter_room(&store, id).await;
    }
    store
}

#[tokio::test]
async fn default_publish_reaches_the_room_from_alice_but_not_alice() {
    // GIVEN alice, bob on two devices and carol in room:1
    let store = room_store().await;
    let sender = RecordingSender::new();

    // WHEN alice's connection publishes the sample message
    let response = run_chat_default(&store, &sender, DEFAULT_PUBLISH).await;

    // THEN she is told it reached the three other connections
    let reply = ws_json(&response);
    assert_eq!(reply["action"], "published", "{reply}");
    assert_eq!(reply["topic"], "room:1");
    assert_eq!(
        (reply["recipients"].as_u64(), reply["delivered"].as_u64()),
        (Some(3), Some(3))
    );
    // AND each of them got the message once, from alice as the server says, under the id
    // her reply names; her own connection got nothing
    let delivered: BTreeSet<ConnectionId> = sender.delivered_to().into_iter().collect();
    assert_eq!(delivered, ids(&["bob-laptop=", "bob-phone=", "carol-1="]));
    assert_eq!(sender.posts().len(), 3);
    for post in sender.posts() {
        let message: Value = serde_json::from_slice(&post.payload).unwrap();
        assert_eq!(message["topic"], "room:1");
        assert_eq!(message["event"], "message");
        assert_eq!(message["data"], json!({"text": "hello room"}));
        assert_eq!(message["from"], TOKEN_SUB);
        assert_eq!(message["id"], reply["id"]);
    }
}

#[tokio::test]
async fn default_publish_is_refused_where_the_namespace_takes_no_client_messages() {
    // GIVEN the same room under the built-in channels, which let no client publish
    let store = room_store().await;
    let sender = RecordingSender::new();
    let settings = Settings::default();
    let response = default::handle(
        &ws_event(DEFAULT_PUBLISH),
        &settings.context(&store, &sender),
    )
    .await;

    // THEN alice gets `forbidden` naming the topic, and nobody got anything
    let reply = ws_json(&response);
    assert_eq!(reply["error"], "forbidden", "{reply}");
    assert!(
        reply["details"].as_str().unwrap().contains("room:1"),
        "{reply}"
    );
    assert!(sender.posts().is_empty());
}

#[tokio::test]
async fn default_presence_lists_the_room_with_each_users_devices() {
    // GIVEN alice, bob on two devices and carol in room:1
    let store = room_store().await;

    // WHEN alice asks who is there
    let response = run_chat_default(&store, &RecordingSender::new(), DEFAULT_PRESENCE).await;

    // THEN three users, four connections
    assert_eq!(
        ws_json(&response),
        json!({
            "action": "presence",
            "topic": "room:1",
            "users": [
                {"user_id": "alice", "connections": 1},
                {"user_id": "bob", "connections": 2},
                {"user_id": "carol", "connections": 1}
            ],
            "total_users": 3,
            "total_connections": 4,
            "complete": true
        })
    );
}

#[tokio::test]
async fn broadcast_presence_answers_the_backend_what_the_room_sees() {
    // GIVEN the room, after bob's phone disconnected
    let store = room_store().await;
    store
        .remove_connection(&ConnectionId::new("bob-phone="))
        .await
        .unwrap();

    // WHEN the backend asks for room:1's presence
    let response = run_broadcast_with(
        &store,
        &RecordingSender::new(),
        &http_event(BROADCAST_PRESENCE),
        &chat(),
    )
    .await;

    // THEN bob is still there, on one device
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_json(&response);
    assert_eq!(
        body["users"][1],
        json!({"user_id": "bob", "connections": 1})
    );
    assert_eq!(
        (
            body["total_users"].as_u64(),
            body["total_connections"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

#[tokio::test]
async fn broadcast_online_lists_alice_s_devices() {
    // GIVEN alice connected (connect.json) and on her phone a minute later; bob elsewhere
    let store = connected_store().await;
    seed(&store, ALICE_PHONE, TOKEN_SUB, &[]).await;
    seed(&store, BOB_ON_LIST, "bob", &[]).await;

    // WHEN the backend asks whether alice is online
    let response = run_broadcast(
        &store,
        &RecordingSender::new(),
        &http_event(BROADCAST_ONLINE),
    )
    .await;

    // THEN both her connections, oldest first
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        http_json(&response),
        json!({
            "user_id": "alice",
            "online": true,
            "connections": [
                {"connection_id": CONNECTION_ID, "connected_at": CONNECTED_AT},
                {"connection_id": ALICE_PHONE, "connected_at": CONNECTED_AT + 60_000}
            ]
        })
    );
}
