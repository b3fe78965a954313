//! `/broadcast` to each kind of target under DynamoDB faults (with `RecordingSender` as API
//! Gateway), the removal of gone recipients, and `/connections/count`.

use std::collections::BTreeSet;
use std::time::Duration;

use lambda_http::RequestExt;
use lambda_http::http::Method;
use serde_json::{Value, json};
use wsbridge::protocol::ConnectionId;
use wsbridge::sender::SendError;
use wsbridge::store::DynamoDbStore;
use wsbridge::test_support::RecordingSender;
use wsbridge_local::local_sdk_config;
use wsbridge_tests::dynamodb_endpoint;
use wsbridge_tests::faults::setup::{Faulty, Traces, faulty_store};
use wsbridge_tests::faults::{Fault, FaultProxy, Rule, When};

use super::server_api::{broadcast_request, call, handle, ids, now_millis};
use super::{
    cases, each_case, faults_of, label, left_by_removal, lost_deletion, persistent, registered,
    transient, under,
};

/// Query pages of two rows: five recipients are three pages.
const PAGE: i32 = 2;

/// Each of `expected` got exactly one post, and nobody else any.
fn assert_posted_once(sender: &RecordingSender, expected: &[String], context: &str) {
    let posted: Vec<String> = sender
        .delivered_to()
        .iter()
        .map(ConnectionId::to_string)
        .collect();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(posted, expected, "{context}");
}

/// Broadcasts to `target` (a body fragment) through every transient fault of `operation`:
/// each answer is the undisturbed one, and every recipient got the message once.
async fn transient_broadcasts(f: &Faulty, operation: &'static str, target: Value, all: &[String]) {
    let store = f.store.clone().with_page_size(PAGE);
    for rule in transient(operation) {
        let sender = RecordingSender::new();
        let mut body = target.clone();
        body["event"] = json!("e");
        let (status, report) = under(
            f,
            rule,
            call(&store, &sender, Method::POST, "/broadcast", body),
        )
        .await;
        assert_eq!(status, 200, "{}: {report}", label(&rule));
        let n = all.len() as u64;
        assert_eq!(
            (report["recipients"].as_u64(), report["delivered"].as_u64()),
            (Some(n), Some(n)),
            "{}: {report}",
            label(&rule)
        );
        assert_posted_once(&sender, all, &label(&rule));
    }
}

#[tokio::test]
async fn broadcast_to_a_topic_survives_transient_faults_and_reports_a_part_way_stop() {
    // GIVEN five subscribers of a topic: three pages of recipients
    let f = faulty_store().await;
    let subscribers = ids("t", 5);
    for id in &subscribers {
        registered(&f, id, "u", &["news:1"]).await;
    }
    transient_broadcasts(&f, "Query", json!({"topic": "news:1"}), &subscribers).await;

    let store = f.store.clone().with_page_size(PAGE);
    for fault in faults_of("Query") {
        for (from, pages_sent) in [(1, 0), (2, 1)] {
            // WHEN reading the recipients fails for good from the `from`th page on
            let rule = Rule::new("Query", When::From(from), fault);
            let sender = RecordingSender::new();
            let body = json!({"topic": "news:1", "event": "e"});
            let (status, error) = under(
                &f,
                rule,
                call(&store, &sender, Method::POST, "/broadcast", body),
            )
            .await;

            // THEN nothing sent is a plain 500 (safe to retry); part-way, a 200 that says the
            // store failed and counts what was sent, so the caller can tell who got it
            let sent = pages_sent * PAGE as usize;
            if sent == 0 {
                assert_eq!(status, 500, "{}: {error}", label(&rule));
                assert_eq!(error["error"], "internal_error", "{}", label(&rule));
            } else {
                assert_eq!(status, 200, "{}: {error}", label(&rule));
                assert_eq!(error["store_failed"], true, "{}: {error}", label(&rule));
                assert_eq!(
                    (error["recipients"].as_u64(), error["delivered"].as_u64()),
                    (Some(sent as u64), Some(sent as u64)),
                    "{}",
                    label(&rule)
                );
            }
            assert_eq!(sender.delivered_to().len(), sent, "{}", label(&rule));
            assert_eq!(
                f.table.subscribers("news:1").await.len(),
                5,
                "{}",
                label(&rule)
            );
        }
    }
}

