//! Background broadcasts under faults, through the real sender (signed posts over its own
//! pool) to a stand-in for API Gateway's management API that can be overloaded, with
//! recipients and parts on DynamoDB Local (started by scripts/test.sh; without it these
//! tests fail, never skip). The stand-in is needed because the account's rate limit and
//! 5xx cannot be provoked from the real API here. Parts run as Lambda runs them: the test
//! takes what the launcher was asked to start and runs it, and kills a run to see what a
//! crashed invocation costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use lambda_http::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use wsbridge::config::{BroadcastConfig, FanoutConfig};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::Context;
use wsbridge::handlers::broadcast::{self, RunOutcome, run_part};
use wsbridge::protocol::{ConnectionId, UserId};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};
use wsbridge::store::{Connection, ConnectionStore, DynamoDbStore, JobStore};
use wsbridge::test_support::{RecordingLauncher, Settings, pattern, put};
use wsbridge_local::local_sdk_config;
use wsbridge_tests::fresh_dynamodb_store;

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The account's `@connections` limit: a token bucket of `rate` posts a second (with a
/// burst of `burst`), 429 `LimitExceededException` beyond it; every `fail_every`-th post a
/// 503; each post answered after `latency`.
#[derive(Clone)]
struct Account {
    rate: f64,
    burst: f64,
    fail_every: u64,
    latency: Duration,
    state: Arc<Mutex<AccountState>>,
}

struct AccountState {
    tokens: f64,
    at: Instant,
    posts: u64,
    refused: u64,
    /// 200s per connection id.
    delivered: HashMap<String, u32>,
}

impl Account {
    fn new(rate: f64, burst: f64, fail_every: u64, latency: Duration) -> Self {
        Self {
            rate,
            burst,
            fail_every,
            latency,
            state: Arc::new(Mutex::new(AccountState {
                tokens: burst,
                at: Instant::now(),
                posts: 0,
                refused: 0,
                delivered: HashMap::new(),
            })),
        }
    }

    /// What to answer a post now: `None` to take it.
    fn admit(&self) -> Option<(StatusCode, &'static str)> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let refill = now.duration_since(state.at).as_secs_f64() * self.rate;
        state.tokens = (state.tokens + refill).min(self.burst);
        state.at = now;
        state.posts += 1;
        let answer = if state.tokens < 1.0 {
            Some((StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"))
        } else {
            state.tokens -= 1.0;
            (self.fail_every > 0 && state.posts.is_multiple_of(self.fail_every)).then_some((
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ))
        };
        if answer.is_some() {
            state.refused += 1;
        }
        answer
    }

    fn delivered(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().delivered.clone()
    }

    fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
}

async fn post_to_connection(
    State(account): State<Account>,
    Path((_stage, id)): Path<(String, String)>,
) -> (StatusCode, HeaderMap, &'static str) {
    if let Some((status, error_type)) = account.admit() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-ErrorType", error_type.parse().unwrap());
        return (status, headers, r#"{"message":null}"#);
    }
    tokio::time::sleep(account.latency).await;
    *account
        .state
        .lock()
        .unwrap()
        .delivered
        .entry(id)
        .or_default() += 1;
    (StatusCode::OK, HeaderMap::new(), "")
}

/// Serves the account's management API; returns its endpoint (with a stage).
async fn serve(account: Account) -> String {
    let app = Router::new()
        .route("/{stage}/@connections/{id}", post(post_to_connection))
        .with_state(account);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/prod")
}

/// `count` connections with API Gateway-like ids on `news`, reached through `endpoint`.
async fn audience(store: &DynamoDbStore, endpoint: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{}{n:014}=", char::from(BASE64[n * 37 % 64]));
        let connection = Connection {
            id: ConnectionId::new(&id),
            user_id: UserId::new(format!("user-{n}")),
            connected_at: 1,
            endpoint: endpoint.to_owned(),
            expires_at: wsbridge::auth::now_seconds() + 600,
            grants: Default::default(),
        };
        put(store, &connection).await;
        store
            .subscribe(&connection.id, &[pattern("news")], &[], 10)
            .await
            .unwrap();
        ids.push(id);
    }
    ids.sort();
    ids
}

fn async_broadcast() -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/broadcast")
        .body(Body::from(
            json!({"topic": "news", "event": "e", "async": true}).to_string(),
        ))
        .unwrap()
}

async fn status(ctx: &Context<'_>, id: &str, launcher: &RecordingLauncher) -> Value {
    let request = lambda_http::http::Request::builder()
        .method(Method::GET)
        .uri(format!("/broadcasts/{id}"))
        .body(Body::Empty)
        .unwrap();
    let response = broadcast::handle(&request, ctx, &BroadcastConfig::default(), launcher).await;
    serde_json::from_slice(response.body()).unwrap()
}

fn settings(concurrency: usize) -> Settings {
    Settings {
        fanout: Fanout::new(FanoutConfig { concurrency }),
        ..Settings::default()
    }
}

/// Handlers on `store`, posting through the real sender.
fn context<'a>(settings: &'a Settings, store: &'a DynamoDbStore) -> Context<'a> {
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&local_sdk_config(None), None));
    Context {
        sender,
        ..settings.context(store, &wsbridge::test_support::RecordingSender::new())
    }
}

/// Background broadcasts in `shards` parts.
fn parts(shards: u32) -> BroadcastConfig {
    BroadcastConfig {
        shards,
        ..BroadcastConfig::default()
    }
}

