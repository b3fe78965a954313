//! A client's WebSocket frames: the client protocol's parser on its own, then `$default` end
//! to end on a memory store with one registered connection, under the built-in channel policy
//! and both worked examples (rooms with publish, presence, join/leave and history; wildcard
//! lists; claim-granted teams).
//!
//! Input: one or more frames (UTF-8) separated by NUL bytes. Every reply is checked against
//! what the parser and the channel rules say it must be, every message the bridge posts
//! against the publishes that asked for it, and the subscriptions, presence and history
//! streams the store holds at the end against a model of the replies.
//!
//! An epoch is random, so no input could name one: `$room:1` in a frame stands for the epoch
//! of `room:1`'s stream once the session has published to it (as a client echoes the epoch
//! it received).

#![no_main]

#[path = "client_frame/parse.rs"]
mod parse;
#[path = "client_frame/streams.rs"]
mod streams;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use streams::{EPOCH_BYTES, Read, Streams, strip_timestamps};
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Channels, Grants, History, PublishRefusal, TopicPattern};
use wsbridge::config::{FanoutConfig, SessionConfig};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::history::REPLY_BYTES;
use wsbridge::handlers::{Context, default};
use wsbridge::limits::{ConnectionLimit, LimitPolicy};
use wsbridge::protocol::broadcast::Envelope;
use wsbridge::protocol::client::{ClientAction, ErrorCode, HistoryRequest, Publish, Subscribe};
use wsbridge::protocol::{ConnectionId, MAX_MESSAGE_BYTES, Topic, UserId};
use wsbridge::store::history::Position;
use wsbridge::store::{Connection, ConnectionStore, MemoryStore, Registration};
use wsbridge::test_support::{RecordingSender, frame_of, ws_request};

/// Frames of one input; more add little but time.
const MAX_FRAMES: usize = 8;
/// The topic limit of the session: small, so inputs reach it.
const MAX_TOPICS: usize = 3;
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
        parse::check_parse(frame, MAX_TOPICS);
    }
    for (channels, grants) in POLICIES.iter() {
        RUNTIME.block_on(run_session(&frames, channels, grants));
    }
});

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
    let fanout = Fanout::new(FanoutConfig::default());
    let ctx = Context {
        store: &store,
        sender: std::sync::Arc::new(sender.clone()),
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
        streams: Streams::default(),
    };
    for frame in frames {
        let frame = model.streams.substitute(frame);
        let response = default::handle(&ws_request(CONNECTION, Some(&frame)), &ctx).await;
        assert_eq!(response.status_code, 200, "{:?}", response.body);
        let mut reply = frame_of(&response);
        strip_timestamps(&mut reply);
        // Every answer carries the frame's ref, and only that; the rest is checked without it.
        let (reference, _) = ClientAction::parse_with_ref(Some(&frame), MAX_TOPICS);
        let echoed_ref = reply.as_object_mut().and_then(|reply| reply.remove("ref"));
        assert_eq!(echoed_ref, reference.map(|r| json!(r)), "{frame}");
        match model.expect(&frame) {
            Expected::Frame(frame) => assert_eq!(reply, frame),
            Expected::Error(code) => assert_eq!(reply["error"], json!(code), "{reply}"),
            Expected::Published {
                publish,
                echoed,
                history,
            } => model.check_published(&reply, publish, echoed, history),
        }
    }
    // Only an echoed publish reaches a connection: the user is alone, so no join or leave
    // is told to anyone, and a message is never sent back unasked.
    // The recording sender lists posts sorted, not in order: each is matched by its id.
    let posts = sender.posts();
    assert_eq!(posts.len(), model.echoed.len(), "{posts:?}");
    // Echoed messages of history topics: (topic, offset) → the bytes delivered.
    let mut delivered = BTreeMap::new();
    for post in &posts {
        assert_eq!(post.connection_id.as_str(), CONNECTION);
        let mut sent: Value = serde_json::from_slice(&post.payload).expect("a payload is JSON");
        let timestamp = sent.as_object_mut().and_then(|e| e.remove("timestamp"));
        assert!(timestamp.is_some_and(|t| t.is_i64()), "{sent}");
        let expected = model.echoed.iter().find(|e| e["id"] == sent["id"]);
        assert_eq!(Some(&sent), expected, "a post no publish asked for");
        if let (Some(topic), Some(offset)) = (sent["topic"].as_str(), sent["offset"].as_u64()) {
            delivered.insert((topic.to_owned(), offset), post.payload.clone());
        }
    }
    model.streams.check_store(&store, &delivered).await;
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

