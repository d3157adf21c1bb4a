//! Talking to chatd as a client: connecting (with an error that says what to
//! do next), joining, and reading and writing protocol lines. `chat`,
//! `chat-send` and `chat-tail` all go through here; none of them spells a
//! protocol line itself.

mod error;
mod render;

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use self::error::ClientError;
pub use self::render::{render, Format};
use crate::framing::{Frame, LineReader};
use crate::protocol::{ErrorCode, Request, ServerLine, DEFAULT_PORT};

/// Where the clients look for the server when neither `--server` nor
/// `CHAT_SERVER` says.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5000";

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
    out: BufWriter<TcpStream>,
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct Receiver {
    stream: TcpStream,
    lines: LineReader,
    server: String,
}

/// Connects to `server` (`HOST[:PORT]`) and reads its `HELLO`.
pub fn connect(server: &str) -> Result<(Sender, Receiver), ClientError> {
    let server = with_default_port(server);
    let connect_error = |source: io::Error| ClientError::Connect { server: server.clone(), source };
    let addrs: Vec<SocketAddr> = server.to_socket_addrs().map_err(connect_error)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    let stream = addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).map_err(|e| last = e).ok())
        .ok_or_else(|| connect_error(last))?;
    stream.set_nodelay(true).map_err(connect_error)?;
    let out = BufWriter::with_capacity(64 * 1024, stream.try_clone().map_err(connect_error)?);
    let mut receiver = Receiver { stream, lines: LineReader::unlimited(), server };
    match receiver.recv()? {
        ServerLine::Hello { .. } => Ok((Sender { out }, receiver)),
        ServerLine::Err(refusal) if refusal.code == ErrorCode::Full => {
            Err(ClientError::Full { server: receiver.server, text: refusal.text })
        }
        other => Err(ClientError::NotChatd { server: receiver.server, first: other.to_string() }),
    }
}

/// Joins as `name`; returns the name as the server stored it. A refused name
/// is `ClientError::NameRefused`, and the connection stays usable for
/// another try.
pub fn join(sender: &mut Sender, receiver: &mut Receiver, name: &str) -> Result<String, ClientError> {
    sender.send(&Request::Join(crate::protocol::Join::name(name)))?;
    sender.flush()?;
    loop {
        match receiver.recv()? {
            ServerLine::OkJoin(stored) => return Ok(stored),
            ServerLine::Err(refusal) if matches!(refusal.code, ErrorCode::BadName | ErrorCode::NameTaken) => {
                return Err(ClientError::NameRefused { name: name.to_owned(), refusal });
            }
            ServerLine::Err(refusal) => return Err(ClientError::Refused(refusal)),
            ServerLine::Bye(reason) => return Err(receiver.bye(reason)),
            // Nothing else can come before OK JOIN; ignore it if it does.
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
        let stream = self.out.get_ref();
        // The halves share one socket, so this bounds the receiver's wait.
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        stream.shutdown(std::net::Shutdown::Write)
    }
}

impl Receiver {
    /// The server's address, as the person would type it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The next line from the server. The end of the connection, or a line
    /// that is not the protocol, is an error.
    pub fn recv(&mut self) -> Result<ServerLine, ClientError> {
        loop {
            let line = match self.lines.next_frame() {
                Some(Frame::Line(line)) => line,
                Some(_) => return Err(self.lost("the server sent a line that is not UTF-8")),
                None => {
                    match self.lines.read_from(&mut &self.stream) {
                        Ok(0) => return Err(self.lost("the server closed the connection")),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.lost(&e.to_string())),
                    }
                    continue;
                }
            };
            return ServerLine::parse(line).map_err(ClientError::Protocol);
        }
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
    fn login_names_are_valid_and_leave_room_for_the_suffix() {
        for suffix in ["", "-tail"] {
            let name = login_name(suffix);
            assert!(crate::name::Name::parse(&name).is_ok(), "{name:?}");
            assert!(name.ends_with(suffix));
        }
    }
}
