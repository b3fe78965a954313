//! The in-memory store: the local gateway's default and the reference the DynamoDB store is
//! held to by the conformance suite.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream;

use super::{
    Admission, Audience, Connection, ConnectionStore, Page, PresencePage, Recipient,
    RecipientStore, Registration, Removed, Session, Span, SpanPages, StoreError,
};
use crate::channels::TopicPattern;
use crate::clock::Clock;
use crate::limits::{ConnectionLimit, Decision, LimitPolicy, RateLimit};
use crate::protocol::{ConnectionId, Topic, UserId};

mod history;
mod jobs;
mod recipients;

#[derive(Default)]
struct State {
    connections: BTreeMap<ConnectionId, Entry>,
    subscribers: BTreeMap<TopicPattern, BTreeSet<ConnectionId>>,
    /// Presence topics: user → their connections there.
    presence: BTreeMap<Topic, BTreeMap<UserId, BTreeSet<ConnectionId>>>,
}

struct Entry {
    connection: Connection,
    topics: BTreeSet<TopicPattern>,
    /// The presence topics it is recorded in.
    presence: BTreeSet<Topic>,
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
    fn remove(&mut self, id: &ConnectionId, now: u64) -> Option<Removed> {
        let entry = self.connections.remove(id)?;
        for topic in &entry.topics {
            self.unsubscribe_one(topic, id);
        }
        let user = &entry.connection.user_id;
        let left = entry
            .presence
            .iter()
            .filter(|topic| self.leave(topic, user, id, now))
            .cloned()
            .collect();
        Some(Removed {
            connection: entry.connection,
            topics: entry.topics.into_iter().collect(),
            left,
        })
    }

    /// Whether `user` has a live connection other than `id` in presence topic `topic`.
    fn present_elsewhere(&self, topic: &Topic, user: &UserId, id: &ConnectionId, now: u64) -> bool {
        self.presence
            .get(topic)
            .and_then(|users| users.get(user))
            .is_some_and(|ids| {
                ids.iter().any(|other| {
                    other != id && self.connections.get(other).is_some_and(|e| e.live(now))
                })
            })
    }

    /// Takes `id` out of `topic`'s presence; true when it was its user's last live
    /// connection there.
    fn leave(&mut self, topic: &Topic, user: &UserId, id: &ConnectionId, now: u64) -> bool {
        let last = !self.present_elsewhere(topic, user, id, now);
        if let Some(users) = self.presence.get_mut(topic) {
            if let Some(ids) = users.get_mut(user) {
                ids.remove(id);
                if ids.is_empty() {
                    users.remove(user);
                }
            }
            if users.is_empty() {
                self.presence.remove(topic);
            }
        }
        last
    }

    fn unsubscribe_one(&mut self, topic: &TopicPattern, id: &ConnectionId) {
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
    /// Topic streams and idempotency keys: apart from the connections, as in DynamoDB,
    /// where they are rows no connection operation touches.
    history: Mutex<history::Streams>,
    /// Broadcasts running in parts, by id.
    jobs: Mutex<std::collections::HashMap<String, crate::store::jobs::Job>>,
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
            history: Mutex::default(),
            jobs: Mutex::default(),
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

    /// The next page of `audience` in `span`: up to a page of ids in order, the live ones
    /// as recipients, and where the rest starts.
    fn page(&self, audience: &Audience, span: &Span) -> Page {
        let now = self.clock.now_seconds();
        let state = self.state();
        let ids = recipients::next_ids(&state, audience, span, self.page_size, now);
        let rest = (ids.len() == self.page_size)
            .then(|| ids.last().map(|last| span.after(last)))
            .flatten();
        let recipients = ids
            .iter()
            .filter_map(|id| state.connections.get(id))
            .filter(|entry| entry.live(now))
            .map(Entry::recipient)
            .collect();
        Page { recipients, rest }
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
        state.remove(&connection.id, now);
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
                presence: BTreeSet::new(),
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
        Ok(Admission::Admitted(Session {
            connection: entry.connection.clone(),
            subscriptions: entry.topics.iter().cloned().collect(),
        }))
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
        let now = self.clock.now_seconds();
        Ok(self.state().remove(id, now))
    }

    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
        presence: &[Topic],
        max_topics: usize,
    ) -> Result<Vec<Topic>, StoreError> {
        let now = self.clock.now_seconds();
        let mut state = self.state();
        let entry = state.live_entry(id, now)?;
        let adding: BTreeSet<&TopicPattern> = topics
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
        let adding: Vec<TopicPattern> = adding.into_iter().cloned().collect();
        entry.topics.extend(adding.iter().cloned());
        let tracking: Vec<Topic> = presence
            .iter()
            .filter(|t| entry.presence.insert((*t).clone()))
            .cloned()
            .collect();
        let user = entry.connection.user_id.clone();
        for topic in adding {
            state
                .subscribers
                .entry(topic)
                .or_default()
                .insert(id.clone());
        }
        let mut joined = Vec::new();
        for topic in tracking {
            if !state.present_elsewhere(&topic, &user, id, now) {
                joined.push(topic.clone());
            }
            state
                .presence
                .entry(topic)
                .or_default()
                .entry(user.clone())
                .or_default()
                .insert(id.clone());
        }
        Ok(joined)
    }

