//! The `@connections` endpoint every scenario posts to: a keep-alive HTTP/1 responder
//! written to cost as little CPU as a responder can, since it runs on the same cores as the
//! sender it measures. It answers `POST …/@connections/{id}` with 200 after an optional
//! injected latency (a real PostToConnection answers in ~10–30 ms in-region), counts every
//! post per connection id (so a scenario can check each recipient got exactly one), and can
//! enforce an account's rate as API Gateway does: a token bucket of `rate` posts/s holding up
//! to `burst`, a post finding it empty answered 429 `LimitExceededException`.
//!
//! It runs as a child process (`wsbridge-bench sink`) on a runtime of its own threads (one by
//! default), so that its CPU is not the sender's and can be read apart (`Sink::cpu_seconds`).
//! Requests are read by hand: a request line, headers up to the blank line, a body of
//! `content-length` bytes; no chunked bodies, no pipelining (hyper's client sends neither).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::fixtures::connection_index;
use crate::report::{Result, cpu_seconds};

/// How the sink answers posts.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkOptions {
    /// Delay before every answer to a post, in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Posts per second the account allows (0: no limit); above it, 429.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Posts the bucket holds when full (API Gateway: half the rate, 5 000 of 10 000/s).
    #[arg(long, default_value_t = 0.0)]
    pub burst: f64,
    /// Delay before a 429, in ms (default: the same as a 200's).
    #[arg(long)]
    pub throttled_latency_ms: Option<u64>,
    /// Worker threads of the sink's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl SinkOptions {
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency_ms: latency.as_millis() as u64,
            rate: 0.0,
            burst: 0.0,
            throttled_latency_ms: None,
            threads: 1,
        }
    }

    /// API Gateway's account limit, scaled: `rate` posts/s, a burst of half of it.
    pub fn throttled(latency: Duration, rate: f64) -> Self {
        Self {
            rate,
            burst: rate / 2.0,
            ..Self::latency(latency)
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "sink".to_owned(),
            format!("--latency-ms={}", self.latency_ms),
            format!("--rate={}", self.rate),
            format!("--burst={}", self.burst),
            format!("--threads={}", self.threads),
        ];
        if let Some(ms) = self.throttled_latency_ms {
            args.push(format!("--throttled-latency-ms={ms}"));
        }
        args
    }
}

