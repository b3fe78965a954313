//! The in-memory store: the local gateway's default and the reference the DynamoDB store is
//! held to by the conformance suite.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream;

use super::{
    Admission, Connection, ConnectionStore, Recipient, RecipientPages, RecipientStore,
    Registration, Removed, StoreError,
};
use crate::clock::Clock;
use crate::limits::{ConnectionLimit, Decision, LimitPolicy, RateLimit};
use crate::protocol::broadcast::Target;
use crate::protocol::{ConnectionId, Topic, UserId};

#[derive(Default)]
struct State {
    connections: BTreeMap<ConnectionId, Entry>,
    subscribers: BTreeMap<Topic, BTreeSet<ConnectionId>>,
}

struct Entry {
    connection: Connection,
    topics: BTreeSet<Topic>,
    /// The frame budget's state (see `limits`).
    tat: Option<i64>,
    /// False once evicted by a newer connection of its user: it no longer counts toward
    /// the limit, though its rows stay until the caller removes them (as in DynamoDB, where
    /// the user's item stops listing it).
    counted: bool,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.connection.expires_at > now
    }

    fn recipient(&self) -> Recipient {
        self.connection.recipient()
    }
}

impl State {
    fn remove(&mut self, id: &ConnectionId) -> Option<Removed> {
        let entry = self.connections.remove(id)?;
        for topic in &entry.topics {
            self.unsubscribe_one(topic, id);
        }
        Some(Removed {
            connection: entry.connection,
            topics: entry.topics.into_iter().collect(),
        })
    }

    fn unsubscribe_one(&mut self, topic: &Topic, id: &ConnectionId) {
        if let Some(set) = self.subscribers.get_mut(topic) {
            set.remove(id);
            if set.is_empty() {
                self.subscribers.remove(topic);
            }
        }
    }

    /// The user's live connections that count toward the limit, oldest first.
    fn counted(&self, user: &UserId, now: u64) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self
            .connections
            .values()
            .filter(|e| e.counted && e.live(now) && &e.connection.user_id == user)
            .collect();
        entries.sort_by_key(|e| (e.connection.connected_at, e.connection.id.clone()));
        entries
    }

    fn live_entry(&mut self, id: &ConnectionId, now: u64) -> Result<&mut Entry, StoreError> {
        self.connections
            .get_mut(id)
            .filter(|entry| entry.live(now))
            .ok_or_else(|| StoreError::NotConnected(id.clone()))
    }
}

