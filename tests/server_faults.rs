//! Faults: clients that die, stall, flood, stay silent or vanish, and the
//! server's signals. Real processes, real sockets, real signals.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::thread;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::netns::{self, lines_of, Netns, NsChatd};
use crate::util::{Chatd, Client, PATIENCE};

/// A process this test started, killed (SIGKILL, by its PID) and reaped when
/// dropped if still running.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }

    fn kill_and_reap(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL our own child");
        self.0.wait().expect("reap our own child")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// The next line from `lines`, failing the test after `PATIENCE` or at EOF.
fn next_line(lines: &Receiver<String>, whose: &str) -> String {
    lines.recv_timeout(PATIENCE).unwrap_or_else(|e| panic!("no line from {whose}: {e:?}"))
}

/// A member that is a separate process: bash joins as `name` over
/// `/dev/tcp` and then copies what the server says to its stdout. `prefix`
/// runs it another way (inside a network namespace). `exec` keeps one PID
/// for the socket's whole life, so killing that PID closes the socket.
fn bash_member(prefix: &[&str], port: u16, name: &str) -> (Proc, Receiver<String>) {
    let script = r#"exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; echo "JOIN $2" >&3; exec cat <&3"#;
    let mut words: Vec<String> = prefix.iter().map(|w| w.to_string()).collect();
    words.extend(["bash", "-c", script, "bash"].map(String::from));
    words.extend([port.to_string(), name.to_string()]);
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {words:?}: {e}"));
    let lines = lines_of(child.stdout.take().unwrap());
    let proc = Proc(child);
    let hello = next_line(&lines, name);
    assert!(hello.starts_with("HELLO chatd/"), "{name} got {hello:?}");
    assert_eq!(next_line(&lines, name), format!("OK JOIN {name}"));
    (proc, lines)
}

#[test]
fn a_client_process_killed_mid_session_is_lost_and_the_server_goes_on() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let (mut victim, victim_lines) = bash_member(&[], chatd.addr.port(), "victim");
    watcher.expect("JOINED victim");
    watcher.send("MSG are you there?");
    assert_eq!(next_line(&victim_lines, "victim"), "MSG watcher are you there?");

    let status = victim.kill_and_reap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    watcher.expect("LEFT victim lost");

    let mut again = chatd.join("victim");
    watcher.expect("JOINED victim");
    again.send("MSG back again");
    watcher.expect("MSG victim back again");
    watcher.send("MSG welcome back");
    again.expect("MSG watcher welcome back");
    watcher.send("NAMES");
    watcher.expect("NAMES watcher victim");
}

/// `MSG` text number `i` of a flood, about 100 bytes on the wire.
fn flood_text(i: usize) -> String {
    format!("{i:06} {}", "x".repeat(80))
}

/// Reads the talker's flood as a reader that keeps up: every message, in
/// order, and `LEFT sleeper slow` once somewhere. Returns how many messages
/// came before that `LEFT`, if it came.
fn read_flood(client: &mut Client, who: &str, total: usize) -> Option<usize> {
    let mut next = 0;
    let mut left_at = None;
    for _ in 0..=total {
        if next == total {
            break;
        }
        let line = client.recv();
        if line == "LEFT sleeper slow" {
            assert_eq!(left_at, None, "{who} saw the sleeper leave twice");
            left_at = Some(next);
            continue;
        }
        let want = format!("MSG talker {}", flood_text(next));
        assert!(line == want, "{who}: expected {want:?}, got {line:?}");
        next += 1;
    }
    assert_eq!(next, total, "{who} did not get the whole flood");
    left_at
}

/// With a 64 KiB queue, the talker's default pace (flood control at 200,000
/// lines a second, bursts of 20,000) is far beyond what the queue absorbs in
/// one scheduler time slice, so this is also a test of whether readers that
/// read all the time, with room in their sockets, are wrongly dropped.
#[test]
fn a_member_that_never_reads_is_dropped_as_slow_and_nobody_else_loses_a_line() {
    sleeper_is_dropped_and_readers_lose_nothing(&["--max-queue", "64K"]);
}

