//! What the limits cost on DynamoDB (Local), counted by the store's operation counter
//! (`DynamoDbStore::with_operation_counts`) through the real handlers: a refused frame, a
//! flood, a connect at the per-user limit. The counts are exact, so a change that makes a
//! refusal more expensive fails here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use serde_json::Value;
use wsbridge::auth::TokenVerifier;
use wsbridge::config::SessionConfig;
use wsbridge::handlers::{connect, default};
use wsbridge::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use wsbridge::store::DynamoDbStore;
use wsbridge::store::dynamodb::OperationCounts;
use wsbridge::test_support::{RecordingSender, Settings, connection, put, ws_request};
use wsbridge_tests::{fresh_dynamodb_store, gateway::token};

async fn counted_store() -> (DynamoDbStore, Arc<OperationCounts>) {
    let counts = Arc::new(OperationCounts::default());
    let store = fresh_dynamodb_store()
        .await
        .with_operation_counts(counts.clone());
    (store, counts)
}

fn ops(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn reply(response: &ApiGatewayProxyResponse) -> Value {
    match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("no reply frame: {other:?}"),
    }
}

fn session(rate_limit: RateLimit) -> Settings {
    Settings {
        session: SessionConfig {
            rate_limit: Some(rate_limit),
            ..SessionConfig::default()
        },
        ..Settings::default()
    }
}

async fn frame(store: &DynamoDbStore, settings: &Settings, body: &str) -> Value {
    let request = ws_request("c-alice", Some(body));
    let sender = RecordingSender::new();
    reply(&default::handle(&request, &settings.context(store, &sender)).await)
}

#[tokio::test]
async fn a_rate_limited_frame_costs_one_update_and_changes_nothing() {
    // GIVEN alice's connection with a budget of two frames
    let (store, counts) = counted_store().await;
    put(&store, &connection("c-alice", "alice")).await;
    let session = session(RateLimit {
        per_second: 1,
        burst: 2,
    });
    let subscribe = r#"{"action":"subscribe","topic":"list:1"}"#;

    // WHEN she spends it, then sends one more
    counts.reset();
    assert_eq!(
        frame(&store, &session, subscribe).await["action"],
        "subscribed"
    );
    let admitted = counts.snapshot();
    assert_eq!(
        frame(&store, &session, r#"{"action":"whoami"}"#).await["action"],
        "whoami"
    );
    counts.reset();
    let refused = frame(
        &store,
        &session,
        r#"{"action":"subscribe","topic":"list:2"}"#,
    )
    .await;

    // THEN the refusal cost exactly one UpdateItem (whose condition failed, writing nothing)
    assert_eq!(refused["error"], "rate_limited", "{refused}");
    assert_eq!(counts.snapshot(), ops(&[("UpdateItem", 1)]));
    // AND an admitted subscribe costs its budget update, the row read and one transaction;
    // an admitted whoami only the budget update, which returns the row it answers from
    assert_eq!(
        admitted,
        ops(&[("GetItem", 1), ("TransactWriteItems", 1), ("UpdateItem", 1)])
    );
    eprintln!(
        "admitted subscribe: {admitted:?}; rate-limited frame: {:?}",
        counts.snapshot()
    );
}

#[tokio::test]
async fn a_flood_meets_rate_limited_and_its_store_operations_stay_bounded() {
    // GIVEN alice's connection with the budget of 1 frame a second, bursts of 5
    let (store, counts) = counted_store().await;
    put(&store, &connection("c-alice", "alice")).await;
    let session = session(RateLimit {
        per_second: 1,
        burst: 5,
    });
    counts.reset();

    // WHEN a script floods 200 subscribe frames
    let mut replies: HashMap<String, u64> = HashMap::new();
    for n in 0..200 {
        let body = format!(r#"{{"action":"subscribe","topic":"flood:{n}"}}"#);
        let reply = frame(&store, &session, &body).await;
        let kind = reply["error"]
            .as_str()
            .or(reply["action"].as_str())
            .unwrap_or("?")
            .to_owned();
        *replies.entry(kind).or_default() += 1;
    }

    // THEN most are refused; the store saw one conditional write per refused frame, and
    // per admitted one its budget update (two when the bucket was busy: the first guess is
    // an idle bucket), the row read and the transaction: nothing more
    let admitted = replies.get("subscribed").copied().unwrap_or_default();
    let limited = replies.get("rate_limited").copied().unwrap_or_default();
    assert_eq!(admitted + limited, 200, "{replies:?}");
    assert!(limited >= 150, "{replies:?}");
    let seen = counts.snapshot();
    assert_eq!(seen.get("GetItem"), Some(&admitted), "{seen:?}");
    assert_eq!(seen.get("TransactWriteItems"), Some(&admitted), "{seen:?}");
    let updates = seen.get("UpdateItem").copied().unwrap_or_default();
    assert!(
        (limited + admitted..=limited + 2 * admitted).contains(&updates),
        "{updates} budget updates for {admitted} admitted and {limited} refused frames"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    eprintln!("flood of 200: {replies:?}, operations {seen:?}");
}

fn connect_request(id: &str, sub: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut request = ws_request(id, None);
    request.query_string_parameters = HashMap::from([("token".to_owned(), token(sub))]).into();
    request
}

#[tokio::test]
async fn a_connect_at_the_limit_costs_one_read_and_a_connect_below_it_a_read_and_a_transaction() {
    // GIVEN a limit of two connections per user, refusing past it
    let (store, counts) = counted_store().await;
    let settings = Settings {
        session: SessionConfig {
            connection_limit: ConnectionLimit {
                per_user: 2,
                policy: LimitPolicy::Refuse,
            },
            ..SessionConfig::default()
        },
        ..Settings::default()
    };
    let verifier = TokenVerifier::new(&wsbridge::dev::auth_config()).unwrap();
    let sender = RecordingSender::new();
    let connect = |id: &'static str| {
        let (store, settings, verifier, sender) = (&store, &settings, &verifier, &sender);
        async move {
            let request = connect_request(id, "alice");
            connect::handle(&request, verifier, &settings.context(store, sender))
                .await
                .status_code
        }
    };

    // WHEN alice connects twice, then a third time
    counts.reset();
    assert_eq!(connect("c-1").await, 200);
    let below = counts.snapshot();
    assert_eq!(connect("c-2").await, 200);
    counts.reset();
    assert_eq!(connect("c-3").await, 429);

    // THEN a connect below the limit cost the user row read and one transaction, and the
    // refused one only the read
    assert_eq!(below, ops(&[("GetItem", 1), ("TransactWriteItems", 1)]));
    assert_eq!(counts.snapshot(), ops(&[("GetItem", 1)]));
    eprintln!(
        "connect below the limit: {below:?}; at the limit: {:?}",
        counts.snapshot()
    );
}
