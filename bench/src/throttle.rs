//! Scenario `throttle`: the engine against a sink that enforces an account's `@connections`
//! rate as API Gateway does — a token bucket of R posts/s with a burst of R/2, 429
//! `LimitExceededException` when it is empty — with a concurrency well above what R needs
//! (R × latency), so that only the adaptive limit keeps the engine near R. Per rate: one
//! broadcast alone, then two at once on the same sink (two processes' worth of engines
//! sharing the account's rate, as two broadcast functions would), for the record.
//!
//! Sustained delivery is the sink's own count of posts answered 200, over the steady state:
//! from the moment 10 % of the posts were delivered (or the first 429, if later) to the moment
//! 90 % were (the bucket's burst at the start and the tail at the end left out). Every recipient must be delivered exactly once:
//! the sink counts posts per connection id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbridge::config::FanoutConfig;
use wsbridge::fanout::{Fanout, FanoutOptions, FanoutSummary, fan_out};
use wsbridge::protocol::Topic;
use wsbridge::protocol::broadcast::Exclusions;
use wsbridge::sender::{ApiGatewaySender, ConnectionSender, Payload};
use wsbridge::store::Audience;

use crate::fixture_store::FixtureStore;
use crate::fixtures::{payload, sdk_config};
use crate::report::{
    Check, Result, Table, cpu_seconds, fmt_count, machine, machine_busy_seconds, print_checks,
};
use crate::sink::{Sink, SinkOptions};

const SUSTAINED_TARGET: f64 = 0.9;
const RETRIED_TARGET: f64 = 0.05;
/// Largest `FANOUT_CONCURRENCY` the configuration accepts.
const MAX_CONCURRENCY: usize = 1_000;

#[derive(Debug, Clone, clap::Args)]
pub struct ThrottleOptions {
    /// Account rates to enforce, posts/s.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000.0, 10_000.0])]
    pub rates: Vec<f64>,
    /// Seconds of posting at the rate: the audience is rate × seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Latency of every answer, 200 or 429, in ms.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Latency of a 429 alone, in ms (default: the same as a 200's).
    #[arg(long)]
    pub throttled_latency_ms: Option<u64>,
    /// The engine's concurrency (default: 4 × rate × latency, at most 1 000).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Skip the runs of two broadcasts at once.
    #[arg(long)]
    pub no_pair: bool,
}

impl ThrottleOptions {
    fn concurrency(&self, rate: f64) -> usize {
        self.concurrency.unwrap_or_else(|| {
            ((4.0 * rate * self.latency_ms as f64 / 1_000.0).ceil() as usize)
                .clamp(1, MAX_CONCURRENCY)
        })
    }
}

/// One run: a broadcast, or two at once, against one rate.
struct Run {
    rate: f64,
    broadcasts: usize,
    concurrency: usize,
    recipients: usize,
    seconds: f64,
    summaries: Vec<FanoutSummary>,
    /// Times each engine's limit was cut, and where it ended.
    cuts: Vec<(u64, usize)>,
    /// Posts answered 200 and 429 per 100 ms.
    ok: Vec<u64>,
    throttled: Vec<u64>,
    bucket_ms: u64,
    counts: Value,
    cpu_seconds: f64,
    sink_cpu_seconds: f64,
    /// The whole machine's CPU: the rest is other processes and the kernel.
    machine_cpu_seconds: f64,
}

impl Run {
    fn delivered(&self) -> u64 {
        self.summaries.iter().map(|s| s.report.delivered).sum()
    }

    fn failed(&self) -> u64 {
        self.summaries.iter().map(|s| s.report.failed).sum()
    }

    fn retries(&self) -> u64 {
        self.summaries.iter().map(|s| s.retries).sum()
    }

    fn retried_share(&self) -> f64 {
        self.retries() as f64 / self.recipients.max(1) as f64
    }

