//! A connection's outbox: what `@connections` accepted and the socket has not written yet.
//! It is bounded in messages and in bytes, so a client that stops reading costs a known
//! amount of memory; a post beyond either bound is refused (429, as API Gateway answers
//! when a client's buffer is full) instead of queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

/// What the management API asks a connection's task to do.
pub(crate) enum Outbound {
    Data(Vec<u8>),
    Close,
}

/// Why a post was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The outbox holds its maximum of messages or bytes.
    Full,
    /// The connection's task has ended.
    Closed,
}

/// The bounds every outbox of a gateway has, and the most bytes any of them ever held.
#[derive(Debug)]
pub(crate) struct OutboxLimits {
    max_messages: usize,
    max_bytes: usize,
    peak_bytes: AtomicUsize,
}

impl OutboxLimits {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages,
            max_bytes,
            peak_bytes: AtomicUsize::new(0),
        }
    }

    /// The most bytes one outbox has held at once since the gateway started.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }
}

/// Messages and bytes accepted and not yet written to the socket.
#[derive(Debug, Default)]
struct Queued {
    messages: usize,
    bytes: usize,
}

/// One lock for both counts, so that a check and its reservation are one step: two posts
/// racing for the last room cannot both get it.
#[derive(Debug, Default)]
struct Gauge(Mutex<Queued>);

impl Gauge {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, bytes: usize) {
        let mut queued = self.lock();
        queued.messages = queued.messages.saturating_sub(1);
        queued.bytes = queued.bytes.saturating_sub(bytes);
    }
}

/// The management API's end: posts and closes.
pub(crate) struct Outbox {
    sender: mpsc::UnboundedSender<Outbound>,
    gauge: Arc<Gauge>,
    limits: Arc<OutboxLimits>,
}

/// The connection task's end. The channel itself is unbounded: the gauge bounds it, and a
/// close must always get in, even behind a full outbox.
pub(crate) struct Inbox {
    receiver: mpsc::UnboundedReceiver<Outbound>,
    gauge: Arc<Gauge>,
}

pub(crate) fn outbox(limits: Arc<OutboxLimits>) -> (Outbox, Inbox) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let gauge = Arc::new(Gauge::default());
    (
        Outbox {
            sender,
            gauge: gauge.clone(),
            limits,
        },
        Inbox { receiver, gauge },
    )
}

impl Outbox {
    /// Queues `data` if the outbox has room for it.
    pub fn post(&self, data: Vec<u8>) -> Result<(), Refused> {
        let bytes = data.len();
        {
            let mut queued = self.gauge.lock();
            if queued.messages >= self.limits.max_messages
                || queued.bytes + bytes > self.limits.max_bytes
            {
                return Err(Refused::Full);
            }
            queued.messages += 1;
            queued.bytes += bytes;
            self.limits
                .peak_bytes
                .fetch_max(queued.bytes, Ordering::Relaxed);
        }
        self.sender.send(Outbound::Data(data)).map_err(|_| {
            self.gauge.release(bytes);
            Refused::Closed
        })
    }

    /// Asks the task to close the connection once what is queued before it is written.
    pub fn close(&self) -> Result<(), Refused> {
        self.sender
            .send(Outbound::Close)
            .map_err(|_| Refused::Closed)
    }

    /// Bytes accepted and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.gauge.lock().bytes
    }
}

impl Inbox {
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.receiver.recv().await
    }

    /// A message of `bytes` has left: written to the socket, or given up on. Until then it
    /// still counts, as it is still in memory.
    pub fn done(&self, bytes: usize) {
        self.gauge.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_outbox() -> (Outbox, Inbox, Arc<OutboxLimits>) {
        let limits = Arc::new(OutboxLimits::new(3, 100));
        let (outbox, inbox) = outbox(limits.clone());
        (outbox, inbox, limits)
    }

    #[tokio::test]
    async fn posts_beyond_the_byte_bound_are_refused_until_room_is_made() {
        // GIVEN an outbox of 100 bytes holding 60
        let (outbox, mut inbox, limits) = small_outbox();
        outbox.post(vec![b'a'; 60]).unwrap();

        // WHEN 41 more bytes are posted, THEN they are refused; 40 still fit
        assert_eq!(outbox.post(vec![b'b'; 41]), Err(Refused::Full));
        outbox.post(vec![b'c'; 40]).unwrap();
        assert_eq!(outbox.queued_bytes(), 100);
        assert_eq!(limits.peak_bytes(), 100);

        // AND once the first message is written, there is room again
        let Some(Outbound::Data(first)) = inbox.recv().await else {
            panic!("the first post is queued first");
        };
        assert_eq!(first, vec![b'a'; 60]);
        assert_eq!(outbox.queued_bytes(), 100, "counted until written");
        inbox.done(first.len());
        assert_eq!(outbox.queued_bytes(), 40);
        outbox.post(vec![b'd'; 60]).unwrap();
        assert_eq!(limits.peak_bytes(), 100);
    }

    #[tokio::test]
    async fn the_message_bound_holds_for_empty_posts_and_a_close_always_gets_in() {
        // GIVEN an outbox of three messages, full of empty posts
        let (outbox, mut inbox, _) = small_outbox();
        for _ in 0..3 {
            outbox.post(Vec::new()).unwrap();
        }

        // THEN a fourth is refused, but a close is still queued behind them
        assert_eq!(outbox.post(Vec::new()), Err(Refused::Full));
        outbox.close().unwrap();
        for _ in 0..3 {
            assert!(matches!(inbox.recv().await, Some(Outbound::Data(_))));
        }
        assert!(matches!(inbox.recv().await, Some(Outbound::Close)));
    }

    #[test]
    fn posts_to_an_ended_connection_are_refused_and_not_counted() {
        let (outbox, inbox, _) = small_outbox();
        drop(inbox);
        assert_eq!(outbox.post(vec![b'x'; 10]), Err(Refused::Closed));
        assert_eq!(outbox.close(), Err(Refused::Closed));
        assert_eq!(outbox.queued_bytes(), 0);
    }
}
