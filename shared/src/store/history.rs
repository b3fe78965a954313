//! Topic history and idempotent broadcasts: the store operations behind recovery.
//!
//! Each topic of a namespace with `history` has a stream: an epoch (a random name, new when
//! the stream starts or was lost) and the offset of its last message. A message appended
//! takes the next offset, gap-free, and is kept with it until it falls out of the last
//! `size` or its TTL passes. Readers compare epochs: a client that saw offset 41 of epoch E
//! can be given exactly what came after, or be told that it cannot.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::channels::History;
use crate::protocol::Topic;

/// Where a message stands in its topic's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A kept message: its offset and the payload delivered, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub offset: u64,
    pub payload: String,
}

/// What a history read found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// The stream's epoch; `None`: the topic has no stream (nothing kept, or all expired).
    pub epoch: Option<String>,
    /// The offset of the stream's last message (0 without a stream).
    pub latest: u64,
    /// Kept messages after the offset asked for, oldest first, gap-free from the first.
    pub messages: Vec<Kept>,
    /// More kept messages follow the last one returned (the read stopped at its limits).
    pub more: bool,
    /// The offset of the first kept message the read found, returned or not: whether a
    /// read continues a position does not depend on how much of it fit.
    pub first: Option<u64>,
}

impl HistoryPage {
    /// A read of a live stream, before any message is taken.
    pub(crate) fn of_stream(epoch: &str, latest: u64) -> Self {
        HistoryPage {
            epoch: Some(epoch.to_owned()),
            latest,
            ..HistoryPage::default()
        }
    }

    /// The offset a read starts at: after `after`, or the last `limits.messages` of the
    /// stream.
    pub(crate) fn start(after: Option<u64>, latest: u64, limits: &ReadLimits) -> u64 {
        match after {
            Some(after) => after.saturating_add(1),
            None => (latest + 1).saturating_sub(limits.messages as u64),
        }
    }

    /// Offers the next live kept message, in offset order: taken while the read has room;
    /// false once it is full (then `more` is set, and the caller stops).
    pub(crate) fn offer(&mut self, offset: u64, payload: &str, limits: &ReadLimits) -> bool {
        self.first.get_or_insert(offset);
        let bytes: usize = self.messages.iter().map(|m| m.payload.len()).sum();
        if self.messages.len() == limits.messages || bytes + payload.len() > limits.bytes {
            self.more = true;
            return false;
        }
        self.messages.push(Kept {
            offset,
            payload: payload.to_owned(),
        });
        true
    }
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub messages: usize,
    /// Payload bytes, summed: a reply that carries them must fit API Gateway's 128 KB.
    pub bytes: usize,
}

/// An idempotency key's state when a broadcast claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this broadcast's to send.
    Claimed,
    /// Sent before, within the window: the first answer, as stored.
    Done(String),
    /// Another request holds it and has not answered yet.
    InProgress,
}

/// Appending to and reading topic streams.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Appends a message to `topic`'s stream: `payload` is built for the position it gets
    /// (its envelope carries its own offset). Concurrent appends to one topic get distinct,
    /// consecutive offsets; the message and its offset are kept together or not at all.
    async fn append(
        &self,
        topic: &Topic,
        history: &History,
        payload: &(dyn for<'p> Fn(&'p Position) -> String + Send + Sync),
    ) -> Result<(Position, String), StoreError>;

    /// Kept messages after offset `after` (all kept ones with `None`, the last
    /// `limits.messages` of them), oldest first, strongly consistent: a message whose
    /// `append` returned is in it.
    async fn read(
        &self,
        topic: &Topic,
        after: Option<u64>,
        limits: ReadLimits,
    ) -> Result<HistoryPage, StoreError>;

    /// Claims an idempotency key for `lease_seconds` (a claim left by a request that died
    /// can be taken again after it), or says what became of it.
    async fn claim(&self, key: &str, lease_seconds: u64) -> Result<Claim, StoreError>;

    /// Records the answer of the claimed key, kept for `window_seconds`.
    async fn finish(&self, key: &str, answer: &str, window_seconds: u64) -> Result<(), StoreError>;

    /// Gives a claimed key up (the request failed before sending anything): a retry claims
    /// it afresh.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}

/// The page's messages after `after` as a recovery sees them: whether they continue the
/// client's position without a gap.
pub fn continues(page: &HistoryPage, since: &Position) -> bool {
    let Some(epoch) = &page.epoch else {
        return false;
    };
    if *epoch != since.epoch || since.offset > page.latest {
        return false;
    }
    match page.first {
        Some(first) => first == since.offset + 1,
        // Nothing after it was kept: complete only if nothing came after it.
        None => since.offset == page.latest,
    }
}

/// A new epoch's name: short, random, never reused in practice.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
