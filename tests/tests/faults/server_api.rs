//! Calling the server API's handler as its Lambda does, for the fault cases of `/broadcast`
//! (`broadcast.rs`), of connection management (`manage.rs`) and of the reads (`queries.rs`).

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use wsbridge::config::{BroadcastConfig, FanoutConfig};
use wsbridge::handlers::broadcast;
use wsbridge::store::DynamoDbStore;
use wsbridge::test_support::{RecordingSender, Settings};

/// The server API's settings: the defaults, with a few posts in flight.
pub(super) fn settings() -> Settings {
    Settings {
        fanout: wsbridge::fanout::Fanout::new(FanoutConfig { concurrency: 4 }),
        ..Settings::default()
    }
}

/// Answers `request` as the server API's Lambda does, on `store` and `sender`.
pub(super) async fn handle(
    request: &Request,
    store: &DynamoDbStore,
    sender: &RecordingSender,
) -> Response<Body> {
    handle_in(request, store, sender, &settings()).await
}

/// `handle` with `settings`.
pub(super) async fn handle_in(
    request: &Request,
    store: &DynamoDbStore,
    sender: &RecordingSender,
    settings: &Settings,
) -> Response<Body> {
    broadcast::handle(
        request,
        &settings.context(store, sender),
        &BroadcastConfig::default(),
        &wsbridge::test_support::RecordingLauncher::new(),
    )
    .await
}

/// `GET path`, as a backend sends it.
pub(super) fn get(path: &str) -> Request {
    lambda_http::http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::Empty)
        .unwrap()
}

pub(super) fn request_to(method: Method, path: &str, body: Value) -> Request {
    lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(super) fn broadcast_request(body: Value) -> Request {
    request_to(Method::POST, "/broadcast", body)
}

pub(super) async fn call(
    store: &DynamoDbStore,
    sender: &RecordingSender,
    method: Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let request = request_to(method, path, body);
    let response = handle(&request, store, sender).await;
    let status = response.status().as_u16();
    (status, serde_json::from_slice(response.body()).unwrap())
}

/// Milliseconds since the Unix epoch, as Lambda gives a deadline.
pub(super) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub(super) fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n}=")).collect()
}
