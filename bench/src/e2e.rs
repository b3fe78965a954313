//! Scenario `e2e`: N real WebSocket clients on the local gateway (in this process, free
//! ports), all subscribed to one topic; one `POST /broadcast`; how long until the last client
//! has the message, per-client percentiles, and nobody missing or served twice.
//!
//! The clients run in a child process (`wsbridge-bench e2e-clients`): 10 000 clients and the
//! gateway's 10 000 server sockets would not fit one process's open-files limit here
//! (20 000), and the clients' CPU is then not the gateway's.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use wsbridge::config::FanoutConfig;
use wsbridge::dev::{Claims, DEV_SECRET, sign_hs256};
use wsbridge_local::{GatewayConfig, Limits};

use crate::report::{Check, Result, Stats, Table, fmt_count, machine, print_checks};

const TOPIC: &str = "bench:e2e";
/// WebSocket handshakes (with `$connect`) in flight while the clients connect.
const CONNECTING: usize = 64;
/// How long the clients wait for the broadcast, at most.
const PATIENCE: Duration = Duration::from_secs(120);
/// After the last client has the message, how long to keep listening for duplicates.
const QUIET: Duration = Duration::from_secs(2);

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Raises this process's open-files limit to its hard limit; fails if `needed` won't fit.
pub(crate) fn raise_open_files(needed: u64) -> Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    if limit < needed {
        return Err(format!(
            "the open-files limit is {limit} (hard), {needed} are needed: raise it (ulimit -Hn)"
        )
        .into());
    }
    Ok(limit)
}

/// One run: how the clients fared.
struct Run {
    clients: usize,
    connect: Duration,
    broadcast_response: Duration,
    report: Value,
    latencies_ms: Stats,
    missing: usize,
    duplicates: usize,
}

pub async fn run(client_counts: &[usize], concurrency: usize) -> Result<Value> {
    let most = client_counts.iter().copied().max().unwrap_or_default() as u64;
    let limit = raise_open_files(most + 512)?;
    println!("open-files limit: {limit}");
    let mut runs = Vec::new();
    for &clients in client_counts {
        let run = one_run(clients, concurrency).await?;
        println!(
            "  {clients} clients: last after {:.0} ms, {} missing, {} twice",
            run.latencies_ms.max, run.missing, run.duplicates
        );
        runs.push(run);
    }
    let mut table = Table::new(
        format!(
            "One broadcast to N WebSocket clients on the local gateway, concurrency {concurrency}"
        ),
        &[
            "clients",
            "connect all (s)",
            "broadcast answered ms",
            "p50 ms",
            "p99 ms",
            "last ms",
            "missing",
            "twice",
        ],
    );
    for run in &runs {
        table.row(vec![
            fmt_count(run.clients as u64),
            format!("{:.1}", run.connect.as_secs_f64()),
            format!("{:.0}", crate::report::ms(run.broadcast_response)),
            format!("{:.0}", run.latencies_ms.p50),
            format!("{:.0}", run.latencies_ms.p99),
            format!("{:.0}", run.latencies_ms.max),
            run.missing.to_string(),
            run.duplicates.to_string(),
        ]);
    }
    table.print();
    let checks: Vec<Check> = runs
        .iter()
        .filter(|run| run.clients >= 10_000)
        .map(|run| {
            Check::new(
                format!(
                    "{} WebSocket clients all receive, none twice",
                    fmt_count(run.clients as u64)
                ),
                format!("{} missing, {} twice", run.missing, run.duplicates),
                "0 missing, 0 twice",
                run.missing == 0 && run.duplicates == 0,
            )
        })
        .collect();
    let checks = print_checks(&checks);
    Ok(json!({
        "scenario": "e2e",
        "machine": machine(),
        "options": {"clients": client_counts, "concurrency": concurrency},
        "runs": runs.iter().map(|run| json!({
            "clients": run.clients, "connect_seconds": run.connect.as_secs_f64(),
            "broadcast_response_ms": crate::report::ms(run.broadcast_response),
            "report": run.report, "latency_ms": run.latencies_ms.json(),
            "missing": run.missing, "twice": run.duplicates,
        })).collect::<Vec<_>>(),
        "checks": checks,
    }))
}

