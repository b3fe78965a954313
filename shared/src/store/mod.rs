//! Where connections and subscriptions live: two narrow traits, a DynamoDB implementation for
//! Lambda and an in-memory one for the local gateway and tests. Both pass the same
//! conformance suite (`tests/tests/store_conformance.rs`).

pub mod dynamodb;
pub mod memory;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::protocol::broadcast::Target;
use crate::protocol::{ConnectionId, Topic, UserId};

pub use dynamodb::DynamoDbStore;
pub use memory::MemoryStore;

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
}

/// Who a message goes to: what fan-out needs of a connection, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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
    #[error("DynamoDB {operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
    },
    #[error("item {key} is malformed: {reason}")]
    MalformedItem { key: String, reason: String },
}

/// One page of recipients at a time, so fan-out can send while the next page loads.
pub type RecipientPages<'a> = BoxStream<'a, Result<Vec<Recipient>, StoreError>>;

/// What the WebSocket routes need: register, look up, subscribe, forget.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put_connection(&self, connection: &Connection) -> Result<(), StoreError>;

    /// The connection, unless it is unknown or expired.
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError>;

    /// Removes the connection and every subscription it holds. Removing an unknown
    /// connection succeeds: `$disconnect` may run twice, or after TTL removed the rows.
    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError>;

    /// Adds topics; topics already held are kept once. Fails with `NotConnected` or
    /// `TooManyTopics`, and then adds none of them.
    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
        max_topics: usize,
    ) -> Result<(), StoreError>;

    /// Removes topics; topics not held are ignored. Fails with `NotConnected`.
    async fn unsubscribe(&self, id: &ConnectionId, topics: &[Topic]) -> Result<(), StoreError>;
}

/// What broadcast needs: whom to send to, how many are connected, and forgetting the gone.
#[async_trait]
pub trait RecipientStore: Send + Sync {
    /// The live connections a target names, page by page; each connection once. For
    /// `Target::Connections`, ids that are not live are left out.
    fn recipients<'a>(&'a self, target: &'a Target) -> RecipientPages<'a>;

    /// Live connections, all users.
    async fn count_connections(&self) -> Result<u64, StoreError>;

    /// Removes connections and their subscriptions, as `remove_connection` does for one.
    async fn remove_connections(&self, ids: &[ConnectionId]) -> Result<(), StoreError>;
}

/// Both halves, for code that runs every route in one process (the local gateway, tests).
pub trait Store: ConnectionStore + RecipientStore {}

impl<T: ConnectionStore + RecipientStore> Store for T {}
