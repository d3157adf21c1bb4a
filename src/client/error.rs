//! Why a client stopped: each case says what went wrong and what to do next,
//! and maps to the exit status its binary reports (see `exit_codes`).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::exit_codes as exit;
use crate::protocol::{ByeReason, ErrorCode, Printable, Refusal};

/// What the other end did instead of saying `HELLO`.
#[derive(Debug)]
pub enum NotChatd {
    /// Nothing at all within this time (`python3 -m http.server` waits for a request).
    Silent(Duration),
    /// A first line of another protocol (`SSH-2.0-OpenSSH_9.2`).
    Said(String),
    /// Bytes that are not UTF-8 text.
    NotText,
    /// This many bytes and still no end of line.
    Endless(usize),
    /// It closed the connection without a word.
    Closed,
}

/// How much of another protocol's first line is quoted.
const QUOTED_CHARS: usize = 80;

impl fmt::Display for NotChatd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotChatd::Silent(waited) => write!(f, "it sent nothing within {}s", waited.as_secs_f64()),
            NotChatd::Said(line) => {
                let quoted: String = line.chars().take(QUOTED_CHARS).collect();
                let more = if quoted.len() < line.len() { "…" } else { "" };
                write!(f, "it said \"{}{more}\"", Printable(&quoted))
            }
            NotChatd::NotText => f.write_str("it sent bytes that are not text"),
            NotChatd::Endless(bytes) => write!(f, "it sent {bytes} bytes without a line end"),
            NotChatd::Closed => f.write_str("it closed the connection without a word"),
        }
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made.
    Connect { server: String, source: io::Error },
    /// None of the servers of a list answered as a chat server: why, for each.
    NoServer(Vec<ClientError>),
    /// Given no server, the client found no room on the LAN within `waited`;
    /// `why` when it could not even look.
    NoRoom { waited: Duration, why: Option<String> },
    /// Given no server, the client found several rooms and cannot ask which.
    SeveralRooms(Vec<crate::discovery::FoundRoom>),
    /// Something answered, but not with `HELLO`.
    NotChatd { server: String, why: NotChatd },
    /// The server is at its client limit.
    Full { server: String, text: String },
    /// The name was taken or invalid.
    NameRefused { name: String, refusal: Refusal },
    /// The connection ended without our asking.
    Lost { server: String, detail: String },
    /// The server said `BYE` without our asking.
    Bye { server: String, reason: ByeReason },
    /// The server refused a request.
    Refused(Refusal),
    /// The room has a password, and none or a wrong one was given:
    /// `PASSWORD_REQUIRED` or `BAD_PASSWORD`.
    Password { server: String, refusal: Refusal },
    /// The password could not be had: an unreadable --password-file, a bad
    /// `CHAT_PASSWORD`; why, for people.
    PasswordSource(String),
    /// The room's password would cross the network in plain text: the
    /// client would not send it (`refusal` is `None`), or the server
    /// refused to take it (`TLS_REQUIRED`, with its words).
    Unencrypted { server: String, refusal: Option<Refusal> },
    /// A line from the server that is not the protocol.
    Protocol(crate::protocol::MalformedLine),
    /// The connection was lost (`why`) and could not be made again within
    /// the time allowed (`after`); `last` says why the last try failed.
    GaveUp { why: Box<ClientError>, last: Option<Box<ClientError>>, after: Duration },
    /// After a resume, whether `unconfirmed` messages sent before the
    /// connection was lost were taken cannot be known: sending them again
    /// could double them, not sending could lose them.
    Unsure { server: String, unconfirmed: usize, why: String },
    /// The server's TLS certificate is not the one trusted, or it offered
    /// no TLS where TLS was expected.
    Untrusted(Box<crate::tls::TrustError>),
}

impl ClientError {
    /// The exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } | ClientError::NotChatd { .. } | ClientError::Full { .. } => exit::CONNECT,
            ClientError::NoServer(_) | ClientError::NoRoom { .. } => exit::CONNECT,
            ClientError::SeveralRooms(_) => exit::SEVERAL_ROOMS,
            ClientError::NameRefused { .. } => exit::NAME,
            ClientError::Lost { .. } | ClientError::Bye { .. } | ClientError::Protocol(_) => exit::LOST,
            ClientError::GaveUp { .. } | ClientError::Unsure { .. } => exit::LOST,
            ClientError::Refused(_) => exit::REFUSED,
            ClientError::Untrusted(_) => exit::UNTRUSTED,
            ClientError::Password { .. } | ClientError::PasswordSource(_) => exit::PASSWORD,
            ClientError::Unencrypted { .. } => exit::CONNECT,
        }
    }

    /// The error for a request `server` refused: about the room's password
    /// (`PASSWORD_REQUIRED`, `BAD_PASSWORD`, `TLS_REQUIRED`) or another.
    pub fn refused(server: &str, refusal: Refusal) -> ClientError {
        let server = server.to_owned();
        match refusal.code {
            ErrorCode::PasswordRequired | ErrorCode::BadPassword => ClientError::Password { server, refusal },
            ErrorCode::TlsRequired => ClientError::Unencrypted { server, refusal: Some(refusal) },
            _ => ClientError::Refused(refusal),
        }
    }
}

