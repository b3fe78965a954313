//! Scenario `store`: the engine's fan-out with recipients read from DynamoDB Local: how soon
//! the first post goes out (the first Query page), the total, and the read capacity consumed
//! (`DynamoDbStore::with_consumed_capacity`), next to the same fan-out from memory.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use wsbridge::sender::{ApiGatewaySender, ConnectionSender, Payload, SendError};
use wsbridge::store::dynamodb::ConsumedCapacity;
use wsbridge::store::{Audience, DynamoDbStore, Recipient, RecipientStore};

use crate::dynamodb_local::{subscription_row_size, table_with_subscribers};
use crate::fixture_store::{FixtureStore, PAGE_SIZE};
use crate::fixtures::{payload, sdk_config, topic};
use crate::history;
use crate::load::engine_posts;
use crate::report::{Result, Table, fmt_count, machine, ms};
use crate::sink::Sink;

/// Remembers when the first post of a fan-out started.
struct FirstSend {
    inner: Arc<dyn ConnectionSender>,
    first: OnceLock<Instant>,
}

#[async_trait]
impl ConnectionSender for FirstSend {
    async fn send(
        &self,
        recipient: &Recipient,
        payload: &Payload,
    ) -> std::result::Result<(), SendError> {
        self.first.get_or_init(Instant::now);
        self.inner.send(recipient, payload).await
    }

    async fn close(&self, recipient: &Recipient) -> std::result::Result<(), SendError> {
        self.inner.close(recipient).await
    }
}

/// Reading a topic's recipients alone, page by page, without sending.
struct Read {
    size: usize,
    pages: usize,
    first_page: Duration,
    all: Duration,
    read_units: f64,
}

/// A fan-out from DynamoDB Local and the same one from memory.
struct Fanout {
    latency_ms: u64,
    size: usize,
    first_send: Duration,
    total: Duration,
    memory_total: Duration,
    read_units: f64,
}

/// Strongly consistent reads (a topic's subscribers are read so): a unit per 4 KB read
/// (pages round up; ignored here).
fn expected_read_units(size: usize) -> f64 {
    (size * subscription_row_size()) as f64 / 4_096.0
}

