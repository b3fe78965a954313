//! Broadcasts sent in the background: handed over at once or when the synchronous budget
//! runs out, split into parts, continued across invocations, taken over when a run dies,
//! followed at `GET /broadcasts/{id}`. The parts run here as Lambda would run them: the
//! test takes what the launcher was asked to start and runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::clock::now_millis;
use crate::config::FanoutConfig;
use crate::fanout::Fanout;
use crate::protocol::ConnectionId;
use crate::store::jobs::{JOB_TTL_SECONDS, Job, Part, Progress, Tally};
use crate::store::{Audience, HistoryStore, JobStore, MemoryStore, Span};
use crate::test_support::{
    RecordingLauncher, RecordingSender, Settings, connection, put, subscribe_all,
};

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `count` connections with ids as API Gateway makes them (spread over first characters,
/// so that parts split them), all on `board:big`, read seven to a page.
async fn big_board(count: usize) -> (MemoryStore, Vec<ConnectionId>) {
    let store = MemoryStore::new().with_page_size(7);
    let mut ids = Vec::new();
    for n in 0..count {
        // The first character spread as API Gateway's are; the rest makes each unique.
        let id = format!("{}{n:014}=", char::from(BASE64[n * 37 % 64]));
        put(&store, &connection(&id, &format!("user-{n}"))).await;
        ids.push(ConnectionId::new(id));
    }
    let names: Vec<&str> = ids.iter().map(ConnectionId::as_str).collect();
    subscribe_all(&store, &names, "board:big").await;
    ids.sort();
    (store, ids)
}

fn settings(concurrency: usize) -> Settings {
    Settings {
        fanout: Fanout::new(FanoutConfig { concurrency }),
        ..Settings::default()
    }
}

fn config(sync_budget: Duration) -> BroadcastConfig {
    BroadcastConfig {
        sync_budget,
        ..BroadcastConfig::default()
    }
}

fn post(body: Value) -> Request {
    lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/broadcast")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request {
    lambda_http::http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::Empty)
        .unwrap()
}

fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body()).expect("responses are JSON")
}

/// How many times each connection got a post.
fn deliveries(sender: &RecordingSender) -> BTreeMap<ConnectionId, usize> {
    let mut counts = BTreeMap::new();
    for post in sender.posts() {
        *counts.entry(post.connection_id).or_default() += 1;
    }
    counts
}

/// Every subscriber got exactly one post.
fn everyone_once(sender: &RecordingSender, ids: &[ConnectionId]) {
    let got = deliveries(sender);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
}

/// Background broadcasts in one part.
fn one_part() -> BroadcastConfig {
    BroadcastConfig {
        shards: 1,
        ..config(Duration::from_secs(10))
    }
}

/// `GET /broadcasts/{id}`'s body.
async fn status(
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &RecordingLauncher,
    id: &str,
) -> Value {
    json_of(&handle(&get(&format!("/broadcasts/{id}")), ctx, config, launcher).await)
}