async fn one_run(clients: usize, concurrency: usize) -> Result<Run> {
    let gateway = wsbridge_local::start(GatewayConfig {
        fanout: FanoutConfig { concurrency },
        // Every client must get in, however many a run asks for.
        limits: Limits {
            max_connections: clients.max(Limits::default().max_connections),
            ..Limits::default()
        },
        ..GatewayConfig::loopback()
    })
    .await?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["e2e-clients", "--url", &gateway.ws_url()])
        .args(["--clients", &clients.to_string(), "--topic", TOPIC])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("clients have no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("clients have no stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .map_err(|_| "clients did not connect within 10 min")??
        .ok_or("clients ended before connecting")?;
    let connect = Duration::from_secs_f64(
        ready
            .strip_prefix("READY ")
            .ok_or_else(|| format!("clients said {ready:?}"))?
            .parse()?,
    );
    if gateway.open_connections() != clients {
        return Err(format!(
            "{} connections open, {clients} expected",
            gateway.open_connections()
        )
        .into());
    }

    stdin.write_all(b"GO\n").await?;
    stdin.flush().await?;
    let sent_at = unix_nanos();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/broadcast", gateway.http_url()))
        .json(&json!({"topic": TOPIC, "event": "tick", "data": {"n": 1}}))
        .send()
        .await?;
    let status = response.status();
    let report: Value = response.json().await?;
    let broadcast_response = started.elapsed();
    if !status.is_success() {
        return Err(format!("broadcast answered {status}: {report}").into());
    }

    let result = tokio::time::timeout(PATIENCE + QUIET * 4, lines.next_line())
        .await
        .map_err(|_| "clients did not report")??
        .ok_or("clients ended without a report")?;
    let result: Value = serde_json::from_str(
        result
            .strip_prefix("RESULT ")
            .ok_or_else(|| format!("clients said {result:?}"))?,
    )?;
    let _ = child.wait().await;
    let latencies: Vec<f64> = result["received_at"]
        .as_array()
        .ok_or("no receive times")?
        .iter()
        .filter_map(Value::as_u64)
        .map(|at| at.saturating_sub(sent_at) as f64 / 1e6)
        .collect();
    Ok(Run {
        clients,
        connect,
        broadcast_response,
        report,
        latencies_ms: Stats::of(latencies),
        missing: result["missing"].as_u64().unwrap_or(u64::MAX) as usize,
        duplicates: result["twice"].as_u64().unwrap_or(u64::MAX) as usize,
    })
}

/// The child: connects `count` clients subscribed to `topic`, prints `READY <seconds>`,
/// waits for `GO` on stdin, then records when each client gets a message and prints
/// `RESULT {json}`.
pub async fn clients(url: &str, count: usize, topic: &str) -> Result<()> {
    raise_open_files(count as u64 + 64)?;
    let started = Instant::now();
    let connected: Vec<_> = stream::iter(0..count)
        .map(|n| connect_one(url, n, topic))
        .buffer_unordered(CONNECTING)
        .collect()
        .await;
    let sockets = connected.into_iter().collect::<Result<Vec<_>>>()?;
    println!("READY {}", started.elapsed().as_secs_f64());

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if stdin.next_line().await?.as_deref() != Some("GO") {
        return Err("expected GO".into());
    }
    let received = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let listeners: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let received = received.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let (mut first, mut frames) = (None, 0u32);
                loop {
                    tokio::select! {
                        frame = socket.next() => match frame {
                            Some(Ok(Message::Text(text))) if text.contains("\"tick\"") => {
                                frames += 1;
                                if first.is_none() {
                                    first = Some(unix_nanos());
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = stopped.changed() => break,
                    }
                }
                (first, frames)
            })
        })
        .collect();
    let waiting = Instant::now();
    while received.load(Ordering::Relaxed) < count && waiting.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(QUIET).await;
    let _ = stop.send(true);
    let (mut times, mut missing, mut twice) = (Vec::new(), 0, 0);
    for listener in listeners {
        let (first, frames) = listener.await?;
        match first {
            Some(at) => times.push(at),
            None => missing += 1,
        }
        if frames > 1 {
            twice += 1;
        }
    }
    println!(
        "RESULT {}",
        json!({"received_at": times, "missing": missing, "twice": twice})
    );
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_one(url: &str, n: usize, topic: &str) -> Result<Socket> {
    let claims = Claims::new(format!("bench-user-{n}"), Duration::from_secs(3_600));
    let token = sign_hs256(DEV_SECRET, &claims)?;
    let (mut socket, _) = connect_async(format!("{url}/?token={token}")).await?;
    let subscribe = json!({"action": "subscribe", "topic": topic});
    socket.send(Message::text(subscribe.to_string())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(reply)))) if reply.contains("\"subscribed\"") => {
                return Ok(socket);
            }
            Ok(Some(Ok(Message::Text(reply)))) => {
                return Err(format!("subscribe answered {reply}").into());
            }
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("client {n}: no subscribe reply: {other:?}").into()),
        }
    }
}
