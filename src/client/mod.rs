//! Talking to chatd as a client: connecting (with an error that says what to
//! do next), joining, and reading and writing protocol lines. `chat`,
//! `chat-send` and `chat-tail` all go through here; none of them spells a
//! protocol line itself.
//!
//! - this file: one connection, its two halves, and the join;
//! - `membership`: a membership that outlives its connections, reconnecting
//!   and resuming where it was;
//! - `pending`: the messages said but not yet confirmed, sent again exactly
//!   once after a lost connection;
//! - `password`: the room's password, given before joining;
//! - `servers`: a list of servers, the order they are tried in, and
//!   connecting to the first that answers;
//! - `secure`: TLS: asking for it, trusting the server, reading and writing
//!   through it;
//! - `backoff`: how long to wait between tries, and when to give up;
//! - `wait`: `poll` on the socket and one more descriptor;
//! - `render`, `error`: how events and errors are shown.

mod backoff;
mod error;
mod membership;
mod password;
mod pending;
mod render;
mod secure;
mod servers;
mod wait;

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use self::backoff::DEFAULT_RETRY_FOR;
pub use self::error::{ClientError, NotChatd};
pub use self::membership::Settings;
pub use self::membership::{Event, Membership, News};
pub use self::password::give_password;
pub use self::render::{json_missed, render, render_event, Format};
pub use self::secure::set_trust;
use self::secure::{Incoming, Outgoing};
use self::wait::Ready;
pub use self::wait::Watch;
use crate::framing::{Frame, LineReader};
use crate::protocol::{ErrorCode, Join, Request, ServerLine, Tags, DEFAULT_PORT};

/// Most bytes read while waiting for the first line: a `HELLO` is short,
/// and a peer that streams bytes without a line end is no chat server.
const MAX_HELLO: usize = 64 * 1024;

/// How long a connection attempt may take before it is reported.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds the default port to a `HOST` or `[V6]` or bare IPv6 address that has none.
pub fn with_default_port(server: &str) -> String {
    if server.parse::<SocketAddr>().is_ok() {
        return server.to_owned();
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return SocketAddr::new(ip, DEFAULT_PORT).to_string();
    }
    if server.starts_with('[') && server.ends_with(']') || !server.contains(':') {
        return format!("{server}:{DEFAULT_PORT}");
    }
    server.to_owned()
}

/// The sending half of a connection; buffered, so call `flush`.
#[derive(Debug)]
pub struct Sender {
    out: BufWriter<Outgoing>,
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct Receiver {
    stream: TcpStream,
    /// Set once TLS is on.
    tls: Option<std::sync::Arc<crate::tls::Session>>,
    lines: LineReader,
    server: String,
}

/// What a server line or a watched descriptor brought (`Receiver::next`).
#[derive(Debug)]
pub enum Arrival {
    Line(Tags, ServerLine),
    /// The watched descriptor reported these events.
    Watched(nix::poll::PollFlags),
    /// The time given passed first.
    TimeUp,
}

/// What the server said of a join it accepted: with tags on (version 2),
/// where the room was and the token for taking the membership over later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The name as the server stored it.
    pub name: String,
    pub epoch: Option<String>,
    /// The last position of the past: replayed events end with it.
    pub seq: Option<u64>,
    pub token: Option<String>,
}

/// Connects to the first server of `servers` (`HOST[:PORT]`, or several
/// separated by commas) that answers as a chat server, and reads its
/// `HELLO`; `Receiver::server` says which one it was. When none answers,
/// the error says why for each.
pub fn connect(servers: &str) -> Result<(Sender, Receiver), ClientError> {
    let servers = servers::split(servers);
    let (_, sender, receiver) = servers::connect_first(&servers, 0..servers.len(), CONNECT_TIMEOUT, None)?;
    Ok((sender, receiver))
}

