//! `$disconnect`: removes the connection and its subscriptions, and announces its user's
//! leaves.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::config::{
    ChannelsConfig, FanoutConfig, ManagementConfig, SessionConfig, StoreConfig,
};
use wsbridge::fanout::{Fanout, deadline_at};
use wsbridge::handlers::{Context, disconnect};
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
    let store = DynamoDbStore::from_sdk_config(&aws, table);
    // Leave events post to the topic's other subscribers.
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&aws, management.endpoint_override));

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (store, sender) = (&store, &sender);
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
            Ok::<_, Error>(disconnect::handle(&event.payload, &ctx).await)
        },
    ))
    .await
}
