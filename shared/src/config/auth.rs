//! How `$connect` verifies tokens: one key source (an HS256 secret, one PEM public key, or a
//! JWK set), the claims a token must carry, read from the environment.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::{ConfigError, SecretVar, number, optional, secret};

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// Seconds between two fetches of a JWK set caused by tokens whose `kid` it lacks, unless
/// `JWT_JWKS_REFRESH_SECONDS` says otherwise. Identity providers publish a new key well before
/// signing with it, so five minutes is rarely felt, and it bounds what a flood of made-up
/// `kid`s costs the provider: one request per Lambda sandbox per five minutes.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;

/// Keys are fetched again when this many refresh intervals old: one hour by default.
pub const JWKS_MAX_AGE_IN_INTERVALS: u32 = 12;

/// Secrets this repository publishes, which anyone can sign tokens with: the development
/// secret of the local gateway and the tests (`wsbridge::dev::DEV_SECRET`). Written out here
/// because configuration does not depend on the dev module; its tests check they agree.
const PUBLISHED_SECRETS: &[&str] = &["wsbridge-local-dev-secret-not-for-production"];

/// The published secret of the sample events (`wsbridge::dev::SAM_LOCAL_SECRET`), accepted
/// only where SAM CLI runs the function: it sets `AWS_SAM_LOCAL=true` in its containers,
/// which no deployed function has.
const SAM_LOCAL_SECRETS: &[&str] = &["wsbridge-sam-local-only-secret-not-for-production"];

/// The key material a token is verified with.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(String),
    /// One public key, PEM, and the one algorithm tokens must be signed with.
    PublicKeyPem { algorithm: Algorithm, pem: String },
    /// A JWK set: each token names its key with `kid`.
    Jwks(JwksConfig),
}

// Hand-written so that a secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem { algorithm, .. } => write!(f, "PublicKeyPem({algorithm:?})"),
            JwtKey::Jwks(jwks) => write!(f, "Jwks({jwks:?})"),
        }
    }
}

/// Where a JWK set comes from, and how it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub source: JwksSource,
    /// `JWT_ALGORITHM` when set: every token must use it, whatever the keys allow.
    pub algorithm: Option<Algorithm>,
    /// Fetches caused by an unknown `kid` (or keys grown old) are at least this far apart.
    pub refresh_interval: Duration,
    /// Keys this old are fetched again on next use, so a key the provider withdrew stops
    /// verifying even if no token names an unknown `kid`.
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// Fetched over HTTPS (Cognito, Auth0, Okta publish one per issuer).
    Url(String),
    /// The JWK set itself, JSON.
    Inline(String),
}

/// How `$connect` verifies tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// The algorithms a public key (PEM or JWK) may verify.
pub(crate) const ASYMMETRIC_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

fn algorithm(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<Algorithm>, ConfigError> {
    let Some(raw) = optional(lookup, "JWT_ALGORITHM") else {
        return Ok(None);
    };
    match raw.as_str() {
        "HS256" => Ok(Some(Algorithm::HS256)),
        "RS256" => Ok(Some(Algorithm::RS256)),
        "PS256" => Ok(Some(Algorithm::PS256)),
        "ES256" => Ok(Some(Algorithm::ES256)),
        "EdDSA" => Ok(Some(Algorithm::EdDSA)),
        other => Err(ConfigError::Invalid {
            name: "JWT_ALGORITHM",
            reason: format!("{other:?}; use HS256, RS256, PS256, ES256 or EdDSA"),
        }),
    }
}

/// A JWKS URL must be HTTPS: over plain HTTP anyone on the path could hand us keys. Loopback
/// is the exception, for tests and local identity providers.
fn jwks_url(url: String) -> Result<String, ConfigError> {
    let loopback = url.strip_prefix("http://").is_some_and(|rest| {
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(host, _)| host);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    });
    let https = url
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty());
    if https || loopback {
        Ok(url)
    } else {
        Err(ConfigError::Invalid {
            name: "JWT_JWKS_URL",
            reason: format!("{url:?} is not an https:// URL"),
        })
    }
}

