//! Scenario `engine`: the fan-out engine (`fan_out` + `ApiGatewaySender`'s lean
//! PostToConnection path + recipients from memory) against the raw capacity of a local
//! `@connections` sink, measured in the same run by a plain concurrent HTTP load loop with
//! the same concurrency and payload; the same two on runtimes of one and of two worker
//! threads (how CPU-bound throughput scales with cores); and a concurrency sweep with
//! latency, for the default `FANOUT_CONCURRENCY`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wsbridge::sender::{ApiGatewaySender, ConnectionSender, Payload, SendError};
use wsbridge::store::Recipient;

use crate::fixture_store::FixtureStore;
use crate::fixtures::{payload, sdk_config, topic};
use crate::load::{Measurement, RawClient, engine_posts, raw_client, raw_posts, timed};
use crate::report::{Check, Result, Table, fmt_count, machine, median, print_checks};
use crate::sink::Sink;

/// Issue 13's targets, all ratios within one run.
const CPU_RATIO_TARGET: f64 = 1.5;
const RATE_RATIO_TARGET: f64 = 0.8;
const SCALING_TARGET: f64 = 1.7;
/// The earlier target with latency: posts/s against what the concurrency allows.
const IDEAL_RATIO_TARGET: f64 = 0.9;

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
    /// Recipients of a sweep run: at least this, and at least 50 rounds of the concurrency.
    pub sweep_size: usize,
    /// Worker threads of the runtimes the scaling runs use (empty: skip them).
    pub threads: Vec<usize>,
    pub threads_size: usize,
    /// For profiling: the engine alone, no raw loop (its columns repeat the engine's).
    pub engine_only: bool,
}

impl EngineOptions {
    fn sweep_size_at(&self, concurrency: usize) -> usize {
        self.sweep_size.max(concurrency * 50)
    }

    /// Every audience size any run needs.
    fn all_sizes(&self) -> Vec<usize> {
        let mut sizes = self.sizes.clone();
        sizes.extend(self.sweep.iter().map(|&c| self.sweep_size_at(c)));
        if !self.threads.is_empty() {
            sizes.push(self.threads_size);
        }
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
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

    fn cpu_over_raw(&self) -> f64 {
        self.engine.cpu_us_per_post() / self.raw.cpu_us_per_post()
    }

    fn json(&self) -> Value {
        json!({
            "latency_ms": self.latency_ms, "recipients": self.size, "concurrency": self.concurrency,
            "raw": self.raw.json(), "engine": self.engine.json(), "retries": self.retries,
            "engine_over_raw": self.engine_over_raw(),
            "engine_cpu_over_raw": self.cpu_over_raw(),
            "ideal_posts_per_second": self.ideal(),
            "engine_over_ideal": self.ideal().map(|ideal| self.engine.rate() / ideal),
            "raw_over_ideal": self.ideal().map(|ideal| self.raw.rate() / ideal),
        })
    }
}

/// A sender that posts nothing (it yields once, as a post's task would wait for its
/// answer): what the engine itself costs per post, apart from signing and HTTP, and how
/// that scales with worker threads when no sink shares the cores.
struct NoPost;

#[async_trait::async_trait]
impl ConnectionSender for NoPost {
    async fn send(&self, _: &Recipient, _: &Payload) -> std::result::Result<(), SendError> {
        tokio::task::yield_now().await;
        Ok(())
    }

