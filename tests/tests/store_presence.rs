//! Rooms in the store, one suite on both stores: presence counts users and their devices,
//! a user's first connection in a topic is its join and the last its leave (also when
//! devices race), expired connections stop counting, and a wildcard audience reaches
//! exact and pattern subscribers alike.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use futures::future::join_all;
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Grants, TopicPattern};
use wsbridge::clock::Clock;
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::store::{Audience, Connection, PresencePage, Store};
use wsbridge::test_support::put;

wsbridge_tests::conformance!(
    presence_counts_each_user_once_with_their_devices,
    the_first_device_joins_and_the_last_leaves,
    removing_the_last_device_is_a_leave,
    racing_devices_join_once_and_leave_once,
    presence_pages_keep_the_totals,
    expired_devices_stop_counting,
    a_wildcard_audience_reaches_pattern_and_exact_subscribers,
);

// ---- fixtures ----

fn id(name: &str) -> ConnectionId {
    ConnectionId::new(format!("{name}="))
}

fn room(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn pattern(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

fn connection(name: &str, user: &str, expires_at: u64) -> Connection {
    Connection {
        id: id(name),
        user_id: UserId::new(user),
        connected_at: 1_700_000_000_123,
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
        expires_at,
        grants: Grants::default(),
    }
}

async fn connect(store: &dyn Store, name: &str, user: &str) {
    put(store, &connection(name, user, now_seconds() + 7_200)).await;
}

/// Enters `topic` with presence; the topics this made the user join.
async fn enter(store: &dyn Store, name: &str, topic: &str) -> Vec<Topic> {
    store
        .subscribe(&id(name), &[pattern(topic)], &[room(topic)], 10)
        .await
        .unwrap()
}

/// Leaves `topic`; the topics this made the user leave.
async fn exit(store: &dyn Store, name: &str, topic: &str) -> Vec<Topic> {
    store
        .unsubscribe(&id(name), &[pattern(topic)])
        .await
        .unwrap()
}

fn page(users: &[(&str, u64)], total_users: u64, total_connections: u64) -> PresencePage {
    PresencePage {
        users: users
            .iter()
            .map(|(user, n)| (UserId::new(*user), *n))
            .collect(),
        total_users,
        total_connections,
        complete: true,
    }
}

async fn presence(store: &dyn Store, topic: &str) -> PresencePage {
    store.presence(&room(topic), 100).await.unwrap()
}

// ---- scenarios ----

async fn presence_counts_each_user_once_with_their_devices(store: &dyn Store, _: &Clock) {
    // GIVEN alice on two devices and bob on one in room:1, carol in room:2
    for (name, user) in [
        ("a1", "alice"),
        ("a2", "alice"),
        ("b1", "bob"),
        ("c1", "carol"),
    ] {
        connect(store, name, user).await;
    }
    for name in ["a1", "a2", "b1"] {
        enter(store, name, "room:1").await;
    }
    enter(store, "c1", "room:2").await;

    // THEN each room lists its users once, by id, with their devices
    assert_eq!(
        presence(store, "room:1").await,
        page(&[("alice", 2), ("bob", 1)], 2, 3)
    );
    assert_eq!(presence(store, "room:2").await, page(&[("carol", 1)], 1, 1));
    assert_eq!(presence(store, "room:3").await, page(&[], 0, 0));
}

async fn the_first_device_joins_and_the_last_leaves(store: &dyn Store, _: &Clock) {
    connect(store, "a1", "alice").await;
    connect(store, "a2", "alice").await;
    // the first device joins, the second does not, entering again changes nothing
    assert_eq!(enter(store, "a1", "room:1").await, vec![room("room:1")]);
    assert_eq!(enter(store, "a2", "room:1").await, vec![]);
    assert_eq!(enter(store, "a1", "room:1").await, vec![]);
    assert_eq!(presence(store, "room:1").await, page(&[("alice", 2)], 1, 2));
    // leaving: the first to go does not leave, the last does; leaving twice is nothing
    assert_eq!(exit(store, "a1", "room:1").await, vec![]);
    assert_eq!(exit(store, "a2", "room:1").await, vec![room("room:1")]);
    assert_eq!(exit(store, "a2", "room:1").await, vec![]);
    assert_eq!(presence(store, "room:1").await, page(&[], 0, 0));
    // and back in: a join again
    assert_eq!(enter(store, "a2", "room:1").await, vec![room("room:1")]);
}

async fn removing_the_last_device_is_a_leave(store: &dyn Store, _: &Clock) {
    connect(store, "a1", "alice").await;
    connect(store, "a2", "alice").await;
    enter(store, "a1", "room:1").await;
    enter(store, "a1", "room:2").await;
    enter(store, "a2", "room:2").await;
    // a1 goes: alice is out of room:1, still in room:2 on a2
    let removed = store.remove_connection(&id("a1")).await.unwrap().unwrap();
    assert_eq!(removed.left, vec![room("room:1")]);
    let topics: BTreeSet<TopicPattern> = removed.topics.into_iter().collect();
    assert_eq!(
        topics,
        BTreeSet::from([pattern("room:1"), pattern("room:2")])
    );
    assert_eq!(presence(store, "room:2").await, page(&[("alice", 1)], 1, 1));
    // a2 goes: out of room:2 too
    let removed = store.remove_connection(&id("a2")).await.unwrap().unwrap();
    assert_eq!(removed.left, vec![room("room:2")]);
    assert_eq!(presence(store, "room:2").await, page(&[], 0, 0));
}

async fn racing_devices_join_once_and_leave_once(store: &dyn Store, _: &Clock) {
    // Four devices of one user enter (then leave) the same room at once, many times over:
    // exactly one is the join, exactly one the leave.
    let devices = ["d1", "d2", "d3", "d4"];
    for name in devices {
        connect(store, name, "alice").await;
    }
    for round in 0..15 {
        let topic = format!("room:{round}");
        let joins = join_all(devices.iter().map(|name| enter(store, name, &topic))).await;
        let joined = joins.iter().filter(|j| !j.is_empty()).count();
        assert_eq!(joined, 1, "round {round}: {joins:?}");
        assert_eq!(
            presence(store, &topic).await,
            page(&[("alice", 4)], 1, 4),
            "round {round}"
        );
        let leaves = join_all(devices.iter().map(|name| exit(store, name, &topic))).await;
        let left = leaves.iter().filter(|l| !l.is_empty()).count();
        assert_eq!(left, 1, "round {round}: {leaves:?}");
        assert_eq!(
            presence(store, &topic).await,
            page(&[], 0, 0),
            "round {round}"
        );
    }
}

async fn presence_pages_keep_the_totals(store: &dyn Store, _: &Clock) {
    for n in 0..5 {
        let (name, user) = (format!("c{n}"), format!("user{n}"));
        connect(store, &name, &user).await;
        enter(store, &name, "room:big").await;
    }
    let first = store.presence(&room("room:big"), 2).await.unwrap();
    assert_eq!(first, page(&[("user0", 1), ("user1", 1)], 5, 5));
}

async fn expired_devices_stop_counting(store: &dyn Store, clock: &Clock) {
    // GIVEN alice on a device that expires in a minute and one that lasts, bob expiring
    let now = clock.now_seconds();
    put(store, &connection("short", "alice", now + 60)).await;
    put(store, &connection("long", "alice", now + 7_200)).await;
    put(store, &connection("bob", "bob", now + 60)).await;
    for name in ["short", "long", "bob"] {
        enter(store, name, "room:1").await;
    }
    assert_eq!(
        presence(store, "room:1").await,
        page(&[("alice", 2), ("bob", 1)], 2, 3)
    );
    // WHEN the short ones expire (without any $disconnect)
    clock.advance(120);
    // THEN they are not present, and bob is gone entirely
    assert_eq!(presence(store, "room:1").await, page(&[("alice", 1)], 1, 1));
}

async fn a_wildcard_audience_reaches_pattern_and_exact_subscribers(store: &dyn Store, _: &Clock) {
    // GIVEN a dashboard on list:*, a viewer on list:7, one on both, one on list:8
    for (name, topics) in [
        ("dashboard", vec!["list:*"]),
        ("viewer", vec!["list:7"]),
        ("both", vec!["list:7", "list:*"]),
        ("other", vec!["list:8"]),
    ] {
        connect(store, name, name).await;
        let topics: Vec<TopicPattern> = topics.into_iter().map(pattern).collect();
        store.subscribe(&id(name), &topics, &[], 10).await.unwrap();
    }
    // WHEN list:7's audience is read through both keys
    let audience = Audience::Subscribers(vec![pattern("list:7"), pattern("list:*")]);
    let pages: Vec<_> = store.recipients(&audience).try_collect().await.unwrap();
    let read: Vec<ConnectionId> = pages
        .into_iter()
        .flatten()
        .map(|r| r.connection_id)
        .collect();
    // THEN the three holders are there, list:8's is not; a holder of both keys is read
    // at most once per key (fan-out delivers once)
    let unique: BTreeSet<ConnectionId> = read.iter().cloned().collect();
    assert_eq!(
        unique,
        BTreeSet::from([id("dashboard"), id("viewer"), id("both")])
    );
    assert!(read.len() <= 4, "{read:?}");
}
