//! chat-send and chat-tail as a shell uses them: real processes, real pipes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use crate::util::{bin, Chatd, Client, PATIENCE};

/// A client binary aimed at `chatd`, with no name or server from the
/// environment of whoever runs the tests.
fn tool(chatd: &Chatd, name: &str) -> Command {
    aimed_at(chatd, Command::new(bin(name)))
}

fn aimed_at(chatd: &Chatd, mut command: Command) -> Command {
    command.env("CHAT_SERVER", chatd.addr.to_string()).env_remove("CHAT_NAME").env("USER", "tester");
    command
}

fn run_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `chat-tail ARGS` and waits until `watcher` has seen it join.
fn start_tail(chatd: &Chatd, watcher: &mut Client, args: &[&str], name: &str) -> std::process::Child {
    let mut command = tool(chatd, "chat-tail");
    command.args(["--name", name]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    watcher.expect(&format!("JOINED {name}"));
    child
}

#[test]
fn a_thousand_lines_piped_to_chat_send_arrive_complete_and_in_order_at_chat_tail() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let tail = start_tail(&chatd, &mut watcher, &["--count", "1000"], "tail");
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let sent = run_with_input(tool(&chatd, "chat-send").args(["--name", "seq"]), input.as_bytes());
    assert!(sent.status.success(), "chat-send failed: {}", stderr(&sent));
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    let want: Vec<String> =
        std::iter::once("* seq joined".to_owned()).chain((1..=1000).map(|i| format!("seq: {i}"))).collect();
    assert_eq!(lines, want);
}

#[test]
fn chat_send_sends_its_arguments_as_one_message() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let out = tool(&chatd, "chat-send").args(["-n", "bot", "hola", "a", "todos"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ana.sync(), ["JOINED bot", "MSG bot hola a todos", "LEFT bot exit"]);
}

#[test]
fn chat_send_takes_its_name_from_the_login_and_skips_empty_lines() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let out = run_with_input(&mut tool(&chatd, "chat-send"), b"one\n\n\r\ntwo\r\nthree");
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = ana.sync();
    assert_eq!(seen, ["JOINED tester", "MSG tester one", "MSG tester two", "MSG tester three", "LEFT tester exit"]);
}

#[test]
fn a_line_the_protocol_refuses_stops_chat_send_naming_the_line() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let long = "x".repeat(5000);
    let input = format!("fine\nalso fine\n{long}\nnever sent\n");
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot"]), input.as_bytes());
    assert_eq!(out.status.code(), Some(6));
    let want = "the server refused line 3: TOO_LONG line longer than 4096 bytes (newline included)";
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    let seen = ana.sync();
    assert_eq!(&seen[..3], ["JOINED bot", "MSG bot fine", "MSG bot also fine"]);
    assert!(!seen.iter().any(|l| l.contains("never sent")), "{seen:?}");

    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot2"]), b"ok\n\x1b[31mred\n");
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("line 2 is refused: control character U+001B in message"), "{}", stderr(&out));
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot3"]), b"\xff\xfe\n");
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("line 1 is not UTF-8"), "{}", stderr(&out));
}

#[test]
fn the_server_judges_the_line_length_so_chat_send_sends_what_it_takes() {
    let chatd = Chatd::start(&["--max-line", "64K"]);
    let mut ana = chatd.join("Ana");
    let long = "x".repeat(60_000);
    let input = format!("before\n{long}\nafter\n");
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot"]), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let want = ["JOINED bot".to_owned(), "MSG bot before".into(), format!("MSG bot {long}"), "MSG bot after".into()];
    assert_eq!(ana.sync()[..4], want);
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot"]), format!("{long}{long}\n").as_bytes());
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the server refused line 1: TOO_LONG line longer than 65536 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_line_the_server_refuses_makes_chat_send_fail_saying_where() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let input = format!("short\n{}\n", "y".repeat(100));
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot"]), input.as_bytes());
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("the server refused one of lines 1 to 2: TOO_LONG"), "{}", stderr(&out));
    assert!(stderr(&out).contains("TOO_LONG"), "{}", stderr(&out));
}

