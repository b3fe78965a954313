//! Scenario `memory`: peak resident memory of the broadcast path as a deployed Lambda sees
//! it. The release `wsbridge-broadcast` binary runs against the Runtime API stub, reading
//! subscribers from DynamoDB Local (`AWS_ENDPOINT_URL_DYNAMODB`) and posting to the sink
//! (`WS_MANAGEMENT_ENDPOINT`); one HTTP API v2 `POST /broadcast` event goes in, and once its
//! response is back the process's peak RSS (`VmHWM`) is read, before it is killed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cold_start::binary;
use crate::dynamodb_local::{subscription_row_size, table_with_subscribers};
use crate::fixtures::topic;
use crate::lambda_stub::{Function, RuntimeApi, lambda_env};
use crate::report::{
    Check, Result, Table, cpu_seconds, fmt_count, machine, mib, ms, print_checks, status_kib,
};
use crate::sink::Sink;
use crate::template::BroadcastDefaults;
use lambda_http::{Request, service_fn};
use wsbridge::config::{
    BroadcastConfig, ChannelsConfig, FanoutConfig, ManagementConfig, SessionConfig, StoreConfig,
};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::{Context, broadcast};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};
use wsbridge::store::DynamoDbStore;

const PEAK_TARGET_MIB: f64 = 32.0;

pub struct MemoryOptions {
    pub dynamodb_endpoint: String,
    pub sizes: Vec<usize>,
    pub latency: Duration,
    pub concurrency: usize,
    /// The template's broadcast function: its memory (Lambda tells the function, and gives
    /// it CPU in proportion).
    pub template: BroadcastDefaults,
    pub timeout: Duration,
    pub bin_dir: PathBuf,
    /// Caps on items per Query page to compare (0: DynamoDB's own 1 MB pages), each run by
    /// this harness's copy of the function (`broadcast-function`).
    pub page_sizes: Vec<i32>,
}

/// A broadcast function to measure: the release binary, or the harness's copy of it.
struct Variant {
    label: String,
    binary: PathBuf,
    args: Vec<String>,
    release: bool,
}

struct Measured {
    variant: usize,
    size: usize,
    rss_ready_kib: u64,
    peak_kib: u64,
    took: Duration,
    cpu_seconds: f64,
    posts: u64,
    report: Value,
}

/// The broadcast function's wiring (as `functions/broadcast/src/main.rs`), with an optional
/// cap on items per Query page: the experiment behind the page-size recommendation. Run by
/// the harness as `wsbridge-bench broadcast-function [--page-size N]`.
pub async fn broadcast_function(page_size: Option<i32>) -> Result<()> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let config = BroadcastConfig {
        emit_metrics: true,
        ..BroadcastConfig::from_env()?
    };
    let aws = aws_config::load_from_env().await;
    let mut store = DynamoDbStore::from_sdk_config(&aws, table);
    if let Some(page_size) = page_size {
        store = store.with_page_size(page_size);
    }
    let management = ManagementConfig::from_env()?;
    let session = SessionConfig::from_env()?;
    let channels = ChannelsConfig::from_env()?.channels;
    let fanout = Fanout::new(FanoutConfig::from_env()?);
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&aws, management.endpoint_override));
    let ctx = Context {
        store: &store,
        sender,
        session: &session,
        channels: &channels,
        fanout: &fanout,
        deadline: None,
    };
    let launcher = wsbridge::shards::LambdaLauncher::this_function(&aws)?;
    let (ctx, config, launcher) = (&ctx, &config, &launcher);
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, lambda_http::Error>(broadcast::handle(&request, ctx, config, launcher).await)
    }))
    .await
}