/// The same, with the talker paced at a rate any reader keeps up with, so
/// that what happens to the sleeper is checked whatever the machine.
#[test]
fn a_member_that_never_reads_is_dropped_as_slow_while_a_paced_talker_floods() {
    sleeper_is_dropped_and_readers_lose_nothing(&[
        "--max-queue",
        "64K",
        "--rate-limit",
        "20000",
        "--rate-burst",
        "200",
    ]);
}

/// `sleeper` never reads while `talker` sends 10 MB, far more than the kernel's
/// buffers and the queue hold; `reader1` and `reader2` read all the time.
fn sleeper_is_dropped_and_readers_lose_nothing(args: &[&str]) {
    const TOTAL: usize = 100_000;
    const CHUNK: usize = 1000;
    // One such flood at a time: two would compete for the CPU they measure.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let chatd = Chatd::start(args);
    let mut reader1 = chatd.join("reader1");
    let mut reader2 = chatd.join("reader2");
    let mut sleeper = chatd.join("sleeper");
    let mut talker = chatd.join("talker");
    assert_eq!(reader1.sync(), ["JOINED reader2", "JOINED sleeper", "JOINED talker"]);
    assert_eq!(reader2.sync(), ["JOINED sleeper", "JOINED talker"]);
    assert!(talker.sync().is_empty());

    let readers: Vec<_> = [(reader1, "reader1"), (reader2, "reader2")]
        .into_iter()
        .map(|(mut client, who)| {
            thread::spawn(move || {
                let left_at = read_flood(&mut client, who, TOTAL);
                (client, left_at)
            })
        })
        .collect();
    let mut out = talker.stream().try_clone().unwrap();
    let writer = thread::spawn(move || {
        for chunk in 0..TOTAL / CHUNK {
            let lines: String =
                (chunk * CHUNK..(chunk + 1) * CHUNK).map(|i| format!("MSG {}\n", flood_text(i))).collect();
            out.write_all(lines.as_bytes()).expect("talker sends");
        }
        out.write_all(b"PING flood-done\n").expect("talker sends");
    });
    // The talker drains its own socket meanwhile: it is told of the sleeper.
    let mut talker_saw = Vec::new();
    for _ in 0..10 {
        let line = talker.recv();
        if line == "PONG flood-done" {
            break;
        }
        talker_saw.push(line);
    }
    assert_eq!(talker_saw, ["LEFT sleeper slow"], "only the sleeper may be dropped");
    writer.join().expect("talker's writer");

    let mut left_ats = Vec::new();
    // The readers stay connected until both are checked.
    let mut keep = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (mut client, mut left_at) = reader.join().expect("reader thread");
        // Everything the talker sent was accepted: nothing else may come.
        let rest = client.sync();
        if left_at.is_none() && rest == ["LEFT sleeper slow"] {
            left_at = Some(TOTAL);
        } else {
            assert!(rest.is_empty(), "reader{} then got {rest:?}", i + 1);
        }
        left_ats.push(left_at.expect("a reader never saw LEFT sleeper slow"));
        keep.push(client);
    }
    assert_eq!(left_ats[0], left_ats[1], "the readers saw the sleeper leave at different places");

    // The sleeper finally reads: a gap-free prefix of the room, then the end.
    let got = sleeper.expect_dropped_as_slow("sleeper", "talker", flood_text);
    assert!(got <= left_ats[0], "the sleeper got {got} messages, but was dropped after {}", left_ats[0]);
    assert!(got < TOTAL, "the sleeper got everything: the flood was too small");
}

/// chatd wakes its connection threads with SIGURG; one sent from outside
/// (say by `kill -URG`) must change nothing.
#[test]
fn a_stray_sigurg_changes_nothing() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("ana");
    let mut luis = chatd.join("luis");
    for i in 0..20 {
        chatd.signal(Signal::SIGURG);
        ana.send(&format!("MSG n{i}"));
    }
    // Ana's PONG: all twenty were taken, so Luis's PONG comes after them.
    assert_eq!(ana.sync(), ["JOINED luis"]);
    let want: Vec<String> = (0..20).map(|i| format!("MSG ana n{i}")).collect();
    assert_eq!(luis.sync(), want);
    luis.send("NAMES");
    luis.expect("NAMES ana luis");
}

