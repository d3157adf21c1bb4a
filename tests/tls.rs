//! TLS between chatd and its clients, as people meet it: the fingerprint
//! chatd prints and the clients show the first time, a certificate that
//! changed or vanished, what a capture of the LAN holds, `openssl s_client`
//! on the port that speaks TLS from the first byte, and `STARTTLS` typed by
//! hand.
//!
//! The LAN tests run in network namespaces (`util::netns`) and say
//! `SKIPPED: …` without root, `ip`, `nft` (or `tcpdump`); the loopback ones
//! need `openssl` only where they run it. Every negative assertion has its
//! control: a capture without the secret beside one with it, a refusal
//! beside the same command succeeding.

use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus};

use nix::sys::signal::Signal;

use minichat::tls::{client_config, handshake, Fingerprint, Session};

use crate::util::netns::{skip, Host, Lan, NsChatd, Proc};
use crate::util::{bin, Chatd, Client, TempDir, PATIENCE};

/// What `chat-send` and the others exit with when they refuse a server's
/// certificate (`src/exit_codes.rs`, UNTRUSTED).
const UNTRUSTED: i32 = 9;

/// The fingerprint in chatd's `tls:` start-up line.
fn fingerprint_in(tls_line: &str) -> String {
    let (_, fingerprint) = tls_line
        .split_once("; certificate SHA-256 ")
        .unwrap_or_else(|| panic!("no fingerprint in chatd's line {tls_line:?}"));
    assert_eq!(Fingerprint::parse(fingerprint).map(|f| f.to_string()).as_deref(), Ok(fingerprint));
    fingerprint.to_owned()
}

