//! The seed's acceptance test, repeatable: `chatd` on one computer of a LAN
//! and the clients on others, here network namespaces joined by a switch
//! (see `util::netns`). Then the LAN breaks the ways real ones do: a cable
//! pulled, a computer gone, the server restarted, a slow peer, a crowd.
//!
//! Every process is real (`chatd`, `chat-send`, `chat-tail`, and `chat` in a
//! tmux terminal whose server runs on the client's host); the line clients
//! are real sockets opened inside a host. Waits are on lines, chatd's log and
//! the screen, with deadlines. The only sleeps are the timing of a fault
//! itself: a talker's pace, a slow reader's naps, a connection left idle, a
//! person who speaks two seconds later. Without root, `ip`, `nft` (or tmux,
//! where `chat` is driven), each test says `SKIPPED: …` and returns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{setsockopt, sockopt};

use crate::util::netns::{Host, Lan, NsChatd, Proc};
use crate::util::tmux::{quote, Tmux};
use crate::util::{bin, TempDir, PATIENCE};

/// What the fault tests give `--dead-peer-timeout`: the bound chatd's
/// `--help` promises ("declared gone … within this time").
const DEAD_PEER: Duration = Duration::from_secs(3);

/// What a loaded machine may add to that bound between chatd's verdict and
/// the test reading it: scheduling, not detection.
const SCHEDULING: Duration = Duration::from_millis(750);

/// Starts chatd on `host` where a person would: all addresses, port 5000.
/// Returns it and what it tells people on other computers to type after
/// `chat --server`, which must be the host's LAN address; the clients are
/// given exactly that string.
fn start_chatd(host: &Host, args: &[&str]) -> (NsChatd, String) {
    let chatd = NsChatd::start(host.ns(), &[&["--bind", "0.0.0.0:5000"], args].concat());
    told(chatd, host)
}

/// Starts chatd as `start_chatd` does, with its history in `dir`, so that a
/// restart keeps the room's past.
fn start_chatd_in(host: &Host, dir: &Path, args: &[&str]) -> (NsChatd, String) {
    let chatd = NsChatd::start_in(host.ns(), dir, &[&["--bind", "0.0.0.0:5000"], args].concat());
    told(chatd, host)
}

/// Checks where a new chatd listens and returns what it tells people to type.
fn told(chatd: NsChatd, host: &Host) -> (NsChatd, String) {
    assert_eq!(chatd.addr, "0.0.0.0:5000".parse::<SocketAddr>().unwrap());
    let hint = chatd.next_stdout_line();
    let server = hint
        .strip_prefix("from another computer: chat --server ")
        .unwrap_or_else(|| panic!("chatd's second line was {hint:?}"))
        .to_owned();
    assert_eq!(server, format!("{}:5000", host.addr()), "chatd's hint names another address");
    (chatd, server)
}

/// A client binary on `host`, told `--server SERVER`, with nothing from the
/// environment of whoever runs the tests.
fn tool(host: &Host, name: &str, server: &str) -> Command {
    let mut command = host.command(bin(name));
    command.env_remove("CHAT_NAME").env_remove("CHAT_SERVER").env("USER", "tester").args(["--server", server]);
    command
}

/// Starts `chat-tail --name NAME` on `host` and waits until chatd logs that
/// it joined from that host.
fn start_tail(chatd: &NsChatd, host: &Host, server: &str, name: &str) -> Proc {
    let mut command = tool(host, "chat-tail", server);
    command.args(["--name", name]);
    let tail = Proc::spawn(command, &format!("chat-tail {name}"));
    chatd.expect_joined_from(name, host.addr());
    tail
}

/// Runs `chat-send --name NAME TEXT` on `host`; it must exit 0, which means
/// the server confirmed the message.
fn chat_send(host: &Host, server: &str, name: &str, text: &str) {
    let mut command = tool(host, "chat-send", server);
    command.args(["--name", name, text]);
    let mut send = Proc::spawn(command, &format!("chat-send {name}"));
    let status = send.wait();
    assert!(status.success(), "chat-send {name}: {status}; stderr:\n{}", send.stderr());
}

/// `chat ARGS` on `host`, in a terminal whose tmux server runs on that host,
/// with its history in `state`; the shell then shows `EXITED:<status>`.
fn chat_on(host: &Host, server: &str, state: &Path, args: &str) -> Tmux {
    let command = format!(
        "env -u CHAT_NAME -u CHAT_SERVER XDG_STATE_HOME={0} XDG_DATA_HOME={0} {1} --server {2} {args}; echo EXITED:$?",
        quote(&state.display().to_string()),
        quote(&bin("chat").display().to_string()),
        quote(server),
    );
    host.within(|| Tmux::start(&command))
}

