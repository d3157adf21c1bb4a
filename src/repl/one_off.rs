//! One-off visits shown as what they said. `chat-send "release 1.4 is out"`
//! joins, says its line and leaves with `EXIT` within a moment; shown as
//! they come, `* deploy joined`, `deploy: release 1.4 is out`,
//! `* deploy left (exit)` bury each message in two lines of noise. A member
//! who joins and leaves with `EXIT` within `WINDOW` is shown as its
//! messages alone.
//!
//! To keep the room's one order, everything after a `JOINED` is held until
//! that member leaves or `WINDOW` has passed: a join that stays is shown at
//! most `WINDOW` late, and everyone's events after it with it, never out of
//! order. Replayed history is judged by the server's times, as it comes in
//! a burst: a member who stayed longer than `WINDOW` is shown joining and
//! leaving there too. A leave for any other reason (`lost`, `timeout`) is
//! news, and shown with the join.

use std::time::{Duration, Instant};

use crate::client::Event;
use crate::protocol::{parse_time, LeaveReason, ServerLine};

/// How long a visit may last and still be shown as its messages alone.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Most events held back at once.
const MAX_HELD: usize = 1000;

#[derive(Debug, Default)]
pub(super) struct OneOffs {
    held: Vec<Event>,
    /// When the first held `JOINED` came: here, and at the server (ms).
    since: Option<(Instant, Option<u64>)>,
}

impl OneOffs {
    /// When what is held is to be shown, if anything is held.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|(at, _)| at + WINDOW)
    }

    /// Takes an event that came at `now`; returns those to show now, in order.
    pub(super) fn take(&mut self, event: Event, now: Instant) -> Vec<Event> {
        let mut shown = Vec::new();
        if let Some((at, server_at)) = self.since {
            let server_now = event.time.as_deref().and_then(parse_time);
            let late = match (server_at, server_now) {
                (Some(from), Some(to)) => to.saturating_sub(from) > WINDOW.as_millis() as u64,
                _ => false,
            };
            if late || now >= at + WINDOW || self.held.len() >= MAX_HELD {
                shown = self.flush();
            }
        }
        match &event.line {
            ServerLine::Joined(_) => {
                if self.since.is_none() {
                    self.since = Some((now, event.time.as_deref().and_then(parse_time)));
                }
                self.held.push(event);
            }
            ServerLine::Left { name, reason: LeaveReason::Exit } if self.since.is_some() => {
                let joined = self.held.iter().position(|e| matches!(&e.line, ServerLine::Joined(n) if n == name));
                match joined {
                    Some(at) => {
                        self.held.remove(at);
                        if !self.held.iter().any(|e| matches!(e.line, ServerLine::Joined(_))) {
                            shown.extend(self.flush());
                        }
                    }
                    None => self.held.push(event),
                }
            }
            _ if self.since.is_some() => self.held.push(event),
            _ => shown.push(event),
        }
        shown
    }

    /// Everything held, to show now.
    pub(super) fn flush(&mut self) -> Vec<Event> {
        self.since = None;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str, second: u32) -> Event {
        Event {
            epoch: None,
            seq: None,
            time: Some(format!("2026-11-30T13:40:{second:02}.000Z")),
            line: ServerLine::parse(line).unwrap(),
            replayed: false,
        }
    }

    /// An event fed: its line, its second at the server, and when it came
    /// here (ms after the start).
    type Fed<'a> = (&'a str, u32, u64);

    /// Feeds events; returns what was shown, then what is still held.
    fn run(events: &[Fed]) -> (Vec<String>, Vec<String>) {
        let start = Instant::now();
        let mut one_offs = OneOffs::default();
        let mut shown = Vec::new();
        for &(line, second, ms) in events {
            shown.extend(one_offs.take(event(line, second), start + Duration::from_millis(ms)));
        }
        let text = |events: Vec<Event>| events.into_iter().map(|e| e.line.to_string()).collect();
        (text(shown), text(one_offs.flush()))
    }

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn visits_and_stays() {
        // What, the events fed, what was shown, what is still held.
        type Case<'a> = (&'a str, &'a [Fed<'a>], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "a one-off is its message alone",
                &[("JOINED bot", 1, 0), ("MSG bot hi", 1, 5), ("LEFT bot exit", 1, 9)],
                &["MSG bot hi"],
                &[],
            ),
            (
                "others' events stay in order around it",
                &[("JOINED bot", 1, 0), ("MSG Ana x", 1, 2), ("MSG bot y", 1, 4), ("LEFT bot exit", 1, 6)],
                &["MSG Ana x", "MSG bot y"],
                &[],
            ),
            (
                "a join that stays is shown once the window passed",
                &[("JOINED Luis", 1, 0), ("MSG Luis hola", 1, 5), ("MSG Ana hi", 3, 1500)],
                &["JOINED Luis", "MSG Luis hola", "MSG Ana hi"],
                &[],
            ),
            (
                "a lost connection is news",
                &[("JOINED bot", 1, 0), ("MSG bot hi", 1, 5), ("LEFT bot lost", 1, 9)],
                &[],
                &["JOINED bot", "MSG bot hi", "LEFT bot lost"],
            ),
            (
                "history is judged by the server's times",
                &[("JOINED Luis", 1, 0), ("MSG Luis hola", 30, 1), ("LEFT Luis exit", 40, 2)],
                &["JOINED Luis", "MSG Luis hola", "LEFT Luis exit"],
                &[],
            ),
            (
                "nothing is held without a join",
                &[("MSG Ana x", 1, 0), ("LEFT Bob exit", 1, 1)],
                &["MSG Ana x", "LEFT Bob exit"],
                &[],
            ),
        ];
        for (what, events, shown, held) in cases {
            let (got_shown, got_held) = run(events);
            assert_eq!((got_shown, got_held), (strings(shown), strings(held)), "{what}");
        }
    }

    #[test]
    fn what_is_held_is_due_within_the_window() {
        let mut one_offs = OneOffs::default();
        let now = Instant::now();
        assert_eq!(one_offs.due(), None);
        assert!(one_offs.take(event("JOINED Luis", 1), now).is_empty());
        assert_eq!(one_offs.due(), Some(now + WINDOW));
    }
}
