//! Grants: the topic patterns a token lets its user subscribe or publish to, read from the
//! claims the channel configuration names, once at `$connect`, and kept with the connection
//! (a connection's grants are its token's for its whole life).

use serde_json::{Map, Value};

use super::pattern::{PatternError, TopicPattern};

/// Most patterns one claim may list: the grants travel on the connection row, and DynamoDB
/// items are bounded (400 KB); no sane token lists more.
pub const MAX_GRANTS: usize = 100;

/// What a token lets its user do beyond the namespace rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Topics (patterns) the `claim` subscribe rule lets this connection join.
    pub subscribe: Vec<TopicPattern>,
    /// Topics (patterns) the `claim` publish rule lets this connection publish to.
    pub publish: Vec<TopicPattern>,
}

/// Why a token's grant claim is unusable; the handshake is refused (401) and this logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("claim {claim:?} must be an array of strings or a space-separated string")]
    NotAList { claim: String },
    #[error("claim {claim:?} lists {count} patterns; at most {MAX_GRANTS} are accepted")]
    TooMany { claim: String, count: usize },
    #[error("claim {claim:?}: {source}")]
    InvalidPattern {
        claim: String,
        #[source]
        source: PatternError,
    },
}

impl Grants {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.publish.is_empty()
    }
}

/// The patterns listed in `claim`: an array of strings, or one string of space-separated
/// patterns (OAuth `scope` style, and what identity providers that only issue string
/// claims can carry). An absent claim grants nothing.
pub(super) fn patterns_of(
    claims: &Map<String, Value>,
    claim: &str,
) -> Result<Vec<TopicPattern>, GrantError> {
    let not_a_list = || GrantError::NotAList {
        claim: claim.to_owned(),
    };
    let texts: Vec<&str> = match claims.get(claim) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => text.split_whitespace().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_a_list))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(not_a_list()),
    };
    if texts.len() > MAX_GRANTS {
        return Err(GrantError::TooMany {
            claim: claim.to_owned(),
            count: texts.len(),
        });
    }
    let mut patterns: Vec<TopicPattern> = texts
        .into_iter()
        .map(|text| {
            TopicPattern::parse(text).map_err(|source| GrantError::InvalidPattern {
                claim: claim.to_owned(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    patterns.sort();
    patterns.dedup();
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn texts(patterns: &[TopicPattern]) -> Vec<&str> {
        patterns.iter().map(TopicPattern::as_str).collect()
    }

    #[test]
    fn arrays_and_space_separated_strings_both_list_patterns() {
        let from_array = patterns_of(
            &claims(json!({"channels": ["org:7:*", "list:12", "list:12"]})),
            "channels",
        )
        .unwrap();
        assert_eq!(texts(&from_array), ["list:12", "org:7:*"]);
        let from_string = patterns_of(
            &claims(json!({"channels": " list:12  org:7:* "})),
            "channels",
        )
        .unwrap();
        assert_eq!(from_string, from_array);
        assert!(
            patterns_of(&claims(json!({})), "channels")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_claims_are_errors_naming_the_claim() {
        for bad in [json!({"channels": 7}), json!({"channels": ["a", 1]})] {
            assert_eq!(
                patterns_of(&claims(bad), "channels"),
                Err(GrantError::NotAList {
                    claim: "channels".into()
                })
            );
        }
        let error = patterns_of(&claims(json!({"channels": ["org*"]})), "channels").unwrap_err();
        assert!(
            error.to_string().starts_with("claim \"channels\""),
            "{error}"
        );
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("t:{i}")).collect();
        assert!(matches!(
            patterns_of(&claims(json!({ "channels": many })), "channels"),
            Err(GrantError::TooMany { count: 101, .. })
        ));
    }
}