    async fn close(&self, _: &Recipient) -> std::result::Result<(), SendError> {
        Ok(())
    }
}

/// One worker-thread count's runs: the pair against the sink (each task on a worker); and,
/// to see where the time goes, the engine with its task polled where it is called, and the
/// engine posting nothing (its task where it is called, and on a worker).
struct Scaling {
    threads: usize,
    pair: Pair,
    on_caller: Measurement,
    no_post: Measurement,
    no_post_on_worker: Measurement,
}

/// What a sender needs to reach the sink, from any runtime.
#[derive(Clone)]
struct Target {
    endpoint: String,
    latency_ms: u64,
    sink_cpu: Arc<dyn Fn() -> f64 + Send + Sync>,
    store: Arc<FixtureStore>,
    payload: Bytes,
    /// The smallest topic: warms connection pools up before timing.
    warm_up: usize,
    engine_only: bool,
}

impl Target {
    fn new(
        sink: &Sink,
        store: &Arc<FixtureStore>,
        payload: &Bytes,
        warm_up: usize,
        engine_only: bool,
    ) -> Self {
        Self {
            engine_only,
            endpoint: sink.endpoint(),
            latency_ms: sink.latency.as_millis() as u64,
            sink_cpu: Arc::new(sink.cpu_probe()),
            store: store.clone(),
            payload: payload.clone(),
            warm_up,
        }
    }
}

/// The raw client and the engine's sender, both built on the runtime they run on (their
/// pooled connections are tasks of it).
struct Runs {
    target: Target,
    raw: RawClient,
    sender: Arc<dyn ConnectionSender>,
    /// Posts made, for the check against the sink's count.
    posts: u64,
}

impl Runs {
    fn new(target: Target) -> Self {
        Self {
            raw: raw_client(),
            sender: Arc::new(ApiGatewaySender::new(
                &sdk_config(None),
                Some(target.endpoint.clone()),
            )),
            target,
            posts: 0,
        }
    }

    /// The raw loop, its task on a worker thread as the engine's is (`engine`).
    async fn raw(&mut self, size: usize, concurrency: usize) -> Result<Measurement> {
        let sink_cpu = self.target.sink_cpu.clone();
        let (client, endpoint, payload) = (
            self.raw.clone(),
            self.target.endpoint.clone(),
            self.target.payload.clone(),
        );
        let measured = timed(
            async move {
                tokio::spawn(async move {
                    raw_posts(&client, &endpoint, size, concurrency, &payload).await
                })
                .await?
            },
            move || sink_cpu(),
        )
        .await?;
        self.posts += measured.posts;
        Ok(measured)
    }

    /// The engine, its task on a worker thread as the broadcast function runs its handler
    /// (`functions/broadcast`: each request a task).
    async fn engine(&mut self, size: usize, concurrency: usize) -> Result<(Measurement, u64)> {
        let topic = topic(size)?;
        let (store, sender, payload) = (
            self.target.store.clone(),
            self.sender.clone(),
            self.target.payload.clone(),
        );
        let sink_cpu = self.target.sink_cpu.clone();
        let mut retries = 0;
        let measured = timed(
            async {
                let summary = tokio::spawn(async move {
                    engine_posts(store.as_ref(), &sender, &topic, size, concurrency, &payload).await
                })
                .await??;
                retries = summary.retries;
                Ok(summary.report.delivered)
            },
            move || sink_cpu(),
        )
        .await?;
        self.posts += measured.posts;
        Ok((measured, retries))
    }

    /// The engine through `sender` (the sink's, or `NoPost`), `repeat` times, the median
    /// kept; its task spawned on a worker thread when `on_worker` (as the broadcast function
    /// runs it), else polled where it is called, as the function did before each request
    /// became a task: on `main`'s thread in `block_on`, where each result wakes a thread
    /// that is not a worker and each post is spawned from outside the workers.
    async fn engine_where(
        &mut self,
        sender: &Arc<dyn ConnectionSender>,
        on_worker: bool,
        size: usize,
        concurrency: usize,
        repeat: usize,
    ) -> Result<Measurement> {
        let mut runs = Vec::new();
        for _ in 0..repeat.max(1) {
            let topic = topic(size)?;
            let (store, posting, payload) = (
                self.target.store.clone(),
                sender.clone(),
                self.target.payload.clone(),
            );
            let fan_out = async move {
                let summary = engine_posts(
                    store.as_ref(),
                    &posting,
                    &topic,
                    size,
                    concurrency,
                    &payload,
                )
                .await?;
                Ok::<_, crate::report::BenchError>(summary.report.delivered)
            };
            let sink_cpu = self.target.sink_cpu.clone();
            let measured = timed(
                async move {
                    match on_worker {
                        true => tokio::spawn(fan_out).await?,
                        false => fan_out.await,
                    }
                },
                move || sink_cpu(),
            )
            .await?;
            if Arc::ptr_eq(sender, &self.sender) {
                self.posts += measured.posts;
            }
            runs.push(measured);
        }
        Ok(median_run(&runs))
    }

