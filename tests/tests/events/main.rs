//! Every sample event in `events/` run through the real handler it is written for, on a
//! `MemoryStore`, with the exact response and the state it leaves asserted. The samples are
//! what `sam local invoke -e` feeds the functions, so a sample that drifts from what the
//! handlers accept fails here first.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use futures::TryStreamExt;
use jsonwebtoken::errors::ErrorKind;
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use wsbridge::auth::{AuthError, TokenVerifier, now_seconds, token_of};
use wsbridge::channels::{Channels, TopicPattern};
use wsbridge::clock::now_millis;
use wsbridge::config::{AuthConfig, BroadcastConfig, SessionConfig};
use wsbridge::dev::Claims;
use wsbridge::handlers::{broadcast, connect, default, disconnect};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::Audience;
use wsbridge::store::{Connection, ConnectionStore, MemoryStore, RecipientStore};
use wsbridge::test_support::{RecordingSender, Settings};
use wsbridge_tests::{event, event_path};

/// The samples of rooms: publish, presence, who is online.
mod rooms;

/// The samples of history: a history read on the socket and from a backend, a recovering
/// subscribe.
mod history;

/// The samples of a broadcast sent in the background: accepted, one part run, its status.
mod background;

// ---- the files ----

const CONNECT: &str = "connect.json";
const CONNECT_BEARER: &str = "connect-bearer.json";
const CONNECT_BAD_TOKEN: &str = "connect-bad-token.json";
const CONNECT_NO_TOKEN: &str = "connect-no-token.json";
const DISCONNECT: &str = "disconnect.json";
const DEFAULT_SUBSCRIBE: &str = "default-subscribe.json";
const DEFAULT_SUBSCRIBE_FORBIDDEN: &str = "default-subscribe-forbidden.json";
const DEFAULT_UNSUBSCRIBE: &str = "default-unsubscribe.json";
const DEFAULT_PING: &str = "default-ping.json";
const DEFAULT_WHOAMI: &str = "default-whoami.json";
const DEFAULT_INVALID_JSON: &str = "default-invalid-json.json";
const DEFAULT_UNKNOWN_ACTION: &str = "default-unknown-action.json";
const BROADCAST_TOPIC: &str = "broadcast-topic.json";
const BROADCAST_USER: &str = "broadcast-user.json";
const BROADCAST_INVALID_BODY: &str = "broadcast-invalid-body.json";
const CONNECTIONS_COUNT: &str = "connections-count.json";
const BROADCAST_SUBSCRIBE: &str = "broadcast-subscribe.json";
const BROADCAST_UNSUBSCRIBE: &str = "broadcast-unsubscribe.json";
const BROADCAST_DISCONNECT: &str = "broadcast-disconnect.json";
const DEFAULT_PUBLISH: &str = "default-publish.json";
const DEFAULT_PRESENCE: &str = "default-presence.json";
const BROADCAST_PRESENCE: &str = "broadcast-presence.json";
const BROADCAST_ONLINE: &str = "broadcast-online.json";
const DEFAULT_HISTORY: &str = "default-history.json";
const DEFAULT_SUBSCRIBE_SINCE: &str = "default-subscribe-since.json";
const BROADCAST_HISTORY: &str = "broadcast-history.json";
const BROADCAST_ASYNC: &str = "broadcast-async.json";
const BROADCAST_STATUS: &str = "broadcast-status.json";
const BROADCAST_SHARD: &str = "broadcast-shard.json";

/// API Gateway WebSocket API events, for the `$connect`, `$disconnect` and `$default` functions.
const WEBSOCKET_EVENTS: &[&str] = &[
    CONNECT,
    CONNECT_BEARER,
    CONNECT_BAD_TOKEN,
    CONNECT_NO_TOKEN,
    DISCONNECT,
    DEFAULT_SUBSCRIBE,
    DEFAULT_SUBSCRIBE_FORBIDDEN,
    DEFAULT_UNSUBSCRIBE,
    DEFAULT_PING,
    DEFAULT_WHOAMI,
    DEFAULT_INVALID_JSON,
    DEFAULT_UNKNOWN_ACTION,
    DEFAULT_PUBLISH,
    DEFAULT_PRESENCE,
    DEFAULT_HISTORY,
    DEFAULT_SUBSCRIBE_SINCE,
];

/// HTTP API payload format 2.0 events, for the broadcast function.
const HTTP_EVENTS: &[&str] = &[
    BROADCAST_TOPIC,
    BROADCAST_USER,
    BROADCAST_INVALID_BODY,
    CONNECTIONS_COUNT,
    BROADCAST_SUBSCRIBE,
    BROADCAST_UNSUBSCRIBE,
    BROADCAST_DISCONNECT,
    BROADCAST_PRESENCE,
    BROADCAST_ONLINE,
    BROADCAST_HISTORY,
    BROADCAST_ASYNC,
    BROADCAST_STATUS,
];

