//! Where connections and subscriptions live: two narrow traits, a DynamoDB implementation for
//! Lambda and an in-memory one for the local gateway and tests. Both pass the same
//! conformance suite (`tests/tests/store_conformance.rs`).

pub mod dynamodb;
pub mod history;
pub mod jobs;
pub mod memory;
mod span;

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::channels::{Grants, TopicPattern};
use crate::limits::{ConnectionLimit, RateLimit};
use crate::protocol::{ConnectionId, Topic, UserId};

pub use dynamodb::DynamoDbStore;
pub use history::HistoryStore;
pub use jobs::JobStore;
pub use memory::MemoryStore;
pub use span::{Page, Span};

/// How long after `connectedAt` a 410 does not mean gone: `$connect` registers the
/// connection, but API Gateway answers posts to it with 410 until `$connect` returns, which
/// the connect function's timeout (10 s) bounds. A broadcast in that window must not remove
/// the rows of a connection about to be live (a soak found it, about once per 9 000
/// sessions); a connection that really died then is removed by its `$disconnect` or TTL.
pub const CONNECTING_GRACE_MS: i64 = 10_000;

/// A live WebSocket connection, as `$connect` registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: ConnectionId,
    pub user_id: UserId,
    /// API Gateway's `connectedAt`: milliseconds since the Unix epoch.
    pub connected_at: i64,
    /// The management API this connection is reached through, e.g.
    /// `https://abc123.execute-api.eu-west-1.amazonaws.com/prod`.
    pub endpoint: String,
    /// Seconds since the Unix epoch after which the rows are dead: reads skip them and
    /// DynamoDB TTL deletes them (late, which is why reads check too).
    pub expires_at: u64,
    /// What the connection's token granted, for the channel configuration's `claim` rules.
    pub grants: Grants,
}

impl Connection {
    /// Where fan-out reaches this connection.
    pub fn recipient(&self) -> Recipient {
        Recipient {
            connection_id: self.id.clone(),
            user_id: self.user_id.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

/// What registering a connection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered. Under `LimitPolicy::CloseOldest`, the user's oldest connections made room:
    /// they no longer count, and the caller closes them and removes their rows.
    Registered { evicted: Vec<ConnectionId> },
    /// Not registered: the user already holds `live` connections, the limit
    /// (`LimitPolicy::Refuse`).
    AtLimit { live: usize },
}

/// Whether a frame fits the connection's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; the connection as stored, with what it holds.
    Admitted(Session),
    /// Over the budget: a frame would be admitted after `retry_after`.
    Limited { retry_after: Duration },
}

/// A connection and the subscriptions it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub connection: Connection,
    pub subscriptions: Vec<TopicPattern>,
}

impl Session {
    /// Whether the connection receives messages to `topic`: it holds the topic, or a
    /// wildcard that matches it.
    pub fn receives(&self, topic: &Topic) -> bool {
        self.subscriptions.iter().any(|s| s.matches(topic.as_str()))
    }
}

/// A connection removed from the store, with the subscriptions it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub connection: Connection,
    pub topics: Vec<TopicPattern>,
    /// Presence topics its user no longer is in: it was their last connection there.
    pub left: Vec<Topic>,
}

/// Who is subscribed to a presence topic: users with their live connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresencePage {
    /// At most the page asked for, by user id.
    pub users: Vec<(UserId, u64)>,
    pub total_users: u64,
    pub total_connections: u64,
    /// False when the topic has more users than were read: the totals are lower bounds.
    pub complete: bool,
}

/// Whose connections to read for a fan-out: what a broadcast's target resolves to once the
/// channel configuration has said which subscription keys a topic is reached through
/// (`Channels::audience`). Kept with a broadcast that runs in parts, so every part reads
/// the same audience whatever the configuration does meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Connections subscribed to any of these keys: topics, and the wildcard patterns that
    /// match them (`list:*` for `list:7`). A connection holding several is read once.
    Subscribers(Vec<TopicPattern>),
    User(UserId),
    /// These connections; ids that are not live are left out.
    Connections(Vec<ConnectionId>),
    All,
}

impl Audience {
    /// The subscribers of exactly this topic (no pattern).
    pub fn topic(topic: &Topic) -> Self {
        Audience::Subscribers(vec![TopicPattern::exact(topic)])
    }
}

/// Who a message goes to: what fan-out needs of a connection, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Recipient {
    pub connection_id: ConnectionId,
    pub user_id: UserId,
    pub endpoint: String,
}

/// A store failure. Client mistakes are not errors here, except the two a store alone can
/// judge: the connection is gone, or it would exceed its topic limit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connection {0} is not registered (or has expired)")]
    NotConnected(ConnectionId),
    #[error(
        "the connection holds {current} topics; adding {adding} would exceed the limit of {limit}"
    )]
    TooManyTopics {
        current: usize,
        adding: usize,
        limit: usize,
    },
    #[error("{operation} lost {attempts} races against concurrent updates of one item")]
    Contended {
        operation: &'static str,
        attempts: u32,
    },
    #[error("DynamoDB {operation} failed ({failure}): {message}")]
    Backend {
        operation: &'static str,
        failure: Failure,
        /// The whole error chain, as one line for logs.
        message: String,
        /// The SDK's error, kept so a caller can inspect what DynamoDB said.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("item {key} is malformed: {reason}")]
    MalformedItem { key: String, reason: String },
    /// A broadcast with this id is already recorded.
    #[error("broadcast {0} is already recorded")]
    Exists(String),
    /// Another runner took over this part of a broadcast (this one's lease ran out).
    #[error("part {part} of broadcast {id} is no longer held by this runner")]
    LeaseLost { id: String, part: u32 },
}