#[tokio::test]
async fn broadcast_to_a_user_to_all_and_to_named_connections_survives_transient_faults() {
    // GIVEN alice on three connections, bob on two
    let f = faulty_store().await;
    let (alice, bob) = (ids("alice", 3), ids("bob", 2));
    for id in &alice {
        registered(&f, id, "alice", &[]).await;
    }
    for id in &bob {
        registered(&f, id, "bob", &[]).await;
    }
    let everyone: Vec<String> = alice.iter().chain(&bob).cloned().collect();

    // WHEN broadcasts to alice, to everyone and to all five by id meet transient faults
    // THEN each reaches exactly its recipients, once
    transient_broadcasts(&f, "Query", json!({"user_id": "alice"}), &alice).await;
    transient_broadcasts(&f, "Query", json!({"all": true}), &everyone).await;
    let named = json!({"connection_ids": everyone});
    transient_broadcasts(&f, "BatchGetItem", named.clone(), &everyone).await;

    // AND when the named connections cannot be read, 500 before any post
    for rule in persistent("BatchGetItem") {
        let sender = RecordingSender::new();
        let mut body = named.clone();
        body["event"] = json!("e");
        let (status, error) = under(
            &f,
            rule,
            call(&f.store, &sender, Method::POST, "/broadcast", body),
        )
        .await;
        assert_eq!(status, 500, "{}: {error}", label(&rule));
        assert_eq!(sender.attempts(), 0, "{}", label(&rule));
    }
    // AND when one shard of everyone cannot be read, the shards read before it sent: a 200
    // saying the store failed and counting them when they reached anyone (which shards come
    // first varies: they are read four at a time), else a plain 500
    for rule in persistent("Query") {
        let sender = RecordingSender::new();
        let body = json!({"all": true, "event": "e"});
        let (status, report) = under(
            &f,
            Rule::new("Query", When::From(3), rule.fault),
            call(&f.store, &sender, Method::POST, "/broadcast", body),
        )
        .await;
        let sent = sender.delivered_to();
        if sent.is_empty() {
            assert_eq!(status, 500, "{}: {report}", label(&rule));
        } else {
            assert_eq!(status, 200, "{}: {report}", label(&rule));
            assert_eq!(report["store_failed"], true, "{}: {report}", label(&rule));
            assert_eq!(
                report["delivered"].as_u64(),
                Some(sent.len() as u64),
                "{}",
                label(&rule)
            );
        }
        assert!(sent.len() < everyone.len(), "{}: {sent:?}", label(&rule));
        let unique: BTreeSet<_> = sent.iter().collect();
        assert_eq!(unique.len(), sent.len(), "{}: {sent:?}", label(&rule));
    }
}