/// The broadcast function's own asynchronous invocations: a part of a background broadcast
/// to run, which lambda_http passes through as it is.
const SHARD_EVENTS: &[&str] = &[BROADCAST_SHARD];

/// JSON files in `events/` that are not events: `sam local invoke --env-vars` input.
const NOT_EVENTS: &[&str] = &["env.json"];

// ---- what the WebSocket events say ----

/// The one connection every WebSocket sample belongs to: connect, subscribe, …, disconnect.
const CONNECTION_ID: &str = "L0SM9cOFvHcCIhw=";
/// `connectedAt` of that connection, in every WebSocket sample.
const CONNECTED_AT: i64 = 1_748_855_730_412;
/// `https://{domainName}/{stage}` of the samples: where PostToConnection reaches them.
const ENDPOINT: &str = "https://abc123def4.execute-api.eu-west-1.amazonaws.com/prod";
/// The sample tokens' claims: alice, valid until 2100-01-01.
const TOKEN_SUB: &str = "alice";
const TOKEN_EXP: u64 = 4_102_444_800;

// ---- connect ----

#[tokio::test]
async fn connect_registers_alice_with_the_token_from_the_query_string() {
    // GIVEN an empty store
    let store = MemoryStore::new();
    let before = now_seconds();

    // WHEN the browser's $connect arrives with ?token=
    let response = run_connect(&store, &ws_event(CONNECT)).await;

    // THEN the handshake is accepted and the connection is alice's, reachable at the
    // event's own domain and stage, expiring one connection TTL from now
    assert_eq!(response.status_code, 200);
    assert_eq!(response.body, None);
    let connection = stored_connection(&store, CONNECTION_ID).await;
    let ttl = SessionConfig::default().connection_ttl.as_secs();
    assert!(
        (before + ttl..=now_seconds() + ttl).contains(&connection.expires_at),
        "expires_at {} is not now + {ttl}s",
        connection.expires_at
    );
    assert_eq!(
        connection,
        Connection {
            id: ConnectionId::new(CONNECTION_ID),
            user_id: UserId::new(TOKEN_SUB),
            connected_at: CONNECTED_AT,
            endpoint: ENDPOINT.to_owned(),
            expires_at: connection.expires_at,
            grants: Default::default(),
        }
    );
    assert_eq!(store.count_connections().await.unwrap(), 1);
}

#[tokio::test]
async fn connect_bearer_registers_alice_with_the_token_from_the_authorization_header() {
    // GIVEN a $connect with no query string at all, only Authorization: Bearer
    let request = ws_event(CONNECT_BEARER);
    assert_eq!(request.query_string_parameters.first("token"), None);
    assert!(request.headers.contains_key(header::AUTHORIZATION));
    let store = MemoryStore::new();

    // WHEN it is handled
    let response = run_connect(&store, &request).await;

    // THEN alice is registered from the header's token
    assert_eq!(response.status_code, 200);
    assert_eq!(response.body, None);
    let connection = stored_connection(&store, CONNECTION_ID).await;
    assert_eq!(connection.user_id, UserId::new(TOKEN_SUB));
    assert_eq!(connection.endpoint, ENDPOINT);
}

#[tokio::test]
async fn connect_bad_token_is_refused_and_registers_nothing() {
    // GIVEN an empty store
    let store = MemoryStore::new();

    // WHEN a $connect arrives with a token signed by another secret
    let response = run_connect(&store, &ws_event(CONNECT_BAD_TOKEN)).await;

    // THEN the handshake fails with a bare 401 and nothing is stored
    assert_eq!(response.status_code, 401);
    assert_eq!(response.body, None);
    assert_eq!(connection_of(&store, CONNECTION_ID).await, None);
    assert_eq!(store.count_connections().await.unwrap(), 0);
}

#[tokio::test]
async fn connect_no_token_is_refused_and_registers_nothing() {
    // GIVEN a $connect carrying no token anywhere
    let request = ws_event(CONNECT_NO_TOKEN);
    assert_eq!(token_of(&request), None);
    let store = MemoryStore::new();

    // WHEN it is handled
    let response = run_connect(&store, &request).await;

    // THEN the handshake fails with a bare 401 and nothing is stored
    assert_eq!(response.status_code, 401);
    assert_eq!(response.body, None);
    assert_eq!(connection_of(&store, CONNECTION_ID).await, None);
    assert_eq!(store.count_connections().await.unwrap(), 0);
}

