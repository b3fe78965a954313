//! The DynamoDB store. Item <-> domain conversion lives here and nowhere else.
//! Design: see `schema` (and the README's "Table design").

pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, ReturnConsumedCapacity, Select,
    TransactWriteItem, Update, WriteRequest,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;

use super::{Connection, ConnectionStore, Recipient, RecipientPages, RecipientStore, StoreError};
use crate::auth::now_seconds;
use crate::protocol::broadcast::Target;
use crate::protocol::{ConnectionId, Topic, UserId};
use schema::{BY_SHARD_INDEX, BY_USER_INDEX, GSI_SHARD, GSI_USER, PK, SHARDS, SK, TTL_ATTRIBUTE};

type Item = HashMap<String, AttributeValue>;

/// Sort key of a connection row.
const CONNECTION_SK: &str = "conn";
/// BatchGetItem's and BatchWriteItem's per-call limits.
const BATCH_GET_LIMIT: usize = 100;
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of retrying unprocessed batch items (throttling) before giving up.
const UNPROCESSED_ATTEMPTS: u32 = 8;
/// Attempts at a subscribe/unsubscribe transaction that lost a race with another one.
const TRANSACTION_ATTEMPTS: u32 = 3;
/// What fan-out reads of a row.
const RECIPIENT_PROJECTION: &str = "connection_id, user_id, endpoint";

pub(crate) fn backend<E, R>(operation: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    StoreError::Backend {
        operation,
        message: DisplayErrorContext(&error).to_string(),
    }
}

fn connection_pk(id: &ConnectionId) -> String {
    format!("conn#{id}")
}

fn topic_pk(topic: &str) -> String {
    format!("topic#{topic}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn connection_key(id: &ConnectionId) -> Item {
    HashMap::from([
        (PK.into(), s(connection_pk(id))),
        (SK.into(), s(CONNECTION_SK)),
    ])
}

fn subscription_key(topic: &str, id: &ConnectionId) -> Item {
    HashMap::from([
        (PK.into(), s(topic_pk(topic))),
        (SK.into(), s(connection_pk(id))),
    ])
}

fn connection_item(connection: &Connection, shard: u32) -> Item {
    let mut item = connection_key(&connection.id);
    item.extend([
        ("connection_id".into(), s(connection.id.as_str())),
        ("user_id".into(), s(connection.user_id.as_str())),
        ("connected_at".into(), n(connection.connected_at)),
        ("endpoint".into(), s(&connection.endpoint)),
        (TTL_ATTRIBUTE.into(), n(connection.expires_at)),
        (GSI_USER.into(), s(connection.user_id.as_str())),
        (GSI_SHARD.into(), s(shard.to_string())),
    ]);
    item
}

fn subscription_item(topic: &Topic, connection: &Connection) -> Item {
    let mut item = subscription_key(topic.as_str(), &connection.id);
    item.extend([
        ("connection_id".into(), s(connection.id.as_str())),
        ("user_id".into(), s(connection.user_id.as_str())),
        ("endpoint".into(), s(&connection.endpoint)),
        (TTL_ATTRIBUTE.into(), n(connection.expires_at)),
    ]);
    item
}

fn malformed(item: &Item, reason: String) -> StoreError {
    let key = match (item.get(PK), item.get(SK)) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk}/{sk}"),
        _ => "(no key)".into(),
    };
    StoreError::MalformedItem { key, reason }
}

fn string_attr(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(malformed(
            item,
            format!("{name} is missing or not a string"),
        )),
    }
}

fn number_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| malformed(item, format!("{name} = {value} is out of range"))),
        _ => Err(malformed(
            item,
            format!("{name} is missing or not a number"),
        )),
    }
}

fn connection_of(item: &Item) -> Result<Connection, StoreError> {
    Ok(Connection {
        id: ConnectionId::new(string_attr(item, "connection_id")?),
        user_id: UserId::new(string_attr(item, "user_id")?),
        connected_at: number_attr(item, "connected_at")?,
        endpoint: string_attr(item, "endpoint")?,
        expires_at: number_attr(item, TTL_ATTRIBUTE)?,
    })
}

fn topics_of(item: &Item) -> Vec<String> {
    match item.get("topics") {
        Some(AttributeValue::Ss(topics)) => topics.clone(),
        _ => Vec::new(),
    }
}

fn recipient_of(item: &Item) -> Result<Recipient, StoreError> {
    Ok(Recipient {
        connection_id: ConnectionId::new(string_attr(item, "connection_id")?),
        user_id: UserId::new(string_attr(item, "user_id")?),
        endpoint: string_attr(item, "endpoint")?,
    })
}

