//! `publish`: a client's message to a topic's subscribers, through the same fan-out engine
//! as `POST /broadcast`, bounded by the invocation's deadline the same way.

use tracing::info;

use super::{Refusal, forbidden};
use crate::channels::PublishRefusal;
use crate::clock::now_millis;
use crate::fanout::fan_out;
use crate::handlers::Context;
use crate::handlers::announce::{Change, announce};
use crate::handlers::history::{StampError, stamp};
use crate::protocol::broadcast::{Envelope, Exclusions, PayloadError};
use crate::protocol::client::{ErrorCode, ErrorFrame, Publish, ServerFrame};
use crate::sender::Payload;
use crate::store::history::Position;
use crate::store::{Audience, Session};

pub(super) async fn publish(
    admitted: &Session,
    message: Publish,
    ctx: &Context<'_>,
) -> Result<ServerFrame, Refusal> {
    let connection = &admitted.connection;
    let topic = &message.topic;
    ctx.channels
        .check_publish(topic, &connection.grants, admitted.receives(topic))
        .map_err(|refusal| match refusal {
            PublishRefusal::Forbidden(refused) => forbidden(refused),
            PublishRefusal::NotSubscribed(refused) => Refusal::Client(ErrorFrame::new(
                ErrorCode::NotSubscribed,
                refused.to_string(),
            )),
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let timestamp = now_millis();
    let build = |position: Option<&Position>| {
        Envelope {
            topic: Some(topic),
            topics: None,
            event: &message.event,
            data: &message.data,
            id: &id,
            timestamp,
            // Set here, from the verified token: a client cannot speak for someone else.
            from: Some(&connection.user_id),
            offset: position.map(|p| p.offset),
            epoch: position.map(|p| p.epoch.as_str()),
        }
        .to_payload()
    };
    let (payload, position) = stamp(ctx, Some(topic), build).await.map_err(|e| match e {
        StampError::Payload(e) => {
            let code = match e {
                PayloadError::TooLarge(_) => ErrorCode::PayloadTooLarge,
                PayloadError::Invalid(_) => ErrorCode::InvalidMessage,
            };
            Refusal::Client(ErrorFrame::new(code, e.to_string()))
        }
        StampError::TooLargeToKeep(size) => Refusal::Client(ErrorFrame::new(
            ErrorCode::PayloadTooLarge,
            StampError::<PayloadError>::too_large_to_keep(size),
        )),
        StampError::Store(e) => Refusal::Store(e),
    })?;
    let audience = Audience::Subscribers(ctx.channels.subscription_keys(topic));
    let exclusions = Exclusions {
        user: None,
        // The sender has its message; it gets it back only when it asks.
        connection: (!message.echo).then(|| connection.id.clone()),
    };
    let summary = fan_out(
        ctx.store,
        &ctx.sender,
        &audience,
        &exclusions,
        &Payload::new(payload),
        &ctx.fanout_options(),
    )
    .await
    .map_err(|e| Refusal::Store(e.source))?;
    let report = summary.report;
    info!(
        connection_id = %connection.id,
        user_id = %connection.user_id,
        %topic,
        message_id = %id,
        recipients = report.recipients,
        delivered = report.delivered,
        deadline_reached = summary.unfinished(),
        "published"
    );
    for (user, left) in summary.left {
        announce(ctx, Change::Leave, &user, &[left]).await;
    }
    Ok(ServerFrame::Published {
        topic: message.topic,
        id,
        offset: position.as_ref().map(|p| p.offset),
        epoch: position.map(|p| p.epoch),
        recipients: report.recipients,
        delivered: report.delivered,
        gone: report.gone,
        failed: report.failed,
    })
}
