//! A tiny Lambda Runtime API (the 2018-06-01 interface `lambda_runtime` polls): it tells
//! when a function asked for its first invocation, hands out queued events, and collects the
//! responses. Enough to run the release binaries as Lambda runs them, on this machine, one
//! process at a time (`lambda_service` runs many, with Lambda's Invoke API in front).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use wsbridge::clock::now_millis;

use crate::fixtures::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use crate::report::Result;

pub(crate) const NEXT: &str = "/2018-06-01/runtime/invocation/next";
pub(crate) const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
pub(crate) const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

/// What a function answered to one invocation (or to its start-up).
#[derive(Debug)]
pub struct Outcome {
    pub request_id: String,
    pub error: bool,
    pub body: Bytes,
}

struct Invocation {
    request_id: String,
    deadline_ms: i64,
    event: Bytes,
}

struct State {
    pending: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    polls: mpsc::UnboundedSender<Instant>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

pub struct RuntimeApi {
    address: SocketAddr,
    state: Arc<State>,
    polls: mpsc::UnboundedReceiver<Instant>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    server: JoinHandle<()>,
    invocations: u64,
}

impl RuntimeApi {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (polls_in, polls) = mpsc::unbounded_channel();
        let (outcomes_in, outcomes) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            pending: Mutex::default(),
            queued: Notify::new(),
            polls: polls_in,
            outcomes: outcomes_in,
        });
        let serving = state.clone();
        let server = serve_http1(listener, move |request| answer(request, serving.clone()));
        Ok(Self {
            address,
            state,
            polls,
            outcomes,
            server,
            invocations: 0,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.address.to_string()
    }

    /// Forgets what earlier functions did.
    pub fn reset(&mut self) {
        while self.polls.try_recv().is_ok() {}
        while self.outcomes.try_recv().is_ok() {}
        self.state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Queues an event for the next poll, due `timeout` from now; returns its request id.
    pub fn invoke(&mut self, event: Bytes, timeout: Duration) -> String {
        self.invocations += 1;
        let request_id = format!("bench-{:08}", self.invocations);
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let deadline_ms = now_millis().saturating_add(timeout_ms);
        self.state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Invocation {
                request_id: request_id.clone(),
                deadline_ms,
                event,
            });
        self.state.queued.notify_one();
        request_id
    }

    /// When `function` next polls for an invocation; fails if it exits first.
    pub async fn next_poll(
        &mut self,
        function: &mut Function,
        within: Duration,
    ) -> Result<Instant> {
        tokio::select! {
            polled = tokio::time::timeout(within, self.polls.recv()) => {
                polled.map_err(|_| format!("no poll within {within:?}"))?.ok_or_else(|| "stub stopped".into())
            }
            exited = function.child.wait() => Err(function.died(exited?).await.into()),
        }
    }

    /// The function's answer to an invocation; fails if it exits first.
    pub async fn outcome(&mut self, function: &mut Function, within: Duration) -> Result<Outcome> {
        tokio::select! {
            outcome = tokio::time::timeout(within, self.outcomes.recv()) => {
                outcome.map_err(|_| format!("no response within {within:?}"))?.ok_or_else(|| "stub stopped".into())
            }
            exited = function.child.wait() => Err(function.died(exited?).await.into()),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves HTTP/1 on `listener` until the task is aborted, each request answered by
/// `answer`: the accept loop of the harness's stand-ins for AWS APIs.
pub fn serve_http1<F, Fut>(listener: TcpListener, answer: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                // A peer that goes away mid-request (a killed function mid-poll) ends its
                // connection: nothing to report.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}

async fn answer(
    request: Request<Incoming>,
    state: Arc<State>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if method == Method::GET && path == NEXT {
        let _ = state.polls.send(Instant::now());
        // Held until an event is queued; a function that is killed meanwhile drops it.
        loop {
            let queued = state.queued.notified();
            let next = state
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some(invocation) = next {
                return Ok(invocation_response(
                    invocation.request_id,
                    invocation.deadline_ms,
                    invocation.event,
                ));
            }
            queued.await;
        }
    }
    let outcome = match path.strip_prefix(INVOCATION) {
        _ if path == INIT_ERROR => Some(("init".to_owned(), true)),
        Some(rest) => match rest.rsplit_once('/') {
            Some((id, "response")) => Some((id.to_owned(), false)),
            Some((id, "error")) => Some((id.to_owned(), true)),
            _ => None,
        },
        None => None,
    };
    let Some((request_id, error)) = outcome.filter(|_| method == Method::POST) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let _ = state.outcomes.send(Outcome {
        request_id,
        error,
        body,
    });
    Ok(status(StatusCode::ACCEPTED))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
    *response.status_mut() = code;
    response
}

/// The answer to `GET …/invocation/next`: the event, with the headers `lambda_runtime` reads.
pub(crate) fn invocation_response(
    request_id: String,
    deadline_ms: i64,
    event: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(event));
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json".into());
    set("lambda-runtime-aws-request-id", request_id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:wsbridge-bench".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".into(),
    );
    response
}

/// The environment Lambda gives a function (`lambda_runtime` requires the name, memory size
/// and version), plus dummy credentials and what every wsbridge function reads.
pub fn lambda_env(function: &str, runtime_api: &str, memory_mb: u32) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", &memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            &format!("/aws/lambda/{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2025/01/01/[$LATEST]0123456789abcdef",
        ),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", "bench-session-token"),
        ("_HANDLER", "bootstrap"),
        ("TZ", ":UTC"),
        ("TABLE_NAME", "wsbridge-bench"),
        // Not the dev secret: the functions refuse a published one, as deployed.
        ("JWT_SECRET", "wsbridge-bench-secret-of-at-least-32-bytes"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// A function process started against the stub; killed when dropped.
pub struct Function {
    child: Child,
    pub pid: String,
}

impl Function {
    /// Starts `binary` with exactly `env` (nothing inherited, as in Lambda).
    pub fn spawn(binary: &Path, args: &[String], env: &[(String, String)]) -> Result<Self> {
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let pid = child.id().ok_or("function exited at once")?.to_string();
        Ok(Self { child, pid })
    }

    async fn died(&mut self, status: std::process::ExitStatus) -> String {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        format!("function exited with {status}: {}", stderr.trim())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
