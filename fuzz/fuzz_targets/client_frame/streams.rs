//! The history streams of one session, as the `published` replies built them: what a
//! `subscribed` or `history` reply must say of each topic.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use wsbridge::protocol::Topic;
use wsbridge::store::MemoryStore;
use wsbridge::store::history::{HistoryStore, Position, ReadLimits};

/// An epoch's length (`store::history::new_epoch`): every position carries one this long.
pub const EPOCH_BYTES: usize = 12;

/// One topic's stream: its epoch, its last offset, and the messages it keeps.
pub struct Stream {
    pub epoch: String,
    pub latest: u64,
    /// offset → the message as delivered, without its `timestamp` (the bridge's clock).
    kept: BTreeMap<u64, Kept>,
}

impl Stream {
    /// The kept messages, oldest first: offset, message (without `timestamp`), bytes.
    pub fn kept(&self) -> impl Iterator<Item = (u64, &Value, usize)> {
        self.kept
            .iter()
            .map(|(offset, kept)| (*offset, &kept.message, kept.bytes))
    }
}

struct Kept {
    message: Value,
    /// Its size as delivered: what a reply's room is counted in.
    bytes: usize,
}

/// What a reader asks of a stream (as `handlers::history::Read`, limits already capped
/// at the namespace's size).
pub enum Read<'a> {
    Last(usize),
    Since(&'a Position, usize),
}

/// The streams of the history topics published to so far.
#[derive(Default)]
pub struct Streams {
    streams: BTreeMap<String, Stream>,
}

impl Streams {
    /// `frame` with `$T` standing for the epoch of topic T's stream, for each stream there is
    /// (longest topics first, so `$room:1` does not eat the start of `$room:10`; an epoch
    /// holds no `$`, so nothing is replaced twice).
    pub fn substitute(&self, frame: &str) -> String {
        let mut topics: Vec<_> = self.streams.iter().collect();
        topics.sort_by_key(|(topic, _)| std::cmp::Reverse(topic.len()));
        let mut frame = frame.to_owned();
        for (topic, stream) in topics {
            frame = frame.replace(&format!("${topic}"), &stream.epoch);
        }
        frame
    }

    /// Where the next message to `topic` goes: after its last one, or at 1 of the epoch the
    /// bridge just reported for a new stream.
    pub fn next_position(&self, topic: &str, reported_epoch: Option<&str>) -> Position {
        match self.streams.get(topic) {
            Some(stream) => Position {
                offset: stream.latest + 1,
                epoch: stream.epoch.clone(),
            },
            None => {
                let epoch = reported_epoch.expect("a publish to a new stream reports its epoch");
                assert!(
                    epoch.len() == EPOCH_BYTES && epoch.chars().all(|c| c.is_ascii_hexdigit()),
                    "a new epoch {epoch:?}"
                );
                Position {
                    offset: 1,
                    epoch: epoch.to_owned(),
                }
            }
        }
    }

    /// Keeps `message` at `position`, and only the last `size` messages.
    pub fn append(
        &mut self,
        topic: &str,
        position: &Position,
        size: u32,
        message: Value,
        bytes: usize,
    ) {
        let stream = self
            .streams
            .entry(topic.to_owned())
            .or_insert_with(|| Stream {
                epoch: position.epoch.clone(),
                latest: 0,
                kept: BTreeMap::new(),
            });
        assert_eq!(stream.epoch, position.epoch);
        stream.latest = position.offset;
        stream.kept.insert(position.offset, Kept { message, bytes });
        if let Some(dropped) = position.offset.checked_sub(u64::from(size)) {
            stream.kept.remove(&dropped);
        }
    }

