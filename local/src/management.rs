//! API Gateway's management API (`@connections`) on the WebSocket API's origin, answering
//! as API Gateway does, so the real SDK client and the stock AWS CLI work against it. It has
//! no IAM here, so it answers clients on this machine only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::info;
use wsbridge::protocol::MAX_MESSAGE_BYTES;

use crate::Bridge;
use crate::access::is_this_machine;
use crate::outbox::Refused;
use crate::serve::AcceptedOn;

/// An API Gateway error: status, `x-amzn-ErrorType`, and a `message` body.
fn error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    response
        .headers_mut()
        .insert("x-amzn-ErrorType", HeaderValue::from_static(error_type));
    response
}

fn gone(id: &str) -> Response {
    error(
        StatusCode::GONE,
        "GoneException",
        &format!("connection {id} is not connected"),
    )
}

fn iso8601(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// In front of every route here. Deployed, `@connections` needs a SigV4 signature from a
/// principal allowed to manage connections; here, where anyone could sign, a request from
/// another machine gets what API Gateway answers an unsigned one: 403 `ForbiddenException`.
pub(crate) async fn this_machine_only(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let accepted_on = request.extensions().get::<AcceptedOn>().map(|a| a.0);
    match (peer, accepted_on) {
        (Some(peer), Some(on)) if is_this_machine(peer, on) => next.run(request).await,
        _ => {
            info!(peer = ?peer, "@connections refused: not from this machine");
            error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden")
        }
    }
}

/// `POST /@connections/{id}`: queue `body` for the connection.
pub(crate) async fn post(
    State(bridge): State<Arc<Bridge>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_MESSAGE_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            &format!("{} bytes; the limit is {MAX_MESSAGE_BYTES}", body.len()),
        );
    }
    if !bridge.limits.post_latency.is_zero() {
        tokio::time::sleep(bridge.limits.post_latency).await;
    }
    let sent = bridge
        .connections
        .with(&id, |c| c.outbox.post(body.to_vec()));
    match sent {
        Some(Ok(())) => StatusCode::OK.into_response(),
        // As API Gateway answers when a client's buffer is full.
        Some(Err(Refused::Full)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "the client's buffer is full",
        ),
        Some(Err(Refused::Closed)) | None => gone(&id),
    }
}

/// `GET /@connections/{id}`: when it connected, who it is, when it last sent something.
pub(crate) async fn get(State(bridge): State<Arc<Bridge>>, Path(id): Path<String>) -> Response {
    let details = bridge.connections.with(&id, |c| {
        // The wire names are camelCase; SDKs and the CLI show them as ConnectedAt etc.
        let mut identity = json!({ "sourceIp": c.client.source_ip });
        if let Some(agent) = &c.client.user_agent {
            identity["userAgent"] = json!(agent);
        }
        json!({
            "connectedAt": iso8601(c.connected_at),
            "identity": identity,
            "lastActiveAt": iso8601(c.last_active.load(Ordering::Relaxed)),
        })
    });
    match details {
        Some(details) => axum::Json(details).into_response(),
        None => gone(&id),
    }
}

/// `DELETE /@connections/{id}`: close the socket; `$disconnect` follows.
pub(crate) async fn delete(State(bridge): State<Arc<Bridge>>, Path(id): Path<String>) -> Response {
    // A full outbox still takes the close, behind the queued messages.
    match bridge.connections.with(&id, |c| c.outbox.close()) {
        Some(Ok(())) => {
            info!(connection_id = %id, "delete requested");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(_)) | None => gone(&id),
    }
}

/// The same three under `/{stage}/@connections/{id}`, the path a deployed stage uses.
pub(crate) async fn post_staged(
    state: State<Arc<Bridge>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    post(state, Path(id), body).await
}

pub(crate) async fn get_staged(
    state: State<Arc<Bridge>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    get(state, Path(id)).await
}

pub(crate) async fn delete_staged(
    state: State<Arc<Bridge>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    delete(state, Path(id)).await
}
