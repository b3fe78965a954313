//! The soak scenario's own process: the gateway, the samples, the checks, the results.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStdout, Command};
use tokio::sync::oneshot;
use wsbridge::config::FanoutConfig;
use wsbridge_local::{GatewayConfig, RunningGateway, Storage, local_sdk_config};

use super::rows::{self, RowsLeft};
use super::trend::{Flatness, Sample, flatness};
use super::{Churn, summary};
use crate::dynamodb_local::DynamoDbLocal;
use crate::e2e::raise_open_files;
use crate::report::{Result, machine, status_kib};

/// Where the gateway keeps its rows during the soak.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Memory,
    Dynamodb,
}

pub struct SoakOptions {
    pub churn: Churn,
    pub storage: StorageKind,
    /// A running DynamoDB Local (with `--storage dynamodb`); default: start one.
    pub dynamodb_endpoint: Option<String>,
    pub sample_every: Duration,
    /// The gateway's FANOUT_CONCURRENCY.
    pub concurrency: usize,
}

/// The child's latest progress line.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    t: f64,
    received: u64,
    sessions: u64,
    churning: bool,
}

/// How long the gateway may take to run every `$disconnect` once the clients are gone.
const DRAIN: Duration = Duration::from_secs(120);

/// How long after the last connection is gone the gateway's memory is sampled once more.
const SETTLE: Duration = Duration::from_secs(10);

pub async fn run(options: &SoakOptions) -> Result<Value> {
    let churn = &options.churn;
    churn.check()?;
    // The gateway holds a socket per client, and its own @connections pool on both ends.
    let open_files = raise_open_files(churn.clients as u64 + 1_024)?;
    let dynamodb = match options.storage {
        StorageKind::Dynamodb => Some(DynamoDbLocal::start_or_use(
            options.dynamodb_endpoint.clone(),
        )?),
        StorageKind::Memory => None,
    };
    let table = format!("wsbridge-soak-{}", std::process::id());
    let storage = match &dynamodb {
        Some(dynamodb) => Storage::DynamoDb {
            endpoint: dynamodb.endpoint.clone(),
            table: table.clone(),
        },
        None => Storage::Memory,
    };
    let gateway = wsbridge_local::start(GatewayConfig {
        fanout: FanoutConfig {
            concurrency: options.concurrency,
        },
        storage,
        ..GatewayConfig::loopback()
    })
    .await?;
    println!(
        "soak: {} clients ({} users), {:.1} min, {} store; gateway at {}",
        churn.clients,
        churn.users(),
        churn.minutes,
        match options.storage {
            StorageKind::Memory => "in-memory",
            StorageKind::Dynamodb => "DynamoDB Local",
        },
        gateway.ws_url()
    );

    let mut child = Command::new(std::env::current_exe()?)
        .arg("soak-clients")
        .args(["--ws-url", &gateway.ws_url()])
        .args(["--http-url", &gateway.http_url()])
        .args(["--management-url", &gateway.management_url()])
        .args(churn.to_args())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let progress = Arc::new(Mutex::new(Progress {
        churning: true,
        ..Progress::default()
    }));
    let (result_tx, mut result_rx) = oneshot::channel();
    let stdout = child.stdout.take().ok_or("the clients have no stdout")?;
    tokio::spawn(read_child(stdout, progress.clone(), result_tx));

    let mut samples = Vec::new();
    let mut previous = Progress::default();
    let mut ticker = tokio::time::interval(options.sample_every);
    let result: Value = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = *progress.lock().unwrap_or_else(|p| p.into_inner());
                let sample = sample(&gateway, started, &previous, &now);
                if samples.len() % 12 == 0 {
                    print_sample(&sample);
                }
                samples.push(sample);
                previous = now;
            }
            result = &mut result_rx => break result.map_err(|_| "the clients ended without a result")?,
        }
    };
    let _ = child.wait().await;
    let churn_seconds = churn.duration().as_secs_f64();
    let drained = drain(&gateway, started, &previous, &mut samples).await?;
    let rows = match &dynamodb {
        Some(dynamodb) => {
            let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(Some(&dynamodb.endpoint)));
            rows::in_dynamodb(&client, &table).await?
        }
        None => rows::in_memory(gateway.store().as_ref(), churn).await?,
    };
    let judged = flatness(&samples, churn_seconds);
    let checks = summary::print(&summary::Inputs {
        churn,
        result: &result,
        rows: &rows,
        flatness: judged.as_ref(),
        drained,
        churn_seconds,
    });
    Ok(results(
        options, &result, &rows, judged, samples, checks, open_files,
    ))
}

