//! The fan-out engine through the real sender (posts signed with SigV4 over its own hyper
//! pool, see `wsbridge::sender`) to a local `@connections` endpoint, with recipients read from
//! DynamoDB Local. The endpoint is a small stand-in for API Gateway's management API, because
//! its faults (410, 429, 5xx, slowness) cannot be provoked from the real one here; it answers
//! as API Gateway does (status and `x-amzn-ErrorType`), and keeps every request it got so that
//! the signatures can be checked the way API Gateway checks them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::Router;
use axum::body::Bytes as BodyBytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::post;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::time::Instant;
use wsbridge::channels::TopicPattern;
use wsbridge::fanout::{FanoutOptions, MAX_THROTTLED_ATTEMPTS, RetryPolicy, fan_out};
use wsbridge::protocol::broadcast::{Exclusions, FanoutReport};
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender, Payload, SendError};
use wsbridge::store::{
    Audience, Connection, ConnectionStore, DynamoDbStore, Recipient, RecipientStore,
};
use wsbridge_local::{SigV4Credentials, local_sdk_config};
use wsbridge_tests::fresh_dynamodb_store;

/// (stage, connection id, body) of a POST answered 200.
type Received = (String, String, Vec<u8>);

/// Every POST as it arrived: URI, headers, body.
type Request = (Uri, HeaderMap, BodyBytes);

#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Calls per connection id, retries included.
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Sink {
    fn calls(&self, id: &str) -> u32 {
        self.calls
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or_default()
    }
}

/// Answers by the connection id's prefix:
/// `gone-` 410; `busy-` always 429; `busy2-` 429 twice, then 200; `broken-` always 500;
/// `flaky-` 500 once, then 200; `forbidden-` 403; `slow-` 200 after 300 ms; else 200.
async fn post_to_connection(
    State(sink): State<Sink>,
    Path((stage, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: BodyBytes,
) -> (StatusCode, HeaderMap, &'static str) {
    sink.requests
        .lock()
        .unwrap()
        .push((uri, headers, body.clone()));
    let call = {
        let mut calls = sink.calls.lock().unwrap();
        let count = calls.entry(id.clone()).or_default();
        *count += 1;
        *count
    };
    let fault = match id.split('-').next().unwrap_or_default() {
        "gone" => Some((StatusCode::GONE, "GoneException")),
        "busy" => Some((StatusCode::TOO_MANY_REQUESTS, "LimitExceededException")),
        "busy2" if call <= 2 => Some((StatusCode::TOO_MANY_REQUESTS, "LimitExceededException")),
        "broken" => Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
        )),
        "flaky" if call == 1 => Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
        )),
        "forbidden" => Some((StatusCode::FORBIDDEN, "ForbiddenException")),
        _ => None,
    };
    if let Some((status, error_type)) = fault {
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-ErrorType", error_type.parse().unwrap());
        return (status, headers, r#"{"message":null}"#);
    }
    if id.starts_with("slow-") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sink.received
        .lock()
        .unwrap()
        .push((stage, id, body.to_vec()));
    (StatusCode::OK, HeaderMap::new(), "")
}

/// Serves the sink on a free loopback port; returns its base URL.
async fn start_sink(sink: Sink) -> String {
    let app = Router::new()
        .route("/{stage}/@connections/{id}", post(post_to_connection))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn recipient(id: &str, endpoint: &str) -> Recipient {
    Recipient {
        connection_id: ConnectionId::new(id),
        user_id: UserId::new("u"),
        endpoint: endpoint.to_owned(),
    }
}

/// Four attempts, millisecond backoff: retried faults stay fast to test.
fn fast_retries(concurrency: usize) -> FanoutOptions {
    FanoutOptions::new(concurrency).with_retry(RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(2),
        cap: Duration::from_millis(10),
    })
}

