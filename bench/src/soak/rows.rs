//! What the store holds once every client has left: it must hold nothing.

use aws_sdk_dynamodb::Client;
use futures::StreamExt;
use serde::Serialize;
use wsbridge::protocol::{Topic, UserId};
use wsbridge::store::dynamodb::schema::{PK, SK};
use wsbridge::store::{Audience, Store};

use super::{Churn, pool_topic, user, user_topic};
use crate::report::Result;

/// Rows (or, in memory, entries) left, by kind.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RowsLeft {
    pub connections: u64,
    pub subscriptions: u64,
    pub users: u64,
    pub other: u64,
    /// How they were counted.
    pub counted_by: &'static str,
    /// A few of the keys left, to look them up.
    pub examples: Vec<String>,
}

impl RowsLeft {
    pub fn total(&self) -> u64 {
        self.connections + self.subscriptions + self.users + self.other
    }
}

/// The in-memory store, through what its traits show: live connections (by count and by
/// the all-connections target), each topic's subscribers, each user's connections.
pub async fn in_memory(store: &dyn Store, churn: &Churn) -> Result<RowsLeft> {
    let mut left = RowsLeft {
        counted_by: "the store's counts: connections, every topic's subscribers, every user's connections",
        ..RowsLeft::default()
    };
    let all = recipients(store, &Audience::All).await?;
    left.connections = store.count_connections().await?.max(all);
    let users: Vec<String> = (0..churn.users()).map(user).collect();
    let topics = (0..churn.topics)
        .map(pool_topic)
        .chain(users.iter().map(|u| user_topic(u)));
    for topic in topics {
        let count = recipients(store, &Audience::topic(&Topic::parse(&topic)?)).await?;
        if count > 0 {
            left.examples.push(format!("topic {topic}: {count}"));
        }
        left.subscriptions += count;
    }
    for name in &users {
        let user = UserId::new(name.clone());
        let held = store.user_connections(&user).await?.len() as u64;
        let reached = recipients(store, &Audience::User(user)).await?;
        if held.max(reached) > 0 {
            left.users += 1;
            left.examples
                .push(format!("user {name}: {}", held.max(reached)));
        }
    }
    left.examples.truncate(10);
    Ok(left)
}

async fn recipients(store: &dyn Store, audience: &Audience) -> Result<u64> {
    let mut pages = store.recipients(audience);
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page?.len() as u64;
    }
    Ok(count)
}

/// Every item of the table. This is a Scan, which product code never does (it reads the
/// whole table; `tests/tests/no_scan.rs` keeps it out of everything but this harness): here
/// it is the one way to prove a table holds nothing at all, rows under keys nobody would
/// think to Query included, and it runs once, on DynamoDB Local, after the run.
pub async fn in_dynamodb(client: &Client, table: &str) -> Result<RowsLeft> {
    let mut left = RowsLeft {
        counted_by: "a consistent Scan of the table on DynamoDB Local",
        ..RowsLeft::default()
    };
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for item in page?.items() {
            let key = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let (pk, sk) = (key(PK), key(SK));
            match pk.split_once('#').map(|(kind, _)| kind) {
                Some("conn") => left.connections += 1,
                Some("topic") => left.subscriptions += 1,
                Some("user") => left.users += 1,
                _ => left.other += 1,
            }
            if left.examples.len() < 10 {
                left.examples.push(format!("{pk} / {sk}"));
            }
        }
    }
    Ok(left)
}