    /// The streams the store keeps are the model's: epoch, last offset, and each kept message
    /// with its offset, byte for byte as it was delivered when it was echoed.
    pub async fn check_store(
        &self,
        store: &MemoryStore,
        delivered: &BTreeMap<(String, u64), Vec<u8>>,
    ) {
        let all = ReadLimits {
            messages: usize::MAX,
            bytes: usize::MAX,
        };
        for (name, stream) in &self.streams {
            let topic = Topic::parse(name).expect("a model topic is a topic");
            let page = store
                .read(&topic, Some(0), all)
                .await
                .expect("the memory store does not fail");
            assert_eq!(page.epoch.as_deref(), Some(stream.epoch.as_str()));
            assert_eq!(page.latest, stream.latest);
            assert!(!page.more);
            let kept: Vec<_> = stream.kept().collect();
            assert_eq!(page.messages.len(), kept.len());
            for (found, (offset, message, bytes)) in page.messages.iter().zip(kept) {
                assert_eq!(found.offset, offset);
                let mut stored: Value = serde_json::from_str(&found.payload).expect("kept as JSON");
                let timestamp = stored.as_object_mut().and_then(|m| m.remove("timestamp"));
                assert!(timestamp.is_some_and(|t| t.is_i64()), "{stored}");
                assert_eq!(&stored, message);
                assert_eq!(found.payload.len(), bytes, "{stored}");
                if let Some(sent) = delivered.get(&(name.clone(), offset)) {
                    assert_eq!(sent.as_slice(), found.payload.as_bytes());
                }
            }
        }
    }

    /// Where `topic`'s stream stands, with no message: a plain subscribe's view.
    pub fn state(&self, topic: &str) -> Value {
        match self.streams.get(topic) {
            Some(stream) => json!({
                "epoch": stream.epoch, "offset": stream.latest, "messages": [], "more": false,
            }),
            None => json!({"epoch": null, "offset": 0, "messages": [], "more": false}),
        }
    }

    /// What a read of `topic` must answer within `room` bytes of messages, and the bytes its
    /// messages take. A position is recovered when what is kept continues it without a gap
    /// (its epoch, not past the end, the next offset still kept): whether it all fits the
    /// room is `more`'s business, as the README says, not `recovered`'s.
    pub fn read(&self, topic: &str, read: Read<'_>, room: usize) -> (Value, usize) {
        let Some(stream) = self.streams.get(topic) else {
            let mut reply = json!({"epoch": null, "offset": 0, "messages": [], "more": false});
            if matches!(read, Read::Since(..)) {
                reply["recovered"] = json!(false);
            }
            return (reply, 0);
        };
        let (from, limit, recovered) = match read {
            Read::Last(n) => ((stream.latest + 1).saturating_sub(n as u64), n, None),
            Read::Since(position, n) => {
                let continues = position.epoch == stream.epoch
                    && position.offset <= stream.latest
                    && (position.offset == stream.latest
                        || stream.kept.contains_key(&(position.offset + 1)));
                (position.offset.saturating_add(1), n, Some(continues))
            }
        };
        let mut reply = Map::new();
        reply.insert("epoch".to_owned(), json!(stream.epoch));
        reply.insert("offset".to_owned(), json!(stream.latest));
        if let Some(recovered) = recovered {
            reply.insert("recovered".to_owned(), json!(recovered));
        }
        let mut messages = Vec::new();
        let mut used = 0;
        let mut more = false;
        // A position that cannot be continued gets nothing: the client refetches its state.
        if recovered != Some(false) {
            for kept in stream.kept.range(from..).map(|(_, kept)| kept) {
                if messages.len() == limit || used + kept.bytes > room {
                    more = true;
                    break;
                }
                used += kept.bytes;
                messages.push(kept.message.clone());
            }
        }
        reply.insert("messages".to_owned(), Value::Array(messages));
        reply.insert("more".to_owned(), json!(more));
        (Value::Object(reply), used)
    }
}

/// A reply's kept messages without their `timestamp` (the bridge's clock), each checked to
/// have one.
pub fn strip_timestamps(reply: &mut Value) {
    if let Some(Value::Object(streams)) = reply.get_mut("history") {
        streams.values_mut().for_each(strip_messages);
    }
    strip_messages(reply);
}

fn strip_messages(stream: &mut Value) {
    if let Some(Value::Array(messages)) = stream.get_mut("messages") {
        for message in messages {
            let timestamp = message.as_object_mut().and_then(|m| m.remove("timestamp"));
            assert!(timestamp.is_some_and(|t| t.is_i64()), "{message}");
        }
    }
}