    /// Warms both pools up to `concurrency` connections, then times both, `repeat` times,
    /// alternating, and keeps the median run of each.
    async fn pair(&mut self, size: usize, concurrency: usize, repeat: usize) -> Result<Pair> {
        let (warm_up, engine_only) = (self.target.warm_up, self.target.engine_only);
        if !engine_only {
            self.raw(warm_up, concurrency).await?;
        }
        self.engine(warm_up, concurrency).await?;
        let (mut raws, mut engines, mut retries) = (Vec::new(), Vec::new(), 0);
        for _ in 0..repeat.max(1) {
            if !engine_only {
                raws.push(self.raw(size, concurrency).await?);
            }
            let (engine, retried) = self.engine(size, concurrency).await?;
            engines.push(engine);
            retries += retried;
        }
        if engine_only {
            raws.clone_from(&engines);
        }
        Ok(Pair {
            latency_ms: self.target.latency_ms,
            size,
            concurrency,
            raw: median_run(&raws),
            engine: median_run(&engines),
            retries,
        })
    }
}

fn median_run(runs: &[Measurement]) -> Measurement {
    let rate = median(&runs.iter().map(Measurement::rate).collect::<Vec<_>>());
    runs.iter()
        .copied()
        .find(|run| run.rate() == rate)
        .unwrap_or(runs[0])
}

/// Fails unless the sink answered exactly the posts made.
async fn check_sink(sink: &Sink, posts: u64) -> Result<()> {
    let answered = sink.posts().await?;
    if answered != posts {
        return Err(format!("sink answered {answered} posts, {posts} were made").into());
    }
    Ok(())
}

/// The same pair as `Runs::pair`, then the engine with `NoPost` (the median of `repeat`),
/// on a runtime of its own with `threads` worker threads, in a thread of its own; returns
/// them and the posts made to the sink.
async fn on_runtime(
    threads: usize,
    target: Target,
    size: usize,
    concurrency: usize,
    repeat: usize,
) -> Result<(Scaling, u64)> {
    let (done, result) = oneshot::channel();
    std::thread::spawn(move || {
        let measured = (|| -> Result<(Scaling, u64)> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(format!("engine-{threads}w"))
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut runs = Runs::new(target);
                let pair = runs.pair(size, concurrency, repeat).await?;
                let sender = runs.sender.clone();
                let no_post: Arc<dyn ConnectionSender> = Arc::new(NoPost);
                let on_caller = runs
                    .engine_where(&sender, false, size, concurrency, repeat)
                    .await?;
                let no_post_here = runs
                    .engine_where(&no_post, false, size, concurrency, repeat)
                    .await?;
                let no_post_on_worker = runs
                    .engine_where(&no_post, true, size, concurrency, repeat)
                    .await?;
                let scaling = Scaling {
                    threads,
                    pair,
                    on_caller,
                    no_post: no_post_here,
                    no_post_on_worker,
                };
                Ok((scaling, runs.posts))
            })
        })();
        let _ = done.send(measured);
    });
    result.await.map_err(|_| "the scaling run's thread died")?
}

