//! Background broadcasts under DynamoDB faults: handing one over (`create_job`), each call of
//! a part's run (the broadcast's read, the claim, the recipients' pages, the checkpoints, the
//! save that ends the run) and `GET /broadcasts/{id}`. Parts run as Lambda runs them: the
//! test takes what the launcher was asked to start and runs it, and runs a failed run again
//! under the same request id, as Lambda retries a failed invocation. A `RecordingSender`
//! counts what each connection got; the rows are read directly from DynamoDB Local.

use std::collections::BTreeMap;
use std::time::Duration;

use lambda_http::Body;
use lambda_http::http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;
use wsbridge::config::{BroadcastConfig, FanoutConfig};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::Context;
use wsbridge::handlers::broadcast::{self, RunError, RunOutcome, run_part};
use wsbridge::protocol::broadcast::FanoutReport;
use wsbridge::shards::Shard;
use wsbridge::store::jobs::{Progress, Tally};
use wsbridge::store::{DynamoDbStore, Span};
use wsbridge::test_support::{RecordingLauncher, RecordingSender, Settings};
use wsbridge_tests::faults::setup::{BroadcastRows, Faulty, PartRow, faulty_store};
use wsbridge_tests::faults::{Fault, Rule, When};

use super::{cases, each_case, faults_of, label, registered, under};

/// A call of the background path: its operation, and what its request holds that the
/// operation's other calls do not (a key prefix, a piece of its update expression).
type Call = (&'static str, &'static str);

/// Recording a broadcast and its parts: one transaction.
const CREATE_JOB: Call = ("TransactWriteItems", "bcast#");
/// Reading a broadcast whole: a part's run starts with it; the status route is it.
const JOB: Call = ("Query", "bcast#");
/// Reading a part's row, to claim it.
const PART: Call = ("GetItem", "part#");
/// Claiming it: its runs go up by one.
const CLAIM: Call = ("UpdateItem", "#runs = #runs + :one");
/// A page of the topic's subscribers.
const RECIPIENTS: Call = ("Query", "topic#");
/// A checkpoint while the run holds the part: its progress, nothing else. The whole update
/// expression, quotes included: the save that ends a run starts the same and goes on.
const CHECKPOINT: Call = (
    "UpdateItem",
    r#""SET #progress = :progress, #updated = :now""#,
);
/// The save that ends a run and lets go of the part.
const RELEASE: Call = ("UpdateItem", "REMOVE #runner");

/// Every transient, then every persistent fault on `call` (as `super::cases`).
fn cases_on((operation, holding): Call) -> Vec<(Rule, bool)> {
    cases(&[operation])
        .into_iter()
        .map(|(rule, persists)| (rule.holding(holding), persists))
        .collect()
}

/// Every fault of `call`'s operation, for good from its `nth` call on.
fn persistent_from((operation, holding): Call, nth: u64) -> Vec<(Rule, bool)> {
    faults_of(operation)
        .into_iter()
        .map(|fault| {
            (
                Rule::new(operation, When::From(nth), fault).holding(holding),
                true,
            )
        })
        .collect()
}

/// Whether `rule` is on `call`.
fn on(rule: &Rule, (operation, holding): Call) -> bool {
    rule.operation == operation && rule.holding == Some(holding)
}

/// Recipients per page.
const PAGE: i32 = 5;

/// An invocation's time in these tests: far more than any case takes (a held request costs
/// three attempt timeouts), so that no run stops for its deadline.
const INVOCATION: Duration = Duration::from_secs(120);

/// The first characters of the audience's ids, spread over the span parts are split at.
const FIRST: [char; 4] = ['0', 'A', 'a', 'z'];

/// One case's broadcast: its audience on the case's table, API Gateway (a
/// `RecordingSender`), Lambda (a `RecordingLauncher`), the function's settings.
struct Scene {
    store: DynamoDbStore,
    topic: String,
    /// The subscribers, sorted.
    audience: Vec<String>,
    sender: RecordingSender,
    launcher: RecordingLauncher,
    settings: Settings,
    config: BroadcastConfig,
}