/// Runs every part the launcher was asked to start, and every continuation they start,
/// each with `run_time` before its deadline, until none is left; returns the runs.
async fn run_parts(
    ctx: &Context<'_>,
    config: &BroadcastConfig,
    launcher: &RecordingLauncher,
    run_time: Duration,
) -> usize {
    let mut runs = 0;
    loop {
        let shards = launcher.take();
        if shards.is_empty() {
            return runs;
        }
        for shard in shards {
            let ctx = Context {
                deadline: Some(Instant::now() + run_time),
                ..ctx.clone()
            };
            let runner = format!("run-{runs}");
            run_part(&shard, &runner, &ctx, config, launcher)
                .await
                .unwrap();
            runs += 1;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_async_broadcast_answers_202_and_its_parts_reach_everyone_once() {
    // GIVEN 100 subscribers
    let (store, ids) = big_board(100).await;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = settings(8);
    let ctx = settings.context(&store, &sender);
    let config = config(Duration::from_secs(10));

    // WHEN a backend asks for it to go to the background
    let body = json!({"topic": "board:big", "event": "e", "async": true});
    let response = handle(&post(body), &ctx, &config, &launcher).await;

    // THEN it is accepted: nothing sent yet, four parts started, a status to follow
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted = json_of(&response);
    assert_eq!(accepted["status"], "running");
    assert_eq!(accepted["recipients"], 0);
    assert_eq!(accepted["shards"], 4);
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(accepted["status_url"], format!("/broadcasts/{id}"));
    assert!(sender.posts().is_empty());
    let parts: Vec<u32> = launcher.launched().iter().map(|s| s.part).collect();
    assert_eq!(parts, vec![0, 1, 2, 3]);
    let running = status(&ctx, &config, &launcher, id).await;
    assert_eq!(running["status"], "running");

    // WHEN its parts run
    run_parts(&ctx, &config, &launcher, Duration::from_secs(29)).await;

    // THEN every subscriber got it exactly once, and the status says so
    everyone_once(&sender, &ids);
    let done = handle(&get(&format!("/broadcasts/{id}")), &ctx, &config, &launcher).await;
    assert_eq!(done.status(), StatusCode::OK);
    let done = json_of(&done);
    assert_eq!(done["status"], "done");
    assert_eq!(
        (done["recipients"].clone(), done["delivered"].clone()),
        (json!(100), json!(100))
    );
    let shards = done["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| s["status"] == "done"));
    let per_part: u64 = shards
        .iter()
        .map(|s| s["delivered"].as_u64().unwrap())
        .sum();
    assert_eq!(per_part, 100);
    // every part had some of them: the split spreads API Gateway's ids
    assert!(
        shards.iter().all(|s| s["recipients"].as_u64().unwrap() > 0),
        "{shards:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_over_its_budget_sends_what_it_can_then_the_rest_in_the_background() {
    // GIVEN 100 subscribers, posts of 20 ms, two at a time, and a 100 ms budget
    let (store, ids) = big_board(100).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(20));
    let launcher = RecordingLauncher::new();
    let settings = settings(2);
    let ctx = settings.context(&store, &sender);
    let config = config(Duration::from_millis(100));

    // WHEN it is broadcast
    let response = handle(
        &post(json!({"topic": "board:big", "event": "e"})),
        &ctx,
        &config,
        &launcher,
    )
    .await;

    // THEN the call sent whole pages, then handed the rest over and answered 202
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted = json_of(&response);
    let sent = accepted["delivered"].as_u64().unwrap();
    assert!(
        sent > 0 && sent < 100 && sent.is_multiple_of(7),
        "{accepted}"
    );
    assert_eq!(sender.posts().len() as u64, sent);

    // WHEN the parts run, THEN everyone has it once, and the totals hold the call's part
    run_parts(&ctx, &config, &launcher, Duration::from_secs(29)).await;
    everyone_once(&sender, &ids);
    let id = accepted["id"].as_str().unwrap();
    let done = status(&ctx, &config, &launcher, id).await;
    assert_eq!(
        (done["status"].clone(), done["delivered"].clone()),
        (json!("done"), json!(100))
    );
}

#[tokio::test(start_paused = true)]
async fn a_part_continues_itself_before_its_deadline() {
    // GIVEN an async broadcast to 100, in one part, posts of 100 ms, two at a time (5 s)
    let (store, ids) = big_board(100).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(100));
    let launcher = RecordingLauncher::new();
    let settings = settings(2);
    let ctx = settings.context(&store, &sender);
    let config = one_part();
    let body = json!({"topic": "board:big", "event": "e", "async": true});
    let accepted = json_of(&handle(&post(body), &ctx, &config, &launcher).await);

    // WHEN each run has 1.5 s before it must stop reading
    let runs = run_parts(
        &ctx,
        &config,
        &launcher,
        CONTINUE_MARGIN + Duration::from_millis(1_500),
    )
    .await;

    // THEN it took several runs, each continuing the last, and reached everyone once
    assert!(runs >= 3, "{runs} runs");
    everyone_once(&sender, &ids);
    let id = accepted["id"].as_str().unwrap();
    let done = status(&ctx, &config, &launcher, id).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["continuations"], runs as u64 - 1);
    assert_eq!(done["restarts"], 0);
    assert_eq!(done["shards"][0]["runs"], runs as u64);
}

#[tokio::test(start_paused = true)]
async fn a_part_whose_run_dies_is_taken_over_and_nobody_is_skipped() {
    // GIVEN an async broadcast to 100, in one part, posts of 100 ms, two at a time
    let (store, ids) = big_board(100).await;
    let sender = RecordingSender::new().with_delay(Duration::from_millis(100));
    let launcher = RecordingLauncher::new();
    let settings = settings(2);
    let ctx = settings.context(&store, &sender);
    let config = one_part();
    let body = json!({"topic": "board:big", "event": "e", "async": true});
    let accepted = json_of(&handle(&post(body), &ctx, &config, &launcher).await);
    let id = accepted["id"].as_str().unwrap().to_owned();
    let shard = launcher.take().remove(0);

    // WHEN its first run dies 2.5 s in (after two checkpoints), without a word
    let run_ctx = Context {
        deadline: Some(Instant::now() + Duration::from_secs(29)),
        ..ctx.clone()
    };
    let died = tokio::time::timeout(
        Duration::from_millis(2_500),
        run_part(&shard, "invocation-1", &run_ctx, &config, &launcher),
    )
    .await;
    assert!(died.is_err(), "the run finished before it was cut");
    let before = sender.posts().len();
    // posts it had already started still land, as they would in API Gateway
    tokio::time::sleep(Duration::from_secs(1)).await;

    // AND Lambda retries the invocation, under its request id
    let retry = run_part(&shard, "invocation-1", &run_ctx, &config, &launcher)
        .await
        .unwrap();
    assert_eq!(
        retry,
        RunOutcome::Ran {
            done: true,
            continued: false
        }
    );

    // THEN nobody was skipped; those sent twice are at most what went out after the dead
    // run's last checkpoint (about a second of sending and the page in hand)
    let got = deliveries(&sender);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ids);
    let twice = got.values().filter(|&&n| n == 2).count();
    assert!(got.values().all(|&n| n <= 2));
    assert!(before > 0);
    assert!(twice <= 20 + 7 + 2, "{twice} sent twice");
    let done = status(&ctx, &config, &launcher, &id).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["restarts"], 1);
    // the status counts each recipient once: the retry counted from the last checkpoint
    assert_eq!(done["recipients"], 100);
}