pub async fn run(options: &EngineOptions) -> Result<Value> {
    let payload = payload()?;
    let sizes = options.all_sizes();
    let warm_up = sizes[0];
    println!(
        "engine: up to {} recipients in memory, payload {} bytes",
        fmt_count(sizes[sizes.len() - 1] as u64),
        payload.len()
    );
    let store = Arc::new(FixtureStore::nested(&sizes)?);

    let mut pairs = Vec::new();
    let mut scaling = Vec::new();
    for &latency_ms in &options.latencies_ms {
        let sink = Sink::spawn(Duration::from_millis(latency_ms)).await?;
        let target = Target::new(&sink, &store, &payload, warm_up, options.engine_only);
        let mut runs = Runs::new(target.clone());
        let repeat = if latency_ms == 0 { options.repeat } else { 1 };
        for &size in &options.sizes {
            let pair = runs.pair(size, options.concurrency, repeat).await?;
            println!(
                "  {latency_ms} ms, {size}: raw {:.0}/s {:.1} µs, engine {:.0}/s {:.1} µs",
                pair.raw.rate(),
                pair.raw.cpu_us_per_post(),
                pair.engine.rate(),
                pair.engine.cpu_us_per_post(),
            );
            pairs.push(pair);
        }
        let mut posts = runs.posts;
        drop(runs);
        if latency_ms == 0 {
            for &threads in &options.threads {
                let (runs, made) = on_runtime(
                    threads,
                    target.clone(),
                    options.threads_size,
                    options.concurrency,
                    options.repeat,
                )
                .await?;
                let pair = &runs.pair;
                println!(
                    "  {threads} worker thread(s): raw {:.0}/s, engine {:.0}/s ({:.2} cores, sink {:.2}, rest {:.2}); on the caller {:.0}/s {:.1} µs; no post {:.0}/s, on a worker {:.0}/s",
                    pair.raw.rate(),
                    pair.engine.rate(),
                    pair.engine.cores(),
                    pair.engine.sink_cores(),
                    pair.engine.rest_cores(),
                    runs.on_caller.rate(),
                    runs.on_caller.cpu_us_per_post(),
                    runs.no_post.rate(),
                    runs.no_post_on_worker.rate(),
                );
                posts += made;
                scaling.push(runs);
            }
        }
        check_sink(&sink, posts).await?;
        sink.stop().await;
    }

    let mut sweep = Vec::new();
    if !options.sweep.is_empty() {
        let sink = Sink::spawn(Duration::from_millis(options.sweep_latency_ms)).await?;
        let mut runs = Runs::new(Target::new(
            &sink,
            &store,
            &payload,
            warm_up,
            options.engine_only,
        ));
        for &concurrency in &options.sweep {
            let size = options.sweep_size_at(concurrency);
            let pair = runs.pair(size, concurrency, 1).await?;
            println!(
                "  sweep {concurrency}: raw {:.0}/s, engine {:.0}/s",
                pair.raw.rate(),
                pair.engine.rate()
            );
            sweep.push(pair);
        }
        check_sink(&sink, runs.posts).await?;
        sink.stop().await;
    }

    print_tables(options, &pairs, &scaling, &sweep);
    let checks = print_checks(&checks(&pairs, &scaling));
    Ok(json!({
        "scenario": "engine",
        "machine": machine(),
        "options": {
            "sizes": options.sizes, "latencies_ms": options.latencies_ms,
            "concurrency": options.concurrency, "repeat": options.repeat,
            "sweep": options.sweep, "sweep_latency_ms": options.sweep_latency_ms,
            "sweep_size": options.sweep_size, "threads": options.threads,
            "threads_size": options.threads_size, "payload_bytes": payload.len(),
            "page_size": crate::fixture_store::PAGE_SIZE,
        },
        "runs": pairs.iter().map(Pair::json).collect::<Vec<_>>(),
        "threads": scaling.iter().map(|s| json!({
            "worker_threads": s.threads, "pair": s.pair.json(),
            "engine_task_on_caller": s.on_caller.json(), "engine_no_post": s.no_post.json(),
            "engine_no_post_task_on_worker": s.no_post_on_worker.json(),
        })).collect::<Vec<_>>(),
        "sweep": sweep.iter().map(Pair::json).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

fn print_tables(options: &EngineOptions, pairs: &[Pair], scaling: &[Scaling], sweep: &[Pair]) {
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
                "CPU engine ÷ raw",
                "sink CPU µs/post (engine)",
                "rest of machine cores (raw / engine)",
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
                format!("{:.2}", pair.cpu_over_raw()),
                format!("{:.1}", pair.engine.sink_cpu_us_per_post()),
                format!(
                    "{:.2} / {:.2}",
                    pair.raw.rest_cores(),
                    pair.engine.rest_cores()
                ),
            ]);
        }
        table.print();
    }
    if !scaling.is_empty() {
        let mut table = Table::new(
            format!(
                "Worker threads: {} recipients, 0 ms, concurrency {} (the sink: one thread, same cores)",
                fmt_count(options.threads_size as u64),
                options.concurrency
            ),
            &[
                "worker threads",
                "raw posts/s",
                "engine posts/s",
                "engine ÷ raw",
                "engine CPU µs/post",
                "engine cores busy",
                "sink cores busy (engine)",
                "sink CPU µs/post",
                "rest of machine cores (engine)",
                "raw cores busy",
                "sink cores busy (raw)",
            ],
        );
        for Scaling { threads, pair, .. } in scaling {
            table.row(vec![
                threads.to_string(),
                format!("{:.0}", pair.raw.rate()),
                format!("{:.0}", pair.engine.rate()),
                format!("{:.2}", pair.engine_over_raw()),
                format!("{:.1}", pair.engine.cpu_us_per_post()),
                format!("{:.2}", pair.engine.cores()),
                format!("{:.2}", pair.engine.sink_cores()),
                format!("{:.1}", pair.engine.sink_cpu_us_per_post()),
                format!("{:.2}", pair.engine.rest_cores()),
                format!("{:.2}", pair.raw.cores()),
                format!("{:.2}", pair.raw.sink_cores()),
            ]);
        }
        table.print();
        let mut table = Table::new(
            "Where the engine's time goes: its task on a worker or on the caller, and posting nothing",
            &[
                "worker threads",
                "engine's task on a worker: posts/s",
                "on the caller: posts/s",
                "on the caller: CPU µs/post",
                "no post, caller: posts/s",
                "CPU µs/post",
                "no post, on a worker: posts/s",
                "CPU µs/post",
            ],
        );
        for s in scaling {
            table.row(vec![
                s.threads.to_string(),
                format!("{:.0}", s.pair.engine.rate()),
                format!("{:.0}", s.on_caller.rate()),
                format!("{:.1}", s.on_caller.cpu_us_per_post()),
                format!("{:.0}", s.no_post.rate()),
                format!("{:.2}", s.no_post.cpu_us_per_post()),
                format!("{:.0}", s.no_post_on_worker.rate()),
                format!("{:.2}", s.no_post_on_worker.cpu_us_per_post()),
            ]);
        }
        table.print();
    }
    if sweep.is_empty() {
        return;
    }
    let mut table = Table::new(
        format!(
            "Concurrency sweep: {} ms per post, ≥ {} recipients (≥ 50 rounds)",
            options.sweep_latency_ms,
            fmt_count(options.sweep_size as u64),
        ),
        &[
            "concurrency",
            "recipients",
            "c ÷ latency",
            "raw posts/s",
            "engine posts/s",
            "engine ÷ (c ÷ latency)",
            "engine CPU µs/post",
            "engine cores busy",
            "sink cores busy",
            "50 000 take (s)",
        ],
    );
    for pair in sweep {
        table.row(vec![
            pair.concurrency.to_string(),
            fmt_count(pair.size as u64),
            pair.ideal().map_or("—".into(), |i| format!("{i:.0}")),
            format!("{:.0}", pair.raw.rate()),
            format!("{:.0}", pair.engine.rate()),
            pair.ideal()
                .map_or("—".into(), |i| format!("{:.2}", pair.engine.rate() / i)),
            format!("{:.1}", pair.engine.cpu_us_per_post()),
            format!("{:.2}", pair.engine.cores()),
            format!("{:.2}", pair.engine.sink_cores()),
            format!("{:.1}", 50_000.0 / pair.engine.rate()),
        ]);
    }
    table.print();
}

