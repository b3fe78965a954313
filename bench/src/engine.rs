//! Scenario `engine`: the fan-out engine (`fan_out` + `ApiGatewaySender` + recipients from
//! memory) against the raw capacity of a local `@connections` sink, measured in the same run
//! by a plain concurrent HTTP load loop with the same concurrency and payload.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};

use crate::fixture_store::FixtureStore;
use crate::fixtures::{payload, sdk_config, topic};
use crate::load::{Measurement, RawClient, engine_posts, raw_client, raw_posts, timed};
use crate::report::{Check, Result, Table, fmt_count, machine, median, print_checks};
use crate::sink::Sink;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub sizes: Vec<usize>,
    pub latencies_ms: Vec<u64>,
    pub concurrency: usize,
    /// Runs of each size without injected latency (the median is kept); CPU-bound runs are
    /// the noisy ones. Runs with latency are made once.
    pub repeat: usize,
    pub sweep: Vec<usize>,
    pub sweep_latency_ms: u64,
    pub sweep_size: usize,
}

/// The raw loop and the engine on the same sink, size and concurrency.
struct Pair {
    latency_ms: u64,
    size: usize,
    concurrency: usize,
    raw: Measurement,
    engine: Measurement,
    retries: u64,
}

impl Pair {
    /// concurrency ÷ latency: what `concurrency` posts in flight can do at best.
    fn ideal(&self) -> Option<f64> {
        (self.latency_ms > 0).then(|| self.concurrency as f64 * 1_000.0 / self.latency_ms as f64)
    }

    fn engine_over_raw(&self) -> f64 {
        self.engine.rate() / self.raw.rate()
    }

    fn json(&self) -> Value {
        json!({
            "latency_ms": self.latency_ms, "recipients": self.size, "concurrency": self.concurrency,
            "raw": self.raw.json(), "engine": self.engine.json(), "retries": self.retries,
            "engine_over_raw": self.engine_over_raw(),
            "ideal_posts_per_second": self.ideal(),
            "engine_over_ideal": self.ideal().map(|ideal| self.engine.rate() / ideal),
            "raw_over_ideal": self.ideal().map(|ideal| self.raw.rate() / ideal),
        })
    }
}

/// A sink with its two clients: the raw one and the SDK sender the engine posts through.
struct SinkRuns<'a> {
    sink: &'a Sink,
    raw: RawClient,
    sender: Arc<dyn ConnectionSender>,
    store: &'a FixtureStore,
    payload: &'a Bytes,
    /// The smallest topic: warms connection pools up before timing.
    warm_up: usize,
    posts: u64,
}

impl<'a> SinkRuns<'a> {
    fn new(sink: &'a Sink, store: &'a FixtureStore, payload: &'a Bytes, warm_up: usize) -> Self {
        Self {
            sink,
            raw: raw_client(),
            sender: Arc::new(ApiGatewaySender::new(
                &sdk_config(None),
                Some(sink.endpoint()),
            )),
            store,
            payload,
            warm_up,
            posts: 0,
        }
    }

    async fn raw(&mut self, size: usize, concurrency: usize) -> Result<Measurement> {
        let endpoint = self.sink.endpoint();
        let measured = timed(raw_posts(
            &self.raw,
            &endpoint,
            size,
            concurrency,
            self.payload,
        ))
        .await?;
        self.posts += measured.posts;
        Ok(measured)
    }

    async fn engine(&mut self, size: usize, concurrency: usize) -> Result<(Measurement, u64)> {
        let topic = topic(size)?;
        let mut retries = 0;
        let measured = timed(async {
            let summary = engine_posts(
                self.store,
                &self.sender,
                &topic,
                size,
                concurrency,
                self.payload,
            )
            .await?;
            retries = summary.retries;
            Ok(summary.report.delivered)
        })
        .await?;
        self.posts += measured.posts;
        Ok((measured, retries))
    }

    /// Warms both pools up to `concurrency` connections, then times both, `repeat` times,
    /// alternating, and keeps the median run of each.
    async fn pair(&mut self, size: usize, concurrency: usize, repeat: usize) -> Result<Pair> {
        self.raw(self.warm_up, concurrency).await?;
        self.engine(self.warm_up, concurrency).await?;
        let (mut raws, mut engines, mut retries) = (Vec::new(), Vec::new(), 0);
        for _ in 0..repeat.max(1) {
            raws.push(self.raw(size, concurrency).await?);
            let (engine, retried) = self.engine(size, concurrency).await?;
            engines.push(engine);
            retries += retried;
        }
        Ok(Pair {
            latency_ms: self.sink.latency.as_millis() as u64,
            size,
            concurrency,
            raw: median_run(&raws),
            engine: median_run(&engines),
            retries,
        })
    }

    /// Fails unless the sink answered exactly the posts made.
    async fn check_sink(&self) -> Result<()> {
        let answered = self.sink.posts().await?;
        if answered != self.posts {
            return Err(format!("sink answered {answered} posts, {} were made", self.posts).into());
        }
        Ok(())
    }
}

fn median_run(runs: &[Measurement]) -> Measurement {
    let rate = median(&runs.iter().map(Measurement::rate).collect::<Vec<_>>());
    runs.iter()
        .copied()
        .find(|run| run.rate() == rate)
        .unwrap_or(runs[0])
}

