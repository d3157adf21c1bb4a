//! A room with a password (`chatd --password-file`): `PASS` before `JOIN`,
//! wrong tries slowed down per address, the tools giving it from
//! `CHAT_PASSWORD` or `--password-file`, and never in plain text from
//! another computer unless the operator allows it (those last in network
//! namespaces, see `util::netns`; without root they say `SKIPPED`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

use crate::util::netns::{Lan, NsChatd, Proc};
use crate::util::tmux::{quote, Tmux};
use crate::util::{bin, Chatd, Client, TempDir, PATIENCE};

const PASSWORD: &str = "correct horse";

/// A password file readable by its owner alone, holding `content`.
fn password_file(content: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("password");
    let file = dir.path().join("password");
    std::fs::write(&file, content).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, file)
}

/// A chatd whose room has `PASSWORD`, with the file it came from.
fn locked_chatd(args: &[&str]) -> (Chatd, TempDir) {
    let (dir, file) = password_file(&format!("{PASSWORD}\n"));
    let file = file.to_str().unwrap().to_owned();
    (Chatd::start(&[&["--password-file", &file], args].concat()), dir)
}

/// The seconds an `ERR BAD_PASSWORD` says the next try waits (0 when it
/// says nothing of a wait).
fn announced_wait(refusal: &str) -> u64 {
    refusal
        .split_once("is answered in ")
        .and_then(|(_, rest)| rest.strip_suffix(" s"))
        .map_or(0, |secs| secs.parse().unwrap_or_else(|_| panic!("no wait in {refusal:?}")))
}

#[test]
fn the_right_password_lets_a_client_join() {
    let (chatd, _dir) = locked_chatd(&[]);
    assert!(chatd.startup.iter().any(|l| l.starts_with("the room has a password")), "{:?}", chatd.startup);
    assert!(!chatd.startup.iter().any(|l| l.contains(PASSWORD)), "the password was printed: {:?}", chatd.startup);
    let mut ana = chatd.connect();
    ana.send(&format!("pass {PASSWORD}"));
    ana.expect("OK PASS");
    ana.send("JOIN Ana");
    ana.expect("OK JOIN Ana");
    ana.send(&format!("PASS {PASSWORD}"));
    ana.expect_prefix("ERR ALREADY_JOINED ");
}

#[test]
fn a_wrong_password_is_refused_and_the_client_is_not_joined() {
    let (chatd, _dir) = locked_chatd(&[]);
    let mut watcher = joined_with_password(&chatd, "watcher");

    let mut eve = chatd.connect();
    eve.send("PASS correct horse ");
    eve.expect_prefix("ERR BAD_PASSWORD wrong password; check it");
    eve.send("JOIN Eve");
    eve.expect_prefix("ERR PASSWORD_REQUIRED ");
    eve.send("MSG let me in");
    eve.expect_prefix("ERR NOT_JOINED ");
    chatd.expect_log("127.0.0.1:");
    chatd.expect_log(": wrong password (1 failures from this address; the next try waits 1 s)");
    assert_eq!(watcher.sync(), Vec::<String>::new(), "the room saw something of Eve");
    assert!(!chatd.stderr().contains("correct horse"), "the log holds a password:\n{}", chatd.stderr());
}

#[test]
fn a_join_without_the_password_is_told_to_give_it_and_may_then_join() {
    let (chatd, _dir) = locked_chatd(&[]);
    let mut ana = chatd.connect();
    ana.send("JOIN Ana");
    let refusal = ana.expect_prefix("ERR PASSWORD_REQUIRED ");
    assert!(refusal.contains("send PASS <password>, then JOIN again"), "{refusal}");
    ana.send("PASS");
    ana.expect_prefix("ERR EMPTY ");
    ana.send(&format!("PASS {PASSWORD}"));
    ana.expect("OK PASS");
    ana.send("JOIN Ana");
    ana.expect("OK JOIN Ana");
}

#[test]
fn a_room_without_a_password_takes_any() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.connect();
    ana.send("PASS whatever");
    ana.expect("OK PASS");
    ana.send("JOIN Ana");
    ana.expect("OK JOIN Ana");
    let out = tool(&chatd, "chat-send").env("CHAT_PASSWORD", "whatever").args(["-n", "bot", "hi"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ana.sync(), ["JOINED bot", "MSG bot hi", "LEFT bot exit"]);
}

