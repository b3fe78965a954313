//! One module per route: plain async functions over the store and sender traits, so the
//! Lambda functions, the local gateway and the tests run the same code.

pub mod broadcast;
pub mod connect;
pub mod default;
pub mod disconnect;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;

use crate::protocol::ConnectionId;

/// A WebSocket route response: API Gateway sends `body` back to the client (route response).
fn ws_response(status: i64, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = body.map(Body::Text);
    response
}

/// The connection id API Gateway puts in every WebSocket event.
fn connection_id_of(request: &ApiGatewayWebsocketProxyRequest) -> Option<ConnectionId> {
    request
        .request_context
        .connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .map(ConnectionId::new)
}
