//! The server HTTP API, one Lambda for all its routes: `POST /broadcast` and
//! `GET /broadcasts/{id}`, `GET /connections/count`, connection management
//! (`POST /subscribe`, `POST /unsubscribe`, `POST /disconnect`), who is there
//! (`GET /presence`, `GET /online`) and what was said (`GET /history`). The same function
//! runs the parts of broadcasts sent in the background: its own asynchronous invocations.

mod background;
mod manage;
mod query;
mod send;

pub use background::{CONTINUE_MARGIN, RunError, RunOutcome, STALL_AFTER_MS, run_part, status_of};

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::error;

use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

use super::Context;
use crate::config::BroadcastConfig;
use crate::fanout::deadline_at;
use crate::protocol::broadcast::{ApiError, ApiErrorCode, ConnectionCount};
use crate::shards::{Shard, ShardLauncher};

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

/// Where a background broadcast's status is read: `GET /broadcasts/{id}`. Ids may hold `/`.
const STATUS_PREFIX: &str = "/broadcasts/";

/// Every route as API Gateway's HTTP API keys it (`POST /broadcast`): what the template
/// must route to this function.
pub fn route_keys() -> Vec<String> {
    ROUTES
        .iter()
        .map(|(path, method, _)| format!("{method} {path}"))
        .chain(std::iter::once(format!("GET {STATUS_PREFIX}{{id+}}")))
        .collect()
}

/// The broadcast id a status path names (percent-decoded, a trailing `/` kept), if it is
/// one: `/broadcasts/{id}` at the start of the path, or after a stage (`/prod/broadcasts/…`).
fn status_id(path: &str) -> Option<String> {
    let after_stage = path
        .strip_prefix('/')
        .and_then(|rest| rest.find('/').map(|at| &rest[at..]));
    let id = path
        .strip_prefix(STATUS_PREFIX)
        .or_else(|| after_stage.and_then(|rest| rest.strip_prefix(STATUS_PREFIX)))?;
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?;
    (!id.is_empty()).then(|| id.into_owned())
}

fn route_list() -> String {
    route_keys().join(", ")
}

/// Answers one request of the server API, or runs a part of a background broadcast when
/// the invocation is one of this function's own (`launcher` starts parts). In Lambda the
/// invocation's deadline rides in the request and bounds every fan-out; `config` says who
/// may call.
pub async fn handle(
    request: &Request,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Response<Body> {
    let deadline = request
        .lambda_context_ref()
        .and_then(|context| deadline_at(context.deadline))
        .or(ctx.deadline);
    let ctx = &Context {
        deadline,
        ..ctx.clone()
    };
    // Not an HTTP request: an asynchronous invocation, which only a principal allowed to
    // invoke the function can make (API Gateway's requests always carry their context).
    if let Some(RequestContext::PassThrough) = request.request_context_ref() {
        return shard(request, ctx, config, launcher).await;
    }
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
    // Before trimming: an id may end in `/`.
    if let Some(id) = status_id(request.uri().path()) {
        let path = request.uri().path();
        if request.method() != Method::GET {
            return error_response(ApiError::new(
                ApiErrorCode::MethodNotAllowed,
                format!("use GET {path}"),
            ));
        }
        return background::status(&id, ctx, launcher).await;
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
        Route::Broadcast => send::broadcast(request, ctx, config, launcher).await,
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

/// What the Lambda runtime should report for an answer: a run of the function's own
/// asynchronous invocation (a part) that failed must fail the invocation, so that Lambda
/// retries it; lambda_http would hand back a 500 as a successful result.
pub fn invocation_result(
    request: &Request,
    response: Response<Body>,
) -> Result<Response<Body>, String> {
    let own = matches!(
        request.request_context_ref(),
        Some(RequestContext::PassThrough)
    );
    if own && response.status().is_server_error() {
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        return Err(format!("part run failed ({}): {body}", response.status()));
    }
    Ok(response)
}

/// Runs the part an asynchronous invocation names. A failed run answers 500, which fails
/// the invocation, so that Lambda retries it.
async fn shard(
    request: &Request,
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &dyn ShardLauncher,
) -> Response<Body> {
    let shard = match Shard::from_event(request.body()) {
        Some(Ok(shard)) => shard,
        Some(Err(e)) => {
            error!(error = %e, "malformed shard event");
            return error_response(ApiError::new(ApiErrorCode::InvalidRequest, e.to_string()));
        }
        None => {
            error!("an invocation that is neither an HTTP request nor a shard event");
            return error_response(ApiError::new(
                ApiErrorCode::InvalidRequest,
                "not an HTTP API request, nor a broadcast part",
            ));
        }
    };
    // Lambda retries a failed invocation with its request id: the retry takes the part
    // back at once instead of waiting for the lease to run out.
    let runner = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match run_part(&shard, &runner, ctx, config, launcher).await {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "outcome": format!("{outcome:?}") }),
        ),
        Err(e) => {
            error!(broadcast_id = %shard.broadcast_id, part = shard.part, error = %e, "part run failed");
            error_response(internal_error())
        }
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
mod background_tests;
#[cfg(test)]
mod tests;