/// A context whose invocation ends in `seconds`.
fn invocation<'a>(ctx: &Context<'a>, seconds: u64) -> Context<'a> {
    Context {
        deadline: Some(Instant::now() + Duration::from_secs(seconds)),
        ..ctx.clone()
    }
}

#[tokio::test]
async fn a_background_broadcast_through_a_429_storm_and_5xx_reaches_everyone_once() {
    // GIVEN 240 subscribers, and an account that takes 600 posts a second (bursts of 30),
    // answers every eleventh post 503, and 20 ms per post: 12 posts in flight fill it
    let account = Account::new(600.0, 30.0, 11, Duration::from_millis(20));
    let endpoint = serve(account.clone()).await;
    let store = fresh_dynamodb_store().await.with_page_size(50);
    let ids = audience(&store, &endpoint, 240).await;
    let settings = settings(64);
    let ctx = context(&settings, &store);
    let launcher = RecordingLauncher::new();
    let config = parts(3);

    // WHEN it is sent in the background, and its parts run at once, in parallel
    let response = broadcast::handle(&async_broadcast(), &ctx, &config, &launcher).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = serde_json::from_slice(response.body()).unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let parts = launcher.take();
    assert_eq!(parts.len(), 3);
    let runs = parts.iter().enumerate().map(|(n, shard)| {
        let (ctx, config, launcher) = (invocation(&ctx, 29), &config, &launcher);
        async move {
            run_part(shard, &format!("invocation-{n}"), &ctx, config, launcher)
                .await
                .unwrap()
        }
    });
    let outcomes = futures::future::join_all(runs).await;
    assert!(outcomes.iter().all(|o| matches!(o, RunOutcome::Ran { .. })));
    // (a post throttled eight times over is handed to a continuation: run those too)
    let mut continuations = 0;
    loop {
        let more = launcher.take();
        if more.is_empty() {
            break;
        }
        for shard in more {
            continuations += 1;
            let ctx = invocation(&ctx, 29);
            run_part(
                &shard,
                &format!("continuation-{continuations}"),
                &ctx,
                &config,
                &launcher,
            )
            .await
            .unwrap();
        }
    }

    // THEN everyone was delivered to exactly once
    let delivered = account.delivered();
    let mut reached: Vec<String> = delivered.keys().cloned().collect();
    reached.sort();
    assert_eq!(reached, ids);
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    // AND the engine slowed down instead of hammering: 429s cut the limit below its ceiling
    // (how many posts were refused depends on the machine's timing: the bench's throttle
    // scenario measures it), and the status counts retries the account did refuse (a post
    // refused eight times over is retried by a continuation, as a first attempt)
    let limit = &settings.fanout.limit;
    assert!(limit.cuts() >= 1 && limit.current() < limit.max());
    let refused = account.refused();
    let done = status(&ctx, &id, &launcher).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["delivered"], 240);
    assert_eq!(done["failed"], 0);
    let retries = done["retries"].as_u64().unwrap();
    assert!(
        retries > 0 && retries <= refused,
        "{retries} retries, {refused} refused"
    );
}

#[tokio::test]
async fn a_part_whose_invocation_dies_is_retried_and_skips_nobody() {
    // GIVEN 200 subscribers, read 25 to a page, and an account answering in 40 ms; four
    // posts in flight: about 100 posts a second, 2 s of sending
    let account = Account::new(10_000.0, 10_000.0, 0, Duration::from_millis(40));
    let endpoint = serve(account.clone()).await;
    let store = fresh_dynamodb_store().await.with_page_size(25);
    let ids = audience(&store, &endpoint, 200).await;
    let settings = settings(4);
    let ctx = context(&settings, &store);
    let launcher = RecordingLauncher::new();
    let config = parts(1);
    let response = broadcast::handle(&async_broadcast(), &ctx, &config, &launcher).await;
    let accepted: Value = serde_json::from_slice(response.body()).unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let shard = launcher.take().remove(0);

    // WHEN its invocation dies right after its first checkpoint
    let run = invocation(&ctx, 29);
    let checkpointed = async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let job = store.job(&id).await.unwrap().unwrap();
            if job.parts[0].progress.tally.report.recipients > 0 {
                return;
            }
        }
    };
    tokio::select! {
        _ = run_part(&shard, "request-1", &run, &config, &launcher) => {
            panic!("the run ended before it was cut")
        }
        () = checkpointed => {}
    }
    // (posts it had in flight still land)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_before = account.delivered().len();
    let job = store.job(&id).await.unwrap().unwrap();
    let checkpointed = job.parts[0].progress.tally.report.recipients as usize;
    assert!(
        checkpointed > 0 && checkpointed < sent_before,
        "{checkpointed} of {sent_before}"
    );

    // AND Lambda retries it under the same request id
    let outcome = run_part(&shard, "request-1", &run, &config, &launcher)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Ran {
            done: true,
            continued: false
        }
    );

    // THEN everyone got it; those who got it twice are only among the ones the dead run
    // sent after its last checkpoint
    let delivered = account.delivered();
    let mut reached: Vec<String> = delivered.keys().cloned().collect();
    reached.sort();
    assert_eq!(reached, ids);
    let twice = delivered.values().filter(|&&n| n > 1).count();
    assert!(delivered.values().all(|&n| n <= 2));
    assert!(
        twice <= sent_before - checkpointed,
        "{twice} twice, {sent_before} sent, {checkpointed} checkpointed"
    );
    // AND the status counts everyone once, and the restart
    let done = status(&ctx, &id, &launcher).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["recipients"], 200);
    assert_eq!(done["restarts"], 1);
    assert_eq!(done["shards"][0]["runs"], 2);
}