fn checks(pairs: &[Pair], scaling: &[Scaling]) -> Vec<Check> {
    let mut checks = Vec::new();
    for size in [10_000, 50_000] {
        let Some(pair) = pairs.iter().find(|p| p.size == size && p.latency_ms == 0) else {
            continue;
        };
        let ratio = pair.cpu_over_raw();
        checks.push(Check::new(
            format!(
                "engine ÷ raw CPU per post, {} recipients, 0 ms",
                fmt_count(size as u64)
            ),
            format!(
                "{ratio:.2} ({:.1} vs. {:.1} µs)",
                pair.engine.cpu_us_per_post(),
                pair.raw.cpu_us_per_post()
            ),
            format!("≤ {CPU_RATIO_TARGET}"),
            ratio <= CPU_RATIO_TARGET,
        ));
        let ratio = pair.engine_over_raw();
        checks.push(Check::new(
            format!(
                "engine ÷ raw posts/s, {} recipients, 0 ms",
                fmt_count(size as u64)
            ),
            format!(
                "{ratio:.2} ({:.0} vs. {:.0})",
                pair.engine.rate(),
                pair.raw.rate()
            ),
            format!("≥ {RATE_RATIO_TARGET}"),
            ratio >= RATE_RATIO_TARGET,
        ));
    }
    let on = |threads: usize| scaling.iter().find(|s| s.threads == threads);
    if let (Some(one), Some(two)) = (on(1), on(2)) {
        let ratio = two.pair.engine.rate() / one.pair.engine.rate();
        checks.push(Check::new(
            "engine posts/s, 2 worker threads ÷ 1, 0 ms",
            format!(
                "{ratio:.2} ({:.0} vs. {:.0}; raw loop {:.2}; sink {:.2} → {:.2} cores, rest {:.2} → {:.2})",
                two.pair.engine.rate(),
                one.pair.engine.rate(),
                two.pair.raw.rate() / one.pair.raw.rate(),
                one.pair.engine.sink_cores(),
                two.pair.engine.sink_cores(),
                one.pair.engine.rest_cores(),
                two.pair.engine.rest_cores(),
            ),
            format!("≥ {SCALING_TARGET}"),
            ratio >= SCALING_TARGET,
        ));
        // Not targets: the engine's own scaling with its task on the caller, with the sink,
        // and on a worker with no sink on the cores.
        let on_caller = two.on_caller.rate() / one.on_caller.rate();
        checks.push(Check::new(
            "(diagnostic) the same, the engine's task on the caller",
            format!(
                "{on_caller:.2} ({:.0} vs. {:.0})",
                two.on_caller.rate(),
                one.on_caller.rate()
            ),
            format!("≥ {SCALING_TARGET}"),
            on_caller >= SCALING_TARGET,
        ));
        let alone = two.no_post_on_worker.rate() / one.no_post_on_worker.rate();
        checks.push(Check::new(
            "(diagnostic) engine posting nothing, its task on a worker: 2 ÷ 1",
            format!(
                "{alone:.2} ({:.0} vs. {:.0})",
                two.no_post_on_worker.rate(),
                one.no_post_on_worker.rate()
            ),
            format!("≥ {SCALING_TARGET}"),
            alone >= SCALING_TARGET,
        ));
    }
    if let Some(pair) = pairs.iter().find(|p| p.size == 10_000 && p.latency_ms > 0) {
        let ratio = pair.ideal().map_or(0.0, |i| pair.engine.rate() / i);
        checks.push(Check::new(
            format!(
                "engine ÷ (concurrency ÷ latency), 10 000 recipients, {} ms",
                pair.latency_ms
            ),
            format!("{ratio:.2}"),
            format!("≥ {IDEAL_RATIO_TARGET}"),
            ratio >= IDEAL_RATIO_TARGET,
        ));
    }
    checks
}
