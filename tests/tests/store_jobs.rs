//! Broadcasts running in parts, on both stores (DynamoDB Local started by scripts/test.sh;
//! without it these tests fail, never skip): a broadcast reads back whole; a part is held by
//! one runner at a time, taken over only when its lease has run out; saves by a runner that
//! lost its part are refused; and of runners claiming a part at once exactly one gets it.

use std::collections::BTreeSet;

use bytes::Bytes;
use wsbridge::channels::TopicPattern;
use wsbridge::clock::Clock;
use wsbridge::protocol::broadcast::{Exclusions, FanoutReport};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::store::jobs::{Claim, JOB_TTL_SECONDS, Job, Part, Progress, Tally};
use wsbridge::store::{Audience, Recipient, Span, Store, StoreError};

wsbridge_tests::conformance!(
    a_broadcast_reads_back_whole,
    an_id_is_recorded_once,
    a_part_is_held_by_one_runner_until_its_lease_runs_out,
    saves_of_a_runner_that_lost_its_part_are_refused,
    a_finished_part_is_never_claimed_again,
    of_runners_claiming_at_once_exactly_one_gets_the_part,
    unknown_and_expired_broadcasts_are_not_found,
);

const NOW_MS: i64 = 1_800_000_000_000;

fn job(id: &str, clock: &Clock) -> Job {
    let spans = Span::all().split(3);
    let parts = spans
        .into_iter()
        .enumerate()
        .map(|(index, span)| {
            let progress = Progress {
                rest: Some(span),
                unsent: Vec::new(),
                tally: Tally::default(),
            };
            Part::new(index as u32, progress, NOW_MS)
        })
        .collect();
    Job {
        id: id.to_owned(),
        audience: Audience::Subscribers(vec![
            TopicPattern::parse("room:1").unwrap(),
            TopicPattern::parse("room:*").unwrap(),
        ]),
        exclusions: Exclusions {
            user: Some(UserId::new("alice")),
            connection: Some(ConnectionId::new("c1=")),
        },
        // Binary-safe and large: a payload near API Gateway's limit.
        payload: Bytes::from((0..120_000).map(|n| (n % 251) as u8).collect::<Vec<u8>>()),
        head: Tally {
            report: FanoutReport {
                recipients: 10,
                delivered: 9,
                gone: 1,
                failed: 0,
            },
            retries: 2,
        },
        offset: Some(42),
        epoch: Some("e-1".into()),
        created_at_ms: NOW_MS,
        expires_at: clock.now_seconds() + JOB_TTL_SECONDS,
        parts,
    }
}

fn recipient(id: &str) -> Recipient {
    Recipient {
        connection_id: ConnectionId::new(id),
        user_id: UserId::new("bob"),
        endpoint: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod".into(),
    }
}

fn claimed(claim: Claim) -> Part {
    match claim {
        Claim::Claimed(part) => part,
        other => panic!("expected a claim, got {other:?}"),
    }
}

async fn a_broadcast_reads_back_whole(store: &dyn Store, clock: &Clock) {
    let job = job("b-whole", clock);
    store.create_job(&job).await.unwrap();
    assert_eq!(store.job("b-whole").await.unwrap(), Some(job));
}

async fn an_id_is_recorded_once(store: &dyn Store, clock: &Clock) {
    store.create_job(&job("b-once", clock)).await.unwrap();
    let again = store.create_job(&job("b-once", clock)).await;
    assert!(matches!(again, Err(StoreError::Exists(id)) if id == "b-once"));
}

async fn a_part_is_held_by_one_runner_until_its_lease_runs_out(store: &dyn Store, clock: &Clock) {
    store.create_job(&job("b-lease", clock)).await.unwrap();
    // GIVEN runner a holds part 1 until NOW + 29 s
    let lease = NOW_MS + 29_000;
    let held = claimed(
        store
            .claim_part("b-lease", 1, "a", lease, NOW_MS)
            .await
            .unwrap(),
    );
    assert_eq!(
        (held.runs, held.restarts, held.runner.as_deref()),
        (1, 0, Some("a"))
    );
    // THEN runner b is refused while the lease runs
    assert_eq!(
        store
            .claim_part("b-lease", 1, "b", lease, NOW_MS + 1_000)
            .await
            .unwrap(),
        Claim::Busy {
            runner: "a".into(),
            lease_until_ms: lease,
        }
    );
    // AND another part is free
    claimed(
        store
            .claim_part("b-lease", 2, "b", lease, NOW_MS)
            .await
            .unwrap(),
    );
    // WHEN a dies and its lease runs out, b takes over: a restart
    let taken = claimed(
        store
            .claim_part("b-lease", 1, "b", lease + 29_000, lease + 1)
            .await
            .unwrap(),
    );
    assert_eq!(
        (taken.runs, taken.restarts, taken.runner.as_deref()),
        (2, 1, Some("b"))
    );
    // AND b, retried under its own id, takes it back at once
    let retried = claimed(
        store
            .claim_part("b-lease", 1, "b", lease + 60_000, lease + 2)
            .await
            .unwrap(),
    );
    assert_eq!((retried.runs, retried.restarts), (3, 2));
}

