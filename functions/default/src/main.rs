//! `$default`: the client protocol (subscribe, unsubscribe, publish, presence, ping, whoami).

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::config::{
    ChannelsConfig, FanoutConfig, ManagementConfig, SessionConfig, StoreConfig,
};
use wsbridge::fanout::{Fanout, deadline_at};
use wsbridge::handlers::{Context, default};
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
    let store = DynamoDbStore::from_sdk_config(&aws, table).with_page_size(1_000);
    // Client publishes and join/leave events post to connections.
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&aws, management.endpoint_override));

    // What main built lives as long as the process: leaked, so that each frame can be handled
    // as a task on a worker thread instead of in main's `block_on`, where a publish's fan-out
    // task would wake the workers running its posts across threads (BENCHMARKS.md).
    let (store, sender) = (leak(store), leak(sender));
    let (session, channels, fanout) = (leak(session), leak(channels), leak(fanout));
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            // A publish fans out within the invocation, bounded by its deadline.
            let ctx = Context {
                store,
                sender: sender.clone(),
                session,
                channels,
                fanout,
                deadline: deadline_at(event.context.deadline),
            };
            let handled = tokio::spawn(async move { default::handle(&event.payload, &ctx).await });
            Ok::<_, Error>(handled.await?)
        },
    ))
    .await
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}
