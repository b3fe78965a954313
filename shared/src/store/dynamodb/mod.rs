//! The DynamoDB store. Item <-> domain conversion lives in `items` and nowhere else.
//! Design: see `schema`, `items` (and the README's "Table design").

mod admission;
mod history;
mod items;
mod jobs;
pub mod metering;
mod presence;
mod recipients;
mod registry;
pub mod schema;
mod subscriptions;
mod throttling;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    DeleteRequest, KeysAndAttributes, ReturnConsumedCapacity, Select, WriteRequest,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;

use super::{
    Admission, Audience, Connection, ConnectionStore, Failure, PresencePage, RecipientStore,
    Registration, Removed, Span, SpanPages, StoreError,
};
use crate::channels::TopicPattern;
use crate::clock::Clock;
use crate::limits::{ConnectionLimit, RateLimit};
use crate::protocol::{ConnectionId, Topic, UserId};
use items::{Item, connection_key, live, n, s, subscription_key};
pub use metering::{CapacityMeter, ConsumedCapacity, OperationCounts};
use schema::{BY_SHARD_INDEX, GSI_SHARD, SHARDS, TTL_ATTRIBUTE};

/// BatchGetItem's and BatchWriteItem's per-call limits.
const BATCH_GET_LIMIT: usize = 100;
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of retrying unprocessed batch items (throttling) before giving up.
const UNPROCESSED_ATTEMPTS: u32 = 8;
/// How long one attempt of a DynamoDB call may take before the SDK gives up on it and
/// retries. The SDK sets none by default: a request DynamoDB accepts and never answers would
/// hold the function until Lambda ends it, retried never. DynamoDB answers in milliseconds
/// (a 1 MB Query page in a few hundred), so one second is far past a healthy answer, and
/// three attempts with their backoff (at most 1 s, then 2 s) stay within the WebSocket
/// functions' 10 s.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// What fan-out reads of a row.
const RECIPIENT_PROJECTION: &str = "connection_id, user_id, endpoint";

/// A failed DynamoDB call, classified by what trying again can do, with the SDK's error kept.
pub(crate) fn backend<E, R>(operation: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Backend {
        operation,
        failure: classify(&error),
        message: DisplayErrorContext(&error).to_string(),
        source: Some(Box::new(error)),
    }
}

/// DynamoDB's throttling codes (and transactions cancelled for throttling); 5xx, timeouts
/// and dropped connections are `Unavailable`; everything else (validation, access, a missing
/// table) is `Rejected`.
fn classify<E: ProvideErrorMetadata + 'static, R>(error: &SdkError<E, R>) -> Failure {
    match error {
        SdkError::ServiceError(service) if throttling::is_throttled_transaction(service.err()) => {
            Failure::Throttled
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => Failure::Throttled,
            Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => {
                Failure::Unavailable
            }
            _ => Failure::Rejected,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Unavailable
        }
        _ => Failure::Rejected,
    }
}