    /// Posts answered 200 per second between 10 % and 90 % of them (and not before the first
    /// 429), and that window in s.
    fn sustained(&self) -> (f64, f64) {
        let total: u64 = self.ok.iter().sum();
        let mut cumulative = Vec::with_capacity(self.ok.len());
        let mut sum = 0;
        for count in &self.ok {
            sum += count;
            cumulative.push(sum);
        }
        let slot = |share: f64| {
            cumulative
                .iter()
                .position(|&c| c as f64 >= share * total as f64)
                .unwrap_or(0)
        };
        // From the first 429 at the earliest: before it, the bucket's burst is being spent.
        let first_throttled = self.throttled.iter().position(|&c| c > 0).unwrap_or(0);
        let (from, to) = (slot(0.1).max(first_throttled), slot(0.9));
        if to <= from {
            return (0.0, 0.0);
        }
        let seconds = (to - from) as f64 * self.bucket_ms as f64 / 1_000.0;
        (
            (cumulative[to] - cumulative[from]) as f64 / seconds,
            seconds,
        )
    }

    /// Posts tried per second (answered 200 or 429) over the whole run: what the engine
    /// offered the account.
    fn offered(&self) -> f64 {
        let answered: u64 = self.ok.iter().chain(&self.throttled).sum();
        let slots = self.ok.len().max(self.throttled.len()).max(1);
        answered as f64 / (slots as f64 * self.bucket_ms as f64 / 1_000.0)
    }

    fn exactly_once(&self) -> bool {
        self.counts["missing"] == 0
            && self.counts["duplicates"] == 0
            && self.counts["unexpected"] == 0
            && self.failed() == 0
    }

    /// What `exactly_once` judged, for the targets' table.
    fn once_measured(&self) -> String {
        format!(
            "{} missing, {} duplicates, {} failed",
            self.counts["missing"],
            self.counts["duplicates"],
            self.failed()
        )
    }

    fn json(&self) -> Value {
        let (sustained, window) = self.sustained();
        json!({
            "rate": self.rate, "broadcasts": self.broadcasts, "concurrency": self.concurrency,
            "recipients": self.recipients, "seconds": self.seconds,
            "delivered": self.delivered(), "failed": self.failed(), "retries": self.retries(),
            "retried_share": self.retried_share(),
            "sustained_posts_per_second": sustained, "steady_window_seconds": window,
            "sustained_over_rate": sustained / self.rate, "offered_posts_per_second": self.offered(),
            "limit_cuts_and_final": self.cuts, "sink_counts": self.counts,
            "cpu_seconds": self.cpu_seconds, "sink_cpu_seconds": self.sink_cpu_seconds,
            "machine_cpu_seconds": self.machine_cpu_seconds,
            "series": {"bucket_ms": self.bucket_ms, "ok": self.ok, "throttled": self.throttled},
        })
    }
}

