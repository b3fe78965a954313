//! The server HTTP API, one Lambda for all its routes: `POST /broadcast`,
//! `GET /connections/count`, connection management (`POST /subscribe`,
//! `POST /unsubscribe`, `POST /disconnect`), who is there (`GET /presence`, `GET /online`)
//! and what was said (`GET /history`).

mod manage;
mod query;
mod send;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::error;

use lambda_http::RequestExt;

use super::Context;
use crate::config::BroadcastConfig;
use crate::fanout::deadline_at;
use crate::protocol::broadcast::{ApiError, ApiErrorCode, ConnectionCount};

/// Header that carries the API key when `BROADCAST_API_KEY` is set.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The routes, by path suffix (so `/prod/broadcast` on a named stage works as `/broadcast`
/// does on `$default`), with the one method each accepts.
#[derive(Clone, Copy)]
enum Route {
    Broadcast,
    Count,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Presence,
    Online,
    History,
}

const ROUTES: [(&str, Method, Route); 8] = [
    ("/broadcast", Method::POST, Route::Broadcast),
    ("/connections/count", Method::GET, Route::Count),
    ("/subscribe", Method::POST, Route::Subscribe),
    ("/unsubscribe", Method::POST, Route::Unsubscribe),
    ("/disconnect", Method::POST, Route::Disconnect),
    ("/presence", Method::GET, Route::Presence),
    ("/online", Method::GET, Route::Online),
    ("/history", Method::GET, Route::History),
];

/// Every route as API Gateway's HTTP API keys it (`POST /broadcast`): what the template
/// must route to this function.
pub fn route_keys() -> Vec<String> {
    ROUTES
        .iter()
        .map(|(path, method, _)| format!("{method} {path}"))
        .collect()
}

fn route_list() -> String {
    route_keys().join(", ")
}

/// Answers one request of the server API. In Lambda the invocation's deadline rides in the
/// request and bounds every fan-out; `config` says who may call.
pub async fn handle(
    request: &Request,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
) -> Response<Body> {
    let deadline = request
        .lambda_context_ref()
        .and_then(|context| deadline_at(context.deadline))
        .or(ctx.deadline);
    let ctx = &Context {
        deadline,
        ..ctx.clone()
    };
    // The key is checked first, so that a caller without it learns nothing, not even
    // which routes exist.
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
    let path = request.uri().path().trim_end_matches('/');
    let Some((_, allowed, route)) = ROUTES.iter().find(|(suffix, _, _)| path.ends_with(suffix))
    else {
        return error_response(ApiError::new(
            ApiErrorCode::NotFound,
            format!("routes: {}", route_list()),
        ));
    };
    if request.method() != allowed {
        return error_response(ApiError::new(
            ApiErrorCode::MethodNotAllowed,
            format!("use {allowed} {path}"),
        ));
    }
    match route {
        Route::Broadcast => send::broadcast(request, ctx, config).await,
        Route::Count => match ctx.store.count_connections().await {
            Ok(count) => json_response(StatusCode::OK, &ConnectionCount { count }),
            Err(e) => {
                error!(error = %e, "count failed");
                error_response(internal_error())
            }
        },
        Route::Subscribe => manage::subscribe(request, ctx).await,
        Route::Unsubscribe => manage::unsubscribe(request, ctx).await,
        Route::Disconnect => manage::disconnect(request, ctx).await,
        Route::Presence => query::presence(request, ctx).await,
        Route::Online => query::online(request, ctx).await,
        Route::History => query::history(request, ctx).await,
    }
}

/// A body that did not parse: `curl -d` sends a form body by default, so say when the
/// content type is the likely cause instead of leaving the caller with a bare parser message.
fn with_content_type_hint(request: &Request, mut mistake: ApiError) -> ApiError {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if mistake.error == ApiErrorCode::InvalidJson && !content_type.contains("json") {
        mistake
            .details
            .push_str("; the body must be JSON, sent with content-type: application/json");
    }
    mistake
}

fn internal_error() -> ApiError {
    ApiError::new(
        ApiErrorCode::InternalError,
        "the store is unavailable; retry later",
    )
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

#[cfg(test)]
mod tests;
