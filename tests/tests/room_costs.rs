//! What rooms cost on DynamoDB (Local), through the real `$default` handler under
//! `examples/channels/chat.json`: DynamoDB operations (exact, so a change that makes one
//! dearer fails here) and the capacity units DynamoDB reports for them (printed: run with
//! `--nocapture` for the table README quotes). Each frame also pays the rate limiter's
//! UpdateItem, included: one, as here, when the connection's budget is idle; a second when a
//! frame comes within one interval of the previous one (the first guess at the bucket's
//! state fails its condition). The limit here is high enough that every frame finds its
//! budget idle, so the counts do not depend on how fast the machine runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::encodings::Body;
use serde_json::{Value, json};
use wsbridge::channels::TopicPattern;
use wsbridge::config::SessionConfig;
use wsbridge::handlers::default;
use wsbridge::limits::RateLimit;
use wsbridge::protocol::{ConnectionId, Topic};
use wsbridge::store::dynamodb::{CapacityMeter, OperationCounts};
use wsbridge::store::{ConnectionStore, DynamoDbStore};
use wsbridge::test_support::{RecordingSender, Settings, connection, put, ws_request};
use wsbridge_tests::fresh_dynamodb_store;

struct Metered {
    store: DynamoDbStore,
    counts: Arc<OperationCounts>,
    meter: Arc<CapacityMeter>,
    settings: Settings,
    quiet: std::sync::atomic::AtomicBool,
}

impl Metered {
    async fn new() -> Self {
        let counts = Arc::new(OperationCounts::default());
        let meter = Arc::new(CapacityMeter::default());
        let store = fresh_dynamodb_store()
            .await
            .with_operation_counts(counts.clone())
            .with_capacity_meter(meter.clone());
        let settings = Settings {
            channels: wsbridge_tests::example_channels("chat"),
            session: SessionConfig {
                rate_limit: Some(RateLimit {
                    per_second: 1_000_000,
                    burst: 1_000,
                }),
                ..SessionConfig::default()
            },
            ..Settings::default()
        };
        Metered {
            store,
            counts,
            meter,
            settings,
            quiet: Default::default(),
        }
    }

    /// `count` users in `topic`, one connection each, entered without counting.
    async fn room(&self, topic: &str, count: usize) {
        let room = Topic::parse(topic).unwrap();
        for n in 0..count {
            let id = format!("m-{n}");
            put(&self.store, &connection(&id, &format!("member-{n}"))).await;
            self.store
                .subscribe(
                    &ConnectionId::new(id),
                    &[TopicPattern::exact(&room)],
                    std::slice::from_ref(&room),
                    10,
                )
                .await
                .unwrap();
        }
    }