fn as_counts(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// The audience `bench:a` of `n`, and `bench:warm` (other ids) to open the connection
/// pool first.
fn store(n: usize, warm: usize) -> Result<FixtureStore> {
    FixtureStore::disjoint(&[("bench:a", 0..n), ("bench:warm", n..n + warm)])
}

/// Two disjoint audiences of `half` each, the second right after the first.
fn store_halves(half: usize) -> Result<FixtureStore> {
    FixtureStore::disjoint(&[("bench:a", 0..half), ("bench:b", half..2 * half)])
}

async fn broadcast(
    store: &FixtureStore,
    sender: &Arc<dyn ConnectionSender>,
    topic: &str,
    fanout: &Fanout,
    payload: &Payload,
) -> Result<FanoutSummary> {
    let audience = Audience::topic(&Topic::parse(topic)?);
    Ok(fan_out(
        store,
        sender,
        &audience,
        &Exclusions::default(),
        payload,
        &FanoutOptions::with_limit(fanout.limit.clone()),
    )
    .await?)
}

/// One broadcast per topic at once, each with its own engine (its own adaptive limit, as
/// one process each), on a sink that was just reset.
#[allow(clippy::too_many_arguments)]
async fn measure(
    sink: &Sink,
    store: &FixtureStore,
    sender: &Arc<dyn ConnectionSender>,
    payload: &Payload,
    topics: &[&str],
    per_topic: usize,
    rate: f64,
    concurrency: usize,
) -> Result<Run> {
    sink.reset().await?;
    let fanouts: Vec<Fanout> = topics
        .iter()
        .map(|_| Fanout::new(FanoutConfig { concurrency }))
        .collect();
    let (cpu, sink_cpu, machine) = (
        cpu_seconds("self"),
        sink.cpu_seconds(),
        machine_busy_seconds(),
    );
    let started = Instant::now();
    let summaries = futures::future::try_join_all(
        topics
            .iter()
            .zip(&fanouts)
            .map(|(topic, fanout)| broadcast(store, sender, topic, fanout, payload)),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let (cpu, sink_cpu, machine) = (
        cpu_seconds("self") - cpu,
        sink.cpu_seconds() - sink_cpu,
        machine_busy_seconds() - machine,
    );
    let series = sink.series().await?;
    Ok(Run {
        rate,
        broadcasts: topics.len(),
        concurrency,
        recipients: per_topic * topics.len(),
        seconds,
        summaries,
        cuts: fanouts
            .iter()
            .map(|f| (f.limit.cuts(), f.limit.current()))
            .collect(),
        ok: as_counts(&series["ok"]),
        throttled: as_counts(&series["throttled"]),
        bucket_ms: series["bucket_ms"].as_u64().unwrap_or(100),
        counts: sink.counts(per_topic * topics.len()).await?,
        cpu_seconds: cpu,
        sink_cpu_seconds: sink_cpu,
        machine_cpu_seconds: machine,
    })
}

pub async fn run(options: &ThrottleOptions) -> Result<Value> {
    let payload = Payload::new(payload()?);
    let latency = Duration::from_millis(options.latency_ms);
    let mut runs = Vec::new();
    for &rate in &options.rates {
        let concurrency = options.concurrency(rate);
        let n = (rate * options.seconds).round() as usize;
        let store = store(n, 2 * concurrency)?;
        let sink = Sink::start(&SinkOptions {
            throttled_latency_ms: options.throttled_latency_ms,
            ..SinkOptions::throttled(latency, rate)
        })
        .await?;
        let sender: Arc<dyn ConnectionSender> = Arc::new(ApiGatewaySender::new(
            &sdk_config(None),
            Some(sink.endpoint()),
        ));
        println!(
            "  rate {rate:.0}/s (burst {:.0}): {} recipients, concurrency {concurrency}",
            rate / 2.0,
            fmt_count(n as u64)
        );
        // Connections opened first, as a warm function's are; the bucket is refilled after.
        let warm_up = Fanout::new(FanoutConfig { concurrency });
        broadcast(&store, &sender, "bench:warm", &warm_up, &payload).await?;
        let alone = measure(
            &sink,
            &store,
            &sender,
            &payload,
            &["bench:a"],
            n,
            rate,
            concurrency,
        )
        .await?;
        report_progress(&alone);
        runs.push(alone);
        if !options.no_pair {
            // Two at once, half the audience each: the same posts in about the same time.
            let half = n / 2;
            let paired = measure(
                &sink,
                &store_halves(half)?,
                &sender,
                &payload,
                &["bench:a", "bench:b"],
                half,
                rate,
                concurrency,
            )
            .await?;
            report_progress(&paired);
            runs.push(paired);
        }
        sink.stop().await;
    }
    print_table(&runs, options);
    let checks = print_checks(&checks(&runs));
    Ok(json!({
        "scenario": "throttle",
        "machine": machine(),
        "options": {
            "rates": options.rates, "seconds": options.seconds, "latency_ms": options.latency_ms,
            "throttled_latency_ms": options.throttled_latency_ms.unwrap_or(options.latency_ms),
            "burst": "rate / 2", "concurrency": options.concurrency,
        },
        "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

fn report_progress(run: &Run) {
    let (sustained, _) = run.sustained();
    println!(
        "    {} at once: {:.0} delivered/s sustained ({:.2} of the rate), {} retries ({:.1} %), {} missing, {} twice",
        run.broadcasts,
        sustained,
        sustained / run.rate,
        run.retries(),
        run.retried_share() * 100.0,
        run.counts["missing"],
        run.counts["duplicates"],
    );
}

fn print_table(runs: &[Run], options: &ThrottleOptions) {
    let mut table = Table::new(
        format!(
            "Against an account limit (token bucket, burst = rate ÷ 2; {} ms per answer, 200 or 429)",
            options.latency_ms
        ),
        &[
            "rate/s",
            "broadcasts",
            "concurrency",
            "recipients",
            "took s",
            "sustained/s",
            "sustained ÷ rate",
            "offered/s",
            "retried",
            "limit cuts → final",
            "missing",
            "twice",
            "failed",
            "CPU µs/delivered",
            "sink cores",
            "rest of machine cores",
        ],
    );
    for run in runs {
        let (sustained, _) = run.sustained();
        table.row(vec![
            fmt_count(run.rate as u64),
            run.broadcasts.to_string(),
            run.concurrency.to_string(),
            fmt_count(run.recipients as u64),
            format!("{:.1}", run.seconds),
            format!("{sustained:.0}"),
            format!("{:.3}", sustained / run.rate),
            format!("{:.0}", run.offered()),
            format!("{:.2} %", run.retried_share() * 100.0),
            run.cuts
                .iter()
                .map(|(cuts, last)| format!("{cuts} → {last}"))
                .collect::<Vec<_>>()
                .join(", "),
            run.counts["missing"].to_string(),
            run.counts["duplicates"].to_string(),
            run.failed().to_string(),
            format!(
                "{:.1}",
                run.cpu_seconds * 1e6 / run.delivered().max(1) as f64
            ),
            format!("{:.2}", run.sink_cpu_seconds / run.seconds),
            format!(
                "{:.2}",
                ((run.machine_cpu_seconds - run.cpu_seconds - run.sink_cpu_seconds) / run.seconds)
                    .max(0.0)
            ),
        ]);
    }
    table.print();
}

fn checks(runs: &[Run]) -> Vec<Check> {
    let mut checks = Vec::new();
    for run in runs.iter().filter(|r| r.broadcasts == 1) {
        let rate = fmt_count(run.rate as u64);
        let (sustained, _) = run.sustained();
        checks.push(Check::new(
            format!("sustained delivery ÷ rate, {rate}/s"),
            format!("{:.3} ({sustained:.0}/s)", sustained / run.rate),
            format!("≥ {SUSTAINED_TARGET}"),
            sustained / run.rate >= SUSTAINED_TARGET,
        ));
        checks.push(Check::new(
            format!("retried posts, {rate}/s"),
            format!(
                "{:.2} % ({} of {})",
                run.retried_share() * 100.0,
                run.retries(),
                fmt_count(run.recipients as u64)
            ),
            format!("≤ {:.0} %", RETRIED_TARGET * 100.0),
            run.retried_share() <= RETRIED_TARGET,
        ));
        checks.push(Check::new(
            format!("every recipient exactly once, {rate}/s"),
            run.once_measured(),
            "0, 0, 0",
            run.exactly_once(),
        ));
    }
    for run in runs.iter().filter(|r| r.broadcasts > 1) {
        checks.push(Check::new(
            format!(
                "{} broadcasts at once, {}/s: every recipient exactly once",
                run.broadcasts,
                fmt_count(run.rate as u64)
            ),
            run.once_measured(),
            "0, 0, 0",
            run.exactly_once(),
        ));
    }
    checks
}
