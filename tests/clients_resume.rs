//! chat-tail and chat-send with the room's history: the latest events first,
//! positions and times, resuming from a kept position, and riding out a
//! chatd that restarts or is killed, with nothing missed and nothing twice.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use minichat::protocol::{ServerLine, Tags};
use nix::sys::signal::Signal;

use crate::util::{bin, Chatd, Client, TempDir, PATIENCE};

/// A client binary aimed at `chatd`, with nothing from the environment of
/// whoever runs the tests.
fn tool(chatd: &Chatd, name: &str) -> Command {
    let mut command = Command::new(bin(name));
    command.env("CHAT_SERVER", chatd.addr.to_string()).env_remove("CHAT_NAME").env("USER", "tester");
    command.env_remove("CHAT_RETRY_FOR");
    command
}

/// Starts `chat-tail --name NAME ARGS…` and waits until `watcher` saw it join.
fn start_tail(chatd: &Chatd, watcher: &mut Client, name: &str, args: &[&str]) -> Child {
    let child = tool(chatd, "chat-tail")
        .args(["--name", name])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The watcher may have tags on.
    let line = watcher.recv();
    assert_eq!(Tags::split(&line).map(|(_, rest)| rest), Some(format!("JOINED {name}").as_str()), "{line:?}");
    child
}

/// Lines from a child's standard output, each awaited with a deadline.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        Lines(crate::util::netns::lines_of(child.stdout.take().unwrap()))
    }

    fn next(&self) -> String {
        self.0.recv_timeout(PATIENCE).expect("a line from chat-tail in time")
    }
}

/// Waits for a child to exit, failing after `PATIENCE`.
fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit in time");
        thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    err
}

/// Writes the numbers 1 to `count`, a line each, to `child`'s input from a
/// thread of their own, and closes it.
fn write_numbers(child: &mut Child, count: u64) -> thread::JoinHandle<std::io::Result<()>> {
    let mut input = child.stdin.take().expect("a piped input");
    thread::spawn(move || {
        let numbers: String = (1..=count).map(|n| format!("{n}\n")).collect();
        input.write_all(numbers.as_bytes())
    })
}

/// Stops a `chat-tail` that lost its connection once: it must have said
/// that it reconnected, and that it missed nothing.
fn expect_resumed_missing_nothing(tail: &mut Child) {
    tail.kill().unwrap();
    tail.wait().unwrap();
    let err = stderr_of(tail);
    assert!(err.contains("reconnecting") && err.contains("reconnected"), "{err}");
    assert!(!err.contains("missed"), "{err}");
}

/// A client with tags on, joined as `name`: and the epoch of the room.
fn join_tagged(chatd: &Chatd, name: &str) -> (Client, String) {
    let mut client = chatd.connect();
    client.send("TAGS");
    client.expect("OK TAGS");
    client.send(&format!("JOIN {name}"));
    let (tags, line) = ServerLine::parse_tagged(&client.recv()).unwrap();
    assert_eq!(line, ServerLine::OkJoin(name.into()));
    (client, tags.epoch.expect("an epoch"))
}

/// Sends `MSG text` and returns its position, from the tagged `PONG`.
fn say(client: &mut Client, text: &str) -> u64 {
    client.send(&format!("MSG {text}"));
    client.send("PING where");
    loop {
        let line = client.recv();
        let (tags, rest) = Tags::split(&line).unwrap();
        if rest == "PONG where" {
            return tags.seq.expect("a tagged PONG");
        }
    }
}

#[test]
fn chat_tail_into_head_ends_at_once_in_a_quiet_room() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let tail = bin("chat-tail").display().to_string();
    let script = format!("set -o pipefail; '{tail}' --name t | head -n 2");
    let mut pipeline = Command::new("bash")
        .args(["-c", &script])
        .env("CHAT_SERVER", chatd.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    watcher.expect("JOINED t");
    watcher.send("MSG one");
    watcher.send("MSG two");
    // Nothing more is said: chat-tail must learn from standard output alone
    // that head has gone. (Not even a PING: chat-tail may leave before it
    // is answered, and its LEFT would come before the PONG.)
    let status = wait_for_exit(&mut pipeline);
    let mut out = String::new();
    pipeline.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let err = stderr_of(&mut pipeline);
    assert!(status.success(), "pipeline status {status}, stderr {err:?}");
    assert_eq!(out, "watcher: one\nwatcher: two\n");
    assert_eq!(err, "");
    watcher.expect("LEFT t exit");
}

