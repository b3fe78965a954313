//! "Run this part of that broadcast elsewhere": the seam between a broadcast too large for
//! one invocation and whatever runs its parts. Deployed, each part is an asynchronous
//! invocation of the broadcast function itself; the local gateway runs parts as tasks.

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::ConfigError;

/// The key of a shard event: the broadcast function tells its own asynchronous invocations
/// from HTTP requests by it.
pub const SHARD_EVENT_KEY: &str = "wsbridge_shard";

/// One part of a broadcast to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub broadcast_id: String,
    pub part: u32,
}

impl Shard {
    /// The event an invocation for this part carries.
    pub fn event(&self) -> serde_json::Value {
        json!({ SHARD_EVENT_KEY: self })
    }

    /// The part an event names, if it is a shard event.
    pub fn from_event(event: &[u8]) -> Option<Result<Self, serde_json::Error>> {
        let value: serde_json::Value = serde_json::from_slice(event).ok()?;
        let shard = value.get(SHARD_EVENT_KEY)?;
        Some(serde_json::from_value(shard.clone()))
    }
}

/// Why a part could not be started.
#[derive(Debug, thiserror::Error)]
#[error("could not start part {part} of broadcast {broadcast_id}: {reason}")]
pub struct LaunchError {
    pub broadcast_id: String,
    pub part: u32,
    pub reason: String,
}

/// Starts parts of broadcasts, each to run on its own.
#[async_trait]
pub trait ShardLauncher: Send + Sync {
    /// Starts `shard` and returns once it is accepted (not when it has run).
    async fn launch(&self, shard: &Shard) -> Result<(), LaunchError>;
}

/// Parts as asynchronous invocations (`InvocationType=Event`) of a Lambda function: Lambda
/// queues the event, retries a failed invocation twice, and runs parts in parallel.
pub struct LambdaLauncher {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaLauncher {
    /// Invokes the function this runs in: Lambda names it in `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn this_function(config: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .ok_or(ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"))?;
        Ok(Self::new(config, function))
    }

    /// Invokes `function` (a name or ARN): in Lambda, this function's own name,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn new(config: &aws_config::SdkConfig, function: impl Into<String>) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(config),
            function: function.into(),
        }
    }
}

#[async_trait]
impl ShardLauncher for LambdaLauncher {
    async fn launch(&self, shard: &Shard) -> Result<(), LaunchError> {
        let failed = |reason: String| LaunchError {
            broadcast_id: shard.broadcast_id.clone(),
            part: shard.part,
            reason,
        };
        let payload = serde_json::to_vec(&shard.event()).map_err(|e| failed(e.to_string()))?;
        let output = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| failed(aws_sdk_lambda::error::DisplayErrorContext(&e).to_string()))?;
        // 202: queued. Anything else means the event was not taken.
        match output.status_code() {
            202 => Ok(()),
            status => Err(failed(format!("Invoke answered {status}, not 202"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_event_reads_back_and_other_events_are_not_shards() {
        let shard = Shard {
            broadcast_id: "b-1".into(),
            part: 3,
        };
        let event = serde_json::to_vec(&shard.event()).unwrap();
        assert_eq!(Shard::from_event(&event).unwrap().unwrap(), shard);
        assert!(Shard::from_event(br#"{"topic":"x","event":"e"}"#).is_none());
        assert!(Shard::from_event(b"not json").is_none());
        assert!(
            Shard::from_event(br#"{"wsbridge_shard":{"part":"x"}}"#)
                .unwrap()
                .is_err()
        );
    }
}