/// Sends a wrong password on `client`: the refusal, and when it was sent.
fn guess(client: &mut Client) -> (String, Instant) {
    let sent = Instant::now();
    client.send("PASS guess");
    (client.expect_prefix("ERR BAD_PASSWORD "), sent)
}

#[test]
fn repeated_failures_from_one_address_are_answered_more_and_more_slowly() {
    let (chatd, _dir) = locked_chatd(&[]);
    let mut eve = chatd.connect();
    let (first, _) = guess(&mut eve);
    assert_eq!(announced_wait(&first), 1, "{first}");
    let (second, sent) = guess(&mut eve);
    assert_eq!(announced_wait(&second), 2, "{second}");
    chatd.expect_log(": wrong password (2 failures from this address; the next try waits 2 s)");

    // Another connection from the same address buys no earlier try, and a
    // right password waits its turn too.
    let mut other = chatd.connect();
    other.send(&format!("PASS {PASSWORD}"));
    other.expect("OK PASS");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_secs(2), "answered after {waited:?}, 2 s announced");

    let (third, sent) = guess(&mut eve);
    let wait = announced_wait(&third);
    assert!(wait >= 2, "{third}");
    let (_, _) = guess(&mut eve);
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_secs(wait), "answered after {waited:?}, {wait} s announced");
    chatd.expect_log(": wrong password (4 failures from this address; the next try waits ");
}

#[test]
fn a_shutdown_does_not_wait_for_a_slowed_down_try() {
    // The shutdown timeout is shorter than the wait: a connection still
    // waiting when it runs out would get no goodbye at all.
    let (mut chatd, _dir) = locked_chatd(&["--shutdown-timeout", "1s"]);
    let mut eve = chatd.connect();
    guess(&mut eve);
    let (second, _) = guess(&mut eve);
    assert_eq!(announced_wait(&second), 2, "{second}");
    eve.send("PASS guess");
    chatd.signal(Signal::SIGTERM);
    eve.expect("BYE shutdown");
    assert!(chatd.wait().success(), "{}", chatd.stderr());
}

