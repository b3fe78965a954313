//! The server API's request bodies, as a backend sends them: `POST /broadcast` (one message
//! or a batch, each parsed, then serialized into the payload every recipient gets),
//! `POST /subscribe` / `POST /unsubscribe` and `POST /disconnect`. A message is serialized
//! without a position and with one (its place in a topic's stream, when the topic keeps
//! history), the widest included.
//!
//! Input: one body, any bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsbridge::protocol::broadcast::{
    ApiError, ApiErrorCode, Broadcast, BroadcastBody, MAX_BATCH, MAX_BROADCAST_TOPICS,
    MAX_CONNECTION_IDS, MAX_MESSAGE_ID_BYTES, Message, Target,
};
use wsbridge::protocol::manage::{Connections, Disconnect, SubscriptionChange};
use wsbridge::protocol::{MAX_ID_BYTES, MAX_MESSAGE_BYTES, Topic};
use wsbridge::store::history::Position;
use wsbridge_fuzz::{assert_connection_ids, assert_pattern_list, assert_topic_list};

/// A broadcast id as the handler makes them (a UUID), for a broadcast without its own.
const ID: &str = "3f1c9a4e-8b2d-4c6f-9e1a-7d5b3c2a1f0e";
/// The longest timestamp in decimal: the size check must hold for any.
const TIMESTAMP: i64 = i64::MIN;
/// An epoch as a stream gets one (`store::history::new_epoch`: 12 characters).
const EPOCH: &str = "9f2c41d07ab3";

fuzz_target!(|body: &[u8]| {
    check_broadcast_body(body);
    check_subscription_change(body);
    match Disconnect::parse(body) {
        Ok(disconnect) => check_connections(&disconnect.connections),
        Err(refused) => check_refusal(&refused),
    }
});

/// What the handler parses: one broadcast (exactly what `Broadcast::parse` reads from the
/// same body, when that reads one), or a batch of 1 to [`MAX_BATCH`], each checked alike.
fn check_broadcast_body(body: &[u8]) {
    let one = Broadcast::parse(body);
    match BroadcastBody::parse(body) {
        Ok(BroadcastBody::One(broadcast)) => {
            if let Ok(alone) = &one {
                assert_eq!(alone, &broadcast, "the two parsers read one body apart");
            }
            check_broadcast(&broadcast);
        }
        Ok(BroadcastBody::Batch(batch)) => {
            assert!(one.is_err(), "a batch read as one broadcast");
            assert!(
                (1..=MAX_BATCH).contains(&batch.len()),
                "{} members",
                batch.len()
            );
            batch.iter().for_each(check_broadcast);
        }
        Err(refused) => {
            check_refusal(&refused);
            assert!(one.is_err(), "refused as a body, accepted as one broadcast");
        }
    }
    if let Err(refused) = &one {
        check_refusal(refused);
    }
}

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
        Target::Topics(topics) => assert_topic_list(topics, MAX_BROADCAST_TOPICS),
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
    // The backend's message id, safe in a key and a log line.
    if let Some(id) = &broadcast.id {
        assert!(
            (1..=MAX_MESSAGE_ID_BYTES).contains(&id.len()) && id.chars().all(is_topic_char),
            "message id {id:?}"
        );
    }
    // The envelope's id: the backend's when it gave one, else the handler's own.
    let id = broadcast.id.as_deref().unwrap_or(ID);
    // The handler checks the size with the widest position before keeping the message, so
    // a payload that fits with it must fit with any narrower one, and without.
    let widest = Position {
        offset: u64::MAX,
        epoch: "x".repeat(EPOCH.len()),
    };
    let first = Position {
        offset: 1,
        epoch: EPOCH.to_owned(),
    };
    let mut fitted = None;
    for position in [Some(&widest), Some(&first), None] {
        match broadcast.payload(id, TIMESTAMP, position) {
            Ok(payload) => {
                check_payload(broadcast, id, position, &payload);
                fitted.get_or_insert(position);
            }
            Err(refused) => {
                assert_eq!(
                    fitted, None,
                    "fits with a wider position, refused with {position:?}"
                );
                assert_eq!(refused.error, ApiErrorCode::PayloadTooLarge, "{refused:?}");
                assert_eq!(refused.status(), 400);
            }
        }
    }
}

/// The characters of topics, which message ids are made of (`protocol::is_topic_char`).
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:/@|+=".contains(c)
}

/// What recipients get: at most 128 KB of JSON carrying exactly what was sent, and the
/// position (`offset`, `epoch`) exactly when there is one.
fn check_payload(broadcast: &Broadcast, id: &str, position: Option<&Position>, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_MESSAGE_BYTES,
        "{} bytes",
        payload.len()
    );
    let sent: Value = serde_json::from_slice(payload).expect("a payload is JSON");
    match &broadcast.message {
        // A raw message is the backend's own JSON: nothing is added, a position neither (the
        // handler refuses a raw message to a topic with history).
        Message::Raw(raw) => assert_eq!(&sent, raw),
        Message::Event { event, data } => {
            let Value::Object(envelope) = &sent else {
                panic!("an envelope is an object: {sent}");
            };
            assert_eq!(envelope["event"].as_str(), Some(event.as_str()));
            assert_eq!(&envelope["data"], data);
            assert_eq!(envelope["id"].as_str(), Some(id));
            assert_eq!(envelope["timestamp"].as_i64(), Some(TIMESTAMP));
            let topic = envelope
                .get("topic")
                .map(|t| serde_json::from_value::<Topic>(t.clone()).expect("the topic is one"));
            let topics = envelope.get("topics").map(|t| {
                serde_json::from_value::<Vec<Topic>>(t.clone()).expect("the topics are topics")
            });
            match &broadcast.target {
                Target::Topic(target) => assert_eq!(topic.as_ref(), Some(target)),
                _ => assert_eq!(topic, None),
            }
            match &broadcast.target {
                Target::Topics(targets) => assert_eq!(topics.as_ref(), Some(targets)),
                _ => assert_eq!(topics, None),
            }
            match position {
                Some(position) => {
                    assert_eq!(envelope["offset"].as_u64(), Some(position.offset));
                    assert_eq!(envelope["epoch"].as_str(), Some(position.epoch.as_str()));
                }
                None => assert!(
                    !envelope.contains_key("offset") && !envelope.contains_key("epoch"),
                    "{sent}"
                ),
            }
            // A backend's message never names a sender: `from` is the bridge's, for clients.
            let fields = 4
                + usize::from(topic.is_some())
                + usize::from(topics.is_some())
                + 2 * usize::from(position.is_some());
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
                assert_pattern_list(&change.topics, max);
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
