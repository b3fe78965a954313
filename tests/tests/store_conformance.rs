//! One conformance suite, run against both stores: the in-memory one and the DynamoDB one on
//! DynamoDB Local (started by scripts/test.sh; without it these tests fail, never skip).

use std::collections::BTreeSet;

use futures::TryStreamExt;
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Grants, TopicPattern};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::Audience;
use wsbridge::store::{Connection, StoreError};
use wsbridge::test_support::put;

use wsbridge::clock::Clock;
use wsbridge::store::Store;

wsbridge_tests::conformance!(
    put_then_get_returns_the_same_connection,
    unknown_connection_is_none_and_removing_it_succeeds,
    topic_recipients_are_exactly_its_live_subscribers,
    subscribe_enforces_the_topic_limit_atomically,
    unsubscribe_removes_only_the_named_topics,
    subscribing_an_unknown_connection_is_refused,
    remove_connection_removes_every_subscription,
    user_target_finds_all_connections_of_that_user,
    all_target_and_count_cover_every_live_connection_across_pages,
    connections_target_returns_only_live_ids,
    remove_connections_handles_more_than_one_batch,
    expired_rows_are_invisible_before_ttl_deletes_them,
    a_connection_still_connecting_survives_a_410,
);

// ---- fixtures ----

fn id(n: impl std::fmt::Display) -> ConnectionId {
    ConnectionId::new(format!("conn{n}="))
}

fn topic(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

fn connection(n: impl std::fmt::Display, user: &str) -> Connection {
    Connection {
        id: id(n),
        user_id: UserId::new(user),
        connected_at: 1_700_000_000_123,
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
        expires_at: now_seconds() + 7_200,
        grants: Grants::default(),
    }
}

async fn ids_of(store: &dyn Store, target: &Audience) -> Vec<ConnectionId> {
    let pages: Vec<_> = store.recipients(target).try_collect().await.unwrap();
    let mut ids: Vec<ConnectionId> = pages
        .into_iter()
        .flatten()
        .map(|r| r.connection_id)
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: impl IntoIterator<Item = ConnectionId>) -> Vec<ConnectionId> {
    let set: BTreeSet<ConnectionId> = ids.into_iter().collect();
    set.into_iter().collect()
}

// ---- scenarios ----

async fn put_then_get_returns_the_same_connection(store: &dyn Store, _: &Clock) {
    let alice = Connection {
        grants: Grants {
            // sorted, as grants are kept
            subscribe: vec![
                TopicPattern::parse("org:*").unwrap(),
                TopicPattern::parse("team:7").unwrap(),
            ],
            publish: vec![TopicPattern::parse("room:1").unwrap()],
        },
        ..connection(1, "alice")
    };
    put(store, &alice).await;
    assert_eq!(store.get_connection(&alice.id).await.unwrap(), Some(alice));
}

async fn unknown_connection_is_none_and_removing_it_succeeds(store: &dyn Store, _: &Clock) {
    assert_eq!(store.get_connection(&id("nobody")).await.unwrap(), None);
    store.remove_connection(&id("nobody")).await.unwrap();
    store
        .remove_gone(&[id("x"), id("y")], &Audience::All)
        .await
        .unwrap();
}

async fn topic_recipients_are_exactly_its_live_subscribers(store: &dyn Store, _: &Clock) {
    // GIVEN ten connections, the even ones on "list:1", all on "list:2", one subscribing twice
    for n in 0..10 {
        put(store, &connection(n, "u")).await;
        let topics = if n % 2 == 0 {
            vec![topic("list:1"), topic("list:2")]
        } else {
            vec![topic("list:2")]
        };
        store.subscribe(&id(n), &topics, &[], 10).await.unwrap();
    }
    store
        .subscribe(&id(0), &[topic("list:1")], &[], 10)
        .await
        .unwrap();
    // THEN each topic lists exactly its subscribers, each once, across several pages
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("list:1")])).await,
        sorted((0..10).step_by(2).map(id))
    );
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("list:2")])).await,
        sorted((0..10).map(id))
    );
    assert!(
        ids_of(store, &Audience::Subscribers(vec![topic("empty")]))
            .await
            .is_empty()
    );
    let pages: Vec<_> = store
        .recipients(&Audience::Subscribers(vec![topic("list:2")]))
        .try_collect()
        .await
        .unwrap();
    assert!(
        pages.len() >= 10 / wsbridge_tests::PAGE_SIZE,
        "only {} pages",
        pages.len()
    );
}