#[tokio::test]
async fn sample_tokens_verify_with_the_sam_local_secret_and_only_with_it() {
    let verifier = verifier();
    let alice = Claims {
        sub: TOKEN_SUB.to_owned(),
        exp: TOKEN_EXP,
        nbf: None,
        iss: None,
        aud: None,
    };

    // The good token: signed with SAM_LOCAL_SECRET, alice until 2100, in both places a
    // client puts it.
    let good = token_in(CONNECT);
    assert_eq!(
        verifier.verify(&good).await.unwrap().user_id,
        UserId::new(TOKEN_SUB)
    );
    assert_eq!(unverified_claims(&good), alice);
    assert_eq!(token_in(CONNECT_BEARER), good);

    // The bad token carries the very same claims, so its signature is the only thing wrong.
    let bad = token_in(CONNECT_BAD_TOKEN);
    assert_eq!(unverified_claims(&bad), alice);
    match verifier.verify(&bad).await {
        Err(AuthError::Invalid(e)) => assert!(
            matches!(e.kind(), ErrorKind::InvalidSignature),
            "{CONNECT_BAD_TOKEN}: {e}"
        ),
        other => panic!("{CONNECT_BAD_TOKEN}: expected an invalid signature, got {other:?}"),
    }
}

// ---- $default ----

#[tokio::test]
async fn default_subscribe_subscribes_the_connection_to_both_topics() {
    // GIVEN alice's connection, registered by connect.json
    let store = connected_store().await;

    // WHEN she subscribes to list:123 and board:7
    let response = run_default(&store, DEFAULT_SUBSCRIBE).await;

    // THEN the reply names both topics and a broadcast to either finds her connection
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({"action": "subscribed", "topics": ["list:123", "board:7"]})
    );
    assert_eq!(
        topic_recipients(&store, "list:123").await,
        ids(&[CONNECTION_ID])
    );
    assert_eq!(
        topic_recipients(&store, "board:7").await,
        ids(&[CONNECTION_ID])
    );
}

#[tokio::test]
async fn default_subscribe_from_an_unregistered_connection_is_refused() {
    // GIVEN a store that never saw the connection's $connect (or saw its $disconnect)
    let store = MemoryStore::new();

    // WHEN the subscribe frame arrives
    let response = run_default(&store, DEFAULT_SUBSCRIBE).await;

    // THEN the client is told to reconnect, and no subscription appears
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({
            "error": "not_connected",
            "details": "this connection is no longer registered; reconnect"
        })
    );
    assert_eq!(topic_recipients(&store, "list:123").await, ids(&[]));
}

#[tokio::test]
async fn default_unsubscribe_drops_board_7_and_keeps_list_123() {
    // GIVEN alice's connection subscribed to list:123 and board:7
    let store = subscribed_store().await;

    // WHEN she unsubscribes from board:7
    let response = run_default(&store, DEFAULT_UNSUBSCRIBE).await;

    // THEN the reply names board:7, which no longer reaches her, while list:123 still does
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({"action": "unsubscribed", "topics": ["board:7"]})
    );
    assert_eq!(topic_recipients(&store, "board:7").await, ids(&[]));
    assert_eq!(
        topic_recipients(&store, "list:123").await,
        ids(&[CONNECTION_ID])
    );
}

#[tokio::test]
async fn default_ping_answers_pong() {
    // GIVEN alice's connection
    let store = connected_store().await;

    // WHEN she pings
    let response = run_default(&store, DEFAULT_PING).await;

    // THEN the reply is a pong
    assert_eq!(response.status_code, 200);
    assert_eq!(ws_json(&response), json!({"action": "pong"}));
}

#[tokio::test]
async fn default_whoami_names_the_connection_and_its_user() {
    // GIVEN alice's connection
    let store = connected_store().await;

    // WHEN she asks who she is
    let response = run_default(&store, DEFAULT_WHOAMI).await;

    // THEN the reply carries the connection id and the token's subject
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({"action": "whoami", "connection_id": CONNECTION_ID, "user_id": TOKEN_SUB})
    );
}

#[tokio::test]
async fn default_invalid_json_is_answered_with_an_invalid_json_frame() {
    // GIVEN alice's connection, subscribed to nothing
    let store = connected_store().await;

    // WHEN a subscribe frame cut off mid-array arrives
    let response = run_default(&store, DEFAULT_INVALID_JSON).await;

    // THEN the error frame says where the JSON broke, and nothing was subscribed
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({
            "error": "invalid_json",
            "details": "EOF while parsing a list at line 1 column 42"
        })
    );
    assert_eq!(topic_recipients(&store, "list:123").await, ids(&[]));
}

#[tokio::test]
async fn default_unknown_action_lists_the_supported_actions() {
    // GIVEN alice's connection, subscribed to nothing
    let store = connected_store().await;

    // WHEN she sends an action the protocol does not offer
    let response = run_default(&store, DEFAULT_UNKNOWN_ACTION).await;

    // THEN the error frame names the action and the supported ones, and nothing changed
    assert_eq!(response.status_code, 200);
    assert_eq!(
        ws_json(&response),
        json!({
            "error": "unknown_action",
            "details": "unknown action \"shout\"; supported: subscribe, unsubscribe, publish, presence, history, ping, whoami"
        })
    );
    assert_eq!(topic_recipients(&store, "list:123").await, ids(&[]));
}

// ---- $disconnect ----

