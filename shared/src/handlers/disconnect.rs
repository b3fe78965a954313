//! `$disconnect`: forget the connection and its subscriptions.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use tracing::{error, info};

use super::{connection_id_of, ws_response};
use crate::store::ConnectionStore;

/// Always 200: API Gateway ignores the answer, and the connection is gone either way. A
/// store failure is logged; the rows then expire by TTL.
pub async fn handle(
    request: &ApiGatewayWebsocketProxyRequest,
    store: &dyn ConnectionStore,
) -> ApiGatewayProxyResponse {
    let Some(id) = connection_id_of(request) else {
        error!("$disconnect event without requestContext.connectionId");
        return ws_response(200, None);
    };
    let context = &request.request_context;
    match store.remove_connection(&id).await {
        Ok(()) => info!(
            connection_id = %id,
            status = context.disconnect_status_code,
            reason = context.disconnect_reason.as_deref().unwrap_or_default(),
            "disconnected"
        ),
        Err(e) => error!(connection_id = %id, error = %e, "could not remove connection"),
    }
    ws_response(200, None)
}
