//! Connection rows and user rows: registering a connection within its user's limit, the
//! user's connections, and removal.
//!
//! A user row (`user#<sub>` / `conns`) maps the user's connection ids to their expiry, and
//! carries a version. Registering reads it, drops expired entries (a connection whose
//! `$disconnect` never came stops counting when its rows expire), decides, and writes the
//! connection row and the new map in one transaction conditioned on the version it read: of
//! simultaneous registrations of one user exactly one commits per version, the others read
//! again and decide again, so the limit holds exactly. Removal bumps the version too, so a
//! registration computed before it cannot write the removed id back. Removing a user's last
//! connection deletes the row (a user who left holds no row); a row is created with a random
//! version, so one created again after a deletion never repeats a version a registration may
//! still hold from before it.
//!
//! Removal deletes the connection row first and takes the deleted image: its `topics` name
//! every subscription row to delete, and a subscribe cannot commit afterwards (its
//! transaction needs the row), so no subscription outlives its connection.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Put, ReturnValue, TransactWriteItem, Update};
use rand::Rng;

use super::items::{
    Item, USER_CONNECTIONS, VERSION, connection_item, connection_key, connection_of, live, n,
    optional_number, presence_topics_of, subscription_key, topics_of, user_connections_of,
    user_connections_value, user_key,
};
use super::schema::{PK, SHARDS, TTL_ATTRIBUTE};
use super::{
    DynamoDbStore, backend, contention_pause, transaction_error, was_cancelled_by_condition,
};
use crate::channels::TopicPattern;
use crate::limits::{ConnectionLimit, LimitPolicy};
use crate::protocol::{ConnectionId, UserId};
use crate::store::{Connection, Registration, Removed, StoreError};

/// Registrations of one user racing each other: each round commits one of them, so this
/// bounds how many can arrive at the same moment and all get an answer.
const REGISTER_ATTEMPTS: u32 = 16;

/// What `connections_of_user` reads of each connection row.
const CONNECTION_PROJECTION: &str =
    "connection_id, user_id, connected_at, endpoint, expires_at, grants_sub, grants_pub";