async fn subscribe_enforces_the_topic_limit_atomically(store: &dyn Store, _: &Clock) {
    put(store, &connection(1, "u")).await;
    store
        .subscribe(&id(1), &[topic("a"), topic("b")], &[], 3)
        .await
        .unwrap();
    // "b" is held already, so only "c" counts against the limit
    store
        .subscribe(&id(1), &[topic("b"), topic("c")], &[], 3)
        .await
        .unwrap();
    let refused = store
        .subscribe(&id(1), &[topic("a"), topic("d")], &[], 3)
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::TooManyTopics {
                current: 3,
                adding: 1,
                limit: 3
            })
        ),
        "{refused:?}"
    );
    assert!(
        ids_of(store, &Audience::Subscribers(vec![topic("d")]))
            .await
            .is_empty()
    );
    // re-subscribing to held topics at the limit is fine
    store
        .subscribe(&id(1), &[topic("a")], &[], 3)
        .await
        .unwrap();
    for held in ["a", "b", "c"] {
        assert_eq!(
            ids_of(store, &Audience::Subscribers(vec![topic(held)])).await,
            vec![id(1)]
        );
    }

    // AND subscribes racing on one connection cannot pass the limit together: six frames of
    // two new topics each, at once, against a limit of five
    for round in 0..3 {
        let racer = connection(format!("racer{round}"), "u");
        put(store, &racer).await;
        let requests: Vec<[TopicPattern; 2]> = (0..6)
            .map(|n| {
                [
                    topic(&format!("r{round}:{n}a")),
                    topic(&format!("r{round}:{n}b")),
                ]
            })
            .collect();
        let outcomes = futures::future::join_all(
            requests
                .iter()
                .map(|pair| store.subscribe(&racer.id, pair, &[], 5)),
        )
        .await;
        // THEN each request got all or none of its topics, and at most two got them
        let mut granted = 0;
        for (pair, outcome) in requests.iter().zip(&outcomes) {
            let held: Vec<bool> = futures::future::join_all(pair.iter().map(|t| async {
                ids_of(store, &Audience::Subscribers(vec![t.clone()])).await
                    == vec![racer.id.clone()]
            }))
            .await;
            match outcome {
                Ok(_) => {
                    granted += 1;
                    assert_eq!(held, [true, true], "round {round}: {pair:?}");
                }
                Err(StoreError::TooManyTopics { .. } | StoreError::Contended { .. }) => {
                    assert_eq!(held, [false, false], "round {round}: {pair:?}");
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(
            granted <= 2,
            "round {round}: {granted} granted, {outcomes:?}"
        );
        assert!(granted >= 1, "round {round}: {outcomes:?}");
    }
}

async fn unsubscribe_removes_only_the_named_topics(store: &dyn Store, _: &Clock) {
    put(store, &connection(1, "u")).await;
    put(store, &connection(2, "u")).await;
    for n in [1, 2] {
        store
            .subscribe(&id(n), &[topic("a"), topic("b")], &[], 10)
            .await
            .unwrap();
    }
    store
        .unsubscribe(&id(1), &[topic("a"), topic("never-held")])
        .await
        .unwrap();
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("a")])).await,
        vec![id(2)]
    );
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("b")])).await,
        vec![id(1), id(2)]
    );
    // the freed slot can be used again
    store
        .subscribe(&id(1), &[topic("c")], &[], 2)
        .await
        .unwrap();
}

async fn subscribing_an_unknown_connection_is_refused(store: &dyn Store, _: &Clock) {
    let subscribed = store.subscribe(&id("ghost"), &[topic("a")], &[], 10).await;
    assert!(matches!(subscribed, Err(StoreError::NotConnected(_))));
    let unsubscribed = store.unsubscribe(&id("ghost"), &[topic("a")]).await;
    assert!(matches!(unsubscribed, Err(StoreError::NotConnected(_))));
    assert!(
        ids_of(store, &Audience::Subscribers(vec![topic("a")]))
            .await
            .is_empty()
    );
}

