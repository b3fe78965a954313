//! Lambda as the broadcast function meets it, on this machine: the Invoke API a function
//! calls to start its own asynchronous invocations (`POST /2015-03-31/functions/{name}/
//! invocations`, `X-Amz-Invocation-Type: Event` → 202, queued), and a pool of execution
//! environments that run the queue: processes of the release binary started on demand up to
//! a cap, each with a Runtime API of its own (so each invocation is known to run in which
//! process), each taking one invocation at a time.
//!
//! As Lambda does: an invocation's deadline starts when an environment takes it; at the
//! deadline the environment is killed (a timeout); an asynchronous invocation that fails
//! (an error, a timeout, a crash) is tried again up to twice, with the same request id,
//! after a pause. On request, one environment running an asynchronous invocation is killed
//! once, mid-way, to see what a crash costs. Every environment's peak resident set
//! (`VmHWM`) and CPU are sampled while it lives.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use wsbridge::clock::now_millis;

use crate::lambda_stub::{INIT_ERROR, INVOCATION, NEXT, Outcome, invocation_response, serve_http1};
use crate::report::{Result, Stats, cpu_seconds, status_kib};

/// What Lambda runs, and how.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub binary: PathBuf,
    /// The environment Lambda sets (`lambda_env`) and the function's own;
    /// `AWS_LAMBDA_RUNTIME_API` (each environment's own) and `AWS_ENDPOINT_URL_LAMBDA` (this
    /// service) are set on top.
    pub env: Vec<(String, String)>,
    /// The function's timeout.
    pub timeout: Duration,
    /// Most environments at once (Lambda's concurrency, scaled to this machine).
    pub max_environments: usize,
    /// Pause before an asynchronous invocation that failed is tried again (Lambda: about a
    /// minute, then two).
    pub retry_delay: Duration,
    /// Where each environment's output goes (one file each).
    pub log_dir: PathBuf,
}

/// Attempts of an asynchronous invocation: the first and Lambda's two retries.
const EVENT_ATTEMPTS: u32 = 3;
/// How often every live environment's peak RSS and CPU are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `InvocationType=Event`: queued, retried on failure, nobody waits.
    Event,
    /// `RequestResponse`: the caller waits for the outcome.
    Sync,
}

#[derive(Debug, Clone)]
struct Invocation {
    request_id: String,
    event: Bytes,
    kind: Kind,
    attempt: u32,
}

/// What became of one invocation attempt.
#[derive(Debug, Clone)]
pub struct Record {
    pub request_id: String,
    pub event: bool,
    pub attempt: u32,
    pub environment: usize,
    pub started_ms: i64,
    pub seconds: f64,
    /// `ok`, `error`, `timeout`, `crashed`, `killed`.
    pub outcome: &'static str,
}

/// One execution environment: a process of the function.
struct Environment {
    index: usize,
    pid: String,
    started: Instant,
    /// The invocation it runs, since when.
    current: Mutex<Option<(Invocation, Instant)>>,
    invocations: AtomicU64,
    peak_kib: AtomicU64,
    cpu_seconds: Mutex<f64>,
    /// Set once it has exited; why.
    ended: Mutex<Option<&'static str>>,
    kill: Notify,
    /// Why it is being killed, for the record of the invocation it ran.
    kill_reason: Mutex<Option<&'static str>>,
}

impl Environment {
    fn current(&self) -> MutexGuard<'_, Option<(Invocation, Instant)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sample(&self) {
        if let Some(kib) = status_kib(&self.pid, "VmHWM") {
            self.peak_kib.fetch_max(kib, Ordering::Relaxed);
        }
        let cpu = cpu_seconds(&self.pid);
        let mut kept = self.cpu_seconds.lock().unwrap_or_else(|p| p.into_inner());
        *kept = kept.max(cpu);
    }

    fn alive(&self) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    fn kill(&self, reason: &'static str) {
        *self.kill_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.kill.notify_one();
    }
}

