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
    let user_id = match verifier.verify(token) {
        Ok(user_id) => user_id,
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