fn was_cancelled_by_condition<R>(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> bool {
    error
        .as_service_error()
        .and_then(|e| match e {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
            _ => None,
        })
        .is_some_and(|cancelled| {
            cancelled
                .cancellation_reasons()
                .iter()
                .any(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict")))
        })
}

/// A short jittered pause before re-reading an item another writer changed under us: 0–10 ms,
/// doubling to 0–160 ms, so racing writers (simultaneous `$connect`s of one user, frames of
/// one connection) spread out without eating a handshake's or a frame's time.
async fn contention_pause(attempt: u32) {
    let ceiling = 10u64 << attempt.min(4);
    let wait = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Backoff before retrying unprocessed batch items: 25 ms doubling, with full jitter so that
/// concurrent broadcasts do not retry in lockstep.
async fn backoff(attempt: u32) {
    let ceiling = 25u64 << attempt.min(6);
    let wait = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// The DynamoDB implementation of both store traits, on one table (see `schema`).
#[derive(Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
    consumed: Option<Arc<ConsumedCapacity>>,
    /// What reads judge expiry by (every read filters `expires_at > now`).
    clock: Clock,
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_classifier(throttling::ThrottledTransactions)
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.into(),
            page_size: None,
            consumed: None,
            clock: Clock::wall(),
        }
    }

    /// Judges expiry by `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A store on `table` with a DynamoDB client from the shared SDK configuration; without
    /// an attempt timeout there, each attempt gets [`ATTEMPT_TIMEOUT`].
    pub fn from_sdk_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        let mut client = aws_sdk_dynamodb::config::Builder::from(config);
        let attempt_timeout = config
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout());
        if attempt_timeout.is_none() {
            // Merged with the configuration's other timeouts (the connect timeout stays).
            client = client.timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        }
        Self::new(Client::from_conf(client.build()), table)
    }

    /// Caps items per Query page (DynamoDB's own cap is 1 MB); small pages let tests
    /// exercise pagination without megabytes of data.
    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = Some(page_size.max(1));
        self
    }

    /// Adds the read capacity every Query and BatchGetItem consumes to `consumed`.
    pub fn with_consumed_capacity(mut self, consumed: Arc<ConsumedCapacity>) -> Self {
        self.consumed = Some(consumed);
        self
    }

    /// Adds the capacity every DynamoDB call of this store consumes, reads and writes, by
    /// operation, to `meter`.
    pub fn with_capacity_meter(mut self, meter: Arc<CapacityMeter>) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .interceptor(metering::Meter(meter))
            .build();
        self.client = Client::from_conf(config);
        self
    }

    /// Counts every DynamoDB operation this store calls, by name, into `counts`.
    pub fn with_operation_counts(mut self, counts: Arc<OperationCounts>) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .interceptor(metering::Counter(counts))
            .build();
        self.client = Client::from_conf(config);
        self
    }

    /// `Total` when consumed capacity is counted, else nothing (DynamoDB's default: none).
    fn return_consumed_capacity(&self) -> Option<ReturnConsumedCapacity> {
        self.consumed
            .as_ref()
            .map(|_| ReturnConsumedCapacity::Total)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The connection row, read strongly consistent, if it exists and has not expired.
    async fn connection_row(&self, id: &ConnectionId) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        Ok(output
            .item
            .filter(|item| live(item, self.clock.now_seconds())))
    }

    /// Connection rows by id, expired ones included, in batches of 100, unprocessed keys
    /// retried.
    async fn connection_rows(
        &self,
        ids: &[ConnectionId],
        projection: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let keys: Vec<Item> = ids.iter().map(connection_key).collect();
        self.rows(&keys, Some(projection)).await
    }

    /// Items by key (strongly consistent; missing ones are left out), in batches of 100,
    /// unprocessed keys retried.
    async fn rows(&self, keys: &[Item], projection: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let mut rows = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            let mut keys = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(true)
                .build()
                .map_err(|e| {
                    StoreError::backend("BatchGetItem", Failure::Rejected, e.to_string())
                })?;
            for attempt in 0.. {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .set_return_consumed_capacity(self.return_consumed_capacity())
                    .send()
                    .await
                    .map_err(|e| backend("BatchGetItem", e))?;
                if let Some(consumed) = &self.consumed {
                    output
                        .consumed_capacity()
                        .iter()
                        .for_each(|c| consumed.add(Some(c)));
                }
                if let Some(mut found) = output.responses {
                    rows.extend(found.remove(&self.table).unwrap_or_default());
                }
                match output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                {
                    Some(rest) if !rest.keys().is_empty() => {
                        if attempt + 1 >= UNPROCESSED_ATTEMPTS {
                            return Err(StoreError::backend(
                                "BatchGetItem",
                                Failure::Throttled,
                                format!(
                                    "{} keys still unprocessed after {UNPROCESSED_ATTEMPTS} attempts",
                                    rest.keys().len()
                                ),
                            ));
                        }
                        backoff(attempt).await;
                        keys = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(rows)
    }

    /// Deletes items by key, 25 per call, unprocessed items retried.
    async fn delete_keys(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(BATCH_WRITE_LIMIT) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map_err(|e| {
                            StoreError::backend("BatchWriteItem", Failure::Rejected, e.to_string())
                        })?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<_, StoreError>>()?;
            for attempt in 0.. {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| backend("BatchWriteItem", e))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt + 1 >= UNPROCESSED_ATTEMPTS {
                    return Err(StoreError::backend(
                        "BatchWriteItem",
                        Failure::Throttled,
                        format!(
                            "{} deletes still unprocessed after {UNPROCESSED_ATTEMPTS} attempts",
                            requests.len()
                        ),
                    ));
                }
                backoff(attempt).await;
            }
        }
        Ok(())
    }
}

// Each operation lives in the module about its rows: `registry` (connection and user rows,
// removal), `admission` (the frame budget), `subscriptions` (subscription rows).
#[async_trait]
impl ConnectionStore for DynamoDbStore {
    async fn register(
        &self,
        connection: &Connection,
        limit: &ConnectionLimit,
    ) -> Result<Registration, StoreError> {
        self.register_connection(connection, limit).await
    }

    async fn admit(
        &self,
        id: &ConnectionId,
        limit: Option<&RateLimit>,
        now_us: i64,
    ) -> Result<Admission, StoreError> {
        self.admit_frame(id, limit, now_us).await
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        self.connection_row(id)
            .await?
            .map(|row| items::connection_of(&row))
            .transpose()
    }

    async fn user_connections(&self, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        self.connections_of_user(user).await
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<Option<Removed>, StoreError> {
        self.remove_one(id, None).await
    }

    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
        presence: &[Topic],
        max_topics: usize,
    ) -> Result<Vec<Topic>, StoreError> {
        self.add_subscriptions(id, topics, presence, max_topics)
            .await
    }

    async fn unsubscribe(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
    ) -> Result<Vec<Topic>, StoreError> {
        self.drop_subscriptions(id, topics).await
    }

