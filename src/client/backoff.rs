//! When to try again after a lost connection: soon at first, then less and
//! less often (0.2 s doubling up to 5 s), so that a restarting server is
//! found at once and a vanished one is not hammered; and when to stop
//! trying.

use std::time::{Duration, Instant};

/// How long the clients keep trying to reconnect unless told otherwise
/// (`--retry-for`).
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);

const FIRST: Duration = Duration::from_millis(200);
const LONGEST: Duration = Duration::from_secs(5);

/// The tries after one lost connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    lost_at: Instant,
    give_up_at: Instant,
    next_try: Instant,
    delay: Duration,
    /// The try at the deadline failed.
    over: bool,
}

impl Backoff {
    /// Starts counting at `now`; tries end `retry_for` later.
    pub fn new(now: Instant, retry_for: Duration) -> Backoff {
        Backoff { lost_at: now, give_up_at: now + retry_for, next_try: now + FIRST, delay: FIRST, over: false }
    }

    /// When the next try is due, or `None` once it is time to give up. The
    /// last try is made at the deadline itself, not skipped.
    pub fn due(&self) -> Option<Instant> {
        (!self.over).then_some(self.next_try.min(self.give_up_at))
    }

    /// Notes a failed try at `now`: the next one comes twice as late.
    pub fn failed(&mut self, now: Instant) {
        if now >= self.give_up_at {
            self.over = true;
            return;
        }
        self.delay = (self.delay * 2).min(LONGEST);
        self.next_try = now + self.delay;
    }

    /// How long ago the connection was lost.
    pub fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.lost_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_double_up_to_five_seconds_and_end_at_the_deadline() {
        let start = Instant::now();
        let mut backoff = Backoff::new(start, Duration::from_secs(12));
        let mut at = Vec::new();
        while let Some(due) = backoff.due() {
            at.push(due.duration_since(start).as_millis());
            backoff.failed(due);
        }
        assert_eq!(at, [200, 600, 1400, 3000, 6200, 11200, 12000]);
    }

    #[test]
    fn a_zero_bound_gives_up_after_one_look() {
        let start = Instant::now();
        let mut backoff = Backoff::new(start, Duration::ZERO);
        assert_eq!(backoff.due(), Some(start));
        backoff.failed(start);
        assert_eq!(backoff.due(), None);
    }
}
