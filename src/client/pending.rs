//! The messages said but not yet confirmed, so that after a lost connection
//! each is sent again exactly when the server did not take it.
//!
//! With tags on, a `PONG` says where its `PING` fell: `@seq=S PONG token`
//! means every message sent before that `PING` is at or before `S`, and
//! every one after is after `S` (docs/protocol.md). So only the messages
//! after the last answered `PING` are in doubt. On a new connection, a
//! `JOIN … SINCE <epoch>:S` replays the room from there, our own messages
//! included: those of ours after `S` are, in order, a prefix of the doubtful
//! ones. They were taken; the rest were not, and go out again.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Pending {
    /// The unconfirmed messages, oldest first, each with the caller's note
    /// (`chat-send`'s input line number).
    lines: VecDeque<(u64, String)>,
    /// How many of `lines` went out on the current connection.
    written: usize,
    /// The `PING`s in flight on this connection: each token, and how many
    /// of `lines` went out before it.
    pings: VecDeque<(String, usize)>,
    /// Every message before `lines` is at or before this position, and
    /// every one in `lines` after it: from the last `PONG`, or a join.
    since: u64,
    /// The note of the last message confirmed.
    confirmed_note: Option<u64>,
    /// How many of `lines` the replay of a resume showed taken so far.
    matched: usize,
}

/// The replay of a resume does not fit what was sent: another client used
/// this name, or the history is not what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl Pending {
    pub fn new(since: u64) -> Pending {
        Pending { since, ..Pending::default() }
    }

    /// How many messages are not confirmed.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The position to resume from for these messages.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// The note of the last message the server confirmed, if any.
    pub fn confirmed_note(&self) -> Option<u64> {
        self.confirmed_note
    }

    /// Notes a message said; `unwritten` tells what is still to send.
    pub fn push(&mut self, note: u64, text: &str) {
        self.lines.push_back((note, text.to_owned()));
    }

    /// The messages not yet sent on this connection, oldest first.
    pub fn unwritten(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().skip(self.written).map(|(_, text)| text.as_str())
    }

    /// Every message has been sent on this connection.
    pub fn all_written(&mut self) {
        self.written = self.lines.len();
    }

    /// Whether some message sent on this connection has no `PING` after it.
    pub fn needs_ping(&self) -> bool {
        self.written > self.pings.back().map_or(0, |(_, before)| *before)
    }

    /// A `PING` went out after everything written.
    pub fn pinged(&mut self, token: String) {
        self.pings.push_back((token, self.written));
    }

    /// A `PONG` came: returns whether it answered one of these `PING`s, and
    /// if so confirms what went before it.
    pub fn ponged(&mut self, token: &str, seq: Option<u64>) -> bool {
        let Some(at) = self.pings.iter().position(|(t, _)| t == token) else { return false };
        let count = self.pings[at].1;
        self.pings.drain(..=at);
        for ping in &mut self.pings {
            ping.1 -= count;
        }
        self.confirm_first(count);
        if let Some(seq) = seq {
            self.since = seq;
        }
        true
    }

    /// The server refused a message: the oldest unanswered `PING` covers it.
    /// When that `PING` covers one message only, it is that one, which will
    /// never be in a replay: it is forgotten. Returns whether it could tell.
    pub fn refused(&mut self) -> bool {
        let window = self.pings.front().map_or(self.written, |(_, before)| *before);
        if window != 1 {
            return false;
        }
        self.lines.pop_front();
        self.written -= 1;
        for ping in &mut self.pings {
            ping.1 -= 1;
        }
        true
    }

    /// The connection is gone: nothing is in flight any more.
    pub fn connection_lost(&mut self) {
        self.written = 0;
        self.pings.clear();
        self.matched = 0;
    }

    /// The replay of a resume shows a message of ours, `text`, at `seq`.
    pub fn replayed(&mut self, seq: u64, text: &str) -> Result<(), Mismatch> {
        if seq <= self.since {
            return Ok(());
        }
        match self.lines.get(self.matched) {
            Some((_, sent)) if sent == text => {
                self.matched += 1;
                Ok(())
            }
            Some((note, sent)) => Err(Mismatch(format!(
                "the server's history has {text:?} at position {seq} where {sent:?} (line {note}) was expected"
            ))),
            None => Err(Mismatch(format!("the server's history has {text:?} at position {seq}, which was never sent"))),
        }
    }

    /// The replay of a resume ended with position `joined`: what it showed
    /// was taken is confirmed; the rest was not taken, and anything sent now
    /// comes after `joined`. Returns how many are left to send again.
    pub fn resumed(&mut self, joined: u64) -> usize {
        self.confirm_first(self.matched);
        self.matched = 0;
        self.since = joined;
        self.lines.len()
    }

    fn confirm_first(&mut self, count: usize) {
        for (note, _) in self.lines.drain(..count) {
            self.confirmed_note = Some(note);
        }
        self.written = self.written.saturating_sub(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(pending: &mut Pending, texts: &[&str]) {
        for text in texts {
            let note = pending.len() as u64 + pending.confirmed_note().unwrap_or(0) + 1;
            pending.push(note, text);
        }
        pending.all_written();
    }

    #[test]
    fn a_pong_confirms_what_went_before_its_ping() {
        let mut pending = Pending::new(10);
        said(&mut pending, &["a", "b"]);
        pending.pinged("1".into());
        said(&mut pending, &["c"]);
        assert!(pending.needs_ping());
        pending.pinged("2".into());
        assert!(!pending.ponged("other", Some(99)));
        assert!(pending.ponged("1", Some(14)));
        assert_eq!((pending.len(), pending.since(), pending.confirmed_note()), (1, 14, Some(2)));
        assert!(pending.ponged("2", Some(15)));
        assert!(pending.is_empty());
        assert!(!pending.needs_ping());
    }

    #[test]
    fn a_resume_sends_again_exactly_what_the_replay_does_not_show() {
        let mut pending = Pending::new(10);
        said(&mut pending, &["a", "b", "c", "d"]);
        pending.connection_lost();
        // Position 10 and before were confirmed already: not ours to count.
        pending.replayed(9, "old").unwrap();
        pending.replayed(12, "a").unwrap();
        pending.replayed(13, "b").unwrap();
        assert_eq!(pending.resumed(20), 2);
        assert_eq!(pending.unwritten().collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!((pending.since(), pending.confirmed_note()), (20, Some(2)));
    }

    #[test]
    fn a_replay_that_does_not_fit_is_a_mismatch() {
        let mut pending = Pending::new(0);
        said(&mut pending, &["a", "b"]);
        pending.connection_lost();
        assert!(pending.replayed(1, "b").is_err());
        pending.replayed(1, "a").unwrap();
        pending.replayed(2, "b").unwrap();
        assert!(pending.replayed(3, "c").is_err());
    }

    #[test]
    fn a_refusal_is_pinned_to_a_line_only_when_a_ping_window_holds_one() {
        let mut pending = Pending::new(0);
        said(&mut pending, &["a"]);
        pending.pinged("1".into());
        said(&mut pending, &["b"]);
        pending.pinged("2".into());
        assert!(pending.refused());
        assert_eq!(pending.unwritten().count(), 0);
        assert!(pending.ponged("2", Some(3)));
        assert!(pending.is_empty());
        said(&mut pending, &["c", "d"]);
        pending.pinged("3".into());
        assert!(!pending.refused());
    }
}
