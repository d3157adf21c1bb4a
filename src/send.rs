//! `chat-send`: lines in, one `MSG` each, and proof that the server took them
//! all. Lines are checked before they are sent, so a line the protocol would
//! refuse stops the run with its line number; a `PING` every so often tells
//! how far the server has confirmed, and a final `PING` proves the rest.

use std::fmt;
use std::io::{self, BufRead};
use std::sync::mpsc;
use std::thread;

use crate::cli::ChatSendArgs;
use crate::client::{self, ClientError, Receiver};
use crate::exit_codes as exit;
use crate::protocol::{self, ByeReason, Refusal, Request, ServerLine};

/// Lines between two progress `PING`s.
const CONFIRM_EVERY: u64 = 1024;

/// Why `chat-send` stopped short.
#[derive(Debug)]
pub enum SendError {
    /// Connecting, joining, or the connection failed after the server had
    /// confirmed input up to line `confirmed` (0: none).
    Client { error: ClientError, confirmed: u64 },
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
            SendError::Client { error, confirmed: 0 } => write!(f, "{error}"),
            SendError::Client { error, confirmed } => write!(
                f,
                "{error}; the server had confirmed lines up to {confirmed}, the ones after may not have arrived"
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

/// What the reader thread heard that the sender cares about.
enum Heard {
    Pong(String),
    Refused(Refusal),
    Ended(ClientError),
}

/// Sends the arguments, or else standard input; returns how many messages
/// were sent, all confirmed.
pub fn run(args: &ChatSendArgs) -> Result<u64, SendError> {
    let fail = |error| SendError::Client { error, confirmed: 0 };
    let (mut sender, mut receiver) = client::connect(&args.server.server).map_err(fail)?;
    let name = args.name.clone().unwrap_or_else(|| client::login_name(""));
    client::join(&mut sender, &mut receiver, &name).map_err(fail)?;
    let (heard_tx, heard) = mpsc::channel();
    let listener = thread::spawn(move || listen(receiver, heard_tx));
    let mut run = Run { sender, heard, sent: 0, last_line: 0, confirmed: 0, refused: None };

    let input = if args.text.is_empty() {
        run.send_lines(io::BufReader::with_capacity(64 * 1024, io::stdin().lock()))
    } else {
        run.send_line(1, args.text.join(" ").as_bytes())
    };
    // Whatever stopped the input, prove what went before it.
    run.confirm()?;
    if let Some((first, last, refusal)) = run.refused.take() {
        return Err(SendError::Refused { first, last, refusal });
    }
    input?;
    // Leave politely: EXIT, then wait for the server's goodbye, so it
    // reports `LEFT … exit` and nothing is cut off by a reset.
    let _ = run.sender.send(&Request::Exit);
    let _ = run.sender.finish();
    let _ = listener.join();
    Ok(run.sent)
}

struct Run {
    sender: client::Sender,
    heard: mpsc::Receiver<Heard>,
    sent: u64,
    /// The input line of the last message sent.
    last_line: u64,
    /// The input line up to which the server confirmed everything.
    confirmed: u64,
    /// The first refusal, with the range of lines it may be about: after
    /// the last confirmed line, up to the last line sent when it arrived.
    refused: Option<(u64, u64, Refusal)>,
}

impl Run {
    fn send_lines<R: io::Read>(&mut self, mut input: io::BufReader<R>) -> Result<(), SendError> {
        let mut line = Vec::with_capacity(256);
        let mut number = 0;
        loop {
            line.clear();
            // Lines that came in a burst go out in one write; a line that came
            // alone (`tail -f | chat-send`) goes out before waiting for more.
            if input.buffer().is_empty() {
                self.sender.flush().map_err(|e| self.lost(e.into()))?;
            }
            if input.read_until(b'\n', &mut line).map_err(SendError::Input)? == 0 {
                return Ok(());
            }
            number += 1;
            self.send_line(number, &line)?;
            if self.refused.is_some() {
                return Ok(());
            }
        }
    }

    fn send_line(&mut self, number: u64, raw: &[u8]) -> Result<(), SendError> {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return Ok(());
        }
        let bad = |why: String| SendError::BadLine { number, why };
        let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8".into()))?;
        protocol::check_outgoing(text).map_err(|refusal| bad(format!("is refused: {}", refusal.text)))?;
        self.send(&Request::Msg(text))?;
        self.sent += 1;
        self.last_line = number;
        if self.sent % CONFIRM_EVERY == 0 {
            self.send(&Request::Ping(Some(&number.to_string())))?;
            self.take_news(None)?;
        }
        Ok(())
    }

    fn send(&mut self, request: &Request<'_>) -> Result<(), SendError> {
        self.sender.send(request).map_err(|e| self.lost(e.into()))
    }

    /// Sends a final `PING` and waits for its `PONG`: then the server has
    /// accepted every line sent.
    fn confirm(&mut self) -> Result<(), SendError> {
        let token = format!("end-{}", self.last_line);
        self.send(&Request::Ping(Some(&token)))?;
        self.sender.flush().map_err(|e| self.lost(e.into()))?;
        self.take_news(Some(&token))?;
        self.confirmed = self.last_line;
        Ok(())
    }

    /// Takes what the reader heard so far; with `until`, waits for that `PONG`.
    fn take_news(&mut self, until: Option<&str>) -> Result<(), SendError> {
        loop {
            let heard = match until {
                Some(_) => match self.heard.recv() {
                    Ok(heard) => heard,
                    Err(_) => {
                        return Err(self.lost(ClientError::Lost { server: String::new(), detail: "no answer".into() }))
                    }
                },
                None => match self.heard.try_recv() {
                    Ok(heard) => heard,
                    Err(_) => return Ok(()),
                },
            };
            match heard {
                Heard::Pong(token) if Some(token.as_str()) == until => return Ok(()),
                Heard::Pong(token) => self.confirmed = token.parse().unwrap_or(self.confirmed),
                Heard::Refused(refusal) => {
                    let first = self.next_line_after(self.confirmed);
                    self.refused.get_or_insert((first, self.last_line, refusal));
                }
                Heard::Ended(error) => return Err(self.lost(error)),
            }
        }
    }

    /// The first line sent after input line `line` (empty lines are skipped,
    /// so this is a lower bound; it is exact where the range is one line).
    fn next_line_after(&self, line: u64) -> u64 {
        (line + 1).min(self.last_line)
    }

    fn lost(&self, error: ClientError) -> SendError {
        SendError::Client { error, confirmed: self.confirmed }
    }
}

/// The reader thread: hands on `PONG`s, refusals and the end of the connection.
fn listen(mut receiver: Receiver, heard: mpsc::Sender<Heard>) {
    loop {
        let news = match receiver.recv() {
            Ok(ServerLine::Pong(Some(token))) => Heard::Pong(token),
            Ok(ServerLine::Err(refusal)) => Heard::Refused(refusal),
            Ok(ServerLine::Bye(ByeReason::Exit)) => return,
            Ok(ServerLine::Bye(reason)) => Heard::Ended(receiver.bye(reason)),
            Ok(_) => continue,
            Err(error) => Heard::Ended(error),
        };
        let ended = matches!(news, Heard::Ended(_));
        if heard.send(news).is_err() || ended {
            return;
        }
    }
}