/// Reads `tail`'s lines until one is `last` (at most `limit` lines).
fn tail_until(tail: &Proc, last: &str, limit: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..limit {
        let line = tail.next_line();
        let done = line == last;
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("no {last:?} in {limit} lines; the last ones: {:?}", &lines[lines.len().saturating_sub(5)..]);
}

#[test]
fn two_hosts_talk_both_ways_with_chat_send_chat_tail_and_chat() {
    let Some(lan) = Lan::or_skip(3, &["tmux"]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server) = start_chatd(a, &[]);

    // On B: a chat-tail, and a person at `chat` who types her name.
    let b_tail = start_tail(&chatd, b, &server, "b-tail");
    let state = TempDir::new("lan-chat");
    let bea = chat_on(b, &server, state.path(), "");
    bea.wait_for_line("name:");
    bea.type_line("Bea");
    // Connected with exactly what chatd told people to type.
    bea.wait_for_line(&format!("* you are Bea on {server}; /help lists the commands"));
    bea.wait_for_line("Bea>");
    chatd.expect_joined_from("Bea", b.addr());
    b_tail.expect_line("* Bea joined");

    // On C: a chat-tail to see what B says.
    let c_tail = start_tail(&chatd, c, &server, "c-tail");
    b_tail.expect_line("* c-tail joined");
    bea.wait_for_timed_line("* c-tail joined");

    for round in 1..=3 {
        // C to B: chat-send's line reaches B's chat-tail and B's screen.
        let from_c = format!("round {round} from C");
        chat_send(c, &server, "Cal", &from_c);
        chatd.expect_joined_from("Cal", c.addr());
        let cal = ["* Cal joined".to_owned(), format!("Cal: {from_c}"), "* Cal left (exit)".to_owned()];
        for tail in [&b_tail, &c_tail] {
            for line in &cal {
                tail.expect_line(line);
            }
        }
        bea.wait_for_timed_line(&format!("Cal: {from_c}"));

        // B to C: what B types reaches C's chat-tail (and B's own).
        let from_b = format!("round {round} from B");
        bea.type_line(&from_b);
        c_tail.expect_line(&format!("Bea: {from_b}"));
        b_tail.expect_line(&format!("Bea: {from_b}"));
    }

    bea.type_line("/quit");
    bea.wait_for_line("EXITED:0");
    c_tail.expect_line("* Bea left (exit)");
    b_tail.expect_line("* Bea left (exit)");
    let log = chatd.log();
    assert!(!log.contains(&format!("from {}:", a.addr())), "a client came from the server's host:\n{log}");
}

/// Starts the fault tests' room: chatd on `a` with a short dead-peer bound,
/// and `victim`, a chat-tail on `v`. Returns chatd, the server's address,
/// the victim and the address chatd saw it at.
fn room_with_victim(a: &Host, v: &Host) -> (NsChatd, String, Proc, SocketAddr) {
    let bound = format!("{}s", DEAD_PEER.as_secs());
    let (chatd, server) = start_chatd(a, &["--dead-peer-timeout", &bound]);
    let victim = start_tail(&chatd, v, &server, "victim");
    let victim_addr = chatd.expect_joined_from("victim", v.addr());
    (chatd, server, victim, victim_addr)
}

#[test]
fn a_cable_pulled_from_an_idle_member_is_found_within_the_bound_and_the_room_goes_on() {
    let Some(lan) = Lan::or_skip(4, &["nft"]) else { return };
    let (a, b, c, v) = (lan.host(0), lan.host(1), lan.host(2), lan.host(3));
    let (chatd, server, victim, victim_addr) = room_with_victim(a, v);
    let addr: SocketAddr = server.parse().unwrap();
    let mut ana = b.join(addr, "ana");
    let mut bo = c.join(addr, "bo");
    let c_tail = start_tail(&chatd, c, &server, "c-tail");
    assert_eq!(ana.sync(), ["JOINED bo", "JOINED c-tail"]);
    assert_eq!(bo.sync(), ["JOINED c-tail"]);
    ana.send("MSG last words before the cut");
    victim.expect_line("* ana joined");
    victim.expect_line("* bo joined");
    victim.expect_line("* c-tail joined");
    victim.expect_line("ana: last words before the cut");
    bo.expect("MSG ana last words before the cut");
    c_tail.expect_line("ana: last words before the cut");

    v.cut_cable();
    let cut = Instant::now();
    // The rest of the room goes on at once, while the victim is dead and
    // still a member: two members talk, a PING is answered, and all of it
    // comes before the victim's LEFT (were the room waiting for the victim,
    // the LEFT would come first).
    bo.send("MSG is the victim still there?");
    ana.expect("MSG bo is the victim still there?");
    ana.send("MSG no idea");
    bo.expect("MSG ana no idea");
    assert_eq!(ana.sync(), Vec::<String>::new(), "ana got more than the PONG");
    bo.send("NAMES");
    bo.expect("NAMES victim ana bo c-tail");
    eprintln!("the room talked for {:?} after the cut", cut.elapsed());
    c_tail.expect_line("bo: is the victim still there?");
    c_tail.expect_line("ana: no idea");

    ana.expect("LEFT victim timeout");
    let found = cut.elapsed();
    eprintln!("the victim was declared gone {found:?} after its cable was pulled");
    bo.expect("LEFT victim timeout");
    c_tail.expect_line("* victim left (timeout)");
    chatd.expect_log(&format!("chatd: victim left (timeout) from {victim_addr}\n"));
    assert!(found <= DEAD_PEER + SCHEDULING, "declared gone after {found:?}; the bound is {DEAD_PEER:?}");

    // The name is free again, for someone on another computer.
    chat_send(b, &server, "victim", "back, from another computer");
    chatd.expect_joined_from("victim", b.addr());
    assert_eq!(ana.sync(), ["JOINED victim", "MSG victim back, from another computer", "LEFT victim exit"]);
}

#[test]
fn a_cable_pulled_from_an_idle_member_is_found_within_the_bound_when_the_room_speaks_later() {
    let Some(lan) = Lan::or_skip(3, &["nft"]) else { return };
    let (a, b, v) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server, victim, victim_addr) = room_with_victim(a, v);
    let addr: SocketAddr = server.parse().unwrap();
    let mut ana = b.join(addr, "ana");
    ana.send("MSG anyone there?");
    victim.expect_line("* ana joined");
    victim.expect_line("ana: anyone there?");
    // Idle: no packet either way for a while, so that even a delayed ACK
    // from the victim has gone out.
    thread::sleep(Duration::from_millis(500));

    v.cut_cable();
    let cut = Instant::now();
    // Two seconds later, at a person's pace, ana speaks again: from then on
    // the server has a message for the victim that is never acknowledged.
    thread::sleep(DEAD_PEER * 2 / 3);
    ana.send("MSG hello?");
    let line = ana.recv();
    let found = cut.elapsed();
    eprintln!("{line:?} {found:?} after the victim's cable was pulled");
    assert_eq!(line, "LEFT victim timeout");
    chatd.expect_log(&format!("chatd: victim left (timeout) from {victim_addr}\n"));
    assert!(
        found <= DEAD_PEER + SCHEDULING,
        "declared gone after {found:?}; the bound is {DEAD_PEER:?} (the victim's cable was pulled while it was \
         idle, and it was sent a message {:?} later)",
        DEAD_PEER * 2 / 3
    );
}

