//! The clients given a list of servers (`--server a:5000,b:5000`): the
//! first that answers is used, a lost one is replaced by the next, every
//! entry is checked, and when none answers the error names them all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use nix::sys::signal::Signal;

use crate::util::{bin, Chatd, PATIENCE};

/// A port on 127.0.0.1 where nothing listens: connections are refused.
fn refusing() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A client binary told `--server LIST`, with nothing from the environment
/// of whoever runs the tests.
fn tool(program: &str, list: &str) -> Command {
    let mut command = Command::new(bin(program));
    command.args(["--server", list]).env_remove("CHAT_SERVER").env_remove("CHAT_NAME").env("USER", "tester");
    command.env_remove("CHAT_RETRY_FOR");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `chat` with `input` on its standard input, and waits for its end.
fn chat_piped(list: &str, name: &str, input: &str) -> std::process::Output {
    let mut chat = tool("chat", list)
        .args(["--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    chat.wait_with_output().unwrap()
}

/// Reads lines until `want`, failing after `PATIENCE` with those seen.
fn wait_for_line(lines: &mpsc::Receiver<String>, want: &str) {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(PATIENCE) {
        if line == want {
            return;
        }
        seen.push(line);
    }
    panic!("never printed {want:?}; printed {seen:?}");
}

#[test]
fn clients_use_the_second_server_when_the_first_refuses_connections() {
    let chatd = Chatd::start(&[]);
    let list = format!("{},{}", refusing(), chatd.addr);
    let mut watcher = chatd.join("Watcher");

    let out = tool("chat-send", &list).args(["--name", "Ana", "from chat-send"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in ["JOINED Ana", "MSG Ana from chat-send", "LEFT Ana exit"] {
        watcher.expect(line);
    }

    let out = chat_piped(&list, "Bea", "from chat\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in ["JOINED Bea", "MSG Bea from chat", "LEFT Bea exit"] {
        watcher.expect(line);
    }

    let out = tool("chat-tail", &list).args(["--name", "tail", "-m", "-n", "6", "--count", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Ana: from chat-send\nBea: from chat\n");
}

#[test]
fn chat_tail_goes_on_with_the_next_server_when_its_server_stops() {
    let mut first = Chatd::start(&[]);
    let second = Chatd::start(&[]);
    let (mut ana, mut bea) = (first.join("Ana"), second.join("Bea"));
    let list = format!("{},{}", first.addr, second.addr);
    let mut tail = tool("chat-tail", &list)
        .args(["--name", "tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = crate::util::netns::lines_of(tail.stdout.take().unwrap());
    ana.expect("JOINED tail");
    ana.send("MSG on the first");
    wait_for_line(&lines, "Ana: on the first");

    first.signal(Signal::SIGTERM);
    assert!(first.wait().success());
    bea.expect("JOINED tail");
    bea.send("MSG on the second");
    wait_for_line(&lines, "Bea: on the second");

    tail.kill().unwrap();
    tail.wait().unwrap();
    let mut err = String::new();
    tail.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains(&format!("chat-tail: reconnected to {}", second.addr)), "{err}");
    // Two servers that share nothing: what was missed cannot be known.
    assert!(err.contains("some events may have been missed"), "{err}");
}

#[test]
fn every_entry_of_a_server_list_is_checked_with_status_2() {
    let good = refusing().to_string();
    let cases = [
        (format!("{good},,{good}"), format!("entry 2 of \"{good},,{good}\" is empty")),
        (format!("{good},"), format!("entry 2 of \"{good},\" is empty")),
        (format!("{good},localhost:99999"), "entry 2 \"localhost:99999\": \"99999\" is not a port".to_owned()),
    ];
    for program in ["chat", "chat-send", "chat-tail"] {
        for (list, want) in &cases {
            let out = tool(program, list).arg("--name").arg("Ana").stdin(Stdio::null()).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{program} {list}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains(want), "{program} {list}: {}", text(&out.stderr));
        }
        // The same from the environment.
        let (list, want) = &cases[2];
        let out = Command::new(bin(program))
            .env("CHAT_SERVER", list)
            .args(["--name", "Ana"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{program} {list}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{program} {list}: {}", text(&out.stderr));
    }
}

#[test]
fn when_no_server_of_the_list_answers_each_is_named_with_status_3() {
    let (a, b) = (refusing(), refusing());
    let list = format!("{a},{b}");
    for program in ["chat", "chat-send", "chat-tail"] {
        let args: &[&str] = if program == "chat-send" { &["--name", "Ana", "hi"] } else { &["--name", "Ana"] };
        let out = tool(program, &list).args(args).stdin(Stdio::null()).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{program}: {err}");
        let want = format!(
            "{program}: none of the 2 servers answered as a chat server: cannot connect to {a}: connection refused \
             — is chatd running there?; cannot connect to {b}: connection refused"
        );
        assert!(err.starts_with(&want), "{program}: {err}");
    }
}