/// The address after `from the first byte on` in chatd's `tls:` line.
fn tls_port_in(tls_line: &str) -> SocketAddr {
    tls_line
        .split_once("from the first byte on ")
        .and_then(|(_, rest)| rest.split(';').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address for TLS from the first byte in {tls_line:?}"))
}

/// Starts `chatd -v --bind 0.0.0.0:5000 ARGS` on `host` with its data (and
/// so its certificate) in `dir`. Returns it, what other computers type
/// after `--server`, and its `tls:` start-up line.
fn start_chatd_in(host: &Host, dir: &Path, args: &[&str]) -> (NsChatd, String, String) {
    let chatd = NsChatd::start_in(host.ns(), dir, &[&["-v", "--bind", "0.0.0.0:5000"], args].concat());
    let hint = chatd.next_stdout_line();
    let server = hint
        .strip_prefix("from another computer: chat --server ")
        .unwrap_or_else(|| panic!("chatd's second line was {hint:?}"))
        .to_owned();
    assert_eq!(server, format!("{}:5000", host.addr()));
    let tls = chatd.next_stdout_line();
    assert!(tls.starts_with("tls: "), "chatd's third line was {tls:?}");
    (chatd, server, tls)
}

/// Stops chatd with SIGTERM and waits until it exited, so its port is free.
fn stop(mut chatd: NsChatd) {
    chatd.signal(Signal::SIGTERM);
    let status = chatd.wait();
    assert!(status.success(), "chatd: {status}; its log:\n{}", chatd.log());
}

/// A client binary on `host`, told `--server SERVER` and nothing from the
/// environment of whoever runs the tests.
fn tool(host: &Host, name: &str, server: &str) -> Command {
    let mut command = host.command(bin(name));
    command
        .env_remove("CHAT_NAME")
        .env_remove("CHAT_SERVER")
        .env_remove("CHAT_FINGERPRINT")
        .env("USER", "tester")
        .args(["--server", server]);
    command
}

/// Runs `chat-send --name NAME ARGS… TEXT` on `host` to its end; its exit
/// status and standard error.
fn chat_send(host: &Host, server: &str, name: &str, args: &[&str], text: &str) -> (ExitStatus, String) {
    let mut command = tool(host, "chat-send", server);
    command.args(["--name", name]).args(args).arg(text);
    finish(command, &format!("chat-send {name}"))
}

fn finish(command: Command, what: &str) -> (ExitStatus, String) {
    let mut proc = Proc::spawn(command, what);
    drop(proc.take_stdin());
    let status = proc.wait();
    (status, proc.stderr())
}

/// The address chatd logged for the last join of `name`.
fn joined_from(log: &str, name: &str) -> String {
    let text = format!("chatd: {name} joined from ");
    let line = log.lines().rfind(|line| line.starts_with(&text)).unwrap_or_else(|| panic!("{name} never joined"));
    line.rsplit(' ').next().unwrap().to_owned()
}

/// The start of the line `say_first_met` prints, for `server` and
/// `fingerprint`.
fn first_met(program: &str, server: &str, fingerprint: &str) -> String {
    format!("{program}: first connection to {server}; its TLS certificate is {fingerprint}. Compare it with")
}

#[test]
fn a_client_on_another_computer_meets_chatd_over_tls_and_refuses_it_once_its_certificate_changed() {
    let Some(lan) = Lan::or_skip(2, &[]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    let first_dir = TempDir::new("tls-first");
    let (chatd, server, tls) = start_chatd_in(a, first_dir.path(), &[]);
    let old = fingerprint_in(&tls);
    assert!(tls.starts_with("tls: STARTTLS on 0.0.0.0:5000, and from the first byte on 0.0.0.0:5001;"), "{tls}");

    // First meeting: chat-tail on B shows exactly the fingerprint chatd
    // printed, and the connection is encrypted.
    let mut command = tool(b, "chat-tail", &server);
    command.args(["--name", "b-tail"]);
    let mut tail = Proc::spawn(command, "chat-tail b-tail");
    let known = b.ns().data_home().join("minichat/known_servers");
    tail.expect_stderr(&format!("{} {}", first_met("chat-tail", &server, &old), "the one chatd printed at start"));
    tail.expect_stderr(&format!("it is remembered in {}", known.display()));
    let peer = chatd.expect_joined_from("b-tail", b.addr());
    chatd.expect_log(&format!("chatd: {peer}: TLS on"));
    let remembered = std::fs::read_to_string(&known).expect("the file of known servers");
    let compact = Fingerprint::parse(&old).unwrap().compact();
    assert_eq!(remembered, format!("{server} {compact}\n"));

    // chat-send on the same computer knows it now: no first meeting, over
    // TLS, and the message arrives.
    let (status, stderr) = chat_send(b, &server, "Bea", &[], "hola, cifrado");
    assert!(status.success(), "chat-send: {status}; stderr:\n{stderr}");
    assert!(!stderr.contains("first connection"), "{stderr}");
    let log = chatd.expect_log("chatd: Bea joined from ");
    chatd.expect_log(&format!("chatd: {}: TLS on", joined_from(&log, "Bea")));
    tail.expect_line("* Bea joined");
    tail.expect_line("Bea: hola, cifrado");
    stop(chatd);

    // The same address, a new data directory: a new certificate.
    let second_dir = TempDir::new("tls-second");
    let (chatd, again, tls) = start_chatd_in(a, second_dir.path(), &[]);
    assert_eq!(again, server);
    let new = fingerprint_in(&tls);
    assert_ne!(new, old, "a new data directory, a new certificate");

    // chat-tail, reconnecting, meets it and gives up rather than retry.
    let status = tail.wait();
    let stderr = tail.stderr();
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-tail: {status}; stderr:\n{stderr}");
    let part = format!("the TLS certificate of {server} has changed: it was {old}, it is now {new}.");
    assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");

    let (status, stderr) = chat_send(b, &server, "Bea", &[], "is this still you?");
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-send: {status}; stderr:\n{stderr}");
    for part in [
        format!("the TLS certificate of {server} has changed: it was {old}, it is now {new}."),
        format!("delete the line of {server} in {}", known.display()),
    ] {
        assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");
    }
    assert!(!chatd.log().contains("Bea joined"), "a refused chat-send joined:\n{}", chatd.log());

    // Given the new fingerprint it talks again; given another, it refuses.
    let (status, stderr) = chat_send(b, &server, "Bea", &["--fingerprint", &new], "it is you");
    assert!(status.success(), "chat-send --fingerprint NEW: {status}; stderr:\n{stderr}");
    chatd.expect_log("chatd: Bea joined from ");
    let (status, stderr) = chat_send(b, &server, "Bea", &["--fingerprint", &old], "or is it?");
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-send --fingerprint OLD: {status}; stderr:\n{stderr}");
    let part = format!("{server} showed the TLS certificate {new}, not the {old} given with --fingerprint");
    assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");
    // The file still holds the old line: --fingerprint changes nothing there.
    assert_eq!(std::fs::read_to_string(&known).unwrap(), format!("{server} {compact}\n"));
}

#[test]
fn a_server_that_drops_tls_is_refused_where_it_was_met_with_tls_and_used_in_plain_text_elsewhere() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let dir = TempDir::new("tls-downgrade");
    let (chatd, server, tls) = start_chatd_in(a, dir.path(), &[]);
    let fingerprint = fingerprint_in(&tls);
    let (status, stderr) = chat_send(b, &server, "Bea", &[], "first, over TLS");
    assert!(status.success(), "chat-send: {status}; stderr:\n{stderr}");
    assert!(stderr.contains(&first_met("chat-send", &server, &fingerprint)), "{stderr}");
    let mut command = tool(b, "chat-tail", &server);
    command.args(["--name", "b-tail"]);
    let mut tail = Proc::spawn(command, "chat-tail b-tail");
    let peer = chatd.expect_joined_from("b-tail", b.addr());
    chatd.expect_log(&format!("chatd: {peer}: TLS on"));
    stop(chatd);

    let (chatd, _, tls) = start_chatd_in(a, dir.path(), &["--no-tls"]);
    assert_eq!(tls, "tls: off (--no-tls): what is said here crosses the network in plain text");
    // chat-tail, reconnecting, is refused plain text and gives up.
    let status = tail.wait();
    let stderr = tail.stderr();
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-tail: {status}; stderr:\n{stderr}");
    assert!(stderr.contains(&format!("{server} offers no TLS, but it did when first met")), "{stderr}");
    let mut watcher = c.join(server.parse().unwrap(), "watcher");

    let (status, stderr) = chat_send(b, &server, "Bea", &[], "from B, in plain text?");
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-send on B: {status}; stderr:\n{stderr}");
    let known = b.ns().data_home().join("minichat/known_servers");
    let part = format!("{server} offers no TLS, but it did when first met (see {})", known.display());
    assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");

    // C never met it with TLS: plain text is what it offers, and it works.
    let (status, stderr) = chat_send(c, &server, "Cy", &[], "from C, in plain text");
    assert!(status.success(), "chat-send on C: {status}; stderr:\n{stderr}");
    assert!(!stderr.contains("first connection"), "{stderr}");
    let lines = watcher.sync();
    assert!(lines.contains(&"MSG Cy from C, in plain text".to_owned()), "the watcher saw {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("Bea") || l.contains("from B")), "B got in: {lines:?}");
    assert!(!chatd.log().contains("TLS on"), "{}", chatd.log());
}

/// Once stalled about one run in ten: chatd stopped sending to the TLS
/// member mid-stream, when the TLS records that waited went out and no new
/// line did (`Outbox::flush_some` left the link marked full).
#[test]
fn thousands_of_lines_piped_over_tls_from_one_computer_reach_another_over_tls_whole_and_in_order() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let dir = TempDir::new("tls-stream");
    let (chatd, server, _) = start_chatd_in(a, dir.path(), &[]);
    let mut command = tool(c, "chat-tail", &server);
    command.args(["--name", "c-tail"]);
    let tail = Proc::spawn(command, "chat-tail c-tail");
    let peer = chatd.expect_joined_from("c-tail", c.addr());
    chatd.expect_log(&format!("chatd: {peer}: TLS on"));

    let line = |i: usize| format!("{i:05} {}", "z".repeat(200));
    const LINES: usize = 5000;
    let mut command = tool(b, "chat-send", &server);
    command.args(["--name", "pipe"]);
    let mut send = Proc::spawn(command, "chat-send pipe");
    let mut input = send.take_stdin();
    let writer = std::thread::spawn(move || {
        // Many lines a write: TLS records and lines do not line up.
        let text: String = (0..LINES).map(|i| line(i) + "\n").collect();
        input.write_all(text.as_bytes()).expect("chat-send takes its input");
    });
    tail.expect_line("* pipe joined");
    for i in 0..LINES {
        let got = tail.line_within(PATIENCE);
        let want = format!("pipe: {}", line(i));
        if got.as_deref() != Some(want.as_str()) {
            let log = chatd.log();
            let log: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "line {i}: got {:?}; chat-send's stderr:\n{}\nchat-tail's:\n{}\nchatd's last lines:\n{log:#?}",
                got.map(|l| l.chars().take(60).collect::<String>()),
                send.stderr(),
                tail.stderr()
            );
        }
    }
    writer.join().expect("the writer");
    let status = send.wait();
    assert!(status.success(), "chat-send: {status}; stderr:\n{}", send.stderr());
    tail.expect_line("* pipe left (exit)");
    let log = chatd.log();
    assert!(log.contains(&format!("chatd: {}: TLS on", joined_from(&log, "pipe"))), "{log}");
}

