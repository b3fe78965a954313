//! `$default`: the client protocol. Every frame gets a reply frame, carried back as the
//! Lambda's response body (API Gateway route response), never by an extra PostToConnection.
//!
//! A frame that needs the store first takes one frame from the connection's budget; that
//! same call returns the connection (user, grants, subscriptions), which the channel rules
//! are checked against. `ping` and malformed frames cost no store operation and spend no
//! budget.

mod publish;
mod recover;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde::Serialize;
use tracing::{error, info};

use super::announce::{Change, announce};
use super::{Context, connection_id_of, ws_response};
use crate::clock::now_micros;
use crate::protocol::client::{
    ClientAction, ErrorCode, ErrorFrame, PresenceReply, PresentUser, Ref, Reply, ServerFrame,
};
use crate::protocol::{ConnectionId, Topic};
use crate::store::{Admission, Session, StoreError};

/// Users a presence answer lists at most (the totals count them all, up to what one read
/// holds).
pub const PRESENCE_PAGE: usize = 100;

/// 200 with a reply or error frame; 500 with an `internal_error` frame when the store fails.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    ctx: &Context<'_>,
) -> ApiGatewayProxyResponse {
    handle_at(request, ctx, now_micros()).await
}

/// `handle` with the rate limiter's clock given: microseconds since the Unix epoch. Public
/// so that tests outside the crate can hold the budget's time still while DynamoDB is slow.
pub async fn handle_at(
    request: &ApiGatewayWebsocketProxyRequest,
    ctx: &Context<'_>,
    now_us: i64,
) -> ApiGatewayProxyResponse {
    let Some(id) = connection_id_of(request) else {
        error!("$default event without requestContext.connectionId");
        return frame(500, None, &internal_error());
    };
    if request.is_base64_encoded {
        return frame(
            200,
            None,
            &ErrorFrame::new(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON as a text frame",
            ),
        );
    }
    let session = ctx.session;
    let (reference, parsed) =
        ClientAction::parse_with_ref(request.body.as_deref(), session.max_topics_per_connection);
    let reference = reference.as_ref();
    let action = match parsed {
        Ok(action) => action,
        Err(mistake) => {
            info!(connection_id = %id, error = ?mistake.error, "refused frame");
            return frame(200, reference, &mistake);
        }
    };
    if action == ClientAction::Ping {
        return frame(200, reference, &ServerFrame::Pong);
    }
    let admitted = match ctx
        .store
        .admit(&id, session.rate_limit.as_ref(), now_us)
        .await
    {
        Ok(Admission::Admitted(admitted)) => admitted,
        Ok(Admission::Limited { retry_after }) => {
            info!(connection_id = %id, retry_after_ms = retry_after.as_millis() as u64, "rate limited");
            // `rate_limit` is set whenever the store limits.
            let (per_second, burst) = session
                .rate_limit
                .map_or((0, 0), |limit| (limit.per_second, limit.burst));
            return frame(
                200,
                reference,
                &ErrorFrame::rate_limited(retry_after, per_second, burst),
            );
        }
        Err(e) => return store_error(&id, reference, e),
    };
    match run(&admitted, action, ctx).await {
        Ok(reply) => frame(200, reference, &reply),
        Err(Refusal::Client(refused)) => {
            info!(connection_id = %id, error = ?refused.error, details = %refused.details, "refused");
            frame(200, reference, &refused)
        }
        Err(Refusal::Store(e)) => store_error(&id, reference, e),
    }
}

