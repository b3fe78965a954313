//! `$connect`'s token: where it is found in the event, and its verification. Nothing may
//! panic, and no token is accepted unless it is HS256, signed with the verifier's key (checked
//! here with the HMAC primitive itself, not through jsonwebtoken), unexpired, with a non-empty
//! string `sub`, and — where configured — the right issuer and audience.
//!
//! Two input forms:
//! - text (the seeds): NUL-separated sections `query string`, `Authorization header`, then
//!   `Name: value` header lines; they become the `$connect` event Lambda receives, and every
//!   section is also verified as a token on its own;
//! - `0xFF` then bytes read as a [`BuiltToken`]: a token assembled from fuzzed header, claims
//!   and signing key, so the checks behind a valid signature are reached at all.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::executor::block_on;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use wsbridge::auth::{MAX_TOKEN_BYTES, TokenVerifier, VerifiedToken, now_seconds, token_of};
use wsbridge::config::AuthConfig;
use wsbridge::dev::DEV_SECRET;
use wsbridge_fuzz::sections;

const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "wsbridge";
const LEEWAY: Duration = Duration::from_secs(30);

/// The dev configuration (HS256, no issuer or audience, no leeway) and one with an issuer, an
/// audience and a leeway, both on the dev secret: built once, as the functions do.
static VERIFIERS: LazyLock<[(TokenVerifier, AuthConfig); 2]> = LazyLock::new(|| {
    let dev = wsbridge::dev::auth_config();
    let strict = AuthConfig {
        issuer: Some(ISSUER.to_owned()),
        audience: Some(AUDIENCE.to_owned()),
        leeway: LEEWAY,
        ..wsbridge::dev::auth_config()
    };
    let verifier = |config: &AuthConfig| TokenVerifier::new(config).expect("the dev key is valid");
    [(verifier(&dev), dev), (verifier(&strict), strict)]
});

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xFF, rest)) => {
            if let Ok(built) = BuiltToken::arbitrary_take_rest(Unstructured::new(rest)) {
                verify_everywhere(&built.token());
            }
        }
        _ => connect_request(data),
    }
});

/// The `$connect` event of a query string and headers, as Lambda receives it.
fn connect_request(data: &[u8]) {
    let parts = sections(data, 16);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let query = parts.first().map(|q| text(q)).unwrap_or_default();
    let mut headers = Map::new();
    if let Some(authorization) = parts.get(1) {
        headers.insert("Authorization".into(), json!(text(authorization)));
    }
    for line in parts.iter().skip(2) {
        let line = text(line);
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_owned(), json!(value.trim()));
        }
    }
    // API Gateway hands the query decoded, the last value of a repeated name in the single
    // view and every value in the multi-value one.
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        single.insert(name.to_string(), json!(value));
        if let Value::Array(values) = multi.entry(name.to_string()).or_insert_with(|| json!([])) {
            values.push(json!(value));
        }
    }
    let event = json!({
        "headers": headers,
        "queryStringParameters": single,
        "multiValueQueryStringParameters": multi,
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "connectionId": "L0SM9cOFvHcCIhw=",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "stage": "prod",
            "apiId": "abc123",
            "connectedAt": 1_700_000_000_000_i64,
            "requestTimeEpoch": 1_700_000_000_000_i64,
        },
        "isBase64Encoded": false,
    });
    for part in &parts {
        if let Ok(token) = std::str::from_utf8(part) {
            verify_everywhere(token);
        }
    }
    // An event Lambda's own types cannot read never reaches the function.
    let Ok(request) = serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(event) else {
        return;
    };
    if let Some(token) = token_of(&request) {
        check_found(&request, token);
        verify_everywhere(token);
    }
}

/// A token found is non-empty: the `token` parameter when it has a value, else what follows
/// `Bearer ` (any case) in `Authorization`, trimmed.
fn check_found(request: &ApiGatewayWebsocketProxyRequest, token: &str) {
    assert!(!token.is_empty());
    match request.query_string_parameters.first("token") {
        Some(query) if !query.is_empty() => assert_eq!(token, query),
        _ => {
            let header = request
                .headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .expect("a token without a query parameter comes from the header");
            let (scheme, rest) = header.split_at(header.find(' ').expect("a scheme"));
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{header:?}");
            assert_eq!(token, rest.trim());
        }
    }
}

fn verify_everywhere(token: &str) {
    for (verifier, config) in VERIFIERS.iter() {
        let before = now_seconds();
        let verified = block_on(verifier.verify(token));
        let after = now_seconds();
        if let Ok(verified) = verified {
            check_accepted(token, &verified, config, before, after);
        }
    }
}

