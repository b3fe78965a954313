//! What each Lambda function's code calls, found by running it: every route of a function's
//! handler is driven through its paths on DynamoDB Local, with the store counting the
//! DynamoDB operations (and the items of its transactions), the sender recording the
//! management API methods, and a stand-in for the Lambda API recording the calls the real
//! SDK client of the shard launcher makes. The template's IAM statements are checked against
//! this, so a new call the template does not allow fails a test, and so does a permission
//! the code no longer needs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_http::Body;
use lambda_http::http::Method;
use serde_json::{Value, json};
use wsbridge::auth::TokenVerifier;
use wsbridge::channels::Channels;
use wsbridge::config::{BroadcastConfig, SessionConfig};
use wsbridge::handlers::{broadcast, connect, default, disconnect};
use wsbridge::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use wsbridge::sender::SendError;
use wsbridge::shards::ShardLauncher;
use wsbridge::store::dynamodb::OperationCounts;
use wsbridge::store::{ConnectionStore, DynamoDbStore};
use wsbridge::test_support::{RecordingSender, Settings, connection, pattern, put, ws_request};

use crate::fresh_dynamodb_store;
use crate::gateway::token;
use crate::lambda::LambdaStandIn;

/// What one function's code called.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Calls {
    /// IAM actions on the table, e.g. `dynamodb:GetItem`.
    pub dynamodb: BTreeSet<String>,
    /// Of those, the ones only ever used inside a `TransactWriteItems`.
    pub only_in_transactions: BTreeSet<String>,
    /// `@connections` methods: `POST` (PostToConnection), `DELETE` (DeleteConnection).
    pub management: BTreeSet<&'static str>,
    /// What its Query calls read: `table`, or an index name.
    pub queried: BTreeSet<String>,
    /// IAM actions on Lambda functions, e.g. `lambda:InvokeFunction` (the broadcast function
    /// starting the parts of a background broadcast; its launcher invokes only itself).
    pub lambda: BTreeSet<String>,
}

/// The calls of the function that builds `binary`, by running all of its paths.
pub async fn calls_of(binary: &str) -> Calls {
    let counts = Arc::new(OperationCounts::default());
    let sender = RecordingSender::new().failing("c-gone", SendError::Gone);
    // Fixtures go through a store of their own on the same table: only what the function's
    // handler calls is counted.
    let fixtures = fresh_dynamodb_store().await;
    let store = fixtures.clone().with_operation_counts(counts.clone());
    let lambda = LambdaStandIn::start().await;
    match binary {
        "wsbridge-connect" => exercise_connect(&fixtures, &store, &sender).await,
        "wsbridge-disconnect" => exercise_disconnect(&fixtures, &store, &sender).await,
        "wsbridge-default" => exercise_default(&fixtures, &store, &sender).await,
        "wsbridge-broadcast" => exercise_broadcast(&fixtures, &store, &sender, &lambda).await,
        other => panic!("no exercise for {other}; add one in tests/src/iam.rs"),
    }
    let all = counts.iam_actions();
    let inner = counts.transaction_items();
    let direct: BTreeSet<String> = counts
        .snapshot()
        .into_keys()
        .map(|name| format!("dynamodb:{name}"))
        .collect();
    Calls {
        only_in_transactions: inner
            .into_iter()
            .map(|name| format!("dynamodb:{name}"))
            .filter(|action| !direct.contains(action))
            .collect(),
        dynamodb: all,
        management: sender.management_methods(),
        queried: counts.queried(),
        lambda: lambda.calls().into_iter().map(|call| call.action).collect(),
    }
}

/// A connection as `$connect` registers it, subscribed to `topics` (presence recorded where
/// the rooms' channels keep it).
async fn seed(store: &DynamoDbStore, id: &str, user: &str, topics: &[&str]) {
    put(store, &connection(id, user)).await;
    if !topics.is_empty() {
        seed_subscription(store, id, topics).await;
    }
}

/// Every feature on: `room:` with client publish, presence and join/leave, `list:` with
/// wildcards, everything else open.
fn rooms() -> Channels {
    Channels::parse(
        &json!({
            "namespaces": {
                "room": {"subscribe": "authenticated", "publish": "subscribers", "presence": true, "join_leave": true,
                         "history": {"size": 2, "ttl_seconds": 600}},
                "list": {"subscribe": "authenticated", "wildcards": true}
            },
            "default": {"subscribe": "authenticated"}
        })
        .to_string(),
    )
    .expect("the channels of the exercise parse")
}

fn connect_request(id: &str, user: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut request = ws_request(id, None);
    request.query_string_parameters = HashMap::from([("token".to_owned(), token(user))]).into();
    request
}

fn settings(session: SessionConfig) -> Settings {
    Settings {
        session,
        channels: rooms(),
        ..Settings::default()
    }
}