#[tokio::test]
async fn disconnect_forgets_the_connection_and_its_subscriptions() {
    // GIVEN alice's connection subscribed to list:123 and board:7
    let store = subscribed_store().await;

    // WHEN the $disconnect arrives
    let settings = Settings::default();
    let sender = RecordingSender::new();
    let response =
        disconnect::handle(&ws_event(DISCONNECT), &settings.context(&store, &sender)).await;

    // THEN it is acknowledged, the connection is gone, and no topic reaches it any more
    assert_eq!(response.status_code, 200);
    assert_eq!(response.body, None);
    assert_eq!(connection_of(&store, CONNECTION_ID).await, None);
    assert_eq!(topic_recipients(&store, "list:123").await, ids(&[]));
    assert_eq!(topic_recipients(&store, "board:7").await, ids(&[]));
    assert_eq!(store.count_connections().await.unwrap(), 0);
}

// ---- broadcast HTTP API ----

/// Bob's browser tab, also on list 123.
const BOB_ON_LIST: &str = "L0SO1dN0vHcCJBQ=";
/// Carol's tab, on board 7 only.
const CAROL_ON_BOARD: &str = "L0SPJf4xvHcCGnA=";
/// Alice's phone: her second connection.
const ALICE_PHONE: &str = "L0SQ8eTmvHcCHOg=";

#[tokio::test]
async fn broadcast_topic_reaches_the_subscribers_except_the_excluded_connection() {
    // GIVEN alice (the events' connection, the one the broadcast excludes) and bob on
    // list:123, and carol on board:7 only
    let store = subscribed_store().await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    seed(&store, CAROL_ON_BOARD, "carol", &["board:7"]).await;
    assert_eq!(
        topic_recipients(&store, "list:123").await,
        ids(&[CONNECTION_ID, BOB_ON_LIST])
    );
    let sender = RecordingSender::new();

    // WHEN the app backend broadcasts alice's edit to list:123
    let before = now_millis();
    let response = run_broadcast(&store, &sender, &http_event(BROADCAST_TOPIC)).await;
    let after = now_millis();

    // THEN only bob gets it: alice is excluded, carol is on another topic
    assert_eq!(response.status(), StatusCode::OK);
    let report = http_json(&response);
    let id = report["id"]
        .as_str()
        .expect("the response has an id")
        .to_owned();
    assert!(!id.is_empty());
    assert_eq!(
        report,
        json!({"id": id, "status": "done", "recipients": 1, "delivered": 1, "gone": 0, "failed": 0, "retries": 0, "deadline_reached": false, "store_failed": false})
    );
    let sent: Vec<(ConnectionId, Vec<u8>)> = sender
        .posts()
        .into_iter()
        .map(|post| (post.connection_id, post.payload))
        .collect();
    assert_eq!(
        sent.iter().map(|(to, _)| to.clone()).collect::<Vec<_>>(),
        vec![ConnectionId::new(BOB_ON_LIST)]
    );
    // AND bob received the envelope, carrying the broadcast's id
    let envelope: Value = serde_json::from_slice(&sent[0].1).expect("the payload is JSON");
    let timestamp = envelope["timestamp"].as_i64().expect("a timestamp in ms");
    assert!(
        (before..=after).contains(&timestamp),
        "timestamp {timestamp}"
    );
    assert_eq!(
        envelope,
        json!({
            "topic": "list:123",
            "event": "item.updated",
            "data": {
                "list_id": "123",
                "item": {"id": "item-42", "title": "Buy oat milk", "done": true}
            },
            "id": id,
            "timestamp": timestamp
        })
    );
}

#[tokio::test]
async fn broadcast_user_reaches_every_connection_of_alice_and_none_of_bob() {
    // GIVEN alice on two connections (browser and phone) and bob on one
    let store = connected_store().await;
    seed(&store, ALICE_PHONE, TOKEN_SUB, &[]).await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    let sender = RecordingSender::new();

    // WHEN the app backend notifies alice
    let before = now_millis();
    let response = run_broadcast(&store, &sender, &http_event(BROADCAST_USER)).await;
    let after = now_millis();

    // THEN both of alice's connections get it, bob's does not
    assert_eq!(response.status(), StatusCode::OK);
    let report = http_json(&response);
    let id = report["id"]
        .as_str()
        .expect("the response has an id")
        .to_owned();
    assert_eq!(
        report,
        json!({"id": id, "status": "done", "recipients": 2, "delivered": 2, "gone": 0, "failed": 0, "retries": 0, "deadline_reached": false, "store_failed": false})
    );
    let sent: Vec<(ConnectionId, Vec<u8>)> = sender
        .posts()
        .into_iter()
        .map(|post| (post.connection_id, post.payload))
        .collect();
    assert_eq!(
        sent.iter()
            .map(|(to, _)| to.clone())
            .collect::<BTreeSet<_>>(),
        ids(&[CONNECTION_ID, ALICE_PHONE])
    );
    // AND the envelope has no topic, since the target is a user
    for (to, payload) in &sent {
        let envelope: Value = serde_json::from_slice(payload).expect("the payload is JSON");
        let timestamp = envelope["timestamp"].as_i64().expect("a timestamp in ms");
        assert!(
            (before..=after).contains(&timestamp),
            "timestamp {timestamp}"
        );
        assert_eq!(
            envelope,
            json!({
                "event": "notification.created",
                "data": {"id": "notif-9", "text": "Bob shared board 7 with you"},
                "id": id,
                "timestamp": timestamp
            }),
            "payload sent to {to}"
        );
    }
}