const SERVER_HINT: &str = "(set --server or CHAT_SERVER)";

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { server, source } => {
                let (what, hint) = match source.kind() {
                    io::ErrorKind::ConnectionRefused => ("connection refused", "is chatd running there?"),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                        ("no answer", "is the address right, and does a firewall let the port through?")
                    }
                    io::ErrorKind::NotFound => ("no such host", "is the name spelled right?"),
                    io::ErrorKind::InvalidInput => ("not an address", "write HOST or HOST:PORT"),
                    _ if source.raw_os_error() == Some(nix::libc::ENETUNREACH) => {
                        ("network unreachable", "is this computer on the LAN?")
                    }
                    _ if source.raw_os_error() == Some(nix::libc::EHOSTUNREACH) => {
                        ("host unreachable", "is that computer on and on this LAN?")
                    }
                    _ => return write!(f, "cannot connect to {server}: {source} {SERVER_HINT}"),
                };
                write!(f, "cannot connect to {server}: {what} — {hint} {SERVER_HINT}")
            }
            ClientError::NotChatd { server, why: NotChatd::Silent(waited) } => write!(
                f,
                "{server} is not a chat server (it sent nothing within {}s) {SERVER_HINT}",
                waited.as_secs_f64()
            ),
            ClientError::NotChatd { server, why } => write!(f, "{server} is not a chat server: {why} {SERVER_HINT}"),
            ClientError::Full { server, text } => write!(f, "{server} is full: {text}"),
            ClientError::NoServer(failed) => {
                write!(f, "none of the {} servers answered as a chat server: ", failed.len())?;
                for (n, error) in failed.iter().enumerate() {
                    let why = error.to_string();
                    let why = why.strip_suffix(SERVER_HINT).unwrap_or(&why).trim_end();
                    write!(f, "{}{why}", if n == 0 { "" } else { "; " })?;
                }
                write!(f, " {SERVER_HINT}")
            }
            ClientError::NoRoom { waited, why } => {
                write!(f, "no chat room found on the LAN within {} s", waited.as_secs_f64())?;
                if let Some(why) = why {
                    write!(f, " (cannot look: {why})")?;
                }
                write!(
                    f,
                    ": no chatd may be running (or it runs with --no-announce, or on 127.0.0.1), the Wi-Fi may keep \
                     its clients apart (client isolation), or the network may block multicast (mDNS); give the \
                     server's address instead, as chatd printed it: --server HOST:PORT (or CHAT_SERVER=HOST:PORT)"
                )
            }
            ClientError::SeveralRooms(rooms) => {
                write!(f, "{} chat rooms found on the LAN; say which with --server (or CHAT_SERVER):", rooms.len())?;
                for room in rooms {
                    write!(f, "\n  --server {:<22} # {}", room.addrs[0].to_string(), room.label)?;
                }
                Ok(())
            }
            ClientError::NameRefused { name, refusal } => {
                write!(f, "cannot join as {name:?}: {} (set --name or CHAT_NAME)", refusal.text)
            }
            ClientError::Lost { server, detail } if server.is_empty() => write!(f, "connection lost: {detail}"),
            ClientError::Lost { server, detail } => write!(f, "connection to {server} lost: {detail}"),
            ClientError::Bye { server, reason } => {
                let why = match reason {
                    ByeReason::Shutdown => "the server shut down",
                    ByeReason::Slow => "this client fell too far behind and was dropped",
                    ByeReason::Timeout => "the server timed this connection out",
                    ByeReason::Full => "the server is full",
                    ByeReason::Exit => "the server said goodbye",
                    ByeReason::Replaced => "another connection took over this membership with its token",
                    ByeReason::Unavailable => "the server lost the room's cluster (NATS)",
                };
                write!(f, "{server}: {why}")
            }
            ClientError::Refused(refusal) => write!(f, "the server refused: {} {}", refusal.code, refusal.text),
            // The server's words for PASSWORD_REQUIRED speak the protocol.
            ClientError::Password { server, refusal } if refusal.code == ErrorCode::PasswordRequired => write!(
                f,
                "{server}: the room has a password (PASSWORD_REQUIRED); give it in CHAT_PASSWORD or with \
                 --password-file FILE"
            ),
            ClientError::Password { server, refusal } => write!(
                f,
                "{server}: {} ({}); give the right one in CHAT_PASSWORD or with --password-file FILE",
                Printable(&refusal.text),
                refusal.code
            ),
            ClientError::PasswordSource(why) => write!(f, "{why} (set CHAT_PASSWORD or --password-file)"),
            ClientError::Unencrypted { server, refusal: Some(refusal) } => {
                write!(f, "{server} refused the password in plain text: {}", Printable(&refusal.text))
            }
            ClientError::Unencrypted { server, refusal: None } => write!(
                f,
                "the connection to {server} is not encrypted, so the room's password was not sent: anyone on \
                 the network could read it; connect with TLS, or through a tunnel to this computer (ssh -L), \
                 or leave CHAT_PASSWORD and --password-file unset if the room has no password"
            ),
            ClientError::Protocol(e) => write!(f, "{e}"),
            ClientError::GaveUp { why, last, after } => {
                write!(f, "{why}; gave up reconnecting after {:.1} s", after.as_secs_f64())?;
                match last {
                    Some(last) => write!(f, " (last try: {last})"),
                    None => Ok(()),
                }
            }
            ClientError::Unsure { server, unconfirmed, why } => write!(
                f,
                "{server}: {why}, so whether the {unconfirmed} message(s) sent before the connection was lost \
                 arrived cannot be known; they were not sent again (look at the room, then send what is missing)"
            ),
            ClientError::Untrusted(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } => Some(source),
            ClientError::Untrusted(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