/// A capture of `host`'s `eth0`, TCP port 5000, by tcpdump, written to a
/// file packet by packet.
struct Capture {
    tcpdump: Proc,
    file: std::path::PathBuf,
    _dir: TempDir,
}

impl Capture {
    /// Starts tcpdump and waits until it says it is listening.
    fn start(host: &Host) -> Capture {
        let dir = TempDir::new("tls-capture");
        let file = dir.path().join("port5000.pcap");
        let mut command = host.command("tcpdump");
        // Each packet handed over at once (--immediate-mode) and written at
        // once (-U); as root throughout (-Z root): the file is in a
        // directory of ours.
        command.args(["-i", "eth0", "--immediate-mode", "-U", "-Z", "root", "-w"]);
        command.arg(&file).args(["tcp", "port", "5000"]);
        let tcpdump = Proc::spawn(command, "tcpdump");
        tcpdump.expect_stderr("listening on eth0");
        Capture { tcpdump, file, _dir: dir }
    }

    /// Waits until the file holds `marker`, said last on the wire: tcpdump
    /// writes packets in the order they came, so all before it are there
    /// too. Then stops tcpdump (SIGINT) and returns what it captured.
    fn finish_after(mut self, marker: &str) -> Vec<u8> {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !holds(&std::fs::read(&self.file).unwrap_or_default(), marker) {
            let stderr = self.tcpdump.stderr();
            assert!(std::time::Instant::now() < deadline, "tcpdump never wrote {marker:?}; its stderr:\n{stderr}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.tcpdump.signal(Signal::SIGINT);
        let status = self.tcpdump.wait();
        assert!(status.success(), "tcpdump: {status}; stderr:\n{}", self.tcpdump.stderr());
        std::fs::read(&self.file).expect("the capture")
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// With chatd on A started with `args` and tcpdump capturing A's port 5000,
/// chat-send on B says `secret` to a chat-tail on C, which must get it.
/// Returns the capture.
fn capture_a_secret(lan: &Lan, args: &[&str], secret: &str) -> Vec<u8> {
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    // Computers that never met a server here: what they remember of one
    // with TLS would refuse another without.
    for host in [b, c] {
        let _ = std::fs::remove_dir_all(host.ns().data_home());
    }
    let dir = TempDir::new("tls-capture-data");
    let (chatd, server, _) = start_chatd_in(a, dir.path(), args);
    let capture = Capture::start(a);
    let mut command = tool(c, "chat-tail", &server);
    command.args(["--name", "c-tail"]);
    let tail = Proc::spawn(command, "chat-tail c-tail");
    chatd.expect_joined_from("c-tail", c.addr());
    let (status, stderr) = chat_send(b, &server, "Bea", &[], secret);
    assert!(status.success(), "chat-send: {status}; stderr:\n{stderr}");
    tail.expect_line("* Bea joined");
    tail.expect_line(&format!("Bea: {secret}"));
    drop(tail);
    // Then something in plain text, last, whatever chatd's TLS.
    let marker = format!("end-of-capture-{}", nanos());
    let mut last = b.connect(server.parse().unwrap());
    last.send(&format!("PING {marker}"));
    last.expect(&format!("PONG {marker}"));
    let captured = capture.finish_after(&format!("PONG {marker}"));
    stop(chatd);
    captured
}

#[test]
fn a_capture_of_the_lan_holds_no_message_text_over_tls_and_holds_it_without() {
    // Not `Lan::or_skip(…, &["tcpdump"])`: `tcpdump -V` reads a list of files.
    if !or_skip("tcpdump", "--version") {
        return;
    }
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let secret = format!("the-cake-is-a-lie-{}-{}", std::process::id(), nanos());
    let captured = capture_a_secret(&lan, &[], &secret);
    // It did capture the conversation: what goes before TLS is there.
    assert!(holds(&captured, "OK STARTTLS"), "the capture ({} bytes) missed the connections", captured.len());
    assert!(!holds(&captured, &secret), "the secret crossed the LAN in plain text");

    // The control: without TLS, the same capture holds it.
    let plain = capture_a_secret(&lan, &["--no-tls"], &secret);
    assert!(holds(&plain, &secret), "the capture without TLS ({} bytes) missed the secret", plain.len());
}

/// A number that differs from run to run, for a text no earlier capture
/// could hold.
fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// chatd's `tls:` start-up line.
fn tls_line(chatd: &Chatd) -> String {
    let line = chatd.startup.iter().find(|line| line.starts_with("tls: "));
    line.cloned().unwrap_or_else(|| panic!("no tls: line in {:?}", chatd.startup))
}

/// Whether `program ARG` runs here (`openssl version`, `tcpdump
/// --version`); says `SKIPPED: …` when it does not.
fn or_skip(program: &str, arg: &str) -> bool {
    let runs = Command::new(program).arg(arg).output().is_ok_and(|out| out.status.success());
    if !runs {
        skip(&format!("`{program}` is not available"));
    }
    runs
}

/// The README's `openssl s_client` command, its `HOST:5001` made `addr`.
fn openssl_as_the_readme_says(addr: SocketAddr) -> Command {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let line = readme
        .split('`')
        .map(str::trim)
        .find(|part| part.starts_with("openssl s_client"))
        .unwrap_or_else(|| panic!("no `openssl s_client …` in README.md"));
    let words: Vec<String> = line.split_whitespace().map(|word| word.replace("HOST:5001", &addr.to_string())).collect();
    assert!(words.contains(&addr.to_string()), "README's {line:?} has no HOST:5001");
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// Reads `client`'s lines until `want`, at most a few.
fn recv_until(client: &mut Client, want: &str) {
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let line = client.recv();
        if line == want {
            return;
        }
        seen.push(line);
    }
    panic!("no {want:?}; got {seen:?}");
}

#[test]
fn openssl_s_client_as_the_readme_gives_it_talks_with_a_plain_text_member() {
    if !or_skip("openssl", "version") {
        return;
    }
    let dir = TempDir::new("tls-openssl");
    let chatd = Chatd::start_in(dir.path(), &["-v"]);
    let tls = tls_line(&chatd);
    let fingerprint = Fingerprint::parse(&fingerprint_in(&tls)).unwrap();
    let tls_addr = tls_port_in(&tls);
    assert!(tls.starts_with(&format!("tls: STARTTLS on {}, and from", chatd.addr)), "{tls}");
    assert_eq!(tls_addr.ip(), chatd.addr.ip());
    assert_ne!(tls_addr.port(), chatd.addr.port());

    // The certificate chatd made is kept private, and openssl sees in it the
    // fingerprint chatd printed.
    let pem = dir.path().join("tls.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pem).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", pem.display());
    let out = Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(&pem).output();
    let out = out.expect("openssl x509");
    assert!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(Fingerprint::parse(&String::from_utf8_lossy(&out.stdout)), Ok(fingerprint));

    let mut openssl = Proc::spawn(openssl_as_the_readme_says(tls_addr), "openssl s_client");
    let mut keyboard = openssl.take_stdin();
    let hello = openssl.next_line();
    assert!(hello.starts_with("HELLO chatd/"), "openssl's first line: {hello:?}");
    keyboard.write_all(b"JOIN carol\n").unwrap();
    openssl.expect_line("OK JOIN carol");
    // The log line may come a moment after the reply.
    chatd.expect_log("chatd: carol joined from ");
    let peer = joined_from(&chatd.stderr(), "carol");
    chatd.expect_log(&format!("chatd: {peer}: TLS on"));

    let mut ana = chatd.join("Ana");
    openssl.expect_line("JOINED Ana");
    ana.send("MSG hola");
    openssl.expect_line("MSG Ana hola");
    keyboard.write_all(b"MSG hi\n").unwrap();
    recv_until(&mut ana, "MSG carol hi");
    // Ana is in plain text: the control for the line above.
    let ana_addr = ana.stream().local_addr().unwrap();
    assert!(!chatd.stderr().contains(&format!("{ana_addr}: TLS on")), "{}", chatd.stderr());
}

/// One end of a connection encrypted after `OK STARTTLS`, with the clients'
/// own TLS settings, read line by line.
struct Encrypted<'a> {
    stream: &'a TcpStream,
    session: Session,
    read: Vec<u8>,
}

impl<'a> Encrypted<'a> {
    /// Runs the handshake on `client`, which has read `OK STARTTLS`.
    fn start(client: &'a Client) -> Encrypted<'a> {
        Encrypted::go_on(client, tls_client(client))
    }

    /// Runs the rest of the handshake `conn` began on `client`.
    fn go_on(client: &'a Client, conn: rustls::ClientConnection) -> Encrypted<'a> {
        let stream = client.stream();
        let session = Session::new(conn);
        // The socket blocks with a timeout: a wait is called only when it ran out.
        handshake(&session, stream, &mut |_| Err(std::io::ErrorKind::TimedOut.into())).expect("the TLS handshake");
        Encrypted { stream, session, read: Vec::new() }
    }

    fn send(&mut self, line: &str) {
        let line = format!("{line}\n");
        let taken = self.session.send(self.stream, &[IoSlice::new(line.as_bytes())]).expect("send over TLS");
        assert_eq!(taken, line.len());
        assert!(self.session.flush(self.stream).expect("send over TLS"));
    }

    fn recv(&mut self) -> String {
        let line = self.try_recv();
        line.unwrap_or_else(|| {
            panic!("chatd closed the connection; after it: {:?}", String::from_utf8_lossy(&self.read))
        })
    }

    /// The next whole line, or `None` once chatd closed the connection (what
    /// came of a last line stays in `self.read`).
    fn try_recv(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.read.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.read.drain(..=end).collect();
                return Some(String::from_utf8(line[..end].to_vec()).expect("UTF-8 from chatd"));
            }
            let mut buf = [0; 4096];
            match self.session.read(self.stream, &mut buf) {
                Ok(0) => return None,
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading over TLS: {e}; after {:?}", String::from_utf8_lossy(&self.read)),
            }
        }
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.recv(), want);
    }
}

#[test]
fn starttls_typed_by_hand_starts_tls_with_the_certificate_chatd_printed() {
    let chatd = Chatd::start(&["-v"]);
    let fingerprint = fingerprint_in(&tls_line(&chatd));
    let mut dora = chatd.connect();
    dora.send("STARTTLS");
    dora.expect("OK STARTTLS");
    let mut tls = Encrypted::start(&dora);
    let seen = tls.session.peer_fingerprint().expect("a certificate");
    assert_eq!(seen.to_string(), fingerprint);
    chatd.expect_log(&format!("chatd: {}: TLS on", dora.stream().local_addr().unwrap()));

    // No second HELLO: the first line over TLS answers the first request.
    tls.send("STARTTLS");
    let again = tls.recv();
    assert!(again.starts_with("ERR NO_TLS "), "a second STARTTLS got {again:?}");
    tls.send("JOIN dora");
    tls.expect("OK JOIN dora");

    let mut ana = chatd.join("Ana");
    tls.expect("JOINED Ana");
    ana.send("MSG hola dora");
    tls.expect("MSG Ana hola dora");
    tls.send("MSG hola Ana");
    recv_until(&mut ana, "MSG dora hola Ana");
    let ana_addr = ana.stream().local_addr().unwrap();
    assert!(!chatd.stderr().contains(&format!("{ana_addr}: TLS on")), "{}", chatd.stderr());
}

/// A TLS client with the clients' own settings, for `client`'s server.
fn tls_client(client: &Client) -> rustls::ClientConnection {
    let ip = client.stream().peer_addr().unwrap().ip();
    rustls::ClientConnection::new(client_config(), ip.into()).expect("a TLS client")
}

#[test]
fn a_client_hello_sent_with_starttls_before_the_answer_is_taken_as_the_start_of_the_handshake() {
    let chatd = Chatd::start(&["-v"]);
    let fingerprint = fingerprint_in(&tls_line(&chatd));
    let mut hasty = chatd.connect();
    let mut conn = tls_client(&hasty);
    let mut bytes = b"STARTTLS\n".to_vec();
    conn.write_tls(&mut bytes).expect("a ClientHello");
    assert!(bytes.len() > "STARTTLS\n".len());
    hasty.send_raw(&bytes);
    // The answer in plain text, read a byte at a time: what follows it is TLS.
    let mut answer = Vec::new();
    while answer.last() != Some(&b'\n') {
        let mut byte = [0];
        let n = hasty.stream().read(&mut byte).expect("the answer to STARTTLS");
        assert_eq!(n, 1, "chatd closed the connection after {:?}", String::from_utf8_lossy(&answer));
        answer.push(byte[0]);
    }
    assert_eq!(String::from_utf8_lossy(&answer), "OK STARTTLS\n");
    let mut tls = Encrypted::go_on(&hasty, conn);
    assert_eq!(tls.session.peer_fingerprint().map(|f| f.to_string()), Some(fingerprint));
    tls.send("JOIN hasty");
    tls.expect("OK JOIN hasty");
    chatd.expect_log(&format!("chatd: {}: TLS on", hasty.stream().local_addr().unwrap()));
}

/// Message number `i` of a flood, about 100 bytes on the wire.
fn flood_text(i: usize) -> String {
    format!("{i:06} {}", "x".repeat(80))
}

#[test]
fn a_member_over_tls_that_never_reads_is_dropped_as_slow_and_a_reader_loses_nothing() {
    const TOTAL: usize = 100_000;
    const CHUNK: usize = 1000;
    let chatd = Chatd::start(&["--max-queue", "64K"]);
    let mut sleeping = chatd.connect();
    sleeping.send("STARTTLS");
    sleeping.expect("OK STARTTLS");
    let mut sleeper = Encrypted::start(&sleeping);
    sleeper.send("JOIN sleeper");
    sleeper.expect("OK JOIN sleeper");
    let mut reader = chatd.join("reader");
    let mut talker = chatd.join("talker");
    assert_eq!(reader.sync(), ["JOINED talker"]);

    let reading = std::thread::spawn(move || {
        let mut left_at = None;
        let mut next = 0;
        while next < TOTAL {
            let line = reader.recv();
            if line == "LEFT sleeper slow" && left_at.is_none() {
                left_at = Some(next);
                continue;
            }
            assert_eq!(line, format!("MSG talker {}", flood_text(next)), "the reader");
            next += 1;
        }
        (reader, left_at)
    });
    let mut out = talker.stream().try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for chunk in 0..TOTAL / CHUNK {
            let lines: String =
                (chunk * CHUNK..(chunk + 1) * CHUNK).map(|i| format!("MSG {}\n", flood_text(i))).collect();
            out.write_all(lines.as_bytes()).expect("the talker sends");
        }
        out.write_all(b"PING flood-done\n").expect("the talker sends");
    });
    let mut talker_saw = Vec::new();
    loop {
        let line = talker.recv();
        if line == "PONG flood-done" {
            break;
        }
        talker_saw.push(line);
        assert!(talker_saw.len() < 10, "the talker got {talker_saw:?}");
    }
    assert_eq!(talker_saw, ["LEFT sleeper slow"], "only the sleeper may be dropped");
    writing.join().expect("the talker's writer");
    let (mut reader, left_at) = reading.join().expect("the reader");
    let left_at = match left_at {
        Some(at) => at,
        None => {
            assert_eq!(reader.sync(), ["LEFT sleeper slow"]);
            TOTAL
        }
    };