impl DynamoDbStore {
    /// The user row, read strongly consistent.
    async fn user_row(&self, user: &UserId) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .consistent_read(true)
            .send()
            .await
            .map(|output| output.item)
            .map_err(|e| backend("GetItem", e))
    }

    pub(super) async fn register_connection(
        &self,
        connection: &Connection,
        limit: &ConnectionLimit,
    ) -> Result<Registration, StoreError> {
        let shard = rand::rng().random_range(0..SHARDS);
        for attempt in 0..REGISTER_ATTEMPTS {
            let now = self.clock.now_seconds();
            let row = self.user_row(&connection.user_id).await?;
            let version = match &row {
                Some(row) => optional_number::<u64>(row, VERSION)?,
                None => None,
            };
            let mut held: Vec<(String, u64)> = row
                .as_ref()
                .map(user_connections_of)
                .unwrap_or_default()
                .into_iter()
                .filter(|(id, expires)| *expires > now && id != connection.id.as_str())
                .collect();
            let mut evicted = Vec::new();
            if held.len() >= limit.per_user {
                if limit.policy == LimitPolicy::Refuse {
                    return Ok(Registration::AtLimit { live: held.len() });
                }
                // Oldest first: every connection lives the same TTL, so the earliest expiry
                // is the earliest connect.
                held.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                let excess = held.len() + 1 - limit.per_user;
                evicted = held
                    .drain(..excess)
                    .map(|(id, _)| ConnectionId::new(id))
                    .collect();
            }
            let mut entries: HashMap<String, u64> = held.into_iter().collect();
            entries.insert(connection.id.to_string(), connection.expires_at);
            let items = vec![
                self.put_connection_item(connection, shard)?,
                self.user_row_update(&connection.user_id, &entries, version)?,
            ];
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(Registration::Registered { evicted }),
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "register",
            attempts: REGISTER_ATTEMPTS,
        })
    }

    fn put_connection_item(
        &self,
        connection: &Connection,
        shard: u32,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(connection_item(connection, shard)))
            .build()
            .map_err(|e| transaction_error(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The user row's new map, written only if the row is still at the `version` read
    /// (`None`: the row must still not exist, and is created with a random version). The
    /// row expires with its last connection.
    fn user_row_update(
        &self,
        user: &UserId,
        entries: &HashMap<String, u64>,
        version: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let expires_at = entries.values().copied().max().unwrap_or_default();
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .expression_attribute_names("#conns", USER_CONNECTIONS)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":conns", user_connections_value(entries))
            .expression_attribute_values(":ttl", n(expires_at));
        let update = match version {
            Some(version) => update
                .update_expression("SET #conns = :conns, #ttl = :ttl ADD #v :one")
                .expression_attribute_values(":one", n(1))
                .condition_expression("#v = :v")
                .expression_attribute_values(":v", n(version)),
            // Not 1: the row may have been deleted since a registration read it at version
            // 1, and that registration must not find "its" version here again.
            None => update
                .update_expression("SET #conns = :conns, #ttl = :ttl, #v = :fresh")
                .expression_attribute_values(":fresh", n(rand::rng().random_range(1..1u64 << 53)))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
        }
        .build()
        .map_err(|e| transaction_error(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(super) async fn connections_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<Connection>, StoreError> {
        let now = self.clock.now_seconds();
        let Some(row) = self.user_row(user).await? else {
            return Ok(Vec::new());
        };
        let ids: Vec<ConnectionId> = user_connections_of(&row)
            .into_iter()
            .filter(|(_, expires)| *expires > now)
            .map(|(id, _)| ConnectionId::new(id))
            .collect();
        let rows = self.connection_rows(&ids, CONNECTION_PROJECTION).await?;
        let mut connections = rows
            .iter()
            .filter(|row| live(row, now))
            .map(connection_of)
            .collect::<Result<Vec<_>, _>>()?;
        connections.sort_by(|a, b| (a.connected_at, &a.id).cmp(&(b.connected_at, &b.id)));
        Ok(connections)
    }

    /// Removes the connection's rows. `connected_before`: only if it was registered before
    /// then (milliseconds since the epoch); a younger one is left as it is (`None` returned).
    pub(super) async fn remove_one(
        &self,
        id: &ConnectionId,
        connected_before: Option<i64>,
    ) -> Result<Option<Removed>, StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .return_values(ReturnValue::AllOld);
        let delete = match connected_before {
            Some(cutoff) => delete
                .condition_expression("attribute_not_exists(#at) OR #at < :cutoff")
                .expression_attribute_names("#at", "connected_at")
                .expression_attribute_values(":cutoff", n(cutoff)),
            None => delete,
        };
        let deleted = match delete.send().await {
            Ok(deleted) => deleted,
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(backend("DeleteItem", e)),
        };
        let Some(row) = deleted.attributes.filter(|row| !row.is_empty()) else {
            return Ok(None);
        };
        let connection = connection_of(&row)?;
        let held = topics_of(&row);
        // Every step runs even when one before it fails: a subscription row left behind only
        // costs a post that answers 410 (which removes it) until TTL ends it, but an entry
        // left in the user row counts against the user's limit, and one left in a presence
        // row shows the user present, until it expires.
        let subscriptions = self
            .delete_keys(held.iter().map(|t| subscription_key(t, id)).collect())
            .await;
        let user_row = self.forget_in_user_row(&connection.user_id, id).await;
        let mut presence = Ok(());
        let mut left = Vec::new();
        for topic in presence_topics_of(&row) {
            match self.leave_presence(&topic, &connection.user_id, id).await {
                Ok(true) => left.push(topic),
                Ok(false) => {}
                Err(e) => presence = presence.and(Err(e)),
            }
        }
        subscriptions.and(user_row).and(presence)?;
        Ok(Some(Removed {
            connection,
            // Stored topics were valid when subscribed; one that no longer parses is left out
            // of the answer, never of the deletion above.
            topics: held
                .iter()
                .filter_map(|t| TopicPattern::parse(t).ok())
                .collect(),
            left,
        }))
    }

    /// Drops the connection from its user's map and bumps the version, so a registration
    /// computed from an older read cannot write it back; deletes the row once its map is
    /// empty. No user row: nothing to do.
    async fn forget_in_user_row(&self, user: &UserId, id: &ConnectionId) -> Result<(), StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
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
        let row = match updated {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(backend("UpdateItem", e)),
        };
        match optional_number::<u64>(&row, VERSION)? {
            Some(version) if user_connections_of(&row).is_empty() => {
                self.delete_empty_user_row(user, version).await
            }
            _ => Ok(()),
        }
    }

    /// Deletes the user row if it is still at `version`, the one that emptied its map: a
    /// registration that committed since bumped it, and its row stays.
    async fn delete_empty_user_row(&self, user: &UserId, version: u64) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":v", n(version))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(backend("DeleteItem", e)),
        }
    }
}