fn live(item: &Item, now: u64) -> bool {
    number_attr::<u64>(item, TTL_ATTRIBUTE).is_ok_and(|expires| expires > now)
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

/// Backoff before retrying unprocessed batch items: 25 ms doubling, with full jitter so that
/// concurrent broadcasts do not retry in lockstep.
async fn backoff(attempt: u32) {
    let ceiling = 25u64 << attempt.min(6);
    let wait = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Read capacity units consumed by a store's Query and BatchGetItem calls, summed. Opt-in
/// (`DynamoDbStore::with_consumed_capacity`): asking for it makes every response longer, and
/// only benchmarks and cost checks need it.
#[derive(Debug, Default)]
pub struct ConsumedCapacity {
    // Eventually consistent reads come in half units: an f64 sum of them stays exact.
    units: Mutex<f64>,
}

impl ConsumedCapacity {
    /// Read capacity units consumed so far.
    pub fn read_units(&self) -> f64 {
        *self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        if let Some(units) = consumed.and_then(|c| c.capacity_units()) {
            *self.units.lock().unwrap_or_else(|p| p.into_inner()) += units;
        }
    }
}

/// The DynamoDB implementation of both store traits, on one table (see `schema`).
#[derive(Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
    consumed: Option<Arc<ConsumedCapacity>>,
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
            consumed: None,
        }
    }

    /// A store on `table` with a DynamoDB client from the shared SDK configuration.
    pub fn from_sdk_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
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
        Ok(output.item.filter(|item| live(item, now_seconds())))
    }

    /// Pages of a Query, following `LastEvaluatedKey` to the end.
    fn query_pages(
        &self,
        index: Option<&'static str>,
        key_attribute: &'static str,
        key_value: String,
    ) -> RecipientPages<'_> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#k = :k")
            .filter_expression("#ttl > :now")
            .projection_expression(RECIPIENT_PROJECTION)
            .expression_attribute_names("#k", key_attribute)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":k", s(key_value))
            .expression_attribute_values(":now", n(now_seconds()))
            .set_limit(self.page_size)
            .set_return_consumed_capacity(self.return_consumed_capacity())
            .into_paginator()
            .send();
        Box::pin(
            stream::unfold(pages, |mut pages| async move {
                pages.next().await.map(|page| (page, pages))
            })
            .map(move |page| {
                let page = page.map_err(|e| backend("Query", e))?;
                if let Some(consumed) = &self.consumed {
                    consumed.add(page.consumed_capacity());
                }
                page.items().iter().map(recipient_of).collect()
            }),
        )
    }

    /// Connection rows by id, expired ones included, in batches of 100, unprocessed keys
    /// retried.
    async fn connection_rows(
        &self,
        ids: &[ConnectionId],
        projection: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET_LIMIT) {
            let mut keys = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(connection_key).collect()))
                .projection_expression(projection)
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Backend {
                    operation: "BatchGetItem",
                    message: e.to_string(),
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
                            return Err(StoreError::Backend {
                                operation: "BatchGetItem",
                                message: format!(
                                    "{} keys still unprocessed after {UNPROCESSED_ATTEMPTS} attempts",
                                    rest.keys().len()
                                ),
                            });
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
                        .map_err(|e| StoreError::Backend {
                            operation: "BatchWriteItem",
                            message: e.to_string(),
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
                    return Err(StoreError::Backend {
                        operation: "BatchWriteItem",
                        message: format!(
                            "{} deletes still unprocessed after {UNPROCESSED_ATTEMPTS} attempts",
                            requests.len()
                        ),
                    });
                }
                backoff(attempt).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ConnectionStore for DynamoDbStore {
    async fn put_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let shard = rand::rng().random_range(0..SHARDS);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(connection_item(connection, shard)))
            .send()
            .await
            .map_err(|e| backend("PutItem", e))?;
        Ok(())
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        self.connection_row(id)
            .await?
            .map(|row| connection_of(&row))
            .transpose()
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.remove_connections(std::slice::from_ref(id)).await
    }

    async fn subscribe(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
        max_topics: usize,
    ) -> Result<(), StoreError> {
        // Read the held topics, then write in one transaction whose condition re-checks the
        // count: two concurrent subscribes cannot together pass the limit. A lost race is
        // retried from a fresh read.
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(row) = self.connection_row(id).await? else {
                return Err(StoreError::NotConnected(id.clone()));
            };
            let connection = connection_of(&row)?;
            let held = topics_of(&row);
            let adding: Vec<&Topic> = topics
                .iter()
                .filter(|t| !held.iter().any(|h| h == t.as_str()))
                .collect();
            if adding.is_empty() {
                return Ok(());
            }
            if held.len() + adding.len() > max_topics {
                return Err(StoreError::TooManyTopics {
                    current: held.len(),
                    adding: adding.len(),
                    limit: max_topics,
                });
            }
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(connection_key(id)))
                .update_expression("ADD topics :adding")
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(topics) OR size(topics) <= :room)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(
                    ":adding",
                    AttributeValue::Ss(adding.iter().map(|t| t.to_string()).collect()),
                )
                .expression_attribute_values(":room", n(max_topics - adding.len()))
                .build()
                .map_err(|e| transaction_error(e.to_string()))?;
            let mut items = vec![TransactWriteItem::builder().update(update).build()];
            for topic in &adding {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(subscription_item(topic, &connection)))
                    .build()
                    .map_err(|e| transaction_error(e.to_string()))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if was_cancelled_by_condition(&e) => continue,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(transaction_error(format!(
            "subscribe lost {TRANSACTION_ATTEMPTS} races against concurrent updates"
        )))
    }

    async fn unsubscribe(&self, id: &ConnectionId, topics: &[Topic]) -> Result<(), StoreError> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(row) = self.connection_row(id).await? else {
                return Err(StoreError::NotConnected(id.clone()));
            };
            let held = topics_of(&row);
            let removing: Vec<&Topic> = topics
                .iter()
                .filter(|t| held.iter().any(|h| h == t.as_str()))
                .collect();
            if removing.is_empty() {
                return Ok(());
            }
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(connection_key(id)))
                .update_expression("DELETE topics :removing")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(
                    ":removing",
                    AttributeValue::Ss(removing.iter().map(|t| t.to_string()).collect()),
                )
                .build()
                .map_err(|e| transaction_error(e.to_string()))?;
            let mut items = vec![TransactWriteItem::builder().update(update).build()];
            for topic in &removing {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(subscription_key(topic.as_str(), id)))
                    .build()
                    .map_err(|e| transaction_error(e.to_string()))?;
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if was_cancelled_by_condition(&e) => continue,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(transaction_error(format!(
            "unsubscribe lost {TRANSACTION_ATTEMPTS} races against concurrent updates"
        )))
    }
}

