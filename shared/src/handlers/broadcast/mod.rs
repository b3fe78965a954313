//! The server HTTP API, one Lambda for all its routes: `POST /broadcast`,
//! `GET /connections/count`, and connection management (`POST /subscribe`,
//! `POST /unsubscribe`, `POST /disconnect`).

mod manage;
mod send;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::error;

use crate::channels::Channels;
use crate::config::{BroadcastConfig, SessionConfig};
use crate::protocol::broadcast::{ApiError, ApiErrorCode, ConnectionCount};
use crate::sender::ConnectionSender;
use crate::store::Store;

/// Header that carries the API key when `BROADCAST_API_KEY` is set.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What the server API's routes need besides the store and the sender.
pub struct ServerApi<'a> {
    pub config: &'a BroadcastConfig,
    /// The per-connection topic limit, for server-side subscribes.
    pub session: &'a SessionConfig,
    /// Which namespaces a backend may subscribe connections to.
    pub channels: &'a Channels,
}

/// The routes, by path suffix (so `/prod/broadcast` on a named stage works as `/broadcast`
/// does on `$default`), with the one method each accepts.
#[derive(Clone, Copy)]
enum Route {
    Broadcast,
    Count,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

const ROUTES: [(&str, Method, Route); 5] = [
    ("/broadcast", Method::POST, Route::Broadcast),
    ("/connections/count", Method::GET, Route::Count),
    ("/subscribe", Method::POST, Route::Subscribe),
    ("/unsubscribe", Method::POST, Route::Unsubscribe),
    ("/disconnect", Method::POST, Route::Disconnect),
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

pub async fn handle(
    request: &Request,
    store: &dyn Store,
    sender: &dyn ConnectionSender,
    api: &ServerApi<'_>,
) -> Response<Body> {
    // The key is checked first, so that a caller without it learns nothing, not even
    // which routes exist.
    if let Some(expected) = &api.config.api_key {
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
        Route::Broadcast => send::broadcast(request, store, sender, api.config).await,
        Route::Count => match store.count_connections().await {
            Ok(count) => json_response(StatusCode::OK, &ConnectionCount { count }),
            Err(e) => {
                error!(error = %e, "count failed");
                error_response(internal_error())
            }
        },
        Route::Subscribe => manage::subscribe(request, store, api).await,
        Route::Unsubscribe => manage::unsubscribe(request, store, api).await,
        Route::Disconnect => manage::disconnect(request, store, sender).await,
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
