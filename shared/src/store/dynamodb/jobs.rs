//! Broadcasts running in parts, on the table.
//!
//! | row  | pk             | sk            | attributes                                                |
//! |------|----------------|---------------|-----------------------------------------------------------|
//! | job  | `bcast#<id>`   | `job`         | doc (audience, exclusions, head, …), payload, ttl         |
//! | part | `bcast#<id>`   | `part#<nnnn>` | progress, runs, restarts, runner, lease_until, claim, ttl |
//!
//! One Query reads a broadcast whole. A claim reads the part row, then writes it on the
//! condition that it is as read (free, or held by a lease that has run out, or by the same
//! runner), so of two runners claiming at once one wins; a claim that finds itself applied
//! (its answer was lost) holds. A save is conditioned on the runner still holding the part,
//! or, for the save that lets go, on the row being exactly as that save leaves it (its
//! answer was lost).

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use serde::{Deserialize, Serialize};

use super::items::{Item, malformed, n, number_attr, optional_number, s, string_attr};
use super::schema::{PK, SK, TTL_ATTRIBUTE};
use super::{DynamoDbStore, backend, contention_pause, was_cancelled_by_condition};
use crate::protocol::broadcast::Exclusions;
use crate::store::jobs::{Claim, Job, JobStore, Part, Progress, Tally};
use crate::store::{Audience, StoreError};

const JOB_SK: &str = "job";
const DOC: &str = "doc";
const PAYLOAD: &str = "payload";
const PROGRESS: &str = "progress";
const RUNS: &str = "runs";
const RESTARTS: &str = "restarts";
const RUNNER: &str = "runner";
const LEASE_UNTIL: &str = "lease_until";
const UPDATED_AT: &str = "updated_at";
/// The last claim's own id.
const CLAIM: &str = "claim";

/// Attempts at recording a broadcast whose transaction was cancelled for a conflict.
const CREATE_ATTEMPTS: u32 = 3;

/// Whether a broadcast's recording was cancelled because its id is taken: the job row,
/// first of the transaction and the only one with a condition, failed it.
fn job_row_taken<R>(error: &SdkError<TransactWriteItemsError, R>) -> bool {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            cancelled
                .cancellation_reasons()
                .first()
                .and_then(|r| r.code())
                == Some("ConditionalCheckFailed")
        }
        _ => false,
    }
}

fn job_pk(id: &str) -> String {
    format!("bcast#{id}")
}

fn part_sk(part: u32) -> String {
    format!("part#{part:04}")
}

fn part_key(id: &str, part: u32) -> Item {
    Item::from([(PK.into(), s(job_pk(id))), (SK.into(), s(part_sk(part)))])
}

/// The job row's fields apart from the payload, as one JSON document.
#[derive(Serialize, Deserialize)]
struct Doc {
    audience: Audience,
    exclusions: Exclusions,
    head: Tally,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    created_at_ms: i64,
}

fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::MalformedItem {
        key: "(new item)".into(),
        reason: e.to_string(),
    })
}

fn from_json<T: for<'de> Deserialize<'de>>(item: &Item, name: &str) -> Result<T, StoreError> {
    serde_json::from_str(&string_attr(item, name)?)
        .map_err(|e| malformed(item, format!("{name}: {e}")))
}

fn job_item(job: &Job) -> Result<Item, StoreError> {
    let doc = Doc {
        audience: job.audience.clone(),
        exclusions: job.exclusions.clone(),
        head: job.head,
        offset: job.offset,
        epoch: job.epoch.clone(),
        created_at_ms: job.created_at_ms,
    };
    Ok(Item::from([
        (PK.into(), s(job_pk(&job.id))),
        (SK.into(), s(JOB_SK)),
        (DOC.into(), s(json(&doc)?)),
        (
            PAYLOAD.into(),
            AttributeValue::B(job.payload.to_vec().into()),
        ),
        (TTL_ATTRIBUTE.into(), n(job.expires_at)),
    ]))
}

fn part_item(id: &str, part: &Part, expires_at: u64) -> Result<Item, StoreError> {
    let mut item = part_key(id, part.index);
    item.extend([
        (PROGRESS.into(), s(json(&part.progress)?)),
        (RUNS.into(), n(part.runs)),
        (RESTARTS.into(), n(part.restarts)),
        (LEASE_UNTIL.into(), n(part.lease_until_ms)),
        (UPDATED_AT.into(), n(part.updated_at_ms)),
        (TTL_ATTRIBUTE.into(), n(expires_at)),
    ]);
    if let Some(runner) = &part.runner {
        item.insert(RUNNER.into(), s(runner));
    }
    Ok(item)
}

