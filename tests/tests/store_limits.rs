//! The limits and races of the store, on both stores (DynamoDB on DynamoDB Local): the
//! per-user connection limit under simultaneous registrations, the frame budget under
//! simultaneous frames, and removal racing subscribe. Concurrency is where this breaks, so
//! each race runs many times.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use futures::future::join_all;
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Grants, TopicPattern};
use wsbridge::clock::Clock;
use wsbridge::limits::{ConnectionLimit, LimitPolicy, RateLimit};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::Audience;
use wsbridge::store::{Admission, Connection, Registration, Store, StoreError};
use wsbridge::test_support::put;

wsbridge_tests::conformance!(
    simultaneous_registrations_admit_exactly_the_limit,
    simultaneous_registrations_under_close_oldest_keep_exactly_the_limit,
    expired_connections_never_count_and_removal_frees_a_slot,
    user_connections_are_the_live_counted_ones,
    a_burst_of_simultaneous_frames_admits_exactly_the_burst,
    the_budget_refills_and_refuses_with_the_wait,
    admitting_an_unknown_or_expired_connection_is_not_connected,
    subscribe_racing_removal_never_leaves_a_subscription,
    removal_returns_the_connection_and_its_topics,
    a_gone_recipient_reached_through_a_topic_loses_that_subscription,
);

fn connection(id: impl std::fmt::Display, user: &str) -> Connection {
    Connection {
        id: ConnectionId::new(format!("{id}=")),
        user_id: UserId::new(user),
        connected_at: 1_700_000_000_000,
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
        expires_at: now_seconds() + 7_200,
        grants: Grants::default(),
    }
}

