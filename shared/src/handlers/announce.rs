//! Join and leave events: when a user's first connection enters a presence topic of a
//! namespace with `join_leave`, the topic's other subscribers get
//! `{"topic":…,"event":"join","data":{"user_id":…}}`; when their last connection leaves it
//! (unsubscribe, disconnect, eviction, or found gone by a 410), `leave`. The store decides
//! first and last exactly; this module only tells the others.

use std::collections::VecDeque;

use serde_json::json;
use tracing::{info, warn};

use super::Context;
use crate::clock::now_millis;
use crate::fanout::fan_out;
use crate::protocol::broadcast::{Envelope, Exclusions};
use crate::protocol::{Topic, UserId};
use crate::sender::Payload;
use crate::store::Audience;

/// Events announced per invocation at most: a leave found during one announcement's fan-out
/// (a 410) is announced too, so a storm of dead connections is bounded here.
const MAX_EVENTS: usize = 100;

/// Which way a user moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Join,
    Leave,
}

impl Change {
    fn event(self) -> &'static str {
        match self {
            Change::Join => "join",
            Change::Leave => "leave",
        }
    }
}

/// Announces that `user` joined or left each of `topics`, to each topic's other subscribers,
/// where the topic's namespace has `join_leave`. The user's own connections are left out
/// (their own client knows). Best effort: a failure is logged, never the caller's failure.
pub async fn announce(ctx: &Context<'_>, change: Change, user: &UserId, topics: &[Topic]) {
    let mut queue: VecDeque<(Change, UserId, Topic)> = topics
        .iter()
        .map(|topic| (change, user.clone(), topic.clone()))
        .collect();
    let mut announced = 0;
    while let Some((change, user, topic)) = queue.pop_front() {
        if !ctx
            .channels
            .namespace_of(&topic)
            .is_some_and(|n| n.join_leave)
        {
            continue;
        }
        if announced == MAX_EVENTS {
            warn!(
                dropped = queue.len() + 1,
                "too many join/leave events in one invocation"
            );
            return;
        }
        announced += 1;
        // Leaves found while telling this one are told after it.
        for (user, topic) in tell(ctx, change, &user, &topic).await {
            queue.push_back((Change::Leave, user, topic));
        }
    }
}

/// One event to one topic's subscribers; returns the leaves its 410s revealed.
async fn tell(
    ctx: &Context<'_>,
    change: Change,
    user: &UserId,
    topic: &Topic,
) -> Vec<(UserId, Topic)> {
    let id = uuid::Uuid::new_v4().to_string();
    let data = json!({ "user_id": user });
    let envelope = Envelope {
        topic: Some(topic),
        topics: None,
        event: change.event(),
        data: &data,
        id: &id,
        timestamp: now_millis(),
        from: None,
        // Presence changes are not kept: a recovering client asks for presence instead.
        offset: None,
        epoch: None,
    };
    let payload = match envelope.to_payload() {
        Ok(payload) => Payload::new(payload),
        Err(e) => {
            warn!(%topic, error = %e, "join/leave event not sent");
            return Vec::new();
        }
    };
    let audience = Audience::Subscribers(ctx.channels.subscription_keys(topic));
    let exclusions = Exclusions {
        user: Some(user.clone()),
        connection: None,
    };
    let outcome = fan_out(
        ctx.store,
        &ctx.sender,
        &audience,
        &exclusions,
        &payload,
        &ctx.fanout_options(),
    )
    .await;
    match outcome {
        Ok(summary) => {
            info!(
                %topic,
                user_id = %user,
                event = change.event(),
                delivered = summary.report.delivered,
                "announced"
            );
            summary.left
        }
        Err(e) => {
            warn!(%topic, user_id = %user, error = %e, "join/leave event stopped");
            e.summary.left
        }
    }
}