pub async fn run(options: &MemoryOptions) -> Result<Value> {
    let mut variants = vec![Variant {
        label: "release wsbridge-broadcast".into(),
        binary: binary(&options.bin_dir, "broadcast")?,
        args: Vec::new(),
        release: true,
    }];
    for &page_size in &options.page_sizes {
        let mut args = vec!["broadcast-function".to_owned()];
        if page_size > 0 {
            args.extend(["--page-size".to_owned(), page_size.to_string()]);
        }
        variants.push(Variant {
            label: match page_size {
                0 => "harness copy, 1 MB pages".into(),
                n => format!("harness copy, pages of {n}"),
            },
            binary: std::env::current_exe()?,
            args,
            release: false,
        });
    }
    let (_, table) = table_with_subscribers(&options.dynamodb_endpoint, &options.sizes).await?;
    let sink = Sink::spawn(options.latency).await?;
    let mut stub = RuntimeApi::start().await?;
    let mut env = lambda_env(
        "wsbridge-broadcast",
        &stub.runtime_api(),
        options.template.memory_mb,
    );
    env.retain(|(name, _)| name != "TABLE_NAME");
    env.extend([
        ("TABLE_NAME".to_owned(), table),
        // The whole audience in the one invocation measured, never handed to the
        // background (which has its own scenario, `lambda`).
        ("BROADCAST_SYNC_SECONDS".to_owned(), "25".to_owned()),
        (
            "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
            options.dynamodb_endpoint.clone(),
        ),
        ("WS_MANAGEMENT_ENDPOINT".to_owned(), sink.endpoint()),
        (
            "FANOUT_CONCURRENCY".to_owned(),
            options.concurrency.to_string(),
        ),
    ]);

    let mut measured = Vec::new();
    for (index, variant) in variants.iter().enumerate() {
        for &size in &options.sizes {
            let mut m = one_broadcast(&mut stub, &sink, variant, &env, size, options).await?;
            m.variant = index;
            println!(
                "  {}, {size}: peak {:.1} MiB in {:.1} s, {}",
                variant.label,
                mib(m.peak_kib),
                m.took.as_secs_f64(),
                m.report
            );
            measured.push(m);
        }
    }
    sink.stop().await;

    let mut table = Table::new(
        format!(
            "Peak RSS of the broadcast function, one broadcast each (concurrency {}, {} ms per post, rows of {} bytes)",
            options.concurrency,
            options.latency.as_millis(),
            subscription_row_size()
        ),
        &[
            "function",
            "recipients",
            "RSS at ready MiB",
            "peak RSS MiB",
            "invocation ms",
            "CPU ms",
            "CPU at Lambda's share s",
            "delivered",
            "deadline reached",
        ],
    );
    for m in &measured {
        table.row(vec![
            variants[m.variant].label.clone(),
            fmt_count(m.size as u64),
            format!("{:.1}", mib(m.rss_ready_kib)),
            format!("{:.1}", mib(m.peak_kib)),
            format!("{:.0}", ms(m.took)),
            format!("{:.0}", m.cpu_seconds * 1_000.0),
            format!("{:.1}", m.cpu_seconds / options.template.vcpu()),
            m.report["delivered"].to_string(),
            m.report["deadline_reached"].to_string(),
        ]);
    }
    table.print();
    let release: Vec<&Measured> = measured
        .iter()
        .filter(|m| variants[m.variant].release)
        .collect();
    let checks = print_checks(&checks(&release));
    Ok(json!({
        "scenario": "memory",
        "machine": machine(),
        "options": {
            "sizes": options.sizes, "latency_ms": options.latency.as_millis() as u64,
            "concurrency": options.concurrency, "timeout_seconds": options.timeout.as_secs(),
            "template": options.template.json(),
            "row_bytes": subscription_row_size(), "page_sizes": options.page_sizes,
        },
        "runs": measured.iter().map(|m| json!({
            "function": variants[m.variant].label, "recipients": m.size,
            "rss_at_ready_kib": m.rss_ready_kib, "peak_rss_kib": m.peak_kib,
            "invocation_ms": ms(m.took), "cpu_ms": m.cpu_seconds * 1_000.0,
            "sink_posts": m.posts, "response": m.report,
        })).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

/// Starts the function, hands it one broadcast to `topic(size)`, reads its peak RSS once it
/// has answered, and stops it.
async fn one_broadcast(
    stub: &mut RuntimeApi,
    sink: &Sink,
    variant: &Variant,
    env: &[(String, String)],
    size: usize,
    options: &MemoryOptions,
) -> Result<Measured> {
    stub.reset();
    let mut function = Function::spawn(&variant.binary, &variant.args, env)?;
    stub.next_poll(&mut function, Duration::from_secs(10))
        .await?;
    let rss_ready_kib = status_kib(&function.pid, "VmRSS").unwrap_or_default();
    let (posts_before, cpu_before) = (sink.posts().await?, cpu_seconds(&function.pid));
    let started = Instant::now();
    let request_id = stub.invoke(
        crate::events::broadcast(topic(size)?.as_str(), false)?,
        options.timeout,
    );
    let outcome = stub
        .outcome(&mut function, options.timeout + Duration::from_secs(30))
        .await?;
    let took = started.elapsed();
    let peak_kib = status_kib(&function.pid, "VmHWM").unwrap_or_default();
    let cpu = cpu_seconds(&function.pid) - cpu_before;
    function.stop().await;
    let (status, report) = crate::events::response(&outcome.body)?;
    if outcome.error || outcome.request_id != request_id || status != 200 {
        return Err(format!("broadcast to {size} failed: {status} {report}").into());
    }
    Ok(Measured {
        variant: 0,
        size,
        rss_ready_kib,
        peak_kib,
        took,
        cpu_seconds: cpu,
        posts: sink.posts().await? - posts_before,
        report,
    })
}

fn checks(measured: &[&Measured]) -> Vec<Check> {
    let mut checks = Vec::new();
    let at = |size: usize| measured.iter().find(|m| m.size == size);
    if let Some(m) = at(10_000) {
        checks.push(Check::new(
            "peak RSS, 10 000 recipients",
            format!("{:.1} MiB", mib(m.peak_kib)),
            format!("≤ {PEAK_TARGET_MIB} MiB"),
            mib(m.peak_kib) <= PEAK_TARGET_MIB,
        ));
        if let Some(big) = at(50_000) {
            let growth = big.peak_kib as f64 / m.peak_kib as f64 - 1.0;
            checks.push(Check::new(
                "peak RSS, 50 000 vs. 10 000 recipients",
                format!("{:+.1} % ({:.1} MiB)", growth * 100.0, mib(big.peak_kib)),
                "≤ +10 %",
                growth <= 0.10,
            ));
        }
    }
    for m in measured {
        let delivered = m.report["delivered"].as_u64().unwrap_or_default();
        checks.push(Check::new(
            format!("{} recipients all delivered", fmt_count(m.size as u64)),
            format!("{delivered} delivered, sink got {}", m.posts),
            fmt_count(m.size as u64),
            delivered == m.size as u64 && m.posts == m.size as u64,
        ));
    }
    checks
}