fn limited(per_user: usize, policy: LimitPolicy) -> SessionConfig {
    SessionConfig {
        connection_limit: ConnectionLimit { per_user, policy },
        ..SessionConfig::default()
    }
}

/// `$connect`: below the limit, at it (refused), at it under close_oldest (evicting a
/// connection that is in a room with someone else, who hears the leave).
async fn exercise_connect(
    fixtures: &DynamoDbStore,
    store: &DynamoDbStore,
    sender: &RecordingSender,
) {
    let verifier = TokenVerifier::new(&wsbridge::dev::auth_config()).expect("dev verifier");
    let refuse = settings(limited(1, LimitPolicy::Refuse));
    let evict = settings(limited(1, LimitPolicy::CloseOldest));
    seed(fixtures, "c-bob", "bob", &["room:1"]).await;
    for (id, settings, status) in [
        ("c-1", &refuse, 200),
        ("c-2", &refuse, 429),
        ("c-3", &evict, 200),
    ] {
        if id == "c-3" {
            // The connection about to be evicted holds a room, as most do.
            seed_subscription(fixtures, "c-1", &["room:1", "a:1"]).await;
        }
        let ctx = settings.context(store, sender);
        let response = connect::handle(&connect_request(id, "alice"), &verifier, &ctx).await;
        assert_eq!(response.status_code, status, "{id}");
    }
}

async fn seed_subscription(store: &DynamoDbStore, id: &str, topics: &[&str]) {
    let subscriptions: Vec<_> = topics.iter().map(|t| pattern(t)).collect();
    let presence = rooms().presence_topics(&subscriptions);
    store
        .subscribe(
            &wsbridge::protocol::ConnectionId::new(id),
            &subscriptions,
            &presence,
            50,
        )
        .await
        .expect("the fixture subscribes");
}

/// `$disconnect` of a connection in a room with someone else, and of one already gone.
async fn exercise_disconnect(
    fixtures: &DynamoDbStore,
    store: &DynamoDbStore,
    sender: &RecordingSender,
) {
    seed(fixtures, "c-1", "alice", &["room:1", "a:2"]).await;
    seed(fixtures, "c-2", "bob", &["room:1"]).await;
    let settings = settings(SessionConfig::default());
    for _ in 0..2 {
        let ctx = settings.context(store, sender);
        let response = disconnect::handle(&ws_request("c-1", None), &ctx).await;
        assert_eq!(response.status_code, 200);
    }
}

/// `$default`: every action, with and without a frame budget, and a refused frame.
async fn exercise_default(
    fixtures: &DynamoDbStore,
    store: &DynamoDbStore,
    sender: &RecordingSender,
) {
    seed(fixtures, "c-1", "alice", &[]).await;
    seed(fixtures, "c-2", "bob", &["room:1", "list:*"]).await;
    seed(fixtures, "c-gone", "carol", &["room:1"]).await;
    let budget = settings(SessionConfig {
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 3,
        }),
        ..SessionConfig::default()
    });
    let unlimited = settings(SessionConfig {
        rate_limit: None,
        ..SessionConfig::default()
    });
    let frames = [
        (
            &unlimited,
            json!({"action": "subscribe", "topics": ["room:1", "list:*", "a:1"]}),
        ),
        (
            &unlimited,
            json!({"action": "publish", "topic": "room:1", "event": "e"}),
        ),
        // two more: the window of two trims one
        (
            &unlimited,
            json!({"action": "publish", "topic": "room:1", "event": "e"}),
        ),
        (
            &unlimited,
            json!({"action": "publish", "topic": "room:1", "event": "e"}),
        ),
        (&unlimited, json!({"action": "history", "topic": "room:1"})),
        (
            &unlimited,
            json!({"action": "subscribe", "topic": "room:1", "since": {"offset": 1, "epoch": "e"}}),
        ),
        (&unlimited, json!({"action": "presence", "topic": "room:1"})),
        (
            &unlimited,
            json!({"action": "unsubscribe", "topics": ["room:1", "a:1"]}),
        ),
        (&unlimited, json!({"action": "whoami"})),
        (&unlimited, json!({"action": "ping"})),
        (&budget, json!({"action": "subscribe", "topic": "a:3"})),
        (&budget, json!({"action": "whoami"})),
        (&budget, json!({"action": "whoami"})),
        (&budget, json!({"action": "whoami"})),
    ];
    let mut replies = Vec::new();
    for (settings, frame) in frames {
        let request = ws_request("c-1", Some(&frame.to_string()));
        let response = default::handle(&request, &settings.context(store, sender)).await;
        replies.push(response);
    }
    let limited = replies.iter().any(|r| {
        matches!(&r.body, Some(aws_lambda_events::encodings::Body::Text(t)) if t.contains("rate_limited"))
    });
    assert!(limited, "the budget path refused a frame");
}

