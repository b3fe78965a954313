//! `POST /broadcast`: one message to every connection a target names, or a batch of them.

use bytes::Bytes;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tracing::{error, info};

use super::{error_response, json_response, with_content_type_hint};
use crate::clock::now_millis;
use crate::config::BroadcastConfig;
use crate::fanout::{fan_out, metrics};
use crate::handlers::Context;
use crate::handlers::announce::{Change, announce};
use crate::protocol::broadcast::{
    ApiError, ApiErrorCode, BatchResponse, Broadcast, BroadcastBody, BroadcastResponse,
};

pub(super) async fn broadcast(
    request: &Request,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
) -> Response<Body> {
    let body = match BroadcastBody::parse(request.body()) {
        Ok(body) => body,
        Err(mistake) => return error_response(with_content_type_hint(request, mistake)),
    };
    match body {
        BroadcastBody::One(broadcast) => match send_one(&broadcast, ctx, config).await {
            Ok(report) => json_response(StatusCode::OK, &report),
            Err(e) => error_response(e),
        },
        BroadcastBody::Batch(batch) => {
            // In order, each with what is left of the invocation's time; a store failure
            // stops the batch there and says how far it got.
            let mut results = Vec::with_capacity(batch.len());
            for (at, broadcast) in batch.iter().enumerate() {
                match send_one(broadcast, ctx, config).await {
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
            json_response(StatusCode::OK, &BatchResponse { results })
        }
    }
}

/// Sends one broadcast: its payload once, to the audience its target resolves to.
async fn send_one(
    broadcast: &Broadcast,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
) -> Result<BroadcastResponse, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let accepted_at = now_millis();
    let payload = Bytes::from(broadcast.payload(&id, accepted_at)?);
    let audience = ctx.channels.audience(&broadcast.target);
    let outcome = fan_out(
        ctx.store,
        ctx.sender,
        &audience,
        &broadcast.exclusions,
        &payload,
        &ctx.fanout_options(),
    )
    .await;
    let summary = match &outcome {
        Ok(summary) => summary,
        Err(e) => &e.summary,
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
    match outcome {
        Ok(summary) => {
            let report = summary.report;
            info!(
                broadcast_id = %id,
                target = ?broadcast.target,
                recipients = report.recipients,
                delivered = report.delivered,
                gone = report.gone,
                failed = report.failed,
                retries = summary.retries,
                elapsed_ms = summary.elapsed.as_millis() as u64,
                "broadcast"
            );
            Ok(BroadcastResponse {
                id,
                report,
                retries: summary.retries,
                deadline_reached: summary.deadline_reached,
            })
        }
        Err(e) => {
            error!(broadcast_id = %id, error = %e, "broadcast stopped");
            Err(ApiError::new(
                ApiErrorCode::InternalError,
                format!(
                    "recipients could not be read after {} sends ({} delivered); retry later",
                    e.summary.report.recipients, e.summary.report.delivered
                ),
            ))
        }
    }
}
