//! The management API through `aws-sdk-apigatewaymanagement`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_apigatewaymanagement::config::{
    ConfigBag, Intercept, RuntimeComponents, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_apigatewaymanagement::error::{BoxError, DisplayErrorContext, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::{ConnectionSender, Payload, SendError};
use crate::store::Recipient;

/// Most a post may take before it counts as a transient failure.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostToConnection through `aws-sdk-apigatewaymanagement`. The management API lives at the
/// WebSocket API's own `https://{domain}/{stage}`, so there is one client per endpoint; all
/// share the SDK config's HTTP client, hence one connection pool.
///
/// The SDK's own retries are off: fan-out retries 429 and 5xx itself, within the
/// invocation's deadline, and counts them.
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

/// Puts the shared payload into the request just before signing. The SDK's `Blob` owns a
/// `Vec<u8>`, which would copy the message once per recipient; a `Bytes` body is a
/// reference-counted view of the one buffer.
#[derive(Debug)]
struct SharedBody(Bytes);

impl Intercept for SharedBody {
    fn name(&self) -> &'static str {
        "wsbridge::SharedBody"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        request
            .headers_mut()
            .insert("content-length", self.0.len().to_string());
        *request.body_mut() = SdkBody::from(self.0.clone());
        Ok(())
    }
}

#[async_trait]
impl ConnectionSender for ApiGatewaySender {
    async fn send(&self, recipient: &Recipient, payload: &Payload) -> Result<(), SendError> {
        self.client_for(&recipient.endpoint)
            .post_to_connection()
            .connection_id(recipient.connection_id.as_str())
            // Empty here; `SharedBody` supplies the bytes.
            .data(Blob::new(Vec::new()))
            .customize()
            .interceptor(SharedBody(payload.bytes().clone()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
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

/// API Gateway's answers by status, the same for every management operation: 410
/// (`GoneException`), 429 (`LimitExceededException`), 5xx, and the rest.
fn classify<E>(error: SdkError<E, HttpResponse>) -> SendError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let reason = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::ServiceError(service) => match service.raw().status().as_u16() {
            410 => SendError::Gone,
            429 => SendError::Throttled(reason),
            status if (500..600).contains(&status) => SendError::Transient(reason),
            _ => SendError::Failed(reason),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SendError::Transient(reason)
        }
        _ => SendError::Failed(reason),
    }
}
