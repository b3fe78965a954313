//! PostToConnection without the SDK. Through `aws-sdk-apigatewaymanagement` a post cost
//! ≈ 100 µs of CPU against ≈ 11 µs for a plain request loop (BENCHMARKS.md, "Profile"): the
//! orchestrator, its interceptors and config bag, a SigV4 signing key derived again for
//! every request, and the allocations of all of it. Here a post is the endpoint parsed
//! once, the URI built in one allocation, a signature from a key derived once a day, and
//! the shared payload as the body, over the same kind of hyper pool the SDK uses.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use tracing::warn;

use super::credentials::SigningKeys;
use super::endpoint::Endpoint;
use super::sigv4::{AmzDate, CanonicalRequest, SigningKey};
use super::transport::Transport;
use super::{Payload, SendError};

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
/// What the SDK sends for the `Data` blob: API Gateway reads the body as bytes.
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// How posts are signed.
enum Signing {
    Signed(SigningKeys),
    /// No credentials provider at all: the local gateway's `@connections` checks no
    /// signature, and API Gateway answers an unsigned post 403, which says why.
    Unsigned,
    /// A provider but no region: nothing can be signed, and every post says why.
    Impossible(String),
}

/// The lean PostToConnection path.
pub(super) struct Poster {
    endpoint_override: Option<Result<Arc<Endpoint>, String>>,
    endpoints: RwLock<HashMap<String, Arc<Endpoint>>>,
    signing: Signing,
    transport: Transport,
}

impl Poster {
    /// Signs with `config`'s credentials provider for `config`'s region, as the SDK would.
    pub(super) fn new(config: &aws_config::SdkConfig, endpoint_override: Option<&str>) -> Self {
        let signing = match (config.credentials_provider(), config.region()) {
            (Some(provider), Some(region)) => {
                Signing::Signed(SigningKeys::new(provider, region.to_string()))
            }
            (Some(_), None) => {
                Signing::Impossible("no region to sign posts for: AWS_REGION must be set".into())
            }
            (None, _) => {
                warn!("no credentials provider: posts to @connections go unsigned");
                Signing::Unsigned
            }
        };
        Self {
            endpoint_override: endpoint_override.map(|e| Endpoint::parse(e).map(Arc::new)),
            endpoints: RwLock::default(),
            signing,
            transport: Transport::default(),
        }
    }

    /// POSTs `payload` to `connection_id` through `endpoint` (unless overridden).
    pub(super) async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        payload: &Payload,
    ) -> Result<(), SendError> {
        let endpoint = self.endpoint(endpoint)?;
        let date = AmzDate::at(SystemTime::now());
        let request = match &self.signing {
            Signing::Signed(keys) => {
                let keyed = keys.at(&date).await?;
                request(&endpoint, connection_id, payload, Some((&keyed.key, &date)))
            }
            Signing::Unsigned => request(&endpoint, connection_id, payload, None),
            Signing::Impossible(reason) => return Err(SendError::Failed(reason.clone())),
        }?;
        self.transport.post(request).await
    }

    fn endpoint(&self, stored: &str) -> Result<Arc<Endpoint>, SendError> {
        if let Some(endpoint) = &self.endpoint_override {
            return endpoint.clone().map_err(SendError::Failed);
        }
        // A poisoned lock only means another thread panicked between two map operations,
        // which leaves the map consistent.
        if let Some(endpoint) = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stored)
        {
            return Ok(endpoint.clone());
        }
        let endpoint = Arc::new(Endpoint::parse(stored).map_err(SendError::Failed)?);
        Ok(self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(stored.to_owned())
            .or_insert(endpoint)
            .clone())
    }
}

/// The PostToConnection request, signed with `signed`'s key at its date when given:
/// `host`, `x-amz-date` and `x-amz-security-token` signed, the payload's digest as the
/// payload hash, `content-type` sent unsigned. hyper adds `content-length`.
pub(super) fn request(
    endpoint: &Endpoint,
    connection_id: &str,
    payload: &Payload,
    signed: Option<(&SigningKey, &AmzDate)>,
) -> Result<Request<Full<Bytes>>, SendError> {
    let target = endpoint.target(connection_id).map_err(SendError::Failed)?;
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(HOST, endpoint.host().clone());
    headers.insert(CONTENT_TYPE, OCTET_STREAM);
    if let Some((key, date)) = signed {
        let canonical = CanonicalRequest {
            path: endpoint.canonical_path(&target),
            host: endpoint.host().as_bytes(),
            payload_sha256_hex: payload.sha256_hex(),
        };
        let authorization = key.authorization(&canonical, date);
        let invalid = |what: &str| SendError::Failed(format!("{what} is not a valid header"));
        headers.insert(
            X_AMZ_DATE,
            HeaderValue::from_str(date.as_str()).map_err(|_| invalid("x-amz-date"))?,
        );
        if let Some(token) = key.session_token() {
            headers.insert(X_AMZ_SECURITY_TOKEN, token.clone());
        }
        headers.insert(
            AUTHORIZATION,
            HeaderValue::try_from(authorization).map_err(|_| invalid("authorization"))?,
        );
    }
    let mut request = Request::new(Full::new(payload.bytes().clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.uri;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build()
    }

    #[tokio::test]
    async fn a_bad_endpoint_fails_each_post_with_its_reason_before_anything_is_sent() {
        // GIVEN a bad override, and a bad stored endpoint
        let overridden = Poster::new(&config(), Some("ftp://example.com/prod"));
        let stored = Poster::new(&config(), None);
        let payload = Payload::new(Bytes::from_static(b"m"));
        // WHEN posts go out
        let through_override = overridden
            .post("https://ok.example.com", "c1", &payload)
            .await;
        let through_stored = stored.post("no scheme/prod", "c1", &payload).await;
        // THEN both fail for good, naming the endpoint
        for result in [through_override, through_stored] {
            assert!(
                matches!(&result, Err(SendError::Failed(reason)) if reason.contains("endpoint")),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_connection_id_is_refused_as_the_sdk_refuses_it() {
        let poster = Poster::new(&config(), None);
        let result = poster
            .post("https://h.example.com/prod", "", &Payload::new(Vec::new()))
            .await;
        assert_eq!(
            result,
            Err(SendError::Failed("the connection id is empty".into()))
        );
    }
}
