//! The server API's request bodies, as a backend sends them: `POST /broadcast` (parsed, then
//! serialized into the payload every recipient gets), `POST /subscribe` / `POST /unsubscribe`
//! and `POST /disconnect`.
//!
//! Input: one body, any bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsbridge::protocol::broadcast::{
    ApiError, ApiErrorCode, Broadcast, MAX_CONNECTION_IDS, Message, Target,
};
use wsbridge::protocol::manage::{Connections, Disconnect, SubscriptionChange};
use wsbridge::protocol::{MAX_ID_BYTES, MAX_MESSAGE_BYTES, Topic};
use wsbridge_fuzz::{assert_connection_ids, assert_topic_list};

/// A broadcast id as the handler makes them (a UUID).
const ID: &str = "3f1c9a4e-8b2d-4c6f-9e1a-7d5b3c2a1f0e";
/// The longest timestamp in decimal: the size check must hold for any.
const TIMESTAMP: i64 = i64::MIN;

fuzz_target!(|body: &[u8]| {
    match Broadcast::parse(body) {
        Ok(broadcast) => check_broadcast(&broadcast),
        Err(refused) => check_refusal(&refused),
    }
    check_subscription_change(body);
    match Disconnect::parse(body) {
        Ok(disconnect) => check_connections(&disconnect.connections),
        Err(refused) => check_refusal(&refused),
    }
});

/// A body is refused with a 400 and one of the codes a body can earn.
fn check_refusal(refused: &ApiError) {
    assert!(
        matches!(
            refused.error,
            ApiErrorCode::InvalidJson
                | ApiErrorCode::InvalidRequest
                | ApiErrorCode::MissingTarget
                | ApiErrorCode::MultipleTargets
                | ApiErrorCode::InvalidTarget
                | ApiErrorCode::MissingMessage
        ),
        "{refused:?}"
    );
    assert_eq!(refused.status(), 400);
}

fn check_broadcast(broadcast: &Broadcast) {
    match &broadcast.target {
        Target::Topic(topic) => assert_topic_list(std::slice::from_ref(topic), 1),
        Target::User(user) => assert!((1..=MAX_ID_BYTES).contains(&user.as_str().len())),
        Target::Connections(ids) => assert_connection_ids(ids, MAX_CONNECTION_IDS),
        Target::All => {}
    }
    if let Some(user) = &broadcast.exclusions.user {
        assert!((1..=MAX_ID_BYTES).contains(&user.as_str().len()));
    }
    if let Some(id) = &broadcast.exclusions.connection {
        assert!((1..=MAX_ID_BYTES).contains(&id.as_str().len()));
    }
    match broadcast.payload(ID, TIMESTAMP) {
        Ok(payload) => check_payload(broadcast, &payload),
        Err(refused) => {
            assert_eq!(refused.error, ApiErrorCode::PayloadTooLarge, "{refused:?}");
            assert_eq!(refused.status(), 400);
        }
    }
}

/// What recipients get: at most 128 KB of JSON carrying exactly what was sent.
fn check_payload(broadcast: &Broadcast, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_MESSAGE_BYTES,
        "{} bytes",
        payload.len()
    );
    let sent: Value = serde_json::from_slice(payload).expect("a payload is JSON");
    match &broadcast.message {
        Message::Raw(raw) => assert_eq!(&sent, raw),
        Message::Event { event, data } => {
            let Value::Object(envelope) = &sent else {
                panic!("an envelope is an object: {sent}");
            };
            assert_eq!(envelope["event"].as_str(), Some(event.as_str()));
            assert_eq!(&envelope["data"], data);
            assert_eq!(envelope["id"].as_str(), Some(ID));
            assert_eq!(envelope["timestamp"].as_i64(), Some(TIMESTAMP));
            let topic = envelope
                .get("topic")
                .map(|t| serde_json::from_value::<Topic>(t.clone()).expect("the topic is one"));
            match &broadcast.target {
                Target::Topic(target) => assert_eq!(topic.as_ref(), Some(target)),
                _ => assert_eq!(topic, None),
            }
            let fields = 4 + usize::from(topic.is_some());
            assert_eq!(envelope.len(), fields, "{sent}");
        }
    }
}

/// A subscription change accepted at a limit is accepted the same at a higher one.
fn check_subscription_change(body: &[u8]) {
    let mut accepted: Option<SubscriptionChange> = None;
    for max in [3, 50] {
        match SubscriptionChange::parse(body, max) {
            Ok(change) => {
                assert_topic_list(&change.topics, max);
                check_connections(&change.connections);
                if let Some(earlier) = &accepted {
                    assert_eq!(earlier, &change, "a higher limit changed the parse");
                }
                accepted = Some(change);
            }
            Err(refused) => {
                assert!(accepted.is_none(), "accepted at 3 topics, refused at {max}");
                check_refusal(&refused);
            }
        }
    }
}

fn check_connections(connections: &Connections) {
    match connections {
        Connections::Ids(ids) => assert_connection_ids(ids, MAX_CONNECTION_IDS),
        Connections::User(user) => assert!((1..=MAX_ID_BYTES).contains(&user.as_str().len())),
    }
}
