//! The recipients and the message every scenario uses, shaped like production ones: API
//! Gateway's 16-character connection ids, UUID user ids (a Cognito `sub`), the
//! `https://{api}.execute-api…/{stage}` endpoint a `$connect` stores, and an envelope of a
//! typical size.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use bytes::Bytes;
use wsbridge::auth::now_seconds;
use wsbridge::channels::{Grants, TopicPattern};
use wsbridge::limits::{ConnectionLimit, LimitPolicy};
use wsbridge::protocol::broadcast::Broadcast;
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::store::{Connection, ConnectionStore, MemoryStore};

use crate::report::Result;

/// What `$connect` stores for a connection of a deployed API. The harness sends every post to
/// its local sink instead, as `WS_MANAGEMENT_ENDPOINT` does for a custom domain.
pub const STORED_ENDPOINT: &str = "https://k3m9pq2r7s.execute-api.eu-west-1.amazonaws.com/prod";

/// The message of every broadcast: the README's example, 180-odd bytes as delivered.
pub const BROADCAST_BODY: &str = r#"{"topic":"bench","event":"item.updated","data":{"list_id":"123","item":{"id":"item-42","title":"Buy oat milk","done":true}}}"#;

/// `B00000000000042=`: 16 characters, as API Gateway's connection ids.
pub fn connection_id(n: usize) -> String {
    format!("B{n:014}=")
}

/// A UUID, as a Cognito or Auth0 `sub`.
pub fn user_id(n: usize) -> String {
    uuid::Uuid::from_u128(n as u128 + 1).to_string()
}

/// The topic with `count` subscribers: each size gets its own.
pub fn topic(count: usize) -> Result<Topic> {
    Ok(Topic::parse(&format!("bench:{count}"))?)
}

/// The envelope every recipient gets, serialized once, as the broadcast handler does.
pub fn payload() -> Result<Bytes> {
    let broadcast = Broadcast::parse(BROADCAST_BODY.as_bytes())
        .map_err(|e| format!("fixture broadcast refused: {e:?}"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let now_ms = i64::try_from(now_seconds() * 1_000)?;
    let bytes = broadcast
        .payload(&id, now_ms, None)
        .map_err(|e| format!("fixture payload refused: {e:?}"))?;
    Ok(Bytes::from(bytes))
}

/// The region and dummy credentials of every client here and of the functions the harness
/// starts: DynamoDB Local keeps one database per access key and region, so the harness and
/// a function must agree to see the same table. Nothing here talks to AWS.
pub const REGION: &str = "eu-west-1";
pub const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "bench");
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    config.build()
}

/// Every fixture user holds one connection.
const ONE_PER_USER: ConnectionLimit = ConnectionLimit {
    per_user: 1,
    policy: LimitPolicy::Refuse,
};

/// A memory store with `max(sizes)` connections; the first `n` subscribe to `topic(n)` for
/// each `n` in `sizes`.
pub async fn memory_store(sizes: &[usize]) -> Result<MemoryStore> {
    let store = MemoryStore::new();
    let most = sizes.iter().copied().max().unwrap_or_default();
    for n in 0..most {
        let id = ConnectionId::new(connection_id(n));
        let connection = Connection {
            id: id.clone(),
            user_id: UserId::new(user_id(n)),
            connected_at: 1_700_000_000_000,
            endpoint: STORED_ENDPOINT.to_owned(),
            expires_at: now_seconds() + 3_600,
            grants: Grants::default(),
        };
        store.register(&connection, &ONE_PER_USER).await?;
        let topics: Vec<TopicPattern> = sizes
            .iter()
            .filter(|size| n < **size)
            .map(|size| topic(*size).map(|t| TopicPattern::exact(&t)))
            .collect::<Result<_>>()?;
        store.subscribe(&id, &topics, &[], 50).await?;
    }
    Ok(store)
}

/// For scenarios whose broadcasts all finish in the call: one handed to the background
/// would be a mistake of the scenario, so starting a part fails.
pub struct NoBackground;

#[async_trait::async_trait]
impl wsbridge::shards::ShardLauncher for NoBackground {
    async fn launch(
        &self,
        shard: &wsbridge::shards::Shard,
    ) -> std::result::Result<(), wsbridge::shards::LaunchError> {
        Err(wsbridge::shards::LaunchError {
            broadcast_id: shard.broadcast_id.clone(),
            part: shard.part,
            reason: "this scenario runs no background broadcasts".into(),
        })
    }
}
