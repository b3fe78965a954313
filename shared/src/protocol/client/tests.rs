//! Parsing every client action and error.
use super::*;
use serde_json::json;

fn topics(names: &[&str]) -> Vec<TopicPattern> {
    names
        .iter()
        .map(|n| TopicPattern::parse(n).unwrap())
        .collect()
}

fn subscribe(names: &[&str]) -> Subscribe {
    Subscribe {
        topics: topics(names),
        since: Default::default(),
    }
}

fn error_of(body: &str) -> ErrorFrame {
    ClientAction::parse(Some(body), 10).unwrap_err()
}

#[test]
fn parses_every_supported_action() {
    let parse = |body: &str| ClientAction::parse(Some(body), 10);
    assert_eq!(
        parse(r#"{"action":"subscribe","topic":"list:1"}"#),
        Ok(ClientAction::Subscribe(subscribe(&["list:1"])))
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
        Ok(ClientAction::Subscribe(subscribe(&["a", "b"])))
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
    assert_eq!(parsed, Ok(ClientAction::Subscribe(subscribe(&["list:1"]))));
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
fn a_pattern_of_escaped_characters_is_not_echoed_twice() {
    // Found by fuzzing: a wildcard of 128 bytes, most of them DEL, whose error repeated the
    // whole pattern escaped (6 bytes per character) after the echoed prefix: 1 108 bytes.
    let pattern = format!("l:{}x:*", "\u{7f}".repeat(123));
    assert_eq!(pattern.len(), 128);
    let body = json!({"action": "subscribe", "topics": [pattern]}).to_string();
    let frame = error_of(&body);
    assert_eq!(frame.error, ErrorCode::InvalidTopic);
    assert!(
        frame.details.contains("contains '\\u{7f}'"),
        "{}",
        frame.details
    );
    assert!(frame.details.len() < 600, "{}", frame.details.len());
}

#[test]
fn frames_serialize_as_documented() {
    let reply = ServerFrame::Subscribed {
        topics: topics(&["a"]),
        history: Default::default(),
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

#[test]
fn since_names_positions_per_topic_and_is_checked() {
    let parse = |body: Value| ClientAction::parse(Some(&body.to_string()), 10);
    let at = |offset: u64| crate::store::history::Position {
        offset,
        epoch: "e1".into(),
    };
    // one topic: since is its position
    let one = parse(json!({"action": "subscribe", "topic": "room:1",
                           "since": {"offset": 41, "epoch": "e1"}}));
    let Ok(ClientAction::Subscribe(one)) = one else {
        panic!("{one:?}")
    };
    assert_eq!(
        one.since.into_iter().collect::<Vec<_>>(),
        vec![(Topic::parse("room:1").unwrap(), at(41))]
    );
    // several: a map, for any of them
    let many = parse(
        json!({"action": "subscribe", "topics": ["room:1", "room:2"],
                            "since": {"room:2": {"offset": 7, "epoch": "e1"}}}),
    );
    let Ok(ClientAction::Subscribe(many)) = many else {
        panic!("{many:?}")
    };
    assert_eq!(many.since.len(), 1);
    assert_eq!(many.since[&Topic::parse("room:2").unwrap()], at(7));
    // refused: a topic not subscribed, a malformed position, a wildcard
    for bad in [
        json!({"action": "subscribe", "topics": ["room:1"], "since": {"room:9": {"offset": 1, "epoch": "e"}}}),
        json!({"action": "subscribe", "topic": "room:1", "since": {"offset": -1, "epoch": "e"}}),
        json!({"action": "subscribe", "topic": "room:1", "since": {"offset": 1}}),
        json!({"action": "subscribe", "topic": "room:1", "since": 41}),
        json!({"action": "subscribe", "topic": "room:*", "since": {"offset": 1, "epoch": "e"}}),
        json!({"action": "history", "topic": "room:1", "limit": 0}),
        json!({"action": "history", "topic": "room:1", "limit": 101}),
    ] {
        assert_eq!(
            parse(bad.clone()).map_err(|e| e.error),
            Err(ErrorCode::InvalidSince),
            "{bad}"
        );
    }
    assert_eq!(
        parse(json!({"action": "history", "topic": "room:1", "limit": 5})),
        Ok(ClientAction::History(HistoryRequest {
            topic: Topic::parse("room:1").unwrap(),
            limit: 5,
            since: None
        }))
    );
}

#[test]
fn a_ref_is_taken_whatever_the_rest_of_the_frame_is() {
    let parse = |body: Value| ClientAction::parse_with_ref(Some(&body.to_string()), 10);
    // A valid action keeps its ref, string or integer, and the ref is not a field of the
    // action (a publish with a ref is not refused as carrying an unknown field).
    let (reference, action) = parse(json!({"action": "ping", "ref": "r-1"}));
    assert_eq!(reference, Some(Ref::Text("r-1".to_owned())));
    assert_eq!(action, Ok(ClientAction::Ping));
    let (reference, action) =
        parse(json!({"action": "publish", "topic": "t", "event": "e", "ref": 7}));
    assert_eq!(reference, Some(Ref::Number(7)));
    assert!(matches!(action, Ok(ClientAction::Publish(_))), "{action:?}");
    // A refused action still carries its ref, so the refusal can be matched to it.
    let (reference, action) = parse(json!({"action": "fly", "ref": 3}));
    assert_eq!(reference, Some(Ref::Number(3)));
    assert_eq!(action.map_err(|e| e.error), Err(ErrorCode::UnknownAction));
    // Without a ref, nothing changes.
    assert_eq!(parse(json!({"action": "ping"})).0, None);
}

#[test]
fn a_ref_that_cannot_be_echoed_faithfully_is_refused() {
    let longest = "r".repeat(MAX_REF_BYTES);
    assert_eq!(
        ClientAction::parse_with_ref(
            Some(&json!({"action": "ping", "ref": longest}).to_string()),
            10
        )
        .0,
        Some(Ref::Text(longest.clone()))
    );
    for bad in [
        json!(""),
        json!(format!("{longest}r")),
        json!(-1),
        json!(1.5),
        json!(null),
        json!(["r"]),
        json!({"r": 1}),
    ] {
        let body = json!({"action": "ping", "ref": bad}).to_string();
        let (reference, action) = ClientAction::parse_with_ref(Some(&body), 10);
        assert_eq!(reference, None, "{body}");
        assert_eq!(
            action.map_err(|e| e.error),
            Err(ErrorCode::InvalidRef),
            "{body}"
        );
    }
}
