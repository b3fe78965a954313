//! Topic streams and idempotency keys in memory, with the DynamoDB store's semantics.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::MemoryStore;
use crate::channels::History;
use crate::protocol::Topic;
use crate::store::StoreError;
use crate::store::history::{Claim, HistoryPage, HistoryStore, Position, ReadLimits, new_epoch};

#[derive(Default)]
pub(super) struct Streams {
    topics: HashMap<Topic, Stream>,
    keys: HashMap<String, Key>,
}

struct Stream {
    epoch: String,
    latest: u64,
    /// Until when the stream lives: its last append's TTL. Past it, the next append starts
    /// a new epoch.
    expires_at: u64,
    /// offset → (payload, expires_at)
    kept: BTreeMap<u64, (String, u64)>,
}

struct Key {
    answer: Option<String>,
    expires_at: u64,
}

impl MemoryStore {
    fn streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        // As for `state`: every method finishes its edits before returning.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn append(
        &self,
        topic: &Topic,
        history: &History,
        payload: &(dyn for<'p> Fn(&'p Position) -> String + Send + Sync),
    ) -> Result<(Position, String), StoreError> {
        let now = self.clock.now_seconds();
        let expires_at = now + history.ttl.as_secs();
        let mut streams = self.streams();
        let stream = streams
            .topics
            .entry(topic.clone())
            .and_modify(|s| {
                if s.expires_at <= now {
                    *s = fresh(expires_at);
                }
            })
            .or_insert_with(|| fresh(expires_at));
        let position = Position {
            offset: stream.latest + 1,
            epoch: stream.epoch.clone(),
        };
        let payload = payload(&position);
        stream.latest = position.offset;
        stream.expires_at = expires_at;
        stream
            .kept
            .insert(position.offset, (payload.clone(), expires_at));
        // Keep the last `size`: the one that just fell out goes.
        if let Some(dropped) = position.offset.checked_sub(u64::from(history.size)) {
            stream.kept.remove(&dropped);
        }
        Ok((position, payload))
    }

    async fn read(
        &self,
        topic: &Topic,
        after: Option<u64>,
        limits: ReadLimits,
    ) -> Result<HistoryPage, StoreError> {
        let now = self.clock.now_seconds();
        let streams = self.streams();
        let Some(stream) = streams.topics.get(topic).filter(|s| s.expires_at > now) else {
            return Ok(HistoryPage::default());
        };
        let from = HistoryPage::start(after, stream.latest, &limits);
        let mut page = HistoryPage::of_stream(&stream.epoch, stream.latest);
        for (offset, (payload, expires_at)) in stream.kept.range(from..) {
            if *expires_at > now && !page.offer(*offset, payload, &limits) {
                break;
            }
        }
        Ok(page)
    }

    async fn claim(&self, key: &str, lease_seconds: u64) -> Result<Claim, StoreError> {
        let now = self.clock.now_seconds();
        let mut streams = self.streams();
        match streams.keys.get(key).filter(|k| k.expires_at > now) {
            Some(Key {
                answer: Some(answer),
                ..
            }) => Ok(Claim::Done(answer.clone())),
            Some(_) => Ok(Claim::InProgress),
            None => {
                streams.keys.insert(
                    key.to_owned(),
                    Key {
                        answer: None,
                        expires_at: now + lease_seconds,
                    },
                );
                Ok(Claim::Claimed)
            }
        }
    }

    async fn finish(&self, key: &str, answer: &str, window_seconds: u64) -> Result<(), StoreError> {
        let expires_at = self.clock.now_seconds() + window_seconds;
        self.streams().keys.insert(
            key.to_owned(),
            Key {
                answer: Some(answer.to_owned()),
                expires_at,
            },
        );
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.streams().keys.remove(key);
        Ok(())
    }
}

fn fresh(expires_at: u64) -> Stream {
    Stream {
        epoch: new_epoch(),
        latest: 0,
        expires_at,
        kept: BTreeMap::new(),
    }
}