/// The function name the exercise's launcher invokes: deployed, the launcher names the
/// function it runs in (`LambdaLauncher::this_function`).
const THIS_FUNCTION: &str = "wsbridge-broadcast-under-test";

/// The server API: every route, every broadcast target, a 410 through a topic; then a
/// broadcast sent in the background, its parts run as the function runs its own
/// asynchronous invocations, and its status.
async fn exercise_broadcast(
    fixtures: &DynamoDbStore,
    store: &DynamoDbStore,
    sender: &RecordingSender,
    lambda: &LambdaStandIn,
) {
    seed(fixtures, "c-1", "alice", &["a:1", "room:1"]).await;
    seed(fixtures, "c-2", "bob", &["a:1", "room:1"]).await;
    seed(fixtures, "c-gone", "carol", &["a:1", "room:1"]).await;
    let config = BroadcastConfig::default();
    let settings = settings(SessionConfig::default());
    let ctx = settings.context(store, sender);
    let launcher = lambda.launcher(THIS_FUNCTION);
    let calls: [(Method, &str, Value); 17] = [
        (
            Method::POST,
            "/broadcast",
            json!({"topic": "room:1", "event": "e"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"topics": ["a:1", "list:7"], "event": "e"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"user_id": "alice", "event": "e"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"all": true, "event": "e"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"connection_ids": ["c-1"], "event": "e"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"batch": [{"topic": "a:1", "event": "e"}]}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"topic": "room:1", "event": "e", "id": "once"}),
        ),
        (
            Method::POST,
            "/broadcast",
            json!({"topic": "room:1", "event": "e", "id": "once"}),
        ),
        (Method::GET, "/connections/count", Value::Null),
        (
            Method::POST,
            "/subscribe",
            json!({"topic": "room:2", "user_id": "alice"}),
        ),
        (
            Method::POST,
            "/subscribe",
            json!({"topic": "a:3", "connection_ids": ["c-2"]}),
        ),
        (
            Method::POST,
            "/unsubscribe",
            json!({"topic": "room:2", "connection_ids": ["c-1"]}),
        ),
        (
            Method::POST,
            "/disconnect",
            json!({"connection_ids": ["c-2"]}),
        ),
        (Method::POST, "/disconnect", json!({"user_id": "alice"})),
        (Method::GET, "/presence?topic=room:1", Value::Null),
        (Method::GET, "/online?user_id=alice", Value::Null),
        (Method::GET, "/history?topic=room:1", Value::Null),
    ];
    for (method, path, body) in calls {
        let response = broadcast::handle(&http(method, path, body), &ctx, &config, &launcher).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    exercise_background(fixtures, &ctx, &config, lambda, &launcher).await;
}

/// `"async": true` to a topic: the job recorded and one part per shard started; each part
/// then run from the event its invocation carries, through the handler, as Lambda delivers
/// it; the status read once every part is done.
async fn exercise_background(
    fixtures: &DynamoDbStore,
    ctx: &wsbridge::handlers::Context<'_>,
    config: &BroadcastConfig,
    lambda: &LambdaStandIn,
    launcher: &dyn ShardLauncher,
) {
    // Connections of its own: the ones above are disconnected by now.
    seed(fixtures, "c-3", "dana", &["bg:1"]).await;
    seed(fixtures, "c-4", "erin", &["bg:1"]).await;
    let before = lambda.calls().len();
    let body = json!({"topic": "bg:1", "event": "e", "async": true});
    let response = broadcast::handle(
        &http(Method::POST, "/broadcast", body),
        ctx,
        config,
        launcher,
    )
    .await;
    assert_eq!(response.status().as_u16(), 202, "an async broadcast");
    let accepted: Value = serde_json::from_slice(response.body()).expect("a JSON report");
    let status_url = accepted["status_url"]
        .as_str()
        .expect("a status_url")
        .to_owned();

    let invocations = lambda.calls().split_off(before);
    assert_eq!(
        invocations.len() as u64,
        u64::from(config.shards),
        "one invocation per part: {invocations:?}"
    );
    for invocation in invocations {
        assert_eq!(invocation.function, THIS_FUNCTION);
        assert_eq!(invocation.invocation_type.as_deref(), Some("Event"));
        let event = lambda_http::request::from_str(&invocation.payload)
            .unwrap_or_else(|e| panic!("the invocation's event {}: {e}", invocation.payload));
        let response = broadcast::handle(&event, ctx, config, launcher).await;
        assert_eq!(response.status().as_u16(), 200, "{}", invocation.payload);
    }

    let response = broadcast::handle(
        &http(Method::GET, &status_url, Value::Null),
        ctx,
        config,
        launcher,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200, "{status_url}");
    let status: Value = serde_json::from_slice(response.body()).expect("a JSON status");
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["delivered"], 2, "{status}");
}

fn http(method: Method, path: &str, body: Value) -> lambda_http::Request {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body))
        .expect("a request")
}
