//! The soak's accounting: which broadcasts each session had to get, and what it got.
//!
//! A session must get a broadcast when it had joined the broadcast's audience before the
//! broadcast was sent (its `subscribed` reply read; for a `user_id` broadcast, its handshake
//! complete) and had not begun to leave when the broadcast's answer came back. Those are
//! `required`; each is `delivered` or `lost`. A broadcast that overlapped the join or the
//! leave may or may not arrive: if it does it is `extra`, counted apart. Anything else that
//! arrives (an audience the session never joined, or a broadcast already answered before the
//! session asked to join) is `unexpected`: the bridge must never send it.
//!
//! Every instant is this process's monotonic clock. `sent_at` is read before the request
//! goes out and `answered_at` after the answer came back, both under the ledger's lock, so a
//! broadcast whose recorded answer precedes a session's leave really was answered before it:
//! the accounting never calls a message lost that the rules did not require.

use std::collections::{HashMap, HashSet};
use std::ops::AddAssign;
use std::time::Instant;

use serde::Serialize;

/// Who a broadcast is for, as the session joined it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Subscribers of a topic (a pool topic, or `user:{sub}`).
    Topic(String),
    /// Every connection of a user (`"user_id"` in the broadcast).
    User(String),
}

/// One broadcast, as the broadcaster recorded it.
#[derive(Debug)]
struct Sent {
    seq: u64,
    sent_at: Instant,
    /// `None` while in flight, or when it failed (then it is never required).
    answered_at: Option<Instant>,
}

/// Every broadcast of the run, by audience.
#[derive(Debug, Default)]
pub struct Ledger {
    next_seq: u64,
    by_audience: HashMap<Audience, Vec<Sent>>,
    /// seq → where it is in `by_audience`.
    index: HashMap<u64, (Audience, usize)>,
}

/// An audience a session joined.
#[derive(Debug, Clone)]
pub struct Joined {
    pub audience: Audience,
    /// When it asked (the subscribe was sent; the handshake began).
    pub asked_at: Instant,
    /// When the bridge confirmed (the `subscribed` reply was read; the handshake completed).
    pub joined_at: Instant,
}

/// One connection's life, from the client's side.
#[derive(Debug, Default)]
pub struct Session {
    pub joined: Vec<Joined>,
    /// When it began to leave (or saw its connection end unasked).
    pub left_at: Option<Instant>,
    /// seq → how many times it arrived.
    received: HashMap<u64, u32>,
}

impl Session {
    pub fn received(&mut self, seq: u64) {
        *self.received.entry(seq).or_default() += 1;
    }

    fn joined(&self, audience: &Audience) -> Option<&Joined> {
        self.joined.iter().find(|j| &j.audience == audience)
    }
}

/// What sessions got, against what they had to get.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub required: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Arrived, not required (the broadcast overlapped the join or the leave).
    pub extra: u64,
    /// Arrived and should never have.
    pub unexpected: u64,
    /// Arrivals beyond the first of one broadcast in one session.
    pub duplicates: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.required += other.required;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.extra += other.extra;
        self.unexpected += other.unexpected;
        self.duplicates += other.duplicates;
    }
}

impl Ledger {
    /// Records a broadcast about to be sent at `at` (read under the lock); its sequence number.
    pub fn sent(&mut self, audience: Audience, at: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = self.by_audience.entry(audience.clone()).or_default();
        sent.push(Sent {
            seq,
            sent_at: at,
            answered_at: None,
        });
        self.index.insert(seq, (audience, sent.len() - 1));
        seq
    }

    /// Records that broadcast `seq` was answered with success at `at` (read under the lock).
    pub fn answered(&mut self, seq: u64, at: Instant) {
        if let Some((audience, position)) = self.index.get(&seq)
            && let Some(sent) = self
                .by_audience
                .get_mut(audience)
                .and_then(|all| all.get_mut(*position))
        {
            sent.answered_at = Some(at);
        }
    }

