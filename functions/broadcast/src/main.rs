//! The server HTTP API: app backends broadcast, and manage connections' subscriptions; and
//! the parts of broadcasts sent in the background, as asynchronous invocations of itself.

use std::sync::Arc;

use lambda_http::{Error, Request, run, service_fn};
use wsbridge::config::{
    BroadcastConfig, ChannelsConfig, FanoutConfig, ManagementConfig, SessionConfig, StoreConfig,
};
use wsbridge::fanout::Fanout;
use wsbridge::handlers::{Context, broadcast};
use wsbridge::secrets;
use wsbridge::sender::{ApiGatewaySender, ConnectionSender};
use wsbridge::shards::LambdaLauncher;
use wsbridge::store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wsbridge::logging::init();
    let table = StoreConfig::from_env()?.table_name;
    let aws = aws_config::load_from_env().await;
    // BROADCAST_API_KEY_SECRET_ID names the API key in Secrets Manager: read once, here.
    let env = secrets::resolve_env(&aws, BroadcastConfig::SECRETS).await?;
    let config = BroadcastConfig {
        emit_metrics: true,
        ..BroadcastConfig::from_lookup(env)?
    };
    let session = SessionConfig::from_env()?;
    let channels = ChannelsConfig::from_env()?.channels;
    let fanout = Fanout::new(FanoutConfig::from_env()?);
    let management = ManagementConfig::from_env()?;
    // Pages of 1 000 rows instead of DynamoDB's 1 MB (~5 000): fan-out holds up to three
    // pages at once, and smaller ones keep memory flat in the number of recipients at the
    // same read cost (BENCHMARKS.md, "Memory").
    let store = DynamoDbStore::from_sdk_config(&aws, table).with_page_size(1_000);
    let sender: Arc<dyn ConnectionSender> =
        Arc::new(ApiGatewaySender::new(&aws, management.endpoint_override));

    // Broadcasts too large for one invocation go on in invocations of this function.
    let launcher = LambdaLauncher::this_function(&aws)?;

    // What main built lives as long as the process: leaked, so that each request can be
    // handled as a task on a worker thread instead of in main's `block_on`. The fan-out engine's task then
    // shares a worker's queue with the posts it launches: fewer wake-ups across threads,
    // 5–30 % less CPU per post (BENCHMARKS.md).
    let (store, session, channels, fanout) =
        (leak(store), leak(session), leak(channels), leak(fanout));
    let ctx = leak(Context {
        store,
        sender,
        session,
        channels,
        fanout,
        // Each request carries its invocation's deadline; the handler reads it there.
        deadline: None,
    });
    let (config, launcher) = (leak(config), leak(launcher));
    run(service_fn(move |request: Request| async move {
        let handled = tokio::spawn(async move {
            let response = broadcast::handle(&request, ctx, config, launcher).await;
            // A failed part run fails its invocation: Lambda retries it.
            broadcast::invocation_result(&request, response)
        });
        handled.await?.map_err(Error::from)
    }))
    .await
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}
