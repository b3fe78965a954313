//! The broadcast HTTP API: each request becomes the HTTP API event the broadcast Lambda
//! receives, and runs through the same handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::info;
use wsbridge::handlers::broadcast;

use crate::Bridge;
use crate::events::{self, HttpRequest};

/// HTTP API's payload limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

pub(crate) async fn handle(
    State(bridge): State<Arc<Bridge>>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body over 10 MB\n").into_response();
    };
    // IAM mode: API Gateway checks the signature before the function ever runs.
    if let Some(credentials) = &bridge.sigv4 {
        let verified = credentials.verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            SystemTime::now(),
        );
        if let Err(refusal) = verified {
            info!(method = %parts.method, path = parts.uri.path(), %refusal, "http refused: signature");
            let body = serde_json::json!({ "message": refusal.to_string() }).to_string();
            return (
                StatusCode::FORBIDDEN,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    }
    let domain = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let event = events::http_api(&HttpRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        raw_query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        source_ip: address.ip().to_string(),
        domain: &domain,
    });
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unreadable request: {e}\n"),
            )
                .into_response();
        }
    };
    let response = broadcast::handle(
        &event,
        &bridge.context(),
        &bridge.broadcast,
        &bridge.launcher,
    )
    .await;
    let (parts_out, body_out) = response.into_parts();
    let body_out: Vec<u8> = body_out.as_ref().to_vec();
    info!(
        method = %parts.method,
        path = parts.uri.path(),
        status = parts_out.status.as_u16(),
        response = %String::from_utf8_lossy(&body_out),
        "http"
    );
    Response::from_parts(parts_out, axum::body::Body::from(body_out))
}
