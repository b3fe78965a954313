//! The fan-out engine: one payload to every recipient of a target, as fast as the
//! management API allows, in flat memory, within the invocation's time, with a report.
//!
//! * Recipients stream in page by page; the next page loads while the current one is sent,
//!   and at most about two pages are held, whatever the number of recipients.
//! * At most `concurrency` posts are in flight; the payload is one shared buffer.
//! * 429 and 5xx are retried with jittered exponential backoff (`RetryPolicy`), never past
//!   the deadline. At the deadline the engine stops: what it did not send is counted as
//!   failed, logged, and flagged, never a silent timeout.
//! * Connections that answer 410 are deleted in batches while the sends go on.

pub mod metrics;
mod retry;

use std::collections::HashSet;
use std::future::ready;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::{self, FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, warn};

pub use retry::RetryPolicy;

use crate::protocol::broadcast::{Exclusions, FanoutReport};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::sender::{ConnectionSender, Payload, SendError};
use crate::store::{Audience, Recipient, RecipientStore, StoreError};

/// Gone connections deleted per batch: one BatchWriteItem's worth of connection rows.
pub const GONE_BATCH: usize = 25;

/// Time kept back before the deadline: for in-flight posts to finish, gone rows to be
/// deleted, and the response to go out before Lambda ends the invocation.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// How one fan-out runs.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Posts in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// When the invocation ends (Lambda's context deadline); `None`: no limit.
    pub deadline: Option<Instant>,
}

impl FanoutOptions {
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency: concurrency.max(1),
            retry: RetryPolicy::default(),
            deadline: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// When to stop starting work.
    fn stop_at(&self) -> Option<Instant> {
        self.deadline.map(|deadline| {
            deadline
                .checked_sub(DEADLINE_MARGIN)
                .unwrap_or(deadline)
                .max(Instant::now().min(deadline))
        })
    }
}

/// When an invocation ends, from Lambda's deadline (milliseconds since the Unix epoch);
/// `None` when the runtime reports no usable deadline: emulators send 0 or a time already
/// past, and taking that at its word would stop every fan-out before its first post.
pub fn deadline_at(deadline_ms: u64) -> Option<Instant> {
    let now_ms = u64::try_from(crate::clock::now_millis()).ok()?;
    let remaining = deadline_ms.checked_sub(now_ms).filter(|ms| *ms > 0)?;
    Some(Instant::now() + Duration::from_millis(remaining))
}

/// What a fan-out did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSummary {
    pub report: FanoutReport,
    /// Posts tried again after a 429 or 5xx.
    pub retries: u64,
    /// Recipients read but never posted to because the deadline came (counted in `failed`).
    pub unsent: u64,
    /// The deadline stopped the fan-out; recipients not yet read are in no count.
    pub deadline_reached: bool,
    pub elapsed: Duration,
    /// Users whose last connection in a presence topic was found gone (410) and removed:
    /// for the caller to announce their leave.
    pub left: Vec<(UserId, Topic)>,
}

/// Reading recipients failed part-way; `summary` covers every recipient read before that
/// (their posts are finished, not abandoned), and nobody after it.
#[derive(Debug, thiserror::Error)]
#[error("fan-out stopped after {} of its recipients: {source}", summary.report.recipients)]
pub struct FanoutError {
    pub summary: FanoutSummary,
    #[source]
    pub source: StoreError,
}

/// What became of one recipient.
enum Delivery {
    Delivered,
    Gone,
    Failed(SendError),
    /// The deadline came before it was posted to.
    Unsent,
}

/// Posts to one recipient, retrying 429 and 5xx while the policy and the deadline allow.
async fn deliver(
    sender: &dyn ConnectionSender,
    recipient: &Recipient,
    payload: &Payload,
    retry: &RetryPolicy,
    stop_at: Option<Instant>,
) -> (Delivery, u32) {
    let mut retries = 0;
    loop {
        if stop_at.is_some_and(|at| Instant::now() >= at) {
            return (Delivery::Unsent, retries);
        }
        let sent = match stop_at {
            Some(at) => timeout_at(at, sender.send(recipient, payload))
                .await
                .unwrap_or_else(|_| Err(SendError::Transient("deadline reached mid-post".into()))),
            None => sender.send(recipient, payload).await,
        };
        let error = match sent {
            Ok(()) => return (Delivery::Delivered, retries),
            Err(SendError::Gone) => return (Delivery::Gone, retries),
            Err(error @ (SendError::Throttled(_) | SendError::Transient(_))) => error,
            Err(error) => return (Delivery::Failed(error), retries),
        };
        let wait = retry.backoff(retries);
        let out_of_time = stop_at.is_some_and(|at| Instant::now() + wait >= at);
        if retries + 1 >= retry.max_attempts || out_of_time {
            return (Delivery::Failed(error), retries);
        }
        sleep(wait).await;
        retries += 1;
    }
}