#[tokio::test]
async fn broadcast_invalid_body_is_refused_as_invalid_json_and_sends_nothing() {
    // GIVEN subscribers on list:123, the topic the form-encoded body names
    let store = subscribed_store().await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    let sender = RecordingSender::new();

    // WHEN a backend posts the broadcast form-encoded (curl -d without a JSON body)
    let response = run_broadcast(&store, &sender, &http_event(BROADCAST_INVALID_BODY)).await;

    // THEN it is a 400 invalid_json that points at the content type, and nobody was sent
    // anything
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        http_json(&response),
        json!({
            "error": "invalid_json",
            "details": "expected ident at line 1 column 2; \
                        the body must be JSON, sent with content-type: application/json"
        })
    );
    assert!(sender.posts().is_empty());
}

#[tokio::test]
async fn connections_count_returns_the_live_connections() {
    // GIVEN alice's two connections, bob's, and one whose rows expired but are not yet deleted
    let store = connected_store().await;
    seed(&store, ALICE_PHONE, TOKEN_SUB, &[]).await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    let expired = Connection {
        expires_at: now_seconds() - 1,
        ..connection(CAROL_ON_BOARD, "carol")
    };
    wsbridge::test_support::put(&store, &expired).await;

    // WHEN the count is asked for
    let response = run_broadcast(
        &store,
        &RecordingSender::new(),
        &http_event(CONNECTIONS_COUNT),
    )
    .await;

    // THEN it is the three live connections
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(http_json(&response), json!({"count": 3}));
}

// ---- the files themselves ----

#[tokio::test]
async fn connect_is_refused_with_429_when_alice_already_holds_the_limit() {
    // GIVEN alice already holds the default limit of connections
    let store = MemoryStore::new();
    let limit = SessionConfig::default().connection_limit.per_user;
    for n in 0..limit {
        seed(&store, &format!("alice-{n}="), TOKEN_SUB, &[]).await;
    }

    // WHEN connect.json arrives for one more
    let response = run_connect(&store, &ws_event(CONNECT)).await;

    // THEN the handshake is refused with 429 and the connection is not registered
    assert_eq!(response.status_code, 429);
    assert_eq!(connection_of(&store, CONNECTION_ID).await, None);
    assert_eq!(store.count_connections().await.unwrap(), limit as u64);
}

#[tokio::test]
async fn default_subscribe_forbidden_is_refused_whole_because_user_bob_is_not_alice_s() {
    // GIVEN alice's connection under the built-in policy
    let store = connected_store().await;

    // WHEN she asks for list:123 and bob's private user:bob in one frame labelled "s-1"
    let response = run_default(&store, DEFAULT_SUBSCRIBE_FORBIDDEN).await;

    // THEN the frame is refused, naming the topic and the rule, under the frame's ref, and
    // she holds neither
    assert_eq!(response.status_code, 200);
    let reply = ws_json(&response);
    assert_eq!(reply["error"], "forbidden");
    assert_eq!(reply["ref"], "s-1");
    let details = reply["details"].as_str().unwrap();
    assert!(
        details.contains("\"user:bob\"") && details.contains("owner-only"),
        "{details}"
    );
    assert_eq!(topic_recipients(&store, "list:123").await, ids(&[]));
    assert_eq!(topic_recipients(&store, "user:bob").await, ids(&[]));
}

/// The notification feed of `examples/channels/feed.json`: `admin:` is server-only.
fn feed() -> Channels {
    wsbridge_tests::example_channels("feed")
}

#[tokio::test]
async fn broadcast_subscribe_puts_both_of_alice_s_connections_in_a_server_only_topic() {
    // GIVEN alice on two connections, bob on one, under the feed configuration
    let store = connected_store().await;
    seed(&store, ALICE_PHONE, TOKEN_SUB, &[]).await;
    seed(&store, BOB_ON_LIST, "bob", &[]).await;
    let sender = RecordingSender::new();

    // WHEN the backend subscribes alice to admin:alerts
    let response =
        run_broadcast_with(&store, &sender, &http_event(BROADCAST_SUBSCRIBE), &feed()).await;

    // THEN both of her connections hold it, bob's does not, and the report says so
    assert_eq!(response.status(), StatusCode::OK);
    let mut both = vec![CONNECTION_ID, ALICE_PHONE];
    both.sort();
    assert_eq!(
        http_json(&response),
        json!({"action": "subscribed", "topics": ["admin:alerts"], "connections": both, "not_connected": [], "failed": []})
    );
    assert_eq!(
        topic_recipients(&store, "admin:alerts").await,
        ids(&[CONNECTION_ID, ALICE_PHONE])
    );
}

