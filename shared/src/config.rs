//! The environment, read once at start-up, typed, and refused early with "X must be set".
//!
//! Each function reads only the parts it needs, so `$disconnect` never sees the JWT secret.
//! Every part lists the variables it reads in `ENV_VARS`: the README table and the template
//! are checked against these lists.

mod auth;

use std::time::Duration;

pub(crate) use auth::ASYMMETRIC_ALGORITHMS;
pub use auth::{
    AuthConfig, DEFAULT_JWKS_REFRESH_SECONDS, JWKS_MAX_AGE_IN_INTERVALS, JwksConfig, JwksSource,
    JwtKey, MIN_SECRET_BYTES,
};

use crate::channels::Channels;
use crate::limits::{ConnectionLimit, LimitPolicy, RateLimit};

/// Why the environment is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A value that deployments keep in Secrets Manager: the plain variable `name` holds it for
/// local runs and tests, or `secret_id` names the secret (name or ARN) that
/// `wsbridge::secrets` reads at start-up and puts in place of `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretVar {
    pub name: &'static str,
    pub secret_id: &'static str,
}

/// The plain value of a secret variable. Its `secret_id` form must have been resolved before
/// (see `wsbridge::secrets`): seeing it here means nobody read the secret, or both forms
/// were set.
fn secret(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &SecretVar,
) -> Result<Option<String>, ConfigError> {
    let value = optional(lookup, var.name);
    if optional(lookup, var.secret_id).is_some() {
        let reason = if value.is_some() {
            format!("set {} or {}, not both", var.name, var.secret_id)
        } else {
            "names a Secrets Manager secret, which must be read before the configuration \
             (wsbridge::secrets)"
                .to_owned()
        };
        return Err(ConfigError::Invalid {
            name: var.secret_id,
            reason,
        });
    }
    Ok(value)
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    lookup(name)
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing(name))
}

fn optional(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.is_empty())
}

fn number<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    valid: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(raw) = optional(lookup, name) else {
        return Ok(default);
    };
    let value: T = raw.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{raw:?} is not a number"),
    })?;
    if !valid.contains(&value) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is outside {}..={}", valid.start(), valid.end()),
        });
    }
    Ok(value)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The DynamoDB table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub table_name: String,
}

impl StoreConfig {
    pub const ENV_VARS: &'static [&'static str] = &["TABLE_NAME"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(&lookup, "TABLE_NAME")?,
        })
    }
}

/// Limits of a connection's life, its subscriptions and its user's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a connection's rows live before DynamoDB TTL removes them. API Gateway ends
    /// every connection after 2 h, and `$disconnect` is best-effort, so rows expire by design.
    pub connection_ttl: Duration,
    pub max_topics_per_connection: usize,
    /// Live connections one user may hold, and what a connection past it gets.
    pub connection_limit: ConnectionLimit,
    /// The frame budget of one connection; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

/// Upper bound for `MAX_TOPICS_PER_CONNECTION`: a subscribe is one DynamoDB transaction of one
/// update plus one put per topic, and a transaction holds at most 100 items.
pub const MAX_TOPICS_LIMIT: usize = 99;

/// API Gateway's 2 h maximum connection time plus 5 min for clock skew.
const DEFAULT_CONNECTION_TTL_SECONDS: u64 = 7_500;
const DEFAULT_MAX_TOPICS: usize = 50;
/// A phone, a laptop and a few tabs; scripts opening connections in a loop stop here.
const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 10;
/// Upper bound for `MAX_CONNECTIONS_PER_USER`: the user's connection ids share one DynamoDB
/// item, rewritten on every connect.
pub const MAX_CONNECTIONS_PER_USER_LIMIT: usize = 1_000;
/// 10 frames a second sustained, bursts of 40: a person chatting, typing and re-subscribing
/// after a reconnect stays far below it; a script flooding frames meets it within 40 frames.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 10,
    burst: 40,
};

