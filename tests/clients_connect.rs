//! What the clients say when the other end is not a chat server they can
//! join: a port that never speaks, another protocol, a full chatd.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use crate::util::{bin, Chatd, PATIENCE};

/// A listener on 127.0.0.1 that accepts connections, writes `banner` on
/// each, and keeps them open (never closing, never reading) until the
/// returned receiver is dropped.
fn impostor(banner: &'static [u8]) -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (keep, kept) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let mut stream = stream.unwrap();
            // A client may give up before it has read it all.
            let _ = stream.write_all(banner);
            if keep.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, kept)
}

fn run(program: &str, addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(bin(program))
        .args(["--server", &addr.to_string(), "--name", "Ana"])
        .args(args)
        .env_remove("CHAT_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn clients_give_up_on_a_port_that_never_speaks_with_status_3() {
    let (addr, _kept) = impostor(b"");
    let started = Instant::now();
    let out = run("chat-send", addr, &["hi"]);
    assert!(started.elapsed() < PATIENCE, "chat-send waited {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let want = format!("chat-send: {addr} is not a chat server (it sent nothing within 5s)");
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
}

#[test]
fn clients_say_in_words_what_another_protocol_said_with_status_3() {
    let (addr, _kept) = impostor(b"SSH-2.0-OpenSSH_9.2\r\n");
    for program in ["chat-send", "chat-tail", "chat"] {
        let out = run(program, addr, &["hi"][..usize::from(program == "chat-send")]);
        assert_eq!(out.status.code(), Some(3), "{program}: {}", stderr(&out));
        let want = format!("{program}: {addr} is not a chat server: it said \"SSH-2.0-OpenSSH_9.2\"");
        assert!(stderr(&out).starts_with(&want), "{program}: {}", stderr(&out));
    }
}

#[test]
fn a_stream_without_line_ends_is_not_a_chat_server_either() {
    let (addr, _kept) = impostor(Box::leak(vec![b'x'; 100_000].into_boxed_slice()));
    let out = run("chat-send", addr, &["hi"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("bytes without a line end"), "{}", stderr(&out));
    // A few bytes, then silence: not "nothing".
    let (addr, _kept) = impostor(b"SSH-2.0-OpenSSH_9.2");
    let out = run("chat-send", addr, &["hi"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("it sent 19 bytes without a line end"), "{}", stderr(&out));
}

#[test]
fn a_full_server_is_status_3_with_its_reason() {
    let chatd = Chatd::start(&["--max-clients", "1"]);
    let _ana = chatd.join("Ana");
    for program in ["chat-send", "chat-tail"] {
        let out = run(program, chatd.addr, &["hi"][..usize::from(program == "chat-send")]);
        assert_eq!(out.status.code(), Some(3), "{program}: {}", stderr(&out));
        let want = format!("{program}: {} is full: ", chatd.addr);
        assert!(stderr(&out).starts_with(&want), "{program}: {}", stderr(&out));
        assert!(stderr(&out).contains("try again later"), "{program}: {}", stderr(&out));
    }
}
