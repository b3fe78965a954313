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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::MemoryStore;
    use crate::test_support::{FailingStore, frame_of, ids, store_with, subscribers, ws_request};

    /// A connection may hold three topics.
    fn session() -> SessionConfig {
        SessionConfig {
            max_topics_per_connection: 3,
            ..SessionConfig::default()
        }
    }

    async fn alice_connected() -> MemoryStore {
        store_with(&[("c-alice", "alice")]).await
    }

    async fn send(store: &dyn ConnectionStore, frame: &str) -> ApiGatewayProxyResponse {
        handle(&ws_request("c-alice", Some(frame)), store, &session()).await
    }

    #[tokio::test]
    async fn subscribe_then_whoami_answers_with_the_topics_and_the_user() {
        // GIVEN alice's registered connection
        let store = alice_connected().await;

        // WHEN she subscribes to two topics, then asks who she is
        let subscribed = send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;
        let whoami = send(&store, r#"{"action":"whoami"}"#).await;

        // THEN both topics are held and whoami names her connection and user
        assert_eq!(subscribed.status_code, 200);
        assert_eq!(
            frame_of(&subscribed),
            json!({"action": "subscribed", "topics": ["b:1", "b:2"]})
        );
        assert_eq!(subscribers(&store, "b:1").await, ids(&["c-alice"]));
        assert_eq!(subscribers(&store, "b:2").await, ids(&["c-alice"]));
        assert_eq!(whoami.status_code, 200);
        assert_eq!(
            frame_of(&whoami),
            json!({"action": "whoami", "connection_id": "c-alice", "user_id": "alice"})
        );
    }

    #[tokio::test]
    async fn subscribing_past_the_limit_across_requests_adds_nothing_of_the_second() {
        // GIVEN alice holds two of her three topics
        let store = alice_connected().await;
        send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;

        // WHEN she asks for two more (one request alone is within the limit)
        let refused = send(&store, r#"{"action":"subscribe","topics":["b:3","b:4"]}"#).await;

        // THEN the frame says too many, and neither new topic was added
        assert_eq!(refused.status_code, 200);
        let frame = frame_of(&refused);
        assert_eq!(frame["error"], "too_many_topics");
        let details = frame["details"].as_str().unwrap();
        assert!(
            details.contains("4 topics") && details.contains("at most 3"),
            "{details}"
        );
        assert!(subscribers(&store, "b:3").await.is_empty());
        assert!(subscribers(&store, "b:4").await.is_empty());
        assert_eq!(subscribers(&store, "b:1").await, ids(&["c-alice"]));

        // AND one more topic, up to the limit, is still accepted
        let third = send(&store, r#"{"action":"subscribe","topic":"b:3"}"#).await;
        assert_eq!(frame_of(&third)["action"], "subscribed");
        assert_eq!(subscribers(&store, "b:3").await, ids(&["c-alice"]));
    }

    #[tokio::test]
    async fn unsubscribe_drops_only_the_named_topics() {
        // GIVEN alice holds two topics
        let store = alice_connected().await;
        send(&store, r#"{"action":"subscribe","topics":["b:1","b:2"]}"#).await;

        // WHEN she unsubscribes from one, and from one she never held
        let reply = send(&store, r#"{"action":"unsubscribe","topics":["b:1","b:9"]}"#).await;

        // THEN the reply echoes them and only b:1 is gone from her subscriptions
        assert_eq!(reply.status_code, 200);
        assert_eq!(
            frame_of(&reply),
            json!({"action": "unsubscribed", "topics": ["b:1", "b:9"]})
        );
        assert!(subscribers(&store, "b:1").await.is_empty());
        assert_eq!(subscribers(&store, "b:2").await, ids(&["c-alice"]));
    }

    #[tokio::test]
    async fn a_connection_the_store_does_not_know_gets_not_connected() {
        // GIVEN a store without alice's connection (TTL removed it, say)
        let store = MemoryStore::new();

        for action in [
            r#"{"action":"subscribe","topic":"b:1"}"#,
            r#"{"action":"unsubscribe","topic":"b:1"}"#,
            r#"{"action":"whoami"}"#,
        ] {
            // WHEN she sends a frame that needs her connection
            let reply = send(&store, action).await;

            // THEN she is told to reconnect, and nothing is subscribed
            assert_eq!(reply.status_code, 200, "{action}");
            assert_eq!(frame_of(&reply)["error"], "not_connected", "{action}");
        }
        assert!(subscribers(&store, "b:1").await.is_empty());
    }

    #[tokio::test]
    async fn a_binary_frame_is_refused_even_if_it_decodes_to_a_valid_action() {
        use base64::Engine;
        // GIVEN alice's connection and a subscribe frame sent as binary
        let store = alice_connected().await;
        let body = base64::engine::general_purpose::STANDARD
            .encode(r#"{"action":"subscribe","topic":"b:1"}"#);
        let mut request = ws_request("c-alice", Some(&body));
        request.is_base64_encoded = true;

        // WHEN it reaches $default
        let reply = handle(&request, &store, &session()).await;

        // THEN an error frame explains text frames, and nothing is subscribed
        assert_eq!(reply.status_code, 200);
        let frame = frame_of(&reply);
        assert_eq!(frame["error"], "invalid_json");
        assert!(frame["details"].as_str().unwrap().contains("text frame"));
        assert!(subscribers(&store, "b:1").await.is_empty());
    }

    #[tokio::test]
    async fn ping_and_malformed_frames_need_no_store() {
        // GIVEN a store that is down
        let store = FailingStore;

        // WHEN a ping and a malformed frame arrive
        let pong = send(&store, r#"{"action":"ping"}"#).await;
        let malformed = send(&store, r#"{"action":"subscribe"}"#).await;

        // THEN both are answered without touching the store
        assert_eq!(pong.status_code, 200);
        assert_eq!(frame_of(&pong), json!({"action": "pong"}));
        assert_eq!(malformed.status_code, 200);
        assert_eq!(frame_of(&malformed)["error"], "missing_topic");
    }

    #[tokio::test]
    async fn a_failing_store_answers_500_with_an_internal_error_frame() {
        // GIVEN a store that is down
        let store = FailingStore;

        for action in [
            r#"{"action":"subscribe","topic":"b:1"}"#,
            r#"{"action":"unsubscribe","topic":"b:1"}"#,
            r#"{"action":"whoami"}"#,
        ] {
            // WHEN a frame needs it
            let reply = send(&store, action).await;

            // THEN the client gets 500 and an internal_error frame, not silence
            assert_eq!(reply.status_code, 500, "{action}");
            assert_eq!(frame_of(&reply)["error"], "internal_error", "{action}");
        }
    }
}