/// Connects to one `server`, taking at most about `patience` per address.
pub fn connect_within(server: &str, patience: Duration) -> Result<(Sender, Receiver), ClientError> {
    let server = with_default_port(server);
    let connect_error = |source: io::Error| ClientError::Connect { server: server.clone(), source };
    let addrs: Vec<SocketAddr> = server.to_socket_addrs().map_err(connect_error)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    let patience = patience.max(Duration::from_millis(10));
    let stream = addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, patience).map_err(|e| last = e).ok())
        .ok_or_else(|| connect_error(last))?;
    stream.set_nodelay(true).map_err(connect_error)?;
    // A server that accepts but never says HELLO, or never answers JOIN, is
    // reported rather than waited for; `Membership` lifts this once joined.
    stream.set_read_timeout(Some(patience.max(CONNECT_TIMEOUT))).map_err(connect_error)?;
    let writing = stream.try_clone().map_err(connect_error)?;
    let mut receiver = Receiver { stream, tls: None, lines: LineReader::unlimited(), server };
    receiver.hello(patience.max(CONNECT_TIMEOUT))?;
    receiver.tls = secure::start(&mut receiver)?;
    let out = BufWriter::with_capacity(64 * 1024, Outgoing { stream: writing, tls: receiver.tls.clone() });
    Ok((Sender { out }, receiver))
}

/// Turns tags on and joins as `join` asks (`LAST`, `SINCE`, `TOKEN`); returns
/// what the server said of the join. A refused name is
/// `ClientError::NameRefused`, and the connection stays usable for another
/// try. What follows `OK JOIN` (`MISSED`, the replay) is left for the caller.
pub fn join(sender: &mut Sender, receiver: &mut Receiver, join: &Join<'_>) -> Result<Joined, ClientError> {
    // TAGS again on a second try is harmless: it is answered OK TAGS again.
    sender.send(&Request::Tags)?;
    sender.send(&Request::Join(*join))?;
    sender.flush()?;
    loop {
        match receiver.recv_tagged()? {
            (tags, ServerLine::OkJoin(name)) => {
                return Ok(Joined { name, epoch: tags.epoch, seq: tags.seq, token: tags.token });
            }
            (_, ServerLine::Err(refusal)) if matches!(refusal.code, ErrorCode::BadName | ErrorCode::NameTaken) => {
                return Err(ClientError::NameRefused { name: join.name.to_owned(), refusal });
            }
            // A server at its limit still says HELLO, and turns us away here.
            (_, ServerLine::Err(refusal)) if refusal.code == ErrorCode::Full => {
                return Err(ClientError::Full { server: receiver.server.clone(), text: refusal.text });
            }
            (_, ServerLine::Err(refusal)) => return Err(ClientError::refused(&receiver.server, refusal)),
            (_, ServerLine::Bye(reason)) => return Err(receiver.bye(reason)),
            // Only OK TAGS can come before OK JOIN; ignore anything else.
            _ => {}
        }
    }
}

impl Sender {
    /// Queues a request; it goes out on `flush` or when the buffer fills.
    pub fn send(&mut self, request: &Request<'_>) -> io::Result<()> {
        writeln!(self.out, "{request}")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Says nothing more: the server sees the end of input after what was
    /// sent. The receiving half then gets the server's last lines, and gives
    /// up if they do not come within a few seconds.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        let outgoing = self.out.get_ref();
        // The halves share one socket, so this bounds the receiver's wait.
        outgoing.stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        outgoing.finish()
    }
}

impl Receiver {
    /// The server's address, as the person would type it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The next line from the server, tags skipped. The end of the
    /// connection, or a line that is not the protocol, is an error.
    pub fn recv(&mut self) -> Result<ServerLine, ClientError> {
        self.recv_tagged().map(|(_, line)| line)
    }

    /// The next line from the server, with its tags.
    pub fn recv_tagged(&mut self) -> Result<(Tags, ServerLine), ClientError> {
        match self.next(None, None)? {
            Arrival::Line(tags, line) => Ok((tags, line)),
            Arrival::Watched(_) | Arrival::TimeUp => unreachable!("nothing was watched, no time set"),
        }
    }

