//! Topic history and idempotency keys in the store, one suite on both stores: offsets gap-free
//! and unique under concurrent appends, the window of `size`, expiry and a new epoch, reads
//! after a position and of the last messages within their bounds, and idempotency claims.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use wsbridge::channels::History;
use wsbridge::clock::Clock;
use wsbridge::protocol::Topic;
use wsbridge::store::Store;
use wsbridge::store::history::{Claim, HistoryPage, Position, ReadLimits, continues};

wsbridge_tests::conformance!(
    offsets_start_at_one_and_grow_by_one,
    concurrent_appends_get_unique_gap_free_offsets,
    the_window_keeps_the_last_size_messages,
    reads_stop_at_their_message_and_byte_bounds,
    an_expired_stream_starts_a_new_epoch,
    idempotency_keys_are_claimed_once_and_answer_after,
);

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn kept(size: u32) -> History {
    History {
        size,
        ttl: Duration::from_secs(3_600),
    }
}

/// The payload names its own position, as an envelope does.
fn payload(text: &str) -> impl Fn(&Position) -> String + Send + Sync + '_ {
    move |p: &Position| {
        format!(
            r#"{{"text":"{text}","offset":{},"epoch":"{}"}}"#,
            p.offset, p.epoch
        )
    }
}

const ALL: ReadLimits = ReadLimits {
    messages: 1_000,
    bytes: 1 << 20,
};

async fn offsets(store: &dyn Store, name: &str, after: Option<u64>) -> (HistoryPage, Vec<u64>) {
    let page = store.read(&topic(name), after, ALL).await.unwrap();
    let offsets = page.messages.iter().map(|m| m.offset).collect();
    (page, offsets)
}

async fn offsets_start_at_one_and_grow_by_one(store: &dyn Store, _: &Clock) {
    // GIVEN nothing kept: no stream
    let (empty, _) = offsets(store, "room:1", None).await;
    assert_eq!(empty, HistoryPage::default());
    // WHEN three messages are appended
    let mut positions = Vec::new();
    for text in ["a", "b", "c"] {
        let (position, body) = store
            .append(&topic("room:1"), &kept(10), &payload(text))
            .await
            .unwrap();
        assert!(body.contains(&format!("\"offset\":{}", position.offset)));
        positions.push(position);
    }
    // THEN 1, 2, 3 in one epoch, kept byte for byte, readable after any of them
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(positions.iter().all(|p| p.epoch == positions[0].epoch));
    let (page, all) = offsets(store, "room:1", None).await;
    assert_eq!(all, [1, 2, 3]);
    assert_eq!(
        (page.latest, page.epoch.as_deref()),
        (3, Some(positions[0].epoch.as_str()))
    );
    assert_eq!(page.messages[1].payload, payload("b")(&positions[1]));
    let (after_one, rest) = offsets(store, "room:1", Some(1)).await;
    assert_eq!(rest, [2, 3]);
    assert!(continues(&after_one, &positions[0]));
    let (at_end, none) = offsets(store, "room:1", Some(3)).await;
    assert!(none.is_empty() && continues(&at_end, &positions[2]));
    // another topic has a stream of its own
    let (other, _) = store
        .append(&topic("room:2"), &kept(10), &payload("x"))
        .await
        .unwrap();
    assert_eq!(other.offset, 1);
}

async fn concurrent_appends_get_unique_gap_free_offsets(store: &dyn Store, _: &Clock) {
    // Twelve appends at once on one topic, three rounds: every offset once, none missing,
    // each message kept under the offset it was told.
    let history = kept(100);
    for round in 0..3 {
        let texts: Vec<String> = (0..12).map(|n| format!("r{round}m{n}")).collect();
        let race = topic("room:race");
        let appended = join_all(texts.iter().map(|text| {
            let (race, history) = (&race, &history);
            async move { store.append(race, history, &payload(text)).await }
        }))
        .await;
        let positions: Vec<Position> = appended.into_iter().map(|r| r.unwrap().0).collect();
        let unique: BTreeSet<u64> = positions.iter().map(|p| p.offset).collect();
        let first = round * 12 + 1;
        assert_eq!(unique, (first..first + 12).collect(), "round {round}");
    }
    let (page, all) = offsets(store, "room:race", None).await;
    assert_eq!(all, (1..=36).collect::<Vec<_>>());
    for kept in &page.messages {
        assert!(
            kept.payload
                .contains(&format!("\"offset\":{}", kept.offset))
        );
    }
}