#[tokio::test]
async fn removing_gone_recipients_never_fails_the_broadcast() {
    let base = faulty_store().await;
    each_case(
        &base,
        cases(&["BatchWriteItem", "DeleteItem", "UpdateItem"]),
        |n, rule, persists, f| async move {
            // GIVEN a topic's two subscribers, one of which API Gateway calls gone; the gone one
            // also watches a second topic
            let (topic, other) = (format!("news:{n}"), format!("other:{n}"));
            let (live, gone) = (format!("live{n}="), format!("gone{n}="));
            registered(&f, &live, "u", &[&topic]).await;
            registered(&f, &gone, &format!("g{n}"), &[&topic, &other]).await;
            let sender = RecordingSender::new().failing(&gone, SendError::Gone);

            // WHEN a broadcast to the topic removes the gone one and meets a fault doing it
            let body = json!({"topic": topic, "event": "e"});
            let (status, report) = under(
                &f,
                rule,
                call(&f.store, &sender, Method::POST, "/broadcast", body),
            )
            .await;

            // THEN the broadcast's answer is the same either way; what a persistent fault keeps
            // of the gone connection is left to the next broadcast's 410, or to TTL
            assert_eq!(status, 200, "{}: {report}", label(&rule));
            assert_eq!(
                (report["delivered"].as_u64(), report["gone"].as_u64()),
                (Some(1), Some(1)),
                "{}: {report}",
                label(&rule)
            );
            let traces = f
                .table
                .traces(&gone, &format!("g{n}"), &[&topic, &other])
                .await;
            // The topic's rows go first, in a batch of their own; then each connection's
            // removal runs, whether or not that batch failed.
            if persists && rule.fault == Fault::Unprocessed {
                // Each batch halves until one row never goes.
                assert_eq!(
                    traces.subscription_rows.len(),
                    1,
                    "{}: {traces:?}",
                    label(&rule)
                );
                assert!(
                    !traces.connection_row && !traces.counted,
                    "{}: {traces:?}",
                    label(&rule)
                );
            } else if persists || lost_deletion(&rule) {
                let mut left = left_by_removal(&rule, &[&topic, &other]);
                if rule.operation != "BatchWriteItem" {
                    // The topic's own batch went through.
                    left.subscription_rows.remove(&topic);
                }
                assert_eq!(traces, left, "{}", label(&rule));
            } else {
                assert_eq!(traces, Traces::none(), "{}", label(&rule));
            }
            assert!(
                f.table.subscribers(&topic).await.contains(&live),
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn connections_count_survives_transient_faults_and_answers_500_when_they_persist() {
    let f = faulty_store().await;
    for id in ids("c", 3) {
        registered(&f, &id, "u", &[]).await;
    }
    for (rule, persists) in cases(&["Query"]) {
        let sender = RecordingSender::new();
        let (status, body) = under(
            &f,
            rule,
            call(
                &f.store,
                &sender,
                Method::GET,
                "/connections/count",
                json!(null),
            ),
        )
        .await;
        if persists {
            assert_eq!(
                (status, &body["error"]),
                (500, &json!("internal_error")),
                "{}",
                label(&rule)
            );
        } else {
            assert_eq!(
                (status, &body["count"]),
                (200, &json!(3)),
                "{}",
                label(&rule)
            );
        }
    }
}

#[tokio::test]
async fn a_broadcast_answers_by_its_deadline_even_when_removing_the_gone_hangs() {
    // GIVEN a subscriber API Gateway calls gone, and a store whose client waits for an answer
    // as long as it takes (no attempt timeout), through a proxy that holds every
    // BatchWriteItem for an hour: only the invocation's deadline can end the removal
    let f = faulty_store().await;
    registered(&f, "gone=", "g", &["news:1"]).await;
    let proxy = FaultProxy::start_holding(&dynamodb_endpoint(), Duration::from_secs(3_600)).await;
    let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(Some(proxy.url())));
    let store = DynamoDbStore::new(client, f.table.name());
    proxy.inject(Rule::new("BatchWriteItem", When::Always, Fault::Timeout));
    let sender = RecordingSender::new().failing("gone=", SendError::Gone);

    // WHEN a broadcast to the topic runs with eight seconds left in its invocation (ample
    // for reading the topic and posting, however busy the machine)
    let mut context = lambda_http::Context::default();
    context.deadline = now_millis() + 8_000;
    let request =
        broadcast_request(json!({"topic": "news:1", "event": "e"})).with_lambda_context(context);
    let response = tokio::time::timeout(Duration::from_secs(60), handle(&request, &store, &sender))
        .await
        .expect("the broadcast must answer by its deadline, not wait for the removal");

    // THEN it answers with its report; the gone connection's rows are left to the next 410
    // or to TTL
    assert_eq!(response.status().as_u16(), 200);
    let report: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(report["gone"], 1, "{report}");
    assert!(proxy.calls("BatchWriteItem").injected > 0);
}
