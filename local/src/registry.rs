//! The connections the gateway holds open, as the management API sees them, and the cap on
//! how many it holds at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::events::ClientInfo;
use crate::outbox::Outbox;

/// A connection the gateway holds open.
pub(crate) struct LiveConnection {
    pub outbox: Outbox,
    pub connected_at: i64,
    pub client: ClientInfo,
    pub last_active: Arc<AtomicI64>,
}

/// Open connections by id, and the slots handshakes take before they run `$connect`.
pub(crate) struct Registry {
    connections: Mutex<HashMap<String, LiveConnection>>,
    taken: Arc<AtomicUsize>,
    max: usize,
}

/// A place among the gateway's `max_connections`, held from the handshake until the
/// connection's task ends; dropping it frees the place.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    pub fn new(max_connections: usize) -> Self {
        Self {
            connections: Mutex::default(),
            taken: Arc::default(),
            max: max_connections,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, LiveConnection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot, unless `max_connections` are open or opening. Taken before `$connect` runs,
    /// so a flood of handshakes beyond the cap costs no handler call and no store write.
    pub fn claim(&self) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot(self.taken.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Runs `f` on the connection, if open. The lock is held only for `f`, never across an
    /// `.await`.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&LiveConnection) -> T) -> Option<T> {
        self.lock().get(id).map(f)
    }

    pub fn insert(&self, id: String, connection: LiveConnection) {
        self.lock().insert(id, connection);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_at_the_cap_and_come_back_when_dropped() {
        // GIVEN a registry for two connections, both slots taken
        let registry = Registry::new(2);
        let first = registry.claim().expect("a first slot");
        let _second = registry.claim().expect("a second slot");

        // THEN a third is refused until one is given back
        assert!(registry.claim().is_none());
        drop(first);
        assert!(registry.claim().is_some());
    }
}