#[test]
fn lines_piped_into_chat_send_on_one_computer_reach_another_as_they_are_written() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server) = start_chatd(a, &[]);
    let tail = start_tail(&chatd, b, &server, "b-tail");
    // As in `tail -f app.log | grep --line-buffered ERROR | chat-send -n logbot`.
    let mut command = tool(c, "chat-send", &server);
    command.args(["--name", "logbot"]);
    let mut logbot = Proc::spawn(command, "chat-send logbot");
    chatd.expect_joined_from("logbot", c.addr());
    tail.expect_line("* logbot joined");
    let mut log = logbot.take_stdin();
    for line in ["ERROR disk full", "ERROR disk still full"] {
        log.write_all(format!("{line}\n").as_bytes()).expect("chat-send takes input");
        log.flush().unwrap();
        let shown = tail.line_within(PATIENCE);
        assert_eq!(
            shown.as_deref(),
            Some(format!("logbot: {line}").as_str()),
            "a line written to chat-send on C did not reach chat-tail on B within {PATIENCE:?}, while chat-send \
             waited for more input"
        );
    }
    drop(log);
    let status = logbot.wait();
    assert!(status.success(), "chat-send: {status}; stderr:\n{}", logbot.stderr());
    tail.expect_line("* logbot left (exit)");
}

