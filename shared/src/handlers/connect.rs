//! `$connect`: verify the token, read its grants, register the connection within its user's
//! limit.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use tracing::{error, info, warn};

use super::announce::{Change, announce};
use super::{Context, connection_id_of, ws_response};
use crate::auth::{TokenVerifier, now_seconds, token_of};
use crate::protocol::{ConnectionId, MAX_ID_BYTES};
use crate::sender::SendError;
use crate::store::{Connection, Registration};

/// 200 registers the connection; 401 (no detail: API Gateway refuses the handshake and the
/// reason stays in our logs) for a missing or invalid token, a `sub` over [`MAX_ID_BYTES`] or
/// an unusable grant claim; 429 when the user already holds `MAX_CONNECTIONS_PER_USER`
/// connections and the policy is to refuse; 500 when the store fails.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    verifier: &TokenVerifier,
    ctx: &Context<'_>,
) -> ApiGatewayProxyResponse {
    let (store, session, channels) = (ctx.store, ctx.session, ctx.channels);
    let context = &request.request_context;
    let Some(id) = connection_id_of(request) else {
        error!("$connect event without requestContext.connectionId");
        return ws_response(400, None);
    };
    let Some(token) = token_of(request) else {
        info!(connection_id = %id, "refused: no token");
        return ws_response(401, None);
    };
    let verified = match verifier.verify(token).await {
        Ok(verified) => verified,
        Err(reason) => {
            info!(connection_id = %id, %reason, "refused: invalid token");
            return ws_response(401, None);
        }
    };
    // The user id becomes a DynamoDB key: an oversized one is the token's fault (401), not
    // a failed write (500).
    if verified.user_id.as_str().len() > MAX_ID_BYTES {
        info!(connection_id = %id, bytes = verified.user_id.as_str().len(), "refused: sub over {MAX_ID_BYTES} bytes");
        return ws_response(401, None);
    }
    let grants = match channels.grants_of(&verified.claims) {
        Ok(grants) => grants,
        Err(reason) => {
            info!(connection_id = %id, user_id = %verified.user_id, %reason, "refused: unusable grant claim");
            return ws_response(401, None);
        }
    };
    let (Some(domain), Some(stage)) = (&context.domain_name, &context.stage) else {
        error!(connection_id = %id, "$connect event without domainName/stage");
        return ws_response(400, None);
    };
    let connection = Connection {
        id,
        user_id: verified.user_id,
        connected_at: context.connected_at,
        endpoint: format!("https://{domain}/{stage}"),
        expires_at: now_seconds() + session.connection_ttl.as_secs(),
        grants,
    };
    match store.register(&connection, &session.connection_limit).await {
        Ok(Registration::Registered { evicted }) => {
            info!(connection_id = %connection.id, user_id = %connection.user_id, "connected");
            for old in evicted {
                close_evicted(ctx, &connection, &old).await;
            }
            ws_response(200, None)
        }
        Ok(Registration::AtLimit { live }) => {
            info!(
                connection_id = %connection.id,
                user_id = %connection.user_id,
                live,
                limit = session.connection_limit.per_user,
                "refused: connection limit reached"
            );
            ws_response(429, None)
        }
        Err(e) => {
            error!(connection_id = %connection.id, error = %e, "could not register connection");
            ws_response(500, None)
        }
    }
}

