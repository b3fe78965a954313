//! A minimal `@connections` endpoint: answers every `POST …/@connections/{id}` with 200 after
//! an optional injected latency, as a real PostToConnection answers in ~10–30 ms in-region.
//! It runs as a child process (`wsbridge-bench sink`), so that its CPU is not the sender's:
//! the harness reads the sender's CPU time from its own process alone.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::report::Result;

/// What the sink has answered, for the harness to check every post arrived.
#[derive(Default)]
struct Counters {
    posts: AtomicU64,
    bytes: AtomicU64,
}

/// The child's entry point: serve on a free loopback port, print `LISTENING <address>`.
pub async fn serve(latency: Duration) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    let counters = Arc::new(Counters::default());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, counters.clone(), latency));
            // A client closing its pooled connections mid-request is normal at the end.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    counters: Arc<Counters>,
    latency: Duration,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let is_post = request.method() == Method::POST;
    let path = request.uri().path().to_owned();
    if request.method() == Method::GET && path == "/stats" {
        let stats = json!({
            "posts": counters.posts.load(Ordering::Relaxed),
            "bytes": counters.bytes.load(Ordering::Relaxed),
        });
        return Ok(Response::new(Full::new(Bytes::from(stats.to_string()))));
    }
    if !(is_post && path.contains("/@connections/")) {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    // The whole body is read, as API Gateway does before answering.
    let length = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(_) => 0,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    counters.posts.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(length as u64, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::new())))
}

/// A sink child process; killed when dropped.
pub struct Sink {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub latency: Duration,
    stats: reqwest::Client,
}

impl Sink {
    pub async fn spawn(latency: Duration) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["sink", "--latency-ms", &latency.as_millis().to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
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
            base: format!("http://{address}"),
            latency,
            stats: reqwest::Client::new(),
        })
    }

    /// The management endpoint to post to, with a stage: `http://127.0.0.1:PORT/bench`.
    pub fn endpoint(&self) -> String {
        format!("{}/bench", self.base)
    }

    /// Posts answered 200 so far.
    pub async fn posts(&self) -> Result<u64> {
        let stats: serde_json::Value = self
            .stats
            .get(format!("{}/stats", self.base))
            .send()
            .await?
            .json()
            .await?;
        stats["posts"]
            .as_u64()
            .ok_or_else(|| "sink stats without posts".into())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
