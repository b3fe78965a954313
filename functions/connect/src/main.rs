//! `$connect`: verifies the client's JWT and registers the connection within its user's limit.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::auth::TokenVerifier;
use wsbridge::config::{
    AuthConfig, ChannelsConfig, FanoutConfig, ManagementConfig, SessionConfig, StoreConfig,
};
use wsbridge::fanout::{Fanout, deadline_at};
use wsbridge::handlers::{Context, connect};
use wsbridge::secrets;
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let session = SessionConfig::from_env()?;
    let channels = ChannelsConfig::from_env()?.channels;
    let fanout = Fanout::new(FanoutConfig::from_env()?);
    let management = ManagementConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    // JWT_SECRET_ID names the HS256 secret in Secrets Manager: read once, here.
    let env = secrets::resolve_env(&aws, AuthConfig::SECRETS).await?;
    let verifier = TokenVerifier::new(&AuthConfig::from_lookup(env)?)?;
    let store = DynamoDbStore::from_sdk_config(&aws, table);
    // Closes a user's oldest connection under CONNECTION_LIMIT_POLICY=close_oldest.
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&aws, management.endpoint_override));

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (verifier, store, sender) = (&verifier, &store, &sender);
    let (session, channels, fanout) = (&session, &channels, &fanout);
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            let ctx = Context {
                store,
                sender: sender.clone(),
                session,
                channels,
                fanout,
                deadline: deadline_at(event.context.deadline),
            };
            Ok::<_, Error>(connect::handle(&event.payload, verifier, &ctx).await)
        },
    ))
    .await
}