/// Message number `i` of a stream, as typed.
fn numbered(i: usize) -> String {
    format!("{i:06} {}", "x".repeat(40))
}

#[test]
fn a_cable_pulled_mid_stream_is_found_and_nobody_else_loses_a_message() {
    // Lines a second the talker types, and how many at most (a bound, not
    // a plan: it stops soon after the victim is declared gone).
    const PACE: usize = 500;
    const MOST: usize = PACE * 20;
    let Some(lan) = Lan::or_skip(3, &["nft"]) else { return };
    let (a, b, v) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server, victim, victim_addr) = room_with_victim(a, v);
    let addr: SocketAddr = server.parse().unwrap();
    let mut watcher = b.join(addr, "watcher");
    let reader = start_tail(&chatd, b, &server, "reader");
    let mut talker = b.join(addr, "talker");
    assert_eq!(watcher.sync(), ["JOINED reader", "JOINED talker"]);
    reader.expect_line("* talker joined");

    // The talker sends a steady stream, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut out = talker.stream().try_clone().unwrap();
    let stopped = Arc::clone(&stop);
    let typist = thread::spawn(move || {
        let mut sent = 0;
        while sent < MOST && !stopped.load(Ordering::SeqCst) {
            let lines: String = (sent..sent + 5).map(|i| format!("MSG {}\n", numbered(i))).collect();
            out.write_all(lines.as_bytes()).expect("the talker sends");
            sent += 5;
            thread::sleep(Duration::from_secs(1) * 5 / PACE as u32);
        }
        out.write_all(b"MSG end\nPING all-sent\n").expect("the talker sends");
        sent
    });
    // The watcher reads everything, noting when each line came.
    let (seen, lines) = mpsc::channel();
    let watching = thread::spawn(move || {
        for _ in 0..MOST + 10 {
            let line = watcher.recv();
            let end = line == "MSG talker end";
            seen.send((Instant::now(), line)).unwrap();
            if end {
                break;
            }
        }
        watcher
    });

    // Mid-stream: the victim has read some of it.
    for name in ["watcher", "reader", "talker"] {
        victim.expect_line(&format!("* {name} joined"));
    }
    for i in 0..50 {
        victim.expect_line(&format!("talker: {}", numbered(i)));
    }
    v.cut_cable();
    let cut = Instant::now();

    let mut next = 0;
    let mut left = None;
    // Messages that reached the watcher while the victim was dead and still
    // a member: after the cut, before the victim's LEFT.
    let mut while_dead = 0;
    let mut last_at = cut;
    let mut longest_pause = Duration::ZERO;
    loop {
        let (at, line) = lines.recv_timeout(PATIENCE).expect("the watcher reads");
        if line == "MSG talker end" {
            break;
        }
        if let Some(reason) = line.strip_prefix("LEFT victim ") {
            assert_eq!(left, None, "the victim left twice");
            left = Some((at.duration_since(cut), reason.to_owned(), next));
            continue;
        }
        assert_eq!(line, format!("MSG talker {}", numbered(next)), "the watcher lost a message");
        if at > cut {
            longest_pause = longest_pause.max(at.duration_since(last_at));
            last_at = at;
            if left.is_none() {
                while_dead += 1;
            }
        }
        next += 1;
        // The stream goes on a while after the victim is gone, then stops.
        if left.as_ref().is_some_and(|(_, _, at)| next == at + PACE / 2) {
            stop.store(true, Ordering::SeqCst);
        }
    }
    let sent = typist.join().expect("the typist");
    assert_eq!(next, sent, "the watcher got {next} of {sent} messages");

    let (found, reason, at) = left.expect("the victim was never declared gone");
    eprintln!(
        "the victim left ({reason}) {found:?} after its cable was pulled; meanwhile the watcher got \
         {while_dead} messages, with at most {longest_pause:?} between two"
    );
    assert!(
        reason == "timeout" || reason == "slow",
        "the victim left as {reason:?}, neither timeout (dead peer found) nor slow (queue full first)"
    );
    chatd.expect_log(&format!("chatd: victim left ({reason}) from {victim_addr}\n"));
    assert!(found <= DEAD_PEER + SCHEDULING, "declared gone ({reason}) after {found:?}; the bound is {DEAD_PEER:?}");
    // The room did not wait for the victim's verdict: while it was dead,
    // the stream went on. (A room held up by it would deliver next to
    // nothing before its LEFT, then all at once after.)
    assert!(
        while_dead >= PACE / 2,
        "only {while_dead} messages reached the watcher in the {found:?} between the cut and the victim's LEFT \
         ({reason}); the longest pause was {longest_pause:?}"
    );

    // The other reader, a chat-tail, lost nothing either.
    let mut want: Vec<String> = (0..sent).map(|i| format!("talker: {}", numbered(i))).collect();
    want.insert(at, format!("* victim left ({reason})"));
    want.push("talker: end".into());
    let got = tail_until(&reader, "talker: end", sent + 2);
    assert!(
        got == want,
        "chat-tail reader: {} lines instead of {}; first difference at {:?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(g, w)| g != w)
    );
    // Everything the talker sent was taken, without a word of complaint.
    let lines = [format!("LEFT victim {reason}"), "PONG all-sent".into()];
    for line in lines {
        talker.expect(&line);
    }
    let mut watcher = watching.join().expect("the watcher");
    watcher.expect_quiet();

    // The name is free again.
    chat_send(b, &server, "victim", "back");
    assert_eq!(watcher.sync(), ["JOINED victim", "MSG victim back", "LEFT victim exit"]);
}