struct Pool {
    spec: FunctionSpec,
    /// This service's Invoke API, `http://127.0.0.1:PORT`.
    invoke_endpoint: String,
    queue: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    /// Invocations queued and not yet taken.
    pending: AtomicUsize,
    /// Environments alive and not running an invocation.
    idle: AtomicUsize,
    environments: Mutex<Vec<Arc<Environment>>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    records: Mutex<Vec<Record>>,
    next_request: AtomicU64,
    counters: Counters,
    /// Kill one environment running an asynchronous invocation once this much time has
    /// passed since `armed_at`.
    kill_plan: Mutex<Option<(Instant, Duration)>>,
    killed: Mutex<Option<Value>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by `stop`: nothing is retried or started any more.
    stopping: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Counters {
    event_invokes: AtomicU64,
    sync_invokes: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    timeouts: AtomicU64,
    crashes: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Invoke API and its pool; environments are killed when it is dropped.
pub struct LambdaService {
    pool: Arc<Pool>,
}

impl LambdaService {
    pub async fn start(spec: FunctionSpec) -> Result<Self> {
        std::fs::create_dir_all(&spec.log_dir)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let pool = Arc::new(Pool {
            spec,
            invoke_endpoint: format!("http://{address}"),
            queue: Mutex::default(),
            queued: Notify::new(),
            pending: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            environments: Mutex::default(),
            waiting: Mutex::default(),
            records: Mutex::default(),
            next_request: AtomicU64::new(0),
            counters: Counters::default(),
            kill_plan: Mutex::default(),
            killed: Mutex::default(),
            tasks: Mutex::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        let serving = pool.clone();
        let server = serve_http1(listener, move |request| {
            invoke_api(request, serving.clone())
        });
        let sampling = pool.clone();
        let sampler = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAMPLE_EVERY).await;
                sampling.sample_and_maybe_kill();
            }
        });
        lock(&pool.tasks).extend([server, sampler]);
        Ok(Self { pool })
    }

    /// Invokes the function and waits for its answer (an API Gateway request, say).
    pub async fn invoke(&self, event: Bytes, within: Duration) -> Result<Outcome> {
        self.pool.invoke_sync(event, within).await
    }

    /// Kills one environment running an asynchronous invocation `after` from now (the
    /// first one found then, or as soon as there is one).
    pub fn kill_one_after(&self, after: Duration) {
        *lock(&self.pool.kill_plan) = Some((Instant::now(), after));
    }

    /// Invocations tried so far, and what became of them; counters; environments.
    pub fn report(&self) -> Value {
        let pool = &self.pool;
        pool.sample_and_maybe_kill();
        let environments = lock(&pool.environments).clone();
        let peaks: Vec<f64> = environments
            .iter()
            .map(|e| e.peak_kib.load(Ordering::Relaxed) as f64 / 1_024.0)
            .collect();
        let c = &pool.counters;
        json!({
            "event_invokes": c.event_invokes.load(Ordering::Relaxed),
            "sync_invokes": c.sync_invokes.load(Ordering::Relaxed),
            "retried": c.retried.load(Ordering::Relaxed),
            "dropped_after_retries": c.dropped.load(Ordering::Relaxed),
            "timeouts": c.timeouts.load(Ordering::Relaxed),
            "crashes": c.crashes.load(Ordering::Relaxed),
            "killed": lock(&pool.killed).clone(),
            "environments": environments.iter().map(|e| json!({
                "index": e.index,
                "invocations": e.invocations.load(Ordering::Relaxed),
                "peak_rss_kib": e.peak_kib.load(Ordering::Relaxed),
                "cpu_seconds": *lock(&e.cpu_seconds),
                "lived_seconds": e.started.elapsed().as_secs_f64(),
                "ended": *lock(&e.ended),
            })).collect::<Vec<_>>(),
            "peak_rss_mib": Stats::of(peaks).json(),
            "invocations": lock(&pool.records).iter().map(|r| json!({
                "request_id": r.request_id, "event": r.event, "attempt": r.attempt,
                "environment": r.environment, "started_ms": r.started_ms,
                "seconds": r.seconds, "outcome": r.outcome,
            })).collect::<Vec<_>>(),
        })
    }

