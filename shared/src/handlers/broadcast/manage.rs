//! Connection management for backends: `POST /subscribe`, `POST /unsubscribe` and
//! `POST /disconnect`, by connection ids or by user. Server-only namespaces depend on the
//! first: clients cannot join them, a backend can put them in.

use futures::stream::{self, StreamExt};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tracing::{error, info, warn};

use super::{error_response, internal_error, json_response, with_content_type_hint};
use crate::channels::TopicPattern;
use crate::handlers::Context;
use crate::handlers::announce::{Change, announce};
use crate::protocol::broadcast::{ApiError, ApiErrorCode};
use crate::protocol::client::ErrorCode;
use crate::protocol::manage::{
    ConnectionFailure, Connections, Disconnect, DisconnectReport, SubscriptionChange,
    SubscriptionReport,
};
use crate::protocol::{ConnectionId, Topic, UserId};
use crate::sender::SendError;
use crate::store::{Connection, ConnectionStore, StoreError};

/// Connections changed at once: each is one or two store calls (and a DeleteConnection).
const IN_FLIGHT: usize = 16;

/// What became of one connection.
enum Outcome {
    /// Applied; the presence topics its user joined or left by it.
    Done(Vec<(UserId, Topic)>),
    NotConnected,
    Failed {
        error: String,
        details: String,
    },
}

/// The connections a request names, read consistently: by id as named, by user from the
/// user's registry (a connection registered a moment ago is there).
async fn resolve(
    connections: &Connections,
    store: &dyn ConnectionStore,
) -> Result<Vec<ConnectionId>, StoreError> {
    match connections {
        Connections::Ids(ids) => Ok(ids.clone()),
        Connections::User(user) => Ok(store
            .user_connections(user)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect()),
    }
}

/// Runs `apply` on every connection, `IN_FLIGHT` at a time; the first store failure other
/// than the per-connection ones ends the request (a 500: every route here is safe to retry).
async fn for_each<'a, F, Fut>(
    ids: Vec<ConnectionId>,
    apply: F,
) -> Result<Vec<(ConnectionId, Outcome)>, StoreError>
where
    F: Fn(ConnectionId) -> Fut,
    Fut: Future<Output = Result<(ConnectionId, Outcome), StoreError>> + 'a,
{
    let mut outcomes: Vec<(ConnectionId, Outcome)> = stream::iter(ids)
        .map(apply)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(outcomes)
}

fn failure(id: ConnectionId, error: String, details: String) -> ConnectionFailure {
    ConnectionFailure {
        connection_id: id,
        error,
        details,
    }
}

fn code_of(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn subscription_report(
    action: &str,
    topics: Vec<TopicPattern>,
    outcomes: Vec<(ConnectionId, Outcome)>,
) -> SubscriptionReport {
    let mut report = SubscriptionReport {
        action: action.to_owned(),
        topics,
        connections: Vec::new(),
        not_connected: Vec::new(),
        failed: Vec::new(),
    };
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Done(_) => report.connections.push(id),
            Outcome::NotConnected => report.not_connected.push(id),
            Outcome::Failed { error, details } => report.failed.push(failure(id, error, details)),
        }
    }
    report
}

/// Announces what the outcomes changed in presence topics, `change` for each.
async fn announce_outcomes(
    ctx: &Context<'_>,
    change: Change,
    outcomes: &[(ConnectionId, Outcome)],
) {
    for (_, outcome) in outcomes {
        if let Outcome::Done(moves) = outcome {
            for (user, topic) in moves {
                announce(ctx, change, user, std::slice::from_ref(topic)).await;
            }
        }
    }
}

fn parse_change(request: &Request, ctx: &Context<'_>) -> Result<SubscriptionChange, ApiError> {
    SubscriptionChange::parse(request.body(), ctx.session.max_topics_per_connection)
        .map_err(|mistake| with_content_type_hint(request, mistake))
}

/// The user a connection belongs to, for announcing what a change did.
async fn user_of(
    store: &dyn ConnectionStore,
    id: &ConnectionId,
) -> Result<Option<UserId>, StoreError> {
    Ok(store.get_connection(id).await?.map(|c| c.user_id))
}