/// A connection this young that API Gateway calls gone may still be completing its own
/// handshake (its `$connect` answered, the socket not yet open): closing it is tried again
/// briefly, or it would stay open with no rows.
const HANDSHAKE_GRACE_MS: i64 = 10_000;
const CLOSE_ATTEMPTS: u32 = 5;
const CLOSE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Makes room under `CONNECTION_LIMIT_POLICY=close_oldest`: the oldest connection's rows go
/// at once (it no longer counts already), then API Gateway closes it; its `$disconnect`
/// finds nothing left to remove. A failure is logged, never the new connection's problem:
/// the old rows expire by TTL.
async fn close_evicted(ctx: &Context<'_>, new: &Connection, old: &ConnectionId) {
    let mut recipient = new.recipient();
    recipient.connection_id = old.clone();
    let mut young = false;
    match ctx.store.remove_connection(old).await {
        Ok(Some(removed)) => {
            recipient.endpoint = removed.connection.endpoint;
            young = new.connected_at - removed.connection.connected_at < HANDSHAKE_GRACE_MS;
            // The user is still connected (the new connection), but not in those topics.
            announce(ctx, Change::Leave, &new.user_id, &removed.left).await;
        }
        Ok(None) => {}
        Err(e) => warn!(connection_id = %old, error = %e, "could not remove an evicted connection"),
    }
    for attempt in 1..=CLOSE_ATTEMPTS {
        match ctx.sender.close(&recipient).await {
            Ok(()) => {
                info!(connection_id = %old, user_id = %new.user_id, by = %new.id, "closed: connection limit, oldest first");
                return;
            }
            Err(SendError::Gone) if young && attempt < CLOSE_ATTEMPTS => {
                tokio::time::sleep(CLOSE_RETRY_PAUSE).await;
            }
            Err(SendError::Gone) => {
                info!(connection_id = %old, "evicted connection was already closed");
                return;
            }
            Err(e) => {
                warn!(connection_id = %old, error = %e, "could not close an evicted connection");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::channels::{Channels, TopicPattern};
    use crate::config::SessionConfig;
    use crate::dev::{Claims, DEV_SECRET, sign_hs256};
    use crate::limits::{ConnectionLimit, LimitPolicy};
    use crate::protocol::{ConnectionId, UserId};
    use crate::store::MemoryStore;
    use crate::store::{ConnectionStore, Store};
    use crate::test_support::{
        CONNECTED_AT, ENDPOINT, FailingStore, RecordingSender, Settings, connection, put,
        ws_request,
    };

    const TTL: Duration = Duration::from_secs(7_200);

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&crate::dev::auth_config()).unwrap()
    }

    fn session() -> SessionConfig {
        SessionConfig {
            connection_ttl: TTL,
            ..SessionConfig::default()
        }
    }

    fn limited_to(per_user: usize, policy: LimitPolicy) -> SessionConfig {
        SessionConfig {
            connection_limit: ConnectionLimit { per_user, policy },
            ..session()
        }
    }

    fn claims_of(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            exp,
            nbf: None,
            iss: None,
            aud: None,
        }
    }

    fn token_for(sub: &str) -> String {
        sign_hs256(DEV_SECRET, &claims_of(sub, now_seconds() + 600)).unwrap()
    }

    /// A token for `sub` with extra claims.
    fn token_with(sub: &str, extra: serde_json::Value) -> String {
        let mut claims = json!({"sub": sub, "exp": now_seconds() + 600});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(DEV_SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// `$connect` of `id` with `?token=…`.
    fn connect_request_as(id: &str, token: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
        let mut request = ws_request(id, None);
        if let Some(token) = token {
            request.query_string_parameters =
                HashMap::from([("token".to_owned(), token.to_owned())]).into();
        }
        request
    }

    fn connect_request(token: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
        connect_request_as("c-new", token)
    }

    async fn connect(
        request: &ApiGatewayWebsocketProxyRequest,
        store: &dyn Store,
        session: &SessionConfig,
        channels: &Channels,
    ) -> ApiGatewayProxyResponse {
        let settings = Settings {
            session: *session,
            channels: channels.clone(),
            ..Settings::default()
        };
        let sender = RecordingSender::new();
        handle(request, &verifier(), &settings.context(store, &sender)).await
    }

    async fn stored(store: &MemoryStore, id: &str) -> Option<Connection> {
        store.get_connection(&ConnectionId::new(id)).await.unwrap()
    }

    #[tokio::test]
    async fn a_valid_token_registers_the_connection_for_its_subject() {
        // GIVEN a $connect with a token for alice
        let store = MemoryStore::new();
        let request = connect_request(Some(&token_for("alice")));

        // WHEN it is handled
        let before = now_seconds();
        let response = connect(&request, &store, &session(), &Channels::default()).await;
        let after = now_seconds();

        // THEN the handshake succeeds and the connection belongs to alice, reachable at the
        // API's management endpoint, until about now + TTL, with no grants
        assert_eq!(response.status_code, 200);
        let stored = stored(&store, "c-new")
            .await
            .expect("connection registered");
        assert_eq!(stored.user_id, UserId::new("alice"));
        assert_eq!(stored.endpoint, ENDPOINT);
        assert_eq!(stored.connected_at, CONNECTED_AT);
        assert!(stored.grants.is_empty());
        assert!(
            (before + TTL.as_secs()..=after + TTL.as_secs()).contains(&stored.expires_at),
            "expires_at {} not now + {}s",
            stored.expires_at,
            TTL.as_secs()
        );
    }

    #[tokio::test]
    async fn a_bearer_header_is_accepted_like_the_query_parameter() {
        // GIVEN a $connect from a server-side client with Authorization: Bearer
        let store = MemoryStore::new();
        let mut request = connect_request(None);
        let header = format!("Bearer {}", token_for("bob"));
        request
            .headers
            .insert("authorization", header.parse().unwrap());

        // WHEN it is handled
        let response = connect(&request, &store, &session(), &Channels::default()).await;

        // THEN bob's connection is registered
        assert_eq!(response.status_code, 200);
        assert_eq!(
            stored(&store, "c-new").await.unwrap().user_id,
            UserId::new("bob")
        );
    }

    #[tokio::test]
    async fn a_missing_or_invalid_token_is_refused_with_401_and_nothing_stored() {
        let expired = sign_hs256(DEV_SECRET, &claims_of("alice", now_seconds() - 60)).unwrap();
        let foreign = sign_hs256(
            "some-other-secret-that-is-long-enough",
            &claims_of("alice", now_seconds() + 600),
        )
        .unwrap();
        let huge_sub = token_for(&"a".repeat(crate::protocol::MAX_ID_BYTES + 1));
        for (case, token) in [
            ("missing", None),
            ("garbage", Some("not-a-jwt")),
            ("expired", Some(expired.as_str())),
            ("wrong secret", Some(foreign.as_str())),
            ("sub over the id limit", Some(huge_sub.as_str())),
        ] {
            // GIVEN a $connect whose token is missing or does not verify
            let store = MemoryStore::new();
            let request = connect_request(token);

            // WHEN it is handled
            let response = connect(&request, &store, &session(), &Channels::default()).await;

            // THEN the handshake is refused without detail and nothing is registered
            assert_eq!(response.status_code, 401, "{case}");
            assert_eq!(response.body, None, "{case}");
            assert_eq!(stored(&store, "c-new").await, None, "{case}");
        }
    }

    fn claim_channels() -> Channels {
        Channels::parse(r#"{"namespaces":{"team":{"subscribe":"claim"}}}"#).unwrap()
    }

    #[tokio::test]
    async fn grants_in_the_configured_claim_are_kept_with_the_connection() {
        // GIVEN a namespace granted by claim, and a token granting team:7 and team:9:*
        let store = MemoryStore::new();
        let token = token_with("alice", json!({"channels": ["team:7", "team:9:*"]}));

        // WHEN alice connects
        let response = connect(
            &connect_request(Some(&token)),
            &store,
            &session(),
            &claim_channels(),
        )
        .await;

        // THEN her connection carries exactly those grants
        assert_eq!(response.status_code, 200);
        let grants = stored(&store, "c-new").await.unwrap().grants;
        let expected: Vec<TopicPattern> = ["team:7", "team:9:*"]
            .iter()
            .map(|p| TopicPattern::parse(p).unwrap())
            .collect();
        assert_eq!(grants.subscribe, expected);
    }

    #[tokio::test]
    async fn an_unusable_grant_claim_refuses_the_handshake() {
        for claim in [
            json!(42),
            json!(["org*"]),
            json!(
                vec!["t:1"; 101]
                    .iter()
                    .enumerate()
                    .map(|(i, _)| format!("t:{i}"))
                    .collect::<Vec<_>>()
            ),
        ] {
            // GIVEN a token whose grant claim is not a list of patterns, or too long a list
            let store = MemoryStore::new();
            let token = token_with("alice", json!({ "channels": claim }));

            // WHEN it connects where grants matter
            let response = connect(
                &connect_request(Some(&token)),
                &store,
                &session(),
                &claim_channels(),
            )
            .await;

            // THEN it is refused and nothing is registered
            assert_eq!(response.status_code, 401, "{claim}");
            assert_eq!(stored(&store, "c-new").await, None);
        }
        // AND where no namespace reads the claim, the same token connects
        let token = token_with("alice", json!({ "channels": 42 }));
        let store = MemoryStore::new();
        let response = connect(
            &connect_request(Some(&token)),
            &store,
            &session(),
            &Channels::default(),
        )
        .await;
        assert_eq!(response.status_code, 200);
    }

    #[tokio::test]
    async fn at_the_limit_a_new_handshake_is_refused_with_429_under_refuse() {
        // GIVEN alice holds her two connections, the limit
        let store = MemoryStore::new();
        put(&store, &connection("c-1", "alice")).await;
        put(&store, &connection("c-2", "alice")).await;
        let session = limited_to(2, LimitPolicy::Refuse);

        // WHEN a third one connects
        let request = connect_request(Some(&token_for("alice")));
        let response = connect(&request, &store, &session, &Channels::default()).await;

        // THEN it is refused with 429, not registered, and the two are untouched
        assert_eq!(response.status_code, 429);
        assert_eq!(stored(&store, "c-new").await, None);
        assert!(stored(&store, "c-1").await.is_some() && stored(&store, "c-2").await.is_some());

        // AND bob, another user, still connects
        let bob = connect_request_as("c-bob", Some(&token_for("bob")));
        assert_eq!(
            connect(&bob, &store, &session, &Channels::default())
                .await
                .status_code,
            200
        );
    }

    #[tokio::test]
    async fn expired_connections_never_count_toward_the_limit() {
        // GIVEN alice's two connections whose rows expired without a $disconnect
        let store = MemoryStore::new();
        for id in ["c-1", "c-2"] {
            let expired = Connection {
                expires_at: now_seconds() - 1,
                ..connection(id, "alice")
            };
            put(&store, &expired).await;
        }

        // WHEN she connects with a limit of two
        let request = connect_request(Some(&token_for("alice")));
        let response = connect(
            &request,
            &store,
            &limited_to(2, LimitPolicy::Refuse),
            &Channels::default(),
        )
        .await;

        // THEN she is admitted
        assert_eq!(response.status_code, 200);
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_connection_is_closed_under_close_oldest() {
        // GIVEN alice holds two connections, the oldest subscribed to a topic
        let store = MemoryStore::new();
        let oldest = Connection {
            connected_at: CONNECTED_AT - 1_000,
            ..connection("c-old", "alice")
        };
        put(&store, &oldest).await;
        put(&store, &connection("c-2", "alice")).await;
        store
            .subscribe(
                &ConnectionId::new("c-old"),
                &[crate::test_support::pattern("room:1")],
                &[],
                5,
            )
            .await
            .unwrap();
        let sender = RecordingSender::new();

        // WHEN a third connects under close_oldest
        let request = connect_request(Some(&token_for("alice")));
        let settings = Settings {
            session: limited_to(2, LimitPolicy::CloseOldest),
            ..Settings::default()
        };
        let response = handle(&request, &verifier(), &settings.context(&store, &sender)).await;

        // THEN it is admitted, the oldest is closed through its own endpoint and its rows
        // (and subscription) are gone, the other one stays
        assert_eq!(response.status_code, 200);
        assert!(stored(&store, "c-new").await.is_some());
        let closed = sender.closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].connection_id, ConnectionId::new("c-old"));
        assert_eq!(closed[0].endpoint, ENDPOINT);
        assert_eq!(stored(&store, "c-old").await, None);
        assert!(
            crate::test_support::subscribers(&store, "room:1")
                .await
                .is_empty()
        );
        assert!(stored(&store, "c-2").await.is_some());
        assert_eq!(
            store
                .user_connections(&UserId::new("alice"))
                .await
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn a_failing_store_answers_500() {
        // GIVEN a valid token but a store that is down
        let request = connect_request(Some(&token_for("alice")));

        // WHEN it is handled
        let response = connect(&request, &FailingStore, &session(), &Channels::default()).await;

        // THEN API Gateway refuses the handshake with a server error
        assert_eq!(response.status_code, 500);
    }
}
