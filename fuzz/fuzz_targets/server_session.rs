//! A whole server session fed arbitrary bytes: an in-process chatd on
//! 127.0.0.1, started once, gets one connection per input, which writes the
//! bytes, closes its sending side and reads everything until the server
//! closes.
//!
//! The input's first byte chooses how the bytes are cut into writes; its
//! second, from 0xF0 up, repeats the rest 2, 4, … 2048 times (up to 128 KiB),
//! so that a flood of lines is one mutation away.
//!
//! What must hold, whatever the bytes:
//! - nothing in the server panics (libFuzzer aborts on a panic in any thread)
//!   and its memory stays under `-rss_limit_mb`;
//! - the server closes the connection after the client's end, in time;
//! - the reply is well formed: UTF-8 lines ended by `\n`, each one a valid
//!   `ServerLine` without a control character but tab (a `PONG` aside: it
//!   echoes the client's own token), `HELLO` first;
//! - it is exactly the reply the protocol prescribes for those lines (the
//!   frames the line reader makes of them, through `Request::parse` and
//!   `Name::parse`), error codes compared, error texts free;
//! - the room has a password (`PASSWORD`, in the dictionary): `JOIN`
//!   before a right `PASS` is `PASSWORD_REQUIRED`, a wrong one is
//!   `BAD_PASSWORD`, and the last `PASS` before `JOIN` counts; wrong tries
//!   are not slowed down here (`password_max_wait` is zero), or the
//!   fuzzer would spend its time waiting;
//! - a member that stays joined throughout (the watcher) gets exactly the
//!   events the hostile connection caused, and a `PING` of its own is still
//!   answered: one hostile client never breaks the server for the others.
#![no_main]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use minichat::framing::{Frame, LineReader};
use minichat::name::Name;
use minichat::password::Password;
use minichat::protocol::{ByeReason, ErrorCode, LeaveReason, Replay, Request, ServerLine, Tags, SERVER_ID};
use minichat::server::{Config, Server, ShutdownSignal, Verbosity};

const MAX_LINE: usize = 4096;
const WATCHER: &str = "watcher";
/// The room's password.
const PASSWORD: &str = "letmein";
/// How long any one read or write may wait; far more than a passing input
/// ever needs, so a server that stops answering fails the input.
const PATIENCE: Duration = Duration::from_secs(10);

struct Room {
    addr: SocketAddr,
    watcher: Mutex<Client>,
}

struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    pings: u64,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the in-process chatd");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { reader, stream, pings: 0 }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(format!("{line}\n").as_bytes()).expect("the watcher sends");
    }

    fn recv(&mut self) -> ServerLine {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("the server closed the watcher's connection"),
            Ok(_) => {}
            Err(e) => panic!("the watcher reads: {e}"),
        }
        let line = line.strip_suffix('\n').unwrap_or_else(|| panic!("a line without newline: {line:?}"));
        ServerLine::parse(line).unwrap_or_else(|e| panic!("the watcher got {e}"))
    }

    /// Sends `PING` and returns what arrived before its `PONG`.
    fn sync(&mut self) -> Vec<ServerLine> {
        self.pings += 1;
        let token = format!("w{}", self.pings);
        self.send(&format!("PING {token}"));
        let pong = ServerLine::Pong(Some(token));
        let mut before = Vec::new();
        loop {
            match self.recv() {
                line if line == pong => return before,
                line => before.push(line),
            }
        }
    }
}

fn room() -> &'static Room {
    static ROOM: OnceLock<Room> = OnceLock::new();
    ROOM.get_or_init(|| {
        // chatd runs with SIGPIPE ignored (Rust's runtime does that for a
        // program's main); libFuzzer's main does not, and the server writes
        // with writev, which would raise it on a connection the peer closed.
        // SAFETY: setting a signal's disposition to SIG_IGN.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let config = Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_clients: 64,
            max_line: MAX_LINE,
            // chatd's default. The watcher reads only after each input, and
            // a 128 KiB stream makes it owe at most 3 MiB of MSG lines. The
            // room keeps up to 1.25 times this in its log: most of the RSS.
            max_queue: 4 << 20,
            join_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(1),
            rate_limit: 1_000_000,
            rate_burst: 10_000,
            verbosity: Verbosity::Quiet,
            password: Some(Password::new(PASSWORD).unwrap()),
            password_max_wait: Duration::ZERO,
            ..Config::default()
        };
        let server = Server::bind(config).expect("bind the in-process chatd");
        let addr = server.local_addr();
        thread::spawn(move || {
            let shutdown = ShutdownSignal::new().expect("a shutdown signal");
            let result = server.serve(&shutdown);
            panic!("the server stopped serving: {result:?}");
        });
        let mut watcher = Client::connect(addr);
        watcher.recv();
        watcher.send(&format!("PASS {PASSWORD}"));
        assert_eq!(watcher.recv(), ServerLine::OkPass);
        watcher.send(&format!("JOIN {WATCHER}"));
        assert_eq!(watcher.recv(), ServerLine::OkJoin(WATCHER.into()));
        Room { addr, watcher: Mutex::new(watcher) }
    })
}