/// Registers `count` connections named `{prefix}{n}=` on `topics`, reached through
/// `endpoint`.
async fn register(
    store: &DynamoDbStore,
    endpoint: &str,
    prefix: &str,
    count: usize,
    topics: &[TopicPattern],
) {
    for n in 0..count {
        let id = ConnectionId::new(format!("{prefix}{n}="));
        let connection = Connection {
            id: id.clone(),
            user_id: UserId::new(format!("user-{prefix}{n}")),
            connected_at: 1,
            endpoint: endpoint.to_owned(),
            expires_at: wsbridge::auth::now_seconds() + 600,
            grants: Default::default(),
        };
        wsbridge::test_support::put(store, &connection).await;
        store.subscribe(&id, topics, &[], 10).await.unwrap();
    }
}

async fn subscribers(store: &DynamoDbStore, topic: &str) -> Vec<ConnectionId> {
    let target = Audience::topic(&Topic::parse(topic).unwrap());
    let pages: Vec<Vec<Recipient>> = store.recipients(&target).try_collect().await.unwrap();
    pages
        .into_iter()
        .flatten()
        .map(|r| r.connection_id)
        .collect()
}

#[tokio::test]
async fn the_sender_posts_to_the_stage_path_and_classifies_each_answer_once() {
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let sender = ApiGatewaySender::new(&local_sdk_config(Some(&base)), None);
    let payload = Payload::new(Bytes::from_static(b"{\"hello\":1}"));

    sender
        .send(&recipient("ok-L0SM9cOFvHcCIhw=", &endpoint), &payload)
        .await
        .unwrap();
    assert_eq!(
        sink.received.lock().unwrap().clone(),
        vec![(
            "prod".to_owned(),
            "ok-L0SM9cOFvHcCIhw=".to_owned(),
            b"{\"hello\":1}".to_vec()
        )]
    );
    let send = |id: &'static str| {
        let sender = &sender;
        let endpoint = endpoint.clone();
        let payload = payload.clone();
        async move { sender.send(&recipient(id, &endpoint), &payload).await }
    };
    assert_eq!(send("gone-1").await, Err(SendError::Gone));
    assert!(matches!(send("busy-1").await, Err(SendError::Throttled(_))));
    assert!(matches!(
        send("broken-1").await,
        Err(SendError::Transient(_))
    ));
    assert!(matches!(
        send("forbidden-1").await,
        Err(SendError::Failed(_))
    ));
    // the sender does not retry on its own: the engine decides, and counts
    for id in ["gone-1", "busy-1", "broken-1", "forbidden-1"] {
        assert_eq!(sink.calls(id), 1, "{id}");
    }
}

#[tokio::test]
async fn endpoint_override_wins_over_the_stored_endpoint() {
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let sender = ApiGatewaySender::new(
        &local_sdk_config(Some(&base)),
        Some(format!("{base}/local")),
    );
    let stored = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
    sender
        .send(
            &recipient("c1", stored),
            &Payload::new(Bytes::from_static(b"m")),
        )
        .await
        .unwrap();
    assert_eq!(sink.received.lock().unwrap()[0].0, "local");
}

