//! One client connection, on its own thread: it reads requests, answers them
//! and ends the connection, waiting in one `ppoll` on its socket. While it is
//! a member, a writer thread sends it the room's events (see `writers`);
//! everything else it sends itself. Nothing here blocks on another client.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::SigSet;
use nix::sys::time::TimeSpec;

use super::link::Link;
use super::nudge::Nudge;
use super::outbox::FlushError;
use super::password::Verdict;
use super::registry::Ticket;
use super::writers::Attachment;
use super::Context;
use crate::framing::{Frame, LineReader};
use crate::name::Name;
use crate::protocol::{
    ByeReason, ErrorCode, Join, LeaveReason, Printable, Refusal, Request, ServerLine, Tags, SERVER_ID,
};
use crate::room::{JoinError, Joined, Membership, Notify, SayError};

/// How long a closing connection may take to send its last lines (after
/// `EXIT`, end of input or a join timeout).
const LINGER: Duration = Duration::from_secs(5);

/// How long a client has, once sent everything and a FIN, to close its end.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a TLS handshake may take: a few round trips, even on Wi-Fi.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The stack of the thread a TLS handshake runs on (address space: only the
/// pages it touches are memory, and only while it runs).
const HANDSHAKE_STACK: usize = 256 * 1024;

/// Why the connection ends.
#[derive(Debug)]
enum End {
    Exit,
    InputClosed,
    Failed(io::Error),
    JoinTimeout,
    Slow,
    Shutdown,
    /// A newer connection took the membership over with its token.
    Replaced,
    /// The cluster's stream did not confirm a message: the client must
    /// reconnect to learn whether it was taken.
    Unavailable,
}

pub(crate) struct Connection {
    ctx: Arc<Context>,
    link: Arc<Link>,
    peer: SocketAddr,
    input: LineReader,
    session: Session,
    /// Whether TLS starts with the first byte (chatd's TLS port).
    tls_first: bool,
    _ticket: Ticket,
}

/// The part of a connection that requests change.
struct Session {
    ctx: Arc<Context>,
    peer: SocketAddr,
    link: Arc<Link>,
    /// The writer thread that sends the member its events.
    attachment: Option<Attachment>,
    throttle: Throttle,
    /// Whether the client asked for tags (`TAGS`).
    tags: bool,
    /// Whether TLS begins once `OK STARTTLS` is out: no line is read until.
    starting_tls: bool,
    /// Whether its last `PASS` was right.
    passed: bool,
    /// When a connection that has not joined is timed out.
    join_deadline: Instant,
    /// The signal mask to wait with, so that a nudge interrupts the wait
    /// (the socket's, and the one before a `PASS` is answered).
    wait_mask: SigSet,
}

impl Connection {
    pub fn new(
        ctx: Arc<Context>,
        stream: TcpStream,
        peer: SocketAddr,
        nudge: Arc<Nudge>,
        ticket: Ticket,
        tls_first: bool,
    ) -> Connection {
        let link = Arc::new(Link::new(ticket.id(), stream, nudge));
        let session = Session {
            ctx: Arc::clone(&ctx),
            peer,
            link: Arc::clone(&link),
            attachment: None,
            throttle: Throttle::new(ctx.config.rate_limit, ctx.config.rate_burst),
            tags: false,
            starting_tls: false,
            passed: false,
            join_deadline: Instant::now() + ctx.config.join_timeout,
            wait_mask: SigSet::empty(),
        };
        let input = LineReader::new(ctx.config.max_line).ignoring_telnet();
        Connection { ctx, link, peer, input, session, tls_first, _ticket: ticket }
    }

    /// Boxed, so that no frame of this thread holds a copy of the
    /// connection: an idle member's stack is what its deepest moment touched.
    pub fn run(mut self: Box<Self>) {
        let nudge = Arc::clone(&self.link.nudge);
        let attached = match nudge.attach() {
            Ok(attached) => attached,
            Err(e) => {
                self.ctx.log.error(format_args!("{}: cannot serve the connection: {e}", self.peer));
                return;
            }
        };
        self.session.wait_mask = attached.wait_mask;
        self.ctx.log.debug(format_args!("{}: connected", self.peer));
        if self.tls_first {
            if let Err(e) = self.expect_tls().and_then(|()| self.start_tls(&[])) {
                self.ctx.log.debug(format_args!("{}: no TLS: {e}", self.peer));
                return;
            }
        }
        let hello = ServerLine::Hello { server: SERVER_ID.into(), text: "type JOIN <name> to enter".into() };
        self.link.reply(0, &hello);
        let end = self.serve();
        self.finish(end);
        drop(attached);
    }