impl SessionConfig {
    pub const ENV_VARS: &'static [&'static str] = &[
        "CONNECTION_TTL_SECONDS",
        "MAX_TOPICS_PER_CONNECTION",
        "MAX_CONNECTIONS_PER_USER",
        "CONNECTION_LIMIT_POLICY",
        "RATE_LIMIT_PER_SECOND",
        "RATE_LIMIT_BURST",
    ];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let policy = match optional(&lookup, "CONNECTION_LIMIT_POLICY").as_deref() {
            None | Some("refuse") => LimitPolicy::Refuse,
            Some("close_oldest") => LimitPolicy::CloseOldest,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONNECTION_LIMIT_POLICY",
                    reason: format!("{other:?}; use refuse or close_oldest"),
                });
            }
        };
        let per_second = number(
            &lookup,
            "RATE_LIMIT_PER_SECOND",
            DEFAULT_RATE_LIMIT.per_second,
            0..=1_000,
        )?;
        let burst = number(
            &lookup,
            "RATE_LIMIT_BURST",
            DEFAULT_RATE_LIMIT.burst,
            1..=10_000,
        )?;
        Ok(Self {
            connection_ttl: Duration::from_secs(number(
                &lookup,
                "CONNECTION_TTL_SECONDS",
                DEFAULT_CONNECTION_TTL_SECONDS,
                60..=86_400,
            )?),
            max_topics_per_connection: number(
                &lookup,
                "MAX_TOPICS_PER_CONNECTION",
                DEFAULT_MAX_TOPICS,
                1..=MAX_TOPICS_LIMIT,
            )?,
            connection_limit: ConnectionLimit {
                per_user: number(
                    &lookup,
                    "MAX_CONNECTIONS_PER_USER",
                    DEFAULT_MAX_CONNECTIONS_PER_USER,
                    1..=MAX_CONNECTIONS_PER_USER_LIMIT,
                )?,
                policy,
            },
            // 0 frames a second turns the limit off.
            rate_limit: (per_second > 0).then_some(RateLimit { per_second, burst }),
        })
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            connection_ttl: Duration::from_secs(DEFAULT_CONNECTION_TTL_SECONDS),
            max_topics_per_connection: DEFAULT_MAX_TOPICS,
            connection_limit: ConnectionLimit {
                per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
                policy: LimitPolicy::Refuse,
            },
            rate_limit: Some(DEFAULT_RATE_LIMIT),
        }
    }
}

/// The channel configuration (`CHANNELS_CONFIG`, JSON); unset or empty: the built-in policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelsConfig {
    pub channels: Channels,
}

impl ChannelsConfig {
    pub const ENV_VARS: &'static [&'static str] = &["CHANNELS_CONFIG"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let Some(json) = optional(&lookup, "CHANNELS_CONFIG") else {
            return Ok(Self::default());
        };
        Ok(Self {
            channels: Channels::parse(&json).map_err(|e| ConfigError::Invalid {
                name: "CHANNELS_CONFIG",
                reason: e.to_string(),
            })?,
        })
    }
}

/// Where the management API (`@connections`) is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Sends every PostToConnection and DeleteConnection here instead of the endpoint stored
    /// with the connection: a custom domain, or the local gateway.
    pub endpoint_override: Option<String>,
}

impl ManagementConfig {
    pub const ENV_VARS: &'static [&'static str] = &["WS_MANAGEMENT_ENDPOINT"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint_override: optional(&lookup, "WS_MANAGEMENT_ENDPOINT"),
        })
    }
}

/// Most PostToConnection calls in flight at once, unless `FANOUT_CONCURRENCY` says otherwise:
/// the ceiling of the adaptive limit. 256 at ≈ 20 ms per post is just over the account's
/// 10 000/s, the knee of the concurrency sweep (BENCHMARKS.md); 429s bring it down.
pub const DEFAULT_FANOUT_CONCURRENCY: usize = 256;

/// How a fan-out runs: every function that sends to many connections (broadcasts, client
/// publishes, join and leave events) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutConfig {
    /// PostToConnection calls in flight at once.
    pub concurrency: usize,
}

impl FanoutConfig {
    pub const ENV_VARS: &'static [&'static str] = &["FANOUT_CONCURRENCY"];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            concurrency: number(
                &lookup,
                "FANOUT_CONCURRENCY",
                DEFAULT_FANOUT_CONCURRENCY,
                1..=1_000,
            )?,
        })
    }
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_FANOUT_CONCURRENCY,
        }
    }
}

/// How long `POST /broadcast` sends before it hands the rest to the background and answers
/// 202, unless `BROADCAST_SYNC_SECONDS` says otherwise: about 100 000 recipients at the
/// account's 10 000 posts/s, while a caller's HTTP client is still waiting.
pub const DEFAULT_SYNC_SECONDS: u64 = 10;
/// Parts a broadcast handed to the background runs in, unless `BROADCAST_SHARDS` says
/// otherwise: one part at the default concurrency can fill the account's 10 000/s alone
/// (BENCHMARKS.md), so a few are enough to keep it full while one continues.
pub const DEFAULT_SHARDS: u32 = 4;
/// Most parts: API Gateway connection ids spread over 62 first characters, and the job's
/// rows are written in one transaction.
pub const MAX_SHARDS: u32 = 16;

/// Who may call the server API, what it reports, and when a broadcast goes to the
/// background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastConfig {
    /// When set, every server API route needs `x-api-key: <key>`.
    pub api_key: Option<String>,
    /// Print one CloudWatch Embedded Metric Format line per broadcast (in Lambda).
    pub emit_metrics: bool,
    /// Sending time a request waits for before the rest goes to the background.
    pub sync_budget: Duration,
    /// Parts a background broadcast runs in.
    pub shards: u32,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            emit_metrics: false,
            sync_budget: Duration::from_secs(DEFAULT_SYNC_SECONDS),
            shards: DEFAULT_SHARDS,
        }
    }
}

