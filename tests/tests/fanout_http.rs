//! Fan-out through the real `aws-sdk-apigatewaymanagement` client to a local `@connections`
//! endpoint, with recipients read from DynamoDB Local. The endpoint is a small stand-in for
//! API Gateway's management API because 410/429/500 cannot be provoked from the real one
//! here; it answers as API Gateway does (status + `x-amzn-ErrorType`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use wsbridge::fanout::fan_out;
use wsbridge::protocol::broadcast::{Exclusions, FanoutReport, Target};
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender, SendError};
use wsbridge::store::{Connection, ConnectionStore, Recipient, RecipientStore};
use wsbridge_tests::{fresh_dynamodb_store, local_sdk_config};

/// (stage, connection id, body) of a POST answered 200.
type Received = (String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<Received>>>,
    /// Calls per connection id, retries included.
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

/// Answers by the connection id's prefix: `gone-` 410, `busy-` 429, `broken-` 500, else 200.
async fn post_to_connection(
    State(sink): State<Sink>,
    Path((stage, id)): Path<(String, String)>,
    body: Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    *sink.calls.lock().unwrap().entry(id.clone()).or_default() += 1;
    let (status, error_type) = if id.starts_with("gone-") {
        (StatusCode::GONE, "GoneException")
    } else if id.starts_with("busy-") {
        (StatusCode::TOO_MANY_REQUESTS, "LimitExceededException")
    } else if id.starts_with("broken-") {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
        )
    } else {
        sink.received
            .lock()
            .unwrap()
            .push((stage, id, body.to_vec()));
        return (StatusCode::OK, HeaderMap::new(), "");
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-ErrorType", error_type.parse().unwrap());
    (status, headers, r#"{"message":null}"#)
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

#[tokio::test]
async fn sdk_sender_posts_to_the_stage_path_and_classifies_errors() {
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let sender = ApiGatewaySender::new(&local_sdk_config(&base), None);

    sender
        .send(
            &recipient("ok-L0SM9cOFvHcCIhw=", &endpoint),
            b"{\"hello\":1}",
        )
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
    assert_eq!(
        sender.send(&recipient("gone-1", &endpoint), b"x").await,
        Err(SendError::Gone)
    );
    assert!(matches!(
        sender.send(&recipient("busy-1", &endpoint), b"x").await,
        Err(SendError::Throttled(_))
    ));
    assert!(matches!(
        sender.send(&recipient("broken-1", &endpoint), b"x").await,
        Err(SendError::Failed(_))
    ));
    // 410 is final: it is not retried
    assert_eq!(sink.calls.lock().unwrap()["gone-1"], 1);
}

#[tokio::test]
async fn endpoint_override_wins_over_the_stored_endpoint() {
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let sender = ApiGatewaySender::new(&local_sdk_config(&base), Some(format!("{base}/local")));
    let stored = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
    sender.send(&recipient("c1", stored), b"m").await.unwrap();
    assert_eq!(sink.received.lock().unwrap()[0].0, "local");
}

#[tokio::test]
async fn broadcast_from_dynamodb_reports_exactly_and_deletes_gone_rows() {
    // GIVEN 40 subscribers of a topic in DynamoDB Local: 30 live, 6 gone, 4 broken,
    // plus one live subscriber that is excluded
    let sink = Sink::default();
    let base = start_sink(sink.clone()).await;
    let endpoint = format!("{base}/prod");
    let store = fresh_dynamodb_store().await.with_page_size(7);
    let news = Topic::parse("news").unwrap();
    let mut ids = Vec::new();
    for (prefix, count) in [("live-", 30), ("gone-", 6), ("broken-", 4), ("me-", 1)] {
        for n in 0..count {
            let id = ConnectionId::new(format!("{prefix}{n}="));
            let connection = Connection {
                id: id.clone(),
                user_id: UserId::new(format!("user{n}")),
                connected_at: 1,
                endpoint: endpoint.clone(),
                expires_at: wsbridge::auth::now_seconds() + 600,
            };
            store.put_connection(&connection).await.unwrap();
            store
                .subscribe(&id, &[news.clone(), Topic::parse("other").unwrap()], 10)
                .await
                .unwrap();
            ids.push(id);
        }
    }
    let sender = ApiGatewaySender::new(&local_sdk_config(&base), None);
    let exclusions = Exclusions {
        user: None,
        connection: Some(ConnectionId::new("me-0=")),
    };

    // WHEN one payload fans out to the topic
    let report = fan_out(
        &store,
        &sender,
        &Target::Topic(news.clone()),
        &exclusions,
        b"{\"event\":\"e\"}",
        8,
    )
    .await
    .unwrap();

    // THEN the report is exact, every live subscriber got the payload once
    assert_eq!(
        report,
        FanoutReport {
            recipients: 40,
            delivered: 30,
            gone: 6,
            failed: 4
        }
    );
    let received = sink.received.lock().unwrap().clone();
    assert_eq!(received.len(), 30);
    assert!(received.iter().all(|(stage, id, body)| stage == "prod"
        && id.starts_with("live-")
        && body == b"{\"event\":\"e\"}"));
    // AND every row of the gone connections is deleted, from every topic
    for n in 0..6 {
        let gone = ConnectionId::new(format!("gone-{n}="));
        assert_eq!(store.get_connection(&gone).await.unwrap(), None);
    }
    for topic in ["news", "other"] {
        let target = Target::Topic(Topic::parse(topic).unwrap());
        let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.recipients(&target))
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(left.len(), 35, "{topic}");
        assert!(
            left.iter()
                .all(|r| !r.connection_id.as_str().starts_with("gone-"))
        );
    }
    // AND the broken ones stay: a 500 is not proof that a connection is gone
    let broken = ConnectionId::new("broken-0=");
    assert!(store.get_connection(&broken).await.unwrap().is_some());
}