    /// Broadcasts sent so far.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// Judges a finished session (`left_at` set).
    pub fn settle(&self, session: &Session) -> Tally {
        let mut tally = Tally::default();
        let left_at = session.left_at;
        let mut required = HashSet::new();
        for joined in &session.joined {
            let Some(sent) = self.by_audience.get(&joined.audience) else {
                continue;
            };
            required.extend(
                sent.iter()
                    .filter(|s| {
                        s.sent_at > joined.joined_at
                            && s.answered_at
                                .is_some_and(|answered| left_at.is_none_or(|left| answered < left))
                    })
                    .map(|s| s.seq),
            );
        }
        tally.required = required.len() as u64;
        for seq in &required {
            if session.received.contains_key(seq) {
                tally.delivered += 1;
            } else {
                tally.lost += 1;
            }
        }
        for (seq, times) in &session.received {
            tally.duplicates += u64::from(times.saturating_sub(1));
            if required.contains(seq) {
                continue;
            }
            if self.could_arrive(session, *seq) {
                tally.extra += 1;
            } else {
                tally.unexpected += 1;
            }
        }
        tally
    }

    /// Whether broadcast `seq` may reach `session` at all: the session joined its audience,
    /// and asked to before the broadcast was answered.
    fn could_arrive(&self, session: &Session, seq: u64) -> bool {
        let Some((audience, position)) = self.index.get(&seq) else {
            return false;
        };
        let Some(sent) = self
            .by_audience
            .get(audience)
            .and_then(|s| s.get(*position))
        else {
            return false;
        };
        session.joined(audience).is_some_and(|j| {
            sent.answered_at
                .is_none_or(|answered| answered > j.asked_at)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Instants `ms` milliseconds after a fixed start.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn topic(name: &str) -> Audience {
        Audience::Topic(name.to_owned())
    }

    /// A session that asked at `asked`, joined `audience` at `joined`, and left at `left`.
    fn session(clock: &Clock, audience: Audience, asked: u64, joined: u64, left: u64) -> Session {
        Session {
            joined: vec![Joined {
                audience,
                asked_at: clock.at(asked),
                joined_at: clock.at(joined),
            }],
            left_at: Some(clock.at(left)),
            ..Session::default()
        }
    }

    /// A broadcast to `audience` sent at `sent` and answered at `answered`.
    fn broadcast(
        ledger: &mut Ledger,
        clock: &Clock,
        audience: Audience,
        sent: u64,
        answered: Option<u64>,
    ) -> u64 {
        let seq = ledger.sent(audience, clock.at(sent));
        if let Some(answered) = answered {
            ledger.answered(seq, clock.at(answered));
        }
        seq
    }

    #[test]
    fn a_broadcast_inside_the_session_is_required_and_missing_it_is_a_loss() {
        // GIVEN a session joined to "a" from 10 to 100 ms, and two broadcasts inside it
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        let got = broadcast(&mut ledger, &clock, topic("a"), 20, Some(30));
        broadcast(&mut ledger, &clock, topic("a"), 40, Some(50));
        let mut s = session(&clock, topic("a"), 5, 10, 100);
        // WHEN only the first arrives
        s.received(got);
        // THEN one is delivered and one lost
        let tally = ledger.settle(&s);
        assert_eq!((tally.required, tally.delivered, tally.lost), (2, 1, 1));
        assert_eq!((tally.extra, tally.unexpected, tally.duplicates), (0, 0, 0));
    }

    #[test]
    fn broadcasts_overlapping_the_join_or_the_leave_are_extra_when_they_arrive() {
        // GIVEN a session joined to "a" from 10 to 100 ms (asked at 5)
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        // sent before the join was confirmed, answered after the ask
        let early = broadcast(&mut ledger, &clock, topic("a"), 8, Some(12));
        // answered after the leave began
        let late = broadcast(&mut ledger, &clock, topic("a"), 90, Some(110));
        // still in flight when the session is judged
        let flying = broadcast(&mut ledger, &clock, topic("a"), 95, None);
        // sent before the join, not received: not required either
        broadcast(&mut ledger, &clock, topic("a"), 9, Some(11));
        let mut s = session(&clock, topic("a"), 5, 10, 100);
        for seq in [early, late, flying] {
            s.received(seq);
        }
        // THEN none is required, the three that arrived are extra, none is lost
        let tally = ledger.settle(&s);
        assert_eq!((tally.required, tally.lost), (0, 0));
        assert_eq!((tally.extra, tally.unexpected), (3, 0));
    }

    #[test]
    fn what_the_session_never_joined_or_was_answered_before_it_asked_is_unexpected() {
        // GIVEN a session joined to "a" from 10 to 100 ms (asked at 5)
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        let other_topic = broadcast(&mut ledger, &clock, topic("b"), 20, Some(30));
        let other_user = broadcast(
            &mut ledger,
            &clock,
            Audience::User("u".into()),
            20,
            Some(30),
        );
        let before_asking = broadcast(&mut ledger, &clock, topic("a"), 1, Some(3));
        let mut s = session(&clock, topic("a"), 5, 10, 100);
        // WHEN they arrive anyway, with a sequence number nobody sent
        for seq in [other_topic, other_user, before_asking, 999] {
            s.received(seq);
        }
        // THEN all four are unexpected
        let tally = ledger.settle(&s);
        assert_eq!((tally.unexpected, tally.extra, tally.required), (4, 0, 0));
    }

    #[test]
    fn a_broadcast_received_twice_is_delivered_once_and_one_duplicate() {
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        let seq = broadcast(&mut ledger, &clock, topic("a"), 20, Some(30));
        let mut s = session(&clock, topic("a"), 5, 10, 100);
        s.received(seq);
        s.received(seq);
        s.received(seq);
        let tally = ledger.settle(&s);
        assert_eq!((tally.required, tally.delivered, tally.lost), (1, 1, 0));
        assert_eq!(tally.duplicates, 2);
    }

    #[test]
    fn a_failed_broadcast_is_never_required() {
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        broadcast(&mut ledger, &clock, topic("a"), 20, None);
        let tally = ledger.settle(&session(&clock, topic("a"), 5, 10, 100));
        assert_eq!(tally, Tally::default());
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn each_audience_counts_from_its_own_join() {
        // GIVEN a session that joined user "u" at 10 and topic "user:u" only at 50
        let (clock, mut ledger) = (Clock(Instant::now()), Ledger::default());
        let to_user = broadcast(
            &mut ledger,
            &clock,
            Audience::User("u".into()),
            20,
            Some(25),
        );
        let to_topic_early = broadcast(&mut ledger, &clock, topic("user:u"), 20, Some(25));
        let to_topic = broadcast(&mut ledger, &clock, topic("user:u"), 60, Some(70));
        let mut s = Session {
            joined: vec![
                Joined {
                    audience: Audience::User("u".into()),
                    asked_at: clock.at(0),
                    joined_at: clock.at(10),
                },
                Joined {
                    audience: topic("user:u"),
                    asked_at: clock.at(40),
                    joined_at: clock.at(50),
                },
            ],
            left_at: Some(clock.at(100)),
            ..Session::default()
        };
        s.received(to_user);
        s.received(to_topic);
        s.received(to_topic_early);
        // THEN the user broadcast and the later topic one are required; the topic broadcast
        // answered before the session asked for the topic should never have come
        let tally = ledger.settle(&s);
        assert_eq!((tally.required, tally.delivered), (2, 2));
        assert_eq!(tally.unexpected, 1);
    }

    #[test]
    fn tallies_add_up() {
        let one = Tally {
            required: 3,
            delivered: 2,
            lost: 1,
            extra: 4,
            unexpected: 0,
            duplicates: 1,
        };
        let mut sum = Tally::default();
        sum += one;
        sum += one;
        assert_eq!(sum.required, 6);
        assert_eq!(sum.lost + sum.delivered, sum.required);
        assert_eq!((sum.extra, sum.duplicates), (8, 2));
    }
}