#[tokio::test]
async fn broadcast_unsubscribe_takes_board_7_from_the_named_connection() {
    // GIVEN alice's connection on list:123 and board:7
    let store = subscribed_store().await;
    let sender = RecordingSender::new();

    // WHEN the backend unsubscribes it from board:7
    let response = run_broadcast(&store, &sender, &http_event(BROADCAST_UNSUBSCRIBE)).await;

    // THEN board:7 no longer reaches it, list:123 still does
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        http_json(&response),
        json!({"action": "unsubscribed", "topics": ["board:7"], "connections": [CONNECTION_ID], "not_connected": [], "failed": []})
    );
    assert_eq!(topic_recipients(&store, "board:7").await, ids(&[]));
    assert_eq!(
        topic_recipients(&store, "list:123").await,
        ids(&[CONNECTION_ID])
    );
}

#[tokio::test]
async fn broadcast_disconnect_closes_every_connection_of_alice_and_removes_their_rows() {
    // GIVEN alice on two connections (one subscribed), bob on one
    let store = subscribed_store().await;
    seed(&store, ALICE_PHONE, TOKEN_SUB, &[]).await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    let sender = RecordingSender::new();

    // WHEN the backend disconnects alice
    let response = run_broadcast(&store, &sender, &http_event(BROADCAST_DISCONNECT)).await;

    // THEN API Gateway is asked to close both, at their endpoint, and their rows are gone
    assert_eq!(response.status(), StatusCode::OK);
    let mut both = vec![CONNECTION_ID, ALICE_PHONE];
    both.sort();
    assert_eq!(
        http_json(&response),
        json!({"disconnected": both, "not_connected": [], "failed": []})
    );
    let closed: BTreeSet<ConnectionId> = sender
        .closed()
        .into_iter()
        .inspect(|r| assert_eq!(r.endpoint, ENDPOINT))
        .map(|r| r.connection_id)
        .collect();
    assert_eq!(closed, ids(&[CONNECTION_ID, ALICE_PHONE]));
    assert_eq!(connection_of(&store, CONNECTION_ID).await, None);
    assert_eq!(connection_of(&store, ALICE_PHONE).await, None);
    assert_eq!(
        topic_recipients(&store, "list:123").await,
        ids(&[BOB_ON_LIST])
    );
}

#[test]
fn websocket_events_tell_the_story_of_one_connection() {
    let mut request_ids = BTreeSet::new();
    let mut last_before_disconnect = 0;
    for name in WEBSOCKET_EVENTS {
        let request = ws_event(name);
        let context = &request.request_context;
        let route = context.route_key.as_deref();
        let expected_type = match route {
            Some("$connect") => "CONNECT",
            Some("$disconnect") => "DISCONNECT",
            Some("$default") => "MESSAGE",
            other => panic!("{name}: unexpected routeKey {other:?}"),
        };
        assert_eq!(context.event_type.as_deref(), Some(expected_type), "{name}");
        assert_eq!(
            context.connection_id.as_deref(),
            Some(CONNECTION_ID),
            "{name}"
        );
        assert_eq!(context.connected_at, CONNECTED_AT, "{name}");
        assert!(context.request_time_epoch >= CONNECTED_AT, "{name}");
        assert_eq!(context.apiid.as_deref(), Some("abc123def4"), "{name}");
        assert_eq!(
            context.domain_name.as_deref(),
            Some("abc123def4.execute-api.eu-west-1.amazonaws.com"),
            "{name}"
        );
        assert_eq!(context.stage.as_deref(), Some("prod"), "{name}");
        assert_eq!(context.message_direction.as_deref(), Some("IN"), "{name}");
        assert!(context.request_time.is_some(), "{name}: requestTime");
        assert!(context.identity.source_ip.is_some(), "{name}: sourceIp");
        assert!(context.identity.user_agent.is_some(), "{name}: userAgent");
        assert_eq!(
            context.request_id, context.extended_request_id,
            "{name}: API Gateway gives WebSocket events one id for both"
        );
        assert!(
            request_ids.insert(context.request_id.clone()),
            "{name}: requestId {:?} is used twice",
            context.request_id
        );
        assert!(!request.is_base64_encoded, "{name}");
        match expected_type {
            "CONNECT" => {
                for required in ["host", "sec-websocket-key", "sec-websocket-version"] {
                    assert!(request.headers.contains_key(required), "{name}: {required}");
                }
                assert_eq!(context.request_time_epoch, CONNECTED_AT, "{name}");
            }
            "MESSAGE" => {
                assert!(context.message_id.is_some(), "{name}: messageId");
                assert!(request.body.is_some(), "{name}: body");
            }
            _ => {
                assert!(context.disconnect_status_code.is_some(), "{name}");
                assert!(context.disconnect_reason.is_some(), "{name}");
            }
        }
        if expected_type != "DISCONNECT" {
            last_before_disconnect = last_before_disconnect.max(context.request_time_epoch);
        }
    }
    let disconnected_at = ws_event(DISCONNECT).request_context.request_time_epoch;
    assert!(
        disconnected_at > last_before_disconnect,
        "{DISCONNECT} must come after every other event of the connection"
    );
}

