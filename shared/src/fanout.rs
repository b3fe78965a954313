//! Fan-out: one payload to every recipient of a target, with bounded concurrency, and a
//! report of what happened to each.

use std::collections::HashSet;
use std::future::ready;

use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{debug, warn};

use crate::protocol::ConnectionId;
use crate::protocol::broadcast::{Exclusions, FanoutReport, Target};
use crate::sender::{ConnectionSender, SendError};
use crate::store::{RecipientStore, StoreError};

/// Reading recipients failed part-way; `report` covers every recipient read before that
/// (their posts are finished, not abandoned), and nobody after it.
#[derive(Debug, thiserror::Error)]
#[error("fan-out stopped after {} of its recipients: {source}", report.recipients)]
pub struct FanoutError {
    pub report: FanoutReport,
    #[source]
    pub source: StoreError,
}

/// Sends `payload` to every live connection `target` names, except `exclusions`, at most
/// `concurrency` posts at a time, and removes the connections that answered 410.
///
/// Recipients stream in page by page, so sends start with the first page. One failing
/// connection never fails the broadcast; it is counted and logged.
pub async fn fan_out(
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    target: &Target,
    exclusions: &Exclusions,
    payload: &[u8],
    concurrency: usize,
) -> Result<FanoutReport, FanoutError> {
    let mut report = FanoutReport::default();
    let mut gone: Vec<ConnectionId> = Vec::new();
    // Only for `Target::Connections`: ids the store did not return are gone too.
    let mut found: HashSet<ConnectionId> = HashSet::new();
    let track_found = matches!(target, Target::Connections(_));

    let mut results = store
        .recipients(target)
        // The stream ends with the first failed page; it reaches the loop below as one more
        // result, so posts already in flight still finish and are counted instead of being
        // dropped half-sent.
        .scan(false, |failed, page| {
            if *failed {
                return ready(None);
            }
            *failed = page.is_err();
            ready(Some(page))
        })
        .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        // Before exclusions: an excluded connection is live, not gone.
        .inspect_ok(|recipient| {
            if track_found {
                found.insert(recipient.connection_id.clone());
            }
        })
        .try_filter(|recipient| {
            ready(!exclusions.excludes(&recipient.connection_id, &recipient.user_id))
        })
        .map(|recipient| async move {
            let recipient = recipient?;
            let outcome = sender.send(&recipient, payload).await;
            Ok::<_, StoreError>((recipient, outcome))
        })
        .buffer_unordered(concurrency.max(1));

    let mut failure = None;
    while let Some(result) = results.next().await {
        let (recipient, outcome) = match result {
            Ok(sent) => sent,
            Err(e) => {
                failure = Some(e);
                continue;
            }
        };
        report.recipients += 1;
        match outcome {
            Ok(()) => report.delivered += 1,
            Err(SendError::Gone) => {
                debug!(connection_id = %recipient.connection_id, "gone");
                report.gone += 1;
                gone.push(recipient.connection_id);
            }
            Err(e) => {
                warn!(connection_id = %recipient.connection_id, reason = %e, "post failed");
                report.failed += 1;
            }
        }
    }
    drop(results);

    if let (Target::Connections(ids), None) = (target, &failure) {
        let unknown = ids
            .iter()
            .filter(|id| !found.contains(*id) && exclusions.connection.as_ref() != Some(*id));
        for id in unknown {
            debug!(connection_id = %id, "not connected");
            report.recipients += 1;
            report.gone += 1;
        }
    }

    if !gone.is_empty() {
        // Rows of gone connections also expire by TTL, so a failed clean-up costs only
        // a few wasted posts later; it does not fail the broadcast.
        if let Err(e) = store.remove_connections(&gone).await {
            warn!(count = gone.len(), error = %e, "could not remove gone connections");
        }
    }
    match failure {
        Some(source) => Err(FanoutError { report, source }),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::stream;

    use super::*;
    use crate::protocol::UserId;
    use crate::store::{ConnectionStore, MemoryStore, Recipient, RecipientPages};
    use crate::test_support::{
        ENDPOINT, RecordingSender, backend_error, ids, register, store_with, subscribe_all,
        subscribers, topic,
    };

    const PAYLOAD: &[u8] = br#"{"event":"card.moved","data":{"card":7}}"#;
    const CONCURRENCY: usize = 8;

    fn to_topic(name: &str) -> Target {
        Target::Topic(topic(name))
    }

    fn report(recipients: u64, delivered: u64, gone: u64, failed: u64) -> FanoutReport {
        FanoutReport {
            recipients,
            delivered,
            gone,
            failed,
        }
    }

    fn no_exclusions() -> Exclusions {
        Exclusions::default()
    }

    /// Three watchers of `board:1` (alice twice), one watcher of another board and one
    /// connection that watches nothing.
    async fn board_store() -> MemoryStore {
        let store = store_with(&[
            ("c-alice-laptop", "alice"),
            ("c-alice-phone", "alice"),
            ("c-bob", "bob"),
            ("c-dave", "dave"),
            ("c-idle", "erin"),
        ])
        .await;
        subscribe_all(
            &store,
            &["c-alice-laptop", "c-alice-phone", "c-bob"],
            "board:1",
        )
        .await;
        subscribe_all(&store, &["c-dave"], "board:2").await;
        store
    }

    #[tokio::test]
    async fn every_subscriber_of_a_topic_gets_the_exact_payload_once() {
        // GIVEN three subscribers of board:1 among other connections
        let store = board_store().await;
        let sender = RecordingSender::new();

        // WHEN a payload fans out to board:1
        let outcome = fan_out(
            &store,
            &sender,
            &to_topic("board:1"),
            &no_exclusions(),
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN exactly those three got it, once each, byte for byte
        assert_eq!(outcome, report(3, 3, 0, 0));
        assert_eq!(sender.attempts(), 3);
        assert_eq!(
            sender.delivered_to(),
            ids(&["c-alice-laptop", "c-alice-phone", "c-bob"])
        );
        assert!(sender.posts().iter().all(|post| post.payload == PAYLOAD));
    }

    #[tokio::test]
    async fn excluded_user_and_connection_get_nothing_and_are_not_counted() {
        // GIVEN board:1 watched by alice (two tabs), bob and carol
        let store = board_store().await;
        register(&store, &[("c-carol", "carol")]).await;
        subscribe_all(&store, &["c-carol"], "board:1").await;
        let sender = RecordingSender::new();
        let exclusions = Exclusions {
            user: Some(UserId::new("alice")),
            connection: Some(ConnectionId::new("c-carol")),
        };

        // WHEN alice's action is broadcast from carol's tab, excluding both
        let outcome = fan_out(
            &store,
            &sender,
            &to_topic("board:1"),
            &exclusions,
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN only bob receives it, and the excluded are not recipients at all
        assert_eq!(outcome, report(1, 1, 0, 0));
        assert_eq!(sender.delivered_to(), ids(&["c-bob"]));
    }

    #[tokio::test]
    async fn an_excluded_user_named_in_connection_ids_is_neither_a_recipient_nor_gone() {
        // GIVEN live connections of alice and bob
        let store = board_store().await;
        let sender = RecordingSender::new();
        let exclusions = Exclusions {
            user: Some(UserId::new("alice")),
            connection: None,
        };

        // WHEN a broadcast names both connections but excludes alice
        let outcome = fan_out(
            &store,
            &sender,
            &Target::Connections(ids(&["c-alice-laptop", "c-bob"])),
            &exclusions,
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN bob alone is a recipient; alice's live connection is not reported gone
        assert_eq!(outcome, report(1, 1, 0, 0));
        assert_eq!(sender.delivered_to(), ids(&["c-bob"]));
        assert!(
            store
                .get_connection(&ConnectionId::new("c-alice-laptop"))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn gone_recipients_are_counted_and_removed_with_their_subscriptions() {
        // GIVEN bob's connection, subscribed to two boards, closed without $disconnect
        let store = board_store().await;
        subscribe_all(&store, &["c-bob"], "board:2").await;
        let sender = RecordingSender::new().failing("c-bob", SendError::Gone);

        // WHEN board:1 fans out and API Gateway answers 410 for bob
        let outcome = fan_out(
            &store,
            &sender,
            &to_topic("board:1"),
            &no_exclusions(),
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN bob counts as gone, and his connection and every subscription are forgotten
        assert_eq!(outcome, report(3, 2, 1, 0));
        assert_eq!(
            sender.delivered_to(),
            ids(&["c-alice-laptop", "c-alice-phone"])
        );
        let bob = ConnectionId::new("c-bob");
        assert_eq!(store.get_connection(&bob).await.unwrap(), None);
        assert_eq!(
            subscribers(&store, "board:1").await,
            ids(&["c-alice-laptop", "c-alice-phone"])
        );
        assert_eq!(subscribers(&store, "board:2").await, ids(&["c-dave"]));
    }

    #[tokio::test]
    async fn a_failing_recipient_is_counted_and_the_others_still_receive() {
        // GIVEN posts to bob fail (5xx) and to one of alice's tabs are throttled
        let store = board_store().await;
        let sender = RecordingSender::new()
            .failing("c-bob", SendError::Failed("500 internal".to_owned()))
            .failing("c-alice-phone", SendError::Throttled("429".to_owned()));

        // WHEN board:1 fans out
        let outcome = fan_out(
            &store,
            &sender,
            &to_topic("board:1"),
            &no_exclusions(),
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN both failures are counted, the laptop still gets it, and nobody is removed
        assert_eq!(outcome, report(3, 1, 0, 2));
        assert_eq!(sender.delivered_to(), ids(&["c-alice-laptop"]));
        assert_eq!(
            subscribers(&store, "board:1").await,
            ids(&["c-alice-laptop", "c-alice-phone", "c-bob"])
        );
    }

    #[tokio::test]
    async fn unknown_connection_ids_count_as_recipients_and_gone() {
        // GIVEN one live connection and two ids the store never saw (or already forgot)
        let store = board_store().await;
        let sender = RecordingSender::new();

        // WHEN a broadcast names all three
        let outcome = fan_out(
            &store,
            &sender,
            &Target::Connections(ids(&["c-bob", "c-ghost-1", "c-ghost-2"])),
            &no_exclusions(),
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN the live one is delivered to and the two unknown ones are reported gone
        assert_eq!(outcome, report(3, 1, 2, 0));
        assert_eq!(sender.delivered_to(), ids(&["c-bob"]));
    }

    /// A recipient store whose second page fails (a throttled Query, say), with a third page
    /// behind it that must never be read.
    #[derive(Default)]
    struct SecondPageFails {
        removed: Mutex<Vec<ConnectionId>>,
    }

    fn recipient(id: &str) -> Recipient {
        Recipient {
            connection_id: ConnectionId::new(id),
            user_id: UserId::new(format!("user-of-{id}")),
            endpoint: ENDPOINT.to_owned(),
        }
    }

    #[async_trait]
    impl RecipientStore for SecondPageFails {
        fn recipients<'a>(&'a self, _: &'a Target) -> RecipientPages<'a> {
            Box::pin(stream::iter(vec![
                Ok(vec![
                    recipient("p1-a"),
                    recipient("p1-b"),
                    recipient("p1-c"),
                ]),
                Err(backend_error("Query")),
                Ok(vec![recipient("p3-a")]),
            ]))
        }

        async fn count_connections(&self) -> Result<u64, StoreError> {
            Ok(4)
        }

        async fn remove_connections(&self, ids: &[ConnectionId]) -> Result<(), StoreError> {
            self.removed.lock().unwrap().extend_from_slice(ids);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_recipient_page_stops_the_fan_out_with_the_report_so_far() {
        // GIVEN a first page of three, one of them gone, and a second page that fails;
        // posts are slow and fewer may be in flight than the page holds
        let store = SecondPageFails::default();
        let sender = RecordingSender::new()
            .failing("p1-b", SendError::Gone)
            .with_delay(Duration::from_millis(5));

        // WHEN everyone is targeted
        let error = fan_out(&store, &sender, &Target::All, &no_exclusions(), PAYLOAD, 2)
            .await
            .unwrap_err();

        // THEN the error carries the store failure and what the first page got, the gone
        // connection is still removed, and nothing after the failed page is sent
        assert!(matches!(
            error.source,
            StoreError::Backend {
                operation: "Query",
                ..
            }
        ));
        assert_eq!(error.report, report(3, 2, 1, 0));
        assert_eq!(sender.delivered_to(), ids(&["p1-a", "p1-c"]));
        assert_eq!(sender.attempts(), 3);
        assert_eq!(*store.removed.lock().unwrap(), ids(&["p1-b"]));
    }

    async fn topic_with_subscribers(store: MemoryStore, count: usize) -> MemoryStore {
        let connections: Vec<(String, String)> = (0..count)
            .map(|n| (format!("c-{n:02}"), format!("user-{n:02}")))
            .collect();
        let pairs: Vec<(&str, &str)> = connections
            .iter()
            .map(|(id, user)| (id.as_str(), user.as_str()))
            .collect();
        register(&store, &pairs).await;
        let ids: Vec<&str> = pairs.iter().map(|(id, _)| *id).collect();
        subscribe_all(&store, &ids, "board:big").await;
        store
    }

    #[tokio::test]
    async fn posts_in_flight_never_exceed_the_concurrency_and_reach_it() {
        for concurrency in [1, 4] {
            // GIVEN 20 subscribers and posts that each take a while
            let store = topic_with_subscribers(MemoryStore::new(), 20).await;
            let sender = RecordingSender::new().with_delay(Duration::from_millis(5));

            // WHEN the topic fans out with a bounded concurrency
            let outcome = fan_out(
                &store,
                &sender,
                &to_topic("board:big"),
                &no_exclusions(),
                PAYLOAD,
                concurrency,
            )
            .await
            .unwrap();

            // THEN everyone is delivered to with exactly `concurrency` posts at a time at most
            assert_eq!(outcome, report(20, 20, 0, 0));
            assert_eq!(
                sender.max_in_flight(),
                concurrency,
                "concurrency {concurrency}"
            );
        }
    }

    #[tokio::test]
    async fn small_pages_still_reach_every_subscriber() {
        // GIVEN 10 subscribers listed three per page
        let store = topic_with_subscribers(MemoryStore::new().with_page_size(3), 10).await;
        let sender = RecordingSender::new();

        // WHEN the topic fans out
        let outcome = fan_out(
            &store,
            &sender,
            &to_topic("board:big"),
            &no_exclusions(),
            PAYLOAD,
            CONCURRENCY,
        )
        .await
        .unwrap();

        // THEN all four pages were read: each of the 10 got it once
        assert_eq!(outcome, report(10, 10, 0, 0));
        let expected: Vec<ConnectionId> = (0..10)
            .map(|n| ConnectionId::new(format!("c-{n:02}")))
            .collect();
        assert_eq!(sender.delivered_to(), expected);
    }
}
