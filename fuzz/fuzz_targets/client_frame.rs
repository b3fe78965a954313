//! A client's WebSocket frames: the client protocol's parser on its own, then `$default` end
//! to end on a memory store with one registered connection, under the built-in channel policy
//! and both worked examples (rooms with publish, presence and join/leave; wildcard lists;
//! claim-granted teams).
//!
//! Input: one or more frames (UTF-8) separated by NUL bytes. Every reply is checked against
//! what the parser and the channel rules say it must be, every message the bridge posts
//! against the publishes that asked for it, and the subscriptions and presence the store holds
//! at the end against a model of the replies.

#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Channels, Grants, PublishRefusal, TopicPattern};
use wsbridge::config::{FanoutConfig, SessionConfig};
use wsbridge::handlers::{Context, default};
use wsbridge::limits::{ConnectionLimit, LimitPolicy};
use wsbridge::protocol::broadcast::Envelope;
use wsbridge::protocol::client::{ClientAction, ErrorCode, MAX_EVENT_BYTES};
use wsbridge::protocol::{ConnectionId, MAX_MESSAGE_BYTES, Topic, UserId};
use wsbridge::store::{Connection, ConnectionStore, MemoryStore, Registration};
use wsbridge::test_support::{RecordingSender, frame_of, ws_request};
use wsbridge_fuzz::assert_pattern_list;

/// Frames of one input; more add little but time.
const MAX_FRAMES: usize = 8;
/// The topic limit of the session: small, so inputs reach it.
const MAX_TOPICS: usize = 3;
/// An error frame's details stay short whatever the frame: they echo at most a short prefix of
/// what the client sent (API Gateway also caps a route response at 128 KB).
const MAX_DETAILS_BYTES: usize = 1024;
/// A message id as the bridge makes them (a UUID), for the size a payload will have.
const SAMPLE_ID: &str = "3f1c9a4e-8b2d-4c6f-9e1a-7d5b3c2a1f0e";

const CONNECTION: &str = "L0SM9cOFvHcCIhw=";
const USER: &str = "alice";

/// The handlers' fan-out runs on tokio (channels, timers): one runtime for every input.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
});

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
        RUNTIME.block_on(run_session(&frames, channels, grants));
    }
});