    /// Records of every invocation attempt so far.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.pool.records).clone()
    }

    /// Peak RSS (KiB) and CPU seconds of every environment so far, by index.
    pub fn environments(&self) -> Vec<(usize, u64, f64)> {
        self.pool.sample_and_maybe_kill();
        lock(&self.pool.environments)
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.peak_kib.load(Ordering::Relaxed),
                    *lock(&e.cpu_seconds),
                )
            })
            .collect()
    }

    /// Stops every environment (they were idle, or this ends their invocations).
    pub async fn stop(self) {
        self.pool.stopping.store(true, Ordering::SeqCst);
        let environments = lock(&self.pool.environments).clone();
        for environment in &environments {
            environment.kill("stopped");
        }
        for _ in 0..50 {
            if environments.iter().all(|e| !e.alive()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LambdaService {
    fn drop(&mut self) {
        self.pool.stopping.store(true, Ordering::SeqCst);
        for environment in lock(&self.pool.environments).iter() {
            environment.kill("stopped");
        }
        for task in lock(&self.pool.tasks).iter() {
            task.abort();
        }
    }
}

impl Pool {
    fn request_id(&self, kind: Kind) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed) + 1;
        match kind {
            Kind::Event => format!("event-{n:08}"),
            Kind::Sync => format!("sync-{n:08}"),
        }
    }

    async fn invoke_sync(self: &Arc<Self>, event: Bytes, within: Duration) -> Result<Outcome> {
        self.counters.sync_invokes.fetch_add(1, Ordering::Relaxed);
        let request_id = self.request_id(Kind::Sync);
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(request_id.clone(), answer);
        self.enqueue(Invocation {
            request_id,
            event,
            kind: Kind::Sync,
            attempt: 1,
        });
        Ok(tokio::time::timeout(within, answered)
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
            .map_err(|_| "the invocation was dropped")?)
    }

    fn invoke_event(self: &Arc<Self>, event: Bytes) {
        self.counters.event_invokes.fetch_add(1, Ordering::Relaxed);
        self.enqueue(Invocation {
            request_id: self.request_id(Kind::Event),
            event,
            kind: Kind::Event,
            attempt: 1,
        });
    }

    /// Queues an invocation, and starts an environment for it if none is free.
    fn enqueue(self: &Arc<Self>, invocation: Invocation) {
        lock(&self.queue).push_back(invocation);
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.queued.notify_one();
        self.scale();
    }

    /// Starts environments while queued invocations outnumber free ones, up to the cap.
    fn scale(self: &Arc<Self>) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        loop {
            let live = lock(&self.environments)
                .iter()
                .filter(|e| e.alive())
                .count();
            let (pending, idle) = (
                self.pending.load(Ordering::SeqCst),
                self.idle.load(Ordering::SeqCst),
            );
            if pending <= idle || live >= self.spec.max_environments {
                return;
            }
            if let Err(e) = self.spawn_environment() {
                eprintln!("lambda service: could not start an environment: {e}");
                return;
            }
        }
    }

    fn spawn_environment(self: &Arc<Self>) -> Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let runtime_api = listener.local_addr()?.to_string();
        let index = lock(&self.environments).len();
        let log = File::create(
            self.spec
                .log_dir
                .join(format!("environment-{index:03}.log")),
        )?;
        let mut child = Command::new(&self.spec.binary)
            .env_clear()
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            // The function starts its own invocations here (`LambdaLauncher`).
            .env("AWS_ENDPOINT_URL_LAMBDA", &self.invoke_endpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.spec.binary.display()))?;
        let pid = child.id().ok_or("environment exited at once")?.to_string();
        let environment = Arc::new(Environment {
            index,
            pid,
            started: Instant::now(),
            current: Mutex::default(),
            invocations: AtomicU64::new(0),
            peak_kib: AtomicU64::new(0),
            cpu_seconds: Mutex::new(0.0),
            ended: Mutex::default(),
            kill: Notify::new(),
            kill_reason: Mutex::default(),
        });
        self.idle.fetch_add(1, Ordering::SeqCst);
        lock(&self.environments).push(environment.clone());

        let listener = TcpListener::from_std(listener)?;
        let (pool, serving) = (self.clone(), environment.clone());
        let server = serve_http1(listener, move |request| {
            runtime_api_answer(request, pool.clone(), serving.clone())
        });
        let (pool, watched) = (self.clone(), environment);
        let monitor = tokio::spawn(async move {
            let reason = tokio::select! {
                _ = child.wait() => "exited",
                () = watched.kill.notified() => {
                    watched.sample();
                    let _ = child.kill().await;
                    let reason = *lock(&watched.kill_reason);
                    reason.unwrap_or("killed")
                }
            };
            server.abort();
            pool.ended(&watched, reason);
        });
        lock(&self.tasks).push(monitor);
        Ok(())
    }

    /// An environment is gone: what it was running failed.
    fn ended(self: &Arc<Self>, environment: &Arc<Environment>, reason: &'static str) {
        *lock(&environment.ended) = Some(reason);
        match environment.current().take() {
            Some((invocation, since)) => {
                let outcome = match reason {
                    "timeout" => "timeout",
                    "exited" => "crashed",
                    other => other,
                };
                if matches!(reason, "exited" | "killed") {
                    self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                }
                self.record(&invocation, environment.index, since, outcome);
                self.failed(invocation, format!("environment {reason}"));
            }
            None => {
                self.idle.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Something may be waiting for an environment that will not come back.
        self.scale();
    }

    fn record(
        &self,
        invocation: &Invocation,
        environment: usize,
        since: Instant,
        outcome: &'static str,
    ) {
        let seconds = since.elapsed().as_secs_f64();
        lock(&self.records).push(Record {
            request_id: invocation.request_id.clone(),
            event: invocation.kind == Kind::Event,
            attempt: invocation.attempt,
            environment,
            started_ms: now_millis() - (seconds * 1_000.0) as i64,
            seconds,
            outcome,
        });
    }

    /// An invocation failed: a caller waiting hears it; an asynchronous one is tried again
    /// after a pause, twice at most, with the same request id, as Lambda retries.
    fn failed(self: &Arc<Self>, mut invocation: Invocation, reason: String) {
        match invocation.kind {
            Kind::Sync => {
                if let Some(answer) = lock(&self.waiting).remove(&invocation.request_id) {
                    let _ = answer.send(Outcome {
                        request_id: invocation.request_id,
                        error: true,
                        body: Bytes::from(reason),
                    });
                }
            }
            Kind::Event if self.stopping.load(Ordering::SeqCst) => {}
            Kind::Event if invocation.attempt < EVENT_ATTEMPTS => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                invocation.attempt += 1;
                let pool = self.clone();
                let delay = self.spec.retry_delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    pool.enqueue(invocation);
                });
            }
            Kind::Event => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes the next invocation for `environment`, waiting for one.
    async fn next(&self, environment: &Environment) -> Invocation {
        loop {
            let queued = self.queued.notified();
            tokio::pin!(queued);
            // Registered before the queue is looked at: a notification in between is not lost.
            queued.as_mut().enable();
            if let Some(invocation) = lock(&self.queue).pop_front() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.idle.fetch_sub(1, Ordering::SeqCst);
                environment.invocations.fetch_add(1, Ordering::Relaxed);
                *environment.current() = Some((invocation.clone(), Instant::now()));
                return invocation;
            }
            queued.await;
        }
    }

    /// The environment answered its invocation.
    fn answered(self: &Arc<Self>, environment: &Arc<Environment>, outcome: Outcome) {
        let Some((invocation, since)) = environment.current().take() else {
            return;
        };
        environment.sample();
        self.record(
            &invocation,
            environment.index,
            since,
            if outcome.error { "error" } else { "ok" },
        );
        self.idle.fetch_add(1, Ordering::SeqCst);
        match invocation.kind {
            Kind::Sync => {
                if let Some(answer) = lock(&self.waiting).remove(&invocation.request_id) {
                    let _ = answer.send(outcome);
                }
            }
            Kind::Event if outcome.error => {
                let reason = String::from_utf8_lossy(&outcome.body).into_owned();
                self.failed(invocation, reason);
            }
            Kind::Event => {}
        }
    }

    /// Reads every live environment's peak RSS and CPU; kills those past their deadline,
    /// and the one the kill plan names.
    fn sample_and_maybe_kill(&self) {
        let environments = lock(&self.environments).clone();
        let plan = *lock(&self.kill_plan);
        let due = plan.is_some_and(|(armed, after)| armed.elapsed() >= after);
        let mut killed_one = false;
        for environment in environments.iter().filter(|e| e.alive()) {
            environment.sample();
            let running = environment.current().clone();
            let Some((invocation, since)) = running else {
                continue;
            };
            if since.elapsed() >= self.spec.timeout {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                environment.kill("timeout");
            } else if due && !killed_one && invocation.kind == Kind::Event {
                killed_one = true;
                *lock(&self.killed) = Some(json!({
                    "environment": environment.index,
                    "request_id": invocation.request_id,
                    "attempt": invocation.attempt,
                    "into_invocation_seconds": since.elapsed().as_secs_f64(),
                    "at_ms": now_millis(),
                }));
                environment.kill("killed");
            }
        }
        if killed_one {
            *lock(&self.kill_plan) = None;
        }
    }
}