async fn the_window_keeps_the_last_size_messages(store: &dyn Store, _: &Clock) {
    let history = kept(5);
    let mut first = None;
    for n in 0..12 {
        let (position, _) = store
            .append(&topic("room:w"), &history, &payload(&n.to_string()))
            .await
            .unwrap();
        first.get_or_insert(position);
    }
    let (page, all) = offsets(store, "room:w", None).await;
    assert_eq!(all, [8, 9, 10, 11, 12]);
    // a client at offset 3 missed trimmed messages: the gap cannot be filled
    let (after_three, from_four) = offsets(store, "room:w", Some(3)).await;
    assert_eq!(from_four, [8, 9, 10, 11, 12]);
    let at_three = Position {
        offset: 3,
        epoch: page.epoch.clone().unwrap(),
    };
    assert!(!continues(&after_three, &at_three));
    // one at offset 7 misses nothing
    let (after_seven, _) = offsets(store, "room:w", Some(7)).await;
    assert!(continues(
        &after_seven,
        &Position {
            offset: 7,
            ..at_three.clone()
        }
    ));
    // a position from another epoch, or from the future, does not continue
    let foreign = Position {
        offset: 7,
        epoch: "another".into(),
    };
    assert!(!continues(&after_seven, &foreign));
    let (after_99, _) = offsets(store, "room:w", Some(99)).await;
    assert!(!continues(
        &after_99,
        &Position {
            offset: 99,
            ..at_three
        }
    ));
    assert_eq!(first.map(|p| p.offset), Some(1));
}

async fn reads_stop_at_their_message_and_byte_bounds(store: &dyn Store, _: &Clock) {
    for n in 0..10 {
        store
            .append(&topic("room:b"), &kept(100), &payload(&format!("{n:03}")))
            .await
            .unwrap();
    }
    // the last three
    let last = store
        .read(
            &topic("room:b"),
            None,
            ReadLimits {
                messages: 3,
                bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
    let offsets: Vec<u64> = last.messages.iter().map(|m| m.offset).collect();
    assert_eq!((offsets, last.more), (vec![8, 9, 10], false));
    // after 2, at most 4: more follow
    let four = store
        .read(
            &topic("room:b"),
            Some(2),
            ReadLimits {
                messages: 4,
                bytes: 1 << 20,
            },
        )
        .await
        .unwrap();
    let offsets: Vec<u64> = four.messages.iter().map(|m| m.offset).collect();
    assert_eq!((offsets, four.more), (vec![3, 4, 5, 6], true));
    // bytes: room for two payloads and a bit
    let one = four.messages[0].payload.len();
    let bounded = store
        .read(
            &topic("room:b"),
            Some(2),
            ReadLimits {
                messages: 100,
                bytes: one * 2 + 5,
            },
        )
        .await
        .unwrap();
    assert_eq!((bounded.messages.len(), bounded.more), (2, true));
    // room for none: nothing returned, but the read still continues the position it was
    // asked about (whether the gap is filled does not depend on how much fits)
    let none = store
        .read(
            &topic("room:b"),
            Some(2),
            ReadLimits {
                messages: 100,
                bytes: one - 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (none.messages.len(), none.more, none.first),
        (0, true, Some(3))
    );
    let at_two = Position {
        offset: 2,
        epoch: none.epoch.clone().unwrap(),
    };
    assert!(continues(&none, &at_two));
}

async fn an_expired_stream_starts_a_new_epoch(store: &dyn Store, clock: &Clock) {
    let short = History {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let (old, _) = store
        .append(&topic("room:e"), &short, &payload("old"))
        .await
        .unwrap();
    store
        .append(&topic("room:e"), &short, &payload("old2"))
        .await
        .unwrap();
    // WHEN the messages expire (TTL has not deleted them yet)
    clock.advance(120);
    // THEN nothing is readable, and the next message starts a new epoch at offset 1
    let (gone, none) = offsets(store, "room:e", None).await;
    assert!(none.is_empty() && gone.epoch.is_none());
    let (new, _) = store
        .append(&topic("room:e"), &short, &payload("new"))
        .await
        .unwrap();
    assert_eq!(new.offset, 1);
    assert_ne!(new.epoch, old.epoch);
    // a client of the old epoch cannot continue
    let (page, all) = offsets(store, "room:e", Some(2)).await;
    assert!(all.is_empty());
    assert!(!continues(&page, &Position { offset: 2, ..old }));
}

async fn idempotency_keys_are_claimed_once_and_answer_after(store: &dyn Store, clock: &Clock) {
    // two claims at once: one wins
    let claims = join_all((0..4).map(|_| store.claim("order-42", 60))).await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Claimed)))
        .count();
    assert_eq!(won, 1, "{claims:?}");
    assert_eq!(
        store.claim("order-42", 60).await.unwrap(),
        Claim::InProgress
    );
    // the answer is kept for its window
    store
        .finish("order-42", r#"{"delivered":3}"#, 600)
        .await
        .unwrap();
    assert_eq!(
        store.claim("order-42", 60).await.unwrap(),
        Claim::Done(r#"{"delivered":3}"#.into())
    );
    // a released claim is free again; so is an answer past its window
    assert_eq!(store.claim("order-43", 60).await.unwrap(), Claim::Claimed);
    store.release("order-43").await.unwrap();
    assert_eq!(store.claim("order-43", 60).await.unwrap(), Claim::Claimed);
    clock.advance(601);
    assert_eq!(store.claim("order-42", 60).await.unwrap(), Claim::Claimed);
    // and a claim left by a request that died is taken over after its lease
    clock.advance(61);
    assert_eq!(store.claim("order-43", 60).await.unwrap(), Claim::Claimed);
}
