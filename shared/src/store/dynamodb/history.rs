//! Topic streams and idempotency keys on the table.
//!
//! | row      | pk                 | sk              | attributes                           |
//! |----------|--------------------|-----------------|--------------------------------------|
//! | stream   | `history#<topic>`  | `stream`        | seq (last offset), epoch, expires_at |
//! | message  | `history#<topic>`  | `off#<offset>`  | payload, epoch, expires_at           |
//! | key      | `idem#<key>`       | `idem`          | answer (once sent), expires_at       |
//!
//! An append reads the stream row, then writes in one transaction the stream row's next
//! offset (conditioned on the offset and epoch it read), the message row, and the deletion
//! of the message that falls out of the last `size`. Two appends racing on one topic: one
//! commits, the other's condition fails and it tries again on the new offset, so offsets
//! are gap-free and every offset taken has its message. A counter bumped by `ADD` would
//! cost one write less but could take an offset whose message never gets written (the
//! function dies in between), a gap no reader could tell from a lost message.
//!
//! Offsets are zero-padded in the sort key so that a Query returns them in order.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use super::items::{Item, live, n, optional_number, s, string_attr};
use super::schema::{PK, SK, TTL_ATTRIBUTE};
use super::{
    DynamoDbStore, backend, contention_pause, transaction_error, was_cancelled_by_condition,
};
use crate::channels::History;
use crate::protocol::Topic;
use crate::store::StoreError;
use crate::store::history::{Claim, HistoryPage, HistoryStore, Position, ReadLimits, new_epoch};

/// Tries of an append against concurrent appends to the same topic.
const APPEND_ATTEMPTS: u32 = 12;

const STREAM_SK: &str = "stream";
const KEY_SK: &str = "idem";
const SEQ: &str = "seq";
const EPOCH: &str = "epoch";
const PAYLOAD: &str = "payload";
const ANSWER: &str = "answer";

fn stream_pk(topic: &Topic) -> String {
    format!("history#{topic}")
}

fn message_sk(offset: u64) -> String {
    format!("off#{offset:020}")
}

fn key(pk: String, sk: &str) -> Item {
    Item::from([(PK.into(), s(pk)), (SK.into(), s(sk))])
}

/// The stream row as read: its offset, epoch and expiry (`None`: no live stream).
struct Stream {
    seq: u64,
    epoch: String,
    expires_at: u64,
}

impl DynamoDbStore {
    /// The topic's stream row, strongly consistent, whether or not it has expired.
    async fn stream(&self, topic: &Topic) -> Result<Option<Stream>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(stream_pk(topic), STREAM_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        Ok(Some(Stream {
            seq: optional_number(&item, SEQ)?.unwrap_or(0),
            epoch: string_attr(&item, EPOCH)?,
            expires_at: optional_number(&item, TTL_ATTRIBUTE)?.unwrap_or(0),
        }))
    }

    /// The append's transaction: the stream row moved on from what was read, the message,
    /// and the message that falls out of the window.
    fn append_items(
        &self,
        topic: &Topic,
        read: Option<&Stream>,
        position: &Position,
        payload: &str,
        history: &History,
        expires_at: u64,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let pk = stream_pk(topic);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.clone(), STREAM_SK)))
            .update_expression("SET #seq = :next, #epoch = :epoch, #ttl = :ttl")
            .expression_attribute_names("#seq", SEQ)
            .expression_attribute_names("#epoch", EPOCH)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":next", n(position.offset))
            .expression_attribute_values(":epoch", s(&position.epoch))
            .expression_attribute_values(":ttl", n(expires_at));
        // The row exactly as read (an expired one is replaced, under a new epoch), or none.
        let update = match read {
            Some(stream) => update
                .condition_expression("#seq = :seq AND #old_epoch = :old_epoch")
                .expression_attribute_names("#old_epoch", EPOCH)
                .expression_attribute_values(":seq", n(stream.seq))
                .expression_attribute_values(":old_epoch", s(&stream.epoch)),
            None => update
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
        };
        let mut items = vec![
            TransactWriteItem::builder()
                .update(
                    update
                        .build()
                        .map_err(|e| transaction_error(e.to_string()))?,
                )
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .item(PK, s(pk.clone()))
                        .item(SK, s(message_sk(position.offset)))
                        .item(PAYLOAD, s(payload))
                        .item(EPOCH, s(&position.epoch))
                        .item(TTL_ATTRIBUTE, n(expires_at))
                        .build()
                        .map_err(|e| transaction_error(e.to_string()))?,
                )
                .build(),
        ];
        if let Some(dropped) = position.offset.checked_sub(u64::from(history.size))
            && dropped > 0
        {
            items.push(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(pk, &message_sk(dropped))))
                            .build()
                            .map_err(|e| transaction_error(e.to_string()))?,
                    )
                    .build(),
            );
        }
        Ok(items)
    }
}