impl Scene {
    /// `count` subscribers of a topic of case `n`'s own, read [`PAGE`] to a page; broadcasts
    /// go to the background in `shards` parts; posts are instant, 50 in flight.
    async fn new(f: &Faulty, n: usize, count: usize, shards: u32) -> Self {
        let topic = format!("bg:{n}");
        let mut audience = Vec::new();
        for i in 0..count {
            let id = format!("{}{n}-{i:03}=", FIRST[i % FIRST.len()]);
            registered(f, &id, &format!("u{n}-{i}"), &[&topic]).await;
            audience.push(id);
        }
        audience.sort();
        Self {
            store: f.store.clone().with_page_size(PAGE),
            topic,
            audience,
            sender: RecordingSender::new(),
            launcher: RecordingLauncher::new(),
            settings: Settings::default(),
            config: BroadcastConfig {
                shards,
                ..BroadcastConfig::default()
            },
        }
    }

    /// Posts take `delay`, one at a time: a run lasts long enough to checkpoint.
    fn slow(mut self, delay: Duration) -> Self {
        self.sender = RecordingSender::new().with_delay(delay);
        self.settings.fanout = Fanout::new(FanoutConfig { concurrency: 1 });
        self
    }

    fn ctx(&self) -> Context<'_> {
        self.settings.context(&self.store, &self.sender)
    }

    async fn call(&self, request: lambda_http::Request) -> (u16, Value) {
        let response = broadcast::handle(&request, &self.ctx(), &self.config, &self.launcher).await;
        let status = response.status().as_u16();
        (status, serde_json::from_slice(response.body()).unwrap())
    }

    /// `POST /broadcast` of a message to the topic, with `id`; `"async"` when `background`.
    async fn broadcast(&self, id: &str, background: bool) -> (u16, Value) {
        let body = json!({"topic": self.topic, "event": "e", "id": id, "async": background});
        let request = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri("/broadcast")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.call(request).await
    }

    /// `GET /broadcasts/{id}`.
    async fn status(&self, id: &str) -> (u16, Value) {
        let request = lambda_http::http::Request::builder()
            .method(Method::GET)
            .uri(format!("/broadcasts/{id}"))
            .body(Body::Empty)
            .unwrap();
        self.call(request).await
    }

    /// Runs part `part` of `id` as an invocation with request id `runner` does.
    async fn run(&self, id: &str, part: u32, runner: &str) -> Result<RunOutcome, RunError> {
        let ctx = Context {
            deadline: Some(Instant::now() + INVOCATION),
            ..self.ctx()
        };
        let shard = Shard {
            broadcast_id: id.to_owned(),
            part,
        };
        run_part(&shard, runner, &ctx, &self.config, &self.launcher).await
    }

    /// The parts started and not yet run.
    fn started(&self) -> Vec<u32> {
        self.launcher.launched().iter().map(|s| s.part).collect()
    }

    /// Runs every part started, and the continuations they start, until none is left.
    async fn run_started(&self, context: &str) {
        let mut runs = 0;
        loop {
            let started = self.launcher.take();
            if started.is_empty() {
                return;
            }
            for shard in started {
                runs += 1;
                let runner = format!("run-{runs}");
                let outcome = self.run(&shard.broadcast_id, shard.part, &runner).await;
                assert!(outcome.is_ok(), "{context}: {runner}: {outcome:?}");
            }
        }
    }

    /// How many posts each connection got.
    fn deliveries(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self.sender.delivered_to() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
        counts
    }

    /// Every subscriber got the message exactly once.
    fn assert_each_once(&self, context: &str) {
        let expected: BTreeMap<String, usize> =
            self.audience.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(self.deliveries(), expected, "{context}");
    }

    /// An asynchronous broadcast `id` accepted (202) and its parts' launch taken, so that
    /// the test runs them itself.
    async fn handed_over(&self, id: &str, context: &str) {
        assert_eq!(self.broadcast(id, true).await.0, 202, "{context}");
        self.launcher.take();
    }

    /// What a transient fault leaves: the run that met it finished, everyone got the
    /// message once, and the part is done in that one run.
    async fn assert_unharmed(
        &self,
        f: &Faulty,
        id: &str,
        outcome: Option<RunOutcome>,
        context: &str,
    ) {
        assert_eq!(outcome, Some(DONE), "{context}");
        self.assert_each_once(context);
        let part = the_part(&f.table.broadcast(id).await);
        assert_eq!(part, self.done(1, 0), "{context}");
    }

    /// After a run stopped and the part was taken over from `saved` (what the stopped run
    /// left on the row): everyone got the message; those who got it twice are among what
    /// the stopped run sent after its last good save, and nobody got it more.
    fn assert_taken_over(&self, before: &BTreeMap<String, usize>, saved: &Progress, context: &str) {
        let after = self.deliveries();
        for id in &self.audience {
            let got = after.get(id).copied().unwrap_or(0);
            assert!(got >= 1, "{context}: {id} was skipped; saved {saved:?}");
            if got > 1 {
                let after_the_save = saved.rest.as_ref().is_some_and(|rest| rest.contains(id))
                    || saved.unsent.iter().any(|r| r.connection_id.as_str() == id);
                assert!(
                    got == 2 && before.get(id) == Some(&1) && after_the_save,
                    "{context}: {id} got it {got} times; saved {saved:?}"
                );
            }
        }
        assert_eq!(after.len(), self.audience.len(), "{context}: {after:?}");
    }

    /// The rows of a broadcast to the whole topic just recorded, no part run yet.
    fn recorded(&self) -> BroadcastRows {
        let parts = Span::all()
            .split(self.config.shards as usize)
            .into_iter()
            .map(|span| PartRow {
                progress: Progress {
                    rest: Some(span),
                    unsent: Vec::new(),
                    tally: Tally::default(),
                },
                runs: 0,
                restarts: 0,
                runner: None,
            })
            .collect();
        BroadcastRows { job: true, parts }
    }

    /// The row of a one-part broadcast whose part reached everyone, after `runs` runs of
    /// which `restarts` took it over, each subscriber counted once.
    fn done(&self, runs: u32, restarts: u32) -> PartRow {
        let count = self.audience.len() as u64;
        PartRow {
            progress: Progress {
                rest: None,
                unsent: Vec::new(),
                tally: Tally {
                    report: FanoutReport {
                        recipients: count,
                        delivered: count,
                        gone: 0,
                        failed: 0,
                    },
                    retries: 0,
                },
            },
            runs,
            restarts,
            runner: None,
        }
    }
}

