//! `$connect`, `$default` and `$disconnect` under DynamoDB faults.

use std::collections::{BTreeSet, HashMap};

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::{Value, json};
use wsbridge::auth::TokenVerifier;
use wsbridge::channels::Channels;
use wsbridge::config::SessionConfig;
use wsbridge::handlers::{connect, default, disconnect};
use wsbridge::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use wsbridge::test_support::{RecordingSender, Settings, frame_of, ws_request};
use wsbridge_tests::faults::Fault;
use wsbridge_tests::faults::setup::{Faulty, Traces, faulty_store};
use wsbridge_tests::gateway::token;

use super::{cases, each_case, label, left_by_removal, lost_deletion, registered, under};

/// `$connect` of `id` with a token for `user`.
fn connect_request(id: &str, user: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut request = ws_request(id, None);
    request.query_string_parameters = HashMap::from([("token".to_owned(), token(user))]).into();
    request
}

async fn run_connect(
    f: &Faulty,
    id: &str,
    user: &str,
    session: &SessionConfig,
    sender: &RecordingSender,
) -> ApiGatewayProxyResponse {
    let verifier = TokenVerifier::new(&wsbridge::dev::auth_config()).unwrap();
    let request = connect_request(id, user);
    let settings = Settings {
        session: session.clone(),
        ..Settings::default()
    };
    connect::handle(&request, &verifier, &settings.context(&f.store, sender)).await
}

async fn frame(f: &Faulty, id: &str, session: &SessionConfig, body: &str) -> (i64, Value) {
    let settings = Settings {
        session: session.clone(),
        ..Settings::default()
    };
    frame_in(f, id, &settings, &RecordingSender::new(), body).await
}

/// `body` from `id` through `$default` with `settings`, posts through `sender`.
async fn frame_in(
    f: &Faulty,
    id: &str,
    settings: &Settings,
    sender: &RecordingSender,
    body: &str,
) -> (i64, Value) {
    let request = ws_request(id, Some(body));
    let response = default::handle(&request, &settings.context(&f.store, sender)).await;
    (response.status_code, frame_of(&response))
}

