//! Subscription rows: a connection joins and leaves topics.
//!
//! Subscribe is one transaction: the connection row's `topics` set grows under a condition
//! that re-checks the limit, and the subscription rows are put. Two concurrent subscribes
//! cannot pass the limit together, and a subscribe cannot land after the connection row is
//! deleted (the condition needs the row), so removal never leaves a subscription behind.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use super::items::{
    TOPICS, connection_key, connection_of, n, subscription_item, subscription_key, topics_of,
};
use super::schema::PK;
use super::{
    DynamoDbStore, backend, contention_pause, transaction_error, was_cancelled_by_condition,
};
use crate::protocol::{ConnectionId, Topic};
use crate::store::StoreError;

/// Attempts at a subscribe/unsubscribe transaction that lost a race with another one (frames
/// of one connection handled at once); each lost race pauses briefly, then reads again.
const TRANSACTION_ATTEMPTS: u32 = 6;

impl DynamoDbStore {
    pub(super) async fn add_subscriptions(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
        max_topics: usize,
    ) -> Result<(), StoreError> {
        // Read the held topics, then write in one transaction whose condition re-checks the
        // count: two concurrent subscribes cannot together pass the limit. A lost race is
        // retried from a fresh read.
        for attempt in 0..TRANSACTION_ATTEMPTS {
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
                .update_expression("ADD #topics :adding")
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(#topics) OR size(#topics) <= :room)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#topics", TOPICS)
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
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "subscribe",
            attempts: TRANSACTION_ATTEMPTS,
        })
    }

    pub(super) async fn drop_subscriptions(
        &self,
        id: &ConnectionId,
        topics: &[Topic],
    ) -> Result<(), StoreError> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
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
                .update_expression("DELETE #topics :removing")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#topics", TOPICS)
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
