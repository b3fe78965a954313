//! Broadcast HTTP API: app backends POST a message; it fans out to the connections.

use lambda_http::{Error, Request, run, service_fn};
use wsbridge::config::{BroadcastConfig, StoreConfig};
use wsbridge::handlers::broadcast;
use wsbridge::sender::ApiGatewaySender;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let config = BroadcastConfig {
        emit_metrics: true,
        ..BroadcastConfig::from_env()?
    };
    let aws = aws_config::load_from_env().await;
    // Pages of 1 000 rows instead of DynamoDB's 1 MB (~5 000): fan-out holds up to three
    // pages at once, and smaller ones keep memory flat in the number of recipients at the
    // same read cost (BENCHMARKS.md, "Memory").
    let store = DynamoDbStore::from_sdk_config(&aws, table).with_page_size(1_000);
    let sender = ApiGatewaySender::new(&aws, config.management_endpoint.clone());

    // The handler borrows what main built once; `run` never returns while it is in use.
    let (store, sender, config) = (&store, &sender, &config);
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(broadcast::handle(&request, store, sender, config).await)
    }))
    .await
}
