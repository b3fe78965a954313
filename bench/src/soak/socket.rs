//! A soak client's socket: frames read one by one, broadcasts recorded in the session as
//! they come, everything else handed back.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::clients::{PATIENCE, Shared, Socket};
use super::ledger::Session;
use crate::report::Result;

/// Sends a frame; returns the reply.
pub(super) async fn request(
    shared: &Shared,
    socket: &mut Socket,
    s: &mut Session,
    frame: Value,
) -> Result<Value> {
    socket.send(Message::text(frame.to_string())).await?;
    let until = Instant::now() + PATIENCE;
    loop {
        match next_event(shared, socket, s, until).await? {
            Some(Event::Reply(reply)) => return Ok(reply),
            Some(Event::Flush(_)) => {}
            Some(Event::Ended) => {
                return Err(format!("connection ended awaiting a reply to {frame}").into());
            }
            None => return Err(format!("no reply to {frame} within {PATIENCE:?}").into()),
        }
    }
}

/// What arrived that is not a broadcast.
#[derive(Debug)]
pub(super) enum Event {
    Reply(Value),
    Flush(u64),
    Ended,
}

/// The next frame that is not a broadcast (broadcasts are recorded in the session), or
/// `None` at `until`.
pub(super) async fn next_event(
    shared: &Shared,
    socket: &mut Socket,
    s: &mut Session,
    until: Instant,
) -> Result<Option<Event>> {
    loop {
        let frame = match tokio::time::timeout_at(until.into(), socket.next()).await {
            Err(_) => return Ok(None),
            Ok(frame) => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text)?;
                if value["event"] == "soak"
                    && let Some(seq) = value["data"]["seq"].as_u64()
                {
                    s.received(seq);
                    shared.counters.received.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(marker) = value["flush"].as_u64() {
                    return Ok(Some(Event::Flush(marker)));
                }
                return Ok(Some(Event::Reply(value)));
            }
            // A close frame is answered by tungstenite; the stream ends right after.
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Ok(Some(Event::Ended)),
        }
    }
}