#[test]
fn a_client_computer_that_vanishes_with_its_namespace_is_declared_gone() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, v) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server, mut victim, victim_addr) = room_with_victim(a, v);
    let addr: SocketAddr = server.parse().unwrap();
    let mut ana = b.join(addr, "ana");
    ana.send("MSG still with us?");
    victim.expect_line("* ana joined");
    victim.expect_line("ana: still with us?");

    // Its cable goes with its namespace; then whatever ran there dies too,
    // with no way left to say goodbye.
    v.delete();
    let gone = Instant::now();
    victim.kill_and_reap();
    let line = ana.recv();
    let found = gone.elapsed();
    eprintln!("{line:?} {found:?} after the victim's computer was deleted");
    let reason = line.strip_prefix("LEFT victim ").unwrap_or_else(|| panic!("ana got {line:?}"));
    assert!(reason == "timeout" || reason == "lost", "the victim left as {reason:?}");
    chatd.expect_log(&format!("chatd: victim left ({reason}) from {victim_addr}\n"));
    assert!(found <= DEAD_PEER + SCHEDULING, "declared gone ({reason}) after {found:?}; the bound is {DEAD_PEER:?}");

    chat_send(b, &server, "victim", "back, from another computer");
    assert_eq!(ana.sync(), ["JOINED victim", "MSG victim back, from another computer", "LEFT victim exit"]);
}

#[test]
fn a_client_killed_with_sigkill_on_its_own_computer_leaves_as_lost() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, v) = (lan.host(0), lan.host(1), lan.host(2));
    // The default dead-peer bound, a minute: a LEFT within seconds is no
    // timeout but the victim's own kernel closing its connection.
    let (chatd, server) = start_chatd(a, &[]);
    let mut victim = start_tail(&chatd, v, &server, "victim");
    let victim_addr = chatd.expect_joined_from("victim", v.addr());
    let addr: SocketAddr = server.parse().unwrap();
    let mut ana = b.join(addr, "ana");
    ana.send("MSG still with us?");
    victim.expect_line("* ana joined");
    victim.expect_line("ana: still with us?");

    let status = victim.kill_and_reap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    ana.expect("LEFT victim lost");
    chatd.expect_log(&format!("chatd: victim left (lost) from {victim_addr}\n"));

    // Back from the same computer, as a person would after a crash.
    chat_send(v, &server, "victim", "back again");
    chatd.expect_joined_from("victim", v.addr());
    assert_eq!(ana.sync(), ["JOINED victim", "MSG victim back again", "LEFT victim exit"]);
}

