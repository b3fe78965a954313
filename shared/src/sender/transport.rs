//! How a post travels and what its answer means: the bridge's pooled HTTPS client (the one
//! the SDK's default client is made of, `crate::https`), and API Gateway's statuses as
//! `SendError`s.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::SendError;
use crate::https::{HttpsClient, chain};

/// Most a post may take, connecting included, before it counts as a transient failure.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error's body its `SendError` quotes.
const EXCERPT_BYTES: usize = 256;

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
        let client = self.client.get_or_init(|| crate::https::client(None));
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
    Err(SendError::from_status(status.as_u16(), reason))
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