fn the_part(rows: &BroadcastRows) -> PartRow {
    assert!(rows.job, "{rows:?}");
    assert_eq!(rows.parts.len(), 1, "{rows:?}");
    rows.parts[0].clone()
}

const DONE: RunOutcome = RunOutcome::Ran {
    done: true,
    continued: false,
};

#[tokio::test]
async fn a_broadcast_is_handed_over_whole_or_not_at_all() {
    let base = faulty_store().await;
    each_case(
        &base,
        cases_on(CREATE_JOB),
        |n, rule, persists, f| async move {
            // GIVEN six subscribers of a topic; broadcasts go to the background in two parts
            let scene = Scene::new(&f, n, 6, 2).await;
            let (id, context) = (format!("handed-{n}"), label(&rule));

            // WHEN one is handed over (`"async": true`) and recording it meets a fault
            let (status, answer) = under(&f, rule, scene.broadcast(&id, true)).await;

            let rows = f.table.broadcast(&id).await;
            if persists {
                // THEN a persistent fault is a 500: nothing sent, no part started; the
                // transaction is whole or absent (whole when only its answer was lost)
                assert_eq!(
                    (status, &answer["error"]),
                    (500, &json!("internal_error")),
                    "{context}: {answer}"
                );
                assert_eq!(scene.sender.attempts(), 0, "{context}");
                assert_eq!(scene.started(), Vec::<u32>::new(), "{context}");
                let whole = rule.fault == Fault::LostAnswer;
                let expected = match whole {
                    true => scene.recorded(),
                    false => BroadcastRows::default(),
                };
                assert_eq!(rows, expected, "{context}");

                // AND retried with its id, it is answered 202 and its parts are started
                let (status, answer) = scene.broadcast(&id, true).await;
                assert_eq!(status, 202, "{context}: retried: {answer}");
                assert_eq!(
                    answer["status_url"],
                    format!("/broadcasts/{id}"),
                    "{context}"
                );
            } else {
                // THEN a transient fault is invisible: 202, recorded once, both parts started
                assert_eq!(status, 202, "{context}: {answer}");
                assert_eq!(
                    (&answer["status"], &answer["shards"], &answer["recipients"]),
                    (&json!("running"), &json!(2), &json!(0)),
                    "{context}: {answer}"
                );
                assert_eq!(rows, scene.recorded(), "{context}");
            }
            assert_eq!(scene.started(), vec![0, 1], "{context}");

            // AND its parts reach everyone, once
            scene.run_started(&context).await;
            scene.assert_each_once(&context);
            let rows = f.table.broadcast(&id).await;
            assert!(
                rows.parts
                    .iter()
                    .all(|p| p.progress.is_done() && p.runner.is_none()),
                "{context}: {rows:?}"
            );
            let counted: u64 = rows
                .parts
                .iter()
                .map(|p| p.progress.tally.report.delivered)
                .sum();
            assert_eq!(counted, 6, "{context}: {rows:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_broadcast_whose_rest_cannot_be_handed_over_says_how_many_it_reached() {
    let base = faulty_store().await;
    let persistent: Vec<_> = cases_on(CREATE_JOB).into_iter().filter(|c| c.1).collect();
    each_case(&base, persistent, |n, rule, _, f| async move {
        // GIVEN twelve subscribers, and no synchronous budget: a call sends one page (it
        // always reads one), then hands the rest over
        let mut scene = Scene::new(&f, n, 12, 1).await;
        scene.config.sync_budget = Duration::ZERO;
        let (id, context) = (format!("over-{n}"), label(&rule));

        // WHEN one is sent, and recording the rest for the background fails for good
        let (status, answer) = under(&f, rule, scene.broadcast(&id, false)).await;

        // THEN it answers 500 saying how many it reached and the id to retry with; the rest
        // got nothing; the transaction is whole or absent
        let reached = scene.sender.delivered_to().len();
        assert_eq!(reached, PAGE as usize, "{context}: {answer}");
        assert_eq!(status, 500, "{context}: {answer}");
        assert_eq!(answer["error"], "internal_error", "{context}: {answer}");
        let details = answer["details"].as_str().unwrap_or_default();
        assert!(
            details.starts_with(&format!("{reached} recipients were sent to"))
                && details.contains(&format!("{id:?}")),
            "{context}: {details}"
        );
        assert_eq!(scene.started(), Vec::<u32>::new(), "{context}");
        let rows = f.table.broadcast(&id).await;
        assert_eq!(
            (rows.job, rows.parts.len()),
            match rule.fault {
                Fault::LostAnswer => (true, 1),
                _ => (false, 0),
            },
            "{context}: {rows:?}"
        );
        let first = scene.deliveries();

        // AND retried with its id, it reaches everyone: the first page again (their clients
        // drop it by its id), the others once
        let (status, answer) = scene.broadcast(&id, false).await;
        assert_eq!(status, 202, "{context}: retried: {answer}");
        scene.run_started(&context).await;
        let after = scene.deliveries();
        for subscriber in &scene.audience {
            let expected = 1 + first.get(subscriber).copied().unwrap_or(0);
            assert_eq!(
                after.get(subscriber),
                Some(&expected),
                "{context}: {after:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_part_run_that_cannot_read_or_claim_its_part_fails_and_its_retry_runs_it() {
    let base = faulty_store().await;
    let cases = [JOB, PART, CLAIM].into_iter().flat_map(cases_on).collect();
    each_case(&base, cases, |n, rule, persists, f| async move {
        // GIVEN a broadcast to five handed over in one part, not run yet
        let scene = Scene::new(&f, n, 5, 1).await;
        let (id, context) = (format!("claimed-{n}"), label(&rule));
        scene.handed_over(&id, &context).await;

        // WHEN its run meets the fault reading the broadcast or claiming the part
        let outcome = under(&f, rule, scene.run(&id, 0, "invocation-1")).await;

        if !persists {
            // THEN a transient fault is invisible: one run, everyone once
            scene.assert_unharmed(&f, &id, outcome.ok(), &context).await;
            return;
        }
        // THEN a persistent one fails the run (so that Lambda retries it) before any post;
        // the part is as it was, but when only the claim's answer was lost: then the run
        // holds it (until its invocation's deadline) and it counts the run
        assert!(outcome.is_err(), "{context}: {outcome:?}");
        assert_eq!(scene.sender.attempts(), 0, "{context}");
        let claimed = on(&rule, CLAIM) && rule.fault == Fault::LostAnswer;
        let mut expected = scene.recorded().parts.remove(0);
        if claimed {
            expected.runs = 1;
            expected.runner = Some("invocation-1".into());
        }
        assert_eq!(
            the_part(&f.table.broadcast(&id).await),
            expected,
            "{context}"
        );

        // AND Lambda's retry, under the same request id, runs it: everyone once
        let retried = scene.run(&id, 0, "invocation-1").await;
        assert_eq!(retried.ok(), Some(DONE), "{context}");
        scene.assert_each_once(&context);
        let again = u32::from(claimed);
        let part = the_part(&f.table.broadcast(&id).await);
        assert_eq!(part, scene.done(1 + again, again), "{context}");
    })
    .await;
}

#[tokio::test]
async fn a_part_whose_recipients_cannot_be_read_goes_on_from_the_pages_it_sent() {
    let base = faulty_store().await;
    let mut cases = cases_on(RECIPIENTS);
    cases.extend(persistent_from(RECIPIENTS, 2));
    each_case(&base, cases, |n, rule, persists, f| async move {
        // GIVEN a broadcast to ten (two pages) handed over in one part
        let scene = Scene::new(&f, n, 10, 1).await;
        let (id, context) = (format!("paged-{n}"), label(&rule));
        scene.handed_over(&id, &context).await;

        // WHEN its run meets the fault reading its recipients
        let outcome = under(&f, rule, scene.run(&id, 0, "invocation-1")).await;

        if !persists {
            // THEN a transient fault is invisible
            scene.assert_unharmed(&f, &id, outcome.ok(), &context).await;
            return;
        }
        let part = the_part(&f.table.broadcast(&id).await);
        if rule.when == When::From(2) {
            // THEN when the second page fails for good, the run saves how far it got (the
            // first page, sent), lets go and starts a continuation for the rest
            let ran = RunOutcome::Ran {
                done: false,
                continued: true,
            };
            assert_eq!(outcome.ok(), Some(ran), "{context}");
            assert_eq!(
                scene.sender.delivered_to().len(),
                PAGE as usize,
                "{context}"
            );
            assert_eq!(
                (part.runner.as_deref(), part.progress.tally.report.delivered),
                (None, PAGE as u64),
                "{context}: {part:?}"
            );
            assert_eq!(scene.started(), vec![0], "{context}");
        } else {
            // THEN when the first page fails for good, nothing moved: the run lets go of
            // the part as it was and fails (so that Lambda retries it later)
            assert!(outcome.is_err(), "{context}: {outcome:?}");
            assert_eq!(scene.sender.attempts(), 0, "{context}");
            let mut expected = scene.recorded().parts.remove(0);
            expected.runs = 1;
            assert_eq!(part, expected, "{context}");
            // (Lambda's retry, under the same request id)
            let retried = scene.run(&id, 0, "invocation-1").await;
            assert_eq!(retried.ok(), Some(DONE), "{context}");
        }

        // AND the next run reaches the others: everyone once
        scene.run_started(&context).await;
        scene.assert_each_once(&context);
        let part = the_part(&f.table.broadcast(&id).await);
        assert_eq!(part, scene.done(2, 0), "{context}");
    })
    .await;
}

/// Posts of a run that checkpoints: 40 posts one at a time take four seconds at least, so
/// the run saves its progress about every second, at least three times before its end.
const SLOW_POST: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_failed_checkpoint_stops_the_run_and_its_retry_takes_over_from_the_last_save() {
    let base = faulty_store().await;
    // Transient faults on the first checkpoint; persistent ones from the second, so that
    // the last good save holds progress.
    let mut cases: Vec<_> = cases_on(CHECKPOINT).into_iter().filter(|c| !c.1).collect();
    cases.extend(persistent_from(CHECKPOINT, 2));
    each_case(&base, cases, |n, rule, persists, f| async move {
        // GIVEN a broadcast to forty handed over in one part, posts taking their time
        let scene = Scene::new(&f, n, 40, 1).await.slow(SLOW_POST);
        let (id, context) = (format!("saved-{n}"), label(&rule));
        scene.handed_over(&id, &context).await;

        // WHEN its run meets the fault saving a checkpoint
        let outcome = under(&f, rule, scene.run(&id, 0, "invocation-1")).await;

        if !persists {
            // THEN a transient fault is invisible
            scene.assert_unharmed(&f, &id, outcome.ok(), &context).await;
            return;
        }
        // THEN a persistent one stops the run short, and fails it (so that Lambda retries
        // it); the part stays held by the run, at its last good save
        assert!(outcome.is_err(), "{context}: {outcome:?}");
        let before = scene.deliveries();
        assert!(before.len() < scene.audience.len(), "{context}: {before:?}");
        let left = the_part(&f.table.broadcast(&id).await);
        assert_eq!(
            (left.runner.as_deref(), left.runs, left.progress.is_done()),
            (Some("invocation-1"), 1, false),
            "{context}: {left:?}"
        );
        assert!(
            left.progress.tally.report.recipients > 0,
            "{context}: the first checkpoint saved nothing: {left:?}"
        );

        // AND Lambda's retry, under the same request id, takes it over at once from there:
        // nobody skipped, and only what followed the last good save sent twice
        let retried = scene.run(&id, 0, "invocation-1").await;
        assert_eq!(retried.ok(), Some(DONE), "{context}");
        scene.assert_taken_over(&before, &left.progress, &context);
        let part = the_part(&f.table.broadcast(&id).await);
        assert_eq!(part, scene.done(2, 1), "{context}");
    })
    .await;
}

#[tokio::test]
async fn a_run_whose_last_save_fails_fails_and_its_retry_completes_the_part() {
    let base = faulty_store().await;
    each_case(
        &base,
        cases_on(RELEASE),
        |n, rule, persists, f| async move {
            // GIVEN a broadcast to five handed over in one part
            let scene = Scene::new(&f, n, 5, 1).await;
            let (id, context) = (format!("released-{n}"), label(&rule));
            scene.handed_over(&id, &context).await;

            // WHEN its run has sent to everyone, and saving that and letting go meets a fault
            let outcome = under(&f, rule, scene.run(&id, 0, "invocation-1")).await;

            if !persists {
                // THEN a transient fault is invisible
                scene.assert_unharmed(&f, &id, outcome.ok(), &context).await;
                return;
            }
            let left = the_part(&f.table.broadcast(&id).await);
            // THEN a persistent one fails the run (so that Lambda retries it)
            assert!(outcome.is_err(), "{context}: {outcome:?}");
            scene.assert_each_once(&context);
            let before = scene.deliveries();
            let retried = scene.run(&id, 0, "invocation-1").await;
            if rule.fault == Fault::LostAnswer {
                // AND when only its answers were lost the part is done, let go; the retry
                // finds nothing to do
                assert_eq!(left, scene.done(1, 0), "{context}");
                assert_eq!(retried.ok(), Some(RunOutcome::Skipped("done")), "{context}");
                scene.assert_each_once(&context);
            } else {
                // AND otherwise the run still holds the part, at its last good save (where
                // it started, unless it checkpointed); the retry takes it over from there
                assert_eq!(
                    (left.runner.as_deref(), left.runs, left.progress.is_done()),
                    (Some("invocation-1"), 1, false),
                    "{context}: {left:?}"
                );
                assert_eq!(retried.ok(), Some(DONE), "{context}");
                scene.assert_taken_over(&before, &left.progress, &context);
                let part = the_part(&f.table.broadcast(&id).await);
                assert_eq!(part, scene.done(2, 1), "{context}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_status_reads_through_transient_faults_and_answers_500_when_they_persist() {
    let base = faulty_store().await;
    each_case(&base, cases_on(JOB), |n, rule, persists, f| async move {
        // GIVEN a broadcast handed over in one part, not run yet, and its status
        let scene = Scene::new(&f, n, 3, 1).await;
        let (id, context) = (format!("followed-{n}"), label(&rule));
        scene.handed_over(&id, &context).await;
        let (_, undisturbed) = scene.status(&id).await;

        // WHEN its status is read and reading the broadcast meets a fault
        let (status, answer) = under(&f, rule, scene.status(&id)).await;

        // THEN a transient fault is invisible; a persistent one is 500 internal_error (never
        // a 404), safe to retry; nothing is changed, nothing started
        if persists {
            assert_eq!(
                (status, &answer["error"]),
                (500, &json!("internal_error")),
                "{context}: {answer}"
            );
        } else {
            assert_eq!((status, &answer), (200, &undisturbed), "{context}");
        }
        assert_eq!(f.table.broadcast(&id).await, scene.recorded(), "{context}");
        assert_eq!(scene.started(), Vec::<u32>::new(), "{context}");
        assert_eq!(
            scene.status(&id).await,
            (200, undisturbed),
            "{context}: retried"
        );
    })
    .await;
}