fn part_of(item: &Item) -> Result<Part, StoreError> {
    let index = string_attr(item, SK)?
        .strip_prefix("part#")
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| malformed(item, "sk is not part#<n>".into()))?;
    Ok(Part {
        index,
        progress: from_json(item, PROGRESS)?,
        runs: number_attr(item, RUNS)?,
        restarts: number_attr(item, RESTARTS)?,
        runner: item.get(RUNNER).and_then(|v| v.as_s().ok()).cloned(),
        lease_until_ms: optional_number(item, LEASE_UNTIL)?.unwrap_or(0),
        updated_at_ms: number_attr(item, UPDATED_AT)?,
    })
}

fn job_of(id: &str, item: &Item, parts: Vec<Part>) -> Result<Job, StoreError> {
    let doc: Doc = from_json(item, DOC)?;
    let payload = match item.get(PAYLOAD) {
        Some(AttributeValue::B(blob)) => bytes::Bytes::from(blob.clone().into_inner()),
        _ => {
            return Err(malformed(
                item,
                format!("{PAYLOAD} is missing or not binary"),
            ));
        }
    };
    Ok(Job {
        id: id.to_owned(),
        audience: doc.audience,
        exclusions: doc.exclusions,
        payload,
        head: doc.head,
        offset: doc.offset,
        epoch: doc.epoch,
        created_at_ms: doc.created_at_ms,
        expires_at: number_attr(item, TTL_ATTRIBUTE)?,
        parts,
    })
}

impl DynamoDbStore {
    /// A part row, read consistently.
    async fn part_row(&self, id: &str, part: u32) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(part_key(id, part)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        let now = self.clock.now_seconds();
        Ok(output.item.filter(|item| {
            optional_number::<u64>(item, TTL_ATTRIBUTE)
                .ok()
                .flatten()
                .is_some_and(|ttl| ttl > now)
        }))
    }
}