    // The sleeper reads at last: a gap-free start of the room, then the end.
    assert_eq!(sleeper.recv(), "JOINED reader");
    assert_eq!(sleeper.recv(), "JOINED talker");
    let mut got = 0;
    while let Some(line) = sleeper.try_recv() {
        if line == "BYE slow" {
            break;
        }
        assert_eq!(line, format!("MSG talker {}", flood_text(got)), "the sleeper's room has a hole");
        got += 1;
    }
    assert_eq!(sleeper.try_recv(), None, "the sleeper got more after BYE slow");
    assert!(got <= left_at, "the sleeper got {got} messages, but was dropped after {left_at}");
    assert!(got < TOTAL, "the sleeper got everything: the flood was too small");
}

#[test]
fn starttls_after_join_is_refused_and_the_member_goes_on_in_plain_text() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("STARTTLS");
    ana.expect_prefix("ERR ALREADY_JOINED ");
    let mut bob = chatd.join("Bob");
    ana.send("MSG still plain");
    recv_until(&mut bob, "MSG Ana still plain");
}

#[test]
fn chatd_with_no_tls_refuses_starttls_and_the_connection_goes_on_in_plain_text() {
    let chatd = Chatd::start(&["--no-tls"]);
    assert_eq!(tls_line(&chatd), "tls: off (--no-tls): what is said here crosses the network in plain text");
    let mut eve = chatd.connect();
    eve.send("STARTTLS");
    eve.expect_prefix("ERR NO_TLS ");
    eve.send("JOIN eve");
    eve.expect("OK JOIN eve");
    let mut ana = chatd.join("Ana");
    eve.send("MSG plain it is");
    recv_until(&mut ana, "MSG eve plain it is");
}

