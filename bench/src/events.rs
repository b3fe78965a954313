//! The API Gateway HTTP API (payload 2.0) events the harness hands the broadcast function,
//! made from `events/broadcast-topic.json` so that they are shaped as API Gateway sends them.

use bytes::Bytes;
use serde_json::Value;

use crate::fixtures::BROADCAST_BODY;
use crate::report::Result;

fn sample() -> Result<Value> {
    let path = crate::workspace_root().join("events/broadcast-topic.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

/// A request of the server API: `method` `path` with `body`, routed as `route_key`.
fn request(method: &str, path: &str, route_key: &str, body: Option<String>) -> Result<Bytes> {
    let mut event = sample()?;
    event["routeKey"] = route_key.into();
    event["rawPath"] = path.into();
    event["requestContext"]["routeKey"] = route_key.into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    match body {
        Some(body) => {
            event["headers"]["content-length"] = body.len().to_string().into();
            event["body"] = body.into();
        }
        None => {
            if let Some(headers) = event["headers"].as_object_mut() {
                headers.remove("content-length");
                headers.remove("content-type");
            }
            if let Some(event) = event.as_object_mut() {
                event.remove("body");
            }
        }
    }
    Ok(Bytes::from(event.to_string()))
}

/// `POST /broadcast` of the fixture message to `topic`, in the background from the start
/// when `run_async`.
pub fn broadcast(topic: &str, run_async: bool) -> Result<Bytes> {
    let mut body: Value = serde_json::from_str(BROADCAST_BODY)?;
    body["topic"] = topic.into();
    if run_async {
        body["async"] = true.into();
    }
    request(
        "POST",
        "/broadcast",
        "POST /broadcast",
        Some(body.to_string()),
    )
}

/// `GET /broadcasts/{id}` (`id` as the function answers it: a UUID, nothing to encode).
pub fn status(id: &str) -> Result<Bytes> {
    let path = format!("/broadcasts/{id}");
    request("GET", &path, "GET /broadcasts/{id+}", None)
}

/// The HTTP response a function returned for an HTTP API event: status and JSON body.
pub fn response(body: &[u8]) -> Result<(u16, Value)> {
    let response: Value = serde_json::from_slice(body)?;
    let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
    let body = response["body"]
        .as_str()
        .and_then(|body| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    Ok((status, body))
}