#[async_trait::async_trait]
impl HistoryStore for DynamoDbStore {
    async fn append(
        &self,
        topic: &Topic,
        history: &History,
        payload: &(dyn for<'p> Fn(&'p Position) -> String + Send + Sync),
    ) -> Result<(Position, String), StoreError> {
        for attempt in 0..APPEND_ATTEMPTS {
            let now = self.clock.now_seconds();
            let read = self.stream(topic).await?;
            let position = match &read {
                Some(stream) if stream.expires_at > now => Position {
                    offset: stream.seq + 1,
                    epoch: stream.epoch.clone(),
                },
                // No stream, or one that expired (and TTL has not deleted yet): a new one.
                _ => Position {
                    offset: 1,
                    epoch: new_epoch(),
                },
            };
            let body = payload(&position);
            let expires_at = now + history.ttl.as_secs();
            let items =
                self.append_items(topic, read.as_ref(), &position, &body, history, expires_at)?;
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok((position, body)),
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "append",
            attempts: APPEND_ATTEMPTS,
        })
    }

    async fn read(
        &self,
        topic: &Topic,
        after: Option<u64>,
        limits: ReadLimits,
    ) -> Result<HistoryPage, StoreError> {
        let now = self.clock.now_seconds();
        let Some(stream) = self.stream(topic).await?.filter(|s| s.expires_at > now) else {
            return Ok(HistoryPage::default());
        };
        let from = HistoryPage::start(after, stream.seq, &limits);
        let mut page = HistoryPage::of_stream(&stream.epoch, stream.seq);
        if from > stream.seq {
            return Ok(page);
        }
        // One more than wanted: its presence says whether more follow.
        let wanted = limits.messages.min(1_000) as i32 + 1;
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(stream_pk(topic)))
            .expression_attribute_values(":from", s(message_sk(from.max(1))))
            .expression_attribute_values(":to", s(message_sk(stream.seq)))
            .consistent_read(true)
            .limit(wanted)
            .into_paginator()
            .send();
        'pages: while let Some(output) = pages.next().await {
            let output = output.map_err(|e| backend("Query", e))?;
            for item in output.items() {
                let epoch = item.get(EPOCH).and_then(|v| v.as_s().ok());
                if !live(item, now) || epoch != Some(&stream.epoch) {
                    continue;
                }
                let Some(offset) = item
                    .get(SK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| sk.strip_prefix("off#"))
                    .and_then(|digits| digits.parse().ok())
                else {
                    continue;
                };
                if !page.offer(offset, &string_attr(item, PAYLOAD)?, &limits) {
                    break 'pages;
                }
            }
        }
        Ok(page)
    }

    async fn claim(&self, key_name: &str, lease_seconds: u64) -> Result<Claim, StoreError> {
        let now = self.clock.now_seconds();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(format!("idem#{key_name}")))
            .item(SK, s(KEY_SK))
            .item(TTL_ATTRIBUTE, n(now + lease_seconds))
            // Free, or a claim or answer whose time is up.
            .condition_expression("attribute_not_exists(#pk) OR #ttl <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(held)) => {
                    match held.item().and_then(|item| item.get(ANSWER)) {
                        Some(AttributeValue::S(answer)) => Ok(Claim::Done(answer.clone())),
                        _ => Ok(Claim::InProgress),
                    }
                }
                _ => Err(backend("PutItem", e)),
            },
        }
    }

    async fn finish(
        &self,
        key_name: &str,
        answer: &str,
        window_seconds: u64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(format!("idem#{key_name}")))
            .item(SK, s(KEY_SK))
            .item(ANSWER, s(answer))
            .item(TTL_ATTRIBUTE, n(self.clock.now_seconds() + window_seconds))
            .send()
            .await
            .map_err(|e| backend("PutItem", e))?;
        Ok(())
    }

    async fn release(&self, key_name: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("idem#{key_name}"), KEY_SK)))
            .send()
            .await
            .map_err(|e| backend("DeleteItem", e))?;
        Ok(())
    }
}