#[test]
fn a_restarted_server_is_ridden_out_by_chat_and_chat_tail_on_another_computer() {
    let Some(lan) = Lan::or_skip(2, &["tmux"]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    let data = TempDir::new("lan-chatd-data");
    let (mut chatd, server) = start_chatd_in(a, data.path(), &[]);
    let tail = start_tail(&chatd, b, &server, "b-tail");
    let state = TempDir::new("lan-chat");
    let bea = chat_on(b, &server, state.path(), "--name Bea");
    bea.wait_for_line("Bea>");
    chatd.expect_joined_from("Bea", b.addr());
    tail.expect_line("* Bea joined");
    bea.type_line("before the restart");
    tail.expect_line("Bea: before the restart");

    chatd.signal(Signal::SIGTERM);
    let status = chatd.wait();
    assert_eq!(status.code(), Some(0), "chatd: {status}; log:\n{}", chatd.log());
    chatd.expect_log("chatd: stopped\n");
    tail.expect_stderr(&format!("chat-tail: {server}: the server shut down; reconnecting\n"));
    bea.wait_for_line("* connection lost; reconnecting…");
    bea.type_line("while it was down");

    // chatd again, on the same port and history: both come back by themselves,
    // and what Bea typed meanwhile arrives once.
    let (chatd, again) = start_chatd_in(a, data.path(), &[]);
    assert_eq!(again, server);
    bea.wait_for_line(&format!("* reconnected to {server}, nothing missed"));
    // The members of the last run left as it ended; then Bea is back.
    for line in ["* Bea left (lost)", "* Bea joined", "Bea: while it was down"] {
        tail.expect_line(line);
    }
    chat_send(b, &server, "Ben", "after the restart");
    chatd.expect_joined_from("Ben", b.addr());
    for line in ["* Ben joined", "Ben: after the restart", "* Ben left (exit)"] {
        tail.expect_line(line);
    }
    bea.wait_for_timed_line("Ben: after the restart");
    let stderr = tail.stderr();
    assert!(stderr.contains("reconnected") && !stderr.contains("missed"), "chat-tail's stderr:\n{stderr}");
}

/// Message number `i` of the slow-peer test's stream: 100 bytes of text.
fn hundred(i: usize) -> String {
    format!("{i:06} {}", "y".repeat(93))
}

#[test]
fn a_slow_reader_that_keeps_up_on_average_stays_and_one_that_stops_is_dropped() {
    // 2,000 lines of 100 bytes a second: 224 KB a second on the wire. A
    // reader that reads once a second is about that far behind when it
    // wakes: within the server's queue for it (--max-queue 512K) plus the
    // kernel's buffers, which one that stopped reading outgrows in a few
    // seconds (here about five, some 1.1 MB). The stream goes on until the
    // stopped one has been dropped, and a second more; at most MOST_SECONDS.
    const PACE: usize = 2000;
    const WIRE: usize = "MSG talker \n".len() + 100;
    const MOST_SECONDS: usize = 12;
    // Both readers' receive buffers, fixed as on a small device. Left to
    // Linux's autotuning, the kernel's buffers for one connection can grow
    // to megabytes, differently from run to run: a stopped reader would
    // then be dropped after anything from two to many seconds.
    const RECEIVE_BUFFER: usize = 16 * 1024;
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server) = start_chatd(a, &["--max-queue", "512K"]);
    let addr: SocketAddr = server.parse().unwrap();
    let mut watcher = c.join(addr, "watcher");
    let mut slowpoke = b.join(addr, "slowpoke");
    let mut stopper = c.join(addr, "stopper");
    for reader in [&slowpoke, &stopper] {
        setsockopt(reader.stream(), sockopt::RcvBuf, &RECEIVE_BUFFER).expect("SO_RCVBUF");
    }
    let mut talker = b.join(addr, "talker");
    assert_eq!(watcher.sync(), ["JOINED slowpoke", "JOINED stopper", "JOINED talker"]);
    // Nothing more is on its way to the slowpoke: from here on it reads its
    // socket itself. The stopper reads nothing from here on.
    assert_eq!(slowpoke.sync(), ["JOINED stopper", "JOINED talker"]);

    // The talker sends a tenth of a second's lines every 100 ms, until told.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let typed = Arc::new(AtomicUsize::new(0));
    let typing = Arc::clone(&typed);
    let mut out = talker.stream().try_clone().unwrap();
    let typist = thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        for tenth in 0..MOST_SECONDS * 10 {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            let lines: String = (sent..sent + PACE / 10).map(|i| format!("MSG {}\n", hundred(i))).collect();
            out.write_all(lines.as_bytes()).expect("the talker sends");
            sent += PACE / 10;
            typing.store(sent, Ordering::SeqCst);
            let due = Duration::from_millis(100) * (tenth as u32 + 1);
            thread::sleep(due.saturating_sub(started.elapsed()));
        }
        out.write_all(b"MSG end\nPING all-sent\n").expect("the talker sends");
        sent
    });
    // The slowpoke wakes once a second and reads a second and a half's worth
    // of the stream (waiting for it if need be): slow, but on average it
    // keeps up.
    let mut socket = slowpoke.stream().try_clone().unwrap();
    let reading = thread::spawn(move || {
        let helping = PACE * WIRE * 3 / 2;
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        // How far behind the talker it was when it woke, at most.
        let mut behind = 0;
        for _ in 0..MOST_SECONDS + 10 {
            thread::sleep(Duration::from_secs(1));
            behind = behind.max((typed.load(Ordering::SeqCst) * WIRE).saturating_sub(got.len()));
            let mut this_time = 0;
            while this_time < helping {
                let room = buf.len().min(helping - this_time);
                match socket.read(&mut buf[..room]) {
                    Ok(0) => panic!("the slowpoke was disconnected; it got:\n{}", tail_of(&got)),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        this_time += n;
                    }
                    Err(e) => panic!("the slowpoke's socket: {e}; it got:\n{}", tail_of(&got)),
                }
                if got.ends_with(b"MSG talker end\n") {
                    return (got, behind);
                }
            }
        }
        panic!("the slowpoke never got the end of the stream; it got:\n{}", tail_of(&got));
    });

    // The watcher reads all the time.
    let mut stopper_left_at = None;
    let mut next = 0;
    for _ in 0..=PACE * MOST_SECONDS + 1 {
        let line = watcher.recv();
        if line == "MSG talker end" {
            break;
        }
        if line == "LEFT stopper slow" {
            assert_eq!(stopper_left_at, None, "the stopper left twice");
            stopper_left_at = Some(next);
            continue;
        }
        assert_eq!(line, format!("MSG talker {}", hundred(next)), "the watcher lost a message");
        next += 1;
        if stopper_left_at.is_some_and(|at| next == at + PACE) {
            stop.store(true, Ordering::SeqCst);
        }
    }
    let sent = typist.join().expect("the typist");
    assert_eq!(next, sent, "the watcher got {next} of {sent} messages");
    let left_at = stopper_left_at
        .unwrap_or_else(|| panic!("the stopper was never dropped, after {sent} messages ({} bytes)", sent * WIRE));
    chatd.expect_log("chatd: stopper left (slow) from ");
    // Everything the talker sent was taken, without a word of complaint.
    talker.expect("LEFT stopper slow");
    talker.expect("PONG all-sent");

    // The slowpoke got every line, in order, and was never dropped.
    let (got, behind) = reading.join().expect("the slowpoke");
    eprintln!("the stopper was dropped after {left_at} of {sent} messages; the slowpoke was {behind} bytes behind");
    let text = String::from_utf8(got).expect("UTF-8 from chatd");
    let mut want: Vec<String> = (0..sent).map(|i| format!("MSG talker {}", hundred(i))).collect();
    want.insert(left_at, "LEFT stopper slow".into());
    want.push("MSG talker end".into());
    let got: Vec<&str> = text.lines().collect();
    assert!(
        got == want,
        "the slowpoke: {} lines instead of {}; first difference at {:?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(g, w)| g != w)
    );
    assert!(!chatd.log().contains("slowpoke left"), "chatd's log:\n{}", chatd.log());
    // And it really was behind, by more than its socket's buffers hold: so
    // part of what it was owed waited in the server's queue.
    assert!(behind > 4 * RECEIVE_BUFFER, "the slowpoke was only {behind} bytes behind");
    // The stopper's connection is closed, after a gap-free part of the room
    // and perhaps BYE slow; only its very last line may be cut short.
    let got = stopper.expect_dropped_as_slow("stopper", "talker", hundred);
    assert!(got <= left_at, "the stopper got {got} messages but was dropped after {left_at}");
    watcher.expect_quiet();
}

