//! How a post travels and what its answer means: the pooled hyper client the SDK's default
//! HTTPS client is made of, and API Gateway's statuses as `SendError`s.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use tracing::warn;

use super::SendError;

/// Most a post may take, connecting included, before it counts as a transient failure.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error's body its `SendError` quotes.
const EXCERPT_BYTES: usize = 256;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client, hence one connection pool, for every endpoint.
#[derive(Default)]
pub(super) struct Transport {
    /// Built on the first post: reading the system's root certificates would otherwise add
    /// to every cold start, also of the functions that never post.
    client: OnceLock<HttpsClient>,
}

impl Transport {
    pub(super) async fn post(&self, request: Request<Full<Bytes>>) -> Result<(), SendError> {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!(
                "no answer within {ATTEMPT_TIMEOUT:?}"
            ))),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(), SendError> {
        let client = self.client.get_or_init(https_client);
        let response = client
            .request(request)
            .await
            .map_err(|error| SendError::Transient(chain(&error)))?;
        let (parts, body) = response.into_parts();
        let keep = if parts.status.is_success() {
            0
        } else {
            EXCERPT_BYTES
        };
        // Read to the end even when nothing is kept: only then does the connection go back
        // to the pool.
        let excerpt = read_to_end(body, keep)
            .await
            .map_err(|error| SendError::Transient(chain(&error)))?;
        classify(parts.status, &parts.headers, &excerpt)
    }
}

/// As the SDK's default HTTPS client (aws-smithy-http-client) is built: rustls on aws-lc-rs
/// with the system's root certificates (warned about and left empty when there are none, so
/// that `http://` endpoints still work), TCP no-delay, a hyper pool with tokio's timer.
/// HTTP/1.1 only, as the benchmark's raw loop posts: whether HTTP/2 would post faster to API
/// Gateway is not measured.
fn https_client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            // aws-lc-rs's default provider supports both TLS 1.2 and 1.3.
            .expect("aws-lc-rs supports rustls's default protocol versions")
    };
    let tls = match builder().with_native_roots() {
        Ok(roots) => roots.with_no_client_auth(),
        Err(error) => {
            warn!(%error, "no root certificates: https:// posts will fail");
            builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// Reads `body` to its end, keeping its first `keep` bytes.
async fn read_to_end(mut body: Incoming, keep: usize) -> Result<Vec<u8>, hyper::Error> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(kept)
}

/// API Gateway's answers by status, as `ApiGatewaySender::classify` reads the SDK's: 410
/// (`GoneException`), 429 (`LimitExceededException`), 5xx, and the rest, with the status,
/// `x-amzn-ErrorType` and the start of the body as the reason.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let error_type = headers
        .get("x-amzn-errortype")
        .and_then(|value| value.to_str().ok())
        // AWS may append `:{documentation URL}`.
        .map_or("", |value| value.split(':').next().unwrap_or(value));
    let reason = format!(
        "{status} {error_type}: {}",
        String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)])
    );
    match status.as_u16() {
        410 => Err(SendError::Gone),
        429 => Err(SendError::Throttled(reason)),
        500..=599 => Err(SendError::Transient(reason)),
        _ => Err(SendError::Failed(reason)),
    }
}

/// An error and its causes, `: `-separated: hyper's own message alone ("client error
/// (Connect)") does not say what went wrong.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, error_type: &str, body: &str) -> Result<(), SendError> {
        let mut headers = HeaderMap::new();
        if !error_type.is_empty() {
            headers.insert("x-amzn-ErrorType", error_type.parse().unwrap());
        }
        classify(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
        )
    }

    #[test]
    fn statuses_map_as_the_sdk_errors_did() {
        assert_eq!(answer(200, "", ""), Ok(()));
        assert_eq!(answer(204, "", ""), Ok(()));
        assert_eq!(answer(410, "GoneException", "{}"), Err(SendError::Gone));
        assert_eq!(
            answer(429, "LimitExceededException", r#"{"message":null}"#),
            Err(SendError::Throttled(
                r#"429 Too Many Requests LimitExceededException: {"message":null}"#.into()
            ))
        );
        assert!(matches!(answer(500, "", ""), Err(SendError::Transient(_))));
        assert!(matches!(answer(503, "", ""), Err(SendError::Transient(_))));
        assert_eq!(
            answer(
                403,
                "ForbiddenException:http://internal.amazon.com/doc",
                "Forbidden"
            ),
            Err(SendError::Failed(
                "403 Forbidden ForbiddenException: Forbidden".into()
            ))
        );
        assert!(matches!(answer(413, "", ""), Err(SendError::Failed(_))));
        assert!(matches!(answer(301, "", ""), Err(SendError::Failed(_))));
    }

    #[test]
    fn a_long_error_body_is_quoted_in_part() {
        let long = "x".repeat(10_000);
        let Err(SendError::Failed(reason)) = answer(400, "BadRequestException", &long) else {
            panic!("a 400 fails");
        };
        assert!(reason.len() < 400, "{}", reason.len());
    }
}
