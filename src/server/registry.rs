//! Every open connection, joined or not: the client limit, and the way to wake
//! them all at shutdown and wait until they are gone.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use super::nudge::Nudge;

#[derive(Debug)]
pub(crate) struct Registry {
    open: Mutex<Open>,
    closed_one: Condvar,
    max: usize,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    wakers: HashMap<u64, Arc<Nudge>>,
}

/// A connection's place in the registry, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    registry: Arc<Registry>,
    id: u64,
}

impl Registry {
    pub fn new(max: usize) -> Arc<Registry> {
        Arc::new(Registry { open: Mutex::default(), closed_one: Condvar::new(), max })
    }

    /// A place for one more connection, or `None` at the client limit.
    pub fn admit(self: &Arc<Self>, waker: Arc<Nudge>) -> Option<Ticket> {
        let mut open = self.lock();
        if open.wakers.len() >= self.max {
            return None;
        }
        open.next += 1;
        let id = open.next;
        open.wakers.insert(id, waker);
        Some(Ticket { registry: Arc::clone(self), id })
    }

    pub fn len(&self) -> usize {
        self.lock().wakers.len()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn wake_all(&self) {
        self.lock().wakers.values().for_each(|w| w.nudge());
    }

    /// Waits until every connection is closed or `deadline` passes; returns
    /// how many are still open.
    pub fn wait_until_empty(&self, deadline: Instant) -> usize {
        let mut open = self.lock();
        loop {
            let now = Instant::now();
            if open.wakers.is_empty() || now >= deadline {
                return open.wakers.len();
            }
            open = self.closed_one.wait_timeout(open, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ticket {
    /// Unique among the connections this registry admitted.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.lock().wakers.remove(&self.id);
        self.registry.closed_one.notify_all();
    }
}