    async fn unsubscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
    ) -> Result<Vec<Topic>, StoreError> {
        let now = self.clock.now_seconds();
        let mut state = self.state();
        let entry = state.live_entry(id, now)?;
        let user = entry.connection.user_id.clone();
        let mut untracked = Vec::new();
        for topic in topics {
            entry.topics.remove(topic);
            if let Some(exact) = topic.as_topic()
                && entry.presence.remove(&exact)
            {
                untracked.push(exact);
            }
        }
        for topic in topics {
            state.unsubscribe_one(topic, id);
        }
        Ok(untracked
            .into_iter()
            .filter(|topic| state.leave(topic, &user, id, now))
            .collect())
    }

    async fn presence(&self, topic: &Topic, page: usize) -> Result<PresencePage, StoreError> {
        let now = self.clock.now_seconds();
        let state = self.state();
        let mut answer = PresencePage {
            complete: true,
            ..PresencePage::default()
        };
        for (user, ids) in state.presence.get(topic).into_iter().flatten() {
            let live = ids
                .iter()
                .filter(|id| state.connections.get(*id).is_some_and(|e| e.live(now)))
                .count() as u64;
            if live == 0 {
                continue;
            }
            answer.total_users += 1;
            answer.total_connections += live;
            if answer.users.len() < page {
                answer.users.push((user.clone(), live));
            }
        }
        Ok(answer)
    }
}

#[async_trait]
impl RecipientStore for MemoryStore {
    fn pages<'a>(&'a self, audience: &'a Audience, span: Span) -> SpanPages<'a> {
        // Read page by page, each under the lock once: a connection that subscribes while
        // the fan-out runs is reached if its id is still ahead of the reader, as in DynamoDB.
        Box::pin(stream::unfold(Some(span), move |span| async move {
            let page = self.page(audience, &span?);
            let rest = page.rest.clone();
            Some((Ok(page), rest))
        }))
    }

    async fn count_connections(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_seconds();
        let state = self.state();
        Ok(state.connections.values().filter(|e| e.live(now)).count() as u64)
    }

    async fn remove_gone(
        &self,
        ids: &[ConnectionId],
        via: &Audience,
    ) -> Result<Vec<Removed>, StoreError> {
        let now = self.clock.now_seconds();
        let connecting_since = now as i64 * 1_000 - super::CONNECTING_GRACE_MS;
        let mut state = self.state();
        let mut removed = Vec::new();
        for id in ids {
            let connecting = state
                .connections
                .get(id)
                .is_some_and(|e| e.connection.connected_at > connecting_since);
            if !connecting {
                removed.extend(state.remove(id, now));
            }
            if let Audience::Subscribers(keys) = via {
                for key in keys {
                    state.unsubscribe_one(key, id);
                }
            }
        }
        Ok(removed)
    }
}