    fn stream(&self) -> &TcpStream {
        &self.link.stream
    }

    /// Why to stop, when another thread nudged this one to look.
    fn interrupted(&self) -> Option<End> {
        if self.ctx.room.is_closed() {
            return Some(End::Shutdown);
        }
        if self.link.member().is_some_and(Membership::is_expelled) {
            return Some(End::Slow);
        }
        if self.link.member().is_some_and(Membership::is_replaced) {
            return Some(End::Replaced);
        }
        if self.link.member().is_some_and(Membership::is_unavailable) {
            self.ctx.log.info(format_args!("{}: sent away: this server lost the cluster", self.peer));
            return Some(End::Unavailable);
        }
        if self.link.has_failed() {
            return Some(End::Failed(self.link.failure()));
        }
        None
    }

    fn serve(&mut self) -> End {
        let join_deadline = self.session.join_deadline;
        let mut end_of_input = false;
        loop {
            self.link.nudge.take();
            if let Some(end) = self.interrupted() {
                return end;
            }
            let paused = match self.handle_input(end_of_input) {
                Ok(paused) => paused,
                Err(end) => return end,
            };
            let flushed = match self.link.flush() {
                Ok(flushed) => flushed,
                Err(FlushError::Expelled) => return End::Slow,
                Err(FlushError::Io(e)) => return End::Failed(e),
            };
            if self.session.starting_tls && flushed {
                // What the client sent after STARTTLS is its handshake.
                self.session.starting_tls = false;
                let early = self.input.take_rest();
                if let Err(e) = self.start_tls(&early) {
                    return End::Failed(e);
                }
                continue;
            }
            let may_read = self.session.may_read();
            if paused && may_read {
                // Flood control let more lines through meanwhile.
                continue;
            }
            // While lines read earlier wait, reading more would only grow the
            // buffer: TCP holds the sender back instead.
            let want_read = !end_of_input && !paused && may_read;
            // A member's writer thread waits for room in its socket; this
            // thread does only before joining, or to read again sooner.
            let want_write = self.link.is_blocked() && (self.link.member().is_none() || self.link.is_backlogged());
            let mut timeout = self.session.throttle.wait();
            if self.link.member().is_none() {
                let left = join_deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return End::JoinTimeout;
                }
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            let ready = if want_read && self.link.wire().has_buffered() {
                // Decrypted already: the socket may have nothing more.
                Ready { readable: true, broken: false }
            } else {
                match wait(self.stream(), &self.session.wait_mask, want_read, want_write, timeout) {
                    Ok(ready) => ready,
                    Err(e) => return End::Failed(e),
                }
            };
            if ready.broken {
                return End::Failed(self.link.failure());
            }
            if ready.readable {
                match self.input.read_from(&mut self.link.wire()) {
                    Ok(0) => end_of_input = true,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(e) => return End::Failed(e),
                }
            }
        }
    }

