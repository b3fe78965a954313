//! `POST /broadcast`: one message to every connection a target names, or a batch of them.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tracing::{error, info};

use super::background::{Handover, hand_over};
use super::{error_response, internal_error, json_response, with_content_type_hint};
use crate::clock::now_millis;
use crate::config::BroadcastConfig;
use crate::fanout::{Checkpoint, fan_out, metrics};
use crate::handlers::Context;
use crate::handlers::announce::{Change, announce};
use crate::handlers::history::{StampError, history_of, stamp};
use crate::protocol::Topic;
use crate::protocol::broadcast::{
    ApiError, ApiErrorCode, BatchResponse, Broadcast, BroadcastBody, BroadcastResponse,
    BroadcastState, FanoutReport, Message, Target,
};
use crate::sender::Payload;
use crate::shards::ShardLauncher;
use crate::store::Span;
use crate::store::history::Claim;
use tokio::time::Instant;

pub(super) async fn broadcast(
    request: &Request,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Response<Body> {
    let body = match BroadcastBody::parse(request.body()) {
        Ok(body) => body,
        Err(mistake) => return error_response(with_content_type_hint(request, mistake)),
    };
    match body {
        BroadcastBody::One(broadcast) => match send_one(&broadcast, ctx, config, launcher).await {
            Ok(report) => json_response(status_of(&[&report]), &report),
            Err(e) => error_response(e),
        },
        BroadcastBody::Batch(batch) => {
            // In order, each with what is left of the invocation's time; a store failure
            // stops the batch there and says how far it got.
            let mut results = Vec::with_capacity(batch.len());
            for (at, broadcast) in batch.iter().enumerate() {
                match send_one(broadcast, ctx, config, launcher).await {
                    Ok(report) => results.push(report),
                    Err(mut e) => {
                        e.details = format!(
                            "batch[{at}]: {}; batch[0..{at}] were sent ({} reports lost with this answer)",
                            e.details, at
                        );
                        return error_response(e);
                    }
                }
            }
            let reports: Vec<&BroadcastResponse> = results.iter().collect();
            json_response(status_of(&reports), &BatchResponse { results })
        }
    }
}

/// 202 when any of the broadcasts goes on in the background, else 200.
fn status_of(reports: &[&BroadcastResponse]) -> StatusCode {
    match reports.iter().any(|r| r.status == BroadcastState::Running) {
        true => StatusCode::ACCEPTED,
        false => StatusCode::OK,
    }
}

/// How long a sent `id` is remembered: a repeat within it answers the first report.
pub const IDEMPOTENCY_WINDOW_SECONDS: u64 = 24 * 3_600;

/// How long a request holds an `id` it is sending: longer than any invocation (29 s), so a
/// claim left by one that died is taken over by the next retry after it.
const CLAIM_LEASE_SECONDS: u64 = 60;

/// Sends one broadcast, once per `id`: a repeat of an id already sent answers the stored
/// report and sends nothing.
async fn send_one(
    broadcast: &Broadcast,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Result<BroadcastResponse, ApiError> {
    let Some(key) = &broadcast.id else {
        return deliver(broadcast, ctx, config, launcher).await;
    };
    match ctx.store.claim(key, CLAIM_LEASE_SECONDS).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::Done(answer)) => {
            info!(broadcast_id = %key, "repeat of a sent id: answered from the first report");
            let mut report: BroadcastResponse = serde_json::from_str(&answer).map_err(|e| {
                error!(broadcast_id = %key, error = %e, "stored report unreadable");
                internal_error()
            })?;
            report.replayed = true;
            return Ok(report);
        }
        Ok(Claim::InProgress) => {
            return Err(ApiError::new(
                ApiErrorCode::Conflict,
                format!(
                    "a broadcast with id {key:?} is being sent; retry in a few seconds for its report"
                ),
            ));
        }
        Err(e) => {
            error!(broadcast_id = %key, error = %e, "idempotency claim failed");
            return Err(internal_error());
        }
    }
    let outcome = deliver(broadcast, ctx, config, launcher).await;
    let kept = match &outcome {
        Ok(report) => match serde_json::to_string(report) {
            Ok(answer) => {
                ctx.store
                    .finish(key, &answer, IDEMPOTENCY_WINDOW_SECONDS)
                    .await
            }
            Err(e) => {
                error!(broadcast_id = %key, error = %e, "report not serializable");
                Ok(())
            }
        },
        // Nothing was sent or kept: the id is free for the retry.
        Err(_) => ctx.store.release(key).await,
    };
    if let Err(e) = kept {
        // The broadcast itself is done; a repeat within the claim's lease answers 409, later
        // it would be sent again.
        error!(broadcast_id = %key, error = %e, "idempotency record not written");
    }
    outcome
}

