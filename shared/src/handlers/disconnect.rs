//! `$disconnect`: forget the connection and its subscriptions.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use tracing::{error, info};

use super::announce::{Change, announce};
use super::{Context, connection_id_of, ws_response};

/// Always 200: API Gateway ignores the answer, and the connection is gone either way. A
/// store failure is logged; the rows then expire by TTL.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    ctx: &Context<'_>,
) -> ApiGatewayProxyResponse {
    let Some(id) = connection_id_of(request) else {
        error!("$disconnect event without requestContext.connectionId");
        return ws_response(200, None);
    };
    let context = &request.request_context;
    match ctx.store.remove_connection(&id).await {
        Ok(removed) => {
            info!(
                connection_id = %id,
                user_id = removed.as_ref().map(|r| r.connection.user_id.as_str()).unwrap_or("-"),
                topics = removed.as_ref().map_or(0, |r| r.topics.len()),
                status = context.disconnect_status_code,
                reason = context.disconnect_reason.as_deref().unwrap_or_default(),
                "disconnected"
            );
            if let Some(removed) = removed {
                announce(
                    ctx,
                    Change::Leave,
                    &removed.connection.user_id,
                    &removed.left,
                )
                .await;
            }
        }
        Err(e) => error!(connection_id = %id, error = %e, "could not remove connection"),
    }
    ws_response(200, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConnectionStore, Store};
    use crate::test_support::{RecordingSender, Settings};

    /// `$disconnect` with the default settings, leave events recorded and dropped.
    async fn run(
        request: &ApiGatewayWebsocketProxyRequest,
        store: &dyn Store,
    ) -> ApiGatewayProxyResponse {
        let settings = Settings::default();
        let sender = RecordingSender::new();
        handle(request, &settings.context(store, &sender)).await
    }
    use crate::protocol::{ConnectionId, UserId};
    use crate::test_support::{
        FailingStore, ids, store_with, subscribe_all, subscribers, ws_request,
    };

    #[tokio::test]
    async fn disconnect_forgets_the_connection_and_its_subscriptions() {
        // GIVEN alice and bob both watch board:1, alice also board:2
        let store = store_with(&[("c-alice", "alice"), ("c-bob", "bob")]).await;
        subscribe_all(&store, &["c-alice", "c-bob"], "board:1").await;
        subscribe_all(&store, &["c-alice"], "board:2").await;

        // WHEN alice disconnects
        let response = run(&ws_request("c-alice", None), &store).await;

        // THEN her connection, both subscriptions and her place in her user's count are
        // gone, bob's are untouched
        assert_eq!(response.status_code, 200);
        let users = store.user_connections(&UserId::new("alice")).await.unwrap();
        assert!(users.is_empty());
        let alice = store.get_connection(&ConnectionId::new("c-alice")).await;
        assert_eq!(alice.unwrap(), None);
        assert_eq!(subscribers(&store, "board:1").await, ids(&["c-bob"]));
        assert!(subscribers(&store, "board:2").await.is_empty());
        let bob = store.get_connection(&ConnectionId::new("c-bob")).await;
        assert!(bob.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_second_disconnect_changes_nothing_else() {
        // GIVEN alice disconnected once (API Gateway may deliver $disconnect twice), bob
        // still connected on the same topic
        let store = store_with(&[("c-alice", "alice"), ("c-bob", "bob")]).await;
        subscribe_all(&store, &["c-alice", "c-bob"], "board:1").await;
        run(&ws_request("c-alice", None), &store).await;

        // WHEN $disconnect arrives again
        let response = run(&ws_request("c-alice", None), &store).await;

        // THEN it is still a success, alice stays gone and bob is untouched
        assert_eq!(response.status_code, 200);
        let alice = store.get_connection(&ConnectionId::new("c-alice")).await;
        assert_eq!(alice.unwrap(), None);
        assert_eq!(subscribers(&store, "board:1").await, ids(&["c-bob"]));
        let users = store.user_connections(&UserId::new("alice")).await.unwrap();
        assert!(users.is_empty());
    }

    #[tokio::test]
    async fn a_failing_store_still_answers_200() {
        // GIVEN a store that is down
        // WHEN $disconnect arrives
        let response = run(&ws_request("c-alice", None), &FailingStore).await;

        // THEN API Gateway still gets 200 (it ignores the answer, and retrying cannot help
        // a connection that is gone): the rows will expire by TTL
        assert_eq!(response.status_code, 200);
        assert_eq!(response.body, None);
    }
}