#[tokio::test]
async fn every_fault_is_counted_exactly_and_every_gone_row_is_deleted() {
    // GIVEN subscribers in DynamoDB Local that answer in every way API Gateway can:
    // 30 fine, 30 gone (more than one deletion batch), 5 throttled twice then fine, 5 failing
    // once with a 500 then fine, 3 always throttled, 2 always failing, 1 forbidden — plus one
    // fine subscriber that is excluded
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let store = fresh_dynamodb_store().await.with_page_size(7);
    let topics = [
        TopicPattern::parse("news").unwrap(),
        TopicPattern::parse("other").unwrap(),
    ];
    let groups = [
        ("live-", 30),
        ("gone-", 30),
        ("busy2-", 5),
        ("flaky-", 5),
        ("busy-", 3),
        ("broken-", 2),
        ("forbidden-", 1),
        ("me-", 1),
    ];
    for (prefix, count) in groups {
        register(&store, &endpoint, prefix, count, &topics).await;
    }
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&local_sdk_config(Some(&base)), None));
    let exclusions = Exclusions {
        user: Some(UserId::new("user-me-0")),
        connection: None,
    };
    let payload = Payload::new(Bytes::from_static(b"{\"event\":\"e\"}"));

    // WHEN one payload fans out to the topic, four attempts per post at most
    let summary = fan_out(
        &store,
        &sender,
        &Audience::Subscribers(vec![topics[0].clone()]),
        &exclusions,
        &payload,
        &fast_retries(8),
    )
    .await
    .unwrap();

    // THEN the report is exact
    assert_eq!(
        summary.report,
        FanoutReport {
            recipients: 76,
            delivered: 40,
            gone: 30,
            failed: 6
        }
    );
    // 2 retries for each busy2, 1 for each flaky, 3 (the policy's most) for each broken,
    // and the most a throttled post gets for each busy
    let throttled_retries = u64::from(MAX_THROTTLED_ATTEMPTS - 1);
    assert_eq!(summary.retries, 5 * 2 + 5 + 3 * throttled_retries + 2 * 3);
    // AND the three always throttled are handed back unsent, for a later run: a 429 is
    // "not now", not a failure of the connection
    let mut unsent: Vec<&str> = summary
        .unsent
        .iter()
        .map(|r| r.connection_id.as_str())
        .collect();
    unsent.sort();
    assert_eq!(unsent, ["busy-0=", "busy-1=", "busy-2="]);
    assert!(summary.unfinished());
    assert_eq!(sink.calls("busy2-0="), 3);
    assert_eq!(sink.calls("busy-0="), MAX_THROTTLED_ATTEMPTS);
    assert_eq!(sink.calls("gone-0="), 1);
    assert_eq!(sink.calls("forbidden-0="), 1);
    assert_eq!(sink.calls("me-0="), 0);
    // AND every delivered post carried the payload to the stage path
    let received = sink.received.lock().unwrap().clone();
    assert_eq!(received.len(), 40);
    assert!(
        received
            .iter()
            .all(|(stage, _, body)| stage == "prod" && body == &payload.bytes()[..])
    );

    // AND every row of every gone connection is deleted: connection rows and both topics'
    // subscription rows
    for n in 0..30 {
        let gone = ConnectionId::new(format!("gone-{n}="));
        assert_eq!(store.get_connection(&gone).await.unwrap(), None, "{gone}");
    }
    for topic in ["news", "other"] {
        let left = subscribers(&store, topic).await;
        assert_eq!(left.len(), 47, "{topic}");
        assert!(
            left.iter().all(|id| !id.as_str().starts_with("gone-")),
            "{topic}"
        );
    }
    // AND failing connections are kept: a 429 or 500 is no proof that a client is gone
    let broken = ConnectionId::new("broken-0=");
    assert!(store.get_connection(&broken).await.unwrap().is_some());
}

#[tokio::test]
async fn at_the_deadline_the_fan_out_stops_and_counts_what_it_did_not_send() {
    // GIVEN 40 subscribers whose posts each take 300 ms, 4 at a time: 3 s of work
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let store = fresh_dynamodb_store().await;
    let topic = [TopicPattern::parse("slow").unwrap()];
    register(&store, &endpoint, "slow-", 40, &topic).await;
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&local_sdk_config(Some(&base)), None));

    // WHEN the invocation has 1.2 s left
    let started = Instant::now();
    let options = fast_retries(4).with_deadline(Some(started + Duration::from_millis(1_200)));
    let summary = fan_out(
        &store,
        &sender,
        &Audience::Subscribers(vec![topic[0].clone()]),
        &Exclusions::default(),
        &Payload::new(Bytes::from_static(b"{}")),
        &options,
    )
    .await
    .unwrap();

    // THEN it returns before the deadline, having sent some and reported the rest as failed
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "{:?}",
        started.elapsed()
    );
    assert!(summary.unfinished());
    let report = summary.report;
    assert_eq!(report.recipients, 40);
    assert_eq!(report.delivered + report.failed, 40, "{report:?}");
    assert!(report.delivered >= 4, "{report:?}");
    assert!(summary.unsent.len() >= 20, "{summary:?}");
    assert!(report.failed >= summary.unsent.len() as u64);
    assert_eq!(report.gone, 0);
}

