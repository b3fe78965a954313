//! Part of scenario `store`: what history adds to a broadcast. The same broadcast, through
//! the real server API handler, to the same subscribers on DynamoDB Local, under a channel
//! configuration where the topic's namespace keeps history and one where it does not:
//! wall time, and the capacity units DynamoDB Local reports for every call
//! (`DynamoDbStore::with_capacity_meter`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use lambda_http::Body;
use lambda_http::http::Method;
use serde_json::{Value, json};
use wsbridge::channels::Channels;
use wsbridge::config::{BroadcastConfig, FanoutConfig, SessionConfig};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::{Context, broadcast};
use wsbridge::sender::ConnectionSender;
use wsbridge::store::DynamoDbStore;
use wsbridge::store::dynamodb::CapacityMeter;

use crate::fixtures::topic;
use crate::report::{Result, Table, fmt_count, ms};

/// Broadcasts per configuration and size; the median time is reported.
const RUNS: usize = 5;

/// One size's broadcasts with and without history.
pub struct Row {
    size: usize,
    plain: Duration,
    kept: Duration,
    plain_units: (f64, f64),
    kept_units: (f64, f64),
}

/// The bench's topics (`bench:<n>`) keeping the last 100 messages for an hour.
fn with_history() -> Result<Channels> {
    Ok(Channels::parse(
        &json!({"namespaces": {"bench": {"subscribe": "authenticated",
                "history": {"size": 100, "ttl_seconds": 3600}}}})
        .to_string(),
    )?)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// One broadcast through the handler; its time and (read, write) units.
async fn once(
    store: &DynamoDbStore,
    meter: &CapacityMeter,
    sender: &Arc<dyn ConnectionSender>,
    channels: &Channels,
    size: usize,
    concurrency: usize,
) -> Result<(Duration, (f64, f64))> {
    let (session, fanout) = (
        SessionConfig::default(),
        Fanout::new(FanoutConfig { concurrency }),
    );
    let ctx = Context {
        store,
        sender: sender.clone(),
        session: &session,
        channels,
        fanout: &fanout,
        deadline: None,
    };
    let body = json!({"topic": topic(size)?.as_str(), "event": "item.updated",
                      "data": {"id": 7, "title": "history bench"}});
    let request = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri("/broadcast")
        .body(Body::from(body.to_string()))?;
    meter.reset();
    let started = Instant::now();
    let response = broadcast::handle(
        &request,
        &ctx,
        // Every broadcast measured in the one call: a slow moment of the machine must not
        // hand one to the background, which this measurement has none of.
        &BroadcastConfig {
            sync_budget: Duration::from_secs(3_600),
            ..BroadcastConfig::default()
        },
        &crate::fixtures::NoBackground,
    )
    .await;
    let elapsed = started.elapsed();
    let report: Value = serde_json::from_slice(response.body())?;
    if report["delivered"].as_u64() != Some(size as u64) {
        return Err(format!("broadcast to {size} delivered {report}").into());
    }
    Ok((elapsed, (meter.read_units(), meter.write_units())))
}

pub async fn measure(
    client: &Client,
    table: &str,
    sizes: &[usize],
    sender: &Arc<dyn ConnectionSender>,
    concurrency: usize,
) -> Result<Vec<Row>> {
    let meter = Arc::new(CapacityMeter::default());
    let store = DynamoDbStore::new(client.clone(), table).with_capacity_meter(meter.clone());
    let (plain, kept) = (Channels::default(), with_history()?);
    let mut rows = Vec::new();
    for &size in sizes {
        let (mut plain_times, mut kept_times) = (Vec::new(), Vec::new());
        let (mut plain_units, mut kept_units) = ((0.0, 0.0), (0.0, 0.0));
        // Alternating, so that a slower moment of the machine weighs on both alike.
        for _ in 0..RUNS {
            let (time, units) = once(&store, &meter, sender, &plain, size, concurrency).await?;
            plain_times.push(time);
            plain_units = units;
            let (time, units) = once(&store, &meter, sender, &kept, size, concurrency).await?;
            kept_times.push(time);
            kept_units = units;
        }
        let row = Row {
            size,
            plain: median(plain_times),
            kept: median(kept_times),
            plain_units,
            kept_units,
        };
        println!(
            "  history, {size}: {:.0} ms without, {:.0} ms with",
            ms(row.plain),
            ms(row.kept)
        );
        rows.push(row);
    }
    Ok(rows)
}

pub fn print(rows: &[Row], latency_ms: u64) {
    let mut table = Table::new(
        format!(
            "What history adds to a broadcast (the handler, DynamoDB Local, {latency_ms} ms posts, median of {RUNS})"
        ),
        &[
            "recipients",
            "without ms",
            "with ms",
            "with ÷ without",
            "RCU without",
            "RCU with",
            "WCU without",
            "WCU with",
        ],
    );
    for row in rows {
        table.row(vec![
            fmt_count(row.size as u64),
            format!("{:.0}", ms(row.plain)),
            format!("{:.0}", ms(row.kept)),
            format!("{:.3}", row.kept.as_secs_f64() / row.plain.as_secs_f64()),
            format!("{:.1}", row.plain_units.0),
            format!("{:.1}", row.kept_units.0),
            format!("{:.1}", row.plain_units.1),
            format!("{:.1}", row.kept_units.1),
        ]);
    }
    table.print();
}

pub fn json(rows: &[Row]) -> Value {
    json!(
        rows.iter()
            .map(|r| json!({
                "recipients": r.size,
                "without_ms": ms(r.plain), "with_ms": ms(r.kept),
                "rcu_without": r.plain_units.0, "rcu_with": r.kept_units.0,
                "wcu_without": r.plain_units.1, "wcu_with": r.kept_units.1,
            }))
            .collect::<Vec<_>>()
    )
}
