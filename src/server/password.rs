//! The room's password at the door, and how fast each address may guess it.
//!
//! Every `PASS` from an address takes the next free slot of that address's
//! schedule before it is answered: the first at once, then 1, 2, 4, 8 and
//! 16 s after the last, and then 20 s, a few tries a minute. A slot is taken
//! before the answer is known, so parallel connections from one address
//! wait their turn and more connections buy no more tries; a right password
//! gives its slot back. Loopback is not exempt: a proxy on this computer
//! must not become a way round it.
//!
//! An address is forgotten ten minutes after its last failure, and at most
//! `MAX_ADDRESSES` are remembered (the one idle longest goes first), so the
//! record's size is bounded whoever knocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::password::Password;

/// How long an address's failures are remembered after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// Most addresses remembered at once.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Door {
    password: Password,
    /// The longest wait between two tries (`Config::password_max_wait`).
    max_wait: Duration,
    record: Mutex<HashMap<IpAddr, Strikes>>,
}

/// One address's schedule.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    /// Tries not known to be right: failures, and tries still waiting.
    strikes: u32,
    /// Tries that were wrong, for the log.
    failures: u32,
    /// When the next try may be answered.
    next_free: Instant,
    /// The last try or failure: an address idle long enough is forgotten.
    last_seen: Instant,
}

/// What a `PASS` turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Right,
    /// `failures` from the address so far; its next try is answered after
    /// `wait` at the soonest.
    Wrong {
        failures: u32,
        wait: Duration,
    },
}

impl Door {
    pub fn new(password: Password, max_wait: Duration) -> Door {
        Door { password, max_wait, record: Mutex::default() }
    }

    /// Takes the next slot of `from`'s schedule: when to answer its try.
    pub fn knock(&self, from: IpAddr, now: Instant) -> Instant {
        let mut record = self.lock();
        let fresh = Strikes { strikes: 0, failures: 0, next_free: now, last_seen: now };
        let remembered =
            record.get(&from).copied().filter(|s| now.saturating_duration_since(s.last_seen) < FORGET_AFTER);
        let mut strikes = remembered.unwrap_or(fresh);
        let due = strikes.next_free.max(now);
        strikes.strikes += 1;
        strikes.next_free = due + self.delay(strikes.strikes);
        strikes.last_seen = now;
        if !record.contains_key(&from) && record.len() >= MAX_ADDRESSES {
            forget_the_oldest(&mut record, now);
        }
        record.insert(from, strikes);
        due
    }

    /// Checks a try whose slot `knock` gave, and records what it was.
    pub fn check(&self, from: IpAddr, given: &str, now: Instant) -> Verdict {
        let right = self.password.matches(given);
        let mut record = self.lock();
        let Some(strikes) = record.get_mut(&from) else {
            // Forgotten meanwhile (the table was full): it starts again.
            return if right { Verdict::Right } else { Verdict::Wrong { failures: 1, wait: self.delay(1) } };
        };
        if right {
            // Its slot was taken as if it would fail: give it back.
            strikes.strikes = strikes.strikes.saturating_sub(1);
            strikes.next_free = strikes.next_free.min(now + self.delay(strikes.strikes));
            if strikes.strikes == 0 && strikes.failures == 0 {
                record.remove(&from);
            }
            return Verdict::Right;
        }
        strikes.failures += 1;
        strikes.last_seen = now;
        strikes.next_free = strikes.next_free.max(now + self.delay(strikes.strikes));
        Verdict::Wrong { failures: strikes.failures, wait: strikes.next_free - now }
    }

    /// The wait before the try after `strikes` unproven ones: none after
    /// none, then 1, 2, 4, 8, 16 s, and never more than `max_wait`.
    fn delay(&self, strikes: u32) -> Duration {
        match strikes {
            0 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 1).min(10)).min(self.max_wait),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Strikes>> {
        // Each change is one assignment of a Copy value: never half done.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes room in a full record: the forgotten addresses go, or else the
/// one seen longest ago.
fn forget_the_oldest(record: &mut HashMap<IpAddr, Strikes>, now: Instant) {
    record.retain(|_, s| now.saturating_duration_since(s.last_seen) < FORGET_AFTER);
    if record.len() >= MAX_ADDRESSES {
        if let Some(oldest) = record.iter().min_by_key(|(_, s)| s.last_seen).map(|(address, _)| *address) {
            record.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WAIT: Duration = Duration::from_secs(20);

    fn door() -> Door {
        Door::new(Password::new("open sesame").unwrap(), MAX_WAIT)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn each_failure_makes_the_next_try_wait_longer_up_to_the_cap() {
        let (door, from, start) = (door(), "192.0.2.7".parse().unwrap(), Instant::now());
        let (mut now, mut waits, mut announced) = (start, Vec::new(), Vec::new());
        for _ in 0..8 {
            let due = door.knock(from, now);
            waits.push(due - now);
            let Verdict::Wrong { wait, .. } = door.check(from, "guess", due) else { panic!("a wrong guess passed") };
            announced.push(wait);
            now = due;
        }
        assert_eq!(waits[1..], announced[..7], "each wait is the one announced");
        assert_eq!(waits, [secs(0), secs(1), secs(2), secs(4), secs(8), secs(16), secs(20), secs(20)]);
    }

    #[test]
    fn parallel_tries_from_one_address_share_its_schedule() {
        let (door, now) = (door(), Instant::now());
        let from: IpAddr = "192.0.2.7".parse().unwrap();
        let dues: Vec<Duration> = (0..4).map(|_| door.knock(from, now) - now).collect();
        assert_eq!(dues, [secs(0), secs(1), secs(3), secs(7)], "each knock waits for the one before");
        let other = door.knock("192.0.2.8".parse().unwrap(), now);
        assert_eq!(other, now, "another address has a schedule of its own");
    }

    #[test]
    fn a_right_password_gives_its_slot_back_and_failures_are_forgotten() {
        let (door, now) = (door(), Instant::now());
        let from: IpAddr = "::1".parse().unwrap();
        assert_eq!(door.knock(from, now), now);
        assert_eq!(door.check(from, "open sesame", now), Verdict::Right);
        assert_eq!(door.knock(from, now), now, "no wait after a right password");
        assert_eq!(door.check(from, "nope", now), Verdict::Wrong { failures: 1, wait: secs(1) });
        assert_eq!(door.knock(from, now), now + secs(1), "loopback is not exempt");
        let later = now + FORGET_AFTER + secs(1);
        assert_eq!(door.knock(from, later), later, "ten minutes after the last failure");
    }

    #[test]
    fn the_record_is_bounded() {
        let (door, now) = (door(), Instant::now());
        for n in 0..MAX_ADDRESSES as u32 + 10 {
            let from = IpAddr::from(n.to_be_bytes());
            door.knock(from, now + Duration::from_millis(n.into()));
        }
        assert_eq!(door.lock().len(), MAX_ADDRESSES);
        assert!(!door.lock().contains_key(&IpAddr::from(0u32.to_be_bytes())), "the oldest went first");
    }
}