fn results(
    options: &SoakOptions,
    result: &Value,
    rows: &RowsLeft,
    flatness: Option<Flatness>,
    samples: Vec<Sample>,
    checks: Value,
    open_files: u64,
) -> Value {
    let churn = &options.churn;
    json!({
        "scenario": "soak",
        "machine": machine(),
        "options": {
            "storage": format!("{:?}", options.storage).to_lowercase(),
            "minutes": churn.minutes, "clients": churn.clients,
            "clients_per_user": churn.clients_per_user, "users": churn.users(),
            "topics": churn.topics, "topics_per_client": churn.topics_per_client,
            "user_topic_share": churn.user_topic_share,
            "stay_seconds": [churn.stay_min_seconds, churn.stay_max_seconds],
            "abort_share": churn.abort_share, "server_close_share": churn.server_close_share,
            "topic_rate": churn.topic_rate, "user_rate": churn.user_rate,
            "sample_seconds": options.sample_every.as_secs_f64(),
            "fanout_concurrency": options.concurrency, "open_files_limit": open_files,
        },
        "clients": result,
        "rows_left": rows,
        "rss": flatness,
        "samples": samples,
        "checks": checks,
    })
}

/// One sample of this process (the gateway) and the clients' progress since the last one.
fn sample(
    gateway: &RunningGateway,
    started: Instant,
    previous: &Progress,
    now: &Progress,
) -> Sample {
    let seconds = (now.t - previous.t).max(f64::EPSILON);
    Sample {
        t: started.elapsed().as_secs_f64(),
        rss_kib: status_kib("self", "VmRSS").unwrap_or_default(),
        heap_kib: super::heap::in_use_kib(),
        open_connections: gateway.open_connections(),
        deliveries_per_s: now.received.saturating_sub(previous.received) as f64 / seconds,
        sessions_per_s: now.sessions.saturating_sub(previous.sessions) as f64 / seconds,
        churning: now.churning,
    }
}

fn print_sample(sample: &Sample) {
    println!(
        "  {:5.1} min: RSS {:.1} MiB (heap in use {:.1}), {} open, {:.0} deliveries/s, {:.1} sessions/s",
        sample.t / 60.0,
        crate::report::mib(sample.rss_kib),
        crate::report::mib(sample.heap_kib.unwrap_or_default()),
        sample.open_connections,
        sample.deliveries_per_s,
        sample.sessions_per_s
    );
}

/// Waits until the gateway has no connection open and its store counts none (every
/// `$disconnect` has run), sampling on; whether it got there within `DRAIN`.
async fn drain(
    gateway: &RunningGateway,
    started: Instant,
    last: &Progress,
    samples: &mut Vec<Sample>,
) -> Result<bool> {
    let waiting = Instant::now();
    let after = Progress {
        churning: false,
        ..*last
    };
    loop {
        let open = gateway.open_connections();
        let stored = gateway.store().count_connections().await?;
        if open == 0 && stored == 0 {
            samples.push(sample(gateway, started, &after, &after));
            // Once more when the sessions' tasks have surely ended: what the gateway holds
            // with nothing open, against its start (the sample just taken is too early).
            tokio::time::sleep(SETTLE).await;
            let settled = sample(gateway, started, &after, &after);
            println!(
                "{SETTLE:?} after everyone left: RSS {:.1} MiB, heap in use {:.1} MiB",
                crate::report::mib(settled.rss_kib),
                crate::report::mib(settled.heap_kib.unwrap_or_default()),
            );
            samples.push(settled);
            return Ok(true);
        }
        if waiting.elapsed() > DRAIN {
            println!("after {DRAIN:?}: {open} connections open, {stored} in the store");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows the child's lines: progress into `progress`, the result into `result`.
async fn read_child(
    stdout: ChildStdout,
    progress: Arc<Mutex<Progress>>,
    result: oneshot::Sender<Value>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut result = Some(result);
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "STOPPING" {
            progress.lock().unwrap_or_else(|p| p.into_inner()).churning = false;
            println!("churn over: every client leaves");
        } else if let Some(json) = line.strip_prefix("PROGRESS ") {
            let Ok(value) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            let mut progress = progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.t = value["t"].as_f64().unwrap_or(progress.t);
            progress.received = value["received"].as_u64().unwrap_or(progress.received);
            progress.sessions = value["sessions"].as_u64().unwrap_or(progress.sessions);
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            match (serde_json::from_str::<Value>(json), result.take()) {
                (Ok(value), Some(sender)) => {
                    let _ = sender.send(value);
                }
                (Err(e), _) => eprintln!("soak: unreadable result: {e}"),
                _ => {}
            }
        } else {
            println!("clients: {line}");
        }
    }
}

/// Plots the samples of a results file next to it (`.png`), with matplotlib in a virtual
/// environment under `.cache/` (`bench/plot-soak.sh`).
pub fn plot(results: &Path) -> Result<()> {
    let png = results.with_extension("png");
    let script = crate::workspace_root().join("bench/plot-soak.sh");
    let status = std::process::Command::new(&script)
        .arg(results)
        .arg(&png)
        .status()?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()).into());
    }
    println!("plot written to {}", png.display());
    Ok(())
}