    /// The next line from the server or, when `watch` reports one of its
    /// events first, those events: `chat-tail` learns so that its reader went
    /// away even in a quiet room. With `until`, `TimeUp` once it has passed
    /// with no line in.
    pub fn next(&mut self, watch: Option<Watch<'_>>, until: Option<Instant>) -> Result<Arrival, ClientError> {
        loop {
            match self.lines.next_frame() {
                Some(Frame::Line(line)) => {
                    let (tags, line) = ServerLine::parse_tagged(line).map_err(ClientError::Protocol)?;
                    return Ok(Arrival::Line(tags, line));
                }
                Some(_) => return Err(self.lost("the server sent a line that is not UTF-8")),
                None => {}
            }
            let left = until.map(|until| until.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Ok(Arrival::TimeUp);
            }
            let mut watched = None;
            let buffered = self.tls.as_ref().is_some_and(|tls| tls.has_buffered());
            if (watch.is_some() || left.is_some()) && !buffered {
                let ready = wait::wait(Some(std::os::fd::AsFd::as_fd(&self.stream)), watch, left)
                    .map_err(|e| self.lost(&e.to_string()))?;
                // With both ready, what the socket has is read first, so that a
                // watch that is always ready (input from a file) starves nobody.
                match ready {
                    Ready { watched: Some(events), socket: false } => return Ok(Arrival::Watched(events)),
                    Ready { watched: None, socket: false } => continue,
                    Ready { watched: events, socket: true } => watched = events,
                }
            }
            let read = self.lines.read_from(&mut Incoming { stream: &self.stream, tls: self.tls.as_deref() });
            if let (Some(events), Ok(1..)) = (watched, &read) {
                return Ok(Arrival::Watched(events));
            }
            match read {
                Ok(0) => return Err(self.lost("the server closed the connection")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(self.lost("the server did not answer in time"))
                }
                Err(e) => return Err(self.lost(&e.to_string())),
            }
        }
    }

    /// Reads the server's first line, which must be `HELLO`: anything else
    /// (silence, another protocol's banner, bytes that are not text) is
    /// reported in words as not a chat server, and `ERR FULL` as full.
    fn hello(&mut self, patience: Duration) -> Result<(), ClientError> {
        let server = self.server.clone();
        let not_chatd = |why| ClientError::NotChatd { server: server.clone(), why };
        let mut read = 0;
        loop {
            match self.lines.next_frame() {
                Some(Frame::Line(line)) => {
                    return match ServerLine::parse(line) {
                        Ok(ServerLine::Hello { .. }) => Ok(()),
                        Ok(ServerLine::Err(refusal)) if refusal.code == ErrorCode::Full => {
                            Err(ClientError::Full { server: server.clone(), text: refusal.text })
                        }
                        _ => Err(not_chatd(NotChatd::Said(line.to_owned()))),
                    };
                }
                Some(_) => return Err(not_chatd(NotChatd::NotText)),
                None => {}
            }
            if read > MAX_HELLO {
                return Err(not_chatd(NotChatd::Endless(read)));
            }
            match self.lines.read_from(&mut Incoming { stream: &self.stream, tls: self.tls.as_deref() }) {
                Ok(0) => return Err(not_chatd(NotChatd::Closed)),
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let why = if read == 0 { NotChatd::Silent(patience) } else { NotChatd::Endless(read) };
                    return Err(not_chatd(why));
                }
                Err(e) => return Err(self.lost(&e.to_string())),
            }
        }
    }

    /// Whether nobody else can read what crosses the connection, so that
    /// the room's password may: TLS, or the server is on this computer.
    pub fn is_private(&self) -> bool {
        self.tls.is_some() || self.stream.peer_addr().is_ok_and(|addr| crate::lan::is_loopback(addr.ip()))
    }

    /// Bounds how long a read may wait (`None`: for ever).
    pub fn set_patience(&self, patience: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(patience)
    }

    /// The error for a `BYE` the client did not ask for.
    pub fn bye(&self, reason: crate::protocol::ByeReason) -> ClientError {
        ClientError::Bye { server: self.server.clone(), reason }
    }

    fn lost(&self, detail: &str) -> ClientError {
        ClientError::Lost { server: self.server.clone(), detail: detail.to_owned() }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Lost { server: String::new(), detail: e.to_string() }
    }
}

/// How many names a tool of the person's tries when the name is taken:
/// `ana-send`, then `ana-send2` up to `ana-send9`.
const NAME_TRIES: u32 = 9;

/// The name a person goes by when none is given: `$CHAT_NAME`, or else the
/// login name.
pub fn own_name() -> String {
    match std::env::var("CHAT_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ => login_name(""),
    }
}

