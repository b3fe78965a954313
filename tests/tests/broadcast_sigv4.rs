//! How a backend signs a call to the broadcast API when it is IAM-protected (the template's
//! default): the Rust example of the README's "Deploy and use", checked against the local
//! gateway's IAM mode (`--sigv4`), which verifies signatures as the deployed API does, and
//! `curl --aws-sigv4`, a second, independent signer.

use std::time::{Duration, SystemTime};

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

use serde_json::{Value, json};
use wsbridge_local::{GatewayConfig, RunningGateway, SigV4Credentials};
use wsbridge_tests::gateway::{connect, receive, subscribe};

const BODY: &str = r#"{"topic":"list:123","event":"item.updated","data":{"id":7}}"#;
const REGION: &str = "eu-west-1";

fn gateway_identity() -> SigV4Credentials {
    SigV4Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        region: REGION.into(),
    }
}

/// Role credentials, as a Lambda function or an ECS task has them: with a session token.
fn credentials(secret: &str) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        secret,
        Some("session-token".into()),
        None,
        "example",
    )
}

async fn iam_gateway() -> RunningGateway {
    let config = GatewayConfig {
        sigv4: Some(gateway_identity()),
        ..GatewayConfig::loopback()
    };
    wsbridge_local::start(config).await.expect("gateway starts")
}

/// Sends a prepared request; status and JSON body.
async fn send(request: http::Request<String>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .execute(request.try_into().expect("a reqwest request"))
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

fn signed(
    gateway: &RunningGateway,
    body: &str,
    secret: &str,
    time: SystemTime,
) -> http::Request<String> {
    signed_broadcast(
        &gateway.http_url(),
        body.into(),
        REGION,
        &credentials(secret),
        time,
    )
    .unwrap()
}

#[tokio::test]
async fn a_signed_broadcast_is_accepted_and_delivered() {
    // GIVEN the gateway in IAM mode and a subscriber
    let gateway = iam_gateway().await;
    let mut client = connect(&gateway, "alice").await;
    subscribe(&mut client, &["list:123"]).await;

    // WHEN a backend signs a broadcast with the README's code
    let secret = gateway_identity().secret_access_key;
    let (status, report) = send(signed(&gateway, BODY, &secret, SystemTime::now())).await;

    // THEN it is accepted and delivered
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["delivered"], 1);
    assert_eq!(receive(&mut client).await["data"], json!({"id": 7}));
}

#[tokio::test]
async fn unsigned_tampered_foreign_stale_and_misscoped_requests_are_refused() {
    // GIVEN the gateway in IAM mode
    let gateway = iam_gateway().await;
    let secret = gateway_identity().secret_access_key;
    let now = SystemTime::now();

    // an unsigned request
    let unsigned = http::Request::post(format!("{}/broadcast", gateway.http_url()))
        .header("content-type", "application/json")
        .body(BODY.to_owned())
        .unwrap();
    // a signed one whose body changed on the way
    let mut tampered = signed(&gateway, BODY, &secret, now);
    *tampered.body_mut() = r#"{"all":true,"event":"pwned"}"#.to_owned();
    // one signed with another secret, one signed an hour ago, one for another region
    let foreign = signed(
        &gateway,
        BODY,
        "another-secret-access-key-of-forty-bytes",
        now,
    );
    let stale = signed(&gateway, BODY, &secret, now - Duration::from_secs(3_600));
    let elsewhere = signed_broadcast(
        &gateway.http_url(),
        BODY.into(),
        "us-east-1",
        &credentials(&secret),
        now,
    )
    .unwrap();

    for (case, request, message) in [
        ("unsigned", unsigned, "Missing Authentication Token"),
        ("tampered", tampered, "does not match"),
        ("foreign", foreign, "does not match"),
        ("stale", stale, "expired"),
        ("elsewhere", elsewhere, "region"),
    ] {
        // WHEN it reaches the broadcast API
        let (status, body) = send(request).await;

        // THEN it is refused before the function runs, saying why
        assert_eq!(status, 403, "{case}: {body}");
        let said = body["message"].as_str().unwrap();
        assert!(said.contains(message), "{case}: {said}");
    }
}

#[tokio::test]
async fn curl_s_own_signer_is_accepted_too() {
    // GIVEN the gateway in IAM mode, and curl with its SigV4 support (7.75+)
    let gateway = iam_gateway().await;
    let identity = gateway_identity();

    // WHEN curl signs the count request itself, with the README's command line (a blocking
    // child, off the runtime's thread: the gateway serves it meanwhile)
    let url = format!("{}/connections/count", gateway.http_url());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--aws-sigv4"])
            .arg(format!("aws:amz:{REGION}:execute-api"))
            .arg("--user")
            .arg(format!(
                "{}:{}",
                identity.access_key_id, identity.secret_access_key
            ))
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("curl runs (the test command needs it)");

    // THEN the gateway accepts it
    let body: Value = serde_json::from_slice(&output.stdout).expect("JSON from the gateway");
    assert_eq!(body, json!({"count": 0}));
}
