//! `/subscribe`, `/unsubscribe` and `/disconnect` under DynamoDB faults: whole per
//! connection, and safe to retry.

use lambda_http::http::Method;
use serde_json::json;
use wsbridge::test_support::RecordingSender;
use wsbridge_tests::faults::Fault;
use wsbridge_tests::faults::setup::{Traces, faulty_store};

use super::server_api::{call, ids};
use super::{cases, each_case, label, left_by_removal, lost_deletion, registered, under};

#[tokio::test]
async fn server_subscribe_and_unsubscribe_are_whole_per_connection_and_safe_to_retry() {
    let base = faulty_store().await;
    let operations = ["GetItem", "BatchGetItem", "TransactWriteItems"];
    each_case(
        &base,
        cases(&operations),
        |n, rule, persists, f| async move {
            for path in ["/subscribe", "/unsubscribe"] {
                // GIVEN a user's two connections, both on `kept`, and on `topic` when leaving it
                let user = format!("u{n}{}", &path[1..]);
                let (topic, kept) = (format!("admin:{n}"), format!("k:{n}"));
                let conns = ids(&user, 2);
                let leaving = path == "/unsubscribe";
                for id in &conns {
                    let topics = if leaving {
                        vec![kept.as_str(), topic.as_str()]
                    } else {
                        vec![kept.as_str()]
                    };
                    registered(&f, id, &user, &topics).await;
                }

                // WHEN the backend changes the user's subscriptions and the store meets a fault
                let body = json!({"topic": topic, "user_id": user});
                let sender = RecordingSender::new();
                let (status, answer) = under(
                    &f,
                    rule,
                    call(&f.store, &sender, Method::POST, path, body.clone()),
                )
                .await;

                // THEN a transient fault is invisible; a persistent one is 500, and each
                // connection has the change whole or not at all (whole when only answers were
                // lost); retrying then answers 200 and completes it
                let context = format!("{path}: {}", label(&rule));
                let applied = !persists
                    || (rule.operation == "TransactWriteItems" && rule.fault == Fault::LostAnswer);
                if persists {
                    assert_eq!(
                        (status, &answer["error"]),
                        (500, &json!("internal_error")),
                        "{context}"
                    );
                } else {
                    assert_eq!(status, 200, "{context}: {answer}");
                    assert_eq!(answer["connections"], json!(conns), "{context}: {answer}");
                }
                let changed: Vec<&str> = if applied != leaving {
                    vec![&kept, &topic]
                } else {
                    vec![&kept]
                };
                for id in &conns {
                    let traces = f.table.traces(id, &user, &[&kept, &topic]).await;
                    assert_eq!(traces, Traces::registered(&changed), "{context}: {id}");
                    assert_eq!(
                        f.table.topics_of(id).await,
                        traces.subscription_rows,
                        "{context}"
                    );
                }
                let (status, answer) = call(&f.store, &sender, Method::POST, path, body).await;
                assert_eq!(status, 200, "{context}: retried: {answer}");
                let done: Vec<&str> = if leaving {
                    vec![&kept]
                } else {
                    vec![&kept, &topic]
                };
                for id in &conns {
                    let traces = f.table.traces(id, &user, &[&kept, &topic]).await;
                    assert_eq!(
                        traces,
                        Traces::registered(&done),
                        "{context}: retried: {id}"
                    );
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn server_disconnect_closes_and_removes_or_answers_500_and_is_safe_to_retry() {
    let base = faulty_store().await;
    let operations = ["GetItem", "DeleteItem", "BatchWriteItem", "UpdateItem"];
    each_case(
        &base,
        cases(&operations),
        |n, rule, persists, f| async move {
            // GIVEN a connection on a topic
            let (id, user, topic) = (format!("c{n}="), format!("u{n}"), format!("t:{n}"));
            registered(&f, &id, &user, &[&topic]).await;

            // WHEN the backend disconnects it and the store meets a fault
            let sender = RecordingSender::new();
            let body = json!({"connection_ids": [id]});
            let (status, answer) = under(
                &f,
                rule,
                call(&f.store, &sender, Method::POST, "/disconnect", body.clone()),
            )
            .await;

            // THEN a transient fault is invisible: closed, rows gone. A persistent one is 500:
            // a failed read closes nothing and keeps everything; past it the connection was
            // closed and its rows are what the removal could not reach
            let context = label(&rule);
            let closed = !sender.closed().is_empty();
            let traces = f.table.traces(&id, &user, &[&topic]).await;
            if !persists {
                assert_eq!(status, 200, "{context}: {answer}");
                assert_eq!(answer["disconnected"], json!([id]), "{context}: {answer}");
                assert!(closed, "{context}");
                let left = if lost_deletion(&rule) {
                    left_by_removal(&rule, &[&topic])
                } else {
                    Traces::none()
                };
                assert_eq!(traces, left, "{context}");
                return;
            }
            assert_eq!(
                (status, &answer["error"]),
                (500, &json!("internal_error")),
                "{context}"
            );
            let left = match rule.operation {
                "GetItem" => Traces::registered(&[&topic]),
                _ => left_by_removal(&rule, &[&topic]),
            };
            assert_eq!(closed, rule.operation != "GetItem", "{context}");
            assert_eq!(traces, left, "{context}");

            // AND a retry answers 200: it closes and removes what is still registered, and calls
            // the rest not connected
            let retry = RecordingSender::new();
            let (status, answer) = call(&f.store, &retry, Method::POST, "/disconnect", body).await;
            assert_eq!(status, 200, "{context}: retried: {answer}");
            let still_there = left.connection_row;
            let key = if still_there {
                "disconnected"
            } else {
                "not_connected"
            };
            assert_eq!(answer[key], json!([id]), "{context}: retried: {answer}");
            let after = f.table.traces(&id, &user, &[&topic]).await;
            let expected = if still_there { Traces::none() } else { left };
            assert_eq!(after, expected, "{context}: retried");
        },
    )
    .await;
}
