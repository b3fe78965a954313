//! "Post this to that connection", "close that connection": the seam between the bridge and
//! API Gateway's management API.

mod api_gateway;
mod credentials;
mod endpoint;
mod post;
mod sigv4;
mod transport;

#[cfg(test)]
mod random;
#[cfg(test)]
mod signature_tests;

use std::sync::OnceLock;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use api_gateway::ApiGatewaySender;

use crate::store::Recipient;

/// One message as every post of a fan-out sends it: one shared buffer, and its SHA-256,
/// which a SigV4 signature covers, computed once for all recipients instead of once per post.
#[derive(Debug, Clone)]
pub struct Payload {
    bytes: Bytes,
    sha256_hex: OnceLock<String>,
}

impl Payload {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            sha256_hex: OnceLock::new(),
        }
    }

    /// The message; cloning it shares the buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Lowercase hex SHA-256 of the message, computed on first use.
    pub fn sha256_hex(&self) -> &str {
        self.sha256_hex
            .get_or_init(|| hex::encode(Sha256::digest(&self.bytes)))
    }
}

/// Why one post failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 410: the connection no longer exists; its rows should go.
    #[error("connection is gone")]
    Gone,
    /// 429: the account's `@connections` rate, or the client's buffer, is full. Retryable.
    #[error("throttled: {0}")]
    Throttled(String),
    /// 5xx, a timeout, a dropped connection: worth another try.
    #[error("transient: {0}")]
    Transient(String),
    /// Anything else (403, 413, …): another try would fail the same way.
    #[error("{0}")]
    Failed(String),
}

impl SendError {
    /// API Gateway's answer by its status, the same for every management operation and for
    /// both ways of calling it (the lean post, the SDK): 410 (`GoneException`), 429
    /// (`LimitExceededException`), 5xx, and the rest; `reason` says what was answered.
    pub(crate) fn from_status(status: u16, reason: String) -> Self {
        match status {
            410 => Self::Gone,
            429 => Self::Throttled(reason),
            500..=599 => Self::Transient(reason),
            _ => Self::Failed(reason),
        }
    }
}

/// Reaches connections through the management API.
#[async_trait]
pub trait ConnectionSender: Send + Sync {
    /// Delivers one payload to one connection. `payload` is shared by every post of a
    /// broadcast: implementations must not need a copy of it per recipient.
    async fn send(&self, recipient: &Recipient, payload: &Payload) -> Result<(), SendError>;

    /// Closes the connection (API Gateway's DeleteConnection); `$disconnect` follows.
    /// `Err(Gone)` when it was already closed.
    async fn close(&self, recipient: &Recipient) -> Result<(), SendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_digest_is_the_sha256_of_its_bytes() {
        // GIVEN the test vector of FIPS 180-2 ("abc")
        let payload = Payload::new(Bytes::from_static(b"abc"));
        // THEN its digest is the published one, and asking again gives the same
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(payload.sha256_hex(), expected);
        assert_eq!(payload.clone().sha256_hex(), expected);
        assert_eq!(Payload::new(Vec::new()).sha256_hex().len(), 64);
    }
}
