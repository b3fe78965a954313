//! Subscription rows: a connection joins and leaves topics (and wildcard patterns).
//!
//! Subscribe is one transaction: the connection row's `topics` set grows under a condition
//! that re-checks the limit, the subscription rows are put, and for presence topics the
//! user's presence rows are written conditioned on the version read (see `presence`). Two
//! concurrent subscribes cannot pass the limit together, two devices cannot both be "first",
//! and a subscribe cannot land after the connection row is deleted (the condition needs the
//! row), so removal never leaves a subscription behind.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use super::items::{
    PRESENCE_TOPICS, TOPICS, connection_key, connection_of, n, presence_topics_of,
    subscription_item, subscription_key, topics_of,
};
use super::schema::PK;
use super::{
    DynamoDbStore, backend, contention_pause, transaction_error, was_cancelled_by_condition,
};
use crate::channels::TopicPattern;
use crate::protocol::{ConnectionId, Topic};
use crate::store::StoreError;

/// Attempts at a subscribe/unsubscribe transaction that lost a race with another one (frames
/// of one connection, or devices of one user in one presence topic, handled at once); each
/// lost race pauses briefly, then reads again.
const TRANSACTION_ATTEMPTS: u32 = 6;

/// DynamoDB's cap on the items of one transaction.
const TRANSACTION_ITEMS: usize = 100;

fn string_set(values: impl IntoIterator<Item = String>) -> AttributeValue {
    AttributeValue::Ss(values.into_iter().collect())
}

impl DynamoDbStore {
    pub(super) async fn add_subscriptions(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
        presence: &[Topic],
        max_topics: usize,
    ) -> Result<Vec<Topic>, StoreError> {
        // Read the connection (and the user's presence rows), then write in one transaction
        // whose conditions re-check what was read. A lost race is retried from a fresh read.
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let now = self.clock.now_seconds();
            let Some(row) = self.connection_row(id).await? else {
                return Err(StoreError::NotConnected(id.clone()));
            };
            let connection = connection_of(&row)?;
            let held = topics_of(&row);
            let tracked = presence_topics_of(&row);
            let adding: Vec<&TopicPattern> = topics
                .iter()
                .filter(|t| !held.iter().any(|h| h == t.as_str()))
                .collect();
            let tracking: Vec<Topic> = presence
                .iter()
                .filter(|t| !tracked.contains(t))
                .cloned()
                .collect();
            if adding.is_empty() && tracking.is_empty() {
                return Ok(Vec::new());
            }
            if held.len() + adding.len() > max_topics
                || 1 + adding.len() + tracking.len() > TRANSACTION_ITEMS
            {
                return Err(StoreError::TooManyTopics {
                    current: held.len(),
                    adding: adding.len(),
                    limit: max_topics.min(TRANSACTION_ITEMS - 1 - tracking.len()),
                });
            }
            let rows = self.presence_rows(&tracking, &connection.user_id).await?;
            let mut items = vec![self.grow_connection_row(id, &adding, &tracking, max_topics)?];
            for topic in &adding {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(subscription_item(topic, &connection)))
                    .build()
                    .map_err(|e| transaction_error(e.to_string()))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            let mut joined = Vec::new();
            for topic in &tracking {
                let row = &rows[topic];
                let present = row
                    .entries
                    .iter()
                    .any(|(other, expires)| other != id.as_str() && *expires > now);
                if !present {
                    joined.push(topic.clone());
                }
                items.push(self.presence_update(
                    topic,
                    &connection.user_id,
                    row,
                    id,
                    connection.expires_at,
                    now,
                )?);
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(joined),
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "subscribe",
            attempts: TRANSACTION_ATTEMPTS,
        })
    }

    /// The connection row's update in a subscribe: the new topics under a condition that
    /// re-checks the limit, the new presence topics.
    fn grow_connection_row(
        &self,
        id: &ConnectionId,
        adding: &[&TopicPattern],
        tracking: &[Topic],
        max_topics: usize,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut parts = Vec::new();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#topics", TOPICS);
        if !adding.is_empty() {
            parts.push("#topics :adding");
            update = update.expression_attribute_values(
                ":adding",
                string_set(adding.iter().map(|t| t.to_string())),
            );
        }
        if !tracking.is_empty() {
            parts.push("#ptopics :tracking");
            update = update
                .expression_attribute_names("#ptopics", PRESENCE_TOPICS)
                .expression_attribute_values(
                    ":tracking",
                    string_set(tracking.iter().map(|t| t.to_string())),
                );
        }
        let update = update
            .update_expression(format!("ADD {}", parts.join(", ")))
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#topics) OR size(#topics) <= :room)",
            )
            .expression_attribute_values(":room", n(max_topics.saturating_sub(adding.len())))
            .build()
            .map_err(|e| transaction_error(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(super) async fn drop_subscriptions(
        &self,
        id: &ConnectionId,
        topics: &[TopicPattern],
    ) -> Result<Vec<Topic>, StoreError> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let Some(row) = self.connection_row(id).await? else {
                return Err(StoreError::NotConnected(id.clone()));
            };
            let connection = connection_of(&row)?;
            let held = topics_of(&row);
            let tracked = presence_topics_of(&row);
            let removing: Vec<&TopicPattern> = topics
                .iter()
                .filter(|t| held.iter().any(|h| h == t.as_str()))
                .collect();
            let untracking: Vec<Topic> = topics
                .iter()
                .filter_map(TopicPattern::as_topic)
                .filter(|t| tracked.contains(t))
                .collect();
            if removing.is_empty() && untracking.is_empty() {
                return Ok(Vec::new());
            }
            let mut parts = Vec::new();
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(connection_key(id)))
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK);
            if !removing.is_empty() {
                parts.push("#topics :removing");
                update = update
                    .expression_attribute_names("#topics", TOPICS)
                    .expression_attribute_values(
                        ":removing",
                        string_set(removing.iter().map(|t| t.to_string())),
                    );
            }
            if !untracking.is_empty() {
                parts.push("#ptopics :untracking");
                update = update
                    .expression_attribute_names("#ptopics", PRESENCE_TOPICS)
                    .expression_attribute_values(
                        ":untracking",
                        string_set(untracking.iter().map(|t| t.to_string())),
                    );
            }
            let update = update
                .update_expression(format!("DELETE {}", parts.join(", ")))
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
                Ok(_) => {
                    // Presence after the subscription: a failure here leaves an entry that
                    // expires with the connection, never a subscription without presence.
                    let mut left = Vec::new();
                    for topic in untracking {
                        if self.leave_presence(&topic, &connection.user_id, id).await? {
                            left.push(topic);
                        }
                    }
                    return Ok(left);
                }
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "unsubscribe",
            attempts: TRANSACTION_ATTEMPTS,
        })
    }
}
