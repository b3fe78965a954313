//! The one definition of the table: keys, indexes and TTL attribute. The store reads and
//! writes by it, the local gateway and the tests create their tables from it, and the
//! template is checked against it.
//!
//! | row          | pk              | sk          | other attributes                                     |
//! |--------------|-----------------|-------------|------------------------------------------------------|
//! | connection   | `conn#<id>`     | `conn`      | connection_id, user_id, connected_at, endpoint,      |
//! |              |                 |             | expires_at, topics (string set), gsi_user, gsi_shard |
//! | subscription | `topic#<topic>` | `conn#<id>` | connection_id, user_id, endpoint, expires_at         |
//!
//! * connections of topic T: Query on the table, `pk = topic#T`;
//! * connections of user U: Query on `by_user`, `gsi_user = U`;
//! * all connections: one Query per shard on `by_shard`, `gsi_shard = 0..SHARDS`, so that no
//!   single partition key carries every connection;
//! * subscriptions of a connection (for `$disconnect`): the `topics` set on its row.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use crate::store::StoreError;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
pub const BY_USER_INDEX: &str = "by_user";
pub const BY_SHARD_INDEX: &str = "by_shard";
pub const GSI_USER: &str = "gsi_user";
pub const GSI_SHARD: &str = "gsi_shard";

/// Partitions of the all-connections index. 16 keys take 16 × 1 000 writes/s of connects
/// before any one index partition throttles; reading all connections costs 16 Queries.
pub const SHARDS: u32 = 16;

/// Attributes the indexes copy besides keys: exactly what fan-out reads.
pub const INDEX_PROJECTION: [&str; 4] = ["connection_id", "user_id", "endpoint", TTL_ATTRIBUTE];

// The builders below only fail when a required field is unset; every field is a constant
// here, so their `expect`s cannot fire on any input.

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("attribute name and key type are set")
}

fn string_attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute name and type are set")
}

/// The table's key schema.
pub fn key_schema() -> Vec<KeySchemaElement> {
    vec![key(PK, KeyType::Hash), key(SK, KeyType::Range)]
}

/// Every key attribute of the table and its indexes (all strings).
pub fn attribute_definitions() -> Vec<AttributeDefinition> {
    [PK, SK, GSI_USER, GSI_SHARD]
        .into_iter()
        .map(string_attribute)
        .collect()
}

/// The two global secondary indexes. Only connection rows carry `gsi_user`/`gsi_shard`, so
/// the indexes are sparse: subscription rows never enter them.
pub fn global_secondary_indexes() -> Vec<GlobalSecondaryIndex> {
    [(BY_USER_INDEX, GSI_USER), (BY_SHARD_INDEX, GSI_SHARD)]
        .into_iter()
        .map(|(name, hash)| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash))
                .key_schema(key(PK, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(
                            INDEX_PROJECTION.iter().map(|a| a.to_string()).collect(),
                        ))
                        .build(),
                )
                .build()
                .expect("index name, key schema and projection are set")
        })
        .collect()
}

/// Creates the table (on-demand) with its indexes and TTL unless it exists; waits until it
/// is active. For the local gateway and tests: deployments get it from `template.yaml`.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema()))
        .set_attribute_definitions(Some(attribute_definitions()))
        .set_global_secondary_indexes(Some(global_secondary_indexes()))
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(super::backend("CreateTable", e)),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(60))
        .await
        .map_err(|e| {
            StoreError::backend(
                "DescribeTable",
                crate::store::Failure::Unavailable,
                aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
            )
        })?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .expect("attribute name and enabled are set"),
        )
        .send()
        .await
        .map_err(|e| super::backend("UpdateTimeToLive", e))?;
    Ok(())
}
