//! How a backend signs a call to the broadcast API when it is IAM-protected (the template's
//! default): the Rust example of the README's "Deploy and use", kept compiling and checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// `POST {broadcast_url}/broadcast` with a JSON body, signed with SigV4 for API Gateway
/// (`execute-api`) in `region`. Send it with any HTTP client; it must not change the
/// signed headers or the body.
pub fn signed_broadcast(
    broadcast_url: &str,
    body: String,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<http::Request<String>, Box<dyn std::error::Error>> {
    let mut request = http::Request::post(format!("{broadcast_url}/broadcast"))
        .header("content-type", "application/json")
        .body(body)?;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| Ok((name.as_str(), value.to_str()?)))
        .collect::<Result<Vec<_>, http::header::ToStrError>>()?;
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.uri().to_string(),
        headers.into_iter(),
        SignableBody::Bytes(request.body().as_bytes()),
    )?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

const URL: &str = "https://abc123def4.execute-api.eu-west-1.amazonaws.com";
const BODY: &str = r#"{"topic":"list:123","event":"item.updated","data":{"id":7}}"#;

/// 2023-11-14T22:13:20Z.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Role credentials, as a Lambda function or an ECS task has them: with a session token.
fn credentials() -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("session-token".into()),
        None,
        "example",
    )
}

fn header<'a>(request: &'a http::Request<String>, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn signature(request: &http::Request<String>) -> String {
    let authorization = header(request, "authorization");
    authorization
        .split("Signature=")
        .nth(1)
        .expect("a signature")
        .to_owned()
}

#[test]
fn a_broadcast_is_signed_for_execute_api_in_the_region_with_the_session_token() {
    let request = signed_broadcast(URL, BODY.into(), "eu-west-1", &credentials(), at()).unwrap();

    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri().path(), "/broadcast");
    assert_eq!(header(&request, "x-amz-date"), "20231114T221320Z");
    assert_eq!(header(&request, "x-amz-security-token"), "session-token");
    let authorization = header(&request, "authorization");
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/execute-api/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ),
        "{authorization}"
    );
    assert_eq!(signature(&request).len(), 64, "hex SHA-256 HMAC");
}

#[test]
fn the_signature_covers_the_body_the_region_and_the_time() {
    let sign_with = |body: &str, region: &str, time: SystemTime| {
        signature(&signed_broadcast(URL, body.into(), region, &credentials(), time).unwrap())
    };
    let reference = sign_with(BODY, "eu-west-1", at());
    assert_eq!(
        sign_with(BODY, "eu-west-1", at()),
        reference,
        "deterministic"
    );
    assert_ne!(
        sign_with(r#"{"all":true,"message":1}"#, "eu-west-1", at()),
        reference
    );
    assert_ne!(sign_with(BODY, "us-east-1", at()), reference);
    assert_ne!(
        sign_with(BODY, "eu-west-1", at() + Duration::from_secs(1)),
        reference
    );
}