/// The last few lines of `bytes`, for a failure's message.
fn tail_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}

#[test]
fn one_computer_cannot_take_every_place_but_this_one_can() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (chatd, server) = start_chatd(a, &["--max-per-address", "2", "--max-clients", "6"]);
    let addr: SocketAddr = server.parse().unwrap();
    let _first = b.join(addr, "b1");
    let _second = b.join(addr, "b2");
    let mut third = b.connect(addr);
    let refusal = third.expect_prefix("ERR FULL ");
    assert!(refusal.contains(&format!("too many connections from {}", b.addr())), "{refusal}");
    assert!(refusal.contains("2 at most from one computer"), "{refusal}");
    assert_eq!(third.expect_closed_after("BYE full"), ["BYE full"]);
    chatd.expect_log(&format!("turned away: too many connections from {}", b.addr()));

    // Another computer still gets in, and so does the server's own, past
    // the limit of one: loopback is not counted.
    let _other = c.join(addr, "c1");
    let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut own: Vec<_> = (0..3).map(|i| a.join(local, &format!("a{i}"))).collect();
    assert_eq!(own[2].sync(), Vec::<String>::new());
    // The client limit holds for everyone.
    let mut seventh = a.connect(local);
    let refusal = seventh.expect_prefix("ERR FULL ");
    assert!(refusal.contains("server full (6 connections)"), "{refusal}");
    own.clear();
}

