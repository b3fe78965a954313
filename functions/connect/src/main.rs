//! `$connect`: verifies the client's JWT and registers the connection.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::auth::TokenVerifier;
use wsbridge::config::{AuthConfig, SessionConfig, StoreConfig};
use wsbridge::handlers::connect;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let verifier = TokenVerifier::new(&AuthConfig::from_env()?)?;
    let session = SessionConfig::from_env()?;
    let store = DynamoDbStore::from_sdk_config(&aws_config::load_from_env().await, table);

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (verifier, store, session) = (&verifier, &store, &session);
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(connect::handle(&event.payload, verifier, store, session).await)
        },
    ))
    .await
}