fn transaction_error(message: String) -> StoreError {
    StoreError::Backend {
        operation: "TransactWriteItems",
        message,
    }
}

/// Shards of the all-connections index read at once.
const SHARDS_IN_FLIGHT: usize = 4;

#[async_trait]
impl RecipientStore for DynamoDbStore {
    fn recipients<'a>(&'a self, target: &'a Target) -> RecipientPages<'a> {
        match target {
            Target::Topic(topic) => self.query_pages(None, PK, topic_pk(topic.as_str())),
            Target::User(user) => self.query_pages(Some(BY_USER_INDEX), GSI_USER, user.to_string()),
            Target::All => Box::pin(
                stream::iter(0..SHARDS)
                    .map(|shard| {
                        self.query_pages(Some(BY_SHARD_INDEX), GSI_SHARD, shard.to_string())
                    })
                    .flatten_unordered(SHARDS_IN_FLIGHT),
            ),
            Target::Connections(ids) => Box::pin(stream::iter(ids.chunks(BATCH_GET_LIMIT)).then(
                move |chunk| async move {
                    let rows = self
                        .connection_rows(chunk, "connection_id, user_id, endpoint, expires_at")
                        .await?;
                    let now = now_seconds();
                    rows.iter()
                        .filter(|row| live(row, now))
                        .map(recipient_of)
                        .collect()
                },
            )),
        }
    }

    async fn count_connections(&self) -> Result<u64, StoreError> {
        let now = now_seconds();
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

    async fn remove_connections(&self, ids: &[ConnectionId]) -> Result<(), StoreError> {
        // The connection row lists its topics, so one batch read finds every subscription
        // row to delete; no index or scan is needed.
        let rows = self.connection_rows(ids, "connection_id, topics").await?;
        let mut keys: Vec<Item> = ids.iter().map(connection_key).collect();
        for row in &rows {
            let id = ConnectionId::new(string_attr(row, "connection_id")?);
            keys.extend(
                topics_of(row)
                    .iter()
                    .map(|topic| subscription_key(topic, &id)),
            );
        }
        self.delete_keys(keys).await
    }
}
