//! DynamoDB Local for the `store` and `memory` scenarios: started with the repository's
//! script (and stopped by its PID when done) unless an endpoint is given, and a table of
//! subscribers filled fast with BatchWriteItem.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt, stream};
use wsbridge::auth::now_seconds;
use wsbridge::store::dynamodb::schema::{self, PK, SK, TTL_ATTRIBUTE};

use crate::fixtures::{STORED_ENDPOINT, connection_id, sdk_config, topic, user_id};
use crate::report::Result;

/// A DynamoDB Local to use; stopped when dropped if this harness started it.
pub struct DynamoDbLocal {
    pub endpoint: String,
    started_pid: Option<String>,
}

fn script() -> std::path::PathBuf {
    crate::workspace_root().join("scripts/dynamodb-local.sh")
}

impl DynamoDbLocal {
    pub fn start_or_use(endpoint: Option<String>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            return Ok(Self {
                endpoint,
                started_pid: None,
            });
        }
        println!("starting DynamoDB Local (scripts/dynamodb-local.sh start)");
        let output = Command::new(script()).arg("start").output()?;
        if !output.status.success() {
            return Err(format!(
                "scripts/dynamodb-local.sh start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8(output.stdout)?;
        let mut words = stdout.split_whitespace();
        let (Some(endpoint), Some(pid)) = (words.next(), words.next()) else {
            return Err(format!("scripts/dynamodb-local.sh start printed {stdout:?}").into());
        };
        println!("DynamoDB Local at {endpoint} (pid {pid})");
        Ok(Self {
            endpoint: endpoint.to_owned(),
            started_pid: Some(pid.to_owned()),
        })
    }
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        if let Some(pid) = &self.started_pid {
            let _ = Command::new(script()).args(["stop", pid]).status();
        }
    }
}

type Item = HashMap<String, AttributeValue>;

/// A subscription row as `DynamoDbStore::subscribe` writes it (see `schema`).
fn subscription_row(topic_name: &str, n: usize, expires_at: u64) -> Item {
    let id = connection_id(n);
    HashMap::from([
        (
            PK.to_owned(),
            AttributeValue::S(format!("topic#{topic_name}")),
        ),
        (SK.to_owned(), AttributeValue::S(format!("conn#{id}"))),
        ("connection_id".to_owned(), AttributeValue::S(id)),
        ("user_id".to_owned(), AttributeValue::S(user_id(n))),
        (
            "endpoint".to_owned(),
            AttributeValue::S(STORED_ENDPOINT.to_owned()),
        ),
        (
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(expires_at.to_string()),
        ),
    ])
}

/// DynamoDB's size of an item: names plus values (strings in UTF-8 bytes; a number about
/// one byte per two digits plus one), as read capacity is charged.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    _ => 0,
                }
        })
        .sum()
}

/// Size of one subscription row of the fixtures, in bytes.
pub fn subscription_row_size() -> usize {
    item_size(&subscription_row("bench:10000", 1, now_seconds()))
}

/// A table (from the one schema definition) holding `n` subscribers of `topic(n)` for each
/// size: only the subscription rows, the rows a topic fan-out reads.
pub async fn table_with_subscribers(endpoint: &str, sizes: &[usize]) -> Result<(Client, String)> {
    let client = Client::new(&sdk_config(Some(endpoint)));
    let table = new_table(&client).await?;
    let filled = fill(&client, &table, sizes, 8).await?;
    println!(
        "filled {table}: {} subscription rows in {:.1} s",
        filled.rows, filled.seconds
    );
    Ok((client, table))
}

/// A new, empty table with a name of its own.
pub async fn new_table(client: &Client) -> Result<String> {
    let table = format!(
        "wsbridge-bench-{}-{}",
        std::process::id(),
        now_seconds() % 100_000
    );
    schema::create_table(client, &table).await?;
    Ok(table)
}

/// How a table was filled.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    pub rows: usize,
    pub seconds: f64,
    pub parallel: usize,
}

impl Filled {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
}

/// Writes `n` subscribers of `topic(n)` for each size, BatchWriteItem calls of 25 rows,
/// `parallel` at once; rows are made batch by batch, so a million never sit in memory.
pub async fn fill(
    client: &Client,
    table: &str,
    sizes: &[usize],
    parallel: usize,
) -> Result<Filled> {
    let expires_at = now_seconds() + 6 * 3_600;
    let started = Instant::now();
    let mut batches = Vec::new();
    for &size in sizes {
        let topic_name = topic(size)?.to_string();
        for start in (0..size).step_by(25) {
            batches.push((topic_name.clone(), start..(start + 25).min(size)));
        }
    }
    stream::iter(batches)
        .map(|(topic_name, range)| {
            let items: Vec<Item> = range
                .map(|n| subscription_row(&topic_name, n, expires_at))
                .collect();
            write_batch(client, table, items)
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<()>()
        .await?;
    Ok(Filled {
        rows: sizes.iter().sum(),
        seconds: started.elapsed().as_secs_f64(),
        parallel,
    })
}

async fn write_batch(client: &Client, table: &str, items: Vec<Item>) -> Result<()> {
    let mut requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build()?;
            Ok(WriteRequest::builder().put_request(put).build())
        })
        .collect::<Result<_>>()?;
    for _ in 0..20 {
        let output = client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await?;
        requests = output
            .unprocessed_items
            .and_then(|mut unprocessed| unprocessed.remove(table))
            .unwrap_or_default();
        if requests.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("BatchWriteItem left items unprocessed 20 times".into())
}