#[test]
fn hundreds_of_joins_from_one_computer_at_once_are_all_served_and_names_stay_unique() {
    const DISTINCT: usize = 300;
    const PAIRS: usize = 20;
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    // Every connection from one computer: past the default limit for one.
    let (chatd, server) = start_chatd(a, &["--max-per-address", "400"]);
    let addr: SocketAddr = server.parse().unwrap();
    let mut ana = c.join(addr, "ana");

    // 300 names, and 20 asked for twice: spelled the same, or in another case.
    let mut wanted: Vec<String> = (0..DISTINCT).map(|i| format!("user{i:03}")).collect();
    for i in 0..PAIRS {
        wanted.push(format!("pair{i:02}"));
        wanted.push(if i % 2 == 0 { format!("pair{i:02}") } else { format!("PAIR{i:02}") });
    }
    // Every connection is made at once from B; once all are, all JOIN at once.
    let connected = (Mutex::new(0), Condvar::new());
    let answers: Vec<(String, BufReader<TcpStream>, String)> = b.within(|| {
        thread::scope(|scope| {
            let threads: Vec<_> = wanted
                .iter()
                .map(|name| {
                    let connected = &connected;
                    let total = wanted.len();
                    scope.spawn(move || {
                        let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect from B");
                        stream.set_read_timeout(Some(PATIENCE)).unwrap();
                        let mut reader = BufReader::new(stream);
                        let hello = read_line(&mut reader);
                        assert!(hello.starts_with("HELLO chatd/"), "{name} got {hello:?}");
                        let (count, all) = connected;
                        let mut count = count.lock().unwrap();
                        *count += 1;
                        all.notify_all();
                        let (count, waited) = all.wait_timeout_while(count, PATIENCE, |n| *n < total).unwrap();
                        assert!(!waited.timed_out(), "only {} of {total} connected", *count);
                        drop(count);
                        reader.get_ref().write_all(format!("JOIN {name}\n").as_bytes()).expect("JOIN");
                        let answer = read_line(&mut reader);
                        (name.clone(), reader, answer)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    });

    let mut members = Vec::new();
    for (name, _, answer) in &answers[..DISTINCT] {
        assert_eq!(answer, &format!("OK JOIN {name}"));
        members.push(name.clone());
    }
    for pair in answers[DISTINCT..].chunks(2) {
        let oks: Vec<&str> = pair.iter().filter_map(|(_, _, answer)| answer.strip_prefix("OK JOIN ")).collect();
        let taken = pair.iter().filter(|(_, _, answer)| answer.starts_with("ERR NAME_TAKEN ")).count();
        assert!(
            oks.len() == 1 && taken == 1,
            "{:?} and {:?} got {:?} and {:?}",
            pair[0].0,
            pair[1].0,
            pair[0].2,
            pair[1].2
        );
        members.push(oks[0].to_owned());
    }
    let mut sorted = members.clone();
    sorted.sort();

    // Ana, on C, saw each of them join once.
    let mut joined: Vec<String> = ana
        .sync()
        .into_iter()
        .map(|line| line.strip_prefix("JOINED ").unwrap_or_else(|| panic!("ana got {line:?}")).to_owned())
        .collect();
    joined.sort();
    assert_eq!(joined, sorted, "the JOINED lines ana got");
    // And the room lists each once.
    ana.send("NAMES");
    let names = ana.recv();
    let mut listed: Vec<&str> = names.strip_prefix("NAMES ").expect("a NAMES line").split(' ').collect();
    assert_eq!(listed.first(), Some(&"ana"));
    listed.remove(0);
    listed.sort_unstable();
    assert_eq!(listed, sorted, "NAMES");
    let log = chatd.log();
    let from_b = format!(" joined from {}:", b.addr());
    assert_eq!(log.lines().filter(|line| line.contains(&from_b)).count(), DISTINCT + PAIRS, "chatd's log:\n{log}");
    drop(answers);
}

/// One line from a raw connection, without its `\n`.
fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line from chatd");
    assert!(line.ends_with('\n'), "the connection ended after {line:?}");
    line.pop();
    line
}