#[tokio::test]
async fn reading_the_status_starts_parts_nobody_runs() {
    // GIVEN a broadcast whose second part was last touched two minutes ago, held by nobody
    let store = MemoryStore::new();
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = Settings::default();
    let ctx = settings.context(&store, &sender);
    let now = now_millis();
    let left = Progress {
        rest: Some(Span::all()),
        unsent: Vec::new(),
        tally: Tally::default(),
    };
    let mut stalled = Part::new(1, left.clone(), now - 120_000);
    stalled.runs = 1;
    let job = Job {
        id: "b-stalled".into(),
        audience: Audience::All,
        exclusions: Default::default(),
        payload: bytes::Bytes::from_static(b"{}"),
        head: Tally::default(),
        offset: None,
        epoch: None,
        created_at_ms: now - 180_000,
        expires_at: crate::clock::now_seconds() + JOB_TTL_SECONDS,
        parts: vec![Part::new(0, Progress::default(), now - 1_000), stalled],
    };
    store.create_job(&job).await.unwrap();

    // WHEN its status is read
    let response = handle(
        &get("/broadcasts/b-stalled"),
        &ctx,
        &BroadcastConfig::default(),
        &launcher,
    )
    .await;

    // THEN the part shows as stalled, and it was started again
    assert_eq!(response.status(), StatusCode::OK);
    let status = json_of(&response);
    assert_eq!(status["status"], "running");
    assert_eq!(status["shards"][0]["status"], "done");
    assert_eq!(status["shards"][1]["status"], "stalled");
    let started: Vec<(String, u32)> = launcher
        .launched()
        .into_iter()
        .map(|s| (s.broadcast_id, s.part))
        .collect();
    assert_eq!(started, vec![("b-stalled".to_owned(), 1)]);
}

