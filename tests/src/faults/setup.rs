//! A `DynamoDbStore` whose every call goes through a [`FaultProxy`], and a view of the same
//! table read directly from DynamoDB Local (never through the proxy), to check the state a
//! fault left behind.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use wsbridge::store::DynamoDbStore;
use wsbridge::store::dynamodb::schema;
use wsbridge::store::jobs::Progress;

use super::FaultProxy;
use wsbridge_local::local_sdk_config;

use crate::dynamodb_endpoint;

/// The client's attempt timeout in these tests: short, so that a held request costs little,
/// and far above what DynamoDB Local takes to answer, even on a 2-core machine busy with
/// other builds (where answers of over a second were seen: any attempt slower than this is a
/// fault no case asked for).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts the SDK makes per call: the standard retry mode's, as the functions get it
/// (`aws_config` with `BehaviorVersion::latest()`: standard mode, 3 attempts).
pub fn sdk_attempts() -> u64 {
    u64::from(RetryConfig::standard().max_attempts())
}

/// A store on a fresh table through a fault proxy, and the same table seen directly.
pub struct Faulty {
    pub proxy: FaultProxy,
    /// The store under test: every call goes through the proxy.
    pub store: DynamoDbStore,
    /// The table as it is, read past the proxy.
    pub table: TableView,
}

/// Store partitions handed out so far (see `Faulty::another`).
static PARTITIONS: AtomicU32 = AtomicU32::new(0);

/// A fresh table on DynamoDB Local, and a store on it through a new proxy. The store's
/// client retries as the functions' clients do (standard mode, same attempts), only with
/// millisecond backoff so that tests stay fast, and with [`ATTEMPT_TIMEOUT`].
pub async fn faulty_store() -> Faulty {
    static TABLES: AtomicU32 = AtomicU32::new(0);
    let endpoint = dynamodb_endpoint();
    let direct = Client::new(&local_sdk_config(Some(&endpoint)));
    let n = TABLES.fetch_add(1, Ordering::Relaxed);
    let table = format!("wsbridge-faults-{}-{n}", std::process::id());
    if let Err(e) = schema::create_table(&direct, &table).await {
        panic!("cannot create table {table} on DynamoDB Local at {endpoint}: {e}");
    }
    Faulty::on(TableView {
        client: direct,
        table,
    })
    .await
}

impl Faulty {
    async fn on(table: TableView) -> Self {
        let proxy = FaultProxy::start(&dynamodb_endpoint()).await;
        let n = PARTITIONS.fetch_add(1, Ordering::Relaxed);
        let config = aws_sdk_dynamodb::config::Builder::from(&local_sdk_config(Some(proxy.url())))
            .retry_config(
                RetryConfig::standard()
                    .with_initial_backoff(Duration::from_millis(5))
                    .with_max_backoff(Duration::from_millis(40)),
            )
            // The SDK's retry quota (a token bucket) is shared by every client of a
            // partition in the process: one partition per store, so that one test's
            // failures cannot spend another's retries.
            .retry_partition(RetryPartition::new(format!("wsbridge-faults-{n}")))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        let store = DynamoDbStore::new(Client::from_conf(config), table.name());
        Faulty {
            proxy,
            store,
            table,
        }
    }

    /// Another store on the same table, through a proxy of its own: its rules and counts are
    /// its own, so cases can run at the same time.
    pub async fn another(&self) -> Faulty {
        Faulty::on(self.table.clone()).await
    }
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The table's rows, read directly and raw: expired rows and all (the README's "Table
/// design" gives the keys).
#[derive(Clone)]
pub struct TableView {
    client: Client,
    table: String,
}

impl TableView {
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: &str) -> Option<Item> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .expect("DynamoDB Local answers GetItem")
            .item
    }

    /// The connection row of `id`.
    pub async fn connection(&self, id: &str) -> Option<Item> {
        self.get(format!("conn#{id}"), "conn").await
    }

    /// The `topics` set on `id`'s connection row (empty without a row).
    pub async fn topics_of(&self, id: &str) -> BTreeSet<String> {
        match self
            .connection(id)
            .await
            .and_then(|row| row.get("topics").cloned())
        {
            Some(AttributeValue::Ss(topics)) => topics.into_iter().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// The connection ids with a subscription row of `topic`.
    pub async fn subscribers(&self, topic: &str) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("topic#{topic}")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.expect("DynamoDB Local answers Query");
            if let Some(AttributeValue::S(sk)) = item.get("sk") {
                ids.insert(sk.trim_start_matches("conn#").to_owned());
            }
        }
        ids
    }

    /// The connection ids `user`'s row counts (expired entries included).
    pub async fn counted(&self, user: &str) -> BTreeSet<String> {
        match self
            .get(format!("user#{user}"), "conns")
            .await
            .and_then(|row| row.get("conns").cloned())
        {
            Some(AttributeValue::M(entries)) => entries.into_keys().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// The connection ids `user`'s presence row of `topic` holds (expired entries included).
    pub async fn present(&self, topic: &str, user: &str) -> BTreeSet<String> {
        match self
            .get(format!("presence#{topic}"), &format!("user#{user}"))
            .await
            .and_then(|row| row.get("conns").cloned())
        {
            Some(AttributeValue::M(entries)) => entries.into_keys().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Everything `id` left behind: its connection row, the topics whose subscription rows
    /// name it (of `topics`), and whether `user`'s row counts it.
    pub async fn traces(&self, id: &str, user: &str, topics: &[&str]) -> Traces {
        let mut subscriptions = BTreeSet::new();
        for topic in topics {
            if self.subscribers(topic).await.contains(id) {
                subscriptions.insert((*topic).to_owned());
            }
        }
        Traces {
            connection_row: self.connection(id).await.is_some(),
            subscription_rows: subscriptions,
            counted: self.counted(user).await.contains(id),
        }
    }
}

/// A background broadcast's rows (the job row, and a row per part), as the table holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BroadcastRows {
    /// Its job row (audience, payload) is there.
    pub job: bool,
    /// Its part rows, in order.
    pub parts: Vec<PartRow>,
}

/// A part row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    /// What is left of it, and what its runs did.
    pub progress: Progress,
    pub runs: u32,
    pub restarts: u32,
    /// The runner holding it; `None`: nobody.
    pub runner: Option<String>,
}

impl TableView {
    /// The rows of background broadcast `id` (none when it was never recorded).
    pub async fn broadcast(&self, id: &str) -> BroadcastRows {
        let mut rows = BroadcastRows::default();
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("bcast#{id}")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            let item = item.expect("DynamoDB Local answers Query");
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            let number = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("part row without {name}: {item:?}"))
            };
            match text("sk").as_deref() {
                Some("job") => rows.job = true,
                _ => rows.parts.push(PartRow {
                    progress: serde_json::from_str(&text("progress").unwrap_or_default())
                        .unwrap_or_else(|e| panic!("part row's progress: {e}: {item:?}")),
                    runs: number("runs"),
                    restarts: number("restarts"),
                    runner: text("runner"),
                }),
            }
        }
        rows
    }
}

/// What is left of a connection in the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Traces {
    pub connection_row: bool,
    /// Topics with a subscription row of the connection.
    pub subscription_rows: BTreeSet<String>,
    /// Whether its user's row still counts it against the connection limit.
    pub counted: bool,
}

impl Traces {
    /// Nothing at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// A registered connection holding `topics`.
    pub fn registered(topics: &[&str]) -> Self {
        Self {
            connection_row: true,
            subscription_rows: topics.iter().map(|t| (*t).to_owned()).collect(),
            counted: true,
        }
    }
}
