//! AWS Signature Version 4 for the one request fan-out makes, PostToConnection, through
//! aws-sigv4's own primitives (`generate_signing_key`, `calculate_signature`). aws-sigv4's
//! full signer derives the signing key again (four HMACs), parses the URI, copies and sorts
//! the headers and formats the canonical request for every request; here the key and every
//! string that does not change are made once a day, and the canonical request is hashed as
//! it is written. A test holds the result to the full signer's, byte for byte.

use std::borrow::Cow;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use http::HeaderValue;
use percent_encoding::{AsciiSet, utf8_percent_encode};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::endpoint::LABEL;

/// API Gateway's signing name, for its management API as for its invoke URLs.
const SERVICE: &str = "execute-api";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// aws-sigv4 encodes the already encoded path once more for every service but S3, `/`
/// excepted (its `percent_encode_path`, the SDK's greedy label set).
const CANONICAL: &AsciiSet = &LABEL.remove(b'/');

/// A request's time as `x-amz-date` writes it (`YYYYMMDD'T'HHMMSS'Z'`), written without
/// allocating, and the UTC day it falls on.
#[derive(Debug, Clone, Copy)]
pub(super) struct AmzDate {
    time: SystemTime,
    text: [u8; 16],
    /// The Julian day: the signing key changes with it.
    day: i32,
}

impl AmzDate {
    pub(super) fn at(time: SystemTime) -> Self {
        let utc = OffsetDateTime::from(time);
        let mut text = *b"00000000T000000Z";
        digits(
            &mut text[0..4],
            u32::try_from(utc.year()).unwrap_or_default(),
        );
        digits(&mut text[4..6], u8::from(utc.month()).into());
        digits(&mut text[6..8], utc.day().into());
        digits(&mut text[9..11], utc.hour().into());
        digits(&mut text[11..13], utc.minute().into());
        digits(&mut text[13..15], utc.second().into());
        Self {
            time,
            text,
            day: utc.date().to_julian_day(),
        }
    }

    pub(super) fn time(&self) -> SystemTime {
        self.time
    }

    pub(super) fn day(&self) -> i32 {
        self.day
    }

    pub(super) fn as_str(&self) -> &str {
        // Only ASCII digits, `T` and `Z` are ever written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    fn yyyymmdd(&self) -> &str {
        &self.as_str()[..8]
    }
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Everything that signs the posts of one UTC day with one set of credentials in one
/// region: derived once, reused until the day or the credentials change.
#[derive(Clone)]
pub(super) struct SigningKey {
    day: i32,
    key: Vec<u8>,
    /// `{yyyymmdd}/{region}/execute-api/aws4_request`
    scope: String,
    /// `AWS4-HMAC-SHA256 Credential={key id}/{scope}, SignedHeaders={…}, Signature=`
    authorization_prefix: String,
    session_token: Option<HeaderValue>,
}

// Hand-written so that the key never reaches a log line through `{:?}`.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("day", &self.day)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of `date`'s day. Fails on credentials that cannot go into a header.
    pub(super) fn derive(
        credentials: &Credentials,
        date: &AmzDate,
        region: &str,
    ) -> Result<Self, String> {
        let key = generate_signing_key(credentials.secret_access_key(), date.time, region, SERVICE)
            .as_ref()
            .to_vec();
        let scope = format!("{}/{region}/{SERVICE}/aws4_request", date.yyyymmdd());
        let session_token = credentials
            .session_token()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| "the session token is not a valid header value".to_owned())?;
        let signed_headers = if session_token.is_some() {
            "host;x-amz-date;x-amz-security-token"
        } else {
            "host;x-amz-date"
        };
        let authorization_prefix = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature=",
            credentials.access_key_id()
        );
        HeaderValue::from_str(&authorization_prefix)
            .map_err(|_| "the access key id is not a valid header value".to_owned())?;
        Ok(Self {
            day: date.day,
            key,
            scope,
            authorization_prefix,
            session_token,
        })
    }

    pub(super) fn day(&self) -> i32 {
        self.day
    }

    /// `x-amz-security-token`, when the credentials have a session token.
    pub(super) fn session_token(&self) -> Option<&HeaderValue> {
        self.session_token.as_ref()
    }

    /// The `Authorization` header of `request` made at `date`.
    pub(super) fn authorization(&self, request: &CanonicalRequest<'_>, date: &AmzDate) -> String {
        let hashed = request.hash(date, self.session_token.as_ref());
        // One buffer for the string to sign and then the header, sized for the longer.
        let mut text = String::with_capacity(self.authorization_prefix.len() + 64);
        text.push_str(ALGORITHM);
        text.push('\n');
        text.push_str(date.as_str());
        text.push('\n');
        text.push_str(&self.scope);
        text.push('\n');
        push_hex(&mut text, &hashed);
        let signature = calculate_signature(&self.key, text.as_bytes());
        text.clear();
        text.push_str(&self.authorization_prefix);
        text.push_str(&signature);
        text
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
}

