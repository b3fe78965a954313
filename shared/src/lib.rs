//! wsbridge: a serverless WebSocket bridge on API Gateway, Lambda and DynamoDB.
//!
//! Everything the Lambda functions and the local gateway run lives here, over two seams:
//! the store traits (`store`) and the sender trait (`sender`).

pub mod auth;
pub mod channels;
pub mod clock;
pub mod config;
pub mod dev;
pub mod fanout;
pub mod handlers;
pub(crate) mod https;
pub mod limits;
pub mod logging;
pub mod protocol;
pub mod secrets;
pub mod sender;
pub mod shards;
pub mod store;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