/// What a reply must be: a whole frame (kept messages without their `timestamp`), an error
/// frame of this code, or a publish report.
enum Expected {
    Frame(Value),
    Error(ErrorCode),
    /// `echoed`: the sender asked for its message and receives the topic; `history`: the
    /// topic's namespace keeps it.
    Published {
        publish: Publish,
        echoed: bool,
        history: Option<History>,
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
    streams: Streams,
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
            ClientAction::Subscribe(subscribe) => self.subscribe(subscribe),
            ClientAction::Unsubscribe(topics) => {
                for topic in &topics {
                    self.held.remove(topic);
                }
                Expected::Frame(json!({"action": "unsubscribed", "topics": topics}))
            }
            ClientAction::Publish(publish) => {
                let topic = &publish.topic;
                let receives = self.held.iter().any(|s| s.matches(topic.as_str()));
                match self.channels.check_publish(topic, grants, receives) {
                    Ok(()) => {}
                    Err(PublishRefusal::Forbidden(_)) => {
                        return Expected::Error(ErrorCode::Forbidden);
                    }
                    Err(PublishRefusal::NotSubscribed(_)) => {
                        return Expected::Error(ErrorCode::NotSubscribed);
                    }
                }
                // Checked with the widest position a message of a history topic can get,
                // before it is kept: the real one always fits.
                let history = self.history_of(topic);
                let widest = history.map(|_| Position {
                    offset: u64::MAX,
                    epoch: "x".repeat(EPOCH_BYTES),
                });
                // A kept message must also fit a recovery reply.
                let limit = match history {
                    Some(_) => wsbridge::handlers::history::REPLY_BYTES,
                    None => MAX_MESSAGE_BYTES,
                };
                if payload_len(&publish, SAMPLE_ID, widest.as_ref()) > limit {
                    return Expected::Error(ErrorCode::PayloadTooLarge);
                }
                Expected::Published {
                    echoed: publish.echo && receives,
                    publish,
                    history,
                }
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
            ClientAction::History(request) => self.history(request),
        }
    }

    fn history_of(&self, topic: &Topic) -> Option<History> {
        self.channels.namespace_of(topic).and_then(|n| n.history)
    }

    /// All topics allowed, then every `since` naming a topic with history, then room for the
    /// new subscriptions; then where each exact topic with history stands, and what came
    /// after each position given, the messages of all sharing one reply's room.
    fn subscribe(&mut self, Subscribe { topics, since }: Subscribe) -> Expected {
        let user = &self.connection.user_id;
        let grants = &self.connection.grants;
        let allowed = topics
            .iter()
            .all(|topic| self.channels.check_subscribe(topic, user, grants).is_ok());
        if !allowed {
            return Expected::Error(ErrorCode::Forbidden);
        }
        if since.keys().any(|topic| self.history_of(topic).is_none()) {
            return Expected::Error(ErrorCode::InvalidSince);
        }
        let after: BTreeSet<TopicPattern> = self.held.iter().chain(&topics).cloned().collect();
        if after.len() > MAX_TOPICS {
            return Expected::Error(ErrorCode::TooManyTopics);
        }
        self.held = after;
        let mut history = serde_json::Map::new();
        let mut room = REPLY_BYTES;
        // In the order subscribed: the first topics take the room first.
        for topic in topics.iter().filter_map(TopicPattern::as_topic) {
            let Some(kept) = self.history_of(&topic) else {
                continue;
            };
            let stream = match since.get(&topic) {
                Some(position) => {
                    let read = Read::Since(position, kept.size as usize);
                    let (stream, used) = self.streams.read(topic.as_str(), read, room);
                    room = room.saturating_sub(used);
                    stream
                }
                None => self.streams.state(topic.as_str()),
            };
            history.insert(topic.as_str().to_owned(), stream);
        }
        let mut reply = json!({"action": "subscribed", "topics": topics});
        if !history.is_empty() {
            reply["history"] = Value::Object(history);
        }
        Expected::Frame(reply)
    }

