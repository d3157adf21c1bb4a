//! The TLS paths of a server session fed arbitrary bytes: an in-process
//! chatd on 127.0.0.1 offering TLS, started once, gets one connection per
//! input. The input's first byte chooses the way in:
//!
//! - 0: the bytes straight to the TLS port, as a client's handshake (what
//!   rustls and chatd's handshake loop make of garbage, truncated records,
//!   a client that stops halfway);
//! - 1: `STARTTLS` on the plain port, then the bytes in the same write, as
//!   the start of a handshake (what the server does with bytes that came
//!   before TLS began: never lines);
//! - 2: a real handshake on the TLS port, then the bytes as plaintext inside
//!   TLS, cut into records of the sizes the second byte says (the session's
//!   reads through rustls: lines split across records, floods, a `PING`
//!   whose answer must come while input is still buffered).
//!
//! What must hold, whatever the bytes:
//! - nothing in the server panics, and its memory stays bounded;
//! - the server closes the connection after the client's end, in time;
//! - in plain text, `HELLO` then `OK STARTTLS`, and no other plain line;
//!   inside TLS, well-formed server lines, `HELLO` first;
//! - a member that stays joined throughout (the watcher, in plain text)
//!   still gets its `PONG`: one hostile client never breaks the server.
#![no_main]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use minichat::protocol::ServerLine;
use minichat::server::{Config, Server, ShutdownSignal, Verbosity};
use minichat::tls::{handshake, Identity, Session};

const PATIENCE: Duration = Duration::from_secs(10);

struct Room {
    plain: SocketAddr,
    tls: SocketAddr,
    watcher: Mutex<(BufReader<TcpStream>, TcpStream, u64)>,
}

fn room() -> &'static Room {
    static ROOM: OnceLock<Room> = OnceLock::new();
    ROOM.get_or_init(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN (see server_session).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = std::env::temp_dir().join(format!("minichat-fuzz-tls-{}", std::process::id()));
        let identity = Identity::own(&dir).expect("a certificate for the in-process chatd");
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            tls: Some(identity),
            max_clients: 64,
            join_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(1),
            rate_limit: 1_000_000,
            rate_burst: 10_000,
            verbosity: Verbosity::Quiet,
            ..Config::default()
        };
        let server = Server::bind(config).expect("bind the in-process chatd");
        let (plain, tls) = (server.local_addr(), server.tls_addr().expect("a TLS port"));
        thread::spawn(move || {
            let shutdown = ShutdownSignal::new().expect("a shutdown signal");
            let result = server.serve(&shutdown);
            panic!("the server stopped serving: {result:?}");
        });
        let stream = connect(plain);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert!(read_line(&mut reader).starts_with("HELLO "));
        (&stream).write_all(b"JOIN watcher\n").unwrap();
        assert_eq!(read_line(&mut reader), "OK JOIN watcher");
        Room { plain, tls, watcher: Mutex::new((reader, stream, 0)) }
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the in-process chatd");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("the server closed a connection it should keep"),
        Ok(_) => line.trim_end_matches('\n').to_owned(),
        Err(e) => panic!("reading from the server: {e}"),
    }
}

/// Reads until the server closes; a server that does not close in time
/// fails the input.
fn read_to_close(mut source: impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match source.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset, or TLS the server broke off with an alert: closed.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::InvalidData) => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server did not close within {PATIENCE:?}")
            }
            Err(e) => panic!("reading the reply: {e}"),
        }
    }
}

/// Checks that `bytes` are whole server lines, `HELLO` first.
fn check_lines(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("a reply that is not UTF-8: {e}"));
    for (i, line) in text.split_terminator('\n').enumerate() {
        let parsed = ServerLine::parse(line).unwrap_or_else(|e| panic!("{e}"));
        assert!(i > 0 || matches!(parsed, ServerLine::Hello { .. }), "the first line is {line:?}");
    }
    assert!(text.is_empty() || text.ends_with('\n'), "a reply cut mid-line: {text:?}");
}

/// The raw bytes as a handshake, on the TLS port.
fn raw_handshake(addr: SocketAddr, bytes: &[u8]) {
    let stream = connect(addr);
    let _ = (&stream).write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    // Whatever the server answers is TLS (records, an alert) or nothing.
    read_to_close(&stream);
}

/// `STARTTLS` and the bytes in one write, on the plain port.
fn starttls_then(addr: SocketAddr, bytes: &[u8]) {
    let stream = connect(addr);
    let mut first = b"STARTTLS\n".to_vec();
    first.extend_from_slice(bytes);
    let _ = (&stream).write_all(&first);
    let _ = stream.shutdown(Shutdown::Write);
    let got = read_to_close(&stream);
    let plain = b"OK STARTTLS\n";
    let hello_end = got.iter().position(|&b| b == b'\n').expect("a HELLO line") + 1;
    check_lines(&got[..hello_end]);
    let after = &got[hello_end..];
    assert!(after.starts_with(plain), "after HELLO: {:?}", String::from_utf8_lossy(after));
    // Nothing but TLS after it: a line would mean the bytes were read as lines.
    let rest = &after[plain.len()..];
    assert!(rest.is_empty() || matches!(rest[0], 0x14..=0x17), "plain text after OK STARTTLS: {rest:?}");
}

/// A real handshake, then the bytes inside TLS in records of `record` bytes.
fn inside_tls(addr: SocketAddr, record: usize, bytes: &[u8]) {
    let stream = connect(addr);
    let session = Session::client(addr.ip()).expect("a TLS client");
    handshake(&session, &stream, &mut |_| Err(ErrorKind::TimedOut.into())).expect("the handshake");
    thread::scope(|scope| {
        let (session, out) = (&session, &stream);
        scope.spawn(move || {
            for piece in bytes.chunks(record) {
                let sent = session.send(out, &[std::io::IoSlice::new(piece)]).and_then(|_| session.flush(out));
                if sent.is_err() {
                    return;
                }
            }
            let _ = session.close(out);
            let _ = out.shutdown(Shutdown::Write);
        });
        let got = read_to_close(DecryptedFrom(&session, &stream));
        check_lines(&got);
    });
}

struct DecryptedFrom<'a>(&'a Session, &'a TcpStream);

impl Read for DecryptedFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_blocking(self.1, buf)
    }
}

fuzz_target!(|data: &[u8]| {
    let room = room();
    let [way, size, bytes @ ..] = data else { return };
    match way % 3 {
        0 => raw_handshake(room.tls, bytes),
        1 => starttls_then(room.plain, bytes),
        _ => inside_tls(room.tls, 1 + usize::from(*size) * 64, bytes),
    }
    // The watcher still gets its PONG; what came before it must parse.
    let mut watcher = room.watcher.lock().unwrap();
    let (reader, stream, pings) = &mut *watcher;
    *pings += 1;
    stream.write_all(format!("PING w{pings}\n").as_bytes()).expect("the watcher sends");
    let pong = format!("PONG w{pings}");
    loop {
        let line = read_line(reader);
        if line == pong {
            break;
        }
        ServerLine::parse(&line).unwrap_or_else(|e| panic!("the watcher got {e}"));
    }
});