#[tokio::test]
async fn connect_registers_through_transient_faults_and_registers_nothing_when_they_persist() {
    let base = faulty_store().await;
    let session = SessionConfig::default();
    each_case(
        &base,
        cases(&["GetItem", "TransactWriteItems"]),
        |n, rule, persists, f| async move {
            // GIVEN a user with no connection, and a fault on one of the calls registering costs
            let (id, user) = (format!("c{n}="), format!("u{n}"));

            // WHEN the user connects
            let sender = RecordingSender::new();
            let response = under(&f, rule, run_connect(&f, &id, &user, &session, &sender)).await;

            // THEN a transient fault is invisible: 200 and registered; a persistent one refuses
            // the handshake with 500 and leaves nothing, not even a connection whose answer was
            // lost (it would count against the user's limit until it expired)
            let (status, left) = if persists {
                (500, Traces::none())
            } else {
                (200, Traces::registered(&[]))
            };
            assert_eq!(response.status_code, status, "{}", label(&rule));
            assert_eq!(
                f.table.traces(&id, &user, &[]).await,
                left,
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn close_oldest_admits_the_new_connection_whatever_removing_the_oldest_meets() {
    let base = faulty_store().await;
    let session = SessionConfig {
        connection_limit: ConnectionLimit {
            per_user: 1,
            policy: LimitPolicy::CloseOldest,
        },
        ..SessionConfig::default()
    };
    each_case(
        &base,
        cases(&["DeleteItem", "BatchWriteItem", "UpdateItem"]),
        |n, rule, persists, f| async move {
            // GIVEN a user at the limit of one, whose connection watches a room
            let (old, new, user, room) = (
                format!("old{n}="),
                format!("new{n}="),
                format!("u{n}"),
                format!("room:{n}"),
            );
            registered(&f, &old, &user, &[&room]).await;

            // WHEN a second connection arrives, and removing the oldest meets a fault
            let sender = RecordingSender::new();
            let response = under(&f, rule, run_connect(&f, &new, &user, &session, &sender)).await;

            // THEN the new connection is admitted and the oldest closed, always; the oldest's
            // rows are gone, except what a persistent fault kept (its `$disconnect` finds them,
            // or TTL ends them): it no longer counts either way
            assert_eq!(response.status_code, 200, "{}", label(&rule));
            let closed: Vec<String> = sender
                .closed()
                .iter()
                .map(|r| r.connection_id.to_string())
                .collect();
            assert_eq!(closed, vec![old.clone()], "{}", label(&rule));
            assert_eq!(
                f.table.traces(&new, &user, &[]).await,
                Traces::registered(&[]),
                "{}",
                label(&rule)
            );
            let left = if persists || lost_deletion(&rule) {
                left_by_removal(&rule, &[&room])
            } else {
                Traces::none()
            };
            let left = Traces {
                counted: false,
                ..left
            };
            assert_eq!(
                f.table.traces(&old, &user, &[&room]).await,
                left,
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn disconnect_answers_200_and_removes_what_the_faults_let_it() {
    let base = faulty_store().await;
    each_case(
        &base,
        cases(&["DeleteItem", "BatchWriteItem", "UpdateItem"]),
        |n, rule, persists, f| async move {
            // GIVEN a connection on two topics
            let (id, user) = (format!("c{n}="), format!("u{n}"));
            let topics = [format!("a:{n}"), format!("b:{n}")];
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            registered(&f, &id, &user, &topics).await;

            // WHEN its $disconnect meets a fault
            let response = under(
                &f,
                rule,
                disconnect::handle(
                    &ws_request(&id, None),
                    &Settings::default().context(&f.store, &RecordingSender::new()),
                ),
            )
            .await;

            // THEN API Gateway gets 200 regardless; a transient fault removes everything, a
            // persistent one leaves exactly what the step it stopped could not remove
            assert_eq!(response.status_code, 200, "{}", label(&rule));
            let left = f.table.traces(&id, &user, &topics).await;
            if persists && rule.fault == Fault::Unprocessed {
                // The batch halves each round until one row never goes.
                assert_eq!(
                    left.subscription_rows.len(),
                    1,
                    "{}: {left:?}",
                    label(&rule)
                );
                assert!(
                    !left.connection_row && !left.counted,
                    "{}: {left:?}",
                    label(&rule)
                );
                return;
            }
            let expected = if persists || lost_deletion(&rule) {
                left_by_removal(&rule, &topics)
            } else {
                Traces::none()
            };
            assert_eq!(left, expected, "{}", label(&rule));
        },
    )
    .await;
}

/// The rate limit of the functions' default configuration, so every frame takes one
/// `UpdateItem` from the budget.
fn budgeted() -> SessionConfig {
    SessionConfig {
        rate_limit: Some(RateLimit {
            per_second: 10,
            burst: 40,
        }),
        ..SessionConfig::default()
    }
}

#[tokio::test]
async fn subscribe_is_all_or_nothing_under_every_fault() {
    let base = faulty_store().await;
    let session = budgeted();
    each_case(
        &base,
        cases(&["UpdateItem", "GetItem", "TransactWriteItems"]),
        |n, rule, persists, f| async move {
            // GIVEN a connection that watches nothing
            let (id, user) = (format!("c{n}="), format!("u{n}"));
            let topics = [format!("a:{n}"), format!("b:{n}")];
            registered(&f, &id, &user, &[]).await;

            // WHEN it subscribes to two topics and one of the calls meets a fault
            let body = format!(
                r#"{{"action":"subscribe","topics":["{}","{}"]}}"#,
                topics[0], topics[1]
            );
            let (status, reply) = under(&f, rule, frame(&f, &id, &session, &body)).await;

            // THEN a transient fault is invisible; a persistent one answers 500 internal_error.
            // Either way the subscription is whole or absent, on the row and in the topic rows
            // alike; it is whole only when the reply says subscribed, or when the transaction's
            // answer was lost after DynamoDB applied it (a retry is then a no-op)
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let left = f.table.traces(&id, &user, &names).await;
            let held = f.table.topics_of(&id).await;
            assert_eq!(held, left.subscription_rows, "{}", label(&rule));
            let applied = !persists
                || (rule.operation == "TransactWriteItems" && rule.fault == Fault::LostAnswer);
            if persists {
                assert_eq!(status, 500, "{}: {reply}", label(&rule));
                assert_eq!(reply["error"], "internal_error", "{}", label(&rule));
            } else {
                assert_eq!(status, 200, "{}: {reply}", label(&rule));
                assert_eq!(reply["action"], "subscribed", "{}", label(&rule));
            }
            let expected = if applied { names.clone() } else { vec![] };
            assert_eq!(left, Traces::registered(&expected), "{}", label(&rule));
        },
    )
    .await;
}

#[tokio::test]
async fn unsubscribe_is_all_or_nothing_under_every_fault() {
    let base = faulty_store().await;
    let session = budgeted();
    each_case(
        &base,
        cases(&["UpdateItem", "GetItem", "TransactWriteItems"]),
        |n, rule, persists, f| async move {
            // GIVEN a connection on three topics
            let (id, user) = (format!("c{n}="), format!("u{n}"));
            let topics = [format!("a:{n}"), format!("b:{n}"), format!("c:{n}")];
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            registered(&f, &id, &user, &names).await;

            // WHEN it leaves two of them and one of the calls meets a fault
            let body = format!(
                r#"{{"action":"unsubscribe","topics":["{}","{}"]}}"#,
                topics[0], topics[1]
            );
            let (status, reply) = under(&f, rule, frame(&f, &id, &session, &body)).await;

            // THEN as for subscribe: invisible when transient, 500 internal_error when
            // persistent, and the change whole or absent
            let applied = !persists
                || (rule.operation == "TransactWriteItems" && rule.fault == Fault::LostAnswer);
            if persists {
                assert_eq!(status, 500, "{}: {reply}", label(&rule));
                assert_eq!(reply["error"], "internal_error", "{}", label(&rule));
            } else {
                assert_eq!(reply["action"], "unsubscribed", "{}: {reply}", label(&rule));
            }
            let expected = if applied { &names[2..] } else { &names[..] };
            let left = f.table.traces(&id, &user, &names).await;
            assert_eq!(left, Traces::registered(expected), "{}", label(&rule));
            assert_eq!(
                f.table.topics_of(&id).await,
                left.subscription_rows,
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn whoami_and_the_rate_limited_path_answer_500_only_when_the_budget_cannot_be_read() {
    let base = faulty_store().await;
    // One frame a second with no burst: after the first frame, the next is refused.
    let tight = SessionConfig {
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 1,
        }),
        ..SessionConfig::default()
    };
    let whoami = r#"{"action":"whoami"}"#;
    each_case(
        &base,
        cases(&["UpdateItem"]),
        |n, rule, persists, f| async move {
            // GIVEN a connection with budget left, and one without
            let (id, spent, user) = (format!("c{n}="), format!("s{n}="), format!("u{n}"));
            registered(&f, &id, &user, &[]).await;
            registered(&f, &spent, &user, &[]).await;
            let (_, first) = frame(&f, &spent, &tight, whoami).await;
            assert_eq!(first["action"], "whoami");

            // WHEN each sends whoami and the budget's update meets a fault
            // (The one with budget left has plenty: an update whose answer was lost spends the
            // budget again when the SDK retries it.)
            let (status, reply) = under(&f, rule, frame(&f, &id, &budgeted(), whoami)).await;
            let (limited_status, limited) =
                under(&f, rule, frame(&f, &spent, &tight, whoami)).await;

            // THEN a transient fault is invisible (whoami, rate_limited); a persistent one is
            // 500 internal_error for both
            if persists {
                for (status, reply) in [(status, &reply), (limited_status, &limited)] {
                    assert_eq!(status, 500, "{}: {reply}", label(&rule));
                    assert_eq!(reply["error"], "internal_error", "{}", label(&rule));
                }
            } else {
                assert_eq!(reply["action"], "whoami", "{}: {reply}", label(&rule));
                assert_eq!(reply["connection_id"], id.as_str(), "{}", label(&rule));
                // A held attempt outlasts the budget's one-second refill: by the time the
                // retry is answered, the frame fits again.
                let slow = matches!(rule.fault, Fault::Timeout | Fault::LostAnswer);
                let refused = limited["error"] == "rate_limited";
                assert!(
                    refused || (slow && limited["action"] == "whoami"),
                    "{}: {limited}",
                    label(&rule)
                );
            }
            assert_eq!(
                f.table.traces(&id, &user, &[]).await,
                Traces::registered(&[]),
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}

/// The chat example's channels: rooms whose subscribers may publish, with presence.
pub(super) fn chat() -> Channels {
    Channels::parse(include_str!("../../../examples/channels/chat.json")).unwrap()
}

#[tokio::test]
async fn publish_reaches_the_room_through_transient_faults_and_answers_500_when_they_persist() {
    let base = faulty_store().await;
    let settings = Settings {
        session: budgeted(),
        channels: chat(),
        ..Settings::default()
    };
    let settings = &settings;
    each_case(
        &base,
        cases(&["Query"]),
        |n, rule, persists, f| async move {
            // GIVEN two connections in a room
            let (id, other, user, room) = (
                format!("c{n}="),
                format!("o{n}="),
                format!("u{n}"),
                format!("room:{n}"),
            );
            registered(&f, &id, &user, &[&room]).await;
            registered(&f, &other, &format!("v{n}"), &[&room]).await;

            // WHEN one publishes there and reading the room's subscribers meets a fault
            let sender = RecordingSender::new();
            let body = format!(r#"{{"action":"publish","topic":"{room}","event":"e","data":1}}"#);
            let (status, reply) =
                under(&f, rule, frame_in(&f, &id, settings, &sender, &body)).await;

            // THEN a transient fault is invisible: published, delivered to the other; a
            // persistent one answers 500 internal_error with nothing sent. The room is as it
            // was either way: a publish writes nothing
            if persists {
                assert_eq!(status, 500, "{}: {reply}", label(&rule));
                assert_eq!(reply["error"], "internal_error", "{}", label(&rule));
                assert_eq!(sender.posts().len(), 0, "{}", label(&rule));
            } else {
                assert_eq!(status, 200, "{}: {reply}", label(&rule));
                assert_eq!(reply["action"], "published", "{}: {reply}", label(&rule));
                assert_eq!(
                    (&reply["recipients"], &reply["delivered"]),
                    (&json!(1), &json!(1)),
                    "{}: {reply}",
                    label(&rule)
                );
                let delivered: Vec<String> = sender
                    .delivered_to()
                    .iter()
                    .map(|c| c.to_string())
                    .collect();
                assert_eq!(delivered, [other.clone()], "{}", label(&rule));
            }
            for (id, user) in [(&id, user.clone()), (&other, format!("v{n}"))] {
                assert_eq!(
                    f.table.traces(id, &user, &[&room]).await,
                    Traces::registered(&[&room]),
                    "{}: {id}",
                    label(&rule)
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn disconnect_leaves_the_room_and_says_so_unless_the_leave_persistently_fails() {
    let base = faulty_store().await;
    let settings = Settings {
        channels: chat(),
        ..Settings::default()
    };
    let settings = &settings;
    each_case(
        &base,
        cases(&["BatchWriteItem", "UpdateItem"]),
        |n, rule, persists, f| async move {
            // GIVEN two users present in a room that announces joins and leaves
            let room = format!("room:{n}");
            let (user, other) = (format!("u{n}"), format!("v{n}"));
            let (id, watcher) = (format!("{user}="), format!("{other}="));
            super::queries::present(&f, &id, &user, &room).await;
            super::queries::present(&f, &watcher, &other, &room).await;

            // WHEN one disconnects and deleting its subscription rows, or the updates that
            // take it out of its user row and of the room's presence, meet a fault
            let sender = RecordingSender::new();
            let request = ws_request(&id, None);
            let response = under(
                &f,
                rule,
                disconnect::handle(&request, &settings.context(&f.store, &sender)),
            )
            .await;

            // THEN 200 regardless. A transient fault is invisible: out of the room, and the
            // other user is told. A persistent one announces nothing; the presence entry stays
            // only when its own update failed (the user shows as present until it expires):
            // a failed deletion of subscription rows does not keep the user in the room
            assert_eq!(response.status_code, 200, "{}", label(&rule));
            let present = f.table.present(&room, &user).await;
            let stays =
                persists && rule.operation == "UpdateItem" && rule.fault != Fault::LostAnswer;
            assert_eq!(
                present.contains(&id),
                stays,
                "{}: {present:?}",
                label(&rule)
            );
            let told: Vec<String> = sender
                .delivered_to()
                .iter()
                .map(|c| c.to_string())
                .collect();
            let expected = if persists {
                vec![]
            } else {
                vec![watcher.clone()]
            };
            assert_eq!(told, expected, "{}", label(&rule));
            assert_eq!(
                f.table.present(&room, &other).await,
                BTreeSet::from([watcher.clone()]),
                "{}",
                label(&rule)
            );
        },
    )
    .await;
}
