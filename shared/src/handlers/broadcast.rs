//! The broadcast HTTP API: `POST /broadcast` and `GET /connections/count`.

use std::time::Duration;

use bytes::Bytes;
use lambda_http::RequestExt;
use tokio::time::Instant;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::clock::now_millis;
use crate::config::BroadcastConfig;
use crate::fanout::{FanoutOptions, fan_out, metrics};
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
    match route {
        Route::Broadcast => broadcast(request, store, sender, config).await,
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
    request: &Request,
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    config: &BroadcastConfig,
) -> Response<Body> {
    let broadcast = match Broadcast::parse(request.body()) {
        Ok(broadcast) => broadcast,
        Err(mut mistake) => {
            // `curl -d` sends a form body by default; say so instead of leaving the caller
            // with a bare JSON parser message.
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
            return error_response(mistake);
        }
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
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::now_seconds;
    use crate::protocol::MAX_MESSAGE_BYTES;
    use crate::sender::SendError;
    use crate::store::{Connection, ConnectionStore, MemoryStore};
    use crate::test_support::{
        RecordingSender, connection, ids, store_with, subscribe_all, subscribers,
    };

    const API_KEY: &str = "backend-key-0123456789";

    fn open_config() -> BroadcastConfig {
        BroadcastConfig {
            concurrency: 4,
            ..BroadcastConfig::default()
        }
    }

    fn keyed_config() -> BroadcastConfig {
        BroadcastConfig {
            api_key: Some(API_KEY.to_owned()),
            ..open_config()
        }
    }

    fn request(method: Method, path: &str, body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap()
    }

    fn post_broadcast(body: &Value) -> Request {
        request(Method::POST, "/broadcast", &body.to_string())
    }

    fn json_of(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body()).expect("responses are JSON")
    }

    /// board:1 is watched by alice, bob and carol; dave is connected but watches nothing.
    async fn board_store() -> MemoryStore {
        let store = store_with(&[
            ("c-alice", "alice"),
            ("c-bob", "bob"),
            ("c-carol", "carol"),
            ("c-dave", "dave"),
        ])
        .await;
        subscribe_all(&store, &["c-alice", "c-bob", "c-carol"], "board:1").await;
        store
    }

    fn card_moved() -> Value {
        json!({"topic": "board:1", "event": "card.moved", "data": {"card": 7}})
    }

    #[tokio::test]
    async fn the_lambda_deadline_is_honoured_only_when_it_is_usable() {
        let store = board_store().await;
        let now_ms = u64::try_from(now_millis()).unwrap();
        // 0 (emulators) and a time already past are no deadline; a minute ahead is ample
        for (deadline, reached) in [
            (0, false),
            (now_ms - 1_000, false),
            (now_ms + 60_000, false),
        ] {
            let sender = RecordingSender::new();
            let mut context = lambda_http::Context::default();
            context.deadline = deadline;
            let request = post_broadcast(&card_moved()).with_lambda_context(context);
            let body = json_of(&handle(&request, &store, &sender, &open_config()).await);
            assert_eq!(body["deadline_reached"], reached, "deadline {deadline}");
            assert_eq!(body["delivered"], 3, "deadline {deadline}");
        }
        // 100 ms ahead is inside the safety margin: nothing is sent, and the answer says why
        let sender = RecordingSender::new();
        let mut context = lambda_http::Context::default();
        context.deadline = now_ms + 100;
        let request = post_broadcast(&card_moved()).with_lambda_context(context);
        let body = json_of(&handle(&request, &store, &sender, &open_config()).await);
        assert_eq!(body["deadline_reached"], true);
        assert_eq!(body["delivered"], 0);
        assert!(sender.posts().is_empty());
    }

    #[tokio::test]
    async fn a_topic_broadcast_answers_200_with_its_report() {
        // GIVEN board:1's watchers: bob's connection is gone, carol's posts fail
        let store = board_store().await;
        let sender = RecordingSender::new()
            .failing("c-bob", SendError::Gone)
            .failing("c-carol", SendError::Failed("403".to_owned()));

        // WHEN a backend broadcasts to board:1
        let response = handle(
            &post_broadcast(&card_moved()),
            &store,
            &sender,
            &open_config(),
        )
        .await;

        // THEN the report counts each outcome, and bob's connection is cleaned up
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = json_of(&response);
        assert_eq!(body["recipients"], 3);
        assert_eq!(body["delivered"], 1);
        assert_eq!(body["gone"], 1);
        assert_eq!(body["failed"], 1);
        assert!(!body["id"].as_str().unwrap().is_empty());
        assert_eq!(sender.delivered_to(), ids(&["c-alice"]));
        assert_eq!(
            subscribers(&store, "board:1").await,
            ids(&["c-alice", "c-carol"])
        );
    }

    #[tokio::test]
    async fn recipients_get_the_envelope_with_the_broadcast_id() {
        // GIVEN board:1's watchers
        let store = board_store().await;
        let sender = RecordingSender::new();

        // WHEN a backend broadcasts an event with data to board:1
        let before = now_seconds() as i64 * 1000;
        let response = handle(
            &post_broadcast(&card_moved()),
            &store,
            &sender,
            &open_config(),
        )
        .await;
        let after = (now_seconds() as i64 + 1) * 1000;

        // THEN every watcher got the same envelope, carrying the id the backend got back
        let id = json_of(&response)["id"].clone();
        let posts = sender.posts();
        assert_eq!(posts.len(), 3);
        for post in &posts {
            assert_eq!(post.payload, posts[0].payload);
        }
        let envelope: Value = serde_json::from_slice(&posts[0].payload).unwrap();
        assert_eq!(envelope["topic"], "board:1");
        assert_eq!(envelope["event"], "card.moved");
        assert_eq!(envelope["data"], json!({"card": 7}));
        assert_eq!(envelope["id"], id);
        let timestamp = envelope["timestamp"].as_i64().unwrap();
        assert!(
            (before..=after).contains(&timestamp),
            "timestamp {timestamp}"
        );
    }

    #[tokio::test]
    async fn an_unknown_path_is_404() {
        // GIVEN the broadcast API
        let store = board_store().await;
        let sender = RecordingSender::new();

        for path in ["/", "/broadcasts", "/prod/connections"] {
            // WHEN a path it does not serve is called
            let response = handle(
                &request(Method::POST, path, &card_moved().to_string()),
                &store,
                &sender,
                &open_config(),
            )
            .await;

            // THEN it is 404 with the routes listed, and nothing is sent
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(json_of(&response)["error"], "not_found", "{path}");
        }
        assert_eq!(sender.attempts(), 0);
    }

    #[tokio::test]
    async fn a_wrong_method_is_405() {
        // GIVEN the broadcast API
        let store = board_store().await;
        let sender = RecordingSender::new();

        for (method, path) in [
            (Method::GET, "/broadcast"),
            (Method::PUT, "/broadcast"),
            (Method::POST, "/connections/count"),
        ] {
            // WHEN a route is called with the other method
            let response = handle(
                &request(method.clone(), path, &card_moved().to_string()),
                &store,
                &sender,
                &open_config(),
            )
            .await;

            // THEN it is 405 and nothing is sent
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(json_of(&response)["error"], "method_not_allowed");
        }
        assert_eq!(sender.attempts(), 0);
    }

    #[tokio::test]
    async fn routes_under_a_named_stage_work_too() {
        // GIVEN the API deployed on a `prod` stage
        let store = board_store().await;
        let sender = RecordingSender::new();

        // WHEN both routes are called with the stage prefix (and a trailing slash)
        let broadcast = handle(
            &request(Method::POST, "/prod/broadcast", &card_moved().to_string()),
            &store,
            &sender,
            &open_config(),
        )
        .await;
        let count = handle(
            &request(Method::GET, "/prod/connections/count/", ""),
            &store,
            &sender,
            &open_config(),
        )
        .await;

        // THEN both are served
        assert_eq!(broadcast.status(), StatusCode::OK);
        assert_eq!(json_of(&broadcast)["delivered"], 3);
        assert_eq!(count.status(), StatusCode::OK);
        assert_eq!(json_of(&count), json!({"count": 4}));
    }

    #[tokio::test]
    async fn with_an_api_key_configured_only_the_right_key_gets_through() {
        // GIVEN the API protected by an API key
        let store = board_store().await;
        let sender = RecordingSender::new();
        let with_key = |key: Option<&str>, method: Method, path: &str| {
            let mut request = request(method, path, &card_moved().to_string());
            if let Some(key) = key {
                request
                    .headers_mut()
                    .insert(API_KEY_HEADER, key.parse().unwrap());
            }
            request
        };

        for (case, key) in [("no key", None), ("wrong key", Some("backend-key-01234"))] {
            for (method, path) in [
                (Method::POST, "/broadcast"),
                (Method::GET, "/connections/count"),
            ] {
                // WHEN a route is called without the key, or with a wrong one
                let response = handle(
                    &with_key(key, method.clone(), path),
                    &store,
                    &sender,
                    &keyed_config(),
                )
                .await;

                // THEN it is 401 and nothing is sent
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case} {path}");
                assert_eq!(json_of(&response)["error"], "unauthorized");
            }
        }
        assert_eq!(sender.attempts(), 0);

        // WHEN the right key is presented
        let response = handle(
            &with_key(Some(API_KEY), Method::POST, "/broadcast"),
            &store,
            &sender,
            &keyed_config(),
        )
        .await;

        // THEN the broadcast goes out
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(sender.delivered_to(), ids(&["c-alice", "c-bob", "c-carol"]));
    }

    #[tokio::test]
    async fn connection_count_counts_live_connections_only() {
        // GIVEN four live connections and one whose rows expired but were not yet removed
        let store = board_store().await;
        let expired = Connection {
            expires_at: now_seconds() - 1,
            ..connection("c-old", "erin")
        };
        store.put_connection(&expired).await.unwrap();

        // WHEN a backend asks how many are connected
        let response = handle(
            &request(Method::GET, "/connections/count", ""),
            &store,
            &RecordingSender::new(),
            &open_config(),
        )
        .await;

        // THEN the expired one is not counted
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_of(&response), json!({"count": 4}));
    }

    #[tokio::test]
    async fn invalid_requests_are_400_with_their_error_code_and_send_nothing() {
        // GIVEN connected clients
        let store = board_store().await;
        let sender = RecordingSender::new();
        let too_big = json!({"all": true, "message": "x".repeat(MAX_MESSAGE_BYTES)}).to_string();

        for (code, body) in [
            ("invalid_json", "{\"topic\": \"board:1\","),
            (
                "multiple_targets",
                r#"{"topic": "board:1", "user_id": "alice", "event": "e"}"#,
            ),
            ("payload_too_large", too_big.as_str()),
        ] {
            // WHEN a backend posts a broken broadcast
            let response = handle(
                &request(Method::POST, "/broadcast", body),
                &store,
                &sender,
                &open_config(),
            )
            .await;

            // THEN it is told what is wrong
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{code}");
            let error = json_of(&response);
            assert_eq!(error["error"], code);
            assert!(!error["details"].as_str().unwrap().is_empty(), "{code}");
        }
        // AND nobody received anything
        assert_eq!(sender.attempts(), 0);
    }
}
