//! `GET /presence` and `GET /online` under DynamoDB faults: reads that write nothing, so a
//! fault changes only the answer.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wsbridge::test_support::{RecordingSender, Settings};
use wsbridge_tests::faults::setup::{Faulty, Traces, faulty_store};

use super::rooms::{chat, present};
use super::server_api::{get, handle_in};
use super::{cases, each_case, label, registered, under};

/// `GET path` on the server API with the chat example's channels.
async fn get_chat(f: &Faulty, path: &str) -> (u16, Value) {
    let settings = Settings {
        channels: chat(),
        ..Settings::default()
    };
    let response = handle_in(&get(path), &f.store, &RecordingSender::new(), &settings).await;
    let status = response.status().as_u16();
    (status, serde_json::from_slice(response.body()).unwrap())
}

#[tokio::test]
async fn presence_reads_through_transient_faults_and_answers_500_when_they_persist() {
    let base = faulty_store().await;
    each_case(
        &base,
        cases(&["Query"]),
        |n, rule, persists, f| async move {
            // GIVEN two users in a room
            let room = format!("room:{n}");
            let (a, b) = (format!("a{n}"), format!("b{n}"));
            present(&f, &format!("{a}="), &a, &room).await;
            present(&f, &format!("{b}="), &b, &room).await;

            // WHEN a backend asks who is there and reading the room meets a fault
            let path = format!("/presence?topic={room}");
            let (status, answer) = under(&f, rule, get_chat(&f, &path)).await;

            // THEN a transient fault is invisible; a persistent one is 500 internal_error, safe to
            // retry; the room is unchanged either way
            if persists {
                assert_eq!(
                    (status, &answer["error"]),
                    (500, &json!("internal_error")),
                    "{}: {answer}",
                    label(&rule)
                );
            } else {
                assert_eq!(status, 200, "{}: {answer}", label(&rule));
                let users: BTreeSet<&str> = answer["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|u| u["user_id"].as_str())
                    .collect();
                assert_eq!(users, BTreeSet::from([a.as_str(), b.as_str()]), "{answer}");
                assert_eq!(answer["total_connections"], 2, "{answer}");
            }
            for user in [&a, &b] {
                let id = format!("{user}=");
                let traces = f.table.traces(&id, user, &[&room]).await;
                assert_eq!(traces, Traces::registered(&[&room]), "{}", label(&rule));
            }
            let (status, answer) = get_chat(&f, &path).await;
            assert_eq!(status, 200, "{}: retried: {answer}", label(&rule));
            assert_eq!(answer["total_users"], 2, "{}: {answer}", label(&rule));
        },
    )
    .await;
}

#[tokio::test]
async fn online_reads_through_transient_faults_and_answers_500_when_they_persist() {
    let base = faulty_store().await;
    let operations = ["GetItem", "BatchGetItem"];
    each_case(
        &base,
        cases(&operations),
        |n, rule, persists, f| async move {
            // GIVEN a user on two devices
            let user = format!("u{n}");
            let devices = [format!("{user}-1="), format!("{user}-2=")];
            for id in &devices {
                registered(&f, id, &user, &[]).await;
            }

            // WHEN a backend asks whether the user is online and reading their rows meets a fault
            let path = format!("/online?user_id={user}");
            let (status, answer) = under(&f, rule, get_chat(&f, &path)).await;

            // THEN a transient fault is invisible: online, both devices; a persistent one is 500
            // internal_error (never "offline"), safe to retry; nothing is changed either way
            if persists {
                assert_eq!(
                    (status, &answer["error"]),
                    (500, &json!("internal_error")),
                    "{}: {answer}",
                    label(&rule)
                );
            } else {
                assert_eq!(status, 200, "{}: {answer}", label(&rule));
                assert_eq!(answer["online"], true, "{}: {answer}", label(&rule));
                let ids: BTreeSet<&str> = answer["connections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["connection_id"].as_str())
                    .collect();
                let expected: BTreeSet<&str> = devices.iter().map(String::as_str).collect();
                assert_eq!(ids, expected, "{}: {answer}", label(&rule));
            }
            for id in &devices {
                let traces = f.table.traces(id, &user, &[]).await;
                assert_eq!(traces, Traces::registered(&[]), "{}", label(&rule));
            }
            let (status, answer) = get_chat(&f, &path).await;
            assert_eq!(
                (status, &answer["online"]),
                (200, &json!(true)),
                "{}: retried: {answer}",
                label(&rule)
            );
        },
    )
    .await;
}