/// Width of one bucket of the time series of answers.
const SERIES_MS: u64 = 100;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
/// As API Gateway's management API throttles: the error type in `x-amzn-ErrorType`.
const THROTTLED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nx-amzn-ErrorType: LimitExceededException\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n{\"message\":\"Too Many Requests\"}";

/// Posts per connection id: the fixtures' ids (`connection_index`) in a vector, others in a
/// map.
#[derive(Default)]
struct Counts {
    fixture: Vec<u16>,
    other: HashMap<String, u32>,
}

impl Counts {
    fn add(&mut self, id: &str) {
        match connection_index(id) {
            Some(n) => {
                if n >= self.fixture.len() {
                    self.fixture.resize((n + 1).max(self.fixture.len() * 2), 0);
                }
                self.fixture[n] = self.fixture[n].saturating_add(1);
            }
            None => *self.other.entry(id.to_owned()).or_default() += 1,
        }
    }

    /// Against the fixture ids `0..expect`: how many got no post, one, two, more; posts to
    /// any other id are unexpected.
    fn summary(&self, expect: usize) -> Value {
        let (mut missing, mut once, mut twice, mut more, mut max) = (0u64, 0u64, 0u64, 0u64, 0);
        for n in 0..expect {
            let count = self.fixture.get(n).copied().unwrap_or_default();
            max = max.max(count);
            match count {
                0 => missing += 1,
                1 => once += 1,
                2 => twice += 1,
                _ => more += 1,
            }
        }
        let unexpected: u64 = self
            .fixture
            .iter()
            .skip(expect)
            .map(|c| u64::from(*c))
            .sum::<u64>()
            + self.other.values().map(|c| u64::from(*c)).sum::<u64>();
        json!({
            "expected": expect, "missing": missing, "once": once, "twice": twice,
            "more": more, "max": max, "unexpected": unexpected,
            // Posts beyond each recipient's first: the duplicates.
            "duplicates": self.fixture.iter().take(expect)
                .map(|c| u64::from(c.saturating_sub(1))).sum::<u64>(),
        })
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` held, full at the start.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the sink has answered since its start (posts, bytes) or its last reset (per-id
/// counts, the time series, the bucket).
struct State {
    options: SinkOptions,
    posts: AtomicU64,
    throttled: AtomicU64,
    bytes: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    since: Instant,
    counts: Counts,
    bucket: Option<Bucket>,
    /// Per `SERIES_MS` since `since`: posts answered 200, and 429.
    ok: Vec<u32>,
    throttled: Vec<u32>,
}

impl Window {
    fn new(options: &SinkOptions) -> Self {
        Self {
            since: Instant::now(),
            counts: Counts::default(),
            bucket: (options.rate > 0.0).then(|| Bucket::new(options.rate, options.burst)),
            ok: Vec::new(),
            throttled: Vec::new(),
        }
    }

    fn tick(series: &mut Vec<u32>, slot: usize) {
        if series.len() <= slot {
            series.resize(slot + 1, 0);
        }
        series[slot] += 1;
    }
}

impl State {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A post to `id`: whether it is answered 200 (else 429), counted either way.
    fn post(&self, id: &str, length: usize) -> bool {
        let now = Instant::now();
        let mut window = self.window();
        let slot =
            (now.saturating_duration_since(window.since).as_millis() as u64 / SERIES_MS) as usize;
        let allowed = window.bucket.as_mut().is_none_or(|b| b.take(now));
        if allowed {
            window.counts.add(id);
            Window::tick(&mut window.ok, slot);
            drop(window);
            self.posts.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(length as u64, Ordering::Relaxed);
        } else {
            Window::tick(&mut window.throttled, slot);
            drop(window);
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    fn stats(&self) -> Value {
        json!({
            "posts": self.posts.load(Ordering::Relaxed),
            "throttled": self.throttled.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
        })
    }

    fn series(&self) -> Value {
        let window = self.window();
        json!({"bucket_ms": SERIES_MS, "ok": window.ok, "throttled": window.throttled})
    }
}

/// The child's entry point: a runtime of `options.threads` threads serving on a free
/// loopback port; prints `LISTENING <address>` once it accepts.
pub fn serve(options: SinkOptions) -> Result<()> {
    let runtime = if options.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTENING {}", listener.local_addr()?);
        let state = Arc::new(State {
            window: Mutex::new(Window::new(&options)),
            options,
            posts: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            // A client closing its pooled connections is normal at the end of a run.
            tokio::spawn(connection(stream, state.clone()));
        }
    })
}

/// One parsed request head.
struct Head {
    /// Bytes of the request line and headers, the blank line included.
    length: usize,
    post: bool,
    path: String,
    content_length: usize,
}

/// The request head at the start of `buffer`, once it is all there.
fn parse_head(buffer: &[u8]) -> Option<std::result::Result<Head, ()>> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let Ok(text) = std::str::from_utf8(&buffer[..end]) else {
        return Some(Err(()));
    };
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (request_line.next(), request_line.next());
    let (Some(method), Some(path)) = (method, path) else {
        return Some(Err(()));
    };
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    Some(Ok(Head {
        length: end,
        post: method == "POST",
        path: path.to_owned(),
        content_length,
    }))
}

async fn connection(mut stream: TcpStream, state: Arc<State>) {
    let mut buffer = BytesMut::with_capacity(4_096);
    loop {
        let head = loop {
            match parse_head(&buffer) {
                Some(Ok(head)) => break head,
                Some(Err(())) => return,
                None => {}
            }
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        // The whole body is read, as API Gateway does before answering.
        let total = head.length + head.content_length;
        while buffer.len() < total {
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buffer.advance(total);
        let (delay, answer) = answer(&head, &state);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// What to answer, after how long.
fn answer(head: &Head, state: &State) -> (Duration, Vec<u8>) {
    let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    if let Some(id) = path
        .split_once("/@connections/")
        .map(|(_, id)| id)
        .filter(|_| head.post)
    {
        let options = &state.options;
        return if state.post(id, head.content_length) {
            (Duration::from_millis(options.latency_ms), OK.to_vec())
        } else {
            let ms = options.throttled_latency_ms.unwrap_or(options.latency_ms);
            (Duration::from_millis(ms), THROTTLED.to_vec())
        };
    }
    let body = match (head.post, path) {
        (false, "/stats") => state.stats(),
        (false, "/series") => state.series(),
        (false, "/counts") => {
            let expect = query
                .strip_prefix("expect=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            state.window().counts.summary(expect)
        }
        (true, "/reset") => {
            *state.window() = Window::new(&state.options);
            json!({"reset": true})
        }
        _ => return (Duration::ZERO, NOT_FOUND.to_vec()),
    };
    let body = body.to_string();
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    (Duration::ZERO, answer)
}

/// A sink child process; killed when dropped.
pub struct Sink {
    child: Child,
    pid: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub latency: Duration,
    control: reqwest::Client,
}

impl Sink {
    /// A sink that answers 200 after `latency`.
    pub async fn spawn(latency: Duration) -> Result<Self> {
        Self::start(&SinkOptions::latency(latency)).await
    }

    pub async fn start(options: &SinkOptions) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(options.args())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("sink exited at once")?.to_string();
        let stdout = child.stdout.take().ok_or("sink has no stdout")?;
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .map_err(|_| "sink did not start within 10 s")??;
        let address = first
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("sink said {first:?}"))?;
        Ok(Self {
            child,
            pid,
            base: format!("http://{address}"),
            latency: Duration::from_millis(options.latency_ms),
            control: reqwest::Client::new(),
        })
    }

    /// The management endpoint to post to, with a stage: `http://127.0.0.1:PORT/bench`.
    pub fn endpoint(&self) -> String {
        format!("{}/bench", self.base)
    }

    /// CPU seconds the sink has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid)
    }

    /// Reads the sink's CPU seconds, from any thread.
    pub fn cpu_probe(&self) -> impl Fn() -> f64 + Send + Sync + Clone + 'static {
        let pid = self.pid.clone();
        move || cpu_seconds(&pid)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .control
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Posts answered 200 so far.
    pub async fn posts(&self) -> Result<u64> {
        self.get("/stats").await?["posts"]
            .as_u64()
            .ok_or_else(|| "sink stats without posts".into())
    }

    /// Per-id counts since the last reset, against the fixture ids `0..expect`:
    /// `{missing, once, twice, more, max, duplicates, unexpected}`.
    pub async fn counts(&self, expect: usize) -> Result<Value> {
        self.get(&format!("/counts?expect={expect}")).await
    }

    /// Posts answered 200 and 429 per 100 ms since the last reset.
    pub async fn series(&self) -> Result<Value> {
        self.get("/series").await
    }

    /// Forgets per-id counts and the time series, and fills the bucket.
    pub async fn reset(&self) -> Result<()> {
        self.control
            .post(format!("{}/reset", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_once_it_is_whole() {
        let request =
            b"POST /bench/@connections/a%3D HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert!(parse_head(&request[..20]).is_none());
        let head = parse_head(request).unwrap().unwrap();
        assert!(head.post);
        assert_eq!(head.path, "/bench/@connections/a%3D");
        assert_eq!(head.content_length, 5);
        assert_eq!(head.length, request.len() - 5);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = Bucket::new(1_000.0, 10.0);
        let start = bucket.at;
        let allowed = (0..20).filter(|_| bucket.take(start)).count();
        assert_eq!(allowed, 10);
        // 5 ms later: 5 more tokens
        let later = start + Duration::from_millis(5);
        assert_eq!((0..20).filter(|_| bucket.take(later)).count(), 5);
    }

    #[test]
    fn counts_tell_missing_from_duplicated() {
        let mut counts = Counts::default();
        for n in [0, 1, 1, 3, 3, 3] {
            counts.add(&crate::fixtures::connection_id(n));
        }
        counts.add("someone-else");
        let summary = counts.summary(4);
        assert_eq!(summary["missing"], 1);
        assert_eq!(summary["once"], 1);
        assert_eq!(summary["twice"], 1);
        assert_eq!(summary["more"], 1);
        assert_eq!(summary["duplicates"], 3);
        assert_eq!(summary["unexpected"], 1);
    }
}