fn topic(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

async fn subscribers(store: &dyn Store, name: &str) -> BTreeSet<ConnectionId> {
    let pages: Vec<_> = store
        .recipients(&Audience::Subscribers(vec![topic(name)]))
        .try_collect()
        .await
        .unwrap();
    pages
        .into_iter()
        .flatten()
        .map(|r| r.connection_id)
        .collect()
}

/// Registers `count` connections of `user` at the same moment.
async fn race_registrations(
    store: &dyn Store,
    user: &str,
    count: usize,
    limit: &ConnectionLimit,
) -> Vec<(ConnectionId, Registration)> {
    let connections: Vec<Connection> = (0..count)
        .map(|n| connection(format!("{user}-{n}"), user))
        .collect();
    join_all(connections.iter().map(|c| async move {
        let registered = store.register(c, limit).await;
        (
            c.id.clone(),
            registered.unwrap_or_else(|e| panic!("{}: {e}", c.id)),
        )
    }))
    .await
}

async fn counted(store: &dyn Store, user: &str) -> BTreeSet<ConnectionId> {
    store
        .user_connections(&UserId::new(user))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

async fn simultaneous_registrations_admit_exactly_the_limit(store: &dyn Store, _: &Clock) {
    let limit = ConnectionLimit {
        per_user: 3,
        policy: LimitPolicy::Refuse,
    };
    for round in 0..5 {
        // GIVEN a user with no connection
        let user = format!("racer{round}");

        // WHEN ten of their connections register at once
        let outcomes = race_registrations(store, &user, 10, &limit).await;

        // THEN exactly three are admitted (evicting nobody), the rest refused at the limit,
        // and the user's connections are exactly the admitted ones
        let admitted: BTreeSet<ConnectionId> = outcomes
            .iter()
            .filter_map(|(id, r)| match r {
                Registration::Registered { evicted } => {
                    assert!(evicted.is_empty(), "{id}: {evicted:?}");
                    Some(id.clone())
                }
                Registration::AtLimit { live } => {
                    assert_eq!(*live, 3, "{id}");
                    None
                }
            })
            .collect();
        assert_eq!(admitted.len(), 3, "round {round}: {outcomes:?}");
        assert_eq!(counted(store, &user).await, admitted, "round {round}");
    }
}

async fn simultaneous_registrations_under_close_oldest_keep_exactly_the_limit(
    store: &dyn Store,
    _: &Clock,
) {
    let limit = ConnectionLimit {
        per_user: 3,
        policy: LimitPolicy::CloseOldest,
    };
    for round in 0..3 {
        // GIVEN a user with no connection
        let user = format!("evictor{round}");

        // WHEN eight of their connections register at once under close_oldest
        let outcomes = race_registrations(store, &user, 8, &limit).await;

        // THEN every one is admitted, each eviction names a distinct connection, and what
        // remains counted is exactly the limit: the admitted ones nobody evicted
        let mut evicted: Vec<ConnectionId> = Vec::new();
        for (id, outcome) in &outcomes {
            match outcome {
                Registration::Registered { evicted: e } => evicted.extend(e.iter().cloned()),
                Registration::AtLimit { .. } => panic!("{id} refused under close_oldest"),
            }
        }
        let unique: BTreeSet<ConnectionId> = evicted.iter().cloned().collect();
        assert_eq!(unique.len(), evicted.len(), "evicted twice: {evicted:?}");
        assert_eq!(evicted.len(), 8 - 3, "round {round}");
        let remaining: BTreeSet<ConnectionId> = outcomes
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| !unique.contains(id))
            .collect();
        assert_eq!(counted(store, &user).await, remaining, "round {round}");
    }
}

async fn expired_connections_never_count_and_removal_frees_a_slot(store: &dyn Store, _: &Clock) {
    let limit = ConnectionLimit {
        per_user: 2,
        policy: LimitPolicy::Refuse,
    };
    // GIVEN two connections whose rows expired without a $disconnect
    for n in 0..2 {
        let expired = Connection {
            expires_at: now_seconds() - 1,
            ..connection(format!("old{n}"), "ann")
        };
        put(store, &expired).await;
    }
    // WHEN two more register, THEN both fit: the expired ones do not count
    for n in 0..2 {
        let registered = store.register(&connection(n, "ann"), &limit).await.unwrap();
        assert_eq!(registered, Registration::Registered { evicted: vec![] });
    }
    // AND a third is refused
    let third = store.register(&connection(2, "ann"), &limit).await.unwrap();
    assert_eq!(third, Registration::AtLimit { live: 2 });
    // WHEN one is removed, THEN its slot is free again
    store
        .remove_connection(&connection(0, "ann").id)
        .await
        .unwrap();
    let again = store.register(&connection(2, "ann"), &limit).await.unwrap();
    assert_eq!(again, Registration::Registered { evicted: vec![] });
}

async fn user_connections_are_the_live_counted_ones(store: &dyn Store, _: &Clock) {
    put(store, &connection(1, "bea")).await;
    put(store, &connection(2, "bea")).await;
    put(store, &connection(3, "cid")).await;
    let expired = Connection {
        expires_at: now_seconds() - 1,
        ..connection(4, "bea")
    };
    put(store, &expired).await;
    assert_eq!(
        counted(store, "bea").await,
        BTreeSet::from([connection(1, "bea").id, connection(2, "bea").id])
    );
    let full = store.user_connections(&UserId::new("bea")).await.unwrap();
    assert!(full.iter().all(|c| c.endpoint.starts_with("https://")));
    assert!(counted(store, "nobody").await.is_empty());
}

const T0: i64 = 1_800_000_000_000_000;

async fn a_burst_of_simultaneous_frames_admits_exactly_the_burst(store: &dyn Store, _: &Clock) {
    let limit = RateLimit {
        per_second: 1,
        burst: 5,
    };
    for round in 0..3 {
        // GIVEN a fresh connection
        let id = connection(format!("flood{round}"), "dee").id;
        put(store, &connection(format!("flood{round}"), "dee")).await;

        // WHEN twenty frames arrive at the same instant, from as many Lambda instances
        let outcomes = join_all((0..20).map(|_| store.admit(&id, Some(&limit), T0))).await;

        // THEN exactly the burst is admitted, and each refusal says to wait
        let admitted = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Admission::Admitted(_))))
            .count();
        assert_eq!(admitted, 5, "round {round}: {outcomes:?}");
        for outcome in &outcomes {
            match outcome {
                Ok(Admission::Admitted(s)) => assert_eq!(s.connection.id, id),
                Ok(Admission::Limited { retry_after }) => {
                    assert_eq!(retry_after.as_millis(), 1_000)
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

async fn the_budget_refills_and_refuses_with_the_wait(store: &dyn Store, _: &Clock) {
    let limit = RateLimit {
        per_second: 10,
        burst: 2,
    };
    let c = connection("steady", "eve");
    put(store, &c).await;
    let admitted = |now_us: i64| {
        let (id, limit) = (c.id.clone(), limit);
        async move {
            match store.admit(&id, Some(&limit), now_us).await.unwrap() {
                Admission::Admitted(session) => {
                    assert_eq!(session.connection.user_id, UserId::new("eve"));
                    Ok(())
                }
                Admission::Limited { retry_after } => Err(retry_after.as_micros()),
            }
        }
    };
    assert_eq!(admitted(T0).await, Ok(()));
    assert_eq!(admitted(T0).await, Ok(()));
    assert_eq!(admitted(T0 + 30_000).await, Err(70_000));
    assert_eq!(admitted(T0 + 100_000).await, Ok(()));
    // a long quiet spell banks no more than the burst
    assert_eq!(admitted(T0 + 60_000_000).await, Ok(()));
    assert_eq!(admitted(T0 + 60_000_000).await, Ok(()));
    assert!(admitted(T0 + 60_000_000).await.is_err());
    // and no budget at all admits everything
    for _ in 0..20 {
        assert!(matches!(
            store.admit(&c.id, None, T0).await.unwrap(),
            Admission::Admitted(_)
        ));
    }
}

async fn admitting_an_unknown_or_expired_connection_is_not_connected(store: &dyn Store, _: &Clock) {
    let limit = RateLimit {
        per_second: 10,
        burst: 2,
    };
    let expired = Connection {
        expires_at: now_seconds() - 1,
        ..connection("gone", "fay")
    };
    put(store, &expired).await;
    let now_us = i64::try_from(now_seconds()).unwrap() * 1_000_000;
    for id in [ConnectionId::new("nobody="), expired.id.clone()] {
        for budget in [Some(&limit), None] {
            let admitted = store.admit(&id, budget, now_us).await;
            assert!(
                matches!(admitted, Err(StoreError::NotConnected(_))),
                "{id}: {admitted:?}"
            );
        }
    }
    // and admitting never brought a row back
    assert_eq!(
        store
            .get_connection(&ConnectionId::new("nobody="))
            .await
            .unwrap(),
        None
    );
}

async fn subscribe_racing_removal_never_leaves_a_subscription(store: &dyn Store, _: &Clock) {
    for round in 0..30 {
        // GIVEN a connection holding one topic
        let c = connection(format!("racy{round}"), "gus");
        put(store, &c).await;
        store
            .subscribe(&c.id, &[topic("race:a")], &[], 10)
            .await
            .unwrap();

        // WHEN a subscribe to three more and its $disconnect run at the same time
        let more = [topic("race:b"), topic("race:c"), topic("race:d")];
        let (subscribed, removed) = futures::join!(
            store.subscribe(&c.id, &more, &[], 10),
            store.remove_connection(&c.id)
        );

        // THEN the subscribe either landed first or found the connection gone, and in both
        // cases no topic lists the connection any more
        assert!(
            matches!(subscribed, Ok(_) | Err(StoreError::NotConnected(_))),
            "round {round}: {subscribed:?}"
        );
        removed.unwrap();
        for name in ["race:a", "race:b", "race:c", "race:d"] {
            assert!(
                !subscribers(store, name).await.contains(&c.id),
                "round {round}: {name} still lists {}",
                c.id
            );
        }
        assert_eq!(store.get_connection(&c.id).await.unwrap(), None);
    }
}

async fn removal_returns_the_connection_and_its_topics(store: &dyn Store, _: &Clock) {
    let c = connection("leaving", "hal");
    put(store, &c).await;
    store
        .subscribe(&c.id, &[topic("x:1"), topic("x:2")], &[], 10)
        .await
        .unwrap();
    let removed = store
        .remove_connection(&c.id)
        .await
        .unwrap()
        .expect("it was there");
    assert_eq!(removed.connection, c);
    let topics: BTreeSet<TopicPattern> = removed.topics.into_iter().collect();
    assert_eq!(topics, BTreeSet::from([topic("x:1"), topic("x:2")]));
    assert_eq!(store.remove_connection(&c.id).await.unwrap(), None);
    assert!(counted(store, "hal").await.is_empty());
}

async fn a_gone_recipient_reached_through_a_topic_loses_that_subscription(
    store: &dyn Store,
    _: &Clock,
) {
    let gone = connection("gone410", "ivy");
    let kept = connection("kept", "ivy");
    put(store, &gone).await;
    put(store, &kept).await;
    for c in [&gone, &kept] {
        store
            .subscribe(&c.id, &[topic("feed:1"), topic("feed:2")], &[], 10)
            .await
            .unwrap();
    }
    store
        .remove_gone(
            std::slice::from_ref(&gone.id),
            &Audience::Subscribers(vec![topic("feed:1")]),
        )
        .await
        .unwrap();
    assert_eq!(
        subscribers(store, "feed:1").await,
        BTreeSet::from([kept.id.clone()])
    );
    assert_eq!(
        subscribers(store, "feed:2").await,
        BTreeSet::from([kept.id.clone()])
    );
    assert_eq!(store.get_connection(&gone.id).await.unwrap(), None);
    assert_eq!(counted(store, "ivy").await, BTreeSet::from([kept.id]));
}