fn empty(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// `POST /2015-03-31/functions/{name}/invocations`: an `Event` is queued and answered 202;
/// a `RequestResponse` is answered with the function's response.
async fn invoke_api(
    request: Request<Incoming>,
    pool: Arc<Pool>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if request.method() != Method::POST
        || !(path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations"))
    {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    let kind = match request
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
    {
        Some("Event") => Kind::Event,
        None | Some("RequestResponse") => Kind::Sync,
        Some(_) => return Ok(empty(StatusCode::BAD_REQUEST)),
    };
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(empty(StatusCode::BAD_REQUEST));
    };
    if kind == Kind::Event {
        pool.invoke_event(body);
        return Ok(empty(StatusCode::ACCEPTED));
    }
    match pool.invoke_sync(body, pool.spec.timeout * 2).await {
        Ok(outcome) => {
            let mut response = Response::new(Full::new(outcome.body));
            if outcome.error {
                response.headers_mut().insert(
                    "x-amz-function-error",
                    hyper::header::HeaderValue::from_static("Unhandled"),
                );
            }
            Ok(response)
        }
        Err(_) => Ok(empty(StatusCode::GATEWAY_TIMEOUT)),
    }
}

/// One environment's Runtime API.
async fn runtime_api_answer(
    request: Request<Incoming>,
    pool: Arc<Pool>,
    environment: Arc<Environment>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if method == Method::GET && path == NEXT {
        let invocation = pool.next(&environment).await;
        let deadline_ms = now_millis()
            .saturating_add(i64::try_from(pool.spec.timeout.as_millis()).unwrap_or(i64::MAX));
        return Ok(invocation_response(
            invocation.request_id,
            deadline_ms,
            invocation.event,
        ));
    }
    if method != Method::POST {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    if path == INIT_ERROR {
        environment.kill("init error");
        return Ok(empty(StatusCode::ACCEPTED));
    }
    let Some((request_id, error)) = path
        .strip_prefix(INVOCATION)
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(id, what)| match what {
            "response" => Some((id.to_owned(), false)),
            "error" => Some((id.to_owned(), true)),
            _ => None,
        })
    else {
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    pool.answered(
        &environment,
        Outcome {
            request_id,
            error,
            body,
        },
    );
    Ok(empty(StatusCode::ACCEPTED))
}