    /// `frame`, printing nothing.
    async fn frame_quietly(&self, what: &str, id: &str, frame: Value) {
        self.quiet.store(true, std::sync::atomic::Ordering::Relaxed);
        self.frame(what, id, frame).await;
        self.quiet
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs one frame of `id` and returns its reply, the operations and units it cost.
    async fn frame(&self, what: &str, id: &str, frame: Value) -> (Value, BTreeMap<String, u64>) {
        self.counts.reset();
        self.meter.reset();
        let sender = RecordingSender::new();
        let response = default::handle(
            &ws_request(id, Some(&frame.to_string())),
            &self.settings.context(&self.store, &sender),
        )
        .await;
        let reply = match &response.body {
            Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
            other => panic!("no reply frame: {other:?}"),
        };
        let ops = self.counts.snapshot();
        if self.quiet.load(std::sync::atomic::Ordering::Relaxed) {
            return (reply, ops);
        }
        println!(
            "{what:<38} posts {:>3}  read units {:>4.1}  write units {:>4.1}  {ops:?} {:?}",
            sender.posts().len(),
            self.meter.read_units(),
            self.meter.write_units(),
            self.meter.snapshot(),
        );
        assert!(
            self.meter.write_units() >= 1.0,
            "{what}: the rate limiter's update is a write"
        );
        (reply, ops)
    }
}

fn ops(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn a_join_a_second_device_a_presence_query_a_publish_and_a_leave() {
    // GIVEN room:1 with ten members, and bob connected on two devices
    let m = Metered::new().await;
    m.room("room:1", 10).await;
    put(&m.store, &connection("bob-1", "bob")).await;
    put(&m.store, &connection("bob-2", "bob")).await;

    // a join: the subscription and presence row in one transaction, then the join event to
    // the ten others (one Query page of the topic)
    let (reply, join) = m
        .frame(
            "join (first device, 10 others told)",
            "bob-1",
            json!({"action": "subscribe", "topic": "room:1"}),
        )
        .await;
    assert_eq!(reply["action"], "subscribed", "{reply}");
    // (room:1 keeps history: the reply says where its stream stands, one GetItem more)
    assert_eq!(
        join,
        ops(&[
            ("UpdateItem", 1),
            ("GetItem", 2),
            ("BatchGetItem", 1),
            ("TransactWriteItems", 1),
            ("Query", 1),
        ])
    );

    // a second device: the same writes, no event
    let (_, second) = m
        .frame(
            "subscribe (second device, no join)",
            "bob-2",
            json!({"action": "subscribe", "topic": "room:1"}),
        )
        .await;
    assert_eq!(
        second,
        ops(&[
            ("UpdateItem", 1),
            ("GetItem", 2),
            ("BatchGetItem", 1),
            ("TransactWriteItems", 1),
        ])
    );

    // presence: one Query of the topic's presence rows
    let (reply, presence) = m
        .frame(
            "presence (11 users)",
            "bob-1",
            json!({"action": "presence", "topic": "room:1"}),
        )
        .await;
    assert_eq!(reply["total_users"], 11, "{reply}");
    assert_eq!(presence, ops(&[("UpdateItem", 1), ("Query", 1)]));

    // a publish to the room: kept in its history (the stream row read, one transaction of
    // the stream row and the message), then one Query page of its subscribers
    let (reply, publish) = m
        .frame(
            "publish (12 subscribers, 11 posts)",
            "bob-1",
            json!({"action": "publish", "topic": "room:1", "event": "message", "data": {}}),
        )
        .await;
    assert_eq!(reply["recipients"], 11, "{reply}");
    assert_eq!(
        publish,
        ops(&[
            ("UpdateItem", 1),
            ("GetItem", 1),
            ("TransactWriteItems", 1),
            ("Query", 1)
        ])
    );
    let (epoch, offset) = (
        reply["epoch"].clone(),
        reply["offset"].as_u64().unwrap_or(0),
    );
    for _ in 0..9 {
        m.frame_quietly(
            "publish (again)",
            "bob-1",
            json!({"action": "publish", "topic": "room:1", "event": "message", "data": {"text": "x".repeat(100)}}),
        )
        .await;
    }

    // a recovery of the nine missed since (by a connection that still holds the topic, so
    // the subscription itself writes nothing): the connection row, the stream row and one
    // Query of the kept messages
    let (reply, recovery) = m
        .frame(
            "recovering subscribe (9 missed)",
            "bob-2",
            json!({"action": "subscribe", "topic": "room:1",
                   "since": {"offset": offset, "epoch": epoch}}),
        )
        .await;
    let recovered = &reply["history"]["room:1"];
    assert_eq!(recovered["recovered"], true, "{reply}");
    assert_eq!(
        recovered["messages"].as_array().map(Vec::len),
        Some(9),
        "{reply}"
    );
    assert_eq!(
        recovery,
        ops(&[("UpdateItem", 1), ("GetItem", 2), ("Query", 1)])
    );
    let (reply, history) = m
        .frame(
            "history (last 10)",
            "bob-2",
            json!({"action": "history", "topic": "room:1", "limit": 10}),
        )
        .await;
    assert_eq!(
        reply["messages"].as_array().map(Vec::len),
        Some(10),
        "{reply}"
    );
    assert_eq!(
        history,
        ops(&[("UpdateItem", 1), ("GetItem", 1), ("Query", 1)])
    );

    // leaving from both devices: the last one is the leave, told to the ten
    let (_, first_out) = m
        .frame(
            "unsubscribe (first device, no leave)",
            "bob-1",
            json!({"action": "unsubscribe", "topic": "room:1"}),
        )
        .await;
    let (reply, leave) = m
        .frame(
            "leave (last device, 10 others told)",
            "bob-2",
            json!({"action": "unsubscribe", "topic": "room:1"}),
        )
        .await;
    assert_eq!(reply["action"], "unsubscribed", "{reply}");
    // the transaction, then the presence entry's own update (which returns what is left)
    let unsubscribe = [("UpdateItem", 2), ("GetItem", 1), ("TransactWriteItems", 1)];
    assert_eq!(first_out, ops(&unsubscribe));
    assert_eq!(
        leave,
        ops(&[unsubscribe.as_slice(), &[("Query", 1)]].concat())
    );
    assert!(
        m.store
            .get_connection(&ConnectionId::new("bob-2"))
            .await
            .unwrap()
            .is_some()
    );
}
