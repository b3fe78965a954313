//! Scenario `lambda`: the release `wsbridge-broadcast` binary run as Lambda runs it, behind
//! `lambda_service` (the Invoke API and a pool of execution environments), with its
//! subscribers in DynamoDB Local and the sink as `@connections` (optionally enforcing the
//! account's rate). Two measurements:
//!
//! * **At the template's defaults** (`FANOUT_CONCURRENCY`, memory, timeout, as
//!   `template.yaml` has them): a synchronous `POST /broadcast` to 50 000 recipients at 20 ms
//!   per post; the time until the last recipient has it (the answer, or — when the
//!   synchronous budget hands the rest to the background — the status saying done).
//! * **Through the background** (`"async": true`): audiences of 100 000 and 1 000 000. The
//!   harness follows `GET /broadcasts/{id}` (an HTTP API event too) until done, recording
//!   parts, runs and continuations over time; then checks the sink's count per connection
//!   id (exactly once each), and each environment's peak RSS. Optionally one environment
//!   running a part is killed once, mid-way: Lambda retries the invocation, the part is
//!   taken over from its last checkpoint, and what was sent twice is counted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use serde_json::{Value, json};

use crate::cold_start::binary;
use crate::dynamodb_local::{fill, new_table, subscription_row_size};
use crate::events;
use crate::fixture_store::PAGE_SIZE;
use crate::fixtures::{sdk_config, topic};
use crate::lambda_service::{FunctionSpec, LambdaService};
use crate::lambda_stub::lambda_env;
use crate::report::{Check, Result, Stats, Table, fmt_count, machine, print_checks};
use crate::sink::{Sink, SinkOptions};
use crate::template::BroadcastDefaults;

/// Issue 13: a 50 000-recipient broadcast at 20 ms per post, template defaults.
const DEFAULTS_TARGET_SECONDS: f64 = 6.0;
const DEFAULTS_TARGET_SIZE: usize = 50_000;
/// The memory target of the earlier issue, per process.
const PEAK_TARGET_MIB: f64 = 32.0;
/// "Flat": the largest audience's peak at most this much above the smallest's.
const FLAT_GROWTH: f64 = 0.10;
/// How often a part saves where it stands (`CHECKPOINT_EVERY` in the engine).
const CHECKPOINT_SECONDS: f64 = 1.0;

#[derive(Debug, Clone, clap::Args)]
pub struct LambdaOptions {
    /// A running DynamoDB Local; default: start one.
    #[arg(long)]
    pub dynamodb_endpoint: Option<String>,
    /// A table an earlier run filled (with --dynamodb-endpoint): not filled again.
    #[arg(long)]
    pub table: Option<String>,
    /// Recipients of the synchronous broadcast at the template's defaults (0: skip).
    #[arg(long, default_value_t = DEFAULTS_TARGET_SIZE)]
    pub sync_recipients: usize,
    /// Audiences sent with `"async": true`, each through the background.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
    pub async_recipients: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// The account's `@connections` rate the sink enforces (0: none); burst half of it.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// FANOUT_CONCURRENCY (default: the template's).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// The function's memory, MB (default: the template's); Lambda tells the function.
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// The function's timeout (default: the template's).
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
    /// BROADCAST_SHARDS (default: the function's own default).
    #[arg(long)]
    pub shards: Option<u32>,
    /// BROADCAST_SYNC_SECONDS (default: the function's own default).
    #[arg(long)]
    pub sync_seconds: Option<u64>,
    /// Most execution environments at once.
    #[arg(long, default_value_t = 8)]
    pub environments: usize,
    /// Pause before Lambda tries a failed asynchronous invocation again (Lambda: ~1 min).
    #[arg(long, default_value_t = 2.0)]
    pub retry_delay_seconds: f64,
    /// Kill one environment running a part this long after the largest async broadcast
    /// starts, once.
    #[arg(long)]
    pub kill_after_seconds: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub poll_seconds: f64,
    /// BatchWriteItem calls in flight while the table is filled.
    #[arg(long, default_value_t = 16)]
    pub fill_parallel: usize,
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// One point of a broadcast's status over time.
struct Sample {
    seconds: f64,
    status: Value,
    sink_posts: u64,
}

/// One broadcast through the function.
struct Broadcast {
    recipients: usize,
    run_async: bool,
    /// The first answer: its status code and body.
    answered: (u16, Value),
    answered_after: Duration,
    /// Until the last recipient's outcome: the answer (200), or the status saying done.
    took: Duration,
    samples: Vec<Sample>,
    final_status: Option<Value>,
    counts: Value,
    /// Posts the sink answered 429 (the account's rate).
    throttled: u64,
    service: Value,
    /// Peak RSS (KiB) of the environments that ran a part or the request itself.
    peaks_kib: Vec<u64>,
    cpu_seconds: f64,
    killed: bool,
}

impl Broadcast {
    fn delivered(&self) -> u64 {
        let report = self.final_status.as_ref().unwrap_or(&self.answered.1);
        report["delivered"].as_u64().unwrap_or_default()
    }

