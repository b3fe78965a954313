//! The local gateway: the whole bridge on one machine. It serves API Gateway's WebSocket API
//! and management API (`@connections`) on one origin and the broadcast HTTP API on another,
//! and runs the same handlers the Lambda functions run.

pub mod client;
pub mod events;
mod http_api;
mod management;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wsbridge::auth::TokenVerifier;
use wsbridge::config::{AuthConfig, BroadcastConfig, ConfigError, SessionConfig};
use wsbridge::protocol::MAX_MESSAGE_BYTES;
use wsbridge::sender::ApiGatewaySender;
use wsbridge::store::dynamodb::schema;
use wsbridge::store::{DynamoDbStore, MemoryStore, Store, StoreError};

use crate::events::ApiInfo;
use crate::websocket::Registry;

/// API Gateway's WebSocket limits, the defaults here; each can be changed for experiments.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame (API Gateway: 32 KB); larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest message (API Gateway: 128 KB); larger closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Closed with 1001 after this long without a frame from the client (API Gateway: 10 min).
    pub idle_timeout: Duration,
    /// Closed with 1001 after this long regardless (API Gateway: 2 h).
    pub max_connection_duration: Duration,
    /// Messages queued for a client before posts are answered 429.
    pub outbox_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7_200),
            outbox_capacity: 1_024,
        }
    }
}

/// Where connections and subscriptions are kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In this process; gone when it stops. Nothing to install.
    Memory,
    /// A DynamoDB endpoint (e.g. DynamoDB Local); the table is created if absent.
    DynamoDb { endpoint: String, table: String },
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The WebSocket API and `@connections` (port 0 picks a free one).
    pub ws_address: SocketAddr,
    /// The broadcast HTTP API (port 0 picks a free one).
    pub http_address: SocketAddr,
    pub stage: String,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub broadcast: BroadcastConfig,
    pub storage: Storage,
}

impl GatewayConfig {
    /// Free loopback ports, API Gateway's limits, tokens signed with the public dev secret
    /// (no clock leeway), the in-memory store: what tests and benchmarks start.
    pub fn loopback() -> Self {
        Self {
            ws_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            stage: "local".into(),
            limits: Limits::default(),
            auth: wsbridge::dev::auth_config(),
            session: SessionConfig::default(),
            broadcast: BroadcastConfig::default(),
            storage: Storage::Memory,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// What every request handler shares.
pub(crate) struct Bridge {
    pub api: ApiInfo,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    pub verifier: TokenVerifier,
    pub session: SessionConfig,
    pub broadcast: BroadcastConfig,
    pub sender: ApiGatewaySender,
    pub connections: Registry,
}

/// A started gateway; dropping it stops the listeners.
pub struct RunningGateway {
    pub ws_address: SocketAddr,
    pub http_address: SocketAddr,
    bridge: Arc<Bridge>,
    servers: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// `ws://…` URL of the WebSocket API.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_address)
    }

    /// `http://…` base URL of the management API (same origin as the WebSocket API).
    pub fn management_url(&self) -> String {
        format!("http://{}", self.ws_address)
    }

    /// `http://…` base URL of the broadcast HTTP API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_address)
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.bridge.connections.len()
    }

    /// The store the gateway runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        self.bridge.store.clone()
    }

    /// Serves until the process is stopped.
    pub async fn wait(mut self) {
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// SDK configuration for local endpoints: fixed region, and dummy credentials unless the
/// environment has real ones (DynamoDB Local accepts any).
pub fn local_sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ));
    let credentials = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(key), Ok(secret)) => Credentials::new(key, secret, None, None, "environment"),
        _ => Credentials::new("local", "local", None, None, "wsbridge-local"),
    };
    builder = builder.credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder.build()
}

async fn bind(address: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| GatewayError::Bind { address, source })
}

/// Binds both listeners, prepares the store, and serves in the background.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let ws_listener = bind(config.ws_address).await?;
    let http_listener = bind(config.http_address).await?;
    let ws_address = ws_listener
        .local_addr()
        .map_err(|source| GatewayError::Bind {
            address: config.ws_address,
            source,
        })?;
    let http_address = http_listener
        .local_addr()
        .map_err(|source| GatewayError::Bind {
            address: config.http_address,
            source,
        })?;

    let store: Arc<dyn Store> = match &config.storage {
        Storage::Memory => Arc::new(MemoryStore::new()),
        Storage::DynamoDb { endpoint, table } => {
            let client = aws_sdk_dynamodb::Client::new(&local_sdk_config(Some(endpoint)));
            schema::create_table(&client, table).await?;
            Arc::new(DynamoDbStore::new(client, table.clone()))
        }
    };
    // Handlers post through the real management API client, to this gateway's own
    // `@connections`, whatever endpoint a connection row stores.
    let sender = ApiGatewaySender::new(
        &local_sdk_config(None),
        Some(format!("http://{ws_address}")),
    );
    let bridge = Arc::new(Bridge {
        api: ApiInfo {
            api_id: "local".into(),
            stage: config.stage.clone(),
            domain: ws_address.to_string(),
        },
        limits: config.limits.clone(),
        store,
        verifier: TokenVerifier::new(&config.auth)?,
        session: config.session,
        broadcast: config.broadcast.clone(),
        sender,
        connections: Registry::default(),
    });

    let ws_app = Router::new()
        .route("/", get(websocket::upgrade))
        .route("/{stage}", get(websocket::upgrade))
        .route(
            "/@connections/{id}",
            post(management::post)
                .get(management::get)
                .delete(management::delete),
        )
        .route(
            "/{stage}/@connections/{id}",
            post(management::post_staged)
                .get(management::get_staged)
                .delete(management::delete_staged),
        )
        .with_state(bridge.clone());
    let http_app = Router::new()
        .fallback(http_api::handle)
        .with_state(bridge.clone());

    let servers = vec![
        tokio::spawn(async move {
            let service = ws_app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(ws_listener, service).await {
                tracing::error!(error = %e, "WebSocket API stopped");
            }
        }),
        tokio::spawn(async move {
            let service = http_app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(http_listener, service).await {
                tracing::error!(error = %e, "broadcast API stopped");
            }
        }),
    ];
    Ok(RunningGateway {
        ws_address,
        http_address,
        bridge,
        servers,
    })
}
