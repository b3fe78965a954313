//! `POST /broadcast`: one message to every connection a target names.

use std::time::Duration;

use bytes::Bytes;
use lambda_http::RequestExt;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tokio::time::Instant;
use tracing::{error, info};

use super::{error_response, json_response, with_content_type_hint};
use crate::clock::now_millis;
use crate::config::BroadcastConfig;
use crate::fanout::{FanoutOptions, fan_out, metrics};
use crate::protocol::broadcast::{ApiError, ApiErrorCode, Broadcast, BroadcastResponse};
use crate::sender::ConnectionSender;
use crate::store::RecipientStore;

pub(super) async fn broadcast(
    request: &Request,
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    config: &BroadcastConfig,
) -> Response<Body> {
    let broadcast = match Broadcast::parse(request.body()) {
        Ok(broadcast) => broadcast,
        Err(mistake) => return error_response(with_content_type_hint(request, mistake)),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let accepted_at = now_millis();
    let payload = match broadcast.payload(&id, accepted_at) {
        Ok(payload) => Bytes::from(payload),
        Err(mistake) => return error_response(mistake),
    };
    let options = FanoutOptions::new(config.concurrency).with_deadline(deadline_of(request));
    let outcome = fan_out(
        store,
        sender,
        &broadcast.target,
        &broadcast.exclusions,
        &payload,
        &options,
    )
    .await;
    let summary = match &outcome {
        Ok(summary) => summary,
        Err(e) => &e.summary,
    };
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
            json_response(
                StatusCode::OK,
                &BroadcastResponse {
                    id,
                    report,
                    retries: summary.retries,
                    deadline_reached: summary.deadline_reached,
                },
            )
        }
        Err(e) => {
            error!(broadcast_id = %id, error = %e, "broadcast stopped");
            error_response(ApiError::new(
                ApiErrorCode::InternalError,
                format!(
                    "recipients could not be read after {} sends ({} delivered); retry later",
                    e.summary.report.recipients, e.summary.report.delivered
                ),
            ))
        }
    }
}

/// When the Lambda invocation ends, from its context; `None` outside Lambda, and when the
/// runtime reports no usable deadline (emulators send 0 or a time already past: taking that
/// at its word would stop every broadcast before its first post).
fn deadline_of(request: &Request) -> Option<Instant> {
    let deadline_ms = request.lambda_context_ref()?.deadline;
    let now_ms = u64::try_from(now_millis()).ok()?;
    let remaining = deadline_ms.checked_sub(now_ms).filter(|ms| *ms > 0)?;
    Some(Instant::now() + Duration::from_millis(remaining))
}