/// `base` with `suffix` after it, then numbered (`ana-tail`, `ana-tail2`,
/// …), each cut to fit a name: the names a tool of the person's takes
/// beside the person's own `chat`.
pub fn suffixed_names(base: &str, suffix: &str) -> impl Iterator<Item = String> {
    let (base, suffix) = (base.to_owned(), suffix.to_owned());
    (1..=NAME_TRIES).map(move |n| {
        let tail = if n == 1 { suffix.clone() } else { format!("{suffix}{n}") };
        let room = crate::name::MAX_CHARS.saturating_sub(tail.chars().count());
        base.chars().take(room).chain(tail.chars()).collect()
    })
}

/// Joins under the first of `names` that is not taken; when all are, the
/// error for the last one.
pub fn join_first_free(
    sender: &mut Sender,
    receiver: &mut Receiver,
    names: impl IntoIterator<Item = String>,
    replay: crate::protocol::Replay<'_>,
) -> Result<Joined, ClientError> {
    let mut taken = None;
    for name in names {
        match join(sender, receiver, &Join { name: &name, replay, token: None }) {
            Err(e @ ClientError::NameRefused { .. }) if is_taken(&e) => taken = Some(e),
            other => return other,
        }
    }
    Err(taken.expect("at least one name was tried"))
}

/// Joins for `chat-send` or a piped `chat`: as `name` when given, taken or
/// not; else as the person's own name (`own_name`) or, when their `chat`
/// holds it, with `-send` after it (`ana-send`, `ana-send2`, …), so one
/// person's tools work side by side and the room still sees who spoke.
pub fn join_as_a_sender(
    (sender, receiver): &mut (Sender, Receiver),
    name: Option<&str>,
    replay: crate::protocol::Replay<'_>,
) -> Result<Joined, ClientError> {
    if let Some(name) = name {
        return join(sender, receiver, &Join { name, replay, token: None });
    }
    let own = own_name();
    join_first_free(sender, receiver, std::iter::once(own.clone()).chain(suffixed_names(&own, "-send")), replay)
}

fn is_taken(error: &ClientError) -> bool {
    matches!(error, ClientError::NameRefused { refusal, .. } if refusal.code == ErrorCode::NameTaken)
}

/// A name made from the login name, valid for the protocol, with `suffix`.
pub fn login_name(suffix: &str) -> String {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_default();
    let mut name: String = login.chars().filter(|&c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')).collect();
    if name.is_empty() {
        name = "user".into();
    }
    let room = crate::name::MAX_CHARS - suffix.chars().count();
    name.chars().take(room).chain(suffix.chars()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_added_only_where_missing() {
        let cases = [
            ("192.168.1.15", "192.168.1.15:5000"),
            ("192.168.1.15:6000", "192.168.1.15:6000"),
            ("localhost", "localhost:5000"),
            ("localhost:7", "localhost:7"),
            ("::1", "[::1]:5000"),
            ("[::1]", "[::1]:5000"),
            ("[::1]:6000", "[::1]:6000"),
        ];
        for (given, want) in cases {
            assert_eq!(with_default_port(given), want, "{given}");
        }
    }

    #[test]
    fn suffixed_names_are_numbered_and_cut_to_fit() {
        let names: Vec<String> = suffixed_names("Ana", "-send").take(3).collect();
        assert_eq!(names, ["Ana-send", "Ana-send2", "Ana-send3"]);
        let long = "x".repeat(40);
        for name in suffixed_names(&long, "-tail") {
            assert!(crate::name::Name::parse(&name).is_ok(), "{name:?}");
            assert!(name.ends_with("-tail") || name.contains("-tail"), "{name:?}");
        }
        assert_eq!(suffixed_names(&long, "-tail").last().unwrap(), format!("{}-tail9", "x".repeat(26)));
    }

    #[test]
    fn login_names_are_valid_and_leave_room_for_the_suffix() {
        for suffix in ["", "-tail"] {
            let name = login_name(suffix);
            assert!(crate::name::Name::parse(&name).is_ok(), "{name:?}");
            assert!(name.ends_with(suffix));
        }
    }
}