/// Reads `client`'s connection until chatd closes it; fails if it stays
/// open for `PATIENCE`. Returns what arrived.
fn expect_closed(client: &Client) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match client.stream().read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection is still open ({e}); it sent {got:?}"),
        }
    }
}

#[test]
fn garbage_instead_of_a_tls_handshake_ends_that_connection_and_no_other() {
    let chatd = Chatd::start(&["-v"]);
    let mut ana = chatd.join("Ana");

    // One asks for TLS and goes away; another sends text where its
    // ClientHello should be.
    let mut quitter = chatd.connect();
    quitter.send("STARTTLS");
    quitter.expect("OK STARTTLS");
    drop(quitter);
    let mut liar = chatd.connect();
    liar.send("STARTTLS");
    liar.expect("OK STARTTLS");
    liar.send("JOIN liar");
    let got = expect_closed(&liar);
    assert!(!holds(&got, "OK JOIN"), "the liar joined: {:?}", String::from_utf8_lossy(&got));

    // chatd still serves: a new member, and the room talks.
    let mut bob = chatd.join("Bob");
    ana.send("MSG still here");
    recv_until(&mut bob, "MSG Ana still here");
    assert!(!chatd.stderr().contains("liar joined"), "{}", chatd.stderr());
}

/// A client binary on this computer, told `--server SERVER`, remembering
/// servers in `home` and taking nothing from the environment of whoever runs
/// the tests.
fn local_tool(name: &str, server: SocketAddr, home: &Path) -> Command {
    let mut command = Command::new(bin(name));
    command
        .env_remove("CHAT_NAME")
        .env_remove("CHAT_SERVER")
        .env_remove("CHAT_FINGERPRINT")
        .env("USER", "tester")
        .env("XDG_DATA_HOME", home)
        .arg("--server")
        .arg(server.to_string());
    command
}

