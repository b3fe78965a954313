//! The in-memory store: the local gateway's default and the reference the DynamoDB store is
//! held to by the conformance suite.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream;

use super::{Connection, ConnectionStore, Recipient, RecipientPages, RecipientStore, StoreError};
use crate::auth::now_seconds;
use crate::protocol::broadcast::Target;
use crate::protocol::{ConnectionId, Topic};

#[derive(Default)]
struct State {
    connections: BTreeMap<ConnectionId, Entry>,
    subscribers: BTreeMap<Topic, BTreeSet<ConnectionId>>,
}

struct Entry {
    connection: Connection,
    topics: BTreeSet<Topic>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.connection.expires_at > now
    }

    fn recipient(&self) -> Recipient {
        Recipient {
            connection_id: self.connection.id.clone(),
            user_id: self.connection.user_id.clone(),
            endpoint: self.connection.endpoint.clone(),
        }
    }
}

impl State {
    fn remove(&mut self, id: &ConnectionId) {
        if let Some(entry) = self.connections.remove(id) {
            for topic in entry.topics {
                if let Some(set) = self.subscribers.get_mut(&topic) {
                    set.remove(id);
                    if set.is_empty() {
                        self.subscribers.remove(&topic);
                    }
                }
            }
        }
    }

    fn live_entry(&mut self, id: &ConnectionId) -> Result<&mut Entry, StoreError> {
        let now = now_seconds();
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
        }
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
        let now = now_seconds();
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
    async fn put_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let mut state = self.state();
        state.remove(&connection.id);
        state.connections.insert(
            connection.id.clone(),
            Entry {
                connection: connection.clone(),
                topics: BTreeSet::new(),
            },
        );
        Ok(())
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let now = now_seconds();
        Ok(self
            .state()
            .connections
            .get(id)
            .filter(|entry| entry.live(now))
            .map(|entry| entry.connection.clone()))
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.state().remove(id);
        Ok(())
    }

    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
        max_topics: usize,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let entry = state.live_entry(id)?;
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
        let entry = state.live_entry(id)?;
        for topic in topics {
            entry.topics.remove(topic);
        }
        for topic in topics {
            if let Some(set) = state.subscribers.get_mut(topic) {
                set.remove(id);
                if set.is_empty() {
                    state.subscribers.remove(topic);
                }
            }
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
        let now = now_seconds();
        let state = self.state();
        Ok(state.connections.values().filter(|e| e.live(now)).count() as u64)
    }

    async fn remove_connections(&self, ids: &[ConnectionId]) -> Result<(), StoreError> {
        let mut state = self.state();
        for id in ids {
            state.remove(id);
        }
        Ok(())
    }
}
