//! The two ways of posting N messages the engine scenario compares: a plain concurrent HTTP
//! load loop on the HTTP stack the engine's sender uses too (hyper 1 through hyper-util's
//! pooled client, TCP no-delay), unsigned, one task polling every request; and the fan-out
//! engine itself, signing each post and spawning it as a task.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use wsbridge::fanout::{FanoutOptions, FanoutSummary, fan_out};
use wsbridge::protocol::Topic;
use wsbridge::protocol::broadcast::Exclusions;
use wsbridge::sender::{ConnectionSender, Payload};
use wsbridge::store::{Audience, RecipientStore};

use crate::fixtures::connection_id;
use crate::report::{Result, cpu_seconds, machine_busy_seconds};

/// One timed batch of posts.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub posts: u64,
    pub seconds: f64,
    /// CPU of this process (all threads) over the batch; the sink is another process.
    pub cpu_seconds: f64,
    /// CPU of the sink over the batch: it shares the machine's cores with the sender.
    pub sink_cpu_seconds: f64,
    /// CPU of the whole machine over the batch: the rest is other processes (other
    /// engineers' builds, say) and the kernel's work not charged to either process.
    pub machine_cpu_seconds: f64,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.posts as f64 / self.seconds
    }

    pub fn cpu_us_per_post(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.posts.max(1) as f64
    }

    /// Cores busy on average: CPU seconds per wall second.
    pub fn cores(&self) -> f64 {
        self.cpu_seconds / self.seconds
    }

    /// The sink's cores busy on average.
    pub fn sink_cores(&self) -> f64 {
        self.sink_cpu_seconds / self.seconds
    }

    pub fn sink_cpu_us_per_post(&self) -> f64 {
        self.sink_cpu_seconds * 1e6 / self.posts.max(1) as f64
    }

    /// Cores busy with anything but the sender and the sink.
    pub fn rest_cores(&self) -> f64 {
        ((self.machine_cpu_seconds - self.cpu_seconds - self.sink_cpu_seconds) / self.seconds)
            .max(0.0)
    }

    pub fn json(&self) -> Value {
        json!({
            "posts": self.posts, "seconds": self.seconds, "posts_per_second": self.rate(),
            "cpu_seconds": self.cpu_seconds, "cpu_us_per_post": self.cpu_us_per_post(),
            "cores_busy": self.cores(), "sink_cpu_seconds": self.sink_cpu_seconds,
            "sink_cpu_us_per_post": self.sink_cpu_us_per_post(),
            "sink_cores_busy": self.sink_cores(),
            "machine_cpu_seconds": self.machine_cpu_seconds,
            "rest_of_machine_cores_busy": self.rest_cores(),
        })
    }
}

/// Times `work`, which returns how many posts it made, with this process's CPU time and the
/// sink's (`sink_cpu` reads it).
pub async fn timed<F>(work: F, sink_cpu: impl Fn() -> f64) -> Result<Measurement>
where
    F: Future<Output = Result<u64>>,
{
    let (cpu, sink, machine) = (cpu_seconds("self"), sink_cpu(), machine_busy_seconds());
    let started = Instant::now();
    let posts = work.await?;
    Ok(Measurement {
        posts,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds("self") - cpu,
        sink_cpu_seconds: sink_cpu() - sink,
        machine_cpu_seconds: machine_busy_seconds() - machine,
    })
}

pub type RawClient = Client<HttpConnector, Full<Bytes>>;

/// hyper-util's pooled client, configured as the engine's sender (and the SDK's default HTTP
/// client) configures it, plain HTTP.
pub fn raw_client() -> RawClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// POSTs `payload` to `{endpoint}/@connections/{id}` for `count` ids, `concurrency` in
/// flight. Fails unless every answer is 200.
pub async fn raw_posts(
    client: &RawClient,
    endpoint: &str,
    count: usize,
    concurrency: usize,
    payload: &Bytes,
) -> Result<u64> {
    let failures = stream::iter(0..count)
        .map(|n| async move {
            let request = Request::post(format!("{endpoint}/@connections/{}", connection_id(n)))
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(payload.clone()))?;
            let response = client.request(request).await?;
            let status = response.status();
            // Read to the end, so that the connection goes back to the pool.
            response.into_body().collect().await?;
            Ok::<_, crate::report::BenchError>(status)
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|answer| std::future::ready(!matches!(answer, Ok(StatusCode::OK))))
        .count()
        .await;
    if failures > 0 {
        return Err(format!("{failures} of {count} raw posts were not answered 200").into());
    }
    Ok(count as u64)
}

/// Fans `payload` out to `topic` with the engine; fails unless every recipient got it.
pub async fn engine_posts(
    store: &dyn RecipientStore,
    sender: &Arc<dyn ConnectionSender>,
    topic: &Topic,
    expected: usize,
    concurrency: usize,
    payload: &Bytes,
) -> Result<FanoutSummary> {
    let summary = fan_out(
        store,
        sender,
        &Audience::topic(topic),
        &Exclusions::default(),
        &Payload::new(payload.clone()),
        &FanoutOptions::new(concurrency),
    )
    .await?;
    let report = summary.report;
    if report.delivered != expected as u64 || report.recipients != expected as u64 {
        return Err(
            format!("fan-out to {topic}: {report:?}, expected {expected} delivered").into(),
        );
    }
    Ok(summary)
}