#[test]
fn http_events_are_http_api_payload_format_2_0() {
    for name in HTTP_EVENTS {
        let raw: Value = serde_json::from_str(&load(name)).unwrap();
        let request = http_event(name);
        let method = raw["requestContext"]["http"]["method"].as_str().unwrap();
        let path = raw["rawPath"].as_str().unwrap();
        let route = raw["routeKey"].as_str().unwrap();
        assert_eq!(raw["version"], "2.0", "{name}");
        assert_eq!(raw["requestContext"]["routeKey"], route, "{name}");
        // The route the request matched, and what its path parameters took from the path.
        let (route_method, route_path) = route.split_once(' ').unwrap();
        assert_eq!(route_method, method, "{name}");
        let parameters = path_parameters(route_path, path)
            .unwrap_or_else(|| panic!("{name}: {path} does not match route {route}"));
        let given: BTreeMap<String, String> =
            serde_json::from_value(raw.get("pathParameters").cloned().unwrap_or(json!({})))
                .unwrap();
        assert_eq!(given, parameters, "{name}: pathParameters");
        assert_eq!(raw["requestContext"]["http"]["path"], path, "{name}");
        assert_eq!(raw["requestContext"]["stage"], "$default", "{name}");
        assert_eq!(raw["isBase64Encoded"], false, "{name}");
        assert_eq!(request.method().as_str(), method, "{name}");
        assert_eq!(request.uri().path(), path, "{name}");
        if request.method() == Method::POST {
            let length = request.headers()[header::CONTENT_LENGTH].to_str().unwrap();
            assert_eq!(length, request.body().len().to_string(), "{name}");
            assert!(
                request.headers().contains_key(header::CONTENT_TYPE),
                "{name}"
            );
        } else {
            assert!(request.body().is_empty(), "{name}");
        }
    }
}

/// The path parameters an HTTP API route (`/broadcasts/{id+}`) takes from a request path, or
/// `None` when the path does not match it: `{name}` takes one segment, `{name+}` the rest.
fn path_parameters(route: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    let mut segments = path.split('/');
    for pattern in route.split('/') {
        let name = pattern.strip_prefix('{').and_then(|p| p.strip_suffix('}'));
        match name {
            Some(greedy) if greedy.ends_with('+') => {
                let rest: Vec<&str> = segments.by_ref().collect();
                let value = rest.join("/");
                (!value.is_empty()).then_some(())?;
                parameters.insert(greedy.trim_end_matches('+').to_owned(), value);
            }
            Some(name) => {
                let value = segments.next().filter(|s| !s.is_empty())?;
                parameters.insert(name.to_owned(), value.to_owned());
            }
            None => (segments.next()? == pattern).then_some(())?,
        }
    }
    segments.next().is_none().then_some(parameters)
}

#[test]
fn every_event_file_is_exercised() {
    let dir = event_path("");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && !NOT_EVENTS.contains(&name.as_str()))
        .collect();
    let listed: BTreeSet<String> = listed_events().map(str::to_owned).collect();
    let untested: Vec<&String> = on_disk.difference(&listed).collect();
    assert!(
        untested.is_empty(),
        "events without a test (add them to WEBSOCKET_EVENTS, HTTP_EVENTS or SHARD_EVENTS \
         and test them): \
         {untested:?}"
    );
    let missing: Vec<&String> = listed.difference(&on_disk).collect();
    assert!(missing.is_empty(), "listed but not in events/: {missing:?}");
}

// ---- fixtures ----

fn listed_events() -> impl Iterator<Item = &'static str> {
    WEBSOCKET_EVENTS
        .iter()
        .chain(HTTP_EVENTS)
        .chain(SHARD_EVENTS)
        .copied()
}

/// The text of a listed event: a test reading a file the list does not name fails, so the
/// list stays the truth `every_event_file_is_exercised` checks the directory against.
fn load(name: &str) -> String {
    assert!(
        listed_events().any(|listed| listed == name),
        "{name} is not in WEBSOCKET_EVENTS, HTTP_EVENTS or SHARD_EVENTS"
    );
    event(name)
}

