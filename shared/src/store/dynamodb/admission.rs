//! The frame budget on the connection row: one conditional `UpdateItem` per frame.
//!
//! The budget's state is one number on the connection row, `rl`: the GCRA theoretical
//! arrival time (see `limits`). Every Lambda instance that handles a frame of the connection
//! updates that one attribute with a condition DynamoDB evaluates atomically, so the budget
//! holds however many instances run, with no state in any of them.
//!
//! * Idle bucket (`rl` in the past or unset): `SET rl = now + interval`, on condition that it
//!   still is. That is the first guess, since a person's frames mostly arrive that way.
//! * Busy bucket (`rl` in the future): `SET rl = rl + interval`, on condition that `rl` is
//!   still within the burst.
//! * A failed condition returns the row as it was (`ReturnValuesOnConditionCheckFailure`), so
//!   the decision is made from it without another read: a refused frame costs exactly that one
//!   call and writes nothing. A frame that lost a race to another frame is decided again.
//!
//! The same call returns the connection row (`ALL_NEW`), so an admitted frame needs no
//! separate read of its connection.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::items::{
    Item, RATE, connection_key, connection_of, live, n, optional_number, topics_of,
};
use super::schema::{PK, TTL_ATTRIBUTE};
use super::{DynamoDbStore, backend};
use crate::channels::TopicPattern;
use crate::limits::{Decision, RateLimit};
use crate::protocol::ConnectionId;
use crate::store::{Admission, Session, StoreError};

/// Frames of one connection racing for the same budget: each lost race is decided afresh
/// from the row the failed condition returned, so a few attempts always settle.
const ADMIT_ATTEMPTS: u32 = 5;

/// The connection row as a session: the connection and what it holds.
fn session_of(row: &Item) -> Result<Session, StoreError> {
    Ok(Session {
        connection: connection_of(row)?,
        subscriptions: topics_of(row)
            .iter()
            .filter_map(|t| TopicPattern::parse(t).ok())
            .collect(),
    })
}

/// Which update a decision calls for.
#[derive(Clone, Copy)]
enum Bucket {
    Idle,
    Busy,
}

impl DynamoDbStore {
    pub(super) async fn admit_frame(
        &self,
        id: &ConnectionId,
        limit: Option<&RateLimit>,
        now_us: i64,
    ) -> Result<Admission, StoreError> {
        let Some(limit) = limit else {
            return match self.connection_row(id).await? {
                Some(row) => Ok(Admission::Admitted(session_of(&row)?)),
                None => Err(StoreError::NotConnected(id.clone())),
            };
        };
        // Expiry goes by the wall clock, as every other read of the store does; `now_us` is
        // the budget's clock.
        let now_s = self.clock.now_seconds();
        let mut bucket = Bucket::Idle;
        for _ in 0..ADMIT_ATTEMPTS {
            match self.take(id, limit, bucket, now_us, now_s).await? {
                Ok(row) => return Ok(Admission::Admitted(session_of(&row)?)),
                Err(None) => return Err(StoreError::NotConnected(id.clone())),
                Err(Some(old)) => {
                    if !live(&old, now_s) {
                        return Err(StoreError::NotConnected(id.clone()));
                    }
                    let tat = optional_number::<i64>(&old, RATE)?;
                    match limit.decide(tat, now_us) {
                        Decision::Deny { retry_after } => {
                            return Ok(Admission::Limited { retry_after });
                        }
                        Decision::Allow { .. } => {
                            bucket = match tat {
                                Some(tat) if tat > now_us => Bucket::Busy,
                                _ => Bucket::Idle,
                            };
                        }
                    }
                }
            }
        }
        Err(StoreError::Contended {
            operation: "admit",
            attempts: ADMIT_ATTEMPTS,
        })
    }

    /// One conditional update. `Ok(Ok(new row))` when it applied, `Ok(Err(old row))` when its
    /// condition failed (`None`: there is no row).
    async fn take(
        &self,
        id: &ConnectionId,
        limit: &RateLimit,
        bucket: Bucket,
        now_us: i64,
        now_s: u64,
    ) -> Result<Result<Item, Option<Item>>, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#rl", RATE)
            .expression_attribute_values(":now_s", n(now_s))
            .expression_attribute_values(":now", n(now_us))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match bucket {
            Bucket::Idle => request
                .update_expression("SET #rl = :next")
                .condition_expression(
                    "attribute_exists(#pk) AND #ttl > :now_s AND \
                     (attribute_not_exists(#rl) OR #rl <= :now)",
                )
                .expression_attribute_values(":next", n(now_us + limit.interval_us())),
            Bucket::Busy => request
                .update_expression("SET #rl = #rl + :interval")
                .condition_expression(
                    "attribute_exists(#pk) AND #ttl > :now_s AND #rl > :now AND #rl <= :max",
                )
                .expression_attribute_values(":interval", n(limit.interval_us()))
                .expression_attribute_values(":max", n(limit.max_tat(now_us))),
        };
        match request.send().await {
            Ok(output) => Ok(Ok(output.attributes.unwrap_or_default())),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Err(failed.item().cloned()))
                }
                _ => Err(backend("UpdateItem", error)),
            },
        }
    }
}