async fn saves_of_a_runner_that_lost_its_part_are_refused(store: &dyn Store, clock: &Clock) {
    store.create_job(&job("b-save", clock)).await.unwrap();
    let lease = NOW_MS + 29_000;
    claimed(
        store
            .claim_part("b-save", 0, "a", lease, NOW_MS)
            .await
            .unwrap(),
    );
    // GIVEN a has saved progress: the rest, one recipient left unsent, what it did
    let progress = Progress {
        rest: Some(Span::all().after(&ConnectionId::new("M0000="))),
        unsent: vec![recipient("K1111=")],
        tally: Tally {
            report: FanoutReport {
                recipients: 500,
                delivered: 499,
                gone: 1,
                failed: 0,
            },
            retries: 3,
        },
    };
    store
        .save_part("b-save", 0, "a", &progress, false, NOW_MS + 1)
        .await
        .unwrap();
    // WHEN b takes the part over after a's lease ran out
    let taken = claimed(
        store
            .claim_part("b-save", 0, "b", lease + 29_000, lease + 1)
            .await
            .unwrap(),
    );
    // THEN b starts from a's last save, and a may save no more
    assert_eq!(taken.progress, progress);
    let late = store
        .save_part("b-save", 0, "a", &Progress::default(), false, lease + 2)
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { part: 0, .. })),
        "{late:?}"
    );
    // WHEN b lets go of it, a new runner claims it at once, and it is no restart
    store
        .save_part("b-save", 0, "b", &progress, true, lease + 3)
        .await
        .unwrap();
    let next = claimed(
        store
            .claim_part("b-save", 0, "c", lease + 60_000, lease + 4)
            .await
            .unwrap(),
    );
    assert_eq!((next.runs, next.restarts), (3, 1));
}

async fn a_finished_part_is_never_claimed_again(store: &dyn Store, clock: &Clock) {
    store.create_job(&job("b-done", clock)).await.unwrap();
    claimed(
        store
            .claim_part("b-done", 0, "a", NOW_MS + 29_000, NOW_MS)
            .await
            .unwrap(),
    );
    let done = Progress::default();
    assert!(done.is_done());
    store
        .save_part("b-done", 0, "a", &done, true, NOW_MS + 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_part("b-done", 0, "b", NOW_MS + 60_000, NOW_MS + 2)
            .await
            .unwrap(),
        Claim::Done
    );
    let job = store.job("b-done").await.unwrap().unwrap();
    assert_eq!(job.parts[0].runner, None);
    assert!(job.parts[0].progress.is_done());
}

async fn of_runners_claiming_at_once_exactly_one_gets_the_part(store: &dyn Store, clock: &Clock) {
    store.create_job(&job("b-race", clock)).await.unwrap();
    for round in 0..10 {
        // Each round, the lease of the round before has run out: eight runners race for it.
        let now = NOW_MS + round * 30_000;
        let claims = futures::future::join_all((0..8).map(|r| {
            let runner = format!("r{round}-{r}");
            async move {
                let claim = store
                    .claim_part("b-race", 0, &runner, now + 29_000, now)
                    .await
                    .unwrap();
                (runner, claim)
            }
        }))
        .await;
        let winners: BTreeSet<String> = claims
            .iter()
            .filter(|(_, c)| matches!(c, Claim::Claimed(_)))
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        let job = store.job("b-race").await.unwrap().unwrap();
        assert_eq!(job.parts[0].runner.as_ref(), winners.iter().next());
        assert_eq!(job.parts[0].runs, round as u32 + 1);
    }
}

async fn unknown_and_expired_broadcasts_are_not_found(store: &dyn Store, clock: &Clock) {
    assert_eq!(store.job("b-nobody").await.unwrap(), None);
    assert_eq!(
        store
            .claim_part("b-nobody", 0, "a", NOW_MS, NOW_MS)
            .await
            .unwrap(),
        Claim::Unknown
    );
    store.create_job(&job("b-old", clock)).await.unwrap();
    assert_eq!(
        store
            .claim_part("b-old", 7, "a", NOW_MS, NOW_MS)
            .await
            .unwrap(),
        Claim::Unknown
    );
    clock.advance(JOB_TTL_SECONDS + 1);
    assert_eq!(store.job("b-old").await.unwrap(), None);
    assert_eq!(
        store
            .claim_part("b-old", 0, "a", NOW_MS, NOW_MS)
            .await
            .unwrap(),
        Claim::Unknown
    );
    // and its id may be used again
    store.create_job(&job("b-old", clock)).await.unwrap();
}