/// Sends `payload` to every live connection `target` names, except `exclusions`, and
/// removes the connections that answered 410. One failing connection never fails the
/// broadcast; it is counted and logged.
pub async fn fan_out(
    store: &dyn RecipientStore,
    sender: &dyn ConnectionSender,
    audience: &Audience,
    exclusions: &Exclusions,
    payload: &Payload,
    options: &FanoutOptions,
) -> Result<FanoutSummary, FanoutError> {
    let started = Instant::now();
    let stop_at = options.stop_at();
    let deadline_reached = AtomicBool::new(false);

    // The producer reads pages into a one-page channel: while the consumer sends page N,
    // page N+1 is loading, and nothing beyond that is held.
    let (pages_in, mut pages_out) = mpsc::channel::<Result<Vec<Recipient>, StoreError>>(1);
    let producer = async {
        // Moved in, so that it is dropped when the producer ends, which ends the consumer.
        let pages_in = pages_in;
        let mut pages = store.recipients(audience);
        loop {
            let next = match stop_at {
                Some(at) => match timeout_at(at, pages.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        deadline_reached.store(true, Ordering::Relaxed);
                        break;
                    }
                },
                None => pages.next().await,
            };
            let Some(page) = next else { break };
            let failed = page.is_err();
            if pages_in.send(page).await.is_err() || failed {
                break;
            }
        }
    };

    // Only for `Audience::Connections`: ids the store did not return are gone too.
    let track_found = matches!(audience, Audience::Connections(_));
    let mut found: HashSet<ConnectionId> = HashSet::new();
    // A connection subscribed through several keys (`list:7` and `list:*`) is read once per
    // key and must be sent to once: remember who was seen, only when there are several keys.
    let several_keys = matches!(audience, Audience::Subscribers(keys) if keys.len() > 1);
    let mut seen: HashSet<ConnectionId> = HashSet::new();
    let consumer = async {
        let mut summary = FanoutSummary::default();
        let mut failure = None;
        let mut gone: Vec<ConnectionId> = Vec::new();
        let mut deletions = FuturesUnordered::new();
        let recipients = stream::poll_fn(|cx| pages_out.poll_recv(cx))
            .flat_map(|page| match page {
                Ok(page) => stream::iter(page).map(Ok).left_stream(),
                Err(e) => stream::once(ready(Err(e))).right_stream(),
            })
            // Before exclusions: an excluded connection is live, not gone.
            .inspect(|recipient| {
                if let (true, Ok(recipient)) = (track_found, recipient) {
                    found.insert(recipient.connection_id.clone());
                }
            })
            .filter(move |recipient| {
                ready(match (several_keys, recipient) {
                    (true, Ok(recipient)) => seen.insert(recipient.connection_id.clone()),
                    _ => true,
                })
            })
            .filter(|recipient| {
                ready(
                    !recipient
                        .as_ref()
                        .is_ok_and(|r| exclusions.excludes(&r.connection_id, &r.user_id)),
                )
            })
            .map(|recipient| async move {
                let recipient = recipient?;
                let (delivery, retries) =
                    deliver(sender, &recipient, payload, &options.retry, stop_at).await;
                Ok::<_, StoreError>((recipient, delivery, retries))
            })
            .buffer_unordered(options.concurrency.max(1));
        tokio::pin!(recipients);

        loop {
            tokio::select! {
                next = recipients.next() => {
                    let Some(result) = next else { break };
                    let (recipient, delivery, retries) = match result {
                        Ok(done) => done,
                        Err(e) => {
                            failure = Some(e);
                            continue;
                        }
                    };
                    let report = &mut summary.report;
                    report.recipients += 1;
                    summary.retries += u64::from(retries);
                    match delivery {
                        Delivery::Delivered => report.delivered += 1,
                        Delivery::Gone => {
                            debug!(connection_id = %recipient.connection_id, "gone");
                            report.gone += 1;
                            gone.push(recipient.connection_id);
                            if gone.len() >= GONE_BATCH {
                                deletions.push(remove(store, std::mem::take(&mut gone), audience));
                            }
                        }
                        Delivery::Failed(e) => {
                            warn!(connection_id = %recipient.connection_id, reason = %e, retries, "post failed");
                            report.failed += 1;
                        }
                        Delivery::Unsent => {
                            report.failed += 1;
                            summary.unsent += 1;
                        }
                    }
                }
                Some(removed) = deletions.next(), if !deletions.is_empty() => {
                    summary.left.extend(removed);
                }
            }
        }
        if !gone.is_empty() {
            deletions.push(remove(store, gone, audience));
        }
        finish_deletions(deletions, &mut summary.left, options.deadline).await;
        (summary, failure)
    };

    let ((), (mut summary, failure)) = futures::join!(producer, consumer);
    summary.deadline_reached = deadline_reached.load(Ordering::Relaxed) || summary.unsent > 0;

    if let (Audience::Connections(ids), None, false) =
        (audience, &failure, summary.deadline_reached)
    {
        let unknown = ids
            .iter()
            .filter(|id| !found.contains(*id) && exclusions.connection.as_ref() != Some(*id));
        for id in unknown {
            debug!(connection_id = %id, "not connected");
            summary.report.recipients += 1;
            summary.report.gone += 1;
        }
    }
    if summary.deadline_reached {
        warn!(
            unsent = summary.unsent,
            delivered = summary.report.delivered,
            "deadline reached: fan-out stopped; recipients not yet read were not sent to"
        );
    }
    summary.elapsed = started.elapsed();
    match failure {
        Some(source) => Err(FanoutError { summary, source }),
        None => Ok(summary),
    }
}

