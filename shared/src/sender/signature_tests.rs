//! The lean path's requests against aws-sigv4's full signer, the one the SDK signs with: the
//! same `Authorization` and the same signed headers, byte for byte, for random connection
//! ids, payloads, times (across midnights), credentials with and without session tokens,
//! regions and endpoints. Nothing written here by hand can drift from AWS's algorithm
//! without this failing, and the seed it prints replays the failure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::BodyExt;
use rand::Rng;
use rand::rngs::StdRng;

use super::endpoint::Endpoint;
use super::post::request;
use super::sigv4::{AmzDate, SigningKey};
use super::{Payload, random};

const REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "cn-north-1",
    "us-gov-west-1",
    "il-central-1",
];

/// Stages, none, trailing slashes, custom ports, default ports written out, http and https,
/// IPv6, and paths that normalization changes.
const ENDPOINTS: &[&str] = &[
    "https://abc123defg.execute-api.eu-west-1.amazonaws.com/prod",
    "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/",
    "https://ws.example.com",
    "https://ws.example.com:8443/v1/stage",
    "https://ws.example.com:443/prod",
    "http://127.0.0.1:3001/local",
    "http://localhost:80/dev",
    "http://[::1]:9000",
    "https://h.example.com/a/./b/../c",
    "https://h.example.com/st%20age",
    "http://h.example.com//double",
];

const KEY_ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

struct Case {
    credentials: Credentials,
    region: &'static str,
    endpoint: &'static str,
    connection_id: String,
    payload: Payload,
    time: SystemTime,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("token", &self.credentials.session_token().is_some())
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("connection_id", &self.connection_id)
            .field("payload_bytes", &self.payload.bytes().len())
            .field("time", &AmzDate::at(self.time).as_str())
            .finish()
    }
}

/// 2000-01-01 to 2099-12-31, a third of the times within 3 s of a midnight.
fn random_time(rng: &mut StdRng) -> SystemTime {
    const Y2000: u64 = 946_684_800;
    const DAYS: u64 = 36_524;
    let day = Y2000 + rng.random_range(0..DAYS) * 86_400;
    let seconds = if rng.random_bool(1.0 / 3.0) {
        day + 86_400 + rng.random_range(0..6) - 3
    } else {
        day + rng.random_range(0..86_400)
    };
    UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(rng.random_range(0..1_000))
}

fn random_case(rng: &mut StdRng) -> Case {
    let token = rng
        .random_bool(0.5)
        .then(|| random::word(rng, 16..800, BASE64));
    let credentials = Credentials::new(
        format!("AKIA{}", random::word(rng, 16..17, KEY_ID)),
        random::word(rng, 40..41, BASE64),
        token,
        None,
        "test",
    );
    let payload: Vec<u8> = (0..rng.random_range(0..512))
        .map(|_| rng.random())
        .collect();
    Case {
        credentials,
        region: REGIONS[rng.random_range(0..REGIONS.len())],
        endpoint: ENDPOINTS[rng.random_range(0..ENDPOINTS.len())],
        connection_id: random::text(rng, 1..48),
        payload: Payload::new(payload),
        time: random_time(rng),
    }
}

/// The headers aws-sigv4's full signer adds to a POST of the payload to `uri` carrying
/// `headers`, with the SDK's default settings.
fn full_signer(case: &Case, uri: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let identity = case.credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(case.region)
        .name("execute-api")
        .time(case.time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        uri,
        headers.iter().copied(),
        SignableBody::Bytes(case.payload.bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut added: Vec<(String, String)> = instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    added.sort();
    added
}

/// Checks one case; the message names it.
fn check(case: &Case, seed: u64) {
    let context = || format!("seed {seed}, {case:?}");
    let endpoint = Endpoint::parse(case.endpoint).unwrap();
    let date = AmzDate::at(case.time);
    let key = SigningKey::derive(&case.credentials, &date, case.region).unwrap();
    let lean = request(
        &endpoint,
        &case.connection_id,
        &case.payload,
        Some((&key, &date)),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", context()));
    let header = |name: &str| {
        lean.headers()
            .get(name)
            .map(|value| (name.to_owned(), value.to_str().unwrap().to_owned()))
    };
    let mut signed: Vec<(String, String)> = ["authorization", "x-amz-date", "x-amz-security-token"]
        .into_iter()
        .filter_map(header)
        .collect();
    signed.sort();
    let uri = lean.uri().to_string();

    // The full signer, finding the host in the URI as the SDK's requests have it there
    assert_eq!(signed, full_signer(case, &uri, &[]), "{}", context());
    // and given the Host the lean request sends: the same, so that is what was signed
    let host = lean.headers()["host"].to_str().unwrap();
    assert_eq!(
        signed,
        full_signer(case, &uri, &[("host", host)]),
        "{}",
        context()
    );
    // The body is the payload's own buffer, not a copy
    let body = futures::executor::block_on(lean.into_body().collect())
        .unwrap()
        .to_bytes();
    assert_eq!(body, case.payload.bytes());
    assert_eq!(body.as_ptr(), case.payload.bytes().as_ptr());
}

#[test]
fn lean_signatures_are_byte_identical_to_aws_sigv4s_full_signer() {
    // GIVEN 3 000 random posts, and ids that dot-segment normalization changes
    let (seed, mut rng) = random::seeded();
    let mut cases: Vec<Case> = (0..3_000).map(|_| random_case(&mut rng)).collect();
    for id in [".", "..", "...", "a.b", "%2e"] {
        for endpoint in ["https://h.example.com/prod", "https://h.example.com"] {
            let mut case = random_case(&mut rng);
            case.connection_id = id.into();
            case.endpoint = endpoint;
            cases.push(case);
        }
    }
    // WHEN each is built and signed by the lean path
    // THEN its Authorization and every signed header are the full signer's
    for case in &cases {
        check(case, seed);
    }
}

#[test]
fn one_key_signs_a_whole_day() {
    // GIVEN the key derived for a post at 00:00:01
    let (seed, mut rng) = random::seeded();
    let mut case = random_case(&mut rng);
    let midnight = UNIX_EPOCH + Duration::from_secs(1_714_521_600);
    case.time = midnight + Duration::from_secs(1);
    let key = SigningKey::derive(&case.credentials, &AmzDate::at(case.time), case.region).unwrap();
    let endpoint = Endpoint::parse(case.endpoint).unwrap();
    // WHEN it signs posts throughout that day
    for seconds in [2, 3_600, 43_200, 86_399] {
        case.time = midnight + Duration::from_secs(seconds);
        let date = AmzDate::at(case.time);
        let lean = request(
            &endpoint,
            &case.connection_id,
            &case.payload,
            Some((&key, &date)),
        )
        .unwrap();
        // THEN every signature is the one the full signer, deriving its own key, makes
        let uri = lean.uri().to_string();
        let expected = full_signer(&case, &uri, &[]);
        let authorization = lean.headers()["authorization"].to_str().unwrap();
        assert!(
            expected.contains(&("authorization".to_owned(), authorization.to_owned())),
            "seed {seed}, {case:?}"
        );
    }
}
