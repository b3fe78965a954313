//! Fixtures the unit tests of fan-out and the route handlers share: connections as `$connect`
//! stores them, WebSocket events as API Gateway sends them, a sender that records every post,
//! and a store that always fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use futures::TryStreamExt;
use serde_json::Value;
use tokio::sync::watch;

use crate::auth::now_seconds;
use crate::channels::{Channels, Grants, TopicPattern};
use crate::config::SessionConfig;
use crate::fanout::Fanout;
use crate::handlers::Context;
use crate::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::sender::{ConnectionSender, Payload, SendError};
use crate::store::{
    Admission, Audience, Connection, ConnectionStore, MemoryStore, PresencePage, Recipient,
    RecipientStore, Registration, Removed, Span, SpanPages, Store, StoreError,
};

/// The API Gateway domain and stage of every fixture connection and event.
pub const DOMAIN: &str = "abc123.execute-api.eu-west-1.amazonaws.com";
pub const STAGE: &str = "prod";
/// `https://{DOMAIN}/{STAGE}`, as `$connect` derives it.
pub const ENDPOINT: &str = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
/// API Gateway's `connectedAt` of every fixture event, in milliseconds.
pub const CONNECTED_AT: i64 = 1_700_000_000_000;

/// A live connection of `user`, an hour away from expiry.
pub fn connection(id: &str, user: &str) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        user_id: UserId::new(user),
        connected_at: CONNECTED_AT,
        endpoint: ENDPOINT.to_owned(),
        expires_at: now_seconds() + 3_600,
        grants: Grants::default(),
    }
}

/// A limit fixtures never reach: they register many connections of one user.
pub const ROOMY: ConnectionLimit = ConnectionLimit {
    per_user: 1_000,
    policy: LimitPolicy::Refuse,
};

/// Registers `connection` within [`ROOMY`]; panics unless it is registered.
pub async fn put(store: &dyn ConnectionStore, connection: &Connection) {
    match store.register(connection, &ROOMY).await {
        Ok(Registration::Registered { .. }) => {}
        other => panic!("{} not registered: {other:?}", connection.id),
    }
}

pub fn topic(name: &str) -> Topic {
    Topic::parse(name).expect("fixture topic names are valid")
}

/// A subscription to exactly `name` (or, with a trailing `*`, a wildcard).
pub fn pattern(name: &str) -> TopicPattern {
    TopicPattern::parse(name).expect("fixture patterns are valid")
}

pub fn ids(names: &[&str]) -> Vec<ConnectionId> {
    names.iter().map(|name| ConnectionId::new(*name)).collect()
}

/// A memory store holding `connections`, each `(connection id, user id)`.
pub async fn store_with(connections: &[(&str, &str)]) -> MemoryStore {
    let store = MemoryStore::new();
    register(&store, connections).await;
    store
}

pub async fn register(store: &MemoryStore, connections: &[(&str, &str)]) {
    for (id, user) in connections {
        put(store, &connection(id, user)).await;
    }
}

/// Subscribes every connection in `ids` to `topic_name`.
pub async fn subscribe_all(store: &MemoryStore, ids: &[&str], topic_name: &str) {
    for id in ids {
        store
            .subscribe(&ConnectionId::new(*id), &[pattern(topic_name)], &[], 10)
            .await
            .expect("fixture connections are registered");
    }
}

/// The connections the store lists for `topic_name`, sorted.
pub async fn subscribers(store: &MemoryStore, topic_name: &str) -> Vec<ConnectionId> {
    let audience = Audience::topic(&topic(topic_name));
    let pages: Vec<Vec<Recipient>> = store
        .recipients(&audience)
        .try_collect()
        .await
        .expect("the memory store lists recipients");
    let mut ids: Vec<ConnectionId> = pages
        .into_iter()
        .flatten()
        .map(|recipient| recipient.connection_id)
        .collect();
    ids.sort();
    ids
}

/// A WebSocket event of `connection_id` as API Gateway sends it to a route's Lambda.
pub fn ws_request(connection_id: &str, body: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
    // Both types are `#[non_exhaustive]`: only `Default` plus field assignment builds them.
    let mut request = ApiGatewayWebsocketProxyRequest::default();
    request.request_context.connection_id = Some(connection_id.to_owned());
    request.request_context.domain_name = Some(DOMAIN.to_owned());
    request.request_context.stage = Some(STAGE.to_owned());
    request.request_context.connected_at = CONNECTED_AT;
    request.body = body.map(str::to_owned);
    request
}

/// The JSON frame a WebSocket route answered with.
pub fn frame_of(response: &ApiGatewayProxyResponse) -> Value {
    match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).expect("frames are JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// One successful post.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Post {
    pub connection_id: ConnectionId,
    pub payload: Vec<u8>,
}

