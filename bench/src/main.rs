//! wsbridge's benchmark harness: `cargo run --release -p wsbridge-bench -- <scenario>`.
//! Each scenario prints its tables and the targets, and writes its results as JSON
//! (`bench/results/<scenario>.json`, or `--json PATH`). BENCHMARKS.md has the numbers of one
//! run and what they mean for a deployed stack.

mod cold_start;
mod dynamodb_local;
mod e2e;
mod engine;
mod events;
mod fixture_store;
mod fixtures;
mod history;
mod lambda;
mod lambda_service;
mod lambda_stub;
mod load;
mod memory;
mod report;
mod sink;
mod soak;
mod store;
mod template;
mod throttle;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use wsbridge::config::DEFAULT_FANOUT_CONCURRENCY;

use crate::report::{Result, write_json};

#[derive(Parser)]
#[command(version, about = "Benchmarks of wsbridge's broadcast path")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Where to write the results (default: bench/results/<scenario>.json).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Fan-out engine vs. the raw capacity of a local @connections sink, with and without
    /// injected latency, and a concurrency sweep.
    Engine {
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 50_000])]
        sizes: Vec<usize>,
        /// Latencies injected per post, in ms, one run of every size each.
        #[arg(long, value_delimiter = ',', default_values_t = [0, 20])]
        latencies: Vec<u64>,
        #[arg(long, default_value_t = DEFAULT_FANOUT_CONCURRENCY)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Concurrencies of the sweep.
        #[arg(long, value_delimiter = ',', default_values_t = [16, 32, 50, 64, 100, 128, 200, 256, 384, 512, 768, 1000])]
        sweep: Vec<usize>,
        /// Skip the sweep.
        #[arg(long)]
        no_sweep: bool,
        #[arg(long, default_value_t = 20)]
        sweep_latency: u64,
        /// Recipients of each sweep run: at least this, and 50 × the concurrency.
        #[arg(long, default_value_t = 20_000)]
        sweep_size: usize,
        /// Worker threads of the runtimes the 0 ms pair also runs on, one runtime each: how
        /// CPU-bound throughput scales with cores.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
        threads: Vec<usize>,
        /// Skip the worker-thread runs.
        #[arg(long)]
        no_threads: bool,
        #[arg(long, default_value_t = 50_000)]
        threads_size: usize,
        /// For profiling: time the engine alone, no raw loop (the raw columns then repeat
        /// the engine's, and the ratios mean nothing).
        #[arg(long, hide = true)]
        engine_only: bool,
    },
    /// The same fan-out with recipients read from DynamoDB Local: time to first send, total,
    /// read capacity consumed.
    Store {
        /// A running DynamoDB Local; default: start one with scripts/dynamodb-local.sh.
        #[arg(long)]
        dynamodb_endpoint: Option<String>,
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 50_000])]
        sizes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_values_t = [0, 20])]
        latencies: Vec<u64>,
        #[arg(long, default_value_t = DEFAULT_FANOUT_CONCURRENCY)]
        concurrency: usize,
    },
    /// The engine against an account limit: a sink answering 429 above R posts/s (a token
    /// bucket with a burst), one broadcast and then two at once; sustained delivery, retries,
    /// every recipient exactly once.
    Throttle {
        #[command(flatten)]
        options: throttle::ThrottleOptions,
    },
    /// Real WebSocket clients on the local gateway, one broadcast to all of them.
    E2e {
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
        clients: Vec<usize>,
        /// The gateway's FANOUT_CONCURRENCY.
        #[arg(long, default_value_t = DEFAULT_FANOUT_CONCURRENCY)]
        concurrency: usize,
    },
    /// Each function's release binary against a local Lambda Runtime API: spawn → first
    /// `GET /runtime/invocation/next`; binary sizes.
    ColdStart {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Where the release binaries are (default: target/release of this workspace).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Peak RSS of the release broadcast binary during one broadcast, as Lambda runs it.
    Memory {
        #[arg(long)]
        dynamodb_endpoint: Option<String>,
        #[arg(long, value_delimiter = ',', default_values_t = [10_000, 50_000])]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// FANOUT_CONCURRENCY (default: the template's).
        #[arg(long)]
        concurrency: Option<usize>,
        /// The invocation's time limit (default: the template's broadcast Timeout).
        #[arg(long)]
        timeout_seconds: Option<u64>,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Also run the harness's copy of the function with these caps on items per Query
        /// page (0: DynamoDB's own 1 MB pages), to compare (settled: the function reads
        /// pages of 1 000).
        #[arg(long, value_delimiter = ',')]
        page_sizes: Vec<i32>,
    },
    /// The release broadcast function as Lambda runs it (Invoke API, a pool of execution
    /// environments, DynamoDB Local, the sink): 50 000 recipients at the template's defaults,
    /// then audiences of up to 1 000 000 through the background (parts, continuations,
    /// exactly once, peak RSS per process).
    Lambda {
        #[command(flatten)]
        options: lambda::LambdaOptions,
    },
    /// The local gateway under churn for a set time: thousands of clients connecting,
    /// subscribing and leaving (clean close, TCP drop, server close) while broadcasts run;
    /// no message owed lost or doubled, no row left, RSS flat. Plots bench/results/soak.png.
    Soak {
        #[command(flatten)]
        churn: soak::Churn,
        #[arg(long, value_enum, default_value = "memory")]
        storage: soak::StorageKind,
        /// A running DynamoDB Local for `--storage dynamodb`; default: start one.
        #[arg(long)]
        dynamodb_endpoint: Option<String>,
        /// Seconds between two samples of RSS, deliveries and open connections.
        #[arg(long, default_value_t = 5.0)]
        sample_seconds: f64,
        /// The gateway's FANOUT_CONCURRENCY.
        #[arg(long, default_value_t = DEFAULT_FANOUT_CONCURRENCY)]
        concurrency: usize,
    },
    /// (internal) Clients and broadcaster of the soak scenario, run as a child process.
    #[command(hide = true)]
    SoakClients {
        #[arg(long)]
        ws_url: String,
        #[arg(long)]
        http_url: String,
        #[arg(long)]
        management_url: String,
        #[command(flatten)]
        churn: soak::Churn,
    },
    /// (internal) The broadcast function's wiring with a Query page cap, run by `memory`.
    #[command(hide = true)]
    BroadcastFunction {
        #[arg(long)]
        page_size: Option<i32>,
    },
    /// (internal) The @connections sink, run as a child process.
    #[command(hide = true)]
    Sink {
        #[command(flatten)]
        options: sink::SinkOptions,
    },
    /// (internal) WebSocket clients of the e2e scenario, run as a child process.
    #[command(hide = true)]
    E2eClients {
        #[arg(long)]
        url: String,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        topic: String,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Engine { .. } => "engine",
            Scenario::Store { .. } => "store",
            Scenario::Throttle { .. } => "throttle",
            Scenario::E2e { .. } => "e2e",
            Scenario::ColdStart { .. } => "cold-start",
            Scenario::Memory { .. } => "memory",
            Scenario::Lambda { .. } => "lambda",
            Scenario::Soak { .. } => "soak",
            Scenario::SoakClients { .. } => "soak-clients",
            Scenario::Sink { .. } => "sink",
            Scenario::BroadcastFunction { .. } => "broadcast-function",
            Scenario::E2eClients { .. } => "e2e-clients",
        }
    }
}

