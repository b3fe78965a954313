//! The broadcast route and what every route of the server API shares: routing, the API key.
use serde_json::{Value, json};

use lambda_http::RequestExt;
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};

use super::*;
use crate::auth::now_seconds;
use crate::channels::Channels;
use crate::clock::now_millis;
use crate::config::SessionConfig;
use crate::protocol::{ConnectionId, MAX_MESSAGE_BYTES};
use crate::sender::SendError;
use crate::store::Store;
use crate::store::{Connection, ConnectionStore, MemoryStore};
use crate::test_support::{
    RecordingLauncher, RecordingSender, Settings, connection, ids, store_with, subscribe_all,
    subscribers,
};

const API_KEY: &str = "backend-key-0123456789";

/// The server API with the default session limits and channel configuration.
pub(super) async fn call(
    request: &Request,
    store: &dyn Store,
    sender: &RecordingSender,
    config: &BroadcastConfig,
) -> Response<Body> {
    let settings = Settings::default();
    handle(
        request,
        &settings.context(store, sender),
        config,
        &RecordingLauncher::new(),
    )
    .await
}

fn open_config() -> BroadcastConfig {
    BroadcastConfig::default()
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
        let body = json_of(&call(&request, &store, &sender, &open_config()).await);
        assert_eq!(body["deadline_reached"], reached, "deadline {deadline}");
        assert_eq!(body["delivered"], 3, "deadline {deadline}");
    }
    // 100 ms ahead is inside the safety margin: nothing is sent here, everything goes to the
    // background, and the answer says so
    let sender = RecordingSender::new();
    let mut context = lambda_http::Context::default();
    context.deadline = now_ms + 100;
    let request = post_broadcast(&card_moved()).with_lambda_context(context);
    let response = call(&request, &store, &sender, &open_config()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = json_of(&response);
    assert_eq!(body["status"], "running");
    assert_eq!(body["deadline_reached"], false);
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
    let response = call(
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
    let response = call(
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
        let response = call(
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
        let response = call(
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
    let broadcast = call(
        &request(Method::POST, "/prod/broadcast", &card_moved().to_string()),
        &store,
        &sender,
        &open_config(),
    )
    .await;
    let count = call(
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
            let response = call(
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
    let response = call(
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
    crate::test_support::put(&store, &expired).await;

    // WHEN a backend asks how many are connected
    let response = call(
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
        let response = call(
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

// ---- connection management ----

fn post(path: &str, body: Value) -> Request {
    request(Method::POST, path, &body.to_string())
}

async fn manage(
    store: &MemoryStore,
    sender: &RecordingSender,
    channels: &Channels,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let settings = Settings {
        session: SessionConfig {
            max_topics_per_connection: 3,
            ..SessionConfig::default()
        },
        channels: channels.clone(),
        ..Settings::default()
    };
    let response = handle(
        &post(path, body),
        &settings.context(store, sender),
        &open_config(),
        &RecordingLauncher::new(),
    )
    .await;
    (response.status(), json_of(&response))
}

fn admin_is_server_only() -> Channels {
    Channels::parse(
        r#"{"namespaces":{"admin":{"subscribe":"server"},"closed":{"subscribe":"nobody"}}}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn a_backend_subscribes_named_connections_and_hears_which_were_not_there() {
    // GIVEN alice's and bob's connections, bob's already holding three topics (the limit)
    let store = board_store().await;
    subscribe_all(&store, &["c-bob"], "admin:1").await;
    subscribe_all(&store, &["c-bob"], "admin:2").await;
    let sender = RecordingSender::new();

    // WHEN a backend subscribes alice, bob and a connection that is gone to admin:alerts
    let (status, report) = manage(
        &store,
        &sender,
        &admin_is_server_only(),
        "/subscribe",
        json!({"topic": "admin:alerts", "connection_ids": ["c-alice", "c-bob", "c-gone"]}),
    )
    .await;

    // THEN alice holds it, bob is over his limit and unchanged, the gone one is named
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["connections"], json!(["c-alice"]));
    assert_eq!(report["not_connected"], json!(["c-gone"]));
    assert_eq!(report["failed"][0]["connection_id"], "c-bob");
    assert_eq!(report["failed"][0]["error"], "too_many_topics");
    assert_eq!(subscribers(&store, "admin:alerts").await, ids(&["c-alice"]));
    assert_eq!(sender.attempts(), 0);
}

#[tokio::test]
async fn a_closed_namespace_or_an_unknown_one_refuses_the_whole_subscribe() {
    // GIVEN connected clients, and a configuration with no default namespace
    let store = board_store().await;
    let sender = RecordingSender::new();

    for topics in [
        json!(["admin:ok", "closed:1"]),
        json!(["admin:ok", "other"]),
    ] {
        // WHEN a backend subscribes alice to an allowed topic and a refused one
        let (status, error) = manage(
            &store,
            &sender,
            &admin_is_server_only(),
            "/subscribe",
            json!({"topics": topics, "user_id": "alice"}),
        )
        .await;

        // THEN it is 403 naming the refused topic, and nothing was applied
        assert_eq!(status, StatusCode::FORBIDDEN, "{topics}");
        assert_eq!(error["error"], "forbidden");
        assert!(subscribers(&store, "admin:ok").await.is_empty());
    }
}

#[tokio::test]
async fn a_backend_unsubscribes_every_connection_of_a_user() {
    // GIVEN alice on two connections, both on board:1, bob on board:1 too
    let store = board_store().await;
    crate::test_support::register(&store, &[("c-alice-2", "alice")]).await;
    subscribe_all(&store, &["c-alice-2"], "board:1").await;

    // WHEN a backend unsubscribes alice from board:1
    let (status, report) = manage(
        &store,
        &RecordingSender::new(),
        &Channels::default(),
        "/unsubscribe",
        json!({"topics": ["board:1"], "user_id": "alice"}),
    )
    .await;

    // THEN both of hers are out, bob and carol stay
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["action"], "unsubscribed");
    assert_eq!(report["connections"], json!(["c-alice", "c-alice-2"]));
    assert_eq!(
        subscribers(&store, "board:1").await,
        ids(&["c-bob", "c-carol"])
    );
}

#[tokio::test]
async fn disconnect_closes_what_api_gateway_has_and_cleans_up_what_it_lost() {
    // GIVEN board:1's watchers; API Gateway already lost bob's connection (410) and cannot
    // close carol's right now (throttled)
    let store = board_store().await;
    let sender = RecordingSender::new()
        .failing("c-bob", SendError::Gone)
        .failing("c-carol", SendError::Throttled("429".into()));

    // WHEN a backend disconnects alice, bob, carol and an id that was never connected
    let (status, report) = manage(
        &store,
        &sender,
        &Channels::default(),
        "/disconnect",
        json!({"connection_ids": ["c-alice", "c-bob", "c-carol", "c-never"]}),
    )
    .await;

    // THEN alice was closed and bob found gone: both removed; carol's rows stay for a retry
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["disconnected"], json!(["c-alice", "c-bob"]));
    assert_eq!(report["not_connected"], json!(["c-never"]));
    assert_eq!(report["failed"][0]["connection_id"], "c-carol");
    let closed: Vec<ConnectionId> = sender
        .closed()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    assert_eq!(closed, ids(&["c-alice"]));
    assert_eq!(subscribers(&store, "board:1").await, ids(&["c-carol"]));
    assert!(
        store
            .get_connection(&ConnectionId::new("c-bob"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn management_requests_are_validated_like_broadcasts() {
    let store = board_store().await;
    let sender = RecordingSender::new();
    for (path, body, code) in [
        ("/subscribe", json!({"topic": "a"}), "missing_target"),
        ("/subscribe", json!({"user_id": "alice"}), "invalid_request"),
        (
            "/unsubscribe",
            json!({"topic": "a", "user_id": "alice", "connection_ids": ["x"]}),
            "multiple_targets",
        ),
        ("/disconnect", json!({"user": "alice"}), "invalid_request"),
        (
            "/disconnect",
            json!({"connection_ids": ["x".repeat(200)]}),
            "invalid_target",
        ),
    ] {
        let (status, error) =
            manage(&store, &sender, &Channels::default(), path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(error["error"], code, "{path} {body}");
    }
    assert_eq!(sender.attempts(), 0);
    assert!(sender.closed().is_empty());
}
