//! The rooms' routes under DynamoDB faults: `publish` on `$default`, and what `$disconnect`
//! leaves in the presence of a room that announces joins and leaves.

use std::collections::BTreeSet;

use serde_json::json;
use wsbridge::channels::Channels;
use wsbridge::handlers::disconnect;
use wsbridge::protocol::ConnectionId;
use wsbridge::store::ConnectionStore;
use wsbridge::test_support::{
    RecordingSender, Settings, connection, pattern, put, topic, ws_request,
};
use wsbridge_tests::faults::Fault;
use wsbridge_tests::faults::setup::{Faulty, Traces, faulty_store};

use super::websocket::{budgeted, frame_in};
use super::{cases, each_case, label, registered, under};

/// The chat example's channels: rooms whose subscribers may publish, with presence.
pub(super) fn chat() -> Channels {
    Channels::parse(include_str!("../../../examples/channels/chat.json")).unwrap()
}

/// Registers `id` of `user` in `room`, present there as the chat example keeps presence.
pub(super) async fn present(f: &Faulty, id: &str, user: &str, room: &str) {
    put(&f.store, &connection(id, user)).await;
    f.store
        .subscribe(&ConnectionId::new(id), &[pattern(room)], &[topic(room)], 10)
        .await
        .unwrap();
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
                assert_eq!(delivered, std::slice::from_ref(&other), "{}", label(&rule));
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
            present(&f, &id, &user, &room).await;
            present(&f, &watcher, &other, &room).await;

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