/// A line of the reply, as the protocol prescribes it.
#[derive(Debug, PartialEq)]
enum Want {
    /// This line, without tags.
    Exactly(ServerLine),
    /// This line, with the tags version 2 gives it after `TAGS`: epoch, seq
    /// and token on `OK JOIN`, seq on `PONG`.
    Tagged(ServerLine),
    /// An `ERR` with this code; its words are free.
    Err(ErrorCode),
}

impl Want {
    fn matches(&self, tags: &Tags, got: &ServerLine) -> bool {
        let untagged = *tags == Tags::default();
        match (self, got) {
            (Want::Exactly(want), got) => untagged && want == got,
            (Want::Tagged(want @ ServerLine::OkJoin(_)), got) => {
                want == got && tags.epoch.is_some() && tags.seq.is_some() && tags.token.is_some()
            }
            (Want::Tagged(want), got) => want == got && tags.seq.is_some(),
            (Want::Err(code), ServerLine::Err(refusal)) => untagged && refusal.code == *code,
            (Want::Err(_), _) => false,
        }
    }
}

/// What the session owes the hostile client, and what the watcher must see.
struct Prediction {
    reply: Vec<Want>,
    watcher: Vec<ServerLine>,
}

fn predict(input: &[u8]) -> Prediction {
    let watcher_key = Name::parse(WATCHER).unwrap().key().to_owned();
    let hello = ServerLine::Hello { server: SERVER_ID.into(), text: "type JOIN <name> to enter".into() };
    let reply = vec![Want::Exactly(hello)];
    let mut session = Session { reply, watcher: Vec::new(), watcher_key, member: None, tags: false, passed: false };
    let mut reader = LineReader::new(MAX_LINE).ignoring_telnet();
    let mut src = input;
    let mut exited = false;
    'read: loop {
        let n = reader.read_from(&mut src).expect("reading from a slice cannot fail");
        while let Some(frame) = reader.next_frame() {
            if session.handle(frame) {
                exited = true;
                break 'read;
            }
        }
        if n == 0 {
            if let Some(frame) = reader.finish() {
                exited = session.handle(frame);
            }
            break;
        }
    }
    if let Some(name) = session.member.take() {
        let reason = if exited { LeaveReason::Exit } else { LeaveReason::Lost };
        session.watcher.push(ServerLine::Left { name, reason });
    }
    Prediction { reply: session.reply, watcher: session.watcher }
}

struct Session {
    reply: Vec<Want>,
    watcher: Vec<ServerLine>,
    watcher_key: String,
    member: Option<String>,
    tags: bool,
    /// Whether the last `PASS` was right.
    passed: bool,
}

impl Session {
    /// Handles one frame as chatd should; true after `EXIT`.
    fn handle(&mut self, frame: Frame<'_>) -> bool {
        let line = match frame {
            Frame::Line("") => return false,
            Frame::Line(line) => line,
            Frame::TooLong => return self.refuse(ErrorCode::TooLong),
            Frame::BadEncoding => return self.refuse(ErrorCode::BadEncoding),
        };
        let request = match Request::parse(line) {
            Ok(request) => request,
            Err(refusal) => return self.refuse(refusal.code),
        };
        match (request, &self.member) {
            (Request::Exit, _) => {
                self.reply.push(Want::Exactly(ServerLine::Bye(ByeReason::Exit)));
                return true;
            }
            (Request::Ping(token), member) => {
                let pong = ServerLine::Pong(token.map(str::to_owned));
                self.reply.push(if self.tags && member.is_some() { Want::Tagged(pong) } else { Want::Exactly(pong) });
            }
            (Request::Tags, _) => {
                self.tags = true;
                self.reply.push(Want::Exactly(ServerLine::OkTags));
            }
            (Request::Join(_) | Request::Pass(_), Some(_)) => return self.refuse(ErrorCode::AlreadyJoined),
            (Request::Pass(given), None) => {
                self.passed = given == PASSWORD;
                if !self.passed {
                    return self.refuse(ErrorCode::BadPassword);
                }
                self.reply.push(Want::Exactly(ServerLine::OkPass));
            }
            (Request::Join(_), None) if !self.passed => return self.refuse(ErrorCode::PasswordRequired),
            // The watcher's token is random: no input guesses it.
            (Request::Join(join), None) => match Name::parse(join.name) {
                Err(_) => return self.refuse(ErrorCode::BadName),
                Ok(name) if name.key() == self.watcher_key => return self.refuse(ErrorCode::NameTaken),
                Ok(name) => {
                    let name = name.as_str().to_owned();
                    let ok = ServerLine::OkJoin(name.clone());
                    self.reply.push(if self.tags { Want::Tagged(ok) } else { Want::Exactly(ok) });
                    // The session's server keeps no history (`--history 0`):
                    // nothing to replay, and a position in its random epoch
                    // cannot be guessed either.
                    if let Replay::Since(_) = join.replay {
                        self.reply.push(Want::Exactly(ServerLine::Missed(None)));
                    }
                    self.watcher.push(ServerLine::Joined(name.clone()));
                    self.member = Some(name);
                }
            },
            (Request::StartTls, Some(_)) => return self.refuse(ErrorCode::AlreadyJoined),
            // This server offers no TLS; tls_session fuzzes the one that does.
            (Request::StartTls, None) => return self.refuse(ErrorCode::NoTls),
            (Request::Msg(_) | Request::Names, None) => return self.refuse(ErrorCode::NotJoined),
            (Request::Msg(text), Some(name)) => {
                self.watcher.push(ServerLine::Msg { from: name.clone(), text: text.to_owned() })
            }
            (Request::Names, Some(name)) => {
                self.reply.push(Want::Exactly(ServerLine::Names(vec![WATCHER.into(), name.clone()])))
            }
        }
        false
    }