#[test]
fn sigterm_delivers_every_accepted_message_then_bye_shutdown() {
    const TOTAL: usize = 10_000;
    let mut chatd = Chatd::start(&[]);
    let mut receiver1 = chatd.join("receiver1");
    let mut receiver2 = chatd.join("receiver2");
    let mut sender = chatd.join("sender");
    let batch: String = (0..TOTAL).map(|i| format!("MSG in flight {i}\n")).collect();
    sender.send_raw(batch.as_bytes());
    assert!(sender.sync().is_empty());

    chatd.signal(Signal::SIGTERM);
    let messages = (0..TOTAL).map(|i| format!("MSG sender in flight {i}"));
    let bye = std::iter::once("BYE shutdown".to_string());
    for (client, joined) in
        [(&mut receiver1, &["JOINED receiver2", "JOINED sender"][..]), (&mut receiver2, &["JOINED sender"][..])]
    {
        let want: Vec<String> =
            joined.iter().map(|s| s.to_string()).chain(messages.clone()).chain(bye.clone()).collect();
        let got = client.recv_all();
        assert!(
            got == want,
            "{} lines instead of {}; first difference at {:?}; last lines {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b),
            &got[got.len().saturating_sub(3)..]
        );
    }
    assert_eq!(sender.recv_all(), ["BYE shutdown"]);
    assert_eq!(chatd.wait().code(), Some(0));
    chatd.expect_log("chatd: stopped\n");
}

#[test]
fn sigint_shuts_down_cleanly_with_bye_shutdown() {
    let mut chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let mut luis = chatd.join("Luis");
    luis.send("MSG last words");
    assert!(luis.sync().is_empty());

    chatd.signal(Signal::SIGINT);
    assert_eq!(ana.recv_all(), ["JOINED Luis", "MSG Luis last words", "BYE shutdown"]);
    assert_eq!(luis.recv_all(), ["BYE shutdown"]);
    assert_eq!(chatd.wait().code(), Some(0));
    chatd.expect_log("chatd: stopped\n");
}

#[test]
fn a_second_sigint_during_a_slow_shutdown_exits_at_once_with_130() {
    let mut chatd = Chatd::start(&["--shutdown-timeout", "30s", "--max-queue", "64M"]);
    // Never reads: once the kernel's buffers are full, its last lines cannot go.
    let stuck = chatd.join("stuck");
    let mut flooder = chatd.join("flooder");
    // About 16 MB: far more than the socket buffers between chatd and `stuck`
    // hold, far less than its queue.
    let text = "y".repeat(3990);
    let flood: String = (0..4096).map(|i| format!("MSG {i:05} {text}\n")).collect();
    flooder.send_raw(flood.as_bytes());
    assert!(flooder.sync().is_empty());

    chatd.signal(Signal::SIGINT);
    chatd.expect_log("shutting down");
    chatd.signal(Signal::SIGINT);
    let status = chatd.wait();
    assert_eq!(status.code(), Some(130), "{status:?}; log:\n{}", chatd.stderr());
    assert!(
        !chatd.stderr().contains("stopped"),
        "the first shutdown had finished; the test proves nothing:\n{}",
        chatd.stderr()
    );
    drop(stuck);
}

#[test]
fn a_silent_connection_times_out_and_frees_its_place() {
    let chatd = Chatd::start(&["--join-timeout", "500ms", "--max-clients", "1"]);
    let mut silent = chatd.connect();
    silent.expect_prefix("ERR TIMEOUT ");
    assert_eq!(silent.recv_all(), ["BYE timeout"]);
    silent.close_write();
    drop(silent);

    let mut member = chatd.join_when_a_place_is_free("after");
    // The one place is taken now: the limit is in force.
    let mut extra = Client::connect(chatd.addr);
    extra.expect_prefix("HELLO chatd/");
    extra.expect_prefix("ERR FULL ");
    assert_eq!(extra.recv_all(), ["BYE full"]);
    member.send("NAMES");
    member.expect("NAMES after");
    member.expect_quiet();
}

