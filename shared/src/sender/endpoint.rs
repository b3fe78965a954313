//! Where a post goes: a management API endpoint, parsed once, and the URI of one connection
//! under it, built as `aws-sdk-apigatewaymanagement` builds it.

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::sigv4::{CanonicalPath, canonical_path};

/// What the SDK percent-encodes in an `httpLabel` such as `PostToConnection`'s
/// `{ConnectionId}` (aws-smithy-http's `BASE_SET`, copied: that crate keeps it private). A
/// connection id encoded any other way would reach another path, or be signed differently
/// from how API Gateway reads it. A test holds this to the SDK's own encoder.
pub(super) const LABEL: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'/')
    .add(b':')
    .add(b',')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'@')
    .add(b'!')
    .add(b'$')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b';')
    .add(b'=')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'"')
    .add(b'^')
    .add(b'`')
    .add(b'\\');

const CONNECTIONS: &str = "/@connections";

/// One management API endpoint (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`,
/// a custom domain, the local gateway), parsed once and reused by every post to it.
#[derive(Debug)]
pub(super) struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header as sent and as signed: the authority without a default port, since
    /// aws-sigv4 signs it so and hyper would send it so.
    host: HeaderValue,
    /// The endpoint's path less one trailing slash (the stage, or nothing): the SDK joins
    /// an endpoint's path and an operation's path the same way.
    base_path: String,
    /// `{base_path}/@connections/` as SigV4 canonicalizes it, so that a post only has to
    /// canonicalize its connection id.
    canonical_prefix: String,
}

/// The URI of one post, and where its connection id starts in the path.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) uri: Uri,
    id_start: usize,
}

impl Endpoint {
    /// `endpoint` as the SDK's `endpoint_url` takes it; a query is ignored, as there.
    pub(super) fn parse(endpoint: &str) -> Result<Self, String> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| format!("endpoint {endpoint:?} is not a URI: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::HTTPS,
            Some("http") => Scheme::HTTP,
            _ => return Err(format!("endpoint {endpoint:?} is not http(s)://")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("endpoint {endpoint:?} carries user info"));
        }
        let default_port = matches!(
            (scheme.as_str(), authority.port_u16()),
            ("https", Some(443)) | ("http", Some(80))
        );
        let host = if default_port {
            authority.host()
        } else {
            authority.as_str()
        };
        let host = HeaderValue::from_str(host)
            .map_err(|_| format!("endpoint {endpoint:?} has an invalid host"))?;
        let path = uri.path();
        let base_path = path.strip_suffix('/').unwrap_or(path).to_owned();
        let canonical_prefix = canonical_path(&format!("{base_path}{CONNECTIONS}")) + "/";
        Ok(Self {
            scheme,
            authority,
            host,
            base_path,
            canonical_prefix,
        })
    }

    pub(super) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// `{endpoint}/@connections/{connection id}`, the id percent-encoded as one path segment.
    pub(super) fn target(&self, connection_id: &str) -> Result<Target, String> {
        if connection_id.is_empty() {
            return Err("the connection id is empty".into());
        }
        // One allocation: the path is written once and moved into the URI.
        let mut path = String::with_capacity(
            self.base_path.len() + CONNECTIONS.len() + 1 + connection_id.len() * 3,
        );
        path.push_str(&self.base_path);
        path.push_str(CONNECTIONS);
        path.push('/');
        let id_start = path.len();
        path.extend(utf8_percent_encode(connection_id, LABEL));
        let path = PathAndQuery::from_maybe_shared(bytes::Bytes::from(path))
            .map_err(|e| format!("connection id {connection_id:?} makes an invalid path: {e}"))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| format!("connection id {connection_id:?} makes an invalid URI: {e}"))?;
        Ok(Target { uri, id_start })
    }

    /// The target's path as SigV4 signs it.
    pub(super) fn canonical_path<'a>(&'a self, target: &'a Target) -> CanonicalPath<'a> {
        // The path is ASCII (the id is percent-encoded), so any index is a boundary.
        let encoded_id = target.uri.path().get(target.id_start..).unwrap_or_default();
        // `.` and `..` are the only ids that normalization changes (a `/` in an id is
        // encoded): they take the general way, every other id the prefix computed once.
        if encoded_id == "." || encoded_id == ".." {
            CanonicalPath::Whole(canonical_path(target.uri.path()))
        } else {
            CanonicalPath::Split {
                prefix: &self.canonical_prefix,
                encoded_id,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::random;

    #[test]
    fn a_connection_id_is_encoded_as_the_sdk_encodes_the_connection_id_label() {
        // GIVEN ids of every kind: API Gateway's own, and random ones of any character
        let (seed, mut rng) = random::seeded();
        let mut ids: Vec<String> = ["L0SM9cOFvHcCIhw=", "a b/c+d=", "日本語", "%41", "~-._"]
            .map(String::from)
            .to_vec();
        ids.extend((0..2_000).map(|_| random::text(&mut rng, 1..40)));
        let endpoint = Endpoint::parse("https://h.example.com/prod").unwrap();
        for id in ids {
            // WHEN the lean path builds its URI
            let target = endpoint.target(&id).unwrap();
            // THEN the id is what the SDK's label encoder makes of it (seed {seed})
            let sdk = aws_smithy_http::label::fmt_string(
                &id,
                aws_smithy_http::label::EncodingStrategy::Default,
            );
            assert_eq!(
                target.uri.path(),
                format!("/prod/@connections/{sdk}"),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn endpoints_join_as_the_sdk_joins_them() {
        // GIVEN endpoints with and without a stage, a trailing slash, a port
        let cases = [
            (
                "https://a.example.com/prod",
                "https://a.example.com/prod/@connections/x",
                "a.example.com",
            ),
            (
                "https://a.example.com/prod/",
                "https://a.example.com/prod/@connections/x",
                "a.example.com",
            ),
            (
                "https://a.example.com",
                "https://a.example.com/@connections/x",
                "a.example.com",
            ),
            (
                "https://a.example.com:443/p",
                "https://a.example.com:443/p/@connections/x",
                "a.example.com",
            ),
            (
                "http://127.0.0.1:3001/local",
                "http://127.0.0.1:3001/local/@connections/x",
                "127.0.0.1:3001",
            ),
            ("http://[::1]:80", "http://[::1]:80/@connections/x", "[::1]"),
        ];
        for (endpoint, uri, host) in cases {
            // WHEN a post targets connection `x`
            let parsed = Endpoint::parse(endpoint).unwrap();
            let target = parsed.target("x").unwrap();
            // THEN the URI and the Host header are the SDK's
            assert_eq!(target.uri.to_string(), uri, "{endpoint}");
            assert_eq!(parsed.host(), host, "{endpoint}");
        }
    }

    #[test]
    fn endpoints_and_ids_the_sdk_refuses_are_refused_with_a_reason() {
        for endpoint in [
            "",
            "ftp://h/x",
            "/just/a/path",
            "https://user@h/x",
            "not a uri",
        ] {
            let error = Endpoint::parse(endpoint).unwrap_err();
            assert!(error.contains("endpoint"), "{endpoint}: {error}");
        }
        let endpoint = Endpoint::parse("https://h").unwrap();
        assert_eq!(
            endpoint.target("").unwrap_err(),
            "the connection id is empty"
        );
    }
}
