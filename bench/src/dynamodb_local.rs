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
    let table = format!(
        "wsbridge-bench-{}-{}",
        std::process::id(),
        now_seconds() % 100_000
    );
    schema::create_table(&client, &table).await?;
    let expires_at = now_seconds() + 3_600;
    let started = Instant::now();
    let mut rows = 0;
    for &size in sizes {
        let topic_name = topic(size)?.to_string();
        let items: Vec<Item> = (0..size)
            .map(|n| subscription_row(&topic_name, n, expires_at))
            .collect();
        let batches: Vec<Vec<Item>> = items.chunks(25).map(<[Item]>::to_vec).collect();
        stream::iter(batches)
            .map(|batch| write_batch(&client, &table, batch))
            .buffer_unordered(8)
            .try_collect::<()>()
            .await?;
        rows += size;
    }
    println!(
        "filled {table}: {rows} subscription rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((client, table))
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
