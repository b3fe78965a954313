//! The client protocol's parser on its own, frame by frame.

use wsbridge::channels::TopicPattern;
use wsbridge::protocol::Topic;
use wsbridge::protocol::client::{ClientAction, MAX_EVENT_BYTES, MAX_HISTORY_LIMIT};
use wsbridge::store::history::Position;
use wsbridge_fuzz::assert_pattern_list;

/// An error frame's details stay short whatever the frame: they echo at most a short prefix of
/// what the client sent (API Gateway also caps a route response at 128 KB).
const MAX_DETAILS_BYTES: usize = 1024;
/// A position's epoch as a client may send it (`protocol::client::history`).
const MAX_SENT_EPOCH_BYTES: usize = 64;

/// The parser alone, at three limits: accepted lists are bounded, distinct and valid; a
/// higher limit never turns an accepted frame into another result; errors stay short.
pub fn check_parse(frame: &str, max_topics: usize) {
    // A ref taken is the frame's own `ref`, echoed with its JSON type.
    if let (Some(reference), _) = ClientAction::parse_with_ref(Some(frame), max_topics) {
        let sent: serde_json::Value = serde_json::from_str(frame).expect("a ref came from JSON");
        assert_eq!(serde_json::to_value(&reference).ok().as_ref(), sent.get("ref"));
    }
    let mut accepted: Option<ClientAction> = None;
    for max in [1, max_topics, 50] {
        match ClientAction::parse(Some(frame), max) {
            Ok(action) => {
                match &action {
                    ClientAction::Subscribe(subscribe) => {
                        assert_pattern_list(&subscribe.topics, max);
                        // A position only for a topic (not a wildcard) of this subscribe.
                        for (topic, position) in &subscribe.since {
                            assert!(
                                subscribe.topics.contains(&TopicPattern::exact(topic)),
                                "since for {topic}, which is not subscribed"
                            );
                            assert_sent_position(position);
                        }
                    }
                    ClientAction::Unsubscribe(topics) => assert_pattern_list(topics, max),
                    ClientAction::History(request) => {
                        assert_eq!(
                            Topic::parse(request.topic.as_str()).as_ref(),
                            Ok(&request.topic)
                        );
                        assert!((1..=MAX_HISTORY_LIMIT).contains(&request.limit));
                        if let Some(position) = &request.since {
                            assert_sent_position(position);
                        }
                    }
                    ClientAction::Publish(publish) => {
                        assert_eq!(
                            Topic::parse(publish.topic.as_str()).as_ref(),
                            Ok(&publish.topic)
                        );
                        assert!((1..=MAX_EVENT_BYTES).contains(&publish.event.len()));
                    }
                    ClientAction::Presence(topic) => {
                        assert_eq!(Topic::parse(topic.as_str()).as_ref(), Ok(topic));
                    }
                    ClientAction::Ping | ClientAction::Whoami => {}
                }
                if let Some(earlier) = &accepted {
                    assert_eq!(earlier, &action, "a higher limit changed the parse");
                }
                accepted = Some(action);
            }
            Err(refused) => {
                assert!(
                    accepted.is_none(),
                    "accepted at a lower limit, refused at {max}"
                );
                assert!(
                    refused.details.len() <= MAX_DETAILS_BYTES,
                    "{:?} details of {} bytes",
                    refused.error,
                    refused.details.len()
                );
            }
        }
    }
}

/// A position as a client sends it: an offset and an epoch of 1 to 64 bytes.
fn assert_sent_position(position: &Position) {
    assert!(
        (1..=MAX_SENT_EPOCH_BYTES).contains(&position.epoch.len()),
        "{position:?}"
    );
}
