//! A client's WebSocket frames: the client protocol's parser on its own, then `$default` end
//! to end on a memory store with one registered connection, under the built-in channel policy
//! and both worked examples.
//!
//! Input: one or more frames (UTF-8) separated by NUL bytes. Every reply is checked against
//! what the parser and the channel rules say it must be, and the subscriptions the store holds
//! at the end against a model of the replies.

#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Channels, Grants, TopicPattern};
use wsbridge::config::SessionConfig;
use wsbridge::handlers::default;
use wsbridge::limits::{ConnectionLimit, LimitPolicy};
use wsbridge::protocol::client::{ClientAction, ErrorCode};
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::store::{Connection, ConnectionStore, MemoryStore, Registration};
use wsbridge_fuzz::assert_topic_list;

/// Frames of one input; more add little but time.
const MAX_FRAMES: usize = 8;
/// The topic limit of the session: small, so inputs reach it.
const MAX_TOPICS: usize = 3;
/// An error frame's details stay short whatever the frame: they echo at most a short prefix of
/// what the client sent (API Gateway also caps a route response at 128 KB).
const MAX_DETAILS_BYTES: usize = 1024;

const CONNECTION: &str = "L0SM9cOFvHcCIhw=";
const USER: &str = "alice";

/// The built-in policy, the chat example and the feed example (with team grants).
static POLICIES: LazyLock<Vec<(Channels, Grants)>> = LazyLock::new(|| {
    let parse = |json: &str| Channels::parse(json).expect("the worked examples parse");
    let pattern = |text: &str| TopicPattern::parse(text).expect("fixture patterns parse");
    vec![
        (Channels::default(), Grants::default()),
        (
            parse(include_str!("../../examples/channels/chat.json")),
            Grants::default(),
        ),
        (
            parse(include_str!("../../examples/channels/feed.json")),
            Grants {
                subscribe: vec![pattern("team:blue"), pattern("team:red:*")],
                publish: Vec::new(),
            },
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frames: Vec<&str> = text.split('\0').take(MAX_FRAMES).collect();
    for frame in &frames {
        check_parse(frame);
    }
    for (channels, grants) in POLICIES.iter() {
        run_session(&frames, channels, grants);
    }
});

/// The parser alone, at three limits: accepted lists are bounded, distinct and valid; a
/// higher limit never turns an accepted frame into another result; errors stay short.
fn check_parse(frame: &str) {
    let mut accepted: Option<ClientAction> = None;
    for max in [1, MAX_TOPICS, 50] {
        match ClientAction::parse(Some(frame), max) {
            Ok(action) => {
                if let ClientAction::Subscribe(topics) | ClientAction::Unsubscribe(topics) = &action
                {
                    assert_topic_list(topics, max);
                }
                if let Some(earlier) = &accepted {
                    assert_eq!(earlier, &action, "a higher limit changed the parse");
                }
                accepted = Some(action);
            }
            Err(refused) => {
                assert!(
                    accepted.is_none(),
                    "accepted at a lower limit, refused at {max}"
                );
                assert!(
                    refused.details.len() <= MAX_DETAILS_BYTES,
                    "{:?} details of {} bytes",
                    refused.error,
                    refused.details.len()
                );
            }
        }
    }
}

fn run_session(frames: &[&str], channels: &Channels, grants: &Grants) {
    let store = MemoryStore::new();
    let connection = Connection {
        id: ConnectionId::new(CONNECTION),
        user_id: UserId::new(USER),
        connected_at: 1_700_000_000_000,
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".to_owned(),
        expires_at: now_seconds() + 3_600,
        grants: grants.clone(),
    };
    let limit = ConnectionLimit {
        per_user: 1,
        policy: LimitPolicy::Refuse,
    };
    assert!(matches!(
        block_on(store.register(&connection, &limit)),
        Ok(Registration::Registered { .. })
    ));
    // No frame budget: the model below follows the protocol, not the clock.
    let session = SessionConfig {
        max_topics_per_connection: MAX_TOPICS,
        rate_limit: None,
        ..SessionConfig::default()
    };
    let mut held: BTreeSet<Topic> = BTreeSet::new();
    for frame in frames {
        let reply = send(&store, &session, channels, frame);
        let expected = expect(frame, channels, &connection, &mut held);
        match expected {
            Expected::Frame(frame) => assert_eq!(reply, frame),
            Expected::Error(code) => assert_eq!(reply["error"], json!(code), "{reply}"),
        }
    }
    // The subscriptions left behind are exactly the model's.
    let removed = block_on(store.remove_connection(&connection.id))
        .expect("the memory store does not fail")
        .expect("the connection is still registered");
    let left: BTreeSet<Topic> = removed.topics.into_iter().collect();
    assert_eq!(left, held);
}

/// Runs `$default` on one frame; the reply must be a 200 with a JSON body.
fn send(store: &MemoryStore, session: &SessionConfig, channels: &Channels, frame: &str) -> Value {
    let mut request = ApiGatewayWebsocketProxyRequest::default();
    request.request_context.connection_id = Some(CONNECTION.to_owned());
    request.body = Some(frame.to_owned());
    let response = block_on(default::handle(&request, store, session, channels));
    assert_eq!(response.status_code, 200, "{:?}", response.body);
    let Some(Body::Text(body)) = response.body else {
        panic!("a reply without a text body: {:?}", response.body);
    };
    serde_json::from_str(&body).expect("every reply is JSON")
}

/// What a reply must be: a whole frame, or an error frame of this code.
enum Expected {
    Frame(Value),
    Error(ErrorCode),
}

/// The reply the protocol and the channel rules call for, applied to the model `held`.
fn expect(
    frame: &str,
    channels: &Channels,
    connection: &Connection,
    held: &mut BTreeSet<Topic>,
) -> Expected {
    let action = match ClientAction::parse(Some(frame), MAX_TOPICS) {
        Ok(action) => action,
        Err(refused) => {
            return Expected::Frame(serde_json::to_value(&refused).expect("frames serialize"));
        }
    };
    match action {
        ClientAction::Ping => Expected::Frame(json!({"action": "pong"})),
        ClientAction::Whoami => Expected::Frame(
            json!({"action": "whoami", "connection_id": CONNECTION, "user_id": USER}),
        ),
        ClientAction::Subscribe(topics) => {
            let allowed = topics.iter().all(|topic| {
                channels
                    .check_subscribe(topic, &connection.user_id, &connection.grants)
                    .is_ok()
            });
            if !allowed {
                return Expected::Error(ErrorCode::Forbidden);
            }
            let after: BTreeSet<Topic> = held.iter().chain(&topics).cloned().collect();
            if after.len() > MAX_TOPICS {
                return Expected::Error(ErrorCode::TooManyTopics);
            }
            *held = after;
            Expected::Frame(json!({"action": "subscribed", "topics": topics}))
        }
        ClientAction::Unsubscribe(topics) => {
            for topic in &topics {
                held.remove(topic);
            }
            Expected::Frame(json!({"action": "unsubscribed", "topics": topics}))
        }
    }
}