/// The parts of a PostToConnection request that its signature covers besides the date and
/// the session token: the method is always POST, the query always empty.
pub(super) struct CanonicalRequest<'a> {
    pub(super) path: CanonicalPath<'a>,
    pub(super) host: &'a [u8],
    pub(super) payload_sha256_hex: &'a str,
}

/// A request's path as SigV4 signs it: normalized, then percent-encoded once more.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CanonicalPath<'a> {
    /// The endpoint's canonical `…/@connections/`, and the id as it is in the URI, to be
    /// encoded again while it is hashed.
    Split {
        prefix: &'a str,
        encoded_id: &'a str,
    },
    /// A path canonicalized whole.
    Whole(String),
}

impl CanonicalRequest<'_> {
    /// SHA-256 of the canonical request, written straight into the hasher:
    /// `POST\n{path}\n\n{headers}\n{signed headers}\n{payload hash}`, headers sorted by name.
    fn hash(&self, date: &AmzDate, session_token: Option<&HeaderValue>) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"POST\n");
        match &self.path {
            CanonicalPath::Split { prefix, encoded_id } => {
                hasher.update(prefix.as_bytes());
                for piece in utf8_percent_encode(encoded_id, CANONICAL) {
                    hasher.update(piece.as_bytes());
                }
            }
            CanonicalPath::Whole(path) => hasher.update(path.as_bytes()),
        }
        hasher.update(b"\n\nhost:");
        hasher.update(self.host);
        hasher.update(b"\nx-amz-date:");
        hasher.update(date.as_str().as_bytes());
        match session_token {
            Some(token) => {
                hasher.update(b"\nx-amz-security-token:");
                hasher.update(token.as_bytes());
                hasher.update(b"\n\nhost;x-amz-date;x-amz-security-token\n");
            }
            None => hasher.update(b"\n\nhost;x-amz-date\n"),
        }
        hasher.update(self.payload_sha256_hex.as_bytes());
        hasher.finalize().into()
    }
}

/// `path` as SigV4 signs it: dot segments and empty segments removed (RFC 3986 5.2.4, as
/// aws-sigv4 does with its default settings), then percent-encoded once more.
pub(super) fn canonical_path(path: &str) -> String {
    utf8_percent_encode(&normalize(path), CANONICAL).to_string()
}

/// aws-sigv4's `normalize_uri_path`, for the absolute paths a post has.
fn normalize(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    if !(path.contains('.') || path.contains("//")) {
        return Cow::Borrowed(path);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    let ends_with_slash = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|end| path.ends_with(end));
    if ends_with_slash && !normalized.ends_with('/') {
        normalized.push('/');
    }
    Cow::Owned(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_amz_date_is_the_utc_time_and_the_day_turns_at_midnight() {
        // GIVEN the last second of 2023 and the first of 2024 (UTC)
        let before = UNIX_EPOCH + Duration::from_secs(1_704_067_199);
        let after = before + Duration::from_secs(1);
        // THEN the dates read so, and they fall on consecutive days
        assert_eq!(AmzDate::at(before).as_str(), "20231231T235959Z");
        assert_eq!(AmzDate::at(after).as_str(), "20240101T000000Z");
        assert_eq!(AmzDate::at(after).day(), AmzDate::at(before).day() + 1);
        assert_eq!(AmzDate::at(after).yyyymmdd(), "20240101");
    }

    #[test]
    fn paths_normalize_as_aws_sigv4_normalizes_them() {
        let cases = [
            ("/prod/@connections/a", "/prod/%40connections/a"),
            ("/a/./b/../c", "/a/c"),
            ("//a//b", "/a/b"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/%2F", "/%252F"),
            ("", "/"),
        ];
        for (path, canonical) in cases {
            assert_eq!(canonical_path(path), canonical, "{path}");
        }
    }

    #[test]
    fn a_key_whose_credentials_cannot_be_sent_is_refused_with_a_reason() {
        let date = AmzDate::at(SystemTime::now());
        let token = Credentials::new("AKID", "secret", Some("a\nb".into()), None, "test");
        let key_id = Credentials::new("AK\nID", "secret", None, None, "test");
        assert!(
            SigningKey::derive(&token, &date, "eu-west-1")
                .unwrap_err()
                .contains("session token")
        );
        assert!(
            SigningKey::derive(&key_id, &date, "eu-west-1")
                .unwrap_err()
                .contains("access key id")
        );
    }
}