#[test]
fn chat_send_against_no_server_fails_clearly() {
    let chatd = Chatd::start(&[]);
    let addr = chatd.addr;
    drop(chatd);
    let out = Command::new(bin("chat-send")).args(["--server", &addr.to_string(), "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let want = format!("chat-send: cannot connect to {addr}: connection refused — is chatd running there?");
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
}

#[test]
fn a_taken_name_is_a_clear_error_with_its_own_status() {
    let chatd = Chatd::start(&[]);
    let _ana = chatd.join("Ana");
    let out = tool(&chatd, "chat-send").args(["-n", "ana", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("cannot join as \"ana\": Ana is taken"), "{}", stderr(&out));
}

/// A `chat-send -n bot --retry-for 1s` reading a pipe the test holds, as
/// under `tail -f`, once its first line has reached `watcher` (so it is past
/// its join).
fn piped_chat_send(chatd: &Chatd, watcher: &mut Client, first: &str) -> (Child, ChildStdin) {
    let mut child = tool(chatd, "chat-send")
        .args(["-n", "bot", "--retry-for", "1s"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(format!("{first}\n").as_bytes()).unwrap();
    input.flush().unwrap();
    watcher.expect("JOINED bot");
    watcher.expect(&format!("MSG bot {first}"));
    (child, input)
}

#[test]
fn chat_send_gives_up_with_status_5_when_the_server_never_comes_back() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let (child, mut input) = piped_chat_send(&chatd, &mut watcher, "before");
    drop(chatd);
    let _ = input.write_all(b"after\n");
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("reconnecting"), "{}", stderr(&out));
    assert!(stderr(&out).contains("gave up reconnecting after 1.0 s"), "{}", stderr(&out));
}

#[test]
fn chat_tail_prints_human_raw_and_json_forms() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let human = start_tail(&chatd, &mut watcher, &["--count", "1"], "human");
    let raw = start_tail(&chatd, &mut watcher, &["--count", "1", "--raw"], "raw");
    let json = start_tail(&chatd, &mut watcher, &["--count", "1", "--json", "--messages-only"], "json");
    let mut ana = chatd.join("Ana");
    ana.send("MSG dice \"hola\"");
    ana.sync();
    let text = |child: std::process::Child| String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(text(human), "* raw joined\n* json joined\n* Ana joined\nAna: dice \"hola\"\n");
    assert_eq!(text(raw), "JOINED json\nJOINED Ana\nMSG Ana dice \"hola\"\n");
    let json = text(json);
    let want = "{\"event\":\"msg\",\"from\":\"Ana\",\"text\":\"dice \\\"hola\\\"\",\"seq\":";
    assert!(json.starts_with(want) && json.ends_with("\"}\n") && json.contains("\"time\":"), "{json}");
}

#[test]
fn chat_tail_names_itself_after_the_login_and_never_collides() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let first = tool(&chatd, "chat-tail").stdout(Stdio::null()).spawn().unwrap();
    watcher.expect("JOINED tester-tail");
    let second = tool(&chatd, "chat-tail").stdout(Stdio::null()).spawn().unwrap();
    watcher.expect("JOINED tester-tail2");
    let third = tool(&chatd, "chat-tail").env("CHAT_NAME", "ana").stdout(Stdio::null()).spawn().unwrap();
    watcher.expect("JOINED ana-tail");
    for mut child in [first, second, third] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn chat_tail_into_head_ends_quietly_with_status_0() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let tail = bin("chat-tail").display().to_string();
    let script = format!("set -o pipefail; '{tail}' --name t | head -n 2 >/dev/null");
    let mut child =
        aimed_at(&chatd, Command::new("bash")).args(["-c", &script]).stderr(Stdio::piped()).spawn().unwrap();
    watcher.expect("JOINED t");
    // chat-tail learns that head is gone only when it next writes: keep
    // the room talking until the pipeline ends.
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        watcher.send("MSG tick");
        watcher.sync();
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "chat-tail | head never ended");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "pipeline status {status}, stderr {err:?}");
    assert_eq!(err, "");
}

