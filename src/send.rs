//! `chat-send`: lines in, one `MSG` each, and proof that the server took them
//! all. Lines are checked before they are sent, so a line the protocol would
//! refuse stops the run with its line number; the length is the server's to
//! judge, and a line too long for the default limit goes out alone, so that
//! a refusal names it. A `PING` every so often tells how far the server has
//! confirmed, and a final `PING` proves the rest.
//!
//! One thread waits in `poll` on standard input and the server at once. A
//! lost connection or a restarting server is survived: the membership
//! reconnects, learns from the replay of our own messages which lines the
//! server took, and sends the rest (see `client::pending`), so every line
//! arrives exactly once.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use crate::cli::ChatSendArgs;
use crate::client::{self, ClientError, Membership, News, Watch};
use crate::exit_codes as exit;
use crate::protocol::{self, Refusal, Replay, ServerLine};

/// Lines between two progress `PING`s.
const CONFIRM_EVERY: u64 = 1024;

/// Most lines sent and not yet confirmed: input waits beyond, so that what
/// is kept for sending again stays bounded.
const MAX_UNCONFIRMED: usize = 8 * CONFIRM_EVERY as usize;

/// How long to wait for the server's goodbye after `EXIT`.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);

/// How much of standard input is read at once.
const CHUNK: usize = 64 * 1024;

/// Why `chat-send` stopped short.
#[derive(Debug)]
pub enum SendError {
    /// Connecting, joining, or the connection failed after `sent` messages
    /// went out, up to input line `last`, of which the server had confirmed
    /// input up to line `confirmed` (0: none).
    Client { error: ClientError, sent: u64, last: u64, confirmed: u64 },
    /// Input line `number` cannot be sent; every line before it was.
    BadLine { number: u64, why: String },
    /// The server refused one of input lines `first..=last`; every line
    /// before `first` was accepted.
    Refused { first: u64, last: u64, refusal: Refusal },
    /// Reading standard input failed.
    Input(io::Error),
}

