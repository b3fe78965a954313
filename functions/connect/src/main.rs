//! `$connect`: verifies the client's JWT and registers the connection.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use wsbridge::auth::TokenVerifier;
use wsbridge::config::{AuthConfig, SessionConfig, StoreConfig};
use wsbridge::handlers::connect;
use wsbridge::secrets;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let table = StoreConfig::from_env()?.table_name;
    let session = SessionConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    // JWT_SECRET_ID names the HS256 secret in Secrets Manager: read once, here.
    let env = secrets::resolve_env(&aws, AuthConfig::SECRETS).await?;
    let verifier = TokenVerifier::new(&AuthConfig::from_lookup(env)?)?;
    let store = DynamoDbStore::from_sdk_config(&aws, table);

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (verifier, store, session) = (&verifier, &store, &session);
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(connect::handle(&event.payload, verifier, store, session).await)
        },
    ))
    .await
}