#[tokio::test]
async fn unknown_broadcasts_are_404_and_the_status_route_takes_get_only() {
    let store = MemoryStore::new();
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = Settings::default();
    let ctx = settings.context(&store, &sender);
    let config = BroadcastConfig::default();
    let unknown = handle(&get("/broadcasts/no%3Asuch"), &ctx, &config, &launcher).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(
        json_of(&unknown)["details"]
            .as_str()
            .unwrap()
            .contains("\"no:such\"")
    );
    let posted = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/broadcasts/x")
        .body(Body::Empty)
        .unwrap();
    let refused = handle(&posted, &ctx, &config, &launcher).await;
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// An asynchronous invocation as lambda_http hands it over: no HTTP context.
fn invocation(event: &Value) -> Request {
    lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/events")
        .extension(RequestContext::PassThrough)
        .body(Body::from(event.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_part_event_runs_the_part_and_an_http_request_with_its_body_never_does() {
    // GIVEN an async broadcast to 20, in one part, and an API key on the server API
    let (store, ids) = big_board(20).await;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = settings(8);
    let ctx = settings.context(&store, &sender);
    let config = BroadcastConfig {
        shards: 1,
        api_key: Some("backend-key-0123456789".into()),
        ..BroadcastConfig::default()
    };
    let accepted = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/broadcast")
        .header("x-api-key", "backend-key-0123456789")
        .body(Body::from(
            json!({"topic": "board:big", "event": "e", "async": true}).to_string(),
        ))
        .unwrap();
    assert_eq!(
        handle(&accepted, &ctx, &config, &launcher).await.status(),
        StatusCode::ACCEPTED
    );
    let event = launcher.take().remove(0).event();

    // WHEN the same event comes as an HTTP request, THEN it is an unknown route, run never
    let forged = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/events")
        .header("x-api-key", "backend-key-0123456789")
        .body(Body::from(event.to_string()))
        .unwrap();
    assert_eq!(
        handle(&forged, &ctx, &config, &launcher).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(sender.posts().is_empty());

    // WHEN it comes as the function's own invocation, THEN the part runs (no key needed)
    let ran = handle(&invocation(&event), &ctx, &config, &launcher).await;
    assert_eq!(ran.status(), StatusCode::OK);
    let got = deliveries(&sender);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ids);

    // AND an invocation that is no part fails, so that it is seen
    let odd = handle(&invocation(&json!({"hello": 1})), &ctx, &config, &launcher).await;
    assert_eq!(odd.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn a_batch_with_a_background_message_answers_202_with_each_status() {
    let (store, _) = big_board(10).await;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = settings(8);
    let ctx = settings.context(&store, &sender);
    let body = json!({"batch": [
        {"topic": "board:big", "event": "now"},
        {"topic": "board:big", "event": "later", "async": true},
    ]});
    let response = handle(&post(body), &ctx, &BroadcastConfig::default(), &launcher).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let results = json_of(&response)["results"].clone();
    assert_eq!(results[0]["status"], "done");
    assert_eq!(results[0]["delivered"], 10);
    assert_eq!(results[1]["status"], "running");
    assert_eq!(sender.posts().len(), 10);
}

#[test]
fn a_status_path_carries_any_id_and_reads_back() {
    for id in ["b-1", "trail/", "a/b:c+d=e@f|g", "é 日本", "x%2Fy"] {
        let path = background::status_path(id);
        assert!(!path["/broadcasts/".len()..].contains('/'), "{path}");
        assert_eq!(status_id(&path).as_deref(), Some(id), "{path}");
        assert_eq!(status_id(&format!("/prod{path}")).as_deref(), Some(id));
    }
    assert_eq!(status_id("/broadcasts/"), None);
    assert_eq!(status_id("/broadcast"), None);
    assert_eq!(status_id("/a/b/broadcasts/x"), None);
}

#[tokio::test]
async fn a_failed_part_run_fails_its_invocation_and_an_http_500_does_not() {
    // GIVEN a store that is down
    let store = crate::test_support::FailingStore;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = Settings::default();
    let ctx = settings.context(&store, &sender);
    let config = BroadcastConfig::default();
    // WHEN a part event runs, THEN the invocation fails (so that Lambda retries it)
    let event = crate::shards::Shard {
        broadcast_id: "b-1".into(),
        part: 0,
    }
    .event();
    let request = invocation(&event);
    let response = handle(&request, &ctx, &config, &launcher).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(invocation_result(&request, response).is_err());
    // AND an HTTP request answered 500 is an answer, not a failed invocation
    let count = get("/connections/count");
    let response = handle(&count, &ctx, &config, &launcher).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(invocation_result(&count, response).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_retried_broadcast_already_in_the_background_answers_its_status() {
    // GIVEN a broadcast with an id handed to the background, whose answer was lost and
    // whose idempotency record was never written (its first call died)
    let (store, _) = big_board(20).await;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());
    let settings = settings(8);
    let ctx = settings.context(&store, &sender);
    let config = BroadcastConfig::default();
    let body = json!({"topic": "board:big", "event": "e", "id": "order-7", "async": true});
    assert_eq!(
        handle(&post(body.clone()), &ctx, &config, &launcher)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    store.release("order-7").await.unwrap();
    let parts = launcher.take();
    assert_eq!(parts.len(), 4);
    // (its first part is running)
    let lease = now_millis() + 20_000;
    let claim = store
        .claim_part("order-7", 0, "invocation-1", lease, now_millis())
        .await
        .unwrap();
    assert!(matches!(claim, crate::store::jobs::Claim::Claimed(_)));

    // WHEN the backend retries it, THEN it is answered 202 with where to follow it, and the
    // parts nobody runs are started (the first call may have died before it started them;
    // one whose event is only late still runs once): not the running one
    let retried = handle(&post(body), &ctx, &config, &launcher).await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    let retried = json_of(&retried);
    assert_eq!(retried["id"], "order-7");
    assert_eq!(retried["status_url"], "/broadcasts/order-7");
    let started: Vec<u32> = launcher.take().iter().map(|s| s.part).collect();
    assert_eq!(started, vec![1, 2, 3]);
    assert!(sender.posts().is_empty());
}
