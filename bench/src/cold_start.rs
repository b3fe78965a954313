//! Scenario `cold-start`: each function's release binary started against the local Runtime
//! API stub, timed from spawn to its first `GET /runtime/invocation/next` (configuration
//! read, SDK clients built: everything `main` does before it can take an event); and the
//! size of each stripped binary.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lambda_stub::{Function, RuntimeApi, lambda_env};
use crate::report::{Check, Result, Stats, Table, machine, mib, ms, print_checks, status_kib};

/// The functions, with the memory the template gives each.
pub const FUNCTIONS: [(&str, u32); 4] = [
    ("connect", 256),
    ("disconnect", 128),
    ("default", 256),
    ("broadcast", 512),
];

const READY_TARGET_MS: f64 = 15.0;
const SIZE_TARGET_MIB: f64 = 8.0;

pub fn binary(bin_dir: &Path, function: &str) -> Result<std::path::PathBuf> {
    let path = bin_dir.join(format!("wsbridge-{function}"));
    if !path.is_file() {
        return Err(format!(
            "{} is missing: build the functions first with \
             cargo build --release -p wsbridge-connect -p wsbridge-disconnect \
             -p wsbridge-default -p wsbridge-broadcast",
            path.display()
        )
        .into());
    }
    Ok(path)
}

struct Measured {
    function: &'static str,
    bytes: u64,
    ready_ms: Stats,
    rss_kib: Stats,
}

/// Spawns the function once; returns spawn → first poll, and its resident set then.
async fn start_once(
    stub: &mut RuntimeApi,
    binary: &Path,
    env: &[(String, String)],
) -> Result<(Duration, u64)> {
    stub.reset();
    let spawned = Instant::now();
    let mut function = Function::spawn(binary, &[], env)?;
    let polled = stub
        .next_poll(&mut function, Duration::from_secs(10))
        .await?;
    let rss = status_kib(&function.pid, "VmRSS").unwrap_or_default();
    function.stop().await;
    Ok((polled.duration_since(spawned), rss))
}

pub async fn run(bin_dir: &Path, runs: usize) -> Result<Value> {
    let mut stub = RuntimeApi::start().await?;
    let mut measured = Vec::new();
    for (function, memory_mb) in FUNCTIONS {
        let path = binary(bin_dir, function)?;
        let bytes = std::fs::metadata(&path)?.len();
        let env = lambda_env(
            &format!("wsbridge-{function}"),
            &stub.runtime_api(),
            memory_mb,
        );
        // One start first, unmeasured: the binary is then in the page cache, as on a warm
        // Lambda host; what is measured is the process, not this machine's disk.
        start_once(&mut stub, &path, &env).await?;
        let (mut ready, mut rss) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            let (took, kib) = start_once(&mut stub, &path, &env).await?;
            ready.push(ms(took));
            rss.push(kib as f64);
        }
        let ready_ms = Stats::of(ready);
        println!(
            "  {function}: median {:.1} ms, p95 {:.1} ms",
            ready_ms.p50, ready_ms.p95
        );
        measured.push(Measured {
            function,
            bytes,
            ready_ms,
            rss_kib: Stats::of(rss),
        });
    }

    let mut table = Table::new(
        format!("Cold start: spawn → first GET …/invocation/next, {runs} runs each"),
        &[
            "function",
            "min ms",
            "median ms",
            "p95 ms",
            "max ms",
            "RSS at ready MiB",
            "binary MiB",
        ],
    );
    for m in &measured {
        table.row(vec![
            m.function.to_owned(),
            format!("{:.1}", m.ready_ms.min),
            format!("{:.1}", m.ready_ms.p50),
            format!("{:.1}", m.ready_ms.p95),
            format!("{:.1}", m.ready_ms.max),
            format!("{:.1}", mib(m.rss_kib.p50 as u64)),
            format!("{:.2}", m.bytes as f64 / 1_048_576.0),
        ]);
    }
    table.print();
    let mut checks = Vec::new();
    for m in &measured {
        checks.push(Check::new(
            format!("{}: spawn → ready (p95)", m.function),
            format!("{:.1} ms", m.ready_ms.p95),
            format!("≤ {READY_TARGET_MS} ms"),
            m.ready_ms.p95 <= READY_TARGET_MS,
        ));
    }
    for m in &measured {
        let size = m.bytes as f64 / 1_048_576.0;
        checks.push(Check::new(
            format!("{}: stripped binary", m.function),
            format!("{size:.2} MiB"),
            format!("≤ {SIZE_TARGET_MIB} MiB"),
            size <= SIZE_TARGET_MIB,
        ));
    }
    let checks = print_checks(&checks);
    Ok(json!({
        "scenario": "cold-start",
        "machine": machine(),
        // Relative to the workspace when it is inside it: results are committed, and the
        // machine's own paths do not belong in them.
        "options": {"runs": runs, "bin_dir": crate::relative_to_workspace(bin_dir)},
        "functions": measured.iter().map(|m| json!({
            "function": m.function, "binary_bytes": m.bytes,
            "ready_ms": m.ready_ms.json(), "rss_at_ready_kib": m.rss_kib.json(),
        })).collect::<Vec<_>>(),
        "checks": checks,
    }))
}