#[test]
fn chat_tail_n_prints_the_latest_events_first() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    for n in 1..=5 {
        ana.send(&format!("MSG m{n}"));
    }
    ana.sync();
    let mut tail = start_tail(&chatd, &mut ana, "t", &["-n", "3", "--count", "4"]);
    ana.send("MSG live");
    ana.sync();
    let status = wait_for_exit(&mut tail);
    let mut out = String::new();
    tail.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "{}", stderr_of(&mut tail));
    assert_eq!(out, "Ana: m3\nAna: m4\nAna: m5\nAna: live\n");
}

#[test]
fn chat_tail_json_gives_each_event_its_position_epoch_and_time() {
    let chatd = Chatd::start(&[]);
    let (mut bob, epoch) = join_tagged(&chatd, "Bob");
    let mut tail = start_tail(&chatd, &mut bob, "t", &["--json", "--count", "1", "--messages-only"]);
    let mut ana = chatd.join("Ana");
    ana.send("MSG hola");
    ana.sync();
    // Bob, with tags on, sees where and when the message is.
    let (tags, _) = Tags::split(&bob.recv()).unwrap();
    let line = bob.recv();
    let (tags_of_msg, rest) = Tags::split(&line).unwrap();
    assert_eq!(rest, "MSG Ana hola", "after {tags:?}");
    let (seq, time) = (tags_of_msg.seq.unwrap(), tags_of_msg.time.unwrap());
    let status = wait_for_exit(&mut tail);
    let mut out = String::new();
    tail.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "{}", stderr_of(&mut tail));
    assert_eq!(
        out,
        format!("{{\"event\":\"msg\",\"from\":\"Ana\",\"text\":\"hola\",\"seq\":{seq},\"time\":\"{time}\",\"epoch\":\"{epoch}\"}}\n")
    );
    assert!(minichat::protocol::parse_time(&time).is_some(), "{time}");
}

#[test]
fn chat_tail_since_a_kept_position_prints_exactly_what_came_after() {
    let chatd = Chatd::start(&[]);
    let (mut ana, epoch) = join_tagged(&chatd, "Ana");
    let positions: Vec<u64> = (1..=5).map(|n| say(&mut ana, &format!("m{n}"))).collect();
    let kept = positions[1];
    let since = format!("{epoch}:{kept}");
    let mut tail = start_tail(&chatd, &mut ana, "t", &["--since", &since, "--raw", "--count", "3"]);
    let status = wait_for_exit(&mut tail);
    let mut out = String::new();
    tail.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let err = stderr_of(&mut tail);
    assert!(status.success(), "{err}");
    assert_eq!(out, "MSG Ana m3\nMSG Ana m4\nMSG Ana m5\n");
    assert_eq!(err, "");
}

