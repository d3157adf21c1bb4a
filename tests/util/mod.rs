//! The harness: real `chatd` processes on 127.0.0.1 with a port of their own,
//! and line clients over real sockets. Every wait has a deadline and fails
//! with what was seen so far; no test sleeps in place of a signal.

#![allow(dead_code)]

pub mod find_nats;
pub mod nats;
pub mod netns;
pub mod tmux;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Long enough for a loaded CI machine; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Prints the last `lines` lines of `what`'s log, for a failing test.
pub fn print_log_tail(what: &str, log: &str, lines: usize) {
    let all: Vec<&str> = log.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    eprintln!("--- the last {} lines of {what}'s log:\n{}", tail.len(), tail.join("\n"));
}

pub fn bin(name: &str) -> std::path::PathBuf {
    match name {
        "chatd" => env!("CARGO_BIN_EXE_chatd").into(),
        "chat" => env!("CARGO_BIN_EXE_chat").into(),
        "chat-send" => env!("CARGO_BIN_EXE_chat-send").into(),
        "chat-tail" => env!("CARGO_BIN_EXE_chat-tail").into(),
        other => panic!("no binary {other}"),
    }
}

/// A running `chatd`, stopped (SIGKILL) when dropped if still running.
pub struct Chatd {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<(Mutex<String>, Condvar)>,
    /// Reads `stderr` until chatd closes it.
    stderr_reader: Option<thread::JoinHandle<()>>,
    /// What it printed on standard output after `listening on`, up to its
    /// `history:` line.
    pub startup: Vec<String>,
    /// Its history's directory, when the test did not give one.
    _data: Option<TempDir>,
}