async fn remove_connection_removes_every_subscription(store: &dyn Store, _: &Clock) {
    put(store, &connection(1, "u")).await;
    put(store, &connection(2, "u")).await;
    let topics: Vec<TopicPattern> = (0..8).map(|n| topic(&format!("t{n}"))).collect();
    store.subscribe(&id(1), &topics, &[], 10).await.unwrap();
    store
        .subscribe(&id(2), &topics[..1], &[], 10)
        .await
        .unwrap();

    store.remove_connection(&id(1)).await.unwrap();
    store.remove_connection(&id(1)).await.unwrap();

    assert_eq!(store.get_connection(&id(1)).await.unwrap(), None);
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topics[0].clone()])).await,
        vec![id(2)]
    );
    for t in &topics[1..] {
        assert!(
            ids_of(store, &Audience::Subscribers(vec![t.clone()]))
                .await
                .is_empty()
        );
    }
    assert_eq!(store.count_connections().await.unwrap(), 1);
}

async fn user_target_finds_all_connections_of_that_user(store: &dyn Store, _: &Clock) {
    for n in 0..7 {
        put(store, &connection(n, "alice")).await;
    }
    put(store, &connection(99, "bob")).await;
    assert_eq!(
        ids_of(store, &Audience::User(UserId::new("alice"))).await,
        sorted((0..7).map(id))
    );
    assert_eq!(
        ids_of(store, &Audience::User(UserId::new("bob"))).await,
        vec![id(99)]
    );
    assert!(
        ids_of(store, &Audience::User(UserId::new("carol")))
            .await
            .is_empty()
    );
}

async fn all_target_and_count_cover_every_live_connection_across_pages(
    store: &dyn Store,
    _: &Clock,
) {
    // 60 connections over 16 shards with pages of 3: most shards need several pages.
    for n in 0..60 {
        put(store, &connection(n, &format!("user{}", n % 5))).await;
    }
    assert_eq!(ids_of(store, &Audience::All).await, sorted((0..60).map(id)));
    assert_eq!(store.count_connections().await.unwrap(), 60);
}

async fn connections_target_returns_only_live_ids(store: &dyn Store, _: &Clock) {
    put(store, &connection(1, "u")).await;
    put(store, &connection(2, "u")).await;
    let target = Audience::Connections(vec![id(1), id("unknown"), id(2)]);
    assert_eq!(ids_of(store, &target).await, vec![id(1), id(2)]);
    // more ids than one BatchGetItem takes
    let many: Vec<ConnectionId> = (0..150)
        .map(|n| id(format!("x{n}")))
        .chain([id(2)])
        .collect();
    assert_eq!(
        ids_of(store, &Audience::Connections(many)).await,
        vec![id(2)]
    );
}

async fn remove_connections_handles_more_than_one_batch(store: &dyn Store, _: &Clock) {
    // 30 connections with 2 topics each: 90 rows, several BatchWriteItem calls of 25
    let ids: Vec<ConnectionId> = (0..30).map(id).collect();
    for n in 0..30 {
        put(store, &connection(n, "u")).await;
        store
            .subscribe(&id(n), &[topic("a"), topic("b")], &[], 10)
            .await
            .unwrap();
    }
    put(store, &connection("keep", "u")).await;
    store
        .subscribe(&id("keep"), &[topic("a")], &[], 10)
        .await
        .unwrap();

    store.remove_gone(&ids, &Audience::All).await.unwrap();

    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("a")])).await,
        vec![id("keep")]
    );
    assert!(
        ids_of(store, &Audience::Subscribers(vec![topic("b")]))
            .await
            .is_empty()
    );
    assert_eq!(ids_of(store, &Audience::All).await, vec![id("keep")]);
}