    /// On the TLS port, waits for the client's first byte and checks that it
    /// starts a TLS handshake; a person who typed a line there (`nc` on the
    /// wrong port) is told in words where plain text is spoken.
    // Not inlined: its locals would sit in the frame the thread waits in.
    #[inline(never)]
    fn expect_tls(&self) -> io::Result<()> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut first = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ctx.room.is_closed() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time"));
            }
            if wait(self.stream(), &self.session.wait_mask, true, false, Some(left))?.readable {
                match self.stream().peek(&mut first) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => break,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // A TLS record of the handshake starts with 22.
        if first[0] == 0x16 {
            return Ok(());
        }
        let port = self.ctx.plain_port;
        let text = format!(
            "this port speaks TLS from the first byte (openssl s_client -connect HOST:PORT); plain text is \
             spoken on port {port}"
        );
        let line = format!("{}\n", ServerLine::Err(Refusal::new(ErrorCode::BadEncoding, text)));
        // A new socket's buffer takes this short line at once; never wait.
        let _ = io::Write::write_all(&mut self.stream(), line.as_bytes());
        // Closing with the typed line unread would send a reset, which can
        // destroy our line before the person sees it.
        while discard_input(self.stream()).is_ok_and(|n| n > 1) {}
        let _ = self.stream().shutdown(Shutdown::Write);
        Err(io::Error::new(io::ErrorKind::InvalidData, "not TLS on the TLS port"))
    }

    /// Runs the TLS handshake, `early` being what the client sent of it with
    /// its `STARTTLS`; from then on everything is encrypted.
    // Not inlined: its locals would sit in the frame the thread waits in.
    #[inline(never)]
    fn start_tls(&self, early: &[u8]) -> io::Result<()> {
        let identity = self.ctx.config.tls.as_ref().expect("TLS is offered only with a certificate");
        let conn = rustls::ServerConnection::new(Arc::clone(&identity.config)).map_err(io::Error::other)?;
        self.link.set_tls(crate::tls::Session::new(conn));
        let tls = self.link.tls().expect("TLS was just set");
        let (stream, ctx) = (self.stream(), &self.ctx);
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let shake = move || -> io::Result<()> {
            tls.feed(early)?;
            crate::tls::handshake(tls, stream, &mut |want| {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || ctx.room.is_closed() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time"));
                }
                // In steps: a nudge (the server closing) is for the
                // connection's thread, not this one.
                let step = left.min(Duration::from_millis(100));
                let events = if want == crate::tls::Want::Read { PollFlags::POLLIN } else { PollFlags::POLLOUT };
                let mut fds = [PollFd::new(stream.as_fd(), events)];
                let timeout = nix::poll::PollTimeout::try_from(step).unwrap_or(nix::poll::PollTimeout::MAX);
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
        };
        // The handshake's cryptography runs deep, and a thread keeps every
        // page of stack it touched: on a thread of its own, whose stack goes
        // when it ends, it leaves an idle member's thread as small as in
        // plain text (12 KiB a member less).
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new().stack_size(HANDSHAKE_STACK).spawn_scoped(scope, shake)?;
            thread.join().unwrap_or_else(|_| Err(io::Error::other("the TLS handshake failed unexpectedly")))
        })?;
        self.ctx.log.debug(format_args!("{}: TLS on", self.peer));
        Ok(())
    }

    /// Handles the complete lines read so far, as far as flood control and the
    /// reply backlog allow. `Ok(true)` when it paused with lines perhaps still
    /// waiting, `Ok(false)` when it needs more input.
    fn handle_input(&mut self, end_of_input: bool) -> Result<bool, End> {
        while self.session.may_read() {
            let frame = match self.input.next_frame() {
                Some(frame) => frame,
                None if end_of_input => {
                    // A last line without its `\n` still counts.
                    if let Some(end) = self.input.finish().and_then(|frame| self.session.handle(frame)) {
                        return Err(end);
                    }
                    return Err(End::InputClosed);
                }
                None => return Ok(false),
            };
            self.session.throttle.take();
            if let Some(end) = self.session.handle(frame) {
                return Err(end);
            }
        }
        Ok(true)
    }

    /// Says goodbye as the reason for ending asks, and closes.
    // Not inlined: its locals would sit in the frame the thread waits in.
    #[inline(never)]
    fn finish(mut self: Box<Self>, end: End) {
        // From here this thread alone writes, and waits for room to.
        if let Some(at) = self.session.attachment.take() {
            self.ctx.writers.detach(&self.link, at);
        }
        // A socket reports its error once: when a writer thread took it (a
        // dead peer's timeout), this thread saw only the end of input, or
        // the error of a later call (a broken pipe). The first is why.
        let end = match end {
            End::InputClosed | End::Failed(_) => match (self.link.failed_meanwhile(), end) {
                (Some(first), End::InputClosed) => End::Failed(first),
                (Some(first), End::Failed(then)) if then.kind() != io::ErrorKind::TimedOut => End::Failed(first),
                (_, end) => end,
            },
            end => end,
        };
        let reason = match &end {
            End::Exit => Some(LeaveReason::Exit),
            End::InputClosed => Some(LeaveReason::Lost),
            End::Failed(e) if e.kind() == io::ErrorKind::TimedOut => Some(LeaveReason::Timeout),
            End::Failed(_) => Some(LeaveReason::Lost),
            End::Slow => Some(LeaveReason::Slow),
            End::Unavailable => Some(LeaveReason::Lost),
            End::JoinTimeout | End::Shutdown | End::Replaced => None,
        };
        let link = &self.link;
        if let (Some(member), End::Unavailable | End::Replaced) = (link.member(), &end) {
            member.withdraw_unconfirmed();
        }
        let end_seq = match (link.member(), reason) {
            (Some(member), Some(reason)) => {
                let at = member.leave(reason);
                self.ctx.log.info(format_args!(
                    "{} left ({reason}) from {}",
                    Printable(member.name().as_str()),
                    self.peer
                ));
                at
            }
            (Some(member), None) => member.last_due(),
            (None, _) => 0,
        };
        if let End::Failed(e) = &end {
            self.ctx.log.debug(format_args!("{}: connection failed: {e}", self.peer));
        }
        let bye = match end {
            End::Exit => Some((ByeReason::Exit, LINGER)),
            End::Replaced => {
                self.ctx.log.info(format_args!("{}: replaced by a newer connection", self.peer));
                Some((ByeReason::Replaced, LINGER))
            }
            End::Shutdown => Some((ByeReason::Shutdown, self.ctx.config.shutdown_timeout)),
            End::Unavailable => Some((ByeReason::Unavailable, LINGER)),
            End::JoinTimeout => {
                let refusal = Refusal::new(ErrorCode::Timeout, "no JOIN in time; connect again and type JOIN <name>");
                link.reply(0, &ServerLine::Err(refusal));
                Some((ByeReason::Timeout, LINGER))
            }
            End::InputClosed => None,
            End::Slow if !link.is_mid_line() => {
                // Its socket is most likely full: one try, no waiting.
                link.reply(end_seq, &ServerLine::Bye(ByeReason::Slow));
                let _ = link.flush_replies();
                return;
            }
            End::Slow | End::Failed(_) => return,
        };
        let linger = bye.map_or(LINGER, |(_, linger)| linger);
        if let Some((reason, _)) = bye {
            link.reply(end_seq, &ServerLine::Bye(reason));
        }
        let deadline = Instant::now() + linger;
        if self.drain(deadline) && !self.close_gently(deadline) {
            self.reset();
        }
    }

    /// Sends what is left, reading and discarding input so that a client
    /// blocked writing to us can go on to read. Returns false if time ran out
    /// or the connection broke.
    fn drain(&mut self, deadline: Instant) -> bool {
        let mut end_of_input = false;
        loop {
            match self.link.flush() {
                Ok(true) => return true,
                Ok(false) => {}
                Err(_) => return false,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ready = match wait(self.stream(), &self.session.wait_mask, !end_of_input, true, Some(left)) {
                Ok(ready) if !ready.broken => ready,
                _ => return false,
            };
            if ready.readable {
                match discard_input(self.stream()) {
                    Ok(0) => end_of_input = true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        }
    }

    /// Closes after the client has read everything: sends FIN, then waits
    /// briefly for the client's end. Closing with unread input would send a
    /// reset, which can destroy the last lines before the client reads them.
    /// Returns false when the client kept its end open all that time.
    fn close_gently(&self, deadline: Instant) -> bool {
        if let Some(tls) = self.link.tls() {
            let _ = tls.close(self.stream());
        }
        let _ = self.stream().shutdown(Shutdown::Write);
        let deadline = deadline.min(Instant::now() + CLOSE_GRACE);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match wait(self.stream(), &self.session.wait_mask, true, false, Some(left)) {
                Ok(ready) if ready.readable => match discard_input(self.stream()) {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                },
                Ok(ready) if !ready.broken => {}
                _ => return true,
            }
        }
    }

    /// Ends a connection whose client kept its end open after our goodbye
    /// and the grace after it, with a reset rather than a FIN: the client
    /// had its last lines a second ago, and a reset is what ends a client
    /// that reads the keyboard as well as the network. netcat-openbsd, given
    /// a FIN alone, waits for the person to press Enter (twice, if the first
    /// came within the grace) before it sees that the server is gone.
    fn reset(&self) {
        let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
        let _ = nix::sys::socket::setsockopt(self.stream(), nix::sys::socket::sockopt::Linger, &linger);
    }
}

impl Session {
    /// Whether the next request may be handled now.
    fn may_read(&mut self) -> bool {
        !self.starting_tls && !self.link.is_backlogged() && self.throttle.ready()
    }

    /// Where a reply made now belongs among the room's events.
    fn now(&self) -> u64 {
        self.link.member().map_or(0, Membership::head)
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.ctx.log.debug(format_args!("{}: ERR {}", self.peer, Printable(&refusal.to_string())));
        let at = self.now();
        self.link.reply(at, &ServerLine::Err(refusal));
    }

    fn handle(&mut self, frame: Frame<'_>) -> Option<End> {
        let max = self.ctx.config.max_line;
        let request = match frame {
            Frame::Line("") => return None,
            Frame::Line(line) => Request::parse(line),
            Frame::TooLong => Err(Refusal::new(
                ErrorCode::TooLong,
                format!("line longer than {max} bytes (newline included); it was discarded"),
            )),
            Frame::BadEncoding => {
                Err(Refusal::new(ErrorCode::BadEncoding, "line is not valid UTF-8; it was discarded"))
            }
        };
        match request {
            Ok(request) => self.execute(request),
            Err(refusal) => {
                self.refuse(refusal);
                None
            }
        }
    }

    fn execute(&mut self, request: Request<'_>) -> Option<End> {
        let not_joined = || Refusal::new(ErrorCode::NotJoined, "JOIN <name> first");
        let link = Arc::clone(&self.link);
        match (request, link.member()) {
            (Request::Exit, _) => return Some(End::Exit),
            (Request::Ping(token), member) => {
                if let Some(end) = member.and_then(|member| self.confirm(member)) {
                    return Some(end);
                }
                let at = self.now();
                let pong = ServerLine::Pong(token.map(str::to_owned));
                match member {
                    // Where the PING fell in the room's order: a client that
                    // must resume knows which of its messages came after it.
                    Some(_) if self.tags => {
                        let tags = Tags { seq: Some(at - 1), ..Tags::default() };
                        link.reply(at, &format_args!("{tags} {pong}"));
                    }
                    _ => link.reply(at, &pong),
                }
            }
            (Request::Join(_), Some(member)) => {
                let text = format!("already joined as {}; EXIT and connect again to change name", member.name());
                self.refuse(Refusal::new(ErrorCode::AlreadyJoined, text));
            }
            (Request::Join(join), None) => return self.join(join),
            (Request::Pass(_), Some(member)) => {
                let text = format!("already joined as {}; PASS goes before JOIN", member.name());
                self.refuse(Refusal::new(ErrorCode::AlreadyJoined, text));
            }
            (Request::Pass(given), None) => return self.pass(given),
            (Request::Tags, _) => {
                self.tags = true;
                link.set_tags();
                let at = self.now();
                link.reply(at, &ServerLine::OkTags);
            }
            (Request::StartTls, Some(_)) => {
                let text = "STARTTLS comes before JOIN; connect again and send it first";
                self.refuse(Refusal::new(ErrorCode::AlreadyJoined, text));
            }
            (Request::StartTls, None) => self.start_tls_asked(),
            (Request::Msg(_) | Request::Names, None) => self.refuse(not_joined()),
            (Request::Msg(text), Some(member)) => match member.say(text) {
                Ok(()) => {}
                Err(SayError::Closed) => return Some(End::Shutdown),
                Err(SayError::Gone) if member.is_replaced() => return Some(End::Replaced),
                Err(SayError::Gone) if member.is_unavailable() => return Some(End::Unavailable),
                Err(SayError::Gone) => return Some(End::Slow),
                Err(SayError::Unavailable(e)) => return Some(self.unconfirmed(&e)),
                Err(SayError::NotStored(e)) => {
                    self.ctx.log.error(format_args!("a message was refused: {e}"));
                    let text = format!("{e}; the message was not sent to anyone, send it again later");
                    self.refuse(Refusal::new(ErrorCode::Unavailable, text));
                }
            },
            (Request::Names, Some(member)) => {
                if let Some(end) = self.confirm(member) {
                    return Some(end);
                }
                let (at, names) = member.names();
                link.reply(at, &ServerLine::Names(names));
            }
        }
        None
    }

    /// Answers `STARTTLS`: `OK STARTTLS`, after which the connection thread
    /// starts TLS; or why not.
    fn start_tls_asked(&mut self) {
        if self.link.is_tls() {
            self.refuse(Refusal::new(ErrorCode::NoTls, "this connection is encrypted already"));
        } else if self.ctx.config.tls.is_none() {
            let text = "this server offers no TLS (chatd --no-tls); go on in plain text";
            self.refuse(Refusal::new(ErrorCode::NoTls, text));
        } else {
            self.link.reply(0, &ServerLine::OkStartTls);
            self.starting_tls = true;
        }
    }

    /// Waits until what the member said is in the room's order (in a room
    /// across servers), so a reply can say where it falls.
    fn confirm(&self, member: &Membership) -> Option<End> {
        member.confirm().err().map(|e| self.unconfirmed(&e))
    }

    /// The end of a connection whose messages the cluster did not confirm.
    /// No `ERR`: an `ERR` says a message was not taken, and these may have
    /// been. The client learns which when it resumes, here or on another
    /// server.
    fn unconfirmed(&self, e: &crate::room::Unavailable) -> End {
        self.ctx.log.error(format_args!("{}: messages were not confirmed: {e}", self.peer));
        End::Unavailable
    }

    /// Whether nobody else can read what crosses this connection: it comes
    /// from this computer, or it is encrypted.
    fn is_private(&self) -> bool {
        crate::lan::is_loopback(self.peer.ip()) || self.link.is_tls()
    }

    /// Why a room with a password refuses this connection's `PASS` or `JOIN`
    /// before looking at it, if it does.
    fn must_encrypt(&self) -> Option<Refusal> {
        let refused = self.ctx.door.is_some() && !self.ctx.config.allow_plain && !self.is_private();
        refused.then(|| {
            Refusal::new(
                ErrorCode::TlsRequired,
                "this room has a password, which must not cross the network in plain text; connect with TLS \
                 (the minichat tools do it by themselves), or ask the operator to start chatd with --allow-plain",
            )
        })
    }

    /// Answers `PASS` once this address's turn has come (see `password`).
    fn pass(&mut self, given: &str) -> Option<End> {
        let Some(door) = &self.ctx.door else {
            // A client that always sends a password works with every room.
            self.link.reply(0, &ServerLine::OkPass);
            return None;
        };
        if let Some(refusal) = self.must_encrypt() {
            self.refuse(refusal);
            return None;
        }
        let from = crate::lan::canonical(self.peer.ip());
        let due = door.knock(from, Instant::now());
        if let Some(end) = self.pause_until(due) {
            return Some(end);
        }
        match door.check(from, given, Instant::now()) {
            Verdict::Right => {
                self.passed = true;
                self.link.reply(0, &ServerLine::OkPass);
            }
            Verdict::Wrong { failures, wait } => {
                self.passed = false;
                let wait = wait.as_secs();
                self.ctx.log.info(format_args!(
                    "{}: wrong password ({failures} failures from this address; the next try waits {wait} s)",
                    self.peer
                ));
                let when = match wait {
                    0 => String::new(),
                    _ => format!("; the next try from this address is answered in {wait} s"),
                };
                let text = format!("wrong password; check it and try again{when}");
                self.refuse(Refusal::new(ErrorCode::BadPassword, text));
            }
        }
        None
    }

    /// Waits until `due`, or until the server shuts down, the client hangs
    /// up or the join timeout passes; reads nothing meanwhile.
    fn pause_until(&self, due: Instant) -> Option<End> {
        loop {
            self.link.nudge.take();
            if self.ctx.room.is_closed() {
                return Some(End::Shutdown);
            }
            let now = Instant::now();
            if now >= self.join_deadline {
                return Some(End::JoinTimeout);
            }
            let left = due.min(self.join_deadline).saturating_duration_since(now);
            if left.is_zero() {
                return None;
            }
            match wait(&self.link.stream, &self.wait_mask, false, false, Some(left)) {
                Ok(ready) if ready.broken => return Some(End::Failed(self.link.failure())),
                Ok(_) => {}
                Err(e) => return Some(End::Failed(e)),
            }
        }
    }

    fn join(&mut self, join: Join<'_>) -> Option<End> {
        if let Some(refusal) = self.must_encrypt() {
            self.refuse(refusal);
            return None;
        }
        if self.ctx.door.is_some() && !self.passed {
            let text = "this room has a password; send PASS <password>, then JOIN again \
                        (the minichat tools take it from CHAT_PASSWORD or --password-file)";
            self.refuse(Refusal::new(ErrorCode::PasswordRequired, text));
            return None;
        }
        let name = match Name::parse(join.name) {
            Ok(name) => name,
            Err(e) => {
                self.refuse(e.into());
                return None;
            }
        };
        let told: Arc<dyn Notify> = Arc::clone(&self.link.nudge) as Arc<dyn Notify>;
        match self.ctx.room.join(name, join.replay, join.token, told) {
            Ok(joined) => self.joined(joined),
            Err(JoinError::Taken(holder)) => {
                self.refuse(Refusal::new(ErrorCode::NameTaken, format!("{holder} is taken; choose another name")));
                None
            }
            Err(JoinError::Closed) => Some(End::Shutdown),
            Err(JoinError::NotStored(e)) => {
                self.ctx.log.error(format_args!("{}: a join was refused: {e}", self.peer));
                self.refuse(Refusal::new(ErrorCode::Unavailable, format!("{e}; try again later")));
                None
            }
            Err(JoinError::Unavailable(e)) => {
                self.ctx.log.error(format_args!("{}: a join was not taken: {e}", self.peer));
                self.refuse(Refusal::new(ErrorCode::Unavailable, format!("{e}; try again, or another server")));
                None
            }
            Err(JoinError::Failed(e)) => {
                self.ctx.log.error(format_args!("{}: cannot read the history for a join: {e}", self.peer));
                let text = format!("the server cannot read its history ({e}); try again later");
                self.refuse(Refusal::new(ErrorCode::Unavailable, text));
                None
            }
        }
    }

    /// Answers a join the room took: `OK JOIN`, then `MISSED` and the replay
    /// if asked for; then hands the member to a writer thread.
    fn joined(&mut self, joined: Joined) -> Option<End> {
        let Joined { membership, epoch, past, token, missed, replay, took_over } = joined;
        let at = membership.cursor();
        let ok = ServerLine::OkJoin(membership.name().to_string());
        if self.tags {
            let tags = Tags { epoch: Some(epoch), seq: Some(past), token: Some(token), time: None };
            self.link.reply(at, &format_args!("{tags} {ok}"));
        } else {
            self.link.reply(at, &ok);
        }
        if let Some(missed) = missed {
            self.link.reply(at, &ServerLine::Missed(missed));
        }
        if let Some(replay) = replay {
            self.link.replay(at, replay);
        }
        let how = if took_over { "took over its membership" } else { "joined" };
        self.ctx.log.info(format_args!("{} {how} from {}", membership.name(), self.peer));
        self.link.set_member(membership);
        match self.ctx.writers.attach(&self.link) {
            Ok(at) => self.attachment = Some(at),
            Err(e) => {
                self.ctx.log.error(format_args!("{}: cannot hand over to a writer thread: {e}", self.peer));
                return Some(End::Failed(e));
            }
        }
        None
    }
}

/// Reads and throws away what the client sent: `Ok(0)` at its end. Only
/// while closing, when no request is taken any more.
fn discard_input(stream: &TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 512];
    match (&*stream).read(&mut buf) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(1),
        result => result,
    }
}