    async fn presence(&self, topic: &Topic, page: usize) -> Result<PresencePage, StoreError> {
        self.presence_page(topic, page).await
    }
}

/// A transaction that could not even be built: a bug, not DynamoDB's answer.
fn transaction_error(message: String) -> StoreError {
    StoreError::backend("TransactWriteItems", Failure::Rejected, message)
}

/// Connections removed at once after 410s: each is a delete, a batch write and an update.
const REMOVALS_IN_FLIGHT: usize = 8;

/// Shards of the all-connections index read at once.
const SHARDS_IN_FLIGHT: usize = 4;

#[async_trait]
impl RecipientStore for DynamoDbStore {
    fn pages<'a>(&'a self, audience: &'a Audience, span: Span) -> SpanPages<'a> {
        self.span_pages(audience, span)
    }

    async fn count_connections(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_seconds();
        let counts = stream::iter(0..SHARDS)
            .map(|shard| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .index_name(BY_SHARD_INDEX)
                    .select(Select::Count)
                    .key_condition_expression("#k = :k")
                    .filter_expression("#ttl > :now")
                    .expression_attribute_names("#k", GSI_SHARD)
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .expression_attribute_values(":k", s(shard.to_string()))
                    .expression_attribute_values(":now", n(now))
                    .set_limit(self.page_size)
                    .set_return_consumed_capacity(self.return_consumed_capacity())
                    .into_paginator()
                    .send()
                    .try_collect()
            })
            .buffer_unordered(SHARDS_IN_FLIGHT)
            .map(|pages| {
                let pages = pages.map_err(|e| backend("Query", e))?;
                if let Some(consumed) = &self.consumed {
                    pages
                        .iter()
                        .for_each(|p| consumed.add(p.consumed_capacity()));
                }
                Ok::<u64, StoreError>(pages.iter().map(|p| p.count() as u64).sum())
            });
        counts
            .try_fold(0, |total, count| async move { Ok(total + count) })
            .await
    }

    async fn remove_gone(
        &self,
        ids: &[ConnectionId],
        via: &Audience,
    ) -> Result<Vec<Removed>, StoreError> {
        // The subscription rows the 410s came through go directly: if the connection row is
        // already gone (TTL, or an earlier removal), nothing else would find them.
        let direct = match via {
            Audience::Subscribers(topics) => {
                let keys = ids
                    .iter()
                    .flat_map(|id| topics.iter().map(move |t| subscription_key(t.as_str(), id)))
                    .collect();
                self.delete_keys(keys).await
            }
            _ => Ok(()),
        };
        // Every removal runs to its end even when one fails: stopping at the first error
        // would cancel the others between their steps, leaving rows no one would remove.
        let connected_before =
            self.clock.now_seconds() as i64 * 1_000 - crate::store::CONNECTING_GRACE_MS;
        let mut removals = stream::iter(ids.iter().cloned())
            .map(|id| async move { self.remove_one(&id, Some(connected_before)).await })
            .buffer_unordered(REMOVALS_IN_FLIGHT);
        let mut first_error = direct.err();
        let mut removed = Vec::new();
        while let Some(one) = removals.next().await {
            match one {
                Ok(one) => removed.extend(one),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn answered(status: u16, code: &str) -> StoreError {
        let error = GetItemError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        backend("GetItem", SdkError::service_error(error, raw))
    }

    #[test]
    fn failures_are_classified_by_what_retrying_can_do_and_keep_their_source() {
        for (status, code, failure) in [
            (
                400,
                "ProvisionedThroughputExceededException",
                Failure::Throttled,
            ),
            (400, "ThrottlingException", Failure::Throttled),
            (400, "RequestLimitExceeded", Failure::Throttled),
            (500, "InternalServerError", Failure::Unavailable),
            (400, "ValidationException", Failure::Rejected),
            (400, "ResourceNotFoundException", Failure::Rejected),
            (400, "AccessDeniedException", Failure::Rejected),
        ] {
            let error = answered(status, code);
            let StoreError::Backend {
                failure: found,
                source,
                ..
            } = &error
            else {
                panic!("{error:?}");
            };
            assert_eq!(*found, failure, "{code}");
            assert_eq!(error.is_retryable(), failure != Failure::Rejected, "{code}");
            assert!(source.is_some(), "{code}: the SDK error is kept");
            assert!(error.to_string().contains(code), "{error}");
        }
        let timeout: SdkError<GetItemError, HttpResponse> =
            SdkError::timeout_error("no answer within the attempt timeout");
        assert!(matches!(
            backend("GetItem", timeout),
            StoreError::Backend {
                failure: Failure::Unavailable,
                ..
            }
        ));
        assert!(
            StoreError::Contended {
                operation: "register",
                attempts: 3
            }
            .is_retryable()
        );
        assert!(!StoreError::NotConnected(ConnectionId::new("c")).is_retryable());
    }
}