const REGION: &str = "eu-west-1";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Role credentials, as a Lambda function has them: with a session token.
fn role_config() -> SdkConfig {
    let credentials = Credentials::new(
        "ASIAEXAMPLE",
        SECRET,
        Some("IQoJb3JpZ2luX2VjEXAMPLE/session+token==".into()),
        None,
        "test",
    );
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build()
}

/// What API Gateway would check: the signature aws-sigv4's full signer computes from the
/// request as it arrived, over the headers it says it signed.
fn verify(request: &Request, secret: &str) -> Result<(), wsbridge_local::SigV4Refusal> {
    let (uri, headers, body) = request;
    SigV4Credentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: secret.into(),
        region: REGION.into(),
    }
    .verify(&Method::POST, uri, headers, body, SystemTime::now())
}

#[tokio::test]
async fn posts_are_signed_as_api_gateway_checks_and_carry_the_id_as_sent() {
    // GIVEN a sender with role credentials, and connection ids that need percent-encoding
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let sender = ApiGatewaySender::new(&role_config(), None);
    let ids = ["L0SM9cOFvHcCIhw=", "a b/c+d=", "é日本?#%41", "x"];
    let payload = Payload::new(Bytes::from_static(b"{\"event\":\"signed\"}"));

    // WHEN one payload is posted to each
    for id in ids {
        sender
            .send(&recipient(id, &endpoint), &payload)
            .await
            .unwrap();
    }

    // THEN each arrived at its id, decoded as sent, with the payload
    let received = sink.received.lock().unwrap().clone();
    let arrived: Vec<&str> = received.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(arrived, ids);
    assert!(
        received
            .iter()
            .all(|(_, _, body)| body == &payload.bytes()[..])
    );
    // AND each carries a signature of host, date and session token that verifies, and that
    // another secret does not
    let requests = sink.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), ids.len());
    for request in &requests {
        let headers = &request.1;
        verify(request, SECRET).unwrap_or_else(|refusal| panic!("{}: {refusal}", request.0));
        assert!(verify(request, "another-secret-access-key-of-forty-bytes").is_err());
        assert!(
            headers["authorization"]
                .to_str()
                .unwrap()
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
        );
        assert_eq!(
            headers["x-amz-security-token"],
            "IQoJb3JpZ2luX2VjEXAMPLE/session+token=="
        );
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(
            headers["content-length"],
            payload.bytes().len().to_string().as_str()
        );
    }
}

#[tokio::test]
async fn without_a_credentials_provider_posts_go_unsigned_and_without_a_region_they_fail() {
    // GIVEN a config with no credentials at all (a local run), and one without a region
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let anonymous = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .build();
    let regionless = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )))
        .build();
    let payload = Payload::new(Bytes::from_static(b"m"));

    // WHEN each posts
    let unsigned = ApiGatewaySender::new(&anonymous, None)
        .send(&recipient("c1", &endpoint), &payload)
        .await;
    let unsignable = ApiGatewaySender::new(&regionless, None)
        .send(&recipient("c2", &endpoint), &payload)
        .await;

    // THEN the first is delivered without a signature (the local gateway checks none), and
    // the second fails, saying why, without reaching the endpoint
    assert_eq!(unsigned, Ok(()));
    let requests = sink.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].1.contains_key("authorization"));
    assert!(
        matches!(&unsignable, Err(SendError::Failed(reason)) if reason.contains("AWS_REGION")),
        "{unsignable:?}"
    );
}

#[tokio::test]
async fn a_post_to_an_unreachable_endpoint_is_transient_and_says_why() {
    // GIVEN an endpoint nothing listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/prod", listener.local_addr().unwrap());
    drop(listener);
    let sender = ApiGatewaySender::new(&role_config(), None);
    // WHEN a post goes there
    let result = sender
        .send(
            &recipient("c1", &closed),
            &Payload::new(Bytes::from_static(b"m")),
        )
        .await;
    // THEN it is worth another try, and the reason names the cause
    assert!(
        matches!(&result, Err(SendError::Transient(reason)) if reason.contains("onnect")),
        "{result:?}"
    );
}
