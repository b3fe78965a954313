//! `$default`: the client protocol. Every frame gets a reply frame, carried back as the
//! Lambda's response body (API Gateway route response), never by an extra PostToConnection.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde::Serialize;
use tracing::{error, info};

use super::{connection_id_of, ws_response};
use crate::config::SessionConfig;
use crate::protocol::ConnectionId;
use crate::protocol::client::{ClientAction, ErrorCode, ErrorFrame, ServerFrame};
use crate::store::{ConnectionStore, StoreError};

/// 200 with a reply or error frame; 500 with an `internal_error` frame when the store fails.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    store: &dyn ConnectionStore,
    session: &SessionConfig,
) -> ApiGatewayProxyResponse {
    let Some(id) = connection_id_of(request) else {
        error!("$default event without requestContext.connectionId");
        return frame(500, &internal_error());
    };
    if request.is_base64_encoded {
        return frame(
            200,
            &ErrorFrame::new(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON as a text frame",
            ),
        );
    }
    let action =
        match ClientAction::parse(request.body.as_deref(), session.max_topics_per_connection) {
            Ok(action) => action,
            Err(mistake) => {
                info!(connection_id = %id, error = ?mistake.error, "refused frame");
                return frame(200, &mistake);
            }
        };
    match run(&id, action, store, session).await {
        Ok(reply) => frame(200, &reply),
        Err(StoreError::NotConnected(_)) => frame(
            200,
            &ErrorFrame::new(
                ErrorCode::NotConnected,
                "this connection is no longer registered; reconnect",
            ),
        ),
        Err(StoreError::TooManyTopics {
            current,
            adding,
            limit,
        }) => frame(200, &ErrorFrame::too_many_topics(current + adding, limit)),
        Err(e) => {
            error!(connection_id = %id, error = %e, "store failed");
            frame(500, &internal_error())
        }
    }
}

async fn run(
    id: &ConnectionId,
    action: ClientAction,
    store: &dyn ConnectionStore,
    session: &SessionConfig,
) -> Result<ServerFrame, StoreError> {
    match action {
        ClientAction::Subscribe(topics) => {
            store
                .subscribe(id, &topics, session.max_topics_per_connection)
                .await?;
            info!(connection_id = %id, topics = ?topics, "subscribed");
            Ok(ServerFrame::Subscribed { topics })
        }
        ClientAction::Unsubscribe(topics) => {
            store.unsubscribe(id, &topics).await?;
            info!(connection_id = %id, topics = ?topics, "unsubscribed");
            Ok(ServerFrame::Unsubscribed { topics })
        }
        ClientAction::Ping => Ok(ServerFrame::Pong),
        ClientAction::Whoami => {
            let connection = store
                .get_connection(id)
                .await?
                .ok_or_else(|| StoreError::NotConnected(id.clone()))?;
            Ok(ServerFrame::Whoami {
                connection_id: connection.id,
                user_id: connection.user_id,
            })
        }
    }
}

fn internal_error() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::InternalError,
        "the bridge could not complete this request; retry later",
    )
}

fn frame(status: i64, body: &impl Serialize) -> ApiGatewayProxyResponse {
    // Serializing these plain structs cannot fail; fall back to an empty body regardless
    // rather than panic in a request path.
    ws_response(status, serde_json::to_string(body).ok())
}
