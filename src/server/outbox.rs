//! What one connection still has to send: its own replies, interleaved at the
//! right place with the room's events, written with one `sendmsg` for
//! everything ready (through TLS: one vectored write into rustls, and one
//! `sendmsg` of its records).
//!
//! A reply is tagged with the room's sequence number when it was made, and
//! goes out after every event before that number: so a `PONG` proves to its
//! client that it was sent everything that happened before its `PING`.
//!
//! A replay of past events (`JOIN … LAST | SINCE`) waits in the same queue,
//! read from the history a chunk at a time as the socket takes it: replies
//! queued after it go out after the whole replay, and live events after it
//! too, since it stands before the member's first live event.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};

use super::wire::Wire;
use crate::history::{Event, Replay};
use crate::protocol;
use crate::room::{Expelled, Line, Membership};

/// Lines gathered for one `writev` at the most (Linux's `IOV_MAX`).
const MAX_BATCH: usize = 1024;

/// Reply bytes waiting for a client before the server stops reading its
/// requests: a client that sends `PING`s and never reads slows itself down.
const REPLY_BACKLOG: usize = 1 << 20;

/// Lines of capacity an empty queue keeps, so a quiet room costs no
/// allocation per message.
const KEPT_CAPACITY: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    replies: VecDeque<(u64, Pending)>,
    reply_bytes: usize,
    /// Whether events go out with their tags (`TAGS`).
    tags: bool,
    batch: VecDeque<Line>,
    /// Bytes of `batch[0]` already written.
    written: usize,
    blocked: bool,
    /// Whether the last write found the socket full: there is no use in
    /// writing again before it has room.
    full: bool,
}

/// What waits in the reply queue.
#[derive(Debug)]
enum Pending {
    Line(Line),
    /// Past events, read from the history as they go out.
    Replay(Box<dyn Replay>),
}

#[derive(Debug)]
pub(crate) enum FlushError {
    Expelled,
    Io(io::Error),
}

impl From<Expelled> for FlushError {
    fn from(_: Expelled) -> FlushError {
        FlushError::Expelled
    }
}

impl Outbox {
    /// Queues a reply to go out after the room's events before `at`.
    pub fn reply(&mut self, at: u64, line: &dyn fmt::Display) {
        let line: Line = format!("{line}\n").into_bytes().into();
        self.reply_bytes += line.len();
        self.replies.push_back((at, Pending::Line(line)));
    }

    /// Queues past events to go out after the room's events before `at`,
    /// and before any reply queued later.
    pub fn replay(&mut self, at: u64, events: Box<dyn Replay>) {
        self.replies.push_back((at, Pending::Replay(events)));
    }

    /// Has events go out with their tags from now on.
    pub fn set_tags(&mut self) {
        self.tags = true;
    }

    /// Whether so many replies wait that reading requests should pause.
    pub fn is_backlogged(&self) -> bool {
        self.reply_bytes > REPLY_BACKLOG
    }

    /// Whether the last write found the socket full.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the last write found the socket full.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Whether part of a line has gone out, so nothing else may be written
    /// before its end.
    pub fn is_mid_line(&self) -> bool {
        self.written > 0
    }

    /// Writes until everything is sent or the socket is full.
    /// Returns true when nothing is left to send.
    pub fn flush(&mut self, wire: Wire<'_>, member: Option<&Membership>) -> Result<bool, FlushError> {
        self.flush_some(wire, member, usize::MAX)
    }

    /// Like `flush`, but stops after `writes` writes once a batch has gone
    /// out whole: a writer thread serving many members must not spend
    /// itself on one that keeps up with a fast talker. What is left then
    /// is still ahead of the member's cursor.
    pub fn flush_some(
        &mut self,
        wire: Wire<'_>,
        member: Option<&Membership>,
        writes: usize,
    ) -> Result<bool, FlushError> {
        let mut written = 0;
        loop {
            if written >= writes && self.batch.is_empty() {
                return Ok(false);
            }
            self.refill(member)?;
            if self.batch.is_empty() {
                // TLS records of lines already taken may still wait.
                if !wire.flush().map_err(FlushError::Io)? {
                    self.full = true;
                    self.set_blocked(true, member);
                    return Ok(false);
                }
                // The socket took what waited: writers may come back, even
                // if it was found full before and no send since said so.
                self.full = false;
                self.set_blocked(false, member);
                self.release_memory();
                return Ok(true);
            }
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.batch.len());
            slices.extend(self.batch.iter().map(|line| IoSlice::new(line)));
            slices[0].advance(self.written);
            match wire.send(&slices) {
                Ok(0) => return Err(FlushError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.consume(n);
                    self.full = false;
                    written += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.full = true;
                    self.set_blocked(true, member);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FlushError::Io(e)),
            }
        }
    }

    /// Notes whether the client is keeping up, and tells the room: only a
    /// member whose socket is full can be expelled as slow.
    fn set_blocked(&mut self, blocked: bool, member: Option<&Membership>) {
        if self.blocked != blocked {
            self.blocked = blocked;
            if let Some(member) = member {
                member.set_blocked(blocked);
            }
        }
    }

    /// Fills the batch with replies and events in their order.
    fn refill(&mut self, member: Option<&Membership>) -> Result<(), FlushError> {
        while self.batch.len() < MAX_BATCH {
            if let Some((at, _)) = self.replies.front() {
                if member.is_none_or(|m| *at <= m.cursor()) {
                    match self.replies.pop_front().expect("front exists") {
                        (_, Pending::Line(line)) => {
                            self.reply_bytes -= line.len();
                            self.batch.push_back(line);
                        }
                        (at, Pending::Replay(mut events)) => {
                            if self.replay_some(events.as_mut()).map_err(FlushError::Io)? {
                                self.replies.push_front((at, Pending::Replay(events)));
                            }
                        }
                    }
                    continue;
                }
            }
            let Some(member) = member else { break };
            let limit = self.replies.front().map_or(u64::MAX, |(at, _)| *at);
            let room_for = MAX_BATCH - self.batch.len();
            let fetched = member.fetch(limit, &mut self.batch, room_for, self.tags)?;
            let reply_due = self.replies.front().is_some_and(|(at, _)| *at <= member.cursor());
            if fetched.advanced == 0 && !reply_due {
                break;
            }
        }
        Ok(())
    }

    /// Moves the next chunk of a replay to the batch; true while more is left.
    fn replay_some(&mut self, events: &mut dyn Replay) -> io::Result<bool> {
        let mut chunk: Vec<Event> = Vec::new();
        let more = events.next_chunk(&mut chunk, MAX_BATCH - self.batch.len())?;
        for event in chunk {
            let line: Line = if self.tags {
                let mut tagged = protocol::event_prefix(event.seq, event.time_ms).into_bytes();
                tagged.extend_from_slice(&event.line);
                tagged.into()
            } else {
                event.line.into()
            };
            self.batch.push_back(line);
        }
        Ok(more)
    }

    /// Gives back what a burst made the queues grow to: most members are
    /// idle most of the time, and an idle member should cost little.
    fn release_memory(&mut self) {
        if self.batch.capacity() > KEPT_CAPACITY {
            self.batch = VecDeque::new();
        }
        if self.replies.is_empty() && self.replies.capacity() > KEPT_CAPACITY {
            self.replies = VecDeque::new();
        }
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.batch[0].len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.batch.pop_front();
        }
    }
}