impl Chatd {
    /// Starts `chatd --bind 127.0.0.1:0 ARGS…`, with a history directory of
    /// its own, and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Chatd {
        let data = TempDir::new("chatd-data");
        let mut chatd = Chatd::start_in(data.path(), args);
        chatd._data = Some(data);
        chatd
    }

    /// Starts `chatd --bind 127.0.0.1:0 --data-dir DIR ARGS…` (ARGS may give
    /// a `--bind` of their own) and waits for its start-up lines.
    pub fn start_in(dir: &std::path::Path, args: &[&str]) -> Chatd {
        let mut chatd = Chatd::spawn(dir, args);
        let status = chatd.child.try_wait().ok().flatten();
        assert!(!chatd.addr.ip().is_unspecified(), "chatd did not start ({status:?}); stderr: {}", chatd.stderr());
        // No test outside a network namespace of its own may send multicast:
        // a chatd bound to loopback is never announced on the LAN.
        if chatd.addr.ip().is_loopback() {
            let quiet = "not announced on the LAN: bound to loopback";
            assert!(chatd.startup.iter().any(|l| l.starts_with(quiet)), "chatd announced: {:?}", chatd.startup);
        }
        chatd
    }

    /// Starts chatd as `start_in` does, but a chatd that exits at once is
    /// not a failure: see `exited`.
    pub fn spawn(dir: &std::path::Path, args: &[&str]) -> Chatd {
        // A test that restarts chatd where clients can find it again gives
        // its own `--bind`.
        let bind: &[&str] = if args.contains(&"--bind") { &[] } else { &["--bind", "127.0.0.1:0"] };
        let mut child = Command::new(bin("chatd"))
            .args(bind)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chatd");
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        let stderr_reader = thread::spawn(move || {
            let mut line = String::new();
            while pipe.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.0.lock().unwrap().push_str(&line);
                sink.1.notify_all();
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read chatd's stdout");
        let addr = match first.trim().strip_prefix("listening on ") {
            Some(addr) => addr.parse().expect("an address"),
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let mut startup = Vec::new();
        while !addr.ip().is_unspecified() {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            startup.push(line.trim_end().to_owned());
            if line.starts_with("history: ") {
                break;
            }
        }
        // Keep draining stdout so chatd never blocks on it.
        thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Chatd { child, addr, stderr, stderr_reader: Some(stderr_reader), startup, _data: None }
    }

    /// For a chatd that was to refuse to start: its exit status and log.
    pub fn exited(mut self) -> (ExitStatus, String) {
        assert!(self.addr.ip().is_unspecified(), "chatd started on {}", self.addr);
        let status = self.wait();
        // Its log is whole once the reader met the end of the pipe.
        self.stderr_reader.take().expect("one reader").join().expect("the log's reader");
        (status, self.stderr())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A connection that has read the `HELLO` line.
    pub fn connect(&self) -> Client {
        let mut client = Client::connect(self.addr);
        client.expect_prefix("HELLO chatd/");
        client
    }

    /// A connection joined as `name`.
    pub fn join(&self, name: &str) -> Client {
        let mut client = self.connect();
        client.send(&format!("JOIN {name}"));
        client.expect(&format!("OK JOIN {name}"));
        client
    }

    /// Joins as `name` once the server has a free place. A closed
    /// connection's place is given back when its server thread ends, which no
    /// client can see happen; so this tries again until `PATIENCE` runs out,
    /// as `wait` does for an exit, and fails on anything but `FULL`.
    pub fn join_when_a_place_is_free(&self, name: &str) -> Client {
        let deadline = Instant::now() + PATIENCE;
        let mut refusals = Vec::new();
        loop {
            let mut client = self.connect();
            client.send(&format!("JOIN {name}"));
            let mut lines = Vec::new();
            for _ in 0..3 {
                match client.try_recv() {
                    Some(line) if line == format!("OK JOIN {name}") => return client,
                    Some(line) => lines.push(line),
                    None => break,
                }
            }
            for line in &lines {
                assert!(line.starts_with("ERR FULL ") || line == "BYE full", "JOIN {name} got {lines:?}");
            }
            refusals.push(lines);
            assert!(Instant::now() < deadline, "no free place for {name}; refusals: {refusals:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal chatd");
    }

    /// Waits for chatd to exit, failing the test after `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for chatd") {
                return status;
            }
            assert!(Instant::now() < deadline, "chatd did not exit; stderr:\n{}", self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything chatd logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits until chatd's log contains `text`.
    pub fn expect_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        let (log, changed) = &*self.stderr;
        let mut log = log.lock().unwrap();
        while !log.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "chatd never logged {text:?}; its log:\n{log}");
            log = changed.wait_timeout(log, left).unwrap().0;
        }
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test shows what chatd said, the end of it.
        if thread::panicking() {
            print_log_tail(&format!("chatd {}", self.addr), &self.stderr(), 60);
        }
    }
}

/// A line client over a real socket.
pub struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    pings: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to chatd");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { reader, stream, pings: 0 }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to chatd");
    }

    /// The next line, without its `\n`; fails after `PATIENCE` or at EOF.
    pub fn recv(&mut self) -> String {
        self.try_recv().unwrap_or_else(|| panic!("connection closed while a line was expected"))
    }

    /// The next line, or `None` at EOF.
    pub fn try_recv(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(line.pop(), Some(b'\n'), "line without newline: {:?}", String::from_utf8_lossy(&line));
                Some(String::from_utf8(line).expect("server lines are UTF-8"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading from chatd: {e}"),
        }
    }

    pub fn expect(&mut self, want: &str) {
        let got = self.recv();
        assert_eq!(got, want);
    }

    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self.recv();
        assert!(got.starts_with(prefix), "expected a line starting {prefix:?}, got {got:?}");
        got
    }

    /// Sends `PING` and returns every line before its `PONG`: the server had
    /// handled all that this client sent before, and sent all that happened
    /// before it.
    pub fn sync(&mut self) -> Vec<String> {
        self.pings += 1;
        let token = format!("sync-{}", self.pings);
        self.send(&format!("PING {token}"));
        self.sync_with(&token)
    }

    /// Returns every line before `PONG token`, for a `PING token` already sent.
    /// With tags on, the `PONG` has them too (`@seq=… PONG token`).
    pub fn sync_with(&mut self, token: &str) -> Vec<String> {
        let pong = format!("PONG {token}");
        let is_pong = |line: &str| {
            line == pong || line.starts_with('@') && line.split_once(' ').is_some_and(|(_, rest)| rest == pong)
        };
        std::iter::from_fn(|| Some(self.recv()).filter(|line| !is_pong(line))).collect()
    }

    /// Asserts that nothing arrives before a `PING` is answered.
    pub fn expect_quiet(&mut self) {
        let lines = self.sync();
        assert!(lines.is_empty(), "unexpected lines: {lines:?}");
    }

    /// Reads every line until the server closes the connection.
    pub fn recv_all(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Reads until the server closes; the last line must be `last`.
    pub fn expect_closed_after(&mut self, last: &str) -> Vec<String> {
        let lines = self.recv_all();
        assert_eq!(lines.last().map(String::as_str), Some(last), "all lines: {lines:?}");
        lines
    }

    /// For a member dropped as slow while `talker` sent `MSG talker
    /// text_of(0)`, `text_of(1)`, …: reads to the close and checks it was sent
    /// a gap-free prefix of the room after `JOINED talker`, perhaps `BYE
    /// slow`, and nothing after; only the very last line may be cut short.
    /// Returns how many messages it got.
    pub fn expect_dropped_as_slow(&mut self, who: &str, talker: &str, text_of: impl Fn(usize) -> String) -> usize {
        let text = String::from_utf8(self.read_to_end()).expect("UTF-8 from chatd");
        assert_eq!(self.try_recv(), None, "the {who}'s connection is closed");
        let mut lines: Vec<&str> = text.split('\n').collect();
        let fragment = lines.pop().unwrap_or("");
        let mut lines = lines.into_iter();
        assert_eq!(lines.next(), Some(format!("JOINED {talker}").as_str()));
        let mut got = 0;
        let mut said_bye = false;
        for line in lines {
            assert!(!said_bye, "the {who} got {line:?} after BYE slow");
            if line == "BYE slow" {
                said_bye = true;
                continue;
            }
            assert_eq!(line, format!("MSG {talker} {}", text_of(got)), "the {who} got a room with a hole in it");
            got += 1;
        }
        let next = format!("MSG {talker} {}\n", text_of(got));
        assert!(
            fragment.is_empty() || (!said_bye && (next.starts_with(fragment) || "BYE slow".starts_with(fragment))),
            "the {who}'s connection ended with {fragment:?} after {got} messages"
        );
        got
    }

    pub fn close_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Reads raw bytes until EOF (for checking what arrives after a close).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        rest
    }
}

#[derive(Debug)]
/// A directory of the test's own under the system's temporary directory,
/// removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("minichat-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