#[test]
fn on_this_computer_chat_send_and_chat_tail_use_tls_when_given_the_fingerprint() {
    let chatd = Chatd::start(&["-v"]);
    let fingerprint = fingerprint_in(&tls_line(&chatd));
    let home = TempDir::new("tls-home");
    let tls_of = |name: &str| {
        chatd.expect_log(&format!("chatd: {name} joined from "));
        let peer = joined_from(&chatd.stderr(), name);
        chatd.stderr().contains(&format!("chatd: {peer}: TLS on"))
    };

    let mut command = local_tool("chat-tail", chatd.addr, home.path());
    command.args(["--name", "tail", "--fingerprint", &fingerprint]);
    let tail = Proc::spawn(command, "chat-tail");
    assert!(tls_of("tail"), "chat-tail --fingerprint: no TLS; chatd's log:\n{}", chatd.stderr());

    let mut command = local_tool("chat-send", chatd.addr, home.path());
    command.args(["--name", "Sam", "--fingerprint", &fingerprint, "over TLS"]);
    let (status, stderr) = finish(command, "chat-send --fingerprint");
    assert!(status.success(), "chat-send --fingerprint: {status}; stderr:\n{stderr}");
    assert!(tls_of("Sam"), "chat-send --fingerprint: no TLS; chatd's log:\n{}", chatd.stderr());
    tail.expect_line("* Sam joined");
    tail.expect_line("Sam: over TLS");

    // The control: without a fingerprint, loopback stays plain.
    let mut command = local_tool("chat-send", chatd.addr, home.path());
    command.args(["--name", "Pat", "in plain text"]);
    let (status, stderr) = finish(command, "chat-send");
    assert!(status.success(), "chat-send: {status}; stderr:\n{stderr}");
    assert!(!tls_of("Pat"), "chat-send on loopback started TLS unasked; chatd's log:\n{}", chatd.stderr());
    assert!(!home.path().join("minichat/known_servers").exists(), "loopback was remembered");

    // A wrong fingerprint is refused.
    let wrong = Fingerprint::of(b"another certificate").to_string();
    let mut command = local_tool("chat-send", chatd.addr, home.path());
    command.args(["--name", "Sam", "--fingerprint", &wrong, "not to that one"]);
    let (status, stderr) = finish(command, "chat-send --fingerprint WRONG");
    assert_eq!(status.code(), Some(UNTRUSTED), "chat-send --fingerprint WRONG: {status}; stderr:\n{stderr}");
    let part = format!("showed the TLS certificate {fingerprint}, not the {wrong} given with --fingerprint");
    assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");
}

#[test]
fn a_line_typed_on_the_tls_port_is_answered_with_where_plain_text_is_spoken() {
    let chatd = Chatd::start(&[]);
    let tls_line = chatd.startup.iter().find(|l| l.starts_with("tls: ")).expect("a tls: start-up line");
    let mut lost = Client::connect(tls_port_in(tls_line));
    lost.send("JOIN Ana");
    let said = lost.recv_all().concat();
    let want = format!("spoken on port {}", chatd.addr.port());
    assert!(
        said.starts_with("ERR BAD_ENCODING this port speaks TLS from the first byte") && said.ends_with(&want),
        "{said}"
    );
    // The plain port is unchanged.
    chatd.join("Ana").sync();
}
