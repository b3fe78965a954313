//! One module per route: plain async functions over the store and sender traits, so the
//! Lambda functions, the local gateway and the tests run the same code.

pub mod announce;
pub mod broadcast;
pub mod connect;
pub mod default;
pub mod disconnect;
pub mod history;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use tokio::time::Instant;

use crate::channels::Channels;
use std::sync::Arc;

use crate::config::SessionConfig;
use crate::fanout::{Fanout, FanoutOptions};
use crate::protocol::ConnectionId;
use crate::sender::ConnectionSender;
use crate::store::Store;

/// What every route's handler works with: the store and the management API, the limits and
/// channel rules, how fan-outs run, and when the invocation ends. Built once per invocation
/// from what a function's `main` (or the local gateway) built once at start-up.
#[derive(Clone)]
pub struct Context<'a> {
    pub store: &'a dyn Store,
    /// Shared with the tasks that post: fan-out spreads them over the runtime's threads.
    pub sender: Arc<dyn ConnectionSender>,
    pub session: &'a SessionConfig,
    pub channels: &'a Channels,
    pub fanout: &'a Fanout,
    /// When the invocation ends (Lambda's deadline, see `fanout::deadline_at`); `None`
    /// outside Lambda. Every fan-out stops before it.
    pub deadline: Option<Instant>,
}

impl Context<'_> {
    /// How a fan-out of this invocation runs.
    pub fn fanout_options(&self) -> FanoutOptions {
        FanoutOptions::with_limit(self.fanout.limit.clone()).with_deadline(self.deadline)
    }
}

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
