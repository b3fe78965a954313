//! The recipients and the message every scenario uses, shaped like production ones: API
//! Gateway's 16-character connection ids, UUID user ids (a Cognito `sub`), the
//! `https://{api}.execute-api…/{stage}` endpoint a `$connect` stores, and an envelope of a
//! typical size. `FixtureStore` holds them for the scenarios that read recipients from memory.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use bytes::Bytes;
use wsbridge::auth::now_seconds;
use wsbridge::protocol::broadcast::Broadcast;
use wsbridge::protocol::{ConnectionId, Topic, UserId};
use wsbridge::store::Recipient;

use crate::report::Result;

/// What `$connect` stores for a connection of a deployed API. The harness sends every post to
/// its local sink instead, as `WS_MANAGEMENT_ENDPOINT` does for a custom domain.
pub const STORED_ENDPOINT: &str = "https://k3m9pq2r7s.execute-api.eu-west-1.amazonaws.com/prod";

/// The message of every broadcast: the README's example, 180-odd bytes as delivered.
pub const BROADCAST_BODY: &str = r#"{"topic":"bench","event":"item.updated","data":{"list_id":"123","item":{"id":"item-42","title":"Buy oat milk","done":true}}}"#;

/// First characters of the fixtures' ids. API Gateway's ids are base64 (`L0SM9cOFvHcCIhw=`),
/// so their first character spreads over these; a broadcast split into parts by id ranges
/// (`Span::split`) then gets parts of about the same size, as deployed.
const FIRST: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `g00000000000042=`: 16 characters, as API Gateway's connection ids; the first spreads
/// over [`FIRST`].
pub fn connection_id(n: usize) -> String {
    format!("{}{n:014}=", FIRST[n % FIRST.len()] as char)
}

/// The `n` of a fixture id, as sent (`=` percent-encoded in a post's path) or not.
pub fn connection_index(id: &str) -> Option<usize> {
    let id = id.strip_suffix("%3D").or_else(|| id.strip_suffix('='))?;
    let (first, digits) = id.split_at_checked(1)?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    (first.as_bytes()[0] == FIRST[n % FIRST.len()]).then_some(n)
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

/// Recipient `n` as a topic's subscription row gives it to fan-out.
pub fn recipient(n: usize) -> Recipient {
    Recipient {
        connection_id: ConnectionId::new(connection_id(n)),
        user_id: UserId::new(user_id(n)),
        endpoint: STORED_ENDPOINT.to_owned(),
    }
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
