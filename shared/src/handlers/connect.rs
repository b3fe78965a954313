//! `$connect`: verify the token, register the connection.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use tracing::{error, info};

use super::{connection_id_of, ws_response};
use crate::auth::{TokenVerifier, now_seconds, token_of};
use crate::config::SessionConfig;
use crate::store::{Connection, ConnectionStore};

/// 200 registers the connection; 401 (no detail: API Gateway refuses the handshake and the
/// reason stays in our logs) for a missing or invalid token; 500 when the store fails.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    verifier: &TokenVerifier,
    store: &dyn ConnectionStore,
    session: &SessionConfig,
) -> ApiGatewayProxyResponse {
    let context = &request.request_context;
    let Some(id) = connection_id_of(request) else {
        error!("$connect event without requestContext.connectionId");
        return ws_response(400, None);
    };
    let Some(token) = token_of(request) else {
        info!(connection_id = %id, "refused: no token");
        return ws_response(401, None);
    };
    let user_id = match verifier.verify(token).await {
        Ok(verified) => verified.user_id,
        Err(reason) => {
            info!(connection_id = %id, %reason, "refused: invalid token");
            return ws_response(401, None);
        }
    };
    let (Some(domain), Some(stage)) = (&context.domain_name, &context.stage) else {
        error!(connection_id = %id, "$connect event without domainName/stage");
        return ws_response(400, None);
    };
    let connection = Connection {
        id,
        user_id,
        connected_at: context.connected_at,
        endpoint: format!("https://{domain}/{stage}"),
        expires_at: now_seconds() + session.connection_ttl.as_secs(),
    };
    match store.put_connection(&connection).await {
        Ok(()) => {
            info!(connection_id = %connection.id, user_id = %connection.user_id, "connected");
            ws_response(200, None)
        }
        Err(e) => {
            error!(connection_id = %connection.id, error = %e, "could not register connection");
            ws_response(500, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::dev::{Claims, DEV_SECRET, sign_hs256};
    use crate::protocol::{ConnectionId, UserId};
    use crate::store::MemoryStore;
    use crate::test_support::{CONNECTED_AT, ENDPOINT, FailingStore, ws_request};

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

    /// `$connect` of `c-new` with `?token=…`.
    fn connect_request(token: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
        let mut request = ws_request("c-new", None);
        if let Some(token) = token {
            request.query_string_parameters =
                HashMap::from([("token".to_owned(), token.to_owned())]).into();
        }
        request
    }

    #[tokio::test]
    async fn a_valid_token_registers_the_connection_for_its_subject() {
        // GIVEN a $connect with a token for alice
        let store = MemoryStore::new();
        let request = connect_request(Some(&token_for("alice")));

        // WHEN it is handled
        let before = now_seconds();
        let response = handle(&request, &verifier(), &store, &session()).await;
        let after = now_seconds();

        // THEN the handshake succeeds and the connection belongs to alice, reachable at the
        // API's management endpoint, until about now + TTL
        assert_eq!(response.status_code, 200);
        let stored = store
            .get_connection(&ConnectionId::new("c-new"))
            .await
            .unwrap()
            .expect("connection registered");
        assert_eq!(stored.user_id, UserId::new("alice"));
        assert_eq!(stored.endpoint, ENDPOINT);
        assert_eq!(stored.connected_at, CONNECTED_AT);
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
        let response = handle(&request, &verifier(), &store, &session()).await;

        // THEN bob's connection is registered
        assert_eq!(response.status_code, 200);
        let stored = store.get_connection(&ConnectionId::new("c-new")).await;
        assert_eq!(stored.unwrap().unwrap().user_id, UserId::new("bob"));
    }

    #[tokio::test]
    async fn a_missing_or_invalid_token_is_refused_with_401_and_nothing_stored() {
        let expired = sign_hs256(DEV_SECRET, &claims_of("alice", now_seconds() - 60)).unwrap();
        let foreign = sign_hs256(
            "some-other-secret-that-is-long-enough",
            &claims_of("alice", now_seconds() + 600),
        )
        .unwrap();
        for (case, token) in [
            ("missing", None),
            ("garbage", Some("not-a-jwt")),
            ("expired", Some(expired.as_str())),
            ("wrong secret", Some(foreign.as_str())),
        ] {
            // GIVEN a $connect whose token is missing or does not verify
            let store = MemoryStore::new();
            let request = connect_request(token);

            // WHEN it is handled
            let response = handle(&request, &verifier(), &store, &session()).await;

            // THEN the handshake is refused without detail and nothing is registered
            assert_eq!(response.status_code, 401, "{case}");
            assert_eq!(response.body, None, "{case}");
            let stored = store.get_connection(&ConnectionId::new("c-new")).await;
            assert_eq!(stored.unwrap(), None, "{case}");
        }
    }

    #[tokio::test]
    async fn a_failing_store_answers_500() {
        // GIVEN a valid token but a store that is down
        let request = connect_request(Some(&token_for("alice")));

        // WHEN it is handled
        let response = handle(&request, &verifier(), &FailingStore, &session()).await;

        // THEN API Gateway refuses the handshake with a server error
        assert_eq!(response.status_code, 500);
    }
}