/// Everything an accepted token must be, read from the token itself.
fn check_accepted(
    token: &str,
    verified: &VerifiedToken,
    config: &AuthConfig,
    before: u64,
    after: u64,
) {
    assert!(token.len() <= MAX_TOKEN_BYTES);
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments[..] else {
        panic!("accepted a token of {} segments", segments.len());
    };
    let decode = |segment: &str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .expect("an accepted segment is base64url")
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, DEV_SECRET.as_bytes());
    assert!(
        hmac::verify(
            &key,
            format!("{header}.{payload}").as_bytes(),
            &decode(signature)
        )
        .is_ok(),
        "accepted a token not signed with the key: {token}"
    );
    let header: Map<String, Value> =
        serde_json::from_slice(&decode(header)).expect("an accepted header is a JSON object");
    assert_eq!(header.get("alg"), Some(&json!("HS256")), "{header:?}");
    let claims: Map<String, Value> =
        serde_json::from_slice(&decode(payload)).expect("accepted claims are a JSON object");
    assert_eq!(claims, verified.claims);
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        !sub.is_empty() && sub == verified.user_id.as_str(),
        "{claims:?}"
    );
    let leeway = config.leeway.as_secs() as f64;
    let exp = claims.get("exp").and_then(Value::as_f64).expect("exp");
    assert!(exp.round() >= before as f64 - leeway, "expired: {claims:?}");
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("a numeric nbf");
        assert!(
            nbf.round() <= after as f64 + leeway,
            "not yet valid: {claims:?}"
        );
    }
    // jsonwebtoken also takes a list of issuers or audiences naming the configured one.
    let names = |claim: &str, expected: &str| match claims.get(claim) {
        Some(Value::String(one)) => one == expected,
        Some(Value::Array(many)) => many.contains(&json!(expected)),
        _ => false,
    };
    if let Some(issuer) = &config.issuer {
        assert!(names("iss", issuer), "issuer: {claims:?}");
    }
    if let Some(audience) = &config.audience {
        assert!(names("aud", audience), "audience: {claims:?}");
    }
}

/// A JSON value a claim or header field may hold.
#[derive(Arbitrary, Debug)]
enum Leaf {
    Known(Known),
    Text(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<Known>),
}

/// Values that pass a check, so the fuzzer need not guess them.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Known {
    Alice,
    Empty,
    Issuer,
    Audience,
    Hs256,
}

impl Known {
    fn text(self) -> &'static str {
        match self {
            Known::Alice => "alice",
            Known::Empty => "",
            Known::Issuer => ISSUER,
            Known::Audience => AUDIENCE,
            Known::Hs256 => "HS256",
        }
    }
}

impl Leaf {
    fn json(&self) -> Value {
        match self {
            Leaf::Known(known) => json!(known.text()),
            Leaf::Text(text) => json!(text),
            Leaf::Int(n) => json!(n),
            Leaf::Uint(n) => json!(n),
            Leaf::Float(n) => json!(n),
            Leaf::Bool(b) => json!(b),
            Leaf::Null => Value::Null,
            Leaf::List(items) => items.iter().map(|k| k.text()).collect(),
        }
    }
}

/// A time claim (`exp`, `nbf`).
#[derive(Arbitrary, Debug)]
enum Time {
    Absent,
    /// Seconds from now, either way.
    FromNow(i32),
    /// Seconds from now, as a JSON float.
    FromNowFloat(f32),
    Other(Leaf),
}

impl Time {
    fn json(&self, now: u64) -> Option<Value> {
        let from_now = |seconds: f64| now as f64 + seconds;
        match self {
            Time::Absent => None,
            Time::FromNow(seconds) => Some(json!(now as i64 + i64::from(*seconds))),
            Time::FromNowFloat(seconds) => Some(json!(from_now(f64::from(*seconds)))),
            Time::Other(leaf) => Some(leaf.json()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Claims {
        sub: Option<Leaf>,
        exp: Time,
        nbf: Time,
        iss: Option<Leaf>,
        aud: Option<Leaf>,
        extra: Vec<(String, Leaf)>,
    },
    /// Any text as the claims segment: duplicate keys, not an object, not JSON.
    Raw(String),
}

/// How the signature segment is made.
#[derive(Arbitrary, Debug)]
enum Signing {
    DevKey,
    OtherKey(String),
    /// HS256 with the dev key but over a different signing input.
    DevKeyOver(String),
    Empty,
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct BuiltToken {
    alg: Leaf,
    header_extra: Vec<(String, Leaf)>,
    payload: Payload,
    signing: Signing,
    /// One byte of the finished token replaced: `(position, byte)`.
    tamper: Option<(u16, u8)>,
}

impl BuiltToken {
    fn token(&self) -> String {
        let now = now_seconds();
        let mut header = Map::new();
        for (name, value) in &self.header_extra {
            header.insert(name.clone(), value.json());
        }
        header.insert("alg".into(), self.alg.json());
        let header = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        let payload = match &self.payload {
            Payload::Raw(text) => text.clone(),
            Payload::Claims {
                sub,
                exp,
                nbf,
                iss,
                aud,
                extra,
            } => {
                let mut claims = Map::new();
                for (name, value) in extra {
                    claims.insert(name.clone(), value.json());
                }
                let fields = [
                    ("sub", sub.as_ref().map(Leaf::json)),
                    ("exp", exp.json(now)),
                    ("nbf", nbf.json(now)),
                    ("iss", iss.as_ref().map(Leaf::json)),
                    ("aud", aud.as_ref().map(Leaf::json)),
                ];
                for (name, value) in fields {
                    if let Some(value) = value {
                        claims.insert(name.into(), value);
                    }
                }
                Value::Object(claims).to_string()
            }
        };
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let input = format!("{header}.{payload}");
        let hs256 = |key: &[u8], message: &str| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            URL_SAFE_NO_PAD.encode(hmac::sign(&key, message.as_bytes()))
        };
        let signature = match &self.signing {
            Signing::DevKey => hs256(DEV_SECRET.as_bytes(), &input),
            Signing::OtherKey(key) => hs256(key.as_bytes(), &input),
            Signing::DevKeyOver(other) => hs256(DEV_SECRET.as_bytes(), other),
            Signing::Empty => String::new(),
            Signing::Text(text) => text.clone(),
        };
        let mut token = format!("{input}.{signature}").into_bytes();
        if let Some((position, byte)) = self.tamper
            && !token.is_empty()
        {
            let at = usize::from(position) % token.len();
            token[at] = byte;
        }
        String::from_utf8_lossy(&token).into_owned()
    }
}