pub(super) async fn subscribe(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    let store = ctx.store;
    let change = match parse_change(request, ctx) {
        Ok(change) => change,
        Err(mistake) => return error_response(mistake),
    };
    // All or nothing: a topic in a closed namespace (or in none) refuses the request.
    for topic in &change.topics {
        if let Err(refused) = ctx.channels.check_server_subscribe(topic) {
            return error_response(ApiError::new(ApiErrorCode::Forbidden, refused.to_string()));
        }
    }
    let topics = &change.topics;
    let presence = &ctx.channels.presence_topics(topics);
    let max_topics = ctx.session.max_topics_per_connection;
    let outcomes = match resolve(&change.connections, store).await {
        Ok(ids) => {
            for_each(ids, |id| async move {
                let outcome = match store.subscribe(&id, topics, presence, max_topics).await {
                    Ok(joined) if joined.is_empty() => Outcome::Done(Vec::new()),
                    Ok(joined) => match user_of(store, &id).await? {
                        Some(user) => Outcome::Done(
                            joined.into_iter().map(|t| (user.clone(), t)).collect(),
                        ),
                        None => Outcome::Done(Vec::new()),
                    },
                    Err(StoreError::NotConnected(_)) => Outcome::NotConnected,
                    Err(StoreError::TooManyTopics {
                        current,
                        adding,
                        limit,
                    }) => Outcome::Failed {
                        error: code_of(ErrorCode::TooManyTopics),
                        details: format!(
                            "the connection holds {current} topics; {adding} more would pass the limit of {limit}"
                        ),
                    },
                    Err(e) => return Err(e),
                };
                Ok((id, outcome))
            })
            .await
        }
        Err(e) => Err(e),
    };
    match outcomes {
        Ok(outcomes) => {
            announce_outcomes(ctx, Change::Join, &outcomes).await;
            let report = subscription_report("subscribed", change.topics.clone(), outcomes);
            info!(topics = ?report.topics, connections = report.connections.len(), not_connected = report.not_connected.len(), failed = report.failed.len(), "server subscribe");
            json_response(StatusCode::OK, &report)
        }
        Err(e) => {
            error!(error = %e, "server subscribe failed");
            error_response(internal_error())
        }
    }
}

pub(super) async fn unsubscribe(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    let store = ctx.store;
    let change = match parse_change(request, ctx) {
        Ok(change) => change,
        Err(mistake) => return error_response(mistake),
    };
    let topics = &change.topics;
    let outcomes = match resolve(&change.connections, store).await {
        Ok(ids) => {
            for_each(ids, |id| async move {
                let outcome = match store.unsubscribe(&id, topics).await {
                    Ok(left) if left.is_empty() => Outcome::Done(Vec::new()),
                    Ok(left) => match user_of(store, &id).await? {
                        Some(user) => {
                            Outcome::Done(left.into_iter().map(|t| (user.clone(), t)).collect())
                        }
                        None => Outcome::Done(Vec::new()),
                    },
                    Err(StoreError::NotConnected(_)) => Outcome::NotConnected,
                    Err(e) => return Err(e),
                };
                Ok((id, outcome))
            })
            .await
        }
        Err(e) => Err(e),
    };
    match outcomes {
        Ok(outcomes) => {
            announce_outcomes(ctx, Change::Leave, &outcomes).await;
            let report = subscription_report("unsubscribed", change.topics.clone(), outcomes);
            info!(topics = ?report.topics, connections = report.connections.len(), not_connected = report.not_connected.len(), "server unsubscribe");
            json_response(StatusCode::OK, &report)
        }
        Err(e) => {
            error!(error = %e, "server unsubscribe failed");
            error_response(internal_error())
        }
    }
}

pub(super) async fn disconnect(request: &Request, ctx: &Context<'_>) -> Response<Body> {
    let target = match Disconnect::parse(request.body()) {
        Ok(target) => target,
        Err(mistake) => return error_response(with_content_type_hint(request, mistake)),
    };
    let outcomes = match resolve(&target.connections, ctx.store).await {
        Ok(ids) => for_each(ids, |id| close(id, ctx)).await,
        Err(e) => Err(e),
    };
    match outcomes {
        Ok(outcomes) => {
            announce_outcomes(ctx, Change::Leave, &outcomes).await;
            let mut report = DisconnectReport {
                disconnected: Vec::new(),
                not_connected: Vec::new(),
                failed: Vec::new(),
            };
            for (id, outcome) in outcomes {
                match outcome {
                    Outcome::Done(_) => report.disconnected.push(id),
                    Outcome::NotConnected => report.not_connected.push(id),
                    Outcome::Failed { error, details } => {
                        report.failed.push(failure(id, error, details))
                    }
                }
            }
            info!(
                disconnected = report.disconnected.len(),
                not_connected = report.not_connected.len(),
                failed = report.failed.len(),
                "server disconnect"
            );
            json_response(StatusCode::OK, &report)
        }
        Err(e) => {
            error!(error = %e, "server disconnect failed");
            error_response(internal_error())
        }
    }
}

/// Closes one connection through API Gateway, then removes its rows (its `$disconnect`
/// finds nothing left). A connection API Gateway no longer has (410) is gone either way, so
/// its rows go too; any other failure keeps the rows, so that a retry can still find it.
async fn close(id: ConnectionId, ctx: &Context<'_>) -> Result<(ConnectionId, Outcome), StoreError> {
    let store = ctx.store;
    let Some(connection) = store.get_connection(&id).await? else {
        // Expired rows may still be there until TTL deletes them: remove them now.
        store.remove_connection(&id).await?;
        return Ok((id, Outcome::NotConnected));
    };
    let outcome = match ctx.sender.close(&Connection::recipient(&connection)).await {
        Ok(()) | Err(SendError::Gone) => {
            let left = store
                .remove_connection(&id)
                .await?
                .map(|removed| {
                    let user = removed.connection.user_id;
                    removed
                        .left
                        .into_iter()
                        .map(|t| (user.clone(), t))
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Done(left)
        }
        Err(e) => {
            warn!(connection_id = %id, error = %e, "could not close");
            Outcome::Failed {
                error: "failed".to_owned(),
                details: e.to_string(),
            }
        }
    };
    Ok((id, outcome))
}
