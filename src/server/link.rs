//! One client as its connection thread and the writer threads share it: the
//! socket, what is still to be sent to it, and its place in the room.
//!
//! The connection thread reads, answers and writes its own replies; a
//! writer thread sends it the room's events. Both go through the one
//! [`Outbox`], under its lock, so replies keep their place among the events
//! whoever writes them.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use super::nudge::Nudge;
use super::outbox::{FlushError, Outbox};
use super::wire::Wire;
use crate::history::Replay;
use crate::room::Membership;
use crate::tls::Session;

/// Writes a writer thread makes to one member before going on to the next:
/// enough for a few thousand lines.
const WRITES_PER_TURN: usize = 4;

#[derive(Debug)]
pub(crate) struct Link {
    pub id: u64,
    pub stream: TcpStream,
    /// Set once the TLS handshake began; before that, and without TLS, the
    /// socket speaks plain text. Boxed: rustls's state is large, and a
    /// member in plain text should not carry its room.
    tls: OnceLock<Box<Session>>,
    out: Mutex<Outbox>,
    member: OnceLock<Membership>,
    /// Wakes the connection thread: its member was expelled, a writer found
    /// the connection broken, or the server is closing.
    pub nudge: Arc<Nudge>,
    /// The error a writer thread met, for the connection thread to report.
    failure: Mutex<Option<io::Error>>,
    /// Whether a writer thread met an error: then writers leave it alone.
    failed: AtomicBool,
    /// Whether the last write found the socket full: then writers wait
    /// for it to have room (epoll tells them).
    full: AtomicBool,
}

impl Link {
    pub fn new(id: u64, stream: TcpStream, nudge: Arc<Nudge>) -> Link {
        Link {
            id,
            stream,
            tls: OnceLock::new(),
            out: Mutex::default(),
            member: OnceLock::new(),
            nudge,
            failure: Mutex::default(),
            failed: AtomicBool::new(false),
            full: AtomicBool::new(false),
        }
    }

    /// The socket, through TLS if it is on.
    pub fn wire(&self) -> Wire<'_> {
        Wire { stream: &self.stream, tls: self.tls(), gather: None }
    }

    /// Has everything from now on go through `session`. Only before the
    /// connection joins: no writer thread knows it yet.
    pub fn set_tls(&self, session: Session) {
        assert!(self.member().is_none(), "TLS starts before JOIN");
        assert!(self.tls.set(Box::new(session)).is_ok(), "TLS starts once");
    }

    /// The TLS session, once its handshake began.
    pub fn tls(&self) -> Option<&Session> {
        self.tls.get().map(Box::as_ref)
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls.get().is_some()
    }

    pub fn member(&self) -> Option<&Membership> {
        self.member.get()
    }

    /// Records the membership a join gave. Only once.
    pub fn set_member(&self, member: Membership) {
        assert!(self.member.set(member).is_ok(), "a connection joins once");
    }

    /// Queues a reply to go out after the room's events before `at`.
    pub fn reply(&self, at: u64, line: &dyn fmt::Display) {
        self.out().reply(at, line);
    }

    /// Queues past events to go out after the room's events before `at`.
    pub fn replay(&self, at: u64, events: Box<dyn Replay>) {
        self.out().replay(at, events);
    }

    /// Has events go out with their tags from now on.
    pub fn set_tags(&self) {
        self.out().set_tags();
    }

    /// Writes what is ready, until done or the socket is full; true when
    /// nothing is left.
    pub fn flush(&self) -> Result<bool, FlushError> {
        self.flush_some(&mut self.out(), usize::MAX, None)
    }

    /// `Outbox::flush_some`, noting for the writers whether the socket was
    /// found full.
    fn flush_some(
        &self,
        out: &mut Outbox,
        writes: usize,
        gather: Option<&RefCell<Vec<u8>>>,
    ) -> Result<bool, FlushError> {
        let flushed = out.flush_some(Wire { gather, ..self.wire() }, self.member(), writes);
        self.full.store(out.is_full(), Ordering::SeqCst);
        flushed
    }

    /// What a writer thread does: sends the member its events, for a turn.
    /// Returns true when it stopped with more to send and room to send it.
    /// A broken connection is left for its own thread to end; an expelled
    /// member's thread was told by the room.
    /// `gather` is the writer thread's buffer for short lines.
    pub fn deliver(&self, gather: &RefCell<Vec<u8>>) -> bool {
        let mut out = self.out();
        match self.flush_some(&mut out, WRITES_PER_TURN, Some(gather)) {
            Ok(done) => !done && !out.is_full(),
            Err(FlushError::Expelled) => false,
            Err(FlushError::Io(e)) => {
                // Kept while the outbox is locked: see `failure`.
                self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                self.failed.store(true, Ordering::SeqCst);
                drop(out);
                self.nudge.nudge();
                false
            }
        }
    }

    /// Whether a writer thread found the connection broken.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Whether a writer thread should deliver now: the member has events
    /// before `head` to read, its socket was not found full, and nothing
    /// failed.
    pub fn is_due(&self, head: u64) -> bool {
        !self.full.load(Ordering::SeqCst) && !self.has_failed() && self.member().is_some_and(|m| m.is_behind(head))
    }

    /// Why the connection broke: what a writer thread met, or else what the
    /// socket reports, or else a reset. The socket reports an error only
    /// once, to whichever thread asks first, so this waits for any write in
    /// progress.
    pub fn failure(&self) -> io::Error {
        let _out = self.out();
        let writer_met = self.failure.lock().unwrap_or_else(PoisonError::into_inner).take();
        writer_met
            .or_else(|| self.stream.take_error().ok().flatten())
            .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into())
    }

    /// The error a writer thread met, if any: a socket reports its error
    /// once, so a writer's `sendmsg` may have taken it and the reader seen
    /// only the end of input. A writer keeps the outbox locked from its
    /// `sendmsg` to recording the error, so this waits for that.
    pub fn failed_meanwhile(&self) -> Option<io::Error> {
        let _out = self.out();
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether the last write found the socket full.
    pub fn is_blocked(&self) -> bool {
        self.out().is_blocked()
    }

    /// Whether so many replies wait that reading requests should pause.
    pub fn is_backlogged(&self) -> bool {
        self.out().is_backlogged()
    }

    /// Whether part of a line has gone out, so nothing else may be written
    /// before its end.
    pub fn is_mid_line(&self) -> bool {
        self.out().is_mid_line()
    }

    /// Sends what is ready without the room's events: for the last words
    /// to a member that was expelled.
    pub fn flush_replies(&self) -> Result<bool, FlushError> {
        self.out().flush(self.wire(), None)
    }

    fn out(&self) -> MutexGuard<'_, Outbox> {
        // The outbox is consistent between calls: nothing in it panics midway.
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