/// This workspace's root (bench/ is one of its members).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `path` relative to the workspace root where it lies inside it, for results files.
pub fn relative_to_workspace(path: &std::path::Path) -> String {
    let root = workspace_root();
    let normalized = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let root = root.canonicalize().unwrap_or(root);
    normalized
        .strip_prefix(&root)
        .unwrap_or(&normalized)
        .display()
        .to_string()
}

fn release_dir(bin_dir: Option<PathBuf>) -> PathBuf {
    bin_dir.unwrap_or_else(|| workspace_root().join("target/release"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The sink builds a runtime of as few threads as it is told; everything else runs on
    // one worker thread per core.
    if let Scenario::Sink { options } = &cli.scenario {
        return sink::serve(options.clone());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(scenario(cli))
}

async fn scenario(cli: Cli) -> Result<()> {
    let name = cli.scenario.name();
    let started = Instant::now();
    let results = match cli.scenario {
        Scenario::Sink { .. } => return Err("the sink runs on a runtime of its own".into()),
        Scenario::BroadcastFunction { page_size } => {
            return memory::broadcast_function(page_size).await;
        }
        Scenario::E2eClients {
            url,
            clients,
            topic,
        } => return e2e::clients(&url, clients, &topic).await,
        Scenario::SoakClients {
            ws_url,
            http_url,
            management_url,
            churn,
        } => {
            let endpoints = soak::Endpoints {
                ws_url,
                http_url,
                management_url,
            };
            return soak::clients(endpoints, churn).await;
        }
        Scenario::Engine {
            sizes,
            latencies,
            concurrency,
            repeat,
            sweep,
            no_sweep,
            sweep_latency,
            sweep_size,
            threads,
            no_threads,
            threads_size,
            engine_only,
        } => {
            engine::run(&engine::EngineOptions {
                sizes,
                latencies_ms: latencies,
                concurrency,
                repeat,
                sweep: if no_sweep { Vec::new() } else { sweep },
                sweep_latency_ms: sweep_latency,
                sweep_size,
                threads: if no_threads { Vec::new() } else { threads },
                threads_size,
                engine_only,
            })
            .await?
        }
        Scenario::Store {
            dynamodb_endpoint,
            sizes,
            latencies,
            concurrency,
        } => {
            let dynamodb = dynamodb_local::DynamoDbLocal::start_or_use(dynamodb_endpoint)?;
            store::run(&dynamodb.endpoint, &sizes, &latencies, concurrency).await?
        }
        Scenario::Throttle { options } => throttle::run(&options).await?,
        Scenario::Lambda { options } => lambda::run(&options).await?,
        Scenario::E2e {
            clients,
            concurrency,
        } => e2e::run(&clients, concurrency).await?,
        Scenario::Soak {
            churn,
            storage,
            dynamodb_endpoint,
            sample_seconds,
            concurrency,
        } => {
            soak::run(&soak::SoakOptions {
                churn,
                storage,
                dynamodb_endpoint,
                sample_every: Duration::from_secs_f64(sample_seconds.max(0.5)),
                concurrency,
            })
            .await?
        }
        Scenario::ColdStart { runs, bin_dir } => {
            cold_start::run(&release_dir(bin_dir), runs).await?
        }
        Scenario::Memory {
            dynamodb_endpoint,
            sizes,
            latency_ms,
            concurrency,
            timeout_seconds,
            bin_dir,
            page_sizes,
        } => {
            let defaults = template::BroadcastDefaults::read()?;
            let dynamodb = dynamodb_local::DynamoDbLocal::start_or_use(dynamodb_endpoint)?;
            memory::run(&memory::MemoryOptions {
                dynamodb_endpoint: dynamodb.endpoint.clone(),
                sizes,
                latency: Duration::from_millis(latency_ms),
                concurrency: concurrency.unwrap_or(defaults.fanout_concurrency),
                template: defaults,
                timeout: timeout_seconds.map_or(defaults.timeout, Duration::from_secs),
                bin_dir: release_dir(bin_dir),
                page_sizes,
            })
            .await?
        }
    };
    let mut results = results;
    results["run_seconds"] = started.elapsed().as_secs_f64().into();
    println!("\n{name}: done in {:.0} s", started.elapsed().as_secs_f64());
    let path = cli.json.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("results/{name}.json"))
    });
    write_json(&path, &results)?;
    if name == "soak" {
        soak::plot(&path)?;
    }
    Ok(())
}