/// Waits for the removals of gone connections still running, collecting the presence topics
/// their users left into `left`, until half the margin before the deadline (the other half is
/// the response's). Those still running then are left to the next 410 and to TTL: waiting
/// for them would cost the whole report when Lambda ends the invocation.
async fn finish_deletions<F: Future<Output = Vec<(UserId, Topic)>>>(
    mut deletions: FuturesUnordered<F>,
    left: &mut Vec<(UserId, Topic)>,
    deadline: Option<Instant>,
) {
    let finish = async {
        while let Some(removed) = deletions.next().await {
            left.extend(removed);
        }
    };
    let Some(deadline) = deadline else {
        return finish.await;
    };
    let give_up = deadline
        .checked_sub(DEADLINE_MARGIN / 2)
        .unwrap_or(deadline);
    if timeout_at(give_up, finish).await.is_err() {
        warn!("deadline reached: gone connections not all removed; their rows expire by TTL");
    }
}

/// Deletes a batch of gone connections; returns the presence topics their users left. Their
/// rows also expire by TTL, so a failure costs only a few wasted posts later; it is logged
/// and does not fail the broadcast.
async fn remove(
    store: &dyn RecipientStore,
    ids: Vec<ConnectionId>,
    via: &Audience,
) -> Vec<(UserId, Topic)> {
    match store.remove_gone(&ids, via).await {
        Ok(removed) => removed
            .into_iter()
            .flat_map(|r| {
                let user = r.connection.user_id;
                r.left.into_iter().map(move |topic| (user.clone(), topic))
            })
            .collect(),
        Err(e) => {
            warn!(count = ids.len(), error = %e, "could not remove gone connections");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::stream;

    use super::*;
    use crate::protocol::UserId;
    use crate::store::{ConnectionStore, MemoryStore, Page, Recipient, Span, SpanPages};
    use crate::test_support::{
        ENDPOINT, RecordingSender, backend_error, ids, register, store_with, subscribe_all,
        subscribers, topic,
    };

    const PAYLOAD: &[u8] = br#"{"event":"card.moved","data":{"card":7}}"#;
    const CONCURRENCY: usize = 8;

    fn payload() -> Payload {
        Payload::new(Bytes::from_static(PAYLOAD))
    }

    /// Retries that take milliseconds, so that tests of retried failures stay fast.
    fn options(concurrency: usize) -> FanoutOptions {
        FanoutOptions::new(concurrency).with_retry(RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        })
    }

    fn to_topic(name: &str) -> Audience {
        Audience::topic(&topic(name))
    }

    fn report(recipients: u64, delivered: u64, gone: u64, failed: u64) -> FanoutReport {
        FanoutReport {
            recipients,
            delivered,
            gone,
            failed,
        }
    }

    /// Fans `PAYLOAD` out to `target` at the tests' concurrency.
    async fn fan_out_to(
        store: &dyn RecipientStore,
        sender: &RecordingSender,
        target: &Audience,
        exclusions: &Exclusions,
    ) -> Result<FanoutSummary, FanoutError> {
        fan_out(
            store,
            sender,
            target,
            exclusions,
            &payload(),
            &options(CONCURRENCY),
        )
        .await
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
        let outcome = fan_out_to(&store, &sender, &to_topic("board:1"), &no_exclusions())
            .await
            .unwrap();

        // THEN exactly those three got it, once each, byte for byte
        assert_eq!(outcome.report, report(3, 3, 0, 0));
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
        let outcome = fan_out_to(&store, &sender, &to_topic("board:1"), &exclusions)
            .await
            .unwrap();

        // THEN only bob receives it, and the excluded are not recipients at all
        assert_eq!(outcome.report, report(1, 1, 0, 0));
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
        let outcome = fan_out_to(
            &store,
            &sender,
            &Audience::Connections(ids(&["c-alice-laptop", "c-bob"])),
            &exclusions,
        )
        .await
        .unwrap();

        // THEN bob alone is a recipient; alice's live connection is not reported gone
        assert_eq!(outcome.report, report(1, 1, 0, 0));
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
        let outcome = fan_out_to(&store, &sender, &to_topic("board:1"), &no_exclusions())
            .await
            .unwrap();

        // THEN bob counts as gone, and his connection and every subscription are forgotten
        assert_eq!(outcome.report, report(3, 2, 1, 0));
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
        // GIVEN posts to bob are refused (403) and to one of alice's tabs are always throttled
        let store = board_store().await;
        let sender = RecordingSender::new()
            .failing("c-bob", SendError::Failed("403 forbidden".to_owned()))
            .failing("c-alice-phone", SendError::Throttled("429".to_owned()));

        // WHEN board:1 fans out
        let outcome = fan_out_to(&store, &sender, &to_topic("board:1"), &no_exclusions())
            .await
            .unwrap();

        // THEN both failures are counted, the laptop still gets it, and nobody is removed
        assert_eq!(outcome.report, report(3, 1, 0, 2));
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
        let outcome = fan_out_to(
            &store,
            &sender,
            &Audience::Connections(ids(&["c-bob", "c-ghost-1", "c-ghost-2"])),
            &no_exclusions(),
        )
        .await
        .unwrap();

        // THEN the live one is delivered to and the two unknown ones are reported gone
        assert_eq!(outcome.report, report(3, 1, 2, 0));
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
        fn pages<'a>(&'a self, _: &'a Audience, _: Span) -> SpanPages<'a> {
            let page = |ids: &[&str]| Page {
                recipients: ids.iter().map(|id| recipient(id)).collect(),
                rest: Some(Span::all()),
            };
            Box::pin(stream::iter(vec![
                Ok(page(&["p1-a", "p1-b", "p1-c"])),
                Err(backend_error("Query")),
                Ok(page(&["p3-a"])),
            ]))
        }

        async fn count_connections(&self) -> Result<u64, StoreError> {
            Ok(4)
        }

        async fn remove_gone(
            &self,
            ids: &[ConnectionId],
            _: &Audience,
        ) -> Result<Vec<crate::store::Removed>, StoreError> {
            self.removed.lock().unwrap().extend_from_slice(ids);
            Ok(Vec::new())
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
        let error = fan_out(
            &store,
            &sender,
            &Audience::All,
            &no_exclusions(),
            &payload(),
            &options(2),
        )
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
        assert_eq!(error.summary.report, report(3, 2, 1, 0));
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
            // GIVEN 20 subscribers and posts held until the test lets them go
            let store = topic_with_subscribers(MemoryStore::new(), 20).await;
            let sender = RecordingSender::new().gated();

            // WHEN the topic fans out with a bounded concurrency
            let (target, exclusions) = (to_topic("board:big"), no_exclusions());
            let (payload, options) = (payload(), options(concurrency));
            let fan_out = fan_out(&store, &sender, &target, &exclusions, &payload, &options);
            // THEN the held posts fill exactly `concurrency` slots, however long the engine is
            // given to start more, and then everyone is delivered to
            let held = async {
                let filled = tokio::time::timeout(Duration::from_secs(10), async {
                    while sender.in_flight() < concurrency {
                        tokio::task::yield_now().await;
                    }
                })
                .await;
                assert!(filled.is_ok(), "never {concurrency} posts in flight");
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
                let held = sender.in_flight();
                sender.open_gate();
                held
            };
            let (outcome, held) = tokio::join!(fan_out, held);
            assert_eq!(held, concurrency);
            assert_eq!(outcome.unwrap().report, report(20, 20, 0, 0));
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
        let outcome = fan_out_to(&store, &sender, &to_topic("board:big"), &no_exclusions())
            .await
            .unwrap();

        // THEN all four pages were read: each of the 10 got it once
        assert_eq!(outcome.report, report(10, 10, 0, 0));
        let expected: Vec<ConnectionId> = (0..10)
            .map(|n| ConnectionId::new(format!("c-{n:02}")))
            .collect();
        assert_eq!(sender.delivered_to(), expected);
    }
}
