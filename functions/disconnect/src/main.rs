//! `$disconnect`: removes the connection and its subscriptions.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use wsbridge::config::StoreConfig;
use wsbridge::handlers::disconnect;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let store = DynamoDbStore::from_sdk_config(&aws_config::load_from_env().await, table);

    // The handler borrows what main built once; `run` never returns while it is in use.
    let store = &store;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Error>(disconnect::handle(&event.payload, store).await)
        },
    ))
    .await
}