pub async fn run(options: &EngineOptions) -> Result<Value> {
    let payload = payload()?;
    let mut sizes: Vec<usize> = options.sizes.clone();
    sizes.push(options.sweep_size);
    sizes.sort_unstable();
    sizes.dedup();
    let warm_up = sizes[0];
    println!(
        "engine: {} connections in a memory store, payload {} bytes",
        fmt_count(sizes[sizes.len() - 1] as u64),
        payload.len()
    );
    let store = FixtureStore::nested(&sizes)?;

    let mut pairs = Vec::new();
    for &latency_ms in &options.latencies_ms {
        let sink = Sink::spawn(Duration::from_millis(latency_ms)).await?;
        let mut target = SinkRuns::new(&sink, &store, &payload, warm_up);
        let repeat = if latency_ms == 0 { options.repeat } else { 1 };
        for &size in &options.sizes {
            let pair = target.pair(size, options.concurrency, repeat).await?;
            println!(
                "  {latency_ms} ms, {size}: raw {:.0}/s, engine {:.0}/s",
                pair.raw.rate(),
                pair.engine.rate()
            );
            pairs.push(pair);
        }
        target.check_sink().await?;
        sink.stop().await;
    }

    let mut sweep = Vec::new();
    if !options.sweep.is_empty() {
        let sink = Sink::spawn(Duration::from_millis(options.sweep_latency_ms)).await?;
        let mut target = SinkRuns::new(&sink, &store, &payload, warm_up);
        for &concurrency in &options.sweep {
            let pair = target.pair(options.sweep_size, concurrency, 1).await?;
            println!("  sweep {concurrency}: engine {:.0}/s", pair.engine.rate());
            sweep.push(pair);
        }
        target.check_sink().await?;
        sink.stop().await;
    }

    print_tables(options, &pairs, &sweep);
    let checks = print_checks(&checks(&pairs));
    Ok(json!({
        "scenario": "engine",
        "machine": machine(),
        "options": {
            "sizes": options.sizes, "latencies_ms": options.latencies_ms,
            "concurrency": options.concurrency, "repeat": options.repeat,
            "sweep": options.sweep, "sweep_latency_ms": options.sweep_latency_ms,
            "sweep_size": options.sweep_size, "payload_bytes": payload.len(),
        },
        "runs": pairs.iter().map(Pair::json).collect::<Vec<_>>(),
        "sweep": sweep.iter().map(Pair::json).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

fn print_tables(options: &EngineOptions, pairs: &[Pair], sweep: &[Pair]) {
    for &latency_ms in &options.latencies_ms {
        let mut table = Table::new(
            format!(
                "Engine vs. raw sink capacity: {latency_ms} ms per post, concurrency {}",
                options.concurrency
            ),
            &[
                "recipients",
                "raw posts/s",
                "engine posts/s",
                "engine ÷ raw",
                "c ÷ latency",
                "engine ÷ (c ÷ latency)",
                "raw CPU µs/post",
                "engine CPU µs/post",
            ],
        );
        for pair in pairs.iter().filter(|p| p.latency_ms == latency_ms) {
            let ideal = pair.ideal();
            table.row(vec![
                fmt_count(pair.size as u64),
                format!("{:.0}", pair.raw.rate()),
                format!("{:.0}", pair.engine.rate()),
                format!("{:.2}", pair.engine_over_raw()),
                ideal.map_or("—".into(), |i| format!("{i:.0}")),
                ideal.map_or("—".into(), |i| format!("{:.2}", pair.engine.rate() / i)),
                format!("{:.1}", pair.raw.cpu_us_per_post()),
                format!("{:.1}", pair.engine.cpu_us_per_post()),
            ]);
        }
        table.print();
    }
    if sweep.is_empty() {
        return;
    }
    let mut table = Table::new(
        format!(
            "Concurrency sweep: {} recipients, {} ms per post",
            fmt_count(options.sweep_size as u64),
            options.sweep_latency_ms
        ),
        &[
            "concurrency",
            "c ÷ latency",
            "raw posts/s",
            "engine posts/s",
            "engine ÷ (c ÷ latency)",
            "engine CPU µs/post",
            "engine cores busy",
            "50 000 take (s)",
        ],
    );
    for pair in sweep {
        table.row(vec![
            pair.concurrency.to_string(),
            pair.ideal().map_or("—".into(), |i| format!("{i:.0}")),
            format!("{:.0}", pair.raw.rate()),
            format!("{:.0}", pair.engine.rate()),
            pair.ideal()
                .map_or("—".into(), |i| format!("{:.2}", pair.engine.rate() / i)),
            format!("{:.1}", pair.engine.cpu_us_per_post()),
            format!("{:.2}", pair.engine.cores()),
            format!("{:.1}", 50_000.0 / pair.engine.rate()),
        ]);
    }
    table.print();
}

fn checks(pairs: &[Pair]) -> Vec<Check> {
    let mut checks = Vec::new();
    let at_10k = |latency: fn(u64) -> bool| {
        pairs
            .iter()
            .find(|p| p.size == 10_000 && latency(p.latency_ms))
    };
    if let Some(pair) = at_10k(|l| l == 0) {
        let ratio = pair.engine_over_raw();
        checks.push(Check::new(
            "engine ÷ raw sink capacity, 10 000 recipients, 0 ms",
            format!("{ratio:.2}"),
            "≥ 0.90",
            ratio >= 0.90,
        ));
    }
    if let Some(pair) = at_10k(|l| l > 0) {
        let ratio = pair.ideal().map_or(0.0, |i| pair.engine.rate() / i);
        checks.push(Check::new(
            format!(
                "engine ÷ (concurrency ÷ latency), 10 000 recipients, {} ms",
                pair.latency_ms
            ),
            format!("{ratio:.2}"),
            "≥ 0.90",
            ratio >= 0.90,
        ));
    }
    checks
}