fn ws_event(name: &str) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_str(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn http_event(name: &str) -> Request {
    lambda_http::request::from_str(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A shard event as the broadcast function's runtime hands it to the handler.
fn shard_event(name: &str) -> Request {
    assert!(
        SHARD_EVENTS.contains(&name),
        "{name} is not in SHARD_EVENTS"
    );
    lambda_http::request::from_str(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What `sam local invoke` gives the connect function with `events/env.json` (checked by
/// `tests/tests/template.rs`): HS256 with the SAM-local secret.
fn auth_config() -> AuthConfig {
    wsbridge::dev::sample_events_auth_config()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(&auth_config()).expect("the SAM-local secret is a valid HS256 key")
}

/// Runs the `$default` handler on a sample event, with the default limits.
async fn run_default(store: &MemoryStore, name: &str) -> ApiGatewayProxyResponse {
    let (settings, sender) = (Settings::default(), RecordingSender::new());
    default::handle(&ws_event(name), &settings.context(store, &sender)).await
}

/// `$connect` with the defaults: built-in channels, the default connection limit.
async fn run_connect(
    store: &MemoryStore,
    request: &ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let (settings, sender) = (Settings::default(), RecordingSender::new());
    connect::handle(request, &verifier(), &settings.context(store, &sender)).await
}

/// The broadcast function with the defaults.
async fn run_broadcast(
    store: &MemoryStore,
    sender: &RecordingSender,
    request: &Request,
) -> Response<Body> {
    run_broadcast_with(store, sender, request, &Channels::default()).await
}

/// The broadcast function with a channel configuration.
async fn run_broadcast_with(
    store: &MemoryStore,
    sender: &RecordingSender,
    request: &Request,
    channels: &Channels,
) -> Response<Body> {
    let settings = Settings {
        channels: channels.clone(),
        ..Settings::default()
    };
    broadcast::handle(
        request,
        &settings.context(store, sender),
        &BroadcastConfig::default(),
        &wsbridge::test_support::RecordingLauncher::new(),
    )
    .await
}

/// The token a `$connect` sample carries, wherever it carries it.
fn token_in(name: &str) -> String {
    let request = ws_event(name);
    token_of(&request)
        .unwrap_or_else(|| panic!("{name} carries no token"))
        .to_owned()
}

fn unverified_claims(token: &str) -> Claims {
    jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .expect("the sample token is a well-formed JWT")
        .claims
}

/// A store in which connect.json has run.
async fn connected_store() -> MemoryStore {
    let store = MemoryStore::new();
    let response = run_connect(&store, &ws_event(CONNECT)).await;
    assert_eq!(response.status_code, 200, "{CONNECT} must connect");
    store
}

/// A store in which connect.json, then default-subscribe.json, have run.
async fn subscribed_store() -> MemoryStore {
    let store = connected_store().await;
    let response = run_default(&store, DEFAULT_SUBSCRIBE).await;
    assert_eq!(
        ws_json(&response)["action"],
        "subscribed",
        "{DEFAULT_SUBSCRIBE} must subscribe"
    );
    store
}

/// Another live connection on the samples' API, as its own `$connect` would register it.
fn connection(id: &str, user: &str) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        user_id: UserId::new(user),
        connected_at: CONNECTED_AT + 60_000,
        endpoint: ENDPOINT.to_owned(),
        expires_at: now_seconds() + 3_600,
        grants: Default::default(),
    }
}

async fn seed(store: &MemoryStore, id: &str, user: &str, topics: &[&str]) {
    wsbridge::test_support::put(store, &connection(id, user)).await;
    if !topics.is_empty() {
        let topics: Vec<TopicPattern> = topics.iter().map(|t| topic(t)).collect();
        store
            .subscribe(&ConnectionId::new(id), &topics, &[], 50)
            .await
            .unwrap();
    }
}

fn topic(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(names: &[&str]) -> BTreeSet<ConnectionId> {
    names.iter().map(|n| ConnectionId::new(*n)).collect()
}

async fn connection_of(store: &MemoryStore, id: &str) -> Option<Connection> {
    store.get_connection(&ConnectionId::new(id)).await.unwrap()
}

async fn stored_connection(store: &MemoryStore, id: &str) -> Connection {
    connection_of(store, id)
        .await
        .unwrap_or_else(|| panic!("connection {id} is not registered"))
}

async fn topic_recipients(store: &MemoryStore, name: &str) -> BTreeSet<ConnectionId> {
    let target = Audience::Subscribers(vec![topic(name)]);
    let pages: Vec<_> = store.recipients(&target).try_collect().await.unwrap();
    pages
        .into_iter()
        .flatten()
        .map(|recipient| recipient.connection_id)
        .collect()
}

/// The reply frame of a WebSocket route response.
fn ws_json(response: &ApiGatewayProxyResponse) -> Value {
    let body = response.body.as_ref().expect("a reply frame");
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("reply frame is not JSON: {e}"))
}

/// The JSON body of an HTTP API response, which must say it is JSON.
fn http_json(response: &Response<Body>) -> Value {
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE),
        Some(&header::HeaderValue::from_static("application/json"))
    );
    serde_json::from_slice(response.body()).unwrap_or_else(|e| panic!("body is not JSON: {e}"))
}
