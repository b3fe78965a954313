//! `$default`: the client protocol (subscribe, unsubscribe, ping, whoami).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::config::{ChannelsConfig, SessionConfig, StoreConfig};
use wsbridge::handlers::default;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let session = SessionConfig::from_env()?;
    let channels = ChannelsConfig::from_env()?.channels;
    let store = DynamoDbStore::from_sdk_config(&aws_config::load_from_env().await, table);

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (store, session, channels) = (&store, &session, &channels);
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(default::handle(&event.payload, store, session, channels).await)
        },
    ))
    .await
}
