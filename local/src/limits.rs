//! The gateway's limits: API Gateway's, and its own protections against clients that would
//! hold it.

use std::time::Duration;

use wsbridge::protocol::MAX_MESSAGE_BYTES;

use crate::GatewayError;

/// API Gateway's WebSocket limits, and the local gateway's own protections against clients
/// that would hold it (these have no API Gateway counterpart to copy); each can be changed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame (API Gateway: 32 KB); larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest message (API Gateway: 128 KB); larger closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Closed with 1001 after this long without a frame from the client (API Gateway: 10 min).
    pub idle_timeout: Duration,
    /// Closed with 1001 after this long regardless (API Gateway: 2 h).
    pub max_connection_duration: Duration,
    /// Messages queued for a client (posted, not yet written) before posts are answered 429.
    pub outbox_messages: usize,
    /// Bytes queued for a client before posts are answered 429; at least one largest message.
    pub outbox_bytes: usize,
    /// A client that has not taken a message after this long is not reading: it is dropped
    /// (`$disconnect` with 1006).
    pub send_timeout: Duration,
    /// Open connections, handshakes included, beyond which a handshake is answered 503.
    pub max_connections: usize,
    /// A client must send each request head, the WebSocket upgrade included, within this.
    pub handshake_timeout: Duration,
    /// Each `@connections` post answers after this long, as API Gateway's take ≈ 10–30 ms
    /// from a Lambda: a broadcast's timing here then resembles the deployed one's (zero: as
    /// fast as the machine goes).
    pub post_latency: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7_200),
            outbox_messages: 1_024,
            outbox_bytes: 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            post_latency: Duration::ZERO,
        }
    }
}

impl Limits {
    /// Refuses limits that would make the gateway unusable rather than protected.
    pub(crate) fn check(&self) -> Result<(), GatewayError> {
        let refuse = |reason: String| Err(GatewayError::Limits(reason));
        if self.outbox_bytes < MAX_MESSAGE_BYTES {
            return refuse(format!(
                "the outbox must hold one largest message: at least {MAX_MESSAGE_BYTES} bytes, not {}",
                self.outbox_bytes
            ));
        }
        if self.outbox_messages == 0 || self.max_connections == 0 {
            return refuse("outbox messages and max connections must be at least 1".into());
        }
        if self.send_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return refuse("send and handshake timeouts must be above zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_would_refuse_every_large_post_are_refused() {
        let small = Limits {
            outbox_bytes: 1_000,
            ..Limits::default()
        };
        let message = small.check().unwrap_err().to_string();
        assert!(message.contains("131072"), "{message}");
        assert!(Limits::default().check().is_ok());
    }
}