/// A client binary aimed at `chatd`, with no name, server or password from
/// the environment of whoever runs the tests.
fn tool(chatd: &Chatd, name: &str) -> Command {
    let mut command = Command::new(bin(name));
    command.env("CHAT_SERVER", chatd.addr.to_string()).env_remove("CHAT_NAME").env_remove("CHAT_PASSWORD");
    command.env("USER", "tester");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn chat_send_and_chat_tail_give_the_password_from_the_environment_or_a_file() {
    let (chatd, dir) = locked_chatd(&[]);
    let mut watcher = joined_with_password(&chatd, "watcher");

    let mut tail = tool(&chatd, "chat-tail");
    tail.args(["--name", "tail", "--count", "1", "--password-file"]).arg(dir.path().join("password"));
    let tail = tail.stdout(std::process::Stdio::piped()).spawn().unwrap();
    watcher.expect("JOINED tail");
    let out = tool(&chatd, "chat-send").env("CHAT_PASSWORD", PASSWORD).args(["-n", "bot", "hola"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tail = tail.wait_with_output().unwrap();
    assert!(tail.status.success());
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "* bot joined\nbot: hola\n");
    // The two leave in either order.
    let mut seen = watcher.sync();
    seen.sort();
    assert_eq!(seen, ["JOINED bot", "LEFT bot exit", "LEFT tail exit", "MSG bot hola"]);
}

#[test]
fn chat_send_without_the_right_password_exits_8_saying_how_to_give_it() {
    let (chatd, _dir) = locked_chatd(&[]);
    let wrong = tool(&chatd, "chat-send").env("CHAT_PASSWORD", "battery staple").args(["hi"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(8), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("wrong password"), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("CHAT_PASSWORD or with --password-file"), "{}", stderr(&wrong));
    let none = tool(&chatd, "chat-send").args(["hi"]).output().unwrap();
    assert_eq!(none.status.code(), Some(8), "{}", stderr(&none));
    assert!(stderr(&none).contains("PASSWORD_REQUIRED"), "{}", stderr(&none));
    let tail = tool(&chatd, "chat-tail").args(["--count", "1"]).output().unwrap();
    assert_eq!(tail.status.code(), Some(8), "{}", stderr(&tail));
    let chat = tool(&chatd, "chat").env("CHAT_PASSWORD", "battery staple").stdin(Stdio::null()).output().unwrap();
    assert_eq!(chat.status.code(), Some(8), "{}", stderr(&chat));
    assert!(stderr(&chat).contains("give the right one in CHAT_PASSWORD"), "{}", stderr(&chat));
    let missing = tool(&chatd, "chat-send").args(["--password-file", "/nonexistent/password", "hi"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(8), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("cannot read the password file /nonexistent/password"), "{}", stderr(&missing));
}

#[test]
fn chatd_refuses_an_empty_or_missing_password_file_and_warns_of_a_readable_one() {
    let (dir, empty) = password_file("\nsecond line\n");
    let (status, log) = Chatd::spawn(dir.path(), &["--password-file", empty.to_str().unwrap()]).exited();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("its first line it is empty; write the password on it"), "{log}");
    let missing = dir.path().join("missing");
    let (status, log) = Chatd::spawn(dir.path(), &["--password-file", missing.to_str().unwrap()]).exited();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot read the password file"), "{log}");

    let (_dir, file) = password_file(PASSWORD);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let chatd = Chatd::start(&["--password-file", file.to_str().unwrap()]);
    chatd.expect_log("can be read by other users (mode 644); chmod 600 it");
}

#[test]
fn chat_tail_gives_the_password_again_when_it_reconnects_and_stops_when_it_changed() {
    let (dir, file) = password_file(&format!("{PASSWORD}\n"));
    let file = file.to_str().unwrap().to_owned();
    let data = TempDir::new("chatd-data");
    let mut chatd = Chatd::start_in(data.path(), &["--password-file", &file]);
    let addr = chatd.addr.to_string();
    let mut tail = tool(&chatd, "chat-tail");
    tail.env("CHAT_PASSWORD", PASSWORD).args(["--name", "tail", "--retry-for", "30s"]);
    let mut tail = tail.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = crate::util::netns::lines_of(tail.stdout.take().unwrap());
    let next = || lines.recv_timeout(PATIENCE).expect("a line from chat-tail in time");
    chatd.expect_log("tail joined from 127.0.0.1:");
    let mut ana = passed(&chatd);
    ana.send("JOIN Ana");
    ana.expect("OK JOIN Ana");
    assert_eq!(next(), "* Ana joined");

    chatd.signal(Signal::SIGTERM);
    assert!(chatd.wait().success(), "{}", chatd.stderr());
    let chatd = Chatd::start_in(data.path(), &["--password-file", &file, "--bind", &addr]);
    assert_eq!(next(), "* Ana left (lost)");
    chatd.expect_log("tail joined from 127.0.0.1:");
    let mut bea = passed(&chatd);
    bea.send("JOIN Bea");
    bea.expect("OK JOIN Bea");
    assert_eq!(next(), "* Bea joined");

    // A new password while it was away: it stops, saying why.
    drop(chatd);
    std::fs::write(dir.path().join("password"), "another one\n").unwrap();
    let _chatd = Chatd::start_in(data.path(), &["--password-file", &file, "--bind", &addr]);
    let status = tail.wait().unwrap();
    let mut why = String::new();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut why).unwrap();
    assert_eq!(status.code(), Some(8), "{why}");
    assert!(why.contains("wrong password"), "{why}");
}

/// A connection from this computer that gave the right password.
fn passed(chatd: &Chatd) -> Client {
    let mut client = chatd.connect();
    client.send(&format!("PASS {PASSWORD}"));
    client.expect("OK PASS");
    client
}

/// A client that gave the password and joined as `name`.
fn joined_with_password(chatd: &Chatd, name: &str) -> Client {
    let mut client = passed(chatd);
    client.send(&format!("JOIN {name}"));
    client.expect(&format!("OK JOIN {name}"));
    client
}

#[test]
fn chat_at_a_terminal_asks_for_the_password_without_showing_it() {
    if !Tmux::available() {
        return;
    }
    let (chatd, _dir) = locked_chatd(&[]);
    let mut bob = passed(&chatd);
    bob.send("JOIN Bob");
    bob.expect("OK JOIN Bob");
    let state = TempDir::new("chat");
    let command = format!(
        "env -u CHAT_NAME -u CHAT_SERVER -u CHAT_PASSWORD XDG_STATE_HOME={} {} --server {}; echo EXITED:$?",
        quote(&state.path().display().to_string()),
        quote(&bin("chat").display().to_string()),
        chatd.addr,
    );
    let ana = Tmux::start(&command);
    ana.wait_for_line("name:");
    ana.type_line("Ana");
    ana.wait_for_line("this room has a password (Ctrl-D gives up)");
    ana.wait_for_line("password:");
    ana.type_line("a wrong guess");
    ana.wait_for("the refusal", |screen| screen.contains("wrong password; check it"));
    ana.type_line(PASSWORD);
    bob.expect("JOINED Ana");
    let screen = ana.wait_for_line("Ana>");
    assert!(!screen.contains("wrong guess") && !screen.contains(PASSWORD), "a password shows:\n{screen}");
    ana.type_line("/quit");
    ana.wait_for_line("EXITED:0");
}

/// Starts chatd on `host` with the room's password, and `args`.
fn locked_chatd_on(ns: &crate::util::netns::Netns, file: &std::path::Path, args: &[&str]) -> NsChatd {
    let file = file.to_str().unwrap();
    NsChatd::start(ns, &[&["--bind", "0.0.0.0:5000", "--password-file", file], args].concat())
}

#[test]
fn a_password_room_refuses_plain_text_from_another_computer_and_the_tools_give_it_over_tls() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (_dir, file) = password_file(PASSWORD);
    let chatd = locked_chatd_on(a.ns(), &file, &[]);
    let server = std::net::SocketAddr::from((a.addr(), chatd.port()));
    let mut eve = b.connect(server);
    eve.send(&format!("PASS {PASSWORD}"));
    let refusal = eve.expect_prefix("ERR TLS_REQUIRED ");
    assert!(refusal.contains("connect with TLS"), "{refusal}");
    eve.send("JOIN Eve");
    eve.expect_prefix("ERR TLS_REQUIRED ");
    assert!(!chatd.log().contains("wrong password"), "{}", chatd.log());

    // The tools ask for TLS first, then give the password.
    let send_to = |server: std::net::SocketAddr| {
        let mut send = b.command(bin("chat-send"));
        send.env_remove("CHAT_NAME").env("USER", "tester").env("CHAT_PASSWORD", PASSWORD);
        send.args(["--server", &server.to_string(), "hi"]);
        let mut send = Proc::spawn(send, "chat-send");
        (send.wait(), send.stderr())
    };
    let (status, stderr) = send_to(server);
    assert!(status.success(), "{stderr}");
    chatd.expect_joined_from("tester", b.addr());

    // Where the server offers no TLS, chat-send does not even send it: it
    // would cross the LAN in clear.
    let plain = locked_chatd_on(c.ns(), &file, &["--no-tls"]);
    let (status, stderr) = send_to(std::net::SocketAddr::from((c.addr(), plain.port())));
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("is not encrypted, so the room's password was not sent"), "{stderr}");
}

#[test]
fn allow_plain_lets_another_computer_join_with_the_password() {
    let Some(lan) = Lan::or_skip(2, &[]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    let (_dir, file) = password_file(PASSWORD);
    let chatd = locked_chatd_on(a.ns(), &file, &["--allow-plain"]);
    let server = std::net::SocketAddr::from((a.addr(), chatd.port()));
    let mut bea = b.connect(server);
    bea.send("JOIN Bea");
    bea.expect_prefix("ERR PASSWORD_REQUIRED ");
    bea.send("PASS wrong");
    bea.expect_prefix("ERR BAD_PASSWORD ");
    chatd.expect_log(&format!("chatd: {}:", b.addr()));
    chatd.expect_log(": wrong password (1 failures from this address; the next try waits 1 s)");
    bea.send(&format!("PASS {PASSWORD}"));
    bea.expect("OK PASS");
    bea.send("JOIN Bea");
    bea.expect("OK JOIN Bea");
    chatd.expect_joined_from("Bea", b.addr());
}