/// What `poll` reported: nothing when a nudge interrupted it.
#[derive(Debug, Default)]
struct Ready {
    readable: bool,
    broken: bool,
}

/// Waits for the socket, for `timeout` at most, or until nudged.
fn wait(stream: &TcpStream, mask: &SigSet, read: bool, write: bool, timeout: Option<Duration>) -> io::Result<Ready> {
    let mut events = PollFlags::empty();
    events.set(PollFlags::POLLIN, read);
    events.set(PollFlags::POLLOUT, write);
    let mut fds = [PollFd::new(stream.as_fd(), events)];
    match ppoll(&mut fds, timeout.map(TimeSpec::from_duration), Some(*mask)) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
        Err(e) => return Err(e.into()),
    }
    let socket = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(Ready {
        readable: socket.contains(PollFlags::POLLIN),
        broken: socket.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
            && !socket.contains(PollFlags::POLLIN),
    })
}

/// Flood control: a token bucket of lines. Reading stops while it is empty,
/// so TCP slows the sender down; no line is ever thrown away.
#[derive(Debug)]
struct Throttle {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    fn new(per_second: u32, burst: u32) -> Throttle {
        let burst = burst.max(1) as f64;
        Throttle { per_second: per_second as f64, burst, tokens: burst, last: Instant::now() }
    }

    fn unlimited(&self) -> bool {
        self.per_second == 0.0
    }

    fn ready(&mut self) -> bool {
        if self.unlimited() {
            return true;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.burst);
        self.last = now;
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        if !self.unlimited() {
            self.tokens -= 1.0;
        }
    }

    /// How long until the next line may be read, if reading is paused.
    fn wait(&self) -> Option<Duration> {
        (!self.unlimited() && self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
    }
}
