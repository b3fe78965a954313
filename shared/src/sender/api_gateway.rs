//! The management API: posts through the lean path (`post`), every other call through
//! `aws-sdk-apigatewaymanagement`.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::{retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, SdkError};

use super::post::Poster;
use super::transport::ATTEMPT_TIMEOUT;
use super::{ConnectionSender, Payload, SendError};
use crate::store::Recipient;

/// API Gateway's management API, which lives at the WebSocket API's own
/// `https://{domain}/{stage}`. PostToConnection, the call fan-out makes once per recipient,
/// goes through `Poster`, signed with the SDK config's credentials and region; the other
/// calls through the SDK, one client per endpoint, all sharing the SDK config's HTTP client.
///
/// Neither retries on its own: fan-out retries 429 and 5xx itself, within the invocation's
/// deadline, and counts them.
pub struct ApiGatewaySender {
    config: aws_config::SdkConfig,
    endpoint_override: Option<String>,
    clients: RwLock<HashMap<String, Client>>,
    poster: Poster,
}

impl ApiGatewaySender {
    /// `endpoint_override` sends every post there instead of the connection's stored
    /// endpoint (custom domains, the local gateway).
    pub fn new(config: &aws_config::SdkConfig, endpoint_override: Option<String>) -> Self {
        Self {
            config: config.clone(),
            poster: Poster::new(config, endpoint_override.as_deref()),
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
                .retry_config(RetryConfig::disabled())
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                        .build(),
                )
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
    async fn send(&self, recipient: &Recipient, payload: &Payload) -> Result<(), SendError> {
        self.poster
            .post(
                &recipient.endpoint,
                recipient.connection_id.as_str(),
                payload,
            )
            .await
    }

    async fn close(&self, recipient: &Recipient) -> Result<(), SendError> {
        self.client_for(&recipient.endpoint)
            .delete_connection()
            .connection_id(recipient.connection_id.as_str())
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// An SDK call's error: a service error by its status (`SendError::from_status`); a
/// timeout or a connection that failed is worth another try.
fn classify<E>(error: SdkError<E, HttpResponse>) -> SendError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let reason = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::ServiceError(service) => {
            SendError::from_status(service.raw().status().as_u16(), reason)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SendError::Transient(reason)
        }
        _ => SendError::Failed(reason),
    }
}