impl BroadcastConfig {
    pub const ENV_VARS: &'static [&'static str] = &[
        "BROADCAST_API_KEY",
        "BROADCAST_API_KEY_SECRET_ID",
        "BROADCAST_SYNC_SECONDS",
        "BROADCAST_SHARDS",
    ];

    /// The API key, in plain text or named in Secrets Manager.
    pub const SECRETS: &'static [SecretVar] = &[SecretVar {
        name: "BROADCAST_API_KEY",
        secret_id: "BROADCAST_API_KEY_SECRET_ID",
    }];

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            api_key: secret(&lookup, &Self::SECRETS[0])?,
            emit_metrics: false,
            // Under API Gateway's 30 s integration timeout, with time to hand the rest on.
            sync_budget: Duration::from_secs(number(
                &lookup,
                "BROADCAST_SYNC_SECONDS",
                DEFAULT_SYNC_SECONDS,
                1..=25,
            )?),
            shards: number(&lookup, "BROADCAST_SHARDS", DEFAULT_SHARDS, 1..=MAX_SHARDS)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A lookup over these variables only.
    pub(crate) fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn missing_required_variables_are_named() {
        assert_eq!(
            StoreConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing("TABLE_NAME"))
        );
        assert_eq!(
            ConfigError::Missing("TABLE_NAME").to_string(),
            "TABLE_NAME must be set"
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(matches!(
            FanoutConfig::from_lookup(lookup(&[("FANOUT_CONCURRENCY", "lots")])),
            Err(ConfigError::Invalid {
                name: "FANOUT_CONCURRENCY",
                ..
            })
        ));
        assert!(matches!(
            SessionConfig::from_lookup(lookup(&[("MAX_TOPICS_PER_CONNECTION", "100")])),
            Err(ConfigError::Invalid {
                name: "MAX_TOPICS_PER_CONNECTION",
                ..
            })
        ));
    }

    #[test]
    fn limits_default_on_and_can_be_tuned_or_turned_off() {
        let session = SessionConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            session.connection_limit,
            ConnectionLimit {
                per_user: 10,
                policy: LimitPolicy::Refuse
            }
        );
        assert_eq!(session.rate_limit, Some(DEFAULT_RATE_LIMIT));
        let tuned = SessionConfig::from_lookup(lookup(&[
            ("MAX_CONNECTIONS_PER_USER", "3"),
            ("CONNECTION_LIMIT_POLICY", "close_oldest"),
            ("RATE_LIMIT_PER_SECOND", "0"),
        ]))
        .unwrap();
        assert_eq!(tuned.connection_limit.per_user, 3);
        assert_eq!(tuned.connection_limit.policy, LimitPolicy::CloseOldest);
        assert_eq!(tuned.rate_limit, None);
        for (name, value) in [
            ("CONNECTION_LIMIT_POLICY", "evict"),
            ("MAX_CONNECTIONS_PER_USER", "0"),
            ("RATE_LIMIT_BURST", "0"),
        ] {
            let error = SessionConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_channel_configuration_refuses_to_start_naming_the_entry() {
        assert_eq!(
            ChannelsConfig::from_lookup(lookup(&[])).unwrap().channels,
            Channels::default()
        );
        let error = ChannelsConfig::from_lookup(lookup(&[(
            "CHANNELS_CONFIG",
            r#"{"namespaces":{"room":{"subscribe":"anyone"}}}"#,
        )]))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("CHANNELS_CONFIG is invalid: namespaces.room.subscribe: "),
            "{error}"
        );
    }

    #[test]
    fn defaults_apply_when_unset() {
        let session = SessionConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(session.connection_ttl, Duration::from_secs(7_500));
        assert_eq!(session.max_topics_per_connection, 50);
        let broadcast = BroadcastConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            FanoutConfig::from_lookup(lookup(&[])).unwrap().concurrency,
            256
        );
        assert_eq!(broadcast.api_key, None);
    }

    #[test]
    fn the_api_key_is_read_in_plain_text_and_its_secret_id_must_be_resolved_first() {
        // GIVEN the plain key (local runs): it is the key
        let plain = BroadcastConfig::from_lookup(lookup(&[("BROADCAST_API_KEY", "k-123")]));
        assert_eq!(plain.unwrap().api_key.as_deref(), Some("k-123"));

        // GIVEN only the secret's id: nobody read the secret, so the function must not start
        // as if no key were configured (that would open the API)
        let unresolved = BroadcastConfig::from_lookup(lookup(&[(
            "BROADCAST_API_KEY_SECRET_ID",
            "wsbridge/broadcast-api-key",
        )]));
        assert!(matches!(
            unresolved,
            Err(ConfigError::Invalid { name: "BROADCAST_API_KEY_SECRET_ID", ref reason })
                if reason.contains("wsbridge::secrets")
        ));

        // GIVEN both forms: ambiguous, refused
        let both = BroadcastConfig::from_lookup(lookup(&[
            ("BROADCAST_API_KEY", "k-123"),
            ("BROADCAST_API_KEY_SECRET_ID", "wsbridge/broadcast-api-key"),
        ]));
        assert!(matches!(
            both,
            Err(ConfigError::Invalid { name: "BROADCAST_API_KEY_SECRET_ID", ref reason })
                if reason.contains("not both")
        ));
    }
}
