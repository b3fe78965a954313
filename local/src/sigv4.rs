//! The broadcast API's IAM mode, emulated: with `--sigv4` the gateway accepts only requests
//! signed with AWS Signature Version 4 for `execute-api` with the credentials it was given,
//! as a deployed stack with `BroadcastAuth=IAM` does (the signature, its scope and its age;
//! there is no IAM policy to evaluate here). Backends can then run the very signing code they
//! deploy with against the local gateway.
//!
//! Verification recomputes the signature with `aws-sigv4`'s own signer over the headers the
//! request says it signed, so nothing here re-implements the algorithm.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;
use time::PrimitiveDateTime;
use time::macros::format_description;

/// Requests older or newer than this are refused, as AWS refuses them.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The one identity the gateway accepts signatures of.
#[derive(Clone)]
pub struct SigV4Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The region requests must be signed for (the API's region).
    pub region: String,
}

// Hand-written so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for SigV4Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused: the message API Gateway's 403 body carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("Authorization header is not an AWS4-HMAC-SHA256 signature: {0}")]
    Malformed(&'static str),
    #[error("The security token included in the request is invalid (unknown access key {0})")]
    UnknownKey(String),
    #[error("Credential should be scoped to a valid region and service: expected {0}/execute-api")]
    WrongScope(String),
    #[error("Signature expired: the request's time is more than 5 minutes from now")]
    Expired,
    #[error("The request signature we calculated does not match the signature you provided")]
    Mismatch,
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization<'a> {
    access_key: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Refusal> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(Refusal::Malformed("algorithm"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(Refusal::Malformed("unknown part")),
        }
    }
    let credential = credential.ok_or(Refusal::Malformed("no Credential"))?;
    // AKID/20231114/eu-west-1/execute-api/aws4_request
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, _date, region, service, "aws4_request"] = scope[..] else {
        return Err(Refusal::Malformed("Credential scope"));
    };
    Ok(Authorization {
        access_key,
        region,
        service,
        signed_headers: signed_headers
            .ok_or(Refusal::Malformed("no SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or(Refusal::Malformed("no Signature"))?,
    })
}

fn request_time(headers: &HeaderMap) -> Result<SystemTime, Refusal> {
    let text = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Malformed("no x-amz-date"))?;
    let parsed = PrimitiveDateTime::parse(
        text,
        format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .map_err(|_| Refusal::Malformed("x-amz-date"))?;
    Ok(SystemTime::from(parsed.assume_utc()))
}

impl SigV4Credentials {
    /// Accepts the request if it carries a valid signature of these credentials, for this
    /// region and `execute-api`, made within 5 minutes of `now`.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let header = headers
            .get("authorization")
            .ok_or(Refusal::Missing)?
            .to_str()
            .map_err(|_| Refusal::Malformed("not text"))?;
        let authorization = parse_authorization(header)?;
        if authorization.access_key != self.access_key_id {
            return Err(Refusal::UnknownKey(authorization.access_key.to_owned()));
        }
        if authorization.region != self.region || authorization.service != "execute-api" {
            return Err(Refusal::WrongScope(self.region.clone()));
        }
        let time = request_time(headers)?;
        let skew = now
            .duration_since(time)
            .or_else(|e| Ok::<_, Refusal>(e.duration()))?;
        if skew > MAX_SKEW {
            return Err(Refusal::Expired);
        }
        let expected = self.signature(
            method,
            uri,
            headers,
            &authorization.signed_headers,
            body,
            time,
        )?;
        if bool::from(
            expected
                .as_bytes()
                .ct_eq(authorization.signature.as_bytes()),
        ) {
            Ok(())
        } else {
            Err(Refusal::Mismatch)
        }
    }

    /// The signature `aws-sigv4` computes over exactly the headers the client signed.
    fn signature(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        signed: &[&str],
        body: &[u8],
        time: SystemTime,
    ) -> Result<String, Refusal> {
        let mut values: Vec<(&str, String)> = Vec::with_capacity(signed.len());
        for name in signed {
            let joined = headers
                .get_all(*name)
                .iter()
                .map(|v| v.to_str().map(str::trim))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Refusal::Malformed("a signed header is not text"))?
                .join(",");
            if joined.is_empty() && !headers.contains_key(*name) {
                return Err(Refusal::Malformed("a signed header is missing"));
            }
            values.push((name, joined));
        }
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::Malformed("no host"))?;
        let url = format!(
            "http://{host}{}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        // The session token is just another signed header here: the gateway does not issue
        // tokens, it checks the signature the secret key makes.
        let identity = Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "wsbridge-local",
        )
        .into();
        let mut settings = SigningSettings::default();
        // Sign what the client signed, whatever it is (curl and botocore sign headers the
        // Rust SDK leaves out by default, such as user-agent).
        settings.excluded_headers = Some(Vec::<Cow<'static, str>>::new());
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|_| Refusal::Malformed("signing parameters"))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            values.iter().map(|(name, value)| (*name, value.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|_| Refusal::Malformed("request"))?;
        let (_, signature) = sign(signable, &params)
            .map_err(|_| Refusal::Malformed("request"))?
            .into_parts();
        Ok(signature)
    }
}
