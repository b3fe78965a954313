//! "Post this to that connection": the seam between fan-out and API Gateway's management API.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, SdkError};
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;

use crate::store::Recipient;

/// Why one post failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 410: the connection no longer exists; its rows should go.
    #[error("connection is gone")]
    Gone,
    /// 429: the account's `@connections` rate, or the client's buffer, is full.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Anything else: 403, 413, 5xx, network.
    #[error("{0}")]
    Failed(String),
}

/// Delivers one payload to one connection.
#[async_trait]
pub trait ConnectionSender: Send + Sync {
    async fn send(&self, recipient: &Recipient, payload: &[u8]) -> Result<(), SendError>;
}

/// PostToConnection through `aws-sdk-apigatewaymanagement`. The management API lives at the
/// WebSocket API's own `https://{domain}/{stage}`, so there is one client per endpoint; all
/// share the SDK config's HTTP client, hence one connection pool.
pub struct ApiGatewaySender {
    config: aws_config::SdkConfig,
    endpoint_override: Option<String>,
    clients: RwLock<HashMap<String, Client>>,
}

impl ApiGatewaySender {
    /// `endpoint_override` sends every post there instead of the connection's stored
    /// endpoint (custom domains, the local gateway).
    pub fn new(config: &aws_config::SdkConfig, endpoint_override: Option<String>) -> Self {
        Self {
            config: config.clone(),
            endpoint_override,
            clients: RwLock::default(),
        }
    }

    fn client_for(&self, endpoint: &str) -> Client {
        let endpoint = self.endpoint_override.as_deref().unwrap_or(endpoint);
        // Clients are cheap handles; a poisoned lock only means another thread panicked
        // between two map operations, which leaves the map consistent.
        if let Some(client) = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
        {
            return client.clone();
        }
        let client = Client::from_conf(
            aws_sdk_apigatewaymanagement::config::Builder::from(&self.config)
                .endpoint_url(endpoint)
                .build(),
        );
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_owned())
            .or_insert(client)
            .clone()
    }
}

#[async_trait]
impl ConnectionSender for ApiGatewaySender {
    async fn send(&self, recipient: &Recipient, payload: &[u8]) -> Result<(), SendError> {
        self.client_for(&recipient.endpoint)
            .post_to_connection()
            .connection_id(recipient.connection_id.as_str())
            .data(Blob::new(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn classify<R: std::fmt::Debug>(error: SdkError<PostToConnectionError, R>) -> SendError {
    match error.as_service_error() {
        Some(PostToConnectionError::GoneException(_)) => SendError::Gone,
        Some(PostToConnectionError::LimitExceededException(_)) => {
            SendError::Throttled(DisplayErrorContext(&error).to_string())
        }
        _ => SendError::Failed(DisplayErrorContext(&error).to_string()),
    }
}