/// What kind of backend failure it was: whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Over the table's or the account's capacity (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, unprocessed batch items): retry with backoff.
    Throttled,
    /// DynamoDB or the network failed (5xx, timeouts, dropped connections): retry.
    Unavailable,
    /// DynamoDB refused the request as it was (validation, permissions, a missing table): a
    /// bug or a misconfiguration; retrying the same request fails the same way.
    Rejected,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Throttled => "throttled",
            Failure::Unavailable => "unavailable",
            Failure::Rejected => "rejected",
        })
    }
}

impl StoreError {
    /// A backend failure with no SDK error behind it (e.g. items still unprocessed).
    pub fn backend(operation: &'static str, failure: Failure, message: impl Into<String>) -> Self {
        StoreError::Backend {
            operation,
            failure,
            message: message.into(),
            source: None,
        }
    }

    /// Whether the same request may succeed later: throttling, an unavailable backend, or a
    /// race lost too many times.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend { failure, .. } => *failure != Failure::Rejected,
            StoreError::Contended { .. } => true,
            _ => false,
        }
    }
}

/// One page of recipients at a time, so fan-out can send while the next page loads.
pub type RecipientPages<'a> = BoxStream<'a, Result<Vec<Recipient>, StoreError>>;

/// An audience's pages in connection-id order, each with where the rest of its span starts.
pub type SpanPages<'a> = BoxStream<'a, Result<Page, StoreError>>;

/// What the WebSocket routes and the server API need: register, admit frames, look up,
/// subscribe, forget.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Registers a connection unless its user already holds `limit.per_user` live
    /// connections; under `LimitPolicy::CloseOldest` the oldest make room instead. Exact under
    /// concurrency: simultaneous registrations of one user never admit more than the limit.
    /// Expired connections never count, whether or not their `$disconnect` arrived.
    async fn register(
        &self,
        connection: &Connection,
        limit: &ConnectionLimit,
    ) -> Result<Registration, StoreError>;

    /// Takes one frame from the connection's budget (`None`: no budget) and returns the
    /// connection. `now_us`: the budget's clock, microseconds since the Unix epoch (expiry
    /// goes by the wall clock). Fails with `NotConnected`.
    /// A refused frame costs one store operation and changes nothing.
    async fn admit(
        &self,
        id: &ConnectionId,
        limit: Option<&RateLimit>,
        now_us: i64,
    ) -> Result<Admission, StoreError>;

    /// The connection, unless it is unknown or expired.
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError>;

    /// The user's live connections, read consistently (a connection registered a moment ago
    /// is there).
    async fn user_connections(&self, user: &UserId) -> Result<Vec<Connection>, StoreError>;

    /// Removes the connection, every subscription it holds, and its place in its user's
    /// count; returns what was removed. Removing an unknown connection succeeds with `None`:
    /// `$disconnect` may run twice, or after TTL removed the rows. A subscribe racing the
    /// removal either lands before it (and is removed with it) or fails with `NotConnected`.
    async fn remove_connection(&self, id: &ConnectionId) -> Result<Option<Removed>, StoreError>;

    /// Adds subscriptions (topics or wildcard patterns); those already held are kept once.
    /// Topics in `presence` (a subset of `topics`) also record the connection under its user
    /// in the topic's presence. Returns the presence topics the user was not in before: this
    /// is their first connection there (exact under concurrency: of two devices subscribing
    /// at once, one is first). Fails with `NotConnected` or `TooManyTopics`, and then adds
    /// nothing.
    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
        presence: &[Topic],
        max_topics: usize,
    ) -> Result<Vec<Topic>, StoreError>;

    /// Removes subscriptions; those not held are ignored. Returns the presence topics the
    /// user is no longer in (this was their last connection there). Fails with
    /// `NotConnected`.
    async fn unsubscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
    ) -> Result<Vec<Topic>, StoreError>;

    /// Who is in a presence topic: its first `page` users (by user id) with their live
    /// connection counts, and totals.
    async fn presence(&self, topic: &Topic, page: usize) -> Result<PresencePage, StoreError>;
}

/// What broadcast needs: whom to send to, how many are connected, and forgetting the gone.
#[async_trait]
pub trait RecipientStore: Send + Sync {
    /// The live connections of an audience in `span`, page by page in id order, each
    /// connection once (however many of the audience's subscription keys it holds). Each
    /// page says where the rest of the span starts, so a reader stopped after any page can be
    /// resumed by another; the stream ends with the page that ends the span.
    fn pages<'a>(&'a self, audience: &'a Audience, span: Span) -> SpanPages<'a>;

    /// The whole audience, page by page.
    fn recipients<'a>(&'a self, audience: &'a Audience) -> RecipientPages<'a> {
        Box::pin(
            self.pages(audience, Span::all())
                .map(|page| page.map(|page| page.recipients)),
        )
    }

    /// Live connections, all users.
    async fn count_connections(&self) -> Result<u64, StoreError>;

    /// Removes connections that answered 410, as `remove_connection` does for one. When
    /// they were reached through subscriptions, those subscription rows go too, even if the
    /// connection row is already gone (so a stray subscription cannot outlive it).
    /// A connection registered less than [`CONNECTING_GRACE_MS`] ago is spared: posts to it
    /// answer 410 until its `$connect` returns, and it is about to be live.
    async fn remove_gone(
        &self,
        ids: &[ConnectionId],
        via: &Audience,
    ) -> Result<Vec<Removed>, StoreError>;
}

/// Every part, for code that runs every route in one process (the local gateway, tests)
/// and for the handlers' context.
pub trait Store: ConnectionStore + RecipientStore + HistoryStore + JobStore {}

impl<T: ConnectionStore + RecipientStore + HistoryStore + JobStore> Store for T {}