/// Why an admitted frame was not carried out.
enum Refusal {
    /// The channel rules (or the message) refuse it; nothing was applied.
    Client(ErrorFrame),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

fn forbidden(refused: impl std::fmt::Display) -> Refusal {
    Refusal::Client(ErrorFrame::new(ErrorCode::Forbidden, refused.to_string()))
}

async fn run(
    admitted: &Session,
    action: ClientAction,
    ctx: &Context<'_>,
) -> Result<ServerFrame, Refusal> {
    let connection = &admitted.connection;
    let id = &connection.id;
    match action {
        ClientAction::Subscribe(request) => {
            let topics = &request.topics;
            // All or nothing: one refused topic refuses the whole request.
            for topic in topics {
                ctx.channels
                    .check_subscribe(topic, &connection.user_id, &connection.grants)
                    .map_err(forbidden)?;
            }
            recover::check_since(&request, ctx)?;
            let presence = ctx.channels.presence_topics(topics);
            let joined = ctx
                .store
                .subscribe(id, topics, &presence, ctx.session.max_topics_per_connection)
                .await?;
            info!(connection_id = %id, topics = ?topics, joined = ?joined, "subscribed");
            announce(ctx, Change::Join, &connection.user_id, &joined).await;
            // After the subscription: see `handlers::history` for why nothing is lost.
            let history = recover::streams(&request, ctx).await?;
            Ok(ServerFrame::Subscribed {
                topics: request.topics,
                history,
            })
        }
        ClientAction::Unsubscribe(topics) => {
            // Leaving is always allowed: a topic not held is simply not held.
            let left = ctx.store.unsubscribe(id, &topics).await?;
            info!(connection_id = %id, topics = ?topics, left = ?left, "unsubscribed");
            announce(ctx, Change::Leave, &connection.user_id, &left).await;
            Ok(ServerFrame::Unsubscribed { topics })
        }
        ClientAction::Publish(message) => publish::publish(admitted, message, ctx).await,
        ClientAction::Presence(topic) => presence(admitted, topic, ctx).await,
        ClientAction::History(request) => recover::history(admitted, request, ctx).await,
        ClientAction::Ping => Ok(ServerFrame::Pong),
        ClientAction::Whoami => Ok(ServerFrame::Whoami {
            connection_id: connection.id.clone(),
            user_id: connection.user_id.clone(),
        }),
    }
}

/// Who is in a topic: for a connection allowed to subscribe to it, in a namespace that
/// keeps presence.
async fn presence(
    admitted: &Session,
    topic: Topic,
    ctx: &Context<'_>,
) -> Result<ServerFrame, Refusal> {
    let connection = &admitted.connection;
    ctx.channels.check_presence(&topic).map_err(forbidden)?;
    ctx.channels
        .check_subscribe(
            &crate::channels::TopicPattern::exact(&topic),
            &connection.user_id,
            &connection.grants,
        )
        .map_err(forbidden)?;
    let page = ctx.store.presence(&topic, PRESENCE_PAGE).await?;
    Ok(ServerFrame::Presence(presence_reply(topic, page)))
}

/// A store's presence page as the wire shows it.
pub(crate) fn presence_reply(topic: Topic, page: crate::store::PresencePage) -> PresenceReply {
    PresenceReply {
        topic,
        users: page
            .users
            .into_iter()
            .map(|(user_id, connections)| PresentUser {
                user_id,
                connections,
            })
            .collect(),
        total_users: page.total_users,
        total_connections: page.total_connections,
        complete: page.complete,
    }
}

/// The error frame for a store failure: the client's own state for the two a store can
/// judge, `internal_error` (500) for the rest.
fn store_error(
    id: &ConnectionId,
    reference: Option<&Ref>,
    error: StoreError,
) -> ApiGatewayProxyResponse {
    match error {
        StoreError::NotConnected(_) => frame(
            200,
            reference,
            &ErrorFrame::new(
                ErrorCode::NotConnected,
                "this connection is no longer registered; reconnect",
            ),
        ),
        StoreError::TooManyTopics {
            current,
            adding,
            limit,
        } => frame(
            200,
            reference,
            &ErrorFrame::too_many_topics(current + adding, limit),
        ),
        e => {
            error!(connection_id = %id, error = %e, "store failed");
            frame(500, reference, &internal_error())
        }
    }
}

fn internal_error() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::InternalError,
        "the bridge could not complete this request; retry later",
    )
}

/// A reply or error frame, with the `ref` of the frame it answers when it had one.
fn frame(status: i64, reference: Option<&Ref>, body: &impl Serialize) -> ApiGatewayProxyResponse {
    let reply = Reply {
        frame: body,
        reference,
    };
    // Serializing these plain structs cannot fail; fall back to an empty body regardless
    // rather than panic in a request path.
    ws_response(status, serde_json::to_string(&reply).ok())
}

#[cfg(test)]
mod tests;