    fn peak_mib(&self) -> Stats {
        Stats::of(self.peaks_kib.iter().map(|k| *k as f64 / 1_024.0).collect())
    }

    fn posts_per_second(&self) -> f64 {
        self.recipients as f64 / self.took.as_secs_f64()
    }

    fn status_field(&self, name: &str) -> u64 {
        self.final_status
            .as_ref()
            .and_then(|s| s[name].as_u64())
            .unwrap_or_default()
    }

    fn shards(&self) -> usize {
        self.final_status
            .as_ref()
            .and_then(|s| s["shards"].as_array())
            .map_or(0, Vec::len)
    }

    /// What a part that dies can send again: the posts since its last checkpoint (a second
    /// of its rate), the pages read but not settled (two), and the posts in flight.
    fn duplicate_bound(&self, concurrency: usize) -> f64 {
        let shards = self.shards().max(1) as f64;
        self.posts_per_second() / shards * CHECKPOINT_SECONDS
            + 2.0 * PAGE_SIZE as f64
            + concurrency as f64
    }

    fn json(&self, concurrency: usize) -> Value {
        json!({
            "recipients": self.recipients, "async": self.run_async,
            "answered": {"status": self.answered.0, "body": self.answered.1,
                         "after_ms": self.answered_after.as_secs_f64() * 1_000.0},
            "took_seconds": self.took.as_secs_f64(), "posts_per_second": self.posts_per_second(),
            "delivered": self.delivered(), "sink_counts": self.counts,
            "sink_throttled": self.throttled,
            "final_status": self.final_status, "killed_one": self.killed,
            "duplicate_bound": self.killed.then(|| self.duplicate_bound(concurrency)),
            "peak_rss_mib": self.peak_mib().json(), "peaks_kib": self.peaks_kib,
            "cpu_seconds": self.cpu_seconds,
            "status_over_time": self.samples.iter().map(|s| json!({
                "seconds": s.seconds, "sink_posts": s.sink_posts, "status": s.status,
            })).collect::<Vec<_>>(),
            "lambda": self.service,
        })
    }
}

/// What every broadcast of the run shares.
struct Stack {
    sink: Sink,
    spec: FunctionSpec,
    concurrency: usize,
    poll: Duration,
}

pub async fn run(options: &LambdaOptions) -> Result<Value> {
    let defaults = BroadcastDefaults::read()?;
    let concurrency = options.concurrency.unwrap_or(defaults.fanout_concurrency);
    let memory_mb = options.memory_mb.unwrap_or(defaults.memory_mb);
    let timeout = options
        .timeout_seconds
        .map_or(defaults.timeout, Duration::from_secs);
    let at_defaults = options
        .concurrency
        .is_none_or(|c| c == defaults.fanout_concurrency)
        && options.memory_mb.is_none_or(|m| m == defaults.memory_mb)
        && options
            .timeout_seconds
            .is_none_or(|t| t == defaults.timeout.as_secs())
        && options.shards.is_none()
        && options.sync_seconds.is_none();
    println!(
        "lambda: the template's broadcast function has FANOUT_CONCURRENCY {}, {} MB, {} s; \
         running at {concurrency}, {memory_mb} MB, {} s",
        defaults.fanout_concurrency,
        defaults.memory_mb,
        defaults.timeout.as_secs(),
        timeout.as_secs()
    );

    let dynamodb =
        crate::dynamodb_local::DynamoDbLocal::start_or_use(options.dynamodb_endpoint.clone())?;
    let client = Client::new(&sdk_config(Some(&dynamodb.endpoint)));
    let mut sizes: Vec<usize> = options.async_recipients.clone();
    if options.sync_recipients > 0 {
        sizes.push(options.sync_recipients);
    }
    sizes.sort_unstable();
    sizes.dedup();
    let (table, filled) = match &options.table {
        Some(table) => (table.clone(), None),
        None => {
            let table = new_table(&client).await?;
            println!(
                "filling {table}: {} subscription rows, {} BatchWriteItem calls in flight",
                fmt_count(sizes.iter().sum::<usize>() as u64),
                options.fill_parallel
            );
            let filled = fill(&client, &table, &sizes, options.fill_parallel).await?;
            println!(
                "  filled in {:.1} s ({:.0} rows/s)",
                filled.seconds,
                filled.rows_per_second()
            );
            (table, Some(filled))
        }
    };

    let sink = Sink::start(&SinkOptions {
        rate: options.rate,
        burst: options.rate / 2.0,
        ..SinkOptions::latency(Duration::from_millis(options.latency_ms))
    })
    .await?;
    let mut env = lambda_env("wsbridge-broadcast", "", memory_mb);
    env.retain(|(name, _)| name != "TABLE_NAME" && name != "AWS_LAMBDA_RUNTIME_API");
    env.extend([
        ("TABLE_NAME".to_owned(), table.clone()),
        (
            "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
            dynamodb.endpoint.clone(),
        ),
        ("WS_MANAGEMENT_ENDPOINT".to_owned(), sink.endpoint()),
        ("FANOUT_CONCURRENCY".to_owned(), concurrency.to_string()),
    ]);
    if let Some(shards) = options.shards {
        env.push(("BROADCAST_SHARDS".to_owned(), shards.to_string()));
    }
    if let Some(seconds) = options.sync_seconds {
        env.push(("BROADCAST_SYNC_SECONDS".to_owned(), seconds.to_string()));
    }
    let log_dir =
        std::env::temp_dir().join(format!("wsbridge-bench-lambda-{}", std::process::id()));
    let stack = Stack {
        sink,
        spec: FunctionSpec {
            binary: binary(&crate::release_dir(options.bin_dir.clone()), "broadcast")?,
            env,
            timeout,
            max_environments: options.environments,
            retry_delay: Duration::from_secs_f64(options.retry_delay_seconds),
            log_dir: log_dir.clone(),
        },
        concurrency,
        poll: Duration::from_secs_f64(options.poll_seconds.max(0.1)),
    };
    println!("environments' output: {}", log_dir.display());

    let mut sync = None;
    if options.sync_recipients > 0 {
        let size = options.sync_recipients;
        println!(
            "  synchronous broadcast to {} recipients",
            fmt_count(size as u64)
        );
        let broadcast = one_broadcast(&stack, size, false, None).await?;
        println!(
            "    last delivery after {:.2} s (answered {} after {:.2} s)",
            broadcast.took.as_secs_f64(),
            broadcast.answered.0,
            broadcast.answered_after.as_secs_f64()
        );
        sync = Some(broadcast);
    }
    let mut backgrounds = Vec::new();
    let largest = options.async_recipients.iter().copied().max();
    for &size in &options.async_recipients {
        let kill = options
            .kill_after_seconds
            .filter(|_| Some(size) == largest)
            .map(Duration::from_secs_f64);
        println!(
            "  background broadcast to {} recipients{}",
            fmt_count(size as u64),
            kill.map_or(String::new(), |k| format!(
                ", one part's process killed after {:.0} s",
                k.as_secs_f64()
            ))
        );
        let broadcast = one_broadcast(&stack, size, true, kill).await?;
        println!(
            "    done after {:.1} s ({:.0} posts/s), {} continuations, {} restarts, peak RSS max {:.1} MiB",
            broadcast.took.as_secs_f64(),
            broadcast.posts_per_second(),
            broadcast.status_field("continuations"),
            broadcast.status_field("restarts"),
            broadcast.peak_mib().max
        );
        backgrounds.push(broadcast);
    }
    print_tables(sync.as_ref(), &backgrounds, &stack, &defaults);
    let checks = print_checks(&checks(
        sync.as_ref(),
        &backgrounds,
        &stack,
        &defaults,
        at_defaults,
    ));
    stack.sink.stop().await;
    let rcu_per_1000 = (PAGE_SIZE * subscription_row_size()).div_ceil(4_096) as f64;
    Ok(json!({
        "scenario": "lambda",
        "machine": machine(),
        "options": {
            "template": defaults.json(), "concurrency": concurrency, "memory_mb": memory_mb,
            "timeout_seconds": timeout.as_secs(), "shards": options.shards,
            "sync_seconds": options.sync_seconds, "latency_ms": options.latency_ms,
            "rate": options.rate, "burst": options.rate / 2.0,
            "environments": options.environments,
            "retry_delay_seconds": options.retry_delay_seconds,
            "kill_after_seconds": options.kill_after_seconds, "at_template_defaults": at_defaults,
            "row_bytes": subscription_row_size(),
        },
        "fill": filled.map(|f| json!({
            "rows": f.rows, "seconds": f.seconds, "rows_per_second": f.rows_per_second(),
            "parallel": f.parallel,
        })),
        "estimated_read_units_per_1000_recipients": rcu_per_1000,
        "sync": sync.as_ref().map(|b| b.json(concurrency)),
        "background": backgrounds.iter().map(|b| b.json(concurrency)).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

/// Sends one broadcast through a fresh pool (so each one's environments are its own) and
/// follows it to its end.
async fn one_broadcast(
    stack: &Stack,
    size: usize,
    run_async: bool,
    kill_after: Option<Duration>,
) -> Result<Broadcast> {
    let sink = &stack.sink;
    sink.reset().await?;
    // The sink counts posts since it started; this broadcast's are those after now.
    let posts_before = sink.posts().await?;
    let service = LambdaService::start(stack.spec.clone()).await?;
    let patience = stack.spec.timeout + Duration::from_secs(60);
    if let Some(after) = kill_after {
        service.kill_one_after(after);
    }
    let started = Instant::now();
    let outcome = service
        .invoke(
            events::broadcast(topic(size)?.as_str(), run_async)?,
            patience,
        )
        .await?;
    let answered_after = started.elapsed();
    let answered = events::response(&outcome.body)?;
    if outcome.error || !matches!(answered.0, 200 | 202) {
        return Err(format!("POST /broadcast to {size}: {answered:?}").into());
    }
    let (mut samples, mut final_status) = (Vec::new(), None);
    let took = if answered.0 == 200 {
        answered_after
    } else {
        let id = answered.1["id"]
            .as_str()
            .ok_or("a 202 without an id")?
            .to_owned();
        let mut printed = Instant::now();
        loop {
            tokio::time::sleep(stack.poll).await;
            let outcome = service.invoke(events::status(&id)?, patience).await?;
            let (code, status) = events::response(&outcome.body)?;
            let seconds = started.elapsed().as_secs_f64();
            if code != 200 {
                return Err(format!("GET /broadcasts/{id}: {code} {status}").into());
            }
            let sink_posts = sink.posts().await? - posts_before;
            if printed.elapsed() >= Duration::from_secs(10) {
                printed = Instant::now();
                println!("    {}", summary_line(seconds, &status, sink_posts));
            }
            let done = status["status"] == "done";
            samples.push(Sample {
                seconds,
                status: status.clone(),
                sink_posts,
            });
            if done {
                final_status = Some(status);
                break;
            }
            if started.elapsed() > Duration::from_secs(3_600) {
                return Err(format!("broadcast {id} not done after an hour").into());
            }
        }
        // The last part's last save, not the poll that saw it: the poll interval is coarse.
        let status = final_status.as_ref().ok_or("no final status")?;
        let created = status["created_at"].as_i64().unwrap_or_default();
        let updated = status["updated_at"].as_i64().unwrap_or_default();
        Duration::from_millis(u64::try_from(updated - created).unwrap_or_default())
            .max(answered_after)
    };
    // Posts still in flight when the status was read land within a latency or two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = sink.counts(size).await?;
    let throttled = sink.series().await?["throttled"]
        .as_array()
        .map_or(0, |a| a.iter().filter_map(Value::as_u64).sum());
    let records = service.records();
    let used: std::collections::BTreeSet<usize> = records.iter().map(|r| r.environment).collect();
    let environments = service.environments();
    let peaks_kib = environments
        .iter()
        .filter(|(index, _, _)| used.contains(index))
        .map(|(_, peak, _)| *peak)
        .collect();
    let cpu_seconds = environments.iter().map(|(_, _, cpu)| cpu).sum();
    let report = service.report();
    let killed = !report["killed"].is_null();
    service.stop().await;
    Ok(Broadcast {
        recipients: size,
        run_async,
        answered,
        answered_after,
        took,
        samples,
        final_status,
        counts,
        throttled,
        service: report,
        peaks_kib,
        cpu_seconds,
        killed,
    })
}

fn summary_line(seconds: f64, status: &Value, sink_posts: u64) -> String {
    let shards = status["shards"].as_array().cloned().unwrap_or_default();
    let count = |state: &str| shards.iter().filter(|s| s["status"] == state).count();
    format!(
        "{seconds:6.1} s: {} delivered (sink {}), parts running {} / waiting {} / done {} / stalled {}, runs {}, continuations {}, restarts {}",
        status["delivered"],
        sink_posts,
        count("running"),
        count("waiting"),
        count("done"),
        count("stalled"),
        shards
            .iter()
            .map(|s| s["runs"].as_u64().unwrap_or_default())
            .sum::<u64>(),
        status["continuations"],
        status["restarts"],
    )
}

fn print_tables(
    sync: Option<&Broadcast>,
    backgrounds: &[Broadcast],
    stack: &Stack,
    defaults: &BroadcastDefaults,
) {
    let mut table = Table::new(
        format!(
            "The release broadcast function under the Lambda stub (concurrency {}, {} ms per post, account limit on the sink)",
            stack.concurrency,
            stack.sink.latency.as_millis()
        ),
        &[
            "broadcast",
            "recipients",
            "answered",
            "all done s",
            "posts/s",
            "parts",
            "runs",
            "continuations",
            "restarts",
            "missing",
            "twice",
            "429s",
            "environments",
            "peak RSS MiB p50 / max",
            "CPU s",
            "CPU µs/recipient",
        ],
    );
    for b in sync.iter().copied().chain(backgrounds) {
        let peaks = b.peak_mib();
        let runs: u64 = b
            .final_status
            .as_ref()
            .and_then(|s| s["shards"].as_array())
            .map_or(0, |s| {
                s.iter().map(|p| p["runs"].as_u64().unwrap_or(0)).sum()
            });
        table.row(vec![
            if b.run_async { "async" } else { "sync" }.to_owned(),
            fmt_count(b.recipients as u64),
            format!(
                "{} after {:.2} s",
                b.answered.0,
                b.answered_after.as_secs_f64()
            ),
            format!("{:.2}", b.took.as_secs_f64()),
            format!("{:.0}", b.posts_per_second()),
            b.shards().to_string(),
            runs.to_string(),
            b.status_field("continuations").to_string(),
            b.status_field("restarts").to_string(),
            b.counts["missing"].to_string(),
            b.counts["duplicates"].to_string(),
            b.throttled.to_string(),
            b.peaks_kib.len().to_string(),
            format!("{:.1} / {:.1}", peaks.p50, peaks.max),
            format!("{:.1}", b.cpu_seconds),
            format!("{:.1}", b.cpu_seconds * 1e6 / b.recipients.max(1) as f64),
        ]);
    }
    table.print();
    if let Some(b) = sync {
        println!(
            "\nAt {} MB Lambda gives the function {:.2} vCPU: the {:.1} CPU-seconds this broadcast used here take ≥ {:.1} s there.",
            defaults.memory_mb,
            defaults.vcpu(),
            b.cpu_seconds,
            b.cpu_seconds / defaults.vcpu()
        );
    }
}

fn checks(
    sync: Option<&Broadcast>,
    backgrounds: &[Broadcast],
    stack: &Stack,
    defaults: &BroadcastDefaults,
    at_defaults: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(b) = sync {
        let label = format!(
            "{} recipients, {} ms per post, {} (concurrency {}, {} MB)",
            fmt_count(b.recipients as u64),
            stack.sink.latency.as_millis(),
            if at_defaults {
                "template defaults"
            } else {
                "NOT the template defaults"
            },
            stack.concurrency,
            defaults.memory_mb,
        );
        let seconds = b.took.as_secs_f64();
        checks.push(Check::new(
            label,
            format!("{seconds:.2} s (answered {})", b.answered.0),
            format!("≤ {DEFAULTS_TARGET_SECONDS} s"),
            seconds <= DEFAULTS_TARGET_SECONDS
                && at_defaults
                && b.recipients == DEFAULTS_TARGET_SIZE,
        ));
        checks.push(exactly_once(b, stack.concurrency));
    }
    for b in backgrounds {
        checks.push(exactly_once(b, stack.concurrency));
        let shards = b.shards();
        let continuations = b.status_field("continuations");
        // A broadcast that outlasts one invocation must have continued.
        let needs_continuation = b.took >= stack.spec.timeout;
        checks.push(Check::new(
            format!(
                "{} recipients: parts and continuations in the status",
                fmt_count(b.recipients as u64)
            ),
            format!("{shards} parts, {continuations} continuations"),
            "parts > 1; continuations > 0 if it outlasts an invocation",
            shards > 1 && (continuations > 0 || !needs_continuation),
        ));
        let delivered = b.delivered();
        checks.push(Check::new(
            format!(
                "{} recipients: the status's report",
                fmt_count(b.recipients as u64)
            ),
            format!("{delivered} delivered"),
            fmt_count(b.recipients as u64),
            delivered == b.recipients as u64,
        ));
        checks.push(Check::new(
            format!(
                "{} recipients: peak RSS of any one environment",
                fmt_count(b.recipients as u64)
            ),
            format!("{:.1} MiB", b.peak_mib().max),
            format!("≤ {PEAK_TARGET_MIB} MiB"),
            b.peak_mib().max <= PEAK_TARGET_MIB,
        ));
    }
    if let (Some(small), Some(large)) = (
        backgrounds.iter().min_by_key(|b| b.recipients),
        backgrounds.iter().max_by_key(|b| b.recipients),
    ) && large.recipients > small.recipients
    {
        let growth = large.peak_mib().max / small.peak_mib().max - 1.0;
        checks.push(Check::new(
            format!(
                "peak RSS per environment, {} vs. {} recipients",
                fmt_count(large.recipients as u64),
                fmt_count(small.recipients as u64)
            ),
            format!(
                "{:+.1} % ({:.1} vs. {:.1} MiB)",
                growth * 100.0,
                large.peak_mib().max,
                small.peak_mib().max
            ),
            format!("≤ +{:.0} %", FLAT_GROWTH * 100.0),
            growth <= FLAT_GROWTH,
        ));
    }
    checks
}

/// Exactly once each; after a killed part, none missing and the duplicates bounded.
fn exactly_once(b: &Broadcast, concurrency: usize) -> Check {
    let (missing, duplicates) = (
        b.counts["missing"].as_u64().unwrap_or(u64::MAX),
        b.counts["duplicates"].as_u64().unwrap_or(u64::MAX),
    );
    let unexpected = b.counts["unexpected"].as_u64().unwrap_or(u64::MAX);
    let size = fmt_count(b.recipients as u64);
    if b.killed {
        let bound = b.duplicate_bound(concurrency);
        return Check::new(
            format!(
                "{size} recipients, one part's process killed: none missing, duplicates bounded"
            ),
            format!("{missing} missing, {duplicates} twice (bound {bound:.0})"),
            "0 missing, duplicates ≤ bound",
            missing == 0 && unexpected == 0 && (duplicates as f64) <= bound,
        );
    }
    Check::new(
        format!("{size} recipients: every one exactly once (sink's count per id)"),
        format!("{missing} missing, {duplicates} twice, {unexpected} unexpected"),
        "0, 0, 0",
        missing == 0 && duplicates == 0 && unexpected == 0,
    )
}
