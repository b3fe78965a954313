//! History on the socket: where each subscribed topic's stream stands (and what a
//! reconnecting client missed, after `since`), and the `history` frame.

use std::collections::BTreeMap;

use super::{Refusal, forbidden};
use crate::channels::TopicPattern;
use crate::handlers::Context;
use crate::handlers::history::{REPLY_BYTES, Read, history_of, stream};
use crate::protocol::Topic;
use crate::protocol::client::{
    ErrorCode, ErrorFrame, HistoryRequest, ServerFrame, StreamReply, Subscribe,
};
use crate::store::Session;

/// A `since` for a topic that keeps no history cannot be honoured: refused before anything
/// is applied.
pub(super) fn check_since(request: &Subscribe, ctx: &Context<'_>) -> Result<(), Refusal> {
    match request
        .since
        .keys()
        .find(|topic| history_of(ctx, topic).is_none())
    {
        Some(topic) => Err(Refusal::Client(ErrorFrame::new(
            ErrorCode::InvalidSince,
            format!("{topic} keeps no history: subscribe without since"),
        ))),
        None => Ok(()),
    }
}

/// Each subscribed topic with history: where its stream stands, with the messages after the
/// client's position for those it gave one. The messages share one reply's room; a topic
/// whose messages did not all fit says `more`.
pub(super) async fn streams(
    request: &Subscribe,
    ctx: &Context<'_>,
) -> Result<BTreeMap<Topic, StreamReply>, Refusal> {
    let mut streams = BTreeMap::new();
    let mut room = REPLY_BYTES;
    for topic in request.topics.iter().filter_map(TopicPattern::as_topic) {
        let Some(history) = history_of(ctx, &topic) else {
            continue;
        };
        let read = match request.since.get(&topic) {
            Some(since) => Read::Since(since, history.size as usize),
            None => Read::State,
        };
        let reply = stream(ctx, &topic, &history, read, room).await?;
        let used: usize = reply.messages.iter().map(|m| m.to_string().len()).sum();
        room = room.saturating_sub(used);
        streams.insert(topic, reply);
    }
    Ok(streams)
}

/// `history`: the last messages of a topic, or those after a position, for a connection
/// allowed to subscribe to it.
pub(super) async fn history(
    admitted: &Session,
    request: HistoryRequest,
    ctx: &Context<'_>,
) -> Result<ServerFrame, Refusal> {
    let connection = &admitted.connection;
    let topic = request.topic;
    ctx.channels
        .check_subscribe(
            &TopicPattern::exact(&topic),
            &connection.user_id,
            &connection.grants,
        )
        .map_err(forbidden)?;
    let Some(history) = history_of(ctx, &topic) else {
        return Err(Refusal::Client(ErrorFrame::new(
            ErrorCode::Forbidden,
            format!("topic {:?}: its namespace keeps no history", topic.as_str()),
        )));
    };
    let read = match &request.since {
        Some(since) => Read::Since(since, request.limit),
        None => Read::Last(request.limit),
    };
    let stream = stream(ctx, &topic, &history, read, REPLY_BYTES).await?;
    Ok(ServerFrame::History { topic, stream })
}
