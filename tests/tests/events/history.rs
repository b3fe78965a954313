//! The history samples under `examples/channels/chat.json`, whose rooms keep 100 messages.

use super::rooms::{chat, enter_room, run_chat_default};
use super::*;
use wsbridge::handlers::history::stamp;
use wsbridge::protocol::Topic;

/// Three messages said in room:1 through the history path, as a broadcast keeps them.
async fn room_with_three_messages(store: &MemoryStore) {
    let settings = Settings {
        channels: chat(),
        ..Settings::default()
    };
    let sender = RecordingSender::new();
    let ctx = settings.context(store, &sender);
    let room = Topic::parse("room:1").unwrap();
    for n in 1..=3 {
        stamp(&ctx, Some(&room), |position| {
            let offset = position.map(|p| p.offset);
            serde_json::to_vec(&json!({"topic": "room:1", "event": "message",
                                       "data": {"n": n}, "offset": offset}))
        })
        .await
        .unwrap_or_else(|_| panic!("message {n} kept"));
    }
}

#[tokio::test]
async fn default_history_reads_the_rooms_last_messages() {
    // GIVEN alice in room:1, where three messages were said
    let store = connected_store().await;
    enter_room(&store, CONNECTION_ID).await;
    room_with_three_messages(&store).await;

    // WHEN she asks for the last 20
    let response = run_chat_default(&store, &RecordingSender::new(), DEFAULT_HISTORY).await;

    // THEN she gets the three, oldest first, and where the stream stands
    let reply = ws_json(&response);
    assert_eq!(reply["action"], "history", "{reply}");
    assert_eq!(reply["topic"], "room:1");
    let ns: Vec<&Value> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"]["n"])
        .collect();
    assert_eq!(ns, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(
        (reply["offset"].as_u64(), reply["more"].as_bool()),
        (Some(3), Some(false))
    );
    assert!(reply["epoch"].is_string());
}

#[tokio::test]
async fn default_subscribe_since_from_another_epoch_subscribes_and_says_not_recovered() {
    // GIVEN room:1's stream, started after the sample's position was taken (another epoch)
    let store = connected_store().await;
    room_with_three_messages(&store).await;

    // WHEN alice comes back with the sample's position
    let response = run_chat_default(&store, &RecordingSender::new(), DEFAULT_SUBSCRIBE_SINCE).await;

    // THEN she is subscribed, told the gap cannot be filled, and where to resume from
    let reply = ws_json(&response);
    assert_eq!(reply["topics"], json!(["room:1"]), "{reply}");
    let stream = &reply["history"]["room:1"];
    assert_eq!(stream["recovered"], false);
    assert_eq!(stream["messages"], json!([]));
    assert_eq!(stream["offset"], 3);
    assert_ne!(stream["epoch"], "4f9c2d7a1b3e");
    assert_eq!(
        topic_recipients(&store, "room:1").await,
        ids(&[CONNECTION_ID])
    );
}

#[tokio::test]
async fn broadcast_history_answers_the_backend_the_rooms_last_messages() {
    let store = connected_store().await;
    room_with_three_messages(&store).await;
    let response = run_broadcast_with(
        &store,
        &RecordingSender::new(),
        &http_event(BROADCAST_HISTORY),
        &chat(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_json(&response);
    assert_eq!(body["topic"], "room:1");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(body["messages"][2]["offset"], 3);
}