/// Connections and subscriptions in a map behind a mutex. The lock is never held across an
/// `.await`: every method does its work synchronously and returns owned data.
pub struct MemoryStore {
    state: Mutex<State>,
    page_size: usize,
    clock: Clock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            page_size: 100,
            clock: Clock::wall(),
        }
    }

    /// Judges expiry by `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Recipients per page; small pages let tests exercise paging.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later
        // calls would misread (each method finishes its edits before returning), so a
        // poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot(&self, target: &Target) -> Vec<Recipient> {
        let now = self.clock.now_seconds();
        let state = self.state();
        let live = |id: &ConnectionId| {
            state
                .connections
                .get(id)
                .filter(|entry| entry.live(now))
                .map(Entry::recipient)
        };
        match target {
            Target::Topic(topic) => state
                .subscribers
                .get(topic)
                .into_iter()
                .flatten()
                .filter_map(live)
                .collect(),
            Target::User(user) => state
                .connections
                .values()
                .filter(|entry| entry.live(now) && &entry.connection.user_id == user)
                .map(Entry::recipient)
                .collect(),
            Target::Connections(ids) => ids.iter().filter_map(live).collect(),
            Target::All => state
                .connections
                .values()
                .filter(|entry| entry.live(now))
                .map(Entry::recipient)
                .collect(),
        }
    }
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn register(
        &self,
        connection: &Connection,
        limit: &ConnectionLimit,
    ) -> Result<Registration, StoreError> {
        let now = self.clock.now_seconds();
        let mut state = self.state();
        state.remove(&connection.id);
        let counted = state.counted(&connection.user_id, now);
        let mut evicted = Vec::new();
        if counted.len() >= limit.per_user {
            if limit.policy == LimitPolicy::Refuse {
                return Ok(Registration::AtLimit {
                    live: counted.len(),
                });
            }
            let excess = counted.len() + 1 - limit.per_user;
            evicted = counted[..excess]
                .iter()
                .map(|e| e.connection.id.clone())
                .collect();
        }
        for id in &evicted {
            if let Some(entry) = state.connections.get_mut(id) {
                entry.counted = false;
            }
        }
        state.connections.insert(
            connection.id.clone(),
            Entry {
                connection: connection.clone(),
                topics: BTreeSet::new(),
                tat: None,
                counted: true,
            },
        );
        Ok(Registration::Registered { evicted })
    }

    async fn admit(
        &self,
        id: &ConnectionId,
        limit: Option<&RateLimit>,
        now_us: i64,
    ) -> Result<Admission, StoreError> {
        let mut state = self.state();
        let entry = state.live_entry(id, self.clock.now_seconds())?;
        if let Some(limit) = limit {
            match limit.decide(entry.tat, now_us) {
                Decision::Allow { tat } => entry.tat = Some(tat),
                Decision::Deny { retry_after } => return Ok(Admission::Limited { retry_after }),
            }
        }
        Ok(Admission::Admitted(entry.connection.clone()))
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let now = self.clock.now_seconds();
        Ok(self
            .state()
            .connections
            .get(id)
            .filter(|entry| entry.live(now))
            .map(|entry| entry.connection.clone()))
    }

    async fn user_connections(&self, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        let now = self.clock.now_seconds();
        let state = self.state();
        Ok(state
            .counted(user, now)
            .into_iter()
            .map(|e| e.connection.clone())
            .collect())
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<Option<Removed>, StoreError> {
        Ok(self.state().remove(id))
    }

    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
        max_topics: usize,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let entry = state.live_entry(id, self.clock.now_seconds())?;
        let adding: BTreeSet<&Topic> = topics
            .iter()
            .filter(|t| !entry.topics.contains(*t))
            .collect();
        if entry.topics.len() + adding.len() > max_topics {
            return Err(StoreError::TooManyTopics {
                current: entry.topics.len(),
                adding: adding.len(),
                limit: max_topics,
            });
        }
        let adding: Vec<Topic> = adding.into_iter().cloned().collect();
        entry.topics.extend(adding.iter().cloned());
        for topic in adding {
            state
                .subscribers
                .entry(topic)
                .or_default()
                .insert(id.clone());
        }
        Ok(())
    }

    async fn unsubscribe(&self, id: &ConnectionId, topics: &[Topic]) -> Result<(), StoreError> {
        let mut state = self.state();
        let entry = state.live_entry(id, self.clock.now_seconds())?;
        for topic in topics {
            entry.topics.remove(topic);
        }
        for topic in topics {
            state.unsubscribe_one(topic, id);
        }
        Ok(())
    }
}

#[async_trait]
impl RecipientStore for MemoryStore {
    fn recipients<'a>(&'a self, target: &'a Target) -> RecipientPages<'a> {
        let recipients = self.snapshot(target);
        let pages: Vec<Result<Vec<Recipient>, StoreError>> = recipients
            .chunks(self.page_size)
            .map(|page| Ok(page.to_vec()))
            .collect();
        Box::pin(stream::iter(pages))
    }

    async fn count_connections(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_seconds();
        let state = self.state();
        Ok(state.connections.values().filter(|e| e.live(now)).count() as u64)
    }

    async fn remove_gone(&self, ids: &[ConnectionId], via: &Target) -> Result<(), StoreError> {
        let mut state = self.state();
        for id in ids {
            state.remove(id);
            if let Target::Topic(topic) = via {
                state.unsubscribe_one(topic, id);
            }
        }
        Ok(())
    }
}