pub async fn run(
    endpoint: &str,
    sizes: &[usize],
    latencies_ms: &[u64],
    concurrency: usize,
) -> Result<Value> {
    let (client, table) = table_with_subscribers(endpoint, sizes).await?;
    let memory = FixtureStore::nested(sizes)?;
    let payload = payload()?;
    // Pages of 1 000 rows, as the broadcast function reads them.
    let counted = |consumed: &Arc<ConsumedCapacity>| {
        DynamoDbStore::new(client.clone(), &table)
            .with_page_size(PAGE_SIZE as i32)
            .with_consumed_capacity(consumed.clone())
    };

    let mut reads = Vec::new();
    for &size in sizes {
        let consumed = Arc::new(ConsumedCapacity::default());
        let store = counted(&consumed);
        let target = Audience::topic(&topic(size)?);
        let started = Instant::now();
        let (mut pages, mut items, mut first_page) = (0, 0, None);
        let mut stream = store.recipients(&target);
        while let Some(page) = stream.next().await {
            pages += 1;
            items += page?.len();
            first_page.get_or_insert(started.elapsed());
        }
        if items != size {
            return Err(format!("read {items} recipients of {target:?}, expected {size}").into());
        }
        reads.push(Read {
            size,
            pages,
            first_page: first_page.unwrap_or_default(),
            all: started.elapsed(),
            read_units: consumed.read_units(),
        });
    }

    let mut fanouts = Vec::new();
    for &latency_ms in latencies_ms {
        let sink = Sink::spawn(Duration::from_millis(latency_ms)).await?;
        let sender: Arc<dyn ConnectionSender> = Arc::new(ApiGatewaySender::new(
            &sdk_config(None),
            Some(sink.endpoint()),
        ));
        // Warm the connection pool up, as a warm Lambda's is.
        let smallest = sizes.iter().copied().min().unwrap_or_default();
        engine_posts(
            &memory,
            &sender,
            &topic(smallest)?,
            smallest,
            concurrency,
            &payload,
        )
        .await?;
        for &size in sizes {
            let consumed = Arc::new(ConsumedCapacity::default());
            let store = counted(&consumed);
            let first = Arc::new(FirstSend {
                inner: sender.clone(),
                first: OnceLock::new(),
            });
            let started = Instant::now();
            let first_sender: Arc<dyn ConnectionSender> = first.clone();
            engine_posts(
                &store,
                &first_sender,
                &topic(size)?,
                size,
                concurrency,
                &payload,
            )
            .await?;
            let total = started.elapsed();
            let first_send = first
                .first
                .get()
                .map_or(Duration::ZERO, |at| at.duration_since(started));
            let from_memory = Instant::now();
            engine_posts(&memory, &sender, &topic(size)?, size, concurrency, &payload).await?;
            let memory_total = from_memory.elapsed();
            println!(
                "  {latency_ms} ms, {size}: first send {:.1} ms, total {:.0} ms",
                ms(first_send),
                ms(total)
            );
            fanouts.push(Fanout {
                latency_ms,
                size,
                first_send,
                total,
                memory_total,
                read_units: consumed.read_units(),
            });
        }
        sink.stop().await;
    }
    // What history adds, at the slowest post latency measured.
    let history_latency = latencies_ms.last().copied().unwrap_or(20);
    let sink = Sink::spawn(Duration::from_millis(history_latency)).await?;
    let sender: Arc<dyn ConnectionSender> = Arc::new(ApiGatewaySender::new(
        &sdk_config(None),
        Some(sink.endpoint()),
    ));
    // History costs a constant per message, not per recipient: the sizes up to 10 000
    // show it (a broadcast of 50 000 at 20 ms would take 20 s, ten times over).
    let history_sizes: Vec<usize> = sizes.iter().copied().filter(|&n| n <= 10_000).collect();
    let history_rows =
        history::measure(&client, &table, &history_sizes, &sender, concurrency).await?;
    sink.stop().await;
    print_tables(&reads, &fanouts, concurrency);
    history::print(&history_rows, history_latency);
    Ok(json!({
        "scenario": "store",
        "machine": machine(),
        "options": {
            "sizes": sizes, "latencies_ms": latencies_ms, "concurrency": concurrency,
            "row_bytes": subscription_row_size(), "payload_bytes": payload.len(),
        },
        "reads": reads.iter().map(|r| json!({
            "recipients": r.size, "pages": r.pages, "first_page_ms": ms(r.first_page),
            "all_ms": ms(r.all), "read_units": r.read_units,
            "expected_read_units": expected_read_units(r.size),
        })).collect::<Vec<_>>(),
        "fanouts": fanouts.iter().map(|f| json!({
            "latency_ms": f.latency_ms, "recipients": f.size,
            "first_send_ms": ms(f.first_send), "total_ms": ms(f.total),
            "posts_per_second": f.size as f64 / f.total.as_secs_f64(),
            "memory_store_total_ms": ms(f.memory_total), "read_units": f.read_units,
        })).collect::<Vec<_>>(),
        "history": { "latency_ms": history_latency, "rows": history::json(&history_rows) },
    }))
}

fn print_tables(reads: &[Read], fanouts: &[Fanout], concurrency: usize) {
    let mut table = Table::new(
        format!(
            "Reading a topic's recipients from DynamoDB Local (rows of {} bytes)",
            subscription_row_size()
        ),
        &[
            "recipients",
            "Query pages",
            "first page ms",
            "all ms",
            "recipients/s",
            "RCU",
            "RCU expected",
            "RCU per 1 000",
        ],
    );
    for read in reads {
        table.row(vec![
            fmt_count(read.size as u64),
            read.pages.to_string(),
            format!("{:.1}", ms(read.first_page)),
            format!("{:.0}", ms(read.all)),
            format!("{:.0}", read.size as f64 / read.all.as_secs_f64()),
            format!("{:.1}", read.read_units),
            format!("{:.1}", expected_read_units(read.size)),
            format!("{:.2}", read.read_units * 1_000.0 / read.size as f64),
        ]);
    }
    table.print();
    let mut table = Table::new(
        format!("Fan-out with recipients from DynamoDB Local, concurrency {concurrency}"),
        &[
            "latency ms",
            "recipients",
            "first send ms",
            "total ms",
            "posts/s",
            "from memory: total ms",
            "DynamoDB ÷ memory",
            "RCU",
        ],
    );
    for fanout in fanouts {
        table.row(vec![
            fanout.latency_ms.to_string(),
            fmt_count(fanout.size as u64),
            format!("{:.1}", ms(fanout.first_send)),
            format!("{:.0}", ms(fanout.total)),
            format!("{:.0}", fanout.size as f64 / fanout.total.as_secs_f64()),
            format!("{:.0}", ms(fanout.memory_total)),
            format!(
                "{:.2}",
                fanout.total.as_secs_f64() / fanout.memory_total.as_secs_f64()
            ),
            format!("{:.1}", fanout.read_units),
        ]);
    }
    table.print();
}