impl AuthConfig {
    pub const ENV_VARS: &'static [&'static str] = &[
        "JWT_ALGORITHM",
        "JWT_SECRET",
        "JWT_SECRET_ID",
        "JWT_PUBLIC_KEY",
        "JWT_JWKS_URL",
        "JWT_JWKS",
        "JWT_JWKS_REFRESH_SECONDS",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_LEEWAY_SECONDS",
        "AWS_SAM_LOCAL",
    ];

    /// The variables that choose the key; exactly one may be set.
    pub const KEY_SOURCES: &'static [&'static str] = &[
        "JWT_SECRET",
        "JWT_SECRET_ID",
        "JWT_PUBLIC_KEY",
        "JWT_JWKS_URL",
        "JWT_JWKS",
    ];

    /// The HS256 secret, in plain text or named in Secrets Manager.
    pub const SECRETS: &'static [SecretVar] = &[SecretVar {
        name: "JWT_SECRET",
        secret_id: "JWT_SECRET_ID",
    }];

    /// The configuration of a deployed function: the published development secret is
    /// refused. Secrets named by `JWT_SECRET_ID` must have been read (`wsbridge::secrets`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(super::env)
    }

    /// As `from_env`, over any source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config = Self::parse(&lookup)?;
        if let JwtKey::Secret(secret) = &config.key {
            let under_sam_cli = lookup("AWS_SAM_LOCAL").as_deref() == Some("true");
            let refused = if PUBLISHED_SECRETS.contains(&secret.as_str()) {
                Some("the public development secret")
            } else if SAM_LOCAL_SECRETS.contains(&secret.as_str()) && !under_sam_cli {
                Some("the public secret of the sample events, for sam local only")
            } else {
                None
            };
            if let Some(what) = refused {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    reason: format!(
                        "this is {what}: anyone can sign tokens with it (make your own, \
                         e.g. openssl rand -base64 48)"
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The configuration as the variables say, published secrets included: for the local
    /// gateway (`wsbridge::dev`), never for a deployed function.
    pub(crate) fn parse(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let key = Self::key(lookup)?;
        let issuer = optional(lookup, "JWT_ISSUER");
        let audience = optional(lookup, "JWT_AUDIENCE");
        // A public key or a JWK set usually belongs to an identity provider that signs tokens
        // for many applications: without both checks, a token it issued for any of them
        // would open this bridge.
        if !matches!(key, JwtKey::Secret(_)) {
            if issuer.is_none() {
                return Err(ConfigError::Missing("JWT_ISSUER"));
            }
            if audience.is_none() {
                return Err(ConfigError::Missing("JWT_AUDIENCE"));
            }
        }
        Ok(Self {
            key,
            issuer,
            audience,
            leeway: Duration::from_secs(number(lookup, "JWT_LEEWAY_SECONDS", 30, 0..=300)?),
        })
    }

    fn key(lookup: &impl Fn(&str) -> Option<String>) -> Result<JwtKey, ConfigError> {
        let algorithm = algorithm(lookup)?;
        let secret = secret(lookup, &Self::SECRETS[0])?;
        let pem = optional(lookup, "JWT_PUBLIC_KEY");
        let url = optional(lookup, "JWT_JWKS_URL");
        let inline = optional(lookup, "JWT_JWKS");
        let set: Vec<&'static str> = [
            ("JWT_SECRET", secret.is_some()),
            ("JWT_PUBLIC_KEY", pem.is_some()),
            ("JWT_JWKS_URL", url.is_some()),
            ("JWT_JWKS", inline.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        if let [first, second, ..] = set.as_slice() {
            return Err(ConfigError::Invalid {
                name: second,
                reason: format!("{first} is set too; set one key source"),
            });
        }
        let refresh = optional(lookup, "JWT_JWKS_REFRESH_SECONDS");
        if refresh.is_some() && url.is_none() {
            return Err(ConfigError::Invalid {
                name: "JWT_JWKS_REFRESH_SECONDS",
                reason: "applies only with JWT_JWKS_URL".into(),
            });
        }
        let asymmetric = |algorithm: Option<Algorithm>, source: &str| match algorithm {
            Some(Algorithm::HS256) => Err(ConfigError::Invalid {
                name: "JWT_ALGORITHM",
                reason: format!("HS256 verifies with JWT_SECRET, not with {source}"),
            }),
            other => Ok(other),
        };
        if let Some(secret) = secret {
            return match algorithm {
                None | Some(Algorithm::HS256) if secret.len() >= MIN_SECRET_BYTES => {
                    Ok(JwtKey::Secret(secret))
                }
                None | Some(Algorithm::HS256) => Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    reason: format!("at least {MIN_SECRET_BYTES} bytes are needed for HS256"),
                }),
                Some(_) => Err(ConfigError::Missing("JWT_PUBLIC_KEY")),
            };
        }
        if let Some(pem) = pem {
            let algorithm = asymmetric(algorithm, "JWT_PUBLIC_KEY")?
                .ok_or(ConfigError::Missing("JWT_ALGORITHM"))?;
            // Environment variables often cannot hold newlines; accept `\n` escapes.
            let pem = pem.replace("\\n", "\n");
            return Ok(JwtKey::PublicKeyPem { algorithm, pem });
        }
        let source = match (url, inline) {
            (Some(url), _) => JwksSource::Url(jwks_url(url)?),
            (None, Some(inline)) => JwksSource::Inline(inline),
            (None, None) => {
                return Err(match algorithm {
                    None | Some(Algorithm::HS256) => ConfigError::Missing("JWT_SECRET"),
                    Some(_) => ConfigError::Missing("JWT_PUBLIC_KEY"),
                });
            }
        };
        let refresh_interval = Duration::from_secs(number(
            lookup,
            "JWT_JWKS_REFRESH_SECONDS",
            DEFAULT_JWKS_REFRESH_SECONDS,
            10..=86_400,
        )?);
        Ok(JwtKey::Jwks(JwksConfig {
            algorithm: asymmetric(algorithm, "a JWK set")?,
            source,
            refresh_interval,
            max_age: refresh_interval * JWKS_MAX_AGE_IN_INTERVALS,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PEM: &str = "-----BEGIN PUBLIC KEY-----\\nMFkw\\n-----END PUBLIC KEY-----";
    const ISSUER: (&str, &str) = ("JWT_ISSUER", "https://id.example.com");
    const AUDIENCE: (&str, &str) = ("JWT_AUDIENCE", "wsbridge");

    fn parse(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        AuthConfig::from_lookup(lookup(vars))
    }

    fn invalid_name(result: Result<AuthConfig, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { name, .. }) => name,
            other => panic!("expected an invalid variable, got {other:?}"),
        }
    }

    #[test]
    fn the_missing_key_is_named_for_each_algorithm() {
        assert_eq!(parse(&[]), Err(ConfigError::Missing("JWT_SECRET")));
        for algorithm in ["RS256", "PS256", "ES256", "EdDSA"] {
            assert_eq!(
                parse(&[("JWT_ALGORITHM", algorithm), ISSUER, AUDIENCE]),
                Err(ConfigError::Missing("JWT_PUBLIC_KEY")),
                "{algorithm}"
            );
        }
        assert_eq!(
            parse(&[("JWT_PUBLIC_KEY", PEM), ISSUER, AUDIENCE]),
            Err(ConfigError::Missing("JWT_ALGORITHM"))
        );
    }

    #[test]
    fn hs256_is_the_default_and_issuer_and_audience_stay_optional_with_it() {
        let config = parse(&[("JWT_SECRET", SECRET), ISSUER]).unwrap();
        assert_eq!(config.key, JwtKey::Secret(SECRET.into()));
        assert_eq!(config.issuer.as_deref(), Some("https://id.example.com"));
        assert_eq!(config.audience, None);
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert!(!format!("{config:?}").contains(SECRET));
    }

    #[test]
    fn public_keys_and_jwk_sets_require_issuer_and_audience() {
        let sources: [&[(&str, &str)]; 3] = [
            &[("JWT_ALGORITHM", "RS256"), ("JWT_PUBLIC_KEY", PEM)],
            &[(
                "JWT_JWKS_URL",
                "https://id.example.com/.well-known/jwks.json",
            )],
            &[("JWT_JWKS", r#"{"keys":[]}"#)],
        ];
        for source in sources {
            let with = |extra: &[(&'static str, &'static str)]| [source, extra].concat();
            assert_eq!(
                parse(&with(&[AUDIENCE])),
                Err(ConfigError::Missing("JWT_ISSUER")),
                "{source:?}"
            );
            assert_eq!(
                parse(&with(&[ISSUER])),
                Err(ConfigError::Missing("JWT_AUDIENCE")),
                "{source:?}"
            );
            let config = parse(&with(&[ISSUER, AUDIENCE])).unwrap();
            assert_eq!(config.issuer.as_deref(), Some(ISSUER.1));
            assert_eq!(config.audience.as_deref(), Some(AUDIENCE.1));
        }
    }

    #[test]
    fn a_jwks_url_or_inline_set_is_read_with_its_refresh_interval() {
        let url =
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Ab12/.well-known/jwks.json";
        let config = parse(&[("JWT_JWKS_URL", url), ISSUER, AUDIENCE]).unwrap();
        assert_eq!(
            config.key,
            JwtKey::Jwks(JwksConfig {
                source: JwksSource::Url(url.into()),
                algorithm: None,
                refresh_interval: Duration::from_secs(DEFAULT_JWKS_REFRESH_SECONDS),
                max_age: Duration::from_secs(3_600),
            })
        );
        let pinned = parse(&[
            ("JWT_JWKS_URL", url),
            ("JWT_ALGORITHM", "ES256"),
            ("JWT_JWKS_REFRESH_SECONDS", "60"),
            ISSUER,
            AUDIENCE,
        ])
        .unwrap();
        assert_eq!(
            pinned.key,
            JwtKey::Jwks(JwksConfig {
                source: JwksSource::Url(url.into()),
                algorithm: Some(Algorithm::ES256),
                refresh_interval: Duration::from_secs(60),
                max_age: Duration::from_secs(720),
            })
        );
        let inline = parse(&[("JWT_JWKS", r#"{"keys":[]}"#), ISSUER, AUDIENCE]).unwrap();
        assert!(matches!(
            inline.key,
            JwtKey::Jwks(JwksConfig {
                source: JwksSource::Inline(_),
                ..
            })
        ));
    }

    #[test]
    fn a_jwks_url_must_be_https_unless_on_loopback() {
        for url in [
            "http://id.example.com/jwks.json",
            "http://127.0.0.1.evil.example/jwks.json",
            "ftp://id.example.com/jwks.json",
            "https://",
            "id.example.com/jwks.json",
        ] {
            assert_eq!(
                invalid_name(parse(&[("JWT_JWKS_URL", url), ISSUER, AUDIENCE])),
                "JWT_JWKS_URL",
                "{url}"
            );
        }
        for url in [
            "http://127.0.0.1:8080/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:9000/jwks",
        ] {
            assert!(
                parse(&[("JWT_JWKS_URL", url), ISSUER, AUDIENCE]).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn two_key_sources_or_a_key_source_of_the_wrong_algorithm_are_refused() {
        let url = ("JWT_JWKS_URL", "https://id.example.com/jwks.json");
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[url, ("JWT_JWKS", r#"{"keys":[]}"#)], "JWT_JWKS"),
            (&[("JWT_SECRET", SECRET), url], "JWT_JWKS_URL"),
            (
                &[("JWT_ALGORITHM", "RS256"), ("JWT_PUBLIC_KEY", PEM), url],
                "JWT_JWKS_URL",
            ),
            (&[("JWT_ALGORITHM", "HS256"), url], "JWT_ALGORITHM"),
            (
                &[("JWT_ALGORITHM", "HS256"), ("JWT_PUBLIC_KEY", PEM)],
                "JWT_ALGORITHM",
            ),
            (
                &[("JWT_SECRET", SECRET), ("JWT_JWKS_REFRESH_SECONDS", "60")],
                "JWT_JWKS_REFRESH_SECONDS",
            ),
        ];
        for (vars, name) in cases {
            let vars = [vars, &[ISSUER, AUDIENCE]].concat();
            assert_eq!(invalid_name(parse(&vars)), name, "{vars:?}");
        }
        // A refresh interval below 10 s would let a flood of unknown kids hammer the provider.
        let fast = parse(&[url, ("JWT_JWKS_REFRESH_SECONDS", "1"), ISSUER, AUDIENCE]);
        assert_eq!(invalid_name(fast), "JWT_JWKS_REFRESH_SECONDS");
    }

    #[test]
    fn weak_and_published_secrets_and_unknown_algorithms_are_refused() {
        assert_eq!(
            invalid_name(parse(&[("JWT_SECRET", "short")])),
            "JWT_SECRET"
        );
        assert_eq!(
            invalid_name(parse(&[("JWT_ALGORITHM", "none"), ("JWT_SECRET", SECRET)])),
            "JWT_ALGORITHM"
        );
        assert_eq!(
            invalid_name(parse(&[("JWT_ALGORITHM", "HS512"), ("JWT_SECRET", SECRET)])),
            "JWT_ALGORITHM"
        );
        for published in PUBLISHED_SECRETS {
            let refused = parse(&[("JWT_SECRET", published)]);
            assert!(
                matches!(&refused, Err(ConfigError::Invalid { name: "JWT_SECRET", reason })
                    if reason.contains("anyone can sign tokens")),
                "{refused:?}"
            );
            // The local gateway's own parse still takes it.
            assert!(AuthConfig::parse(&lookup(&[("JWT_SECRET", published)])).is_ok());
        }
    }

    #[test]
    fn the_secret_id_must_be_resolved_before_parsing_and_never_set_with_the_secret() {
        let unresolved = parse(&[("JWT_SECRET_ID", "wsbridge/jwt-secret")]);
        assert_eq!(invalid_name(unresolved), "JWT_SECRET_ID");
        let both = parse(&[
            ("JWT_SECRET", SECRET),
            ("JWT_SECRET_ID", "wsbridge/jwt-secret"),
        ]);
        assert!(
            matches!(both, Err(ConfigError::Invalid { name: "JWT_SECRET_ID", reason })
            if reason == "set JWT_SECRET or JWT_SECRET_ID, not both")
        );
    }
}
