//! The broadcast HTTP API: `POST /broadcast` and `GET /connections/count`.

use std::time::{SystemTime, UNIX_EPOCH};

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::config::BroadcastConfig;
use crate::fanout::fan_out;
use crate::protocol::broadcast::{
    ApiError, ApiErrorCode, Broadcast, BroadcastResponse, ConnectionCount,
};
use crate::sender::ConnectionSender;
use crate::store::RecipientStore;

/// Header that carries the API key when `BROADCAST_API_KEY` is set.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Routes by path suffix, so the same code answers `/broadcast` on a `$default` stage and
/// `/prod/broadcast` on a named one.
pub async fn handle(
    request: &Request,
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    config: &BroadcastConfig,
) -> Response<Body> {
    let path = request.uri().path().trim_end_matches('/');
    let route = if path.ends_with("/broadcast") {
        Route::Broadcast
    } else if path.ends_with("/connections/count") {
        Route::Count
    } else {
        return error_response(ApiError::new(
            ApiErrorCode::NotFound,
            "routes: POST /broadcast, GET /connections/count",
        ));
    };
    let allowed = match route {
        Route::Broadcast => Method::POST,
        Route::Count => Method::GET,
    };
    if request.method() != allowed {
        return error_response(ApiError::new(
            ApiErrorCode::MethodNotAllowed,
            format!("use {allowed} {path}"),
        ));
    }
    if let Some(expected) = &config.api_key {
        let presented = request
            .headers()
            .get(API_KEY_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Constant time: the comparison must not reveal how much of a guess was right.
        if !bool::from(presented.ct_eq(expected.as_bytes())) {
            return error_response(ApiError::new(
                ApiErrorCode::Unauthorized,
                format!("missing or wrong {API_KEY_HEADER} header"),
            ));
        }
    }
    match route {
        Route::Broadcast => broadcast(request.body(), store, sender, config).await,
        Route::Count => match store.count_connections().await {
            Ok(count) => json_response(StatusCode::OK, &ConnectionCount { count }),
            Err(e) => {
                error!(error = %e, "count failed");
                error_response(internal_error())
            }
        },
    }
}

enum Route {
    Broadcast,
    Count,
}

async fn broadcast(
    body: &[u8],
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    config: &BroadcastConfig,
) -> Response<Body> {
    let broadcast = match Broadcast::parse(body) {
        Ok(broadcast) => broadcast,
        Err(mistake) => return error_response(mistake),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let payload = match broadcast.payload(&id, now_millis()) {
        Ok(payload) => payload,
        Err(mistake) => return error_response(mistake),
    };
    let outcome = fan_out(
        store,
        sender,
        &broadcast.target,
        &broadcast.exclusions,
        &payload,
        config.concurrency,
    )
    .await;
    match outcome {
        Ok(report) => {
            info!(
                broadcast_id = %id,
                target = ?broadcast.target,
                recipients = report.recipients,
                delivered = report.delivered,
                gone = report.gone,
                failed = report.failed,
                "broadcast"
            );
            json_response(StatusCode::OK, &BroadcastResponse { id, report })
        }
        Err(e) => {
            error!(broadcast_id = %id, error = %e, "broadcast stopped");
            error_response(ApiError::new(
                ApiErrorCode::InternalError,
                format!(
                    "recipients could not be read after {} sends ({} delivered); retry later",
                    e.report.recipients, e.report.delivered
                ),
            ))
        }
    }
}

fn internal_error() -> ApiError {
    ApiError::new(
        ApiErrorCode::InternalError,
        "the store is unavailable; retry later",
    )
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn error_response(error: ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error)
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_string(body).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
