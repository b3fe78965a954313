//! Presence rows: who is subscribed to a presence topic, per user.
//!
//! One row per (topic, user), `presence#<topic>` / `user#<user>`, mapping the user's
//! connections there to their expiry, with a version. A subscribe writes it in the same
//! transaction as the subscription, conditioned on the version it read, so "first connection
//! of this user here" (a join) is decided exactly once however many devices subscribe at
//! once. A leave removes one entry with an update that returns the row, so the last
//! connection to leave is the one that sees it empty. Entries carry the connection's expiry:
//! a connection that vanished without `$disconnect` stops counting when it expires.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};

use super::items::{
    Item, USER_CONNECTIONS, VERSION, n, optional_number, presence_key, presence_pk, s, string_attr,
    user_connections_of, user_connections_value,
};
use super::schema::{PK, TTL_ATTRIBUTE};
use super::{DynamoDbStore, backend, transaction_error};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::store::{PresencePage, StoreError};

/// Most presence rows one answer reads (users of one topic): beyond it the answer says it is
/// incomplete. Bounds the read to about 1 000 × 150 bytes ≈ 40 read units.
pub const PRESENCE_READ_LIMIT: i32 = 1_000;

/// A presence row as read before a subscribe: its version and live entries.
pub(super) struct PresenceRow {
    pub version: Option<u64>,
    pub entries: HashMap<String, u64>,
}

impl DynamoDbStore {
    /// The user's presence rows of `topics`, strongly consistent.
    pub(super) async fn presence_rows(
        &self,
        topics: &[Topic],
        user: &UserId,
    ) -> Result<HashMap<Topic, PresenceRow>, StoreError> {
        let keys: Vec<Item> = topics.iter().map(|t| presence_key(t, user)).collect();
        let found = self.rows(&keys, None).await?;
        let mut rows = HashMap::new();
        for topic in topics {
            let pk = presence_pk(topic);
            let row = found
                .iter()
                .find(|item| string_attr(item, PK).is_ok_and(|v| v == pk));
            let row = match row {
                Some(item) => PresenceRow {
                    version: optional_number(item, VERSION)?,
                    entries: user_connections_of(item),
                },
                None => PresenceRow {
                    version: None,
                    entries: HashMap::new(),
                },
            };
            rows.insert(topic.clone(), row);
        }
        Ok(rows)
    }

    /// The row's new map with `id` added, written only if the row is still at the version
    /// read. Expired entries are dropped on the way.
    pub(super) fn presence_update(
        &self,
        topic: &Topic,
        user: &UserId,
        row: &PresenceRow,
        id: &ConnectionId,
        expires_at: u64,
        now: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut entries: HashMap<String, u64> = row
            .entries
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        entries.insert(id.to_string(), expires_at);
        let row_expires = entries.values().copied().max().unwrap_or(expires_at);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(presence_key(topic, user)))
            .update_expression("SET #conns = :conns, #ttl = :ttl, user_id = :user ADD #v :one")
            .expression_attribute_names("#conns", USER_CONNECTIONS)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":conns", user_connections_value(&entries))
            .expression_attribute_values(":ttl", n(row_expires))
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":one", n(1));
        let update = match row.version {
            Some(version) => update
                .condition_expression("#v = :v")
                .expression_attribute_values(":v", n(version)),
            None => update
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
        }
        .build()
        .map_err(|e| transaction_error(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Takes `id` out of the user's presence in `topic`; true when no live connection of
    /// theirs is left there (a leave). No row: they were not present, nothing to leave.
    pub(super) async fn leave_presence(
        &self,
        topic: &Topic,
        user: &UserId,
        id: &ConnectionId,
    ) -> Result<bool, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(presence_key(topic, user)))
            .update_expression("REMOVE #conns.#id ADD #v :one")
            .condition_expression("attribute_exists(#pk) AND attribute_exists(#conns)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#conns", USER_CONNECTIONS)
            .expression_attribute_names("#id", id.as_str())
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match updated {
            Ok(output) => {
                let now = self.clock.now_seconds();
                let remaining = output
                    .attributes
                    .as_ref()
                    .map(user_connections_of)
                    .unwrap_or_default();
                Ok(!remaining.values().any(|expires| *expires > now))
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(backend("UpdateItem", e)),
        }
    }

    /// The users present in `topic`, read page by page up to [`PRESENCE_READ_LIMIT`] rows.
    pub(super) async fn presence_page(
        &self,
        topic: &Topic,
        page: usize,
    ) -> Result<PresencePage, StoreError> {
        let now = self.clock.now_seconds();
        let mut answer = PresencePage::default();
        let mut read: i32 = 0;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(presence_pk(topic)))
                .projection_expression("user_id, conns")
                .limit(PRESENCE_READ_LIMIT - read)
                .set_exclusive_start_key(start)
                .set_return_consumed_capacity(self.return_consumed_capacity())
                .send()
                .await
                .map_err(|e| backend("Query", e))?;
            if let Some(consumed) = &self.consumed {
                consumed.add(output.consumed_capacity());
            }
            for item in output.items() {
                read += 1;
                let live = user_connections_of(item)
                    .values()
                    .filter(|expires| **expires > now)
                    .count() as u64;
                if live == 0 {
                    continue;
                }
                answer.total_users += 1;
                answer.total_connections += live;
                if answer.users.len() < page {
                    answer
                        .users
                        .push((UserId::new(string_attr(item, "user_id")?), live));
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                answer.complete = true;
                return Ok(answer);
            }
            if read >= PRESENCE_READ_LIMIT {
                return Ok(answer);
            }
        }
    }
}