#[test]
fn chat_tail_says_when_events_after_its_position_are_gone() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("MSG hola");
    ana.sync();
    let mut tail = start_tail(&chatd, &mut ana, "t", &["--since", "elsewhere:3", "--json", "--count", "1"]);
    let status = wait_for_exit(&mut tail);
    let mut out = String::new();
    tail.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let err = stderr_of(&mut tail);
    assert!(status.success(), "{err}");
    assert_eq!(err, "chat-tail: the server's history is not the one of elsewhere: some events may have been missed\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"{"event":"missed","count":null}"#);
    assert!(lines[1].starts_with(r#"{"event":"joined","name":"Ana","seq":1,"#), "{out}");
}

/// Stops chatd with SIGTERM and waits for it.
fn stop(mut chatd: Chatd) {
    chatd.signal(Signal::SIGTERM);
    assert!(chatd.wait().success(), "{}", chatd.stderr());
}

#[test]
fn chat_tail_rides_out_a_chatd_restart_and_misses_nothing() {
    let data = TempDir::new("chatd-data");
    let chatd = Chatd::start_in(data.path(), &[]);
    let addr = chatd.addr.to_string();
    let mut ana = chatd.join("Ana");
    let mut tail = start_tail(&chatd, &mut ana, "t", &["--retry-for", "30s"]);
    let lines = Lines::of(&mut tail);
    ana.send("MSG before");
    assert_eq!(lines.next(), "Ana: before");
    stop(chatd);
    let chatd = Chatd::start_in(data.path(), &["--bind", &addr]);
    // The members of the last run left as it ended; then the room goes on.
    assert_eq!(lines.next(), "* Ana left (lost)");
    let mut ana = chatd.join("Ana");
    ana.send("MSG after");
    ana.sync();
    assert_eq!(lines.next(), "* Ana joined");
    assert_eq!(lines.next(), "Ana: after");
    expect_resumed_missing_nothing(&mut tail);
}

#[test]
fn chat_tail_gives_up_with_status_5_when_the_server_never_comes_back() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let mut tail = start_tail(&chatd, &mut watcher, "t", &["--retry-for", "500ms"]);
    let addr = chatd.addr;
    stop(chatd);
    let status = wait_for_exit(&mut tail);
    let err = stderr_of(&mut tail);
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(err.contains(&format!("{addr}: the server shut down; reconnecting")), "{err}");
    assert!(err.contains("gave up reconnecting after 0.5 s"), "{err}");
}

/// The numbers `bulk` said in the room's history, in order.
fn said_by_bulk(chatd: &Chatd) -> Vec<u64> {
    let mut check = chatd.connect();
    check.send("JOIN check LAST 100000");
    check.expect("OK JOIN check");
    let lines = check.sync();
    lines.iter().filter_map(|line| line.strip_prefix("MSG bulk ")).map(|n| n.parse().unwrap()).collect()
}

#[test]
fn chat_send_delivers_every_line_exactly_once_across_kill_9_of_chatd() {
    let data = TempDir::new("chatd-data");
    let args = ["--history", "50000"];
    let chatd = Chatd::start_in(data.path(), &args);
    let addr = chatd.addr.to_string();
    let mut watcher = chatd.join("watcher");
    let mut send =
        tool(&chatd, "chat-send").args(["-n", "bulk"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let writer = write_numbers(&mut send, 20_000);
    watcher.expect("JOINED bulk");
    // Mid-stream: some lines confirmed, some in flight, most still to come.
    while watcher.recv() != "MSG bulk 3000" {}
    chatd.signal(Signal::SIGKILL);
    let mut chatd = chatd;
    chatd.wait();
    let chatd = Chatd::start_in(data.path(), &[&args[..], &["--bind", &addr]].concat());
    writer.join().unwrap().expect("all of the input written");
    let status = wait_for_exit(&mut send);
    let err = stderr_of(&mut send);
    assert!(status.success(), "chat-send: {status}: {err}");
    assert!(err.contains("reconnected"), "{err}");
    let said = said_by_bulk(&chatd);
    let want: Vec<u64> = (1..=20_000).collect();
    assert!(said == want, "{} messages; first wrong at {:?}; stderr: {err}", said.len(), {
        said.iter().zip(&want).position(|(a, b)| a != b)
    });
}

#[test]
fn chat_send_says_so_rather_than_guess_when_the_history_is_gone() {
    // With no history kept, a restarted chatd starts a new epoch: nobody can
    // tell whether the line in flight was taken.
    let data = TempDir::new("chatd-data");
    let chatd = Chatd::start_in(data.path(), &["--history", "0"]);
    let addr = chatd.addr.to_string();
    let mut watcher = chatd.join("watcher");
    let mut send =
        tool(&chatd, "chat-send").args(["-n", "bot"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = send.stdin.take().unwrap();
    input.write_all(b"one\n").unwrap();
    watcher.expect("JOINED bot");
    watcher.expect("MSG bot one");
    stop(chatd);
    let _chatd = Chatd::start_in(data.path(), &["--history", "0", "--bind", &addr]);
    let status = wait_for_exit(&mut send);
    drop(input);
    let err = stderr_of(&mut send);
    assert_eq!(status.code(), Some(5), "{err}");
    let want = "is no longer the one of";
    assert!(err.contains(want) && err.contains("whether the 1 message(s) sent before"), "{err}");
    assert!(err.contains("they were not sent again"), "{err}");
    assert!(!err.contains("reconnected"), "nothing is sent again after the doubt: {err}");
}

/// A TCP relay between clients and chatd that can cut a client's side of a
/// connection while chatd's side stays open: to chatd, that member is still
/// there, as when a network breaks without a word.
struct Relay {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Relayed>>>,
}

/// One relayed connection: the client's socket, and what chatd sent on it.
type Relayed = (TcpStream, Arc<Mutex<Vec<u8>>>);

impl Relay {
    fn to(chatd: &Chatd) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (kept, server) = (Arc::clone(&connections), chatd.addr);
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let upstream = TcpStream::connect(server).unwrap();
                let heard = Arc::new(Mutex::new(Vec::new()));
                let (mut up_reader, mut client_writer) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                let log = Arc::clone(&heard);
                thread::spawn(move || {
                    let mut buf = [0; 4096];
                    while let Ok(n @ 1..) = up_reader.read(&mut buf) {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        let _ = client_writer.write_all(&buf[..n]);
                    }
                });
                let (mut client_reader, mut up_writer) = (client.try_clone().unwrap(), upstream);
                // When the client's side ends, chatd's stays open (the reader
                // above holds it): nothing tells chatd the client is gone.
                thread::spawn(move || std::io::copy(&mut client_reader, &mut up_writer));
                kept.lock().unwrap().push((client, heard));
            }
        });
        Relay { addr, connections }
    }

    /// Closes connection `i` on the client's side only.
    fn cut(&self, i: usize) {
        let connections = self.connections.lock().unwrap();
        connections[i].0.shutdown(Shutdown::Both).unwrap();
    }

    /// Waits until chatd has sent `text` on connection `i`.
    fn expect_heard(&self, i: usize, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let heard = String::from_utf8_lossy(&self.connections.lock().unwrap()[i].1.lock().unwrap()).into_owned();
            if heard.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "chatd never sent {text:?} on connection {i}: {heard:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn chat_tail_takes_its_membership_back_before_chatd_notices_it_was_lost() {
    let chatd = Chatd::start(&[]);
    let relay = Relay::to(&chatd);
    let mut watcher = chatd.join("watcher");
    let mut tail = tool(&chatd, "chat-tail")
        .args(["--server", &relay.addr.to_string(), "--name", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    watcher.expect("JOINED t");
    let lines = Lines::of(&mut tail);
    watcher.send("MSG one");
    assert_eq!(lines.next(), "watcher: one");
    relay.cut(0);
    // The old connection is told it was replaced; the room sees nobody
    // leave or join.
    relay.expect_heard(0, "BYE replaced\n");
    watcher.send("MSG two");
    assert_eq!(lines.next(), "watcher: two");
    assert_eq!(watcher.sync(), Vec::<String>::new());
    expect_resumed_missing_nothing(&mut tail);
}

#[test]
fn chat_send_delivers_every_line_exactly_once_across_a_connection_cut_chatd_never_noticed() {
    let chatd = Chatd::start(&["--history", "50000"]);
    let relay = Relay::to(&chatd);
    let mut watcher = chatd.join("watcher");
    let mut send = tool(&chatd, "chat-send")
        .args(["--server", &relay.addr.to_string(), "-n", "bulk"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = write_numbers(&mut send, 20_000);
    watcher.expect("JOINED bulk");
    while watcher.recv() != "MSG bulk 3000" {}
    relay.cut(0);
    writer.join().unwrap().expect("all of the input written");
    let status = wait_for_exit(&mut send);
    let err = stderr_of(&mut send);
    assert!(status.success(), "chat-send: {status}: {err}");
    relay.expect_heard(0, "BYE replaced\n");
    let said = said_by_bulk(&chatd);
    let want: Vec<u64> = (1..=20_000).collect();
    assert!(said == want, "{} messages; first wrong at {:?}; stderr: {err}", said.len(), {
        said.iter().zip(&want).position(|(a, b)| a != b)
    });
}
