//! Parsing every client action and error.
use super::*;
use serde_json::json;

fn topics(names: &[&str]) -> Vec<TopicPattern> {
    names
        .iter()
        .map(|n| TopicPattern::parse(n).unwrap())
        .collect()
}

fn error_of(body: &str) -> ErrorFrame {
    ClientAction::parse(Some(body), 10).unwrap_err()
}

#[test]
fn parses_every_supported_action() {
    let parse = |body: &str| ClientAction::parse(Some(body), 10);
    assert_eq!(
        parse(r#"{"action":"subscribe","topic":"list:1"}"#),
        Ok(ClientAction::Subscribe(topics(&["list:1"])))
    );
    assert_eq!(
        parse(r#"{"action":"unsubscribe","topics":["a","b","a"]}"#),
        Ok(ClientAction::Unsubscribe(topics(&["a", "b"])))
    );
    assert_eq!(parse(r#"{"action":"ping"}"#), Ok(ClientAction::Ping));
    assert_eq!(parse(r#"{"action":"whoami"}"#), Ok(ClientAction::Whoami));
}

#[test]
fn every_mistake_has_its_own_error_code() {
    assert_eq!(error_of("{nope").error, ErrorCode::InvalidJson);
    assert_eq!(error_of("[1,2]").error, ErrorCode::InvalidJson);
    assert_eq!(error_of("").error, ErrorCode::InvalidJson);
    assert_eq!(error_of(r#"{"topic":"a"}"#).error, ErrorCode::MissingAction);
    assert_eq!(error_of(r#"{"action":7}"#).error, ErrorCode::MissingAction);
    assert_eq!(
        error_of(r#"{"action":"subscribe"}"#).error,
        ErrorCode::MissingTopic
    );
    assert_eq!(
        error_of(r#"{"action":"subscribe","topics":[]}"#).error,
        ErrorCode::MissingTopic
    );
    assert_eq!(
        error_of(r#"{"action":"subscribe","topic":"a b"}"#).error,
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        error_of(r#"{"action":"subscribe","topic":1}"#).error,
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        error_of(r#"{"action":"subscribe","topic":"a","topics":["b"]}"#).error,
        ErrorCode::InvalidTopic
    );
}

#[test]
fn unknown_action_lists_the_supported_ones() {
    let frame = error_of(r#"{"action":"dance"}"#);
    assert_eq!(frame.error, ErrorCode::UnknownAction);
    for action in SUPPORTED_ACTIONS {
        assert!(frame.details.contains(action), "{}", frame.details);
    }
}

#[test]
fn too_many_topics_in_one_request_is_refused() {
    let body = r#"{"action":"subscribe","topics":["a","b","c"]}"#;
    let frame = ClientAction::parse(Some(body), 2).unwrap_err();
    assert_eq!(frame.error, ErrorCode::TooManyTopics);
    // duplicates count once, so this one is within the limit
    let body = r#"{"action":"subscribe","topics":["a","b","a","b","a"]}"#;
    assert_eq!(
        ClientAction::parse(Some(body), 2),
        Ok(ClientAction::Subscribe(topics(&["a", "b"])))
    );
}

/// Distinct topic names of at most 5 bytes: `"xxxxx",` is 8 bytes of frame each.
fn distinct_names(count: usize) -> Vec<String> {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..count)
        .map(|mut n| {
            let mut name = String::from("t");
            loop {
                name.push(char::from(DIGITS[n % 36]));
                n /= 36;
                if n == 0 {
                    break name;
                }
            }
        })
        .collect()
}

fn topic_parses_during(body: &str, max_topics: usize) -> (Result<ClientAction, ErrorFrame>, usize) {
    let before = crate::protocol::TOPIC_PARSES.with(|c| c.get());
    let parsed = ClientAction::parse(Some(body), max_topics);
    let after = crate::protocol::TOPIC_PARSES.with(|c| c.get());
    (parsed, after - before)
}

#[test]
fn a_frame_of_16_000_distinct_topics_is_refused_after_the_limit_not_after_all_of_them() {
    // GIVEN a 128 KB frame naming 16 000 distinct topics
    let body = json!({"action": "subscribe", "topics": distinct_names(16_000)}).to_string();
    assert!(
        body.len() <= crate::protocol::MAX_MESSAGE_BYTES,
        "{}",
        body.len()
    );

    // WHEN it is parsed against the default limit of 50
    let (parsed, validations) = topic_parses_during(&body, 50);

    // THEN it is refused as too many, having validated no more than 51 names: work grows
    // with the limit, not with the frame (quadratic de-duplication of all 16 000 names
    // first is what this catches)
    assert_eq!(parsed.unwrap_err().error, ErrorCode::TooManyTopics);
    assert!(validations <= 51, "{validations} topic validations");
}

#[test]
fn a_frame_of_one_topic_repeated_16_000_times_validates_it_once() {
    let body = json!({"action": "subscribe", "topics": vec!["list:1"; 16_000]}).to_string();
    let (parsed, validations) = topic_parses_during(&body, 50);
    assert_eq!(parsed, Ok(ClientAction::Subscribe(topics(&["list:1"]))));
    assert_eq!(validations, 1);
}

#[test]
fn error_frames_echo_at_most_a_short_prefix_of_what_was_sent() {
    let long = "é".repeat(10_000);
    let body = json!({"action": "subscribe", "topic": long}).to_string();
    let frame = error_of(&body);
    assert_eq!(frame.error, ErrorCode::InvalidTopic);
    assert!(frame.details.len() < 300, "{}", frame.details.len());
}

#[test]
fn frames_serialize_as_documented() {
    let reply = ServerFrame::Subscribed {
        topics: topics(&["a"]),
    };
    assert_eq!(
        serde_json::to_value(&reply).unwrap(),
        json!({"action": "subscribed", "topics": ["a"]})
    );
    assert_eq!(
        serde_json::to_value(ServerFrame::Pong).unwrap(),
        serde_json::json!({"action": "pong"})
    );
    let error = ErrorFrame::new(ErrorCode::InvalidJson, "x");
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        serde_json::json!({"error": "invalid_json", "details": "x"})
    );
}