impl SendError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SendError::Client { error, .. } => error.exit_code(),
            SendError::BadLine { .. } | SendError::Refused { .. } => exit::REFUSED,
            SendError::Input(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Client { error, sent: 0, .. } => write!(f, "{error}"),
            SendError::Client { error, confirmed, last, .. } if confirmed >= last => {
                write!(f, "{error}; the server had confirmed every line sent, up to line {last}")
            }
            SendError::Client { error, sent, last, confirmed: 0 } => write!(
                f,
                "{error}; {sent} line(s) sent, up to line {last}, none of them confirmed by the server: they may not \
                 have arrived"
            ),
            SendError::Client { error, last, confirmed, .. } => write!(
                f,
                "{error}; lines sent up to {last}; the server had confirmed lines up to {confirmed}, the ones after \
                 may not have arrived"
            ),
            SendError::BadLine { number, why } => {
                write!(f, "line {number} {why}; the lines before it were sent, nothing from it on")
            }
            SendError::Refused { first, last, refusal } if first == last => {
                write!(f, "the server refused line {last}: {refusal}")
            }
            SendError::Refused { first, last, refusal } => {
                write!(
                    f,
                    "the server refused one of lines {first} to {last}: {refusal}; the lines before were accepted"
                )
            }
            SendError::Input(e) => write!(f, "cannot read standard input: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Sends the arguments, or else standard input; returns how many messages
/// were sent, all confirmed.
pub fn run(args: &ChatSendArgs) -> Result<u64, SendError> {
    let fail = |error| SendError::Client { error, sent: 0, last: 0, confirmed: 0 };
    crate::client::set_trust(args.server.trust());
    let servers = crate::discovery::servers(args.server.server.as_deref(), "chat-send").map_err(fail)?;
    let settings = args.server.settings(&servers).map_err(fail)?;
    let mut connection = client::connect(&servers).map_err(fail)?;
    client::give_password(&mut connection.0, &mut connection.1, settings.password.as_ref()).map_err(fail)?;
    let joined = client::join_as_a_sender(&mut connection, args.name.as_deref(), Replay::Nothing).map_err(fail)?;
    let membership = Membership::start(connection, joined, None, settings).map_err(fail)?;
    let mut run = Run { membership, sent: 0, last_line: 0, refused: None };

    let input = if args.text.is_empty() { run.send_stdin() } else { run.send_line(1, args.text.join(" ").as_bytes()) };
    // A connection that is gone for good can prove nothing more.
    if let Err(error @ SendError::Client { .. }) = input {
        return Err(error);
    }
    // Whatever else stopped the input, prove what went before it.
    run.confirm()?;
    let outcome = match run.refused.take() {
        Some((first, last, refusal)) => Err(SendError::Refused { first, last, refusal }),
        None => input.map(|()| run.sent),
    };
    // Leave politely, a refused line or not: EXIT, then wait for the
    // server's goodbye, so the room sees `LEFT … exit` rather than a lost
    // connection, and nothing is cut off by a reset.
    run.membership.leave(LEAVE_PATIENCE);
    while !matches!(run.membership.next(None), Ok(News::Left) | Err(_)) {}
    outcome
}

struct Run {
    membership: Membership,
    sent: u64,
    /// The input line of the last message sent.
    last_line: u64,
    /// The first refusal, with the range of lines it may be about: after
    /// the last confirmed line, up to the last line sent when it arrived.
    refused: Option<(u64, u64, Refusal)>,
}

impl Run {
    /// Sends standard input, line by line, until its end, a line that
    /// cannot be sent, or a refusal.
    fn send_stdin(&mut self) -> Result<(), SendError> {
        // A descriptor of our own, unbuffered: what `poll` says is readable
        // is all there is, with nothing hidden in a buffer of std's.
        let mut input = File::from(io::stdin().as_fd().try_clone_to_owned().map_err(SendError::Input)?);
        let mut chunk = vec![0; CHUNK];
        let mut partial = Vec::new();
        let mut number = 0;
        while self.refused.is_none() {
            // Beyond the bound, only the server is listened to until it
            // confirms more.
            let reading = self.membership.unconfirmed() < MAX_UNCONFIRMED;
            if !self.next(reading.then(|| Watch::readable(input.as_fd())))? {
                continue;
            }
            let n = match input.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SendError::Input(e)),
            };
            if n == 0 {
                // A last line without a newline is a line too.
                return if partial.is_empty() { Ok(()) } else { self.send_line(number + 1, &partial) };
            }
            partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(end) = partial[start..].iter().position(|&b| b == b'\n') {
                number += 1;
                self.send_line(number, &partial[start..start + end])?;
                if self.refused.is_some() {
                    return Ok(());
                }
                start += end + 1;
            }
            partial.drain(..start);
            // Lines that came in a burst go out in one write; a line that came
            // alone (`tail -f | chat-send`) goes out before waiting for more.
            self.membership.flush();
        }
        Ok(())
    }

    /// Waits for the server, or for `watch` when given: `true` when the
    /// watched descriptor is ready, `false` after news from the server.
    fn next(&mut self, watch: Option<Watch<'_>>) -> Result<bool, SendError> {
        match self.membership.next(watch).map_err(|e| self.lost(e))? {
            News::Watched(_) => return Ok(true),
            News::Reply(ServerLine::Err(refusal)) => {
                let first = self.next_line_after(self.confirmed());
                self.refused.get_or_insert((first, self.last_line, refusal));
            }
            News::Lost(why) => eprintln!("chat-send: {why}; reconnecting"),
            News::Resumed { resent } => eprintln!(
                "chat-send: reconnected to {}; the server had confirmed lines up to {}, {resent} sent again",
                self.membership.server(),
                self.confirmed()
            ),
            _ => {}
        }
        Ok(false)
    }

    fn send_line(&mut self, number: u64, raw: &[u8]) -> Result<(), SendError> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return Ok(());
        }
        let bad = |why: String| SendError::BadLine { number, why };
        let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8".into()))?;
        protocol::check_outgoing(text).map_err(|refusal| bad(format!("is refused: {}", refusal.text)))?;
        // Only the server knows its line limit. A line too long for the
        // default one goes out alone, between two confirmations, so that a
        // TOO_LONG names it and nothing after it is sent.
        let alone = text.len() > protocol::MAX_TEXT;
        if alone {
            self.confirm()?;
            if self.refused.is_some() {
                return Ok(());
            }
        }
        self.membership.say(text, number);
        self.sent += 1;
        self.last_line = number;
        if alone {
            self.confirm()?;
            if let Some((first, last, _)) = &mut self.refused {
                (*first, *last) = (number, number);
            }
        } else if self.sent % CONFIRM_EVERY == 0 {
            self.membership.checkpoint();
        }
        Ok(())
    }

    /// Sends a final `PING` and waits until the server confirmed every line
    /// sent, across reconnections.
    fn confirm(&mut self) -> Result<(), SendError> {
        self.membership.checkpoint();
        self.membership.flush();
        while !self.membership.all_confirmed() {
            self.next(None)?;
        }
        Ok(())
    }

    /// The input line up to which the server confirmed everything.
    fn confirmed(&self) -> u64 {
        self.membership.confirmed_note().unwrap_or(0)
    }

    /// The first line sent after input line `line` (empty lines are skipped,
    /// so this is a lower bound; it is exact where the range is one line).
    fn next_line_after(&self, line: u64) -> u64 {
        (line + 1).min(self.last_line)
    }

    fn lost(&self, error: ClientError) -> SendError {
        SendError::Client { error, sent: self.sent, last: self.last_line, confirmed: self.confirmed() }
    }
}