#[test]
fn chat_tail_without_reconnecting_says_when_the_server_shuts_down() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let mut tail = start_tail(&chatd, &mut watcher, &["--no-reconnect"], "tail");
    let mut stdout = BufReader::new(tail.stdout.take().unwrap());
    let mut ana = chatd.join("Ana");
    ana.send("MSG last words");
    ana.sync();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "* Ana joined\n");
    chatd.signal(nix::sys::signal::Signal::SIGTERM);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "Ana: last words\n", "accepted before the shutdown, so delivered");
    let out = tail.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let want = format!("chat-tail: {}: the server shut down\n", chatd.addr);
    assert_eq!(stderr(&out), want);
}

#[test]
fn nonsense_options_are_usage_errors_with_status_2() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("chatd", &["--max-clients", "0"], "at least 1"),
        ("chatd", &["--join-timeout", "0"], "longer than 0s"),
        ("chatd", &["--dead-peer-timeout", "1s"], "at least 3s"),
        ("chat-send", &["-s", "127.0.0.1:99999", "hi"], "not a port"),
        ("chat-tail", &["--server", "host:"], "not a port"),
    ];
    for (program, args, why) in cases {
        let out = Command::new(crate::util::bin(program)).args(*args).stdin(Stdio::null()).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {err}");
        assert!(err.contains(why), "{program} {args:?}: {err}");
    }
}

#[test]
fn chat_send_stopped_by_a_refused_line_leaves_with_exit() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let mut ana = chatd.join("Ana");
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot"]), b"ok\n\x1b[31mred\n");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(ana.sync(), ["JOINED bot", "MSG bot ok", "LEFT bot exit"]);
    let input = format!("short\n{}\n", "y".repeat(100));
    let out = run_with_input(tool(&chatd, "chat-send").args(["-n", "bot2"]), input.as_bytes());
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(ana.sync(), ["JOINED bot2", "MSG bot2 short", "LEFT bot2 exit"]);
}

/// Waits for a child's output, failing after `PATIENCE`.
fn output_within_patience(child: std::process::Child) -> Output {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    result.recv_timeout(PATIENCE).expect("the client did not exit in time").expect("wait for the client")
}

#[test]
fn tail_f_into_chat_send_notices_at_once_that_the_server_went_away() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let mut child = tool(&chatd, "chat-send")
        .args(["-n", "bot", "--no-reconnect"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `tail -f`: input that stays open, with nothing more to say.
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"one\n").unwrap();
    watcher.expect("JOINED bot");
    watcher.expect("MSG bot one");
    drop(chatd);
    let out = output_within_patience(child);
    drop(input);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("1 line(s) sent, up to line 1, none of them confirmed by the server"), "{err}");
}

#[test]
fn chat_send_and_a_piped_chat_work_beside_the_persons_own_chat() {
    let chatd = Chatd::start(&[]);
    // Ana's own chat holds the name.
    let mut ana = chatd.join("Ana");
    let out = tool(&chatd, "chat-send").env("CHAT_NAME", "Ana").arg("from a script").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut chat = aimed_at(&chatd, Command::new(bin("chat")));
    let out = run_with_input(chat.env("CHAT_NAME", "Ana"), b"from a pipe\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let want = [
        "JOINED Ana-send",
        "MSG Ana-send from a script",
        "LEFT Ana-send exit",
        "JOINED Ana-send",
        "MSG Ana-send from a pipe",
        "LEFT Ana-send exit",
    ];
    assert_eq!(ana.sync(), want);
    // A name given with --name is taken as it is, or not at all.
    let out = tool(&chatd, "chat-send").args(["--name", "Ana", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // With Ana's chat gone, chat-send speaks as Ana.
    ana.send("EXIT");
    ana.expect_closed_after("BYE exit");
    let mut bob = chatd.join("Bob");
    let out = tool(&chatd, "chat-send").env("CHAT_NAME", "Ana").arg("alone").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(bob.sync(), ["JOINED Ana", "MSG Ana alone", "LEFT Ana exit"]);
}

#[test]
fn tail_f_into_chat_send_starts_reconnecting_at_once_when_the_server_goes() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let (mut child, input) = piped_chat_send(&chatd, &mut watcher, "one");
    let mut errors = BufReader::new(child.stderr.take().unwrap());
    drop(chatd);
    // No more input: chat-send hears it from the socket alone.
    let mut line = String::new();
    errors.read_line(&mut line).unwrap();
    assert!(line.contains("reconnecting"), "{line}");
    drop(input);
    child.kill().unwrap();
    child.wait().unwrap();
}