async fn expired_rows_are_invisible_before_ttl_deletes_them(store: &dyn Store, clock: &Clock) {
    // GIVEN a connection that expires in two seconds, subscribed to a topic, and one that
    // lives on
    let now = clock.now_seconds();
    let mut short = connection("short", "alice");
    short.expires_at = now + 2;
    put(store, &short).await;
    store
        .subscribe(&short.id, &[topic("t")], &[], 10)
        .await
        .unwrap();
    put(store, &connection("long", "alice")).await;
    store
        .subscribe(&id("long"), &[topic("t")], &[], 10)
        .await
        .unwrap();
    assert_eq!(store.count_connections().await.unwrap(), 2);

    // WHEN its expiry passes (DynamoDB TTL deletes rows only eventually): the store's clock
    // moves three seconds, no test sleeps
    clock.advance(3);

    // THEN no read returns it, and it cannot subscribe any more
    let alive = vec![id("long")];
    assert_eq!(store.get_connection(&short.id).await.unwrap(), None);
    assert_eq!(
        ids_of(store, &Audience::Subscribers(vec![topic("t")])).await,
        alive
    );
    assert_eq!(
        ids_of(store, &Audience::User(UserId::new("alice"))).await,
        alive
    );
    assert_eq!(ids_of(store, &Audience::All).await, alive);
    let named = Audience::Connections(vec![short.id.clone(), id("long")]);
    assert_eq!(ids_of(store, &named).await, alive);
    assert_eq!(store.count_connections().await.unwrap(), 1);
    assert!(matches!(
        store.subscribe(&short.id, &[topic("u")], &[], 10).await,
        Err(StoreError::NotConnected(_))
    ));
    let counted: Vec<ConnectionId> = store
        .user_connections(&UserId::new("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(counted, alive);
    // and removing it still cleans up its rows
    store.remove_connection(&short.id).await.unwrap();
}

// ---- DynamoDB failures, classified (DynamoDB Local) ----

#[tokio::test]
async fn a_missing_table_is_a_rejected_request_and_a_dead_endpoint_an_unavailable_one() {
    use wsbridge::store::{ConnectionStore, DynamoDbStore, Failure};
    use wsbridge_local::local_sdk_config;
    use wsbridge_tests::dynamodb_endpoint;

    // GIVEN a store on a table that does not exist, and one on a port nobody listens on
    let missing = DynamoDbStore::from_sdk_config(
        &local_sdk_config(Some(&dynamodb_endpoint())),
        "wsbridge-no-such-table",
    );
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        port
    };
    let dead = DynamoDbStore::from_sdk_config(
        &local_sdk_config(Some(&format!("http://127.0.0.1:{closed_port}"))),
        "t",
    );

    // WHEN each is read
    let rejected = missing.get_connection(&id(1)).await.unwrap_err();
    let unavailable = dead.get_connection(&id(1)).await.unwrap_err();

    // THEN the first is a bug to fix, not to retry; the second is worth retrying
    assert!(
        matches!(
            rejected,
            StoreError::Backend {
                failure: Failure::Rejected,
                ..
            }
        ),
        "{rejected}"
    );
    assert!(!rejected.is_retryable());
    assert!(
        rejected.to_string().contains("ResourceNotFoundException"),
        "{rejected}"
    );
    assert!(
        matches!(
            unavailable,
            StoreError::Backend {
                failure: Failure::Unavailable,
                ..
            }
        ),
        "{unavailable}"
    );
    assert!(unavailable.is_retryable());
}

async fn a_connection_still_connecting_survives_a_410(store: &dyn Store, clock: &Clock) {
    // GIVEN a connection registered just now (its $connect may not have returned: posts to
    // it answer 410 until then) and one registered long ago
    let now_ms = clock.now_seconds() as i64 * 1_000;
    let young = Connection {
        connected_at: now_ms,
        ..connection(1, "u")
    };
    put(store, &young).await;
    put(store, &connection(2, "u")).await;

    // WHEN a broadcast finds both gone
    let removed = store
        .remove_gone(&[id(1), id(2)], &Audience::All)
        .await
        .unwrap();

    // THEN only the old one goes; the young one is spared until its $connect is surely over
    let removed: Vec<ConnectionId> = removed.into_iter().map(|r| r.connection.id).collect();
    assert_eq!(removed, vec![id(2)]);
    assert!(store.get_connection(&id(1)).await.unwrap().is_some());
    clock.advance(wsbridge::store::CONNECTING_GRACE_MS as u64 / 1_000 + 1);
    let removed = store.remove_gone(&[id(1)], &Audience::All).await.unwrap();
    assert_eq!(removed.len(), 1);
    assert!(store.get_connection(&id(1)).await.unwrap().is_none());
}
