//! History for every route: a message to a topic whose namespace keeps history is appended
//! to the topic's stream before it is sent (so it carries its offset), and readers —
//! a recovering subscribe, the `history` frame, `GET /history` — get what was kept.
//!
//! The hand-over of a recovering subscribe: the subscription is written first, then the
//! stream is read. A message appended before the read is in the reply; one appended after
//! it is sent to the connection live, since its fan-out reads the topic's subscribers
//! (strongly consistent) after its append, which is after the subscription. Nothing falls
//! in between. A message appended between the subscription and the read can come both ways:
//! clients drop a live message whose offset is not above the last one they hold.

use serde_json::Value;
use tracing::warn;

use super::Context;
use crate::channels::History;
use crate::protocol::Topic;
use crate::protocol::client::StreamReply;
use crate::store::StoreError;
use crate::store::history::{HistoryPage, Position, ReadLimits, continues};

/// Bytes of kept messages one reply carries at most: API Gateway's 128 KB, less room for
/// the frame around them.
pub const REPLY_BYTES: usize = 120 * 1024;

/// The longest position an envelope can carry: checking a payload's size with it before
/// appending means the real one always fits.
fn widest_position() -> Position {
    Position {
        offset: u64::MAX,
        epoch: "x".repeat(12),
    }
}

/// Why a message could not be stamped and kept: its payload (the builder's error), too big
/// for a reply to carry it back (its size), or the store.
#[derive(Debug)]
pub enum StampError<E> {
    Payload(E),
    TooLargeToKeep(usize),
    Store(StoreError),
}

impl<E> StampError<E> {
    /// What the client or caller is told for a message too large to keep.
    pub fn too_large_to_keep(size: usize) -> String {
        format!(
            "the message is {size} bytes as delivered; a topic with history keeps messages of at most {REPLY_BYTES} bytes, so that a recovery can carry each one"
        )
    }
}

/// The message's payload, built by `build` for its place in `topic`'s stream when the
/// topic's namespace keeps history (appending it), or without one.
pub async fn stamp<F, E>(
    ctx: &Context<'_>,
    topic: Option<&Topic>,
    build: F,
) -> Result<(Vec<u8>, Option<Position>), StampError<E>>
where
    F: Fn(Option<&Position>) -> Result<Vec<u8>, E> + Send + Sync,
{
    let Some((topic, history)) = topic.and_then(|t| history_of(ctx, t).map(|h| (t, h))) else {
        return build(None)
            .map(|payload| (payload, None))
            .map_err(StampError::Payload);
    };
    let widest = build(Some(&widest_position())).map_err(StampError::Payload)?;
    // A kept message must fit a reply, or no recovery could ever carry it.
    if widest.len() > REPLY_BYTES {
        return Err(StampError::TooLargeToKeep(widest.len()));
    }
    let (position, payload) = ctx
        .store
        .append(topic, &history, &|position| {
            // Built before with a wider position: it cannot fail now.
            build(Some(position))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        })
        .await
        .map_err(StampError::Store)?;
    Ok((payload.into_bytes(), Some(position)))
}

/// The topic's history setting, when its namespace keeps history.
pub fn history_of(ctx: &Context<'_>, topic: &Topic) -> Option<History> {
    ctx.channels.namespace_of(topic).and_then(|n| n.history)
}

/// What a reader asks of a stream.
pub enum Read<'a> {
    /// Only where it stands.
    State,
    /// The last `n` kept messages.
    Last(usize),
    /// At most `n` of those after this position, and whether they continue it.
    Since(&'a Position, usize),
}

/// Reads `topic`'s stream as `read` asks, within `bytes` of messages.
pub async fn stream(
    ctx: &Context<'_>,
    topic: &Topic,
    history: &History,
    read: Read<'_>,
    bytes: usize,
) -> Result<StreamReply, StoreError> {
    let size = history.size as usize;
    let (after, messages) = match read {
        Read::State => (Some(u64::MAX), 0),
        Read::Last(n) => (None, n.min(size)),
        Read::Since(since, n) => (Some(since.offset), n.min(size)),
    };
    let page = ctx
        .store
        .read(topic, after, ReadLimits { messages, bytes })
        .await?;
    let recovered = match read {
        Read::Since(since, _) => Some(continues(&page, since)),
        _ => None,
    };
    Ok(reply(topic, page, recovered))
}

fn reply(topic: &Topic, page: HistoryPage, recovered: Option<bool>) -> StreamReply {
    // A recovery that cannot continue the client's position gives nothing: the app
    // refetches its state and resumes from where the stream stands.
    let keep = recovered != Some(false);
    let messages = if keep {
        page.messages
            .into_iter()
            .filter_map(|kept| match serde_json::from_str::<Value>(&kept.payload) {
                Ok(message) => Some(message),
                Err(e) => {
                    warn!(%topic, offset = kept.offset, error = %e, "kept message is not JSON; skipped");
                    None
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    StreamReply {
        epoch: page.epoch,
        offset: page.latest,
        recovered,
        messages,
        more: keep && page.more,
    }
}