#[test]
fn flood_control_slows_a_fast_sender_but_drops_nothing() {
    const TOTAL: usize = 5000;
    let chatd = Chatd::start(&["--rate-limit", "2000", "--rate-burst", "100"]);
    let mut reader = chatd.join("reader");
    let mut flooder = chatd.join("flooder");
    reader.expect("JOINED flooder");

    let mut batch: String = (0..TOTAL).map(|i| format!("MSG n{i}\n")).collect();
    batch.push_str("PING flood\n");
    let mut out = flooder.stream().try_clone().unwrap();
    let writer = thread::spawn(move || out.write_all(batch.as_bytes()).expect("flooder sends"));
    // Nothing but the PONG: no error, no BYE.
    flooder.expect("PONG flood");
    writer.join().expect("flooder's writer");

    // The PONG came after every line before it was taken: the reader, which
    // has not read yet, is owed all of them, in order.
    let got = reader.sync();
    let want: Vec<String> = (0..TOTAL).map(|i| format!("MSG flooder n{i}")).collect();
    assert!(
        got == want,
        "{} lines instead of {TOTAL}; first difference at {:?}",
        got.len(),
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
    flooder.expect_quiet();
    flooder.send("MSG still here");
    reader.expect("MSG flooder still here");
}

#[test]
fn a_peer_that_vanishes_without_closing_is_declared_gone_as_timeout() {
    if let Some(why) = netns::unavailable(&[]) {
        netns::skip(&why);
        return;
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            netns::skip(&format!("cannot make a network namespace: {e}"));
            return;
        }
    };
    let chatd = NsChatd::start(&ns, &["--bind", "127.0.0.1:0", "--dead-peer-timeout", "3s"]);
    let (_watcher, watcher_lines) = bash_member(&ns.prefix(), chatd.port(), "watcher");
    let (_victim, _victim_lines) = bash_member(&ns.prefix(), chatd.port(), "victim");
    assert_eq!(next_line(&watcher_lines, "watcher"), "JOINED victim");

    let log = chatd.expect_log("victim joined from 127.0.0.1:");
    let victim_port: u16 = log
        .split("victim joined from 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port for the victim in the log:\n{log}"));
    assert_ne!(victim_port, chatd.port());

    // The victim's machine vanishes: not one more packet of its connection
    // gets through, either way.
    let rules = [
        vec!["nft", "add", "table", "inet", "mc"],
        vec!["nft", "add", "chain", "inet", "mc", "in", "{ type filter hook input priority 0; }"],
    ];
    for rule in &rules {
        ns.exec(rule).expect("nft in the namespace");
    }
    let port = victim_port.to_string();
    for dir in ["sport", "dport"] {
        ns.exec(&["nft", "add", "rule", "inet", "mc", "in", "tcp", dir, &port, "drop"])
            .expect("nft rule in the namespace");
    }

    assert_eq!(next_line(&watcher_lines, "watcher"), "LEFT victim timeout");
    chatd.expect_log("victim left (timeout)");
}

#[test]
fn flood_control_never_leaves_lines_it_has_read_waiting() {
    // A bucket of one line refilled fast: the sender is paused and resumed
    // thousands of times while its lines already sit in the server's buffer.
    const TOTAL: usize = 5000;
    let chatd = Chatd::start(&["--rate-limit", "100000", "--rate-burst", "1"]);
    let mut reader = chatd.join("reader");
    let mut sender = chatd.join("sender");
    reader.expect("JOINED sender");
    let mut batch: String = (0..TOTAL).map(|i| format!("MSG n{i}\n")).collect();
    batch.push_str("PING all-sent\n");
    sender.send_raw(batch.as_bytes());
    // A read timeout here means the server sat waiting for more input while
    // lines it had already read waited for flood control.
    sender.expect("PONG all-sent");
    let got = reader.sync();
    let want: Vec<String> = (0..TOTAL).map(|i| format!("MSG sender n{i}")).collect();
    assert!(got == want, "{} lines instead of {TOTAL}", got.len());
}