/// A `ConnectionSender` that records what it posts and closes, answers chosen connections
/// with an error, can take its time or hold every post until told, and remembers how many
/// posts were ever in flight at once. Clones share what they record: a handler's context
/// holds one, the test reads another.
#[derive(Default, Clone)]
pub struct RecordingSender {
    failures: HashMap<ConnectionId, SendError>,
    delay: Option<Duration>,
    gate: Option<Arc<watch::Sender<bool>>>,
    posts: Arc<Mutex<Vec<Post>>>,
    closed: Arc<Mutex<Vec<Recipient>>>,
    attempts: Arc<AtomicUsize>,
    close_attempts: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl RecordingSender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Posts to `id` fail with `error` (and are not recorded as posts).
    pub fn failing(mut self, id: &str, error: SendError) -> Self {
        self.failures.insert(ConnectionId::new(id), error);
        self
    }

    /// Every post takes `delay`, so that posts overlap.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Every post waits until `open_gate`: a test then sees how many are in flight at once
    /// without depending on how fast the machine is.
    pub fn gated(mut self) -> Self {
        self.gate = Some(Arc::new(watch::Sender::new(false)));
        self
    }

    /// Lets every held post, and every later one, through.
    pub fn open_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.send_replace(true);
        }
    }

    /// Posts started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Successful posts, sorted by connection id.
    pub fn posts(&self) -> Vec<Post> {
        let mut posts = self.posts.lock().unwrap().clone();
        posts.sort();
        posts
    }

    /// Connections that got a successful post, sorted.
    pub fn delivered_to(&self) -> Vec<ConnectionId> {
        self.posts().into_iter().map(|p| p.connection_id).collect()
    }

    /// Every call to `send`, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// The management API's methods called, failed calls included: `POST` (PostToConnection)
    /// and `DELETE` (DeleteConnection), as IAM names them on `@connections`.
    pub fn management_methods(&self) -> std::collections::BTreeSet<&'static str> {
        let mut methods = std::collections::BTreeSet::new();
        if self.attempts() > 0 {
            methods.insert("POST");
        }
        if self.close_attempts.load(Ordering::SeqCst) > 0 {
            methods.insert("DELETE");
        }
        methods
    }

    /// Connections closed, in order, with the endpoint each close went to.
    pub fn closed(&self) -> Vec<Recipient> {
        self.closed.lock().unwrap().clone()
    }
}

#[async_trait]
impl ConnectionSender for RecordingSender {
    async fn send(&self, recipient: &Recipient, payload: &Payload) -> Result<(), SendError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(gate) = &self.gate {
            // Err only if the sender is gone, which it cannot be while `self` lives.
            let _ = gate.subscribe().wait_for(|open| *open).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(error) = self.failures.get(&recipient.connection_id) {
            return Err(error.clone());
        }
        self.posts.lock().unwrap().push(Post {
            connection_id: recipient.connection_id.clone(),
            payload: payload.bytes().to_vec(),
        });
        Ok(())
    }

    async fn close(&self, recipient: &Recipient) -> Result<(), SendError> {
        self.close_attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = self.failures.get(&recipient.connection_id) {
            return Err(error.clone());
        }
        self.closed.lock().unwrap().push(recipient.clone());
        Ok(())
    }
}

/// The error a `FailingStore` answers every call with.
pub fn backend_error(operation: &'static str) -> StoreError {
    StoreError::backend(
        operation,
        crate::store::Failure::Unavailable,
        "service unavailable",
    )
}

/// A `ConnectionStore` whose backend is down.
pub struct FailingStore;

#[async_trait]
impl ConnectionStore for FailingStore {
    async fn register(
        &self,
        _: &Connection,
        _: &ConnectionLimit,
    ) -> Result<Registration, StoreError> {
        Err(backend_error("TransactWriteItems"))
    }

    async fn admit(
        &self,
        _: &ConnectionId,
        _: Option<&RateLimit>,
        _: i64,
    ) -> Result<Admission, StoreError> {
        Err(backend_error("UpdateItem"))
    }

    async fn get_connection(&self, _: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        Err(backend_error("GetItem"))
    }

    async fn user_connections(&self, _: &UserId) -> Result<Vec<Connection>, StoreError> {
        Err(backend_error("GetItem"))
    }

    async fn remove_connection(&self, _: &ConnectionId) -> Result<Option<Removed>, StoreError> {
        Err(backend_error("DeleteItem"))
    }

    async fn subscribe(
        &self,
        _: &ConnectionId,
        _: &[TopicPattern],
        _: &[Topic],
        _: usize,
    ) -> Result<Vec<Topic>, StoreError> {
        Err(backend_error("TransactWriteItems"))
    }

