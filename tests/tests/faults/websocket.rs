//! `$connect`, `$default` and `$disconnect` under DynamoDB faults.

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::{Value, json};
use wsbridge::auth::TokenVerifier;
use wsbridge::clock::now_micros;
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
        session: *session,
        ..Settings::default()
    };
    connect::handle(&request, &verifier, &settings.context(&f.store, sender)).await
}

/// `body` from `id` through `$default`, the frame budget's clock at `now_us`.
async fn frame_at(
    f: &Faulty,
    id: &str,
    session: &SessionConfig,
    body: &str,
    now_us: i64,
) -> (i64, Value) {
    let settings = Settings {
        session: *session,
        ..Settings::default()
    };
    let sender = RecordingSender::new();
    let request = ws_request(id, Some(body));
    let response = default::handle_at(&request, &settings.context(&f.store, &sender), now_us).await;
    (response.status_code, frame_of(&response))
}

async fn frame(f: &Faulty, id: &str, session: &SessionConfig, body: &str) -> (i64, Value) {
    let settings = Settings {
        session: *session,
        ..Settings::default()
    };
    frame_in(f, id, &settings, &RecordingSender::new(), body).await
}

/// `body` from `id` through `$default` with `settings`, posts through `sender`.
pub(super) async fn frame_in(
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
pub(super) fn budgeted() -> SessionConfig {
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
            // GIVEN a connection with budget left, and one without: the budget's clock stands
            // still, so however long DynamoDB takes, the spent budget does not refill
            let now_us = now_micros();
            let (id, spent, user) = (format!("c{n}="), format!("s{n}="), format!("u{n}"));
            registered(&f, &id, &user, &[]).await;
            registered(&f, &spent, &user, &[]).await;
            let (_, first) = frame_at(&f, &spent, &tight, whoami, now_us).await;
            assert_eq!(first["action"], "whoami");

            // WHEN each sends whoami and the budget's update meets a fault
            // (The one with budget left has plenty: an update whose answer was lost spends the
            // budget again when the SDK retries it.)
            let (status, reply) =
                under(&f, rule, frame_at(&f, &id, &budgeted(), whoami, now_us)).await;
            let (limited_status, limited) =
                under(&f, rule, frame_at(&f, &spent, &tight, whoami, now_us)).await;

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
                assert_eq!(
                    (limited_status, &limited["error"]),
                    (200, &json!("rate_limited")),
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
