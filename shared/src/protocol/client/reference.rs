//! `ref`: a client's label for a request, echoed in the reply to it.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ErrorCode, ErrorFrame};

/// Longest string `ref`, in bytes: room for a UUID or a counter with a prefix, small enough
/// that echoing it costs nothing.
pub const MAX_REF_BYTES: usize = 64;

/// A frame's `ref` as the client sent it: echoed with the same JSON type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Ref {
    Number(u64),
    Text(String),
}

/// A reply or error frame, with the `ref` of the frame it answers.
#[derive(Debug, Serialize)]
pub struct Reply<'a, T: Serialize> {
    #[serde(flatten)]
    pub frame: &'a T,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a Ref>,
}

/// Removes `ref` from a frame's fields: none, a valid one, or an `invalid_ref` error (a ref
/// that cannot be echoed faithfully is refused rather than dropped, so a client never waits
/// for a reply it cannot recognise).
pub(super) fn take(fields: &mut Map<String, Value>) -> Result<Option<Ref>, ErrorFrame> {
    let invalid = || {
        ErrorFrame::new(
            ErrorCode::InvalidRef,
            format!(
                "\"ref\" must be a string of 1 to {MAX_REF_BYTES} bytes or a non-negative integer"
            ),
        )
    };
    match fields.remove("ref") {
        None => Ok(None),
        Some(Value::String(text)) if !text.is_empty() && text.len() <= MAX_REF_BYTES => {
            Ok(Some(Ref::Text(text)))
        }
        Some(Value::Number(number)) => number
            .as_u64()
            .map(Ref::Number)
            .map(Some)
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}