    /// `history`: the subscribe permission, a namespace that keeps history, then the last
    /// `limit` messages or those after `since`.
    fn history(
        &self,
        HistoryRequest {
            topic,
            limit,
            since,
        }: HistoryRequest,
    ) -> Expected {
        let exact = TopicPattern::exact(&topic);
        let user = &self.connection.user_id;
        if self
            .channels
            .check_subscribe(&exact, user, &self.connection.grants)
            .is_err()
        {
            return Expected::Error(ErrorCode::Forbidden);
        }
        let Some(kept) = self.history_of(&topic) else {
            return Expected::Error(ErrorCode::Forbidden);
        };
        let limit = limit.min(kept.size as usize);
        let read = match &since {
            Some(position) => Read::Since(position, limit),
            None => Read::Last(limit),
        };
        let (stream, _) = self.streams.read(topic.as_str(), read, REPLY_BYTES);
        let mut reply = json!({"action": "history", "topic": topic});
        if let (Value::Object(reply), Value::Object(stream)) = (&mut reply, stream) {
            reply.extend(stream);
        }
        Expected::Frame(reply)
    }

    /// A publish's report: the message reached the sender alone, when it asked for its echo,
    /// and took the next offset of its topic's stream when the topic keeps history.
    fn check_published(
        &mut self,
        reply: &Value,
        publish: Publish,
        echoed: bool,
        history: Option<History>,
    ) {
        let id = reply["id"]
            .as_str()
            .expect("a publish reports its message id");
        let topic = publish.topic.as_str();
        let position = history.map(|_| self.streams.next_position(topic, reply["epoch"].as_str()));
        let reached = u64::from(echoed);
        let mut expected = json!({
            "action": "published",
            "topic": topic,
            "id": id,
            "recipients": reached,
            "delivered": reached,
            "gone": 0,
            "failed": 0,
        });
        let mut envelope = json!({
            "topic": topic,
            "event": publish.event,
            "data": publish.data,
            "id": id,
            "from": USER,
        });
        if let Some(position) = &position {
            for value in [&mut expected, &mut envelope] {
                value["offset"] = json!(position.offset);
                value["epoch"] = json!(position.epoch);
            }
        }
        assert_eq!(reply, &expected);
        if echoed {
            self.echoed.push(envelope.clone());
        }
        if let (Some(kept), Some(position)) = (history, position) {
            let bytes = payload_len(&publish, id, Some(&position));
            self.streams
                .append(topic, &position, kept.size, envelope, bytes);
        }
    }
}

/// The size of a publish's envelope as delivered, with this id and position. The timestamp
/// is the clock's now: as many digits as the bridge's, milliseconds of this century.
fn payload_len(publish: &Publish, id: &str, position: Option<&Position>) -> usize {
    let user = UserId::new(USER);
    let envelope = Envelope {
        topic: Some(&publish.topic),
        topics: None,
        event: &publish.event,
        data: &publish.data,
        id,
        timestamp: wsbridge::clock::now_millis(),
        from: Some(&user),
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
    };
    serde_json::to_vec(&envelope)
        .expect("an envelope serializes")
        .len()
}