    fn refuse(&mut self, code: ErrorCode) -> bool {
        self.reply.push(Want::Err(code));
        false
    }
}

/// The longest stream, repetitions included.
const MAX_STREAM: usize = 128 << 10;

/// The bytes an input stands for: those after the two header bytes,
/// repeated as the second one says.
fn stream_of(data: &[u8]) -> Vec<u8> {
    let [_, repeat, unit @ ..] = data else { return Vec::new() };
    let times = if *repeat >= 0xF0 { 1 << (repeat - 0xF0).min(11) } else { 1 };
    let mut stream = unit.repeat(times);
    stream.truncate(MAX_STREAM);
    stream
}

/// Writes cut as chosen; the rest of a long stream goes in one, since a
/// write is a system call and, with TCP_NODELAY, a packet.
const MAX_PIECES: usize = 1024;

/// Cuts the input into the writes the client makes, as its first byte says.
fn pieces(first: u8, input: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    let mut state = u32::from(first).wrapping_mul(0x9E37_79B9) | 1;
    while !rest.is_empty() {
        let len = match first % 4 {
            _ if pieces.len() >= MAX_PIECES => rest.len(),
            0 => rest.len(),
            1 => 1 + usize::from(first >> 2) * 67,
            2 => {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                1 + (state >> 4) as usize % (1 << (state % 13))
            }
            _ => 1,
        };
        let (piece, after) = rest.split_at(len.min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces
}

/// Writes the pieces, closes the sending side, and reads until the server
/// closes; returns the bytes read.
fn exchange(addr: SocketAddr, pieces: &[&[u8]]) -> Vec<u8> {
    let client = Client::connect(addr);
    client.stream.set_nodelay(true).unwrap();
    thread::scope(|scope| {
        let mut out = &client.stream;
        scope.spawn(move || {
            for piece in pieces {
                // After EXIT the server may close before taking everything.
                if out.write_all(piece).is_err() {
                    return;
                }
            }
            let _ = out.shutdown(Shutdown::Write);
        });
        let mut got = Vec::new();
        let mut input = &client.stream;
        match input.read_to_end(&mut got) {
            Ok(_) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server did not close within {PATIENCE:?}; it sent {:?}", String::from_utf8_lossy(&got))
            }
            Err(e) => panic!("reading the reply: {e}; it sent {:?}", String::from_utf8_lossy(&got)),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(&first) = data.first() else { return };
    let room = room();
    let input = stream_of(data);
    let pieces = pieces(first, &input);
    let want = predict(&input);
    let got = exchange(room.addr, &pieces);

    let text = String::from_utf8(got).unwrap_or_else(|e| panic!("the reply is not UTF-8: {e}"));
    let body = text.strip_suffix('\n').unwrap_or_else(|| panic!("the reply does not end with a newline: {text:?}"));
    let lines: Vec<(Tags, ServerLine)> = body
        .split('\n')
        .map(|line| {
            let parsed = ServerLine::parse_tagged(line).unwrap_or_else(|e| panic!("{e}"));
            // A PONG echoes the client's own token as it came; nothing else
            // the server says may hold a control character.
            let bad = line.chars().find(|&c| c.is_control() && c != '\t');
            assert!(bad.is_none() || matches!(parsed.1, ServerLine::Pong(_)), "a reply line holds {bad:?}: {line:?}");
            parsed
        })
        .collect();
    let first_wrong = lines.iter().zip(&want.reply).position(|((tags, got), want)| !want.matches(tags, got));
    if first_wrong.is_some() || lines.len() != want.reply.len() {
        let at = first_wrong.unwrap_or(lines.len().min(want.reply.len()));
        let from = at.saturating_sub(3);
        panic!(
            "reply line {at} differs ({} lines, {} expected)\n got: {:?}\nwant: {:?}",
            lines.len(),
            want.reply.len(),
            &lines[from.min(lines.len())..(at + 3).min(lines.len())],
            &want.reply[from.min(want.reply.len())..(at + 3).min(want.reply.len())],
        );
    }

    let mut watcher = room.watcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let seen = watcher.sync();
    if seen != want.watcher {
        let at = seen.iter().zip(&want.watcher).position(|(a, b)| a != b).unwrap_or(seen.len().min(want.watcher.len()));
        panic!(
            "the watcher's event {at} differs ({} events, {} expected)\n got: {:?}\nwant: {:?}",
            seen.len(),
            want.watcher.len(),
            seen.get(at),
            want.watcher.get(at)
        );
    }
});
