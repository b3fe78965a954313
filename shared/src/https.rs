//! The bridge's own HTTPS client, for the requests it makes without the SDK (posts of a
//! fan-out, JWK set fetches): the stack the SDK's default HTTPS client is made of (hyper,
//! rustls on aws-lc-rs), so that no second HTTP or TLS stack is linked into the functions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use tracing::warn;

pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// As the SDK's default HTTPS client (aws-smithy-http-client) is built: rustls on aws-lc-rs
/// with the system's root certificates (warned about and left empty when there are none, so
/// that `http://` endpoints still work), TCP no-delay, a hyper pool with tokio's timer.
/// HTTP/1.1 only, as the benchmark's raw loop posts: whether HTTP/2 would post faster to API
/// Gateway is not measured. Redirects are never followed (hyper does not): the URL
/// configured is the one trusted.
pub(crate) fn client(connect_timeout: Option<Duration>) -> HttpsClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            // aws-lc-rs's default provider supports both TLS 1.2 and 1.3.
            .expect("aws-lc-rs supports rustls's default protocol versions")
    };
    let tls = match builder().with_native_roots() {
        Ok(roots) => roots.with_no_client_auth(),
        Err(error) => {
            warn!(%error, "no root certificates: https:// requests will fail");
            builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(connect_timeout);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// An error and its causes, `: `-separated: hyper's own message alone ("client error
/// (Connect)") does not say what went wrong.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
