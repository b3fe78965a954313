use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream;

use super::*;
use crate::protocol::UserId;
use crate::sender::SendError;
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

/// The sender as the engine holds it: a clone sharing what it records.
fn shared(sender: &RecordingSender) -> Arc<dyn ConnectionSender> {
    Arc::new(sender.clone())
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
        &shared(sender),
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
        &shared(&sender),
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

/// The ids `topic_with_subscribers` gives its connections, in order.
fn subscriber_ids(count: usize) -> Vec<ConnectionId> {
    (0..count)
        .map(|n| ConnectionId::new(format!("c-{n:02}")))
        .collect()
}

/// Fans `PAYLOAD` out to `target` from `start`, checkpointing to `checkpoints`.
async fn resume(
    store: &dyn RecipientStore,
    sender: &RecordingSender,
    target: &Audience,
    start: Resume,
    options: &FanoutOptions,
    checkpoints: Option<&dyn Checkpoints>,
) -> Result<FanoutSummary, FanoutError> {
    fan_out_from(
        store,
        &shared(sender),
        target,
        start,
        &no_exclusions(),
        &payload(),
        options,
        checkpoints,
    )
    .await
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
        let engine_sender = shared(&sender);
        let fan_out = fan_out(
            &store,
            &engine_sender,
            &target,
            &exclusions,
            &payload,
            &options,
        );
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
    assert_eq!(sender.delivered_to(), subscriber_ids(10));
}

/// A management API that holds `capacity` posts at once and answers 429 to any more, each
/// post taking `latency`: an account at its `@connections` rate, seen from one fan-out.
#[derive(Default)]
struct Saturated {
    capacity: usize,
    latency: Duration,
    in_flight: AtomicUsize,
    throttled: AtomicUsize,
    delivered: Mutex<BTreeMap<ConnectionId, usize>>,
}

#[async_trait]
impl ConnectionSender for Saturated {
    async fn send(&self, recipient: &Recipient, _: &Payload) -> Result<(), SendError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if now > self.capacity {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(SendError::Throttled("429".into()));
        }
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        *self
            .delivered
            .lock()
            .unwrap()
            .entry(recipient.connection_id.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn close(&self, _: &Recipient) -> Result<(), SendError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_lowers_the_posts_in_flight_and_everyone_still_gets_it_once() {
    // GIVEN 300 subscribers, and an account that takes 5 posts at a time
    let store = topic_with_subscribers(MemoryStore::new(), 300).await;
    let account = Arc::new(Saturated {
        capacity: 5,
        latency: Duration::from_millis(20),
        ..Saturated::default()
    });
    let sender: Arc<dyn ConnectionSender> = account.clone();

    // WHEN the topic fans out with 40 posts allowed in flight
    let options = FanoutOptions::new(40);
    let summary = fan_out(
        &store,
        &sender,
        &to_topic("board:big"),
        &no_exclusions(),
        &payload(),
        &options,
    )
    .await
    .unwrap();

    // THEN everyone got it exactly once, every 429 was retried
    assert_eq!(summary.report, report(300, 300, 0, 0));
    let delivered = account.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 300);
    assert!(delivered.values().all(|&times| times == 1));
    let throttled = account.throttled.load(Ordering::SeqCst) as u64;
    assert_eq!(summary.retries, throttled);
    // AND the engine lowered its limit instead of retrying at 40 in flight: most posts were
    // answered at the first attempt (at a fixed 40, 7 of 8 attempts would be refused)
    assert!(options.limit.cuts() >= 1);
    assert!(options.limit.current() < 40, "{}", options.limit.current());
    assert!(throttled < 150, "{throttled} posts throttled of 300");
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_stopped_between_pages_is_resumed_by_another_without_gap_or_repeat() {
    // GIVEN 10 subscribers, three per page, and posts that take 10 ms
    let store = topic_with_subscribers(MemoryStore::new().with_page_size(3), 10).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(10));
    let target = to_topic("board:big");

    // WHEN a first fan-out stops reading after 15 ms
    let first_options = options(2).stopping_reading_at(Some(
        tokio::time::Instant::now() + Duration::from_millis(15),
    ));
    let first = fan_out(
        &store,
        &shared(&sender),
        &target,
        &no_exclusions(),
        &payload(),
        &first_options,
    )
    .await
    .unwrap();

    // THEN it finished the page it was sending and says where the rest starts
    let rest = first.rest.clone().expect("stopped before the end");
    assert!(first.unsent.is_empty());
    assert_eq!(first.report.recipients % 3, 0, "{:?}", first.report);
    assert!(first.report.recipients < 10);

    // WHEN a second fan-out resumes there
    let start = Resume {
        span: Some(rest),
        unsent: first.unsent.clone(),
    };
    let second = resume(&store, &sender, &target, start, &options(2), None)
        .await
        .unwrap();

    // THEN between them everyone got it exactly once
    assert_eq!(second.rest, None);
    assert_eq!(first.report.delivered + second.report.delivered, 10);
    assert_eq!(sender.delivered_to(), subscriber_ids(10));
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_what_was_not_posted_is_handed_back_and_sent_by_the_next_run() {
    // GIVEN 10 subscribers on one page, and posts that take 100 ms, two at a time
    let store = topic_with_subscribers(MemoryStore::new(), 10).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(100));
    let target = to_topic("board:big");

    // WHEN the invocation has 250 ms left after the margin
    let deadline = tokio::time::Instant::now() + DEADLINE_MARGIN + Duration::from_millis(250);
    let first = fan_out(
        &store,
        &shared(&sender),
        &target,
        &no_exclusions(),
        &payload(),
        &options(2).with_deadline(Some(deadline)),
    )
    .await
    .unwrap();

    // THEN four were posted, the two cut short and the four never started are unsent,
    // counted as failed, and the page is settled; as a checkpoint, they are handed on
    assert_eq!(first.report, report(10, 4, 0, 6));
    assert_eq!(first.unsent.len(), 6);
    assert!(first.unfinished());
    assert_eq!(first.rest, None);
    let end = first.checkpoint();
    assert_eq!((end.report, end.unsent.len()), (report(4, 4, 0, 0), 6));

    // WHEN the next run starts with them
    let start = Resume {
        span: None,
        unsent: first.unsent.clone(),
    };
    let second = resume(&store, &sender, &target, start, &options(2), None)
        .await
        .unwrap();

    // THEN everyone has it once
    assert_eq!(second.report, report(6, 6, 0, 0));
    assert_eq!(sender.delivered_to(), subscriber_ids(10));
}

/// Checkpoints, as saved.
#[derive(Default)]
struct Saved {
    checkpoints: Mutex<Vec<Checkpoint>>,
    refuse: bool,
}

#[async_trait]
impl Checkpoints for Saved {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        if self.refuse {
            return Err(backend_error("UpdateItem"));
        }
        self.checkpoints.lock().unwrap().push(checkpoint.clone());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn checkpoints_promise_only_settled_pages() {
    // GIVEN 10 subscribers, three per page, posts of 600 ms, two at a time (3 s in all)
    let store = topic_with_subscribers(MemoryStore::new().with_page_size(3), 10).await;
    let sender = RecordingSender::new()
        .with_delay(Duration::from_millis(600))
        .failing("c-04", SendError::Gone);
    let saved = Saved::default();

    // WHEN the topic fans out with checkpoints
    let summary = resume(
        &store,
        &sender,
        &to_topic("board:big"),
        Resume {
            span: Some(Span::all()),
            unsent: Vec::new(),
        },
        &options(2),
        Some(&saved),
    )
    .await
    .unwrap();

    // THEN several were saved, each counting exactly the recipients before its position
    let checkpoints = saved.checkpoints.lock().unwrap().clone();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    for checkpoint in &checkpoints {
        let after = checkpoint
            .rest
            .as_ref()
            .and_then(|r| r.after.clone())
            .unwrap();
        let before = (0..10)
            .filter(|n| format!("c-{n:02}").as_str() <= after.as_str())
            .count() as u64;
        assert_eq!(checkpoint.report.recipients, before, "{checkpoint:?}");
    }
    // AND the end, for the caller to save, is the whole report
    let end = summary.checkpoint();
    assert_eq!(end.rest, None);
    assert_eq!(end.report, report(10, 9, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_cannot_be_saved_stops_the_fan_out() {
    // GIVEN 10 subscribers, three per page, and a store that refuses checkpoints
    let store = topic_with_subscribers(MemoryStore::new().with_page_size(3), 10).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(300));
    let saved = Saved {
        refuse: true,
        ..Saved::default()
    };

    // WHEN the topic fans out
    let summary = resume(
        &store,
        &sender,
        &to_topic("board:big"),
        Resume {
            span: Some(Span::all()),
            unsent: Vec::new(),
        },
        &options(2),
        Some(&saved),
    )
    .await
    .unwrap();

    // THEN it stopped: another runner owns the rest, so nothing more was sent
    assert!(summary.checkpoint_failed);
    assert!(sender.delivered_to().len() < 10, "{:?}", summary.report);
}

/// A sender whose every post computes for a while on the thread that runs it, as signing
/// and building a request does, and remembers how many did so at the same moment.
#[derive(Default)]
struct Busy {
    computing: AtomicUsize,
    most_at_once: AtomicUsize,
}

#[async_trait]
impl ConnectionSender for Busy {
    async fn send(&self, _: &Recipient, _: &Payload) -> Result<(), SendError> {
        let now = self.computing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.computing.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn close(&self, _: &Recipient) -> Result<(), SendError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_run_on_every_worker_thread_at_once() {
    // GIVEN 60 subscribers and posts that each keep their thread busy
    let store = topic_with_subscribers(MemoryStore::new(), 60).await;
    let busy = Arc::new(Busy::default());
    let sender: Arc<dyn ConnectionSender> = busy.clone();

    // WHEN the topic fans out on a runtime of two worker threads
    let summary = fan_out(
        &store,
        &sender,
        &to_topic("board:big"),
        &no_exclusions(),
        &payload(),
        &options(8),
    )
    .await
    .unwrap();

    // THEN posts ran on both threads at the same time: one task polling every post could
    // never have two computing at once
    assert_eq!(summary.report, report(60, 60, 0, 0));
    assert!(busy.most_at_once.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_fan_out_told_to_stop_before_it_starts_still_sends_one_page() {
    // GIVEN 10 subscribers, three per page, and a stop already past
    let store = topic_with_subscribers(MemoryStore::new().with_page_size(3), 10).await;
    let sender = RecordingSender::new();
    let options = options(4).stopping_reading_at(Some(tokio::time::Instant::now()));

    // WHEN it fans out
    let summary = fan_out(
        &store,
        &shared(&sender),
        &to_topic("board:big"),
        &no_exclusions(),
        &payload(),
        &options,
    )
    .await
    .unwrap();

    // THEN one page went out and the rest is handed back: a run that stopped before
    // reading anything would hand on what it was given, and nothing would ever progress
    assert_eq!(summary.report, report(3, 3, 0, 0));
    let rest = summary.rest.expect("stopped early");
    assert_eq!(rest.after, Some(ConnectionId::new("c-02")));
}

#[tokio::test]
async fn a_post_refused_through_two_runs_is_failed_not_handed_back_again() {
    // GIVEN bob's connection answers 429 to every post (his own buffer is full)
    let store = board_store().await;
    let sender = RecordingSender::new().failing("c-bob", SendError::Throttled("429".into()));

    // WHEN board:1 fans out, THEN bob is handed back unsent, for a later run
    let first = fan_out_to(&store, &sender, &to_topic("board:1"), &no_exclusions())
        .await
        .unwrap();
    let unsent: Vec<&str> = first
        .unsent
        .iter()
        .map(|r| r.connection_id.as_str())
        .collect();
    assert_eq!(unsent, ["c-bob"]);

    // WHEN the next run starts with him, THEN he is failed: 429s that outlast two runs are
    // no passing storm, and nothing is handed on again
    let start = Resume {
        span: None,
        unsent: first.unsent.clone(),
    };
    let second = resume(
        &store,
        &sender,
        &to_topic("board:1"),
        start,
        &options(CONCURRENCY),
        None,
    )
    .await
    .unwrap();
    assert_eq!(second.report, report(1, 0, 0, 1));
    assert!(!second.unfinished());
}
