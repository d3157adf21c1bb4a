//! Every open connection, joined or not: the client limit, the limit per
//! address, and the way to wake them all at shutdown and wait until they are
//! gone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use super::nudge::Nudge;
use crate::lan::canonical;

#[derive(Debug)]
pub(crate) struct Registry {
    open: Mutex<Open>,
    closed_one: Condvar,
    max: usize,
    max_per_address: usize,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    wakers: HashMap<u64, Arc<Nudge>>,
    /// Connections open from each address, loopback's not counted.
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turned {
    /// At `--max-clients`.
    Full,
    /// At `--max-per-address` from its address.
    TooMany,
}

/// A connection's place in the registry, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    registry: Arc<Registry>,
    id: u64,
    /// Counted against its address's limit.
    address: Option<IpAddr>,
}

impl Registry {
    pub fn new(max: usize, max_per_address: usize) -> Arc<Registry> {
        Arc::new(Registry { open: Mutex::default(), closed_one: Condvar::new(), max, max_per_address })
    }

    /// A place for one more connection from `from`, unless at the client
    /// limit or at the limit for that address. This computer's own
    /// connections (loopback) count only against the client limit.
    pub fn admit(self: &Arc<Self>, waker: Arc<Nudge>, from: IpAddr) -> Result<Ticket, Turned> {
        let mut open = self.lock();
        if open.wakers.len() >= self.max {
            return Err(Turned::Full);
        }
        let address = (!canonical(from).is_loopback()).then(|| canonical(from));
        if let Some(address) = address {
            let count = open.per_address.entry(address).or_default();
            if *count >= self.max_per_address {
                return Err(Turned::TooMany);
            }
            *count += 1;
        }
        open.next += 1;
        let id = open.next;
        open.wakers.insert(id, waker);
        Ok(Ticket { registry: Arc::clone(self), id, address })
    }

    pub fn max_per_address(&self) -> usize {
        self.max_per_address
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
        let mut open = self.registry.lock();
        open.wakers.remove(&self.id);
        if let Some(address) = self.address {
            if let Some(count) = open.per_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    open.per_address.remove(&address);
                }
            }
        }
        drop(open);
        self.registry.closed_one.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_limit_and_loopback_none() {
        let registry = Registry::new(9, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let first = registry.admit(Arc::default(), a).unwrap();
        let _second = registry.admit(Arc::default(), mapped).unwrap();
        assert_eq!(registry.admit(Arc::default(), a).err(), Some(Turned::TooMany), "the same computer over IPv6");
        let _other = registry.admit(Arc::default(), b).unwrap();
        let local: Vec<_> = (0..5).map(|_| registry.admit(Arc::default(), "127.0.0.1".parse().unwrap())).collect();
        assert!(local.iter().all(Result::is_ok), "loopback is exempt");
        let _local6 = registry.admit(Arc::default(), "::1".parse().unwrap()).unwrap();
        drop(first);
        let _again = registry.admit(Arc::default(), a).expect("a closed connection gives its place back");
        assert_eq!(registry.admit(Arc::default(), b).err(), Some(Turned::Full), "the client limit holds for all");
    }
}
