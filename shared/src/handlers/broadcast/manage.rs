//! Connection management for backends: `POST /subscribe`, `POST /unsubscribe` and
//! `POST /disconnect`, by connection ids or by user. Server-only namespaces depend on the
//! first: clients cannot join them, a backend can put them in.

use futures::stream::{self, StreamExt};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tracing::{error, info, warn};

use super::{ServerApi, error_response, internal_error, json_response, with_content_type_hint};
use crate::protocol::broadcast::{ApiError, ApiErrorCode};
use crate::protocol::client::ErrorCode;
use crate::protocol::manage::{
    ConnectionFailure, Connections, Disconnect, DisconnectReport, SubscriptionChange,
    SubscriptionReport,
};
use crate::protocol::{ConnectionId, Topic};
use crate::sender::{ConnectionSender, SendError};
use crate::store::{Connection, ConnectionStore, StoreError};

/// Connections changed at once: each is one or two store calls (and a DeleteConnection).
const IN_FLIGHT: usize = 16;

/// What became of one connection.
enum Outcome {
    Done,
    NotConnected,
    Failed { error: String, details: String },
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
    topics: Vec<Topic>,
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
            Outcome::Done => report.connections.push(id),
            Outcome::NotConnected => report.not_connected.push(id),
            Outcome::Failed { error, details } => report.failed.push(failure(id, error, details)),
        }
    }
    report
}

fn parse_change(request: &Request, api: &ServerApi<'_>) -> Result<SubscriptionChange, ApiError> {
    SubscriptionChange::parse(request.body(), api.session.max_topics_per_connection)
        .map_err(|mistake| with_content_type_hint(request, mistake))
}

pub(super) async fn subscribe(
    request: &Request,
    store: &dyn ConnectionStore,
    api: &ServerApi<'_>,
) -> Response<Body> {
    let change = match parse_change(request, api) {
        Ok(change) => change,
        Err(mistake) => return error_response(mistake),
    };
    // All or nothing: a topic in a closed namespace (or in none) refuses the request.
    for topic in &change.topics {
        if let Err(refused) = api.channels.check_server_subscribe(topic) {
            return error_response(ApiError::new(ApiErrorCode::Forbidden, refused.to_string()));
        }
    }
    let topics = &change.topics;
    let max_topics = api.session.max_topics_per_connection;
    let outcomes = match resolve(&change.connections, store).await {
        Ok(ids) => {
            for_each(ids, |id| async move {
                let outcome = match store.subscribe(&id, topics, max_topics).await {
                    Ok(()) => Outcome::Done,
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

pub(super) async fn unsubscribe(
    request: &Request,
    store: &dyn ConnectionStore,
    api: &ServerApi<'_>,
) -> Response<Body> {
    let change = match parse_change(request, api) {
        Ok(change) => change,
        Err(mistake) => return error_response(mistake),
    };
    let topics = &change.topics;
    let outcomes = match resolve(&change.connections, store).await {
        Ok(ids) => {
            for_each(ids, |id| async move {
                let outcome = match store.unsubscribe(&id, topics).await {
                    Ok(()) => Outcome::Done,
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

pub(super) async fn disconnect(
    request: &Request,
    store: &dyn ConnectionStore,
    sender: &dyn ConnectionSender,
) -> Response<Body> {
    let target = match Disconnect::parse(request.body()) {
        Ok(target) => target,
        Err(mistake) => return error_response(with_content_type_hint(request, mistake)),
    };
    let outcomes = match resolve(&target.connections, store).await {
        Ok(ids) => for_each(ids, |id| close(id, store, sender)).await,
        Err(e) => Err(e),
    };
    match outcomes {
        Ok(outcomes) => {
            let mut report = DisconnectReport {
                disconnected: Vec::new(),
                not_connected: Vec::new(),
                failed: Vec::new(),
            };
            for (id, outcome) in outcomes {
                match outcome {
                    Outcome::Done => report.disconnected.push(id),
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
async fn close(
    id: ConnectionId,
    store: &dyn ConnectionStore,
    sender: &dyn ConnectionSender,
) -> Result<(ConnectionId, Outcome), StoreError> {
    let Some(connection) = store.get_connection(&id).await? else {
        // Expired rows may still be there until TTL deletes them: remove them now.
        store.remove_connection(&id).await?;
        return Ok((id, Outcome::NotConnected));
    };
    let outcome = match sender.close(&Connection::recipient(&connection)).await {
        Ok(()) | Err(SendError::Gone) => {
            store.remove_connection(&id).await?;
            Outcome::Done
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