    async fn unsubscribe(
        &self,
        _: &ConnectionId,
        _: &[TopicPattern],
    ) -> Result<Vec<Topic>, StoreError> {
        Err(backend_error("TransactWriteItems"))
    }

    async fn presence(&self, _: &Topic, _: usize) -> Result<PresencePage, StoreError> {
        Err(backend_error("Query"))
    }
}

#[async_trait]
impl RecipientStore for FailingStore {
    fn pages<'a>(&'a self, _: &'a Audience, _: Span) -> SpanPages<'a> {
        Box::pin(futures::stream::once(async { Err(backend_error("Query")) }))
    }

    async fn count_connections(&self) -> Result<u64, StoreError> {
        Err(backend_error("Query"))
    }

    async fn remove_gone(
        &self,
        _: &[ConnectionId],
        _: &Audience,
    ) -> Result<Vec<Removed>, StoreError> {
        Err(backend_error("DeleteItem"))
    }
}

#[async_trait]
impl crate::store::HistoryStore for FailingStore {
    async fn append(
        &self,
        _: &Topic,
        _: &crate::channels::History,
        _: &(dyn for<'p> Fn(&'p crate::store::history::Position) -> String + Send + Sync),
    ) -> Result<(crate::store::history::Position, String), StoreError> {
        Err(backend_error("TransactWriteItems"))
    }

    async fn read(
        &self,
        _: &Topic,
        _: Option<u64>,
        _: crate::store::history::ReadLimits,
    ) -> Result<crate::store::history::HistoryPage, StoreError> {
        Err(backend_error("Query"))
    }

    async fn claim(&self, _: &str, _: u64) -> Result<crate::store::history::Claim, StoreError> {
        Err(backend_error("PutItem"))
    }

    async fn finish(&self, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
        Err(backend_error("PutItem"))
    }

    async fn release(&self, _: &str) -> Result<(), StoreError> {
        Err(backend_error("DeleteItem"))
    }
}

#[async_trait]
impl crate::store::JobStore for FailingStore {
    async fn create_job(&self, _: &crate::store::jobs::Job) -> Result<(), StoreError> {
        Err(backend_error("TransactWriteItems"))
    }

    async fn job(&self, _: &str) -> Result<Option<crate::store::jobs::Job>, StoreError> {
        Err(backend_error("Query"))
    }

    async fn claim_part(
        &self,
        _: &str,
        _: u32,
        _: &str,
        _: i64,
        _: i64,
    ) -> Result<crate::store::jobs::Claim, StoreError> {
        Err(backend_error("GetItem"))
    }

    async fn save_part(
        &self,
        _: &str,
        _: u32,
        _: &str,
        _: &crate::store::jobs::Progress,
        _: bool,
        _: i64,
    ) -> Result<(), StoreError> {
        Err(backend_error("UpdateItem"))
    }
}

/// A `ShardLauncher` that records the parts it is asked to start (and can refuse them):
/// a test runs them itself, when it wants, as Lambda would.
#[derive(Default, Clone)]
pub struct RecordingLauncher {
    launched: Arc<Mutex<Vec<crate::shards::Shard>>>,
    refuse: bool,
}

impl RecordingLauncher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every launch fails, as an Invoke the account refuses.
    pub fn refusing() -> Self {
        Self {
            refuse: true,
            ..Self::default()
        }
    }

    /// The parts started so far, in order.
    pub fn launched(&self) -> Vec<crate::shards::Shard> {
        self.launched.lock().unwrap().clone()
    }

    /// Takes the parts started and not yet taken.
    pub fn take(&self) -> Vec<crate::shards::Shard> {
        std::mem::take(&mut *self.launched.lock().unwrap())
    }
}

#[async_trait]
impl crate::shards::ShardLauncher for RecordingLauncher {
    async fn launch(&self, shard: &crate::shards::Shard) -> Result<(), crate::shards::LaunchError> {
        if self.refuse {
            return Err(crate::shards::LaunchError {
                broadcast_id: shard.broadcast_id.clone(),
                part: shard.part,
                reason: "refused".into(),
            });
        }
        self.launched.lock().unwrap().push(shard.clone());
        Ok(())
    }
}

/// The settings handlers run with in unit tests: the defaults unless a test changes them.
#[derive(Default)]
pub struct Settings {
    pub session: SessionConfig,
    pub channels: Channels,
    pub fanout: Fanout,
}

impl Settings {
    /// A handler context on `store` and (a clone of) `sender`, with no deadline.
    pub fn context<'a, S: ConnectionSender + Clone + 'static>(
        &'a self,
        store: &'a dyn Store,
        sender: &S,
    ) -> Context<'a> {
        Context {
            store,
            sender: Arc::new(sender.clone()),
            session: &self.session,
            channels: &self.channels,
            fanout: &self.fanout,
            deadline: None,
        }
    }
}