/// The parser alone, at three limits: accepted lists are bounded, distinct and valid; a
/// higher limit never turns an accepted frame into another result; errors stay short.
fn check_parse(frame: &str) {
    let mut accepted: Option<ClientAction> = None;
    for max in [1, MAX_TOPICS, 50] {
        match ClientAction::parse(Some(frame), max) {
            Ok(action) => {
                match &action {
                    ClientAction::Subscribe(topics) | ClientAction::Unsubscribe(topics) => {
                        assert_pattern_list(topics, max);
                    }
                    ClientAction::Publish(publish) => {
                        assert_eq!(
                            Topic::parse(publish.topic.as_str()).as_ref(),
                            Ok(&publish.topic)
                        );
                        assert!((1..=MAX_EVENT_BYTES).contains(&publish.event.len()));
                    }
                    ClientAction::Presence(topic) => {
                        assert_eq!(Topic::parse(topic.as_str()).as_ref(), Ok(topic));
                    }
                    ClientAction::Ping | ClientAction::Whoami => {}
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

async fn run_session(frames: &[&str], channels: &Channels, grants: &Grants) {
    let store = MemoryStore::new();
    let sender = RecordingSender::new();
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
        store.register(&connection, &limit).await,
        Ok(Registration::Registered { .. })
    ));
    // No frame budget: the model below follows the protocol, not the clock.
    let session = SessionConfig {
        max_topics_per_connection: MAX_TOPICS,
        rate_limit: None,
        ..SessionConfig::default()
    };
    let fanout = FanoutConfig::default();
    let ctx = Context {
        store: &store,
        sender: &sender,
        session: &session,
        channels,
        fanout: &fanout,
        deadline: None,
    };
    let mut model = Model {
        channels,
        connection: &connection,
        held: BTreeSet::new(),
        echoed: Vec::new(),
    };
    for frame in frames {
        let response = default::handle(&ws_request(CONNECTION, Some(frame)), &ctx).await;
        assert_eq!(response.status_code, 200, "{:?}", response.body);
        let reply = frame_of(&response);
        match model.expect(frame) {
            Expected::Frame(frame) => assert_eq!(reply, frame),
            Expected::Error(code) => assert_eq!(reply["error"], json!(code), "{reply}"),
            Expected::Published { topic, echoed } => model.check_published(&reply, topic, echoed),
        }
    }
    // Only an echoed publish reaches a connection: the user is alone, so no join or leave
    // is told to anyone, and a message is never sent back unasked.
    // The recording sender lists posts sorted, not in order: each is matched by its id.
    let posts = sender.posts();
    assert_eq!(posts.len(), model.echoed.len(), "{posts:?}");
    for post in &posts {
        assert_eq!(post.connection_id.as_str(), CONNECTION);
        let mut sent: Value = serde_json::from_slice(&post.payload).expect("a payload is JSON");
        let timestamp = sent.as_object_mut().and_then(|e| e.remove("timestamp"));
        assert!(timestamp.is_some_and(|t| t.is_i64()), "{sent}");
        let expected = model.echoed.iter().find(|e| e["id"] == sent["id"]);
        assert_eq!(Some(&sent), expected, "a post no publish asked for");
    }
    // The subscriptions left behind are exactly the model's, and so is presence.
    let removed = store
        .remove_connection(&connection.id)
        .await
        .expect("the memory store does not fail")
        .expect("the connection is still registered");
    let left: BTreeSet<TopicPattern> = removed.topics.into_iter().collect();
    assert_eq!(left, model.held);
    let held: Vec<TopicPattern> = model.held.iter().cloned().collect();
    let tracked: BTreeSet<Topic> = channels.presence_topics(&held).into_iter().collect();
    assert_eq!(removed.left.into_iter().collect::<BTreeSet<_>>(), tracked);
}

/// What a reply must be: a whole frame, an error frame of this code, or a publish report.
enum Expected {
    Frame(Value),
    Error(ErrorCode),
    /// `echoed`: the sender asked for its message and receives the topic.
    Published {
        topic: Topic,
        echoed: Option<Value>,
    },
}

/// The connection as the protocol says it must be after the frames so far.
struct Model<'a> {
    channels: &'a Channels,
    connection: &'a Connection,
    held: BTreeSet<TopicPattern>,
    /// The envelope of each echoed publish (ids are distinct), without its `timestamp` (the
    /// bridge's clock).
    echoed: Vec<Value>,
}

impl Model<'_> {
    /// The reply the protocol and the channel rules call for, applied to the model.
    fn expect(&mut self, frame: &str) -> Expected {
        let action = match ClientAction::parse(Some(frame), MAX_TOPICS) {
            Ok(action) => action,
            Err(refused) => {
                return Expected::Frame(serde_json::to_value(&refused).expect("frames serialize"));
            }
        };
        let user = &self.connection.user_id;
        let grants = &self.connection.grants;
        match action {
            ClientAction::Ping => Expected::Frame(json!({"action": "pong"})),
            ClientAction::Whoami => Expected::Frame(
                json!({"action": "whoami", "connection_id": CONNECTION, "user_id": USER}),
            ),
            ClientAction::Subscribe(topics) => {
                let allowed = topics
                    .iter()
                    .all(|topic| self.channels.check_subscribe(topic, user, grants).is_ok());
                if !allowed {
                    return Expected::Error(ErrorCode::Forbidden);
                }
                let after: BTreeSet<TopicPattern> =
                    self.held.iter().chain(&topics).cloned().collect();
                if after.len() > MAX_TOPICS {
                    return Expected::Error(ErrorCode::TooManyTopics);
                }
                self.held = after;
                Expected::Frame(json!({"action": "subscribed", "topics": topics}))
            }
            ClientAction::Unsubscribe(topics) => {
                for topic in &topics {
                    self.held.remove(topic);
                }
                Expected::Frame(json!({"action": "unsubscribed", "topics": topics}))
            }
            ClientAction::Publish(publish) => {
                let topic = publish.topic;
                let receives = self.held.iter().any(|s| s.matches(topic.as_str()));
                match self.channels.check_publish(&topic, grants, receives) {
                    Ok(()) => {}
                    Err(PublishRefusal::Forbidden(_)) => {
                        return Expected::Error(ErrorCode::Forbidden);
                    }
                    Err(PublishRefusal::NotSubscribed(_)) => {
                        return Expected::Error(ErrorCode::NotSubscribed);
                    }
                }
                let envelope = Envelope {
                    topic: Some(&topic),
                    topics: None,
                    event: &publish.event,
                    data: &publish.data,
                    id: SAMPLE_ID,
                    timestamp: wsbridge::clock::now_millis(),
                    from: Some(user),
                };
                let size = serde_json::to_vec(&envelope)
                    .expect("an envelope serializes")
                    .len();
                if size > MAX_MESSAGE_BYTES {
                    return Expected::Error(ErrorCode::PayloadTooLarge);
                }
                let echoed = (publish.echo && receives).then(|| {
                    json!({
                        "topic": topic,
                        "event": publish.event,
                        "data": publish.data,
                        "from": USER,
                    })
                });
                Expected::Published { topic, echoed }
            }
            ClientAction::Presence(topic) => {
                let exact = TopicPattern::exact(&topic);
                let allowed = self.channels.check_presence(&topic).is_ok()
                    && self.channels.check_subscribe(&exact, user, grants).is_ok();
                if !allowed {
                    return Expected::Error(ErrorCode::Forbidden);
                }
                // Presence is kept for exact subscriptions only, never through a wildcard.
                let here = self.held.contains(&exact);
                let users = if here {
                    json!([{"user_id": USER, "connections": 1}])
                } else {
                    json!([])
                };
                Expected::Frame(json!({
                    "action": "presence",
                    "topic": topic,
                    "users": users,
                    "total_users": u64::from(here),
                    "total_connections": u64::from(here),
                    "complete": true,
                }))
            }
        }
    }

    /// A publish's report: the message reached the sender alone, when it asked for its echo.
    fn check_published(&mut self, reply: &Value, topic: Topic, echoed: Option<Value>) {
        let id = reply["id"]
            .as_str()
            .expect("a publish reports its message id");
        let reached = u64::from(echoed.is_some());
        let expected = json!({
            "action": "published",
            "topic": topic,
            "id": id,
            "recipients": reached,
            "delivered": reached,
            "gone": 0,
            "failed": 0,
        });
        assert_eq!(reply, &expected);
        if let Some(mut envelope) = echoed {
            envelope["id"] = json!(id);
            self.echoed.push(envelope);
        }
    }
}