/// Refuses what cannot carry its place in a topic's stream: a raw message, or a message to
/// several topics, where one of them keeps history.
fn check_history(broadcast: &Broadcast, ctx: &Context<'_>) -> Result<(), ApiError> {
    let kept = |topic: &Topic| history_of(ctx, topic).is_some();
    match (&broadcast.target, &broadcast.message) {
        (Target::Topic(topic), Message::Raw(_)) if kept(topic) => Err(ApiError::new(
            ApiErrorCode::InvalidRequest,
            format!(
                "{topic} keeps history, and a raw message cannot carry its offset: send event and data"
            ),
        )),
        (Target::Topics(topics), _) => match topics.iter().find(|t| kept(t)) {
            Some(topic) => Err(ApiError::new(
                ApiErrorCode::InvalidTarget,
                format!(
                    "{topic} keeps history: broadcast to it on its own (or in a batch) so its message gets its offset"
                ),
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Sends one broadcast: kept in its topic's stream first when the topic has history, then
/// its payload once to the audience its target resolves to, for as long as the synchronous
/// budget allows; what is left then goes to the background.
async fn deliver(
    broadcast: &Broadcast,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Result<BroadcastResponse, ApiError> {
    check_history(broadcast, ctx)?;
    let id = broadcast
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let accepted_at = now_millis();
    let topic = match &broadcast.target {
        Target::Topic(topic) => Some(topic),
        _ => None,
    };
    let (payload, position) = stamp(ctx, topic, |position| {
        broadcast.payload(&id, accepted_at, position)
    })
    .await
    .map_err(|e| match e {
        StampError::Payload(mistake) => mistake,
        StampError::TooLargeToKeep(size) => ApiError::new(
            ApiErrorCode::PayloadTooLarge,
            StampError::<ApiError>::too_large_to_keep(size),
        ),
        StampError::Store(e) => {
            error!(broadcast_id = %id, error = %e, "history append failed");
            internal_error()
        }
    })?;
    let audience = ctx.channels.audience(&broadcast.target);
    let payload = Payload::new(payload);
    let handover = |rest: Checkpoint| Handover {
        id: &id,
        target: &broadcast.target,
        audience: audience.clone(),
        exclusions: broadcast.exclusions.clone(),
        payload: &payload,
        rest,
        position: position.as_ref(),
        accepted_at,
    };
    if broadcast.run_async {
        let everyone = Checkpoint {
            rest: Some(Span::all()),
            report: FanoutReport::default(),
            retries: 0,
            unsent: Vec::new(),
        };
        return hand_over(handover(everyone), ctx, config, launcher).await;
    }
    let options = ctx
        .fanout_options()
        .stopping_reading_at(Some(Instant::now() + config.sync_budget));
    let outcome = fan_out(
        ctx.store,
        &ctx.sender,
        &audience,
        &broadcast.exclusions,
        &payload,
        &options,
    )
    .await;
    let (summary, failure) = match &outcome {
        Ok(summary) => (summary, None),
        Err(e) => (&e.summary, Some(e)),
    };
    for (user, topic) in &summary.left {
        announce(ctx, Change::Leave, user, std::slice::from_ref(topic)).await;
    }
    if config.emit_metrics {
        // Stdout, not the logger: an EMF document must be a log line of its own.
        println!(
            "{}",
            metrics::emf(summary, &broadcast.target, &id, accepted_at)
        );
    }
    if failure.is_none() && summary.unfinished() {
        // Out of time with recipients left: they go on in the background.
        return hand_over(handover(summary.checkpoint()), ctx, config, launcher).await;
    }
    let report = summary.report;
    if let Some(e) = failure {
        error!(broadcast_id = %id, error = %e, "broadcast stopped: recipients could not be read");
        // Nothing reached anyone and nothing was kept: a plain failure, safe to retry.
        if report.recipients == 0 && position.is_none() {
            return Err(internal_error());
        }
    }
    info!(
        broadcast_id = %id,
        target = ?broadcast.target,
        recipients = report.recipients,
        delivered = report.delivered,
        gone = report.gone,
        failed = report.failed,
        retries = summary.retries,
        offset = position.as_ref().map(|p| p.offset),
        store_failed = failure.is_some(),
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "broadcast"
    );
    Ok(BroadcastResponse {
        id,
        status: BroadcastState::Done,
        report,
        retries: summary.retries,
        deadline_reached: summary.unfinished(),
        store_failed: failure.is_some(),
        offset: position.as_ref().map(|p| p.offset),
        epoch: position.map(|p| p.epoch),
        replayed: false,
        status_url: None,
        shards: None,
    })
}