#[async_trait::async_trait]
impl JobStore for DynamoDbStore {
    async fn create_job(&self, job: &Job) -> Result<(), StoreError> {
        let now = self.clock.now_seconds();
        let mut puts = vec![
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(job_item(job)?))
                // New, or one whose time is up and TTL has not deleted yet.
                .condition_expression("attribute_not_exists(#pk) OR #ttl <= :now")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":now", n(now))
                .build()
                .map_err(|e| StoreError::MalformedItem {
                    key: job_pk(&job.id),
                    reason: e.to_string(),
                })?,
        ];
        for part in &job.parts {
            puts.push(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(part_item(&job.id, part, job.expires_at)?))
                    .build()
                    .map_err(|e| StoreError::MalformedItem {
                        key: job_pk(&job.id),
                        reason: e.to_string(),
                    })?,
            );
        }
        let items: Vec<TransactWriteItem> = puts
            .into_iter()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .collect();
        for attempt in 0..CREATE_ATTEMPTS {
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(()),
                Err(e) if job_row_taken(&e) => return Err(StoreError::Exists(job.id.clone())),
                // Cancelled for a conflicting write in progress on one of its rows, which
                // is no answer about the id: nothing was written, so try again.
                Err(e) if was_cancelled_by_condition(&e) => contention_pause(attempt).await,
                Err(e) => return Err(backend("TransactWriteItems", e)),
            }
        }
        Err(StoreError::Contended {
            operation: "create_job",
            attempts: CREATE_ATTEMPTS,
        })
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let pages: Vec<_> = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(job_pk(id)))
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut job_row = None;
        let mut parts = Vec::new();
        for page in pages {
            let page = page.map_err(|e| backend("Query", e))?;
            for item in page.items() {
                if item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(JOB_SK) {
                    job_row = Some(item.clone());
                } else {
                    parts.push(part_of(item)?);
                }
            }
        }
        let Some(row) = job_row else {
            return Ok(None);
        };
        parts.sort_by_key(|p| p.index);
        let job = job_of(id, &row, parts)?;
        Ok((job.expires_at > self.clock.now_seconds()).then_some(job))
    }

    async fn claim_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        // Marks the row as this claim's, so that the claim knows its own write again.
        let claim = uuid::Uuid::new_v4().to_string();
        // Twice at most: a claim lost to a racing runner reads again and finds it busy.
        for _ in 0..2 {
            let Some(row) = self.part_row(id, part).await? else {
                return Ok(Claim::Unknown);
            };
            let held = part_of(&row)?;
            if row.get(CLAIM).and_then(|v| v.as_s().ok()) == Some(&claim) {
                // This very claim, applied by an attempt whose answer was lost (the SDK's
                // retry then failed the condition): it holds already, and is no restart.
                return Ok(Claim::Claimed(held));
            }
            if held.progress.is_done() {
                return Ok(Claim::Done);
            }
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(part_key(id, part)))
                .expression_attribute_names("#runner", RUNNER)
                .expression_attribute_names("#lease", LEASE_UNTIL)
                .expression_attribute_names("#runs", RUNS)
                .expression_attribute_names("#updated", UPDATED_AT)
                .expression_attribute_names("#claim", CLAIM)
                .expression_attribute_values(":me", s(runner))
                .expression_attribute_values(":lease", n(lease_until_ms))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":claim", s(&claim))
                .return_values(ReturnValue::AllNew);
            let update = match &held.runner {
                Some(other) if other != runner && held.lease_until_ms >= now_ms => {
                    return Ok(Claim::Busy {
                        runner: other.clone(),
                        lease_until_ms: held.lease_until_ms,
                    });
                }
                // Its runner died holding it (or is this one, retried): take over, if it is
                // still as read.
                Some(other) => update
                    .condition_expression("#runner = :held AND #lease = :held_lease")
                    .expression_attribute_names("#restarts", RESTARTS)
                    .expression_attribute_values(":held", s(other))
                    .expression_attribute_values(":held_lease", n(held.lease_until_ms))
                    .update_expression(
                        "SET #runner = :me, #lease = :lease, #runs = #runs + :one, \
                         #restarts = #restarts + :one, #updated = :now, #claim = :claim",
                    ),
                None => update
                    .condition_expression(
                        "attribute_exists(#runs) AND attribute_not_exists(#runner)",
                    )
                    .update_expression(
                        "SET #runner = :me, #lease = :lease, #runs = #runs + :one, \
                         #updated = :now, #claim = :claim",
                    ),
            };
            match update.send().await {
                Ok(output) => {
                    let item = output.attributes.unwrap_or_default();
                    return part_of(&item).map(Claim::Claimed);
                }
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => continue,
                    _ => return Err(backend("UpdateItem", e)),
                },
            }
        }
        match self
            .part_row(id, part)
            .await?
            .map(|row| part_of(&row))
            .transpose()?
        {
            Some(held) if held.progress.is_done() => Ok(Claim::Done),
            Some(held) => Ok(Claim::Busy {
                runner: held.runner.unwrap_or_default(),
                lease_until_ms: held.lease_until_ms,
            }),
            None => Ok(Claim::Unknown),
        }
    }

    async fn save_part(
        &self,
        id: &str,
        part: u32,
        runner: &str,
        progress: &Progress,
        release: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (expression, condition) = if release {
            (
                "SET #progress = :progress, #updated = :now, #lease = :zero REMOVE #runner",
                // Or already let go by this very save: an attempt applied it and its answer
                // was lost, and the SDK's retry must not take that for a lost lease.
                "#runner = :me OR (attribute_not_exists(#runner) AND #progress = :progress \
                 AND #updated = :now)",
            )
        } else {
            (
                "SET #progress = :progress, #updated = :now",
                "#runner = :me",
            )
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(part_key(id, part)))
            .condition_expression(condition)
            .update_expression(expression)
            .expression_attribute_names("#runner", RUNNER)
            .expression_attribute_names("#progress", PROGRESS)
            .expression_attribute_names("#updated", UPDATED_AT)
            .expression_attribute_values(":me", s(runner))
            .expression_attribute_values(":progress", s(json(progress)?))
            .expression_attribute_values(":now", n(now_ms));
        if release {
            update = update
                .expression_attribute_names("#lease", LEASE_UNTIL)
                .expression_attribute_values(":zero", n(0));
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    Err(StoreError::LeaseLost {
                        id: id.to_owned(),
                        part,
                    })
                }
                _ => Err(backend("UpdateItem", e)),
            },
        }
    }
}
