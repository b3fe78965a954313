//! A stand-in for the Lambda API on loopback, for the code that invokes functions (the
//! broadcast function starting the parts of a background broadcast): the real SDK client of
//! `LambdaLauncher` calls it, and it records what was asked and which IAM action that needs.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::TcpListener;
use wsbridge::shards::LambdaLauncher;
use wsbridge_local::local_sdk_config;

/// One call the Lambda stand-in received.
#[derive(Debug, Clone)]
pub struct LambdaCall {
    /// The IAM action the call needs, or `unknown: <method> <path>` for a call the stand-in
    /// does not know.
    pub action: String,
    pub function: String,
    /// `X-Amz-Invocation-Type`: `Event` for an asynchronous invocation.
    pub invocation_type: Option<String>,
    pub payload: String,
}

type LambdaCalls = Arc<Mutex<Vec<LambdaCall>>>;

/// The Lambda API on loopback, as far as the code uses it: `Invoke` (REST path
/// `POST /2015-03-31/functions/{name}/invocations`) answered as Lambda answers an
/// asynchronous one, `202`. Any other call is recorded as unknown and refused, so that the
/// template check names it: give it its IAM action here.
pub struct LambdaStandIn {
    endpoint: String,
    calls: LambdaCalls,
}

impl LambdaStandIn {
    pub async fn start() -> Self {
        let calls = LambdaCalls::default();
        let app = Router::new()
            .route("/2015-03-31/functions/{function}/invocations", post(invoke))
            .fallback(unknown)
            .with_state(calls.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the Lambda stand-in");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, calls }
    }

    /// A launcher whose SDK client calls this stand-in, invoking `function`.
    pub fn launcher(&self, function: &str) -> LambdaLauncher {
        LambdaLauncher::new(&local_sdk_config(Some(&self.endpoint)), function)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<LambdaCall> {
        self.calls.lock().expect("calls").clone()
    }
}

async fn invoke(
    State(calls): State<LambdaCalls>,
    Path(function): Path<String>,
    headers: HeaderMap,
    payload: String,
) -> StatusCode {
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    calls.lock().expect("calls").push(LambdaCall {
        action: "lambda:InvokeFunction".into(),
        function,
        invocation_type,
        payload,
    });
    StatusCode::ACCEPTED
}

async fn unknown(State(calls): State<LambdaCalls>, request: axum::extract::Request) -> StatusCode {
    calls.lock().expect("calls").push(LambdaCall {
        action: format!("unknown: {} {}", request.method(), request.uri().path()),
        function: String::new(),
        invocation_type: None,
        payload: String::new(),
    });
    StatusCode::BAD_REQUEST
}
