//! Hostile clients that stay within the protocol's letter: a slowloris holds
//! connections open with a byte now and then and never joins. The join
//! timeout, counted from the connection, closes each of them on time, so
//! they hold the client limit for a moment, never for good. (Arbitrary bytes
//! are the fuzzer's: see fuzz/run.)

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::{Chatd, Client, PATIENCE};

const LIMIT: usize = 20;
const JOIN_TIMEOUT: Duration = Duration::from_secs(1);

fn start_chatd() -> Chatd {
    Chatd::start(&["--max-clients", &LIMIT.to_string(), "--join-timeout", "1s"])
}

/// A connection over the limit: `HELLO`, `ERR FULL`, `BYE full`, closed.
fn expect_turned_away(chatd: &Chatd) {
    let lines = Client::connect(chatd.addr).recv_all();
    let ok = matches!(&lines[..], [hello, full, bye]
        if hello.starts_with("HELLO chatd/") && full.starts_with("ERR FULL ") && bye == "BYE full");
    assert!(ok, "a connection over the limit got {lines:?}");
}

/// Reads a slowloris's end: `ERR TIMEOUT`, not before the join timeout since
/// it connected, then `BYE timeout` and the close. Returns when the
/// `ERR TIMEOUT` came.
fn expect_timed_out(client: &mut Client, connected: Instant, what: &str) -> Instant {
    let line = loop {
        match client.recv() {
            // A slowloris that pings is answered until its time is up.
            pong if pong.starts_with("PONG") => continue,
            line => break line,
        }
    };
    let at = Instant::now();
    assert!(line.starts_with("ERR TIMEOUT "), "{what}: expected ERR TIMEOUT, got {line:?}");
    let waited = at - connected;
    assert!(waited >= JOIN_TIMEOUT, "{what}: timed out after {waited:?}, before the join timeout");
    at
}

fn expect_closed_after_bye(client: &mut Client, what: &str) {
    let rest = client.recv_all();
    assert_eq!(rest, ["BYE timeout"], "{what}: after ERR TIMEOUT");
    client.close_write();
}

#[test]
fn a_slowloris_holds_the_client_limit_only_until_the_join_timeout() {
    // The 21st connection is refused only while the 20 are within their join
    // timeout; a machine so loaded that opening 21 connections took longer
    // cannot tell, and the scenario starts again on a fresh server.
    let (chatd, mut lorises) = (0..3)
        .find_map(|_| {
            let chatd = start_chatd();
            let started = Instant::now();
            let lorises: Vec<(Instant, Client)> = (0..LIMIT)
                .map(|_| {
                    let connected = Instant::now();
                    let mut client = chatd.connect();
                    // The first byte of a JOIN that never comes.
                    client.send_raw(b"J");
                    (connected, client)
                })
                .collect();
            let extra = Client::connect(chatd.addr).recv_all();
            if started.elapsed() >= JOIN_TIMEOUT {
                eprintln!("hostile: opening {} connections took {:?}; again", LIMIT + 1, started.elapsed());
                return None;
            }
            let ok = matches!(&extra[..], [hello, full, bye]
                if hello.starts_with("HELLO chatd/") && full.starts_with("ERR FULL ") && bye == "BYE full");
            assert!(ok, "with {LIMIT} slowloris connections open, one more got {extra:?}");
            Some((chatd, lorises))
        })
        .expect("the machine was too slow to open 21 connections within the join timeout, three times");

    for (i, (connected, client)) in lorises.iter_mut().enumerate() {
        let what = format!("slowloris {i}");
        expect_timed_out(client, *connected, &what);
        expect_closed_after_bye(client, &what);
    }
    drop(lorises);

    // Every place is free again: the limit's worth of members join, and the
    // limit is still in force after them.
    let mut members: Vec<Client> = (0..LIMIT).map(|i| chatd.join_when_a_place_is_free(&format!("m{i}"))).collect();
    expect_turned_away(&chatd);
    let first = &mut members[0];
    let joined = first.sync();
    let want: Vec<String> = (1..LIMIT).map(|i| format!("JOINED m{i}")).collect();
    assert_eq!(joined, want);
    first.send("NAMES");
    let names: Vec<String> = (0..LIMIT).map(|i| format!("m{i}")).collect();
    first.expect(&format!("NAMES {}", names.join(" ")));
}

/// Sends `pattern` one byte at a time, `every` apart, until stopped or the
/// connection breaks; bounded by `PATIENCE`. Keeps when the last byte went.
struct Trickle {
    stop: Arc<AtomicBool>,
    last_sent: Arc<Mutex<Option<Instant>>>,
    writer: JoinHandle<usize>,
}

impl Trickle {
    fn start(stream: TcpStream, pattern: &'static [u8], every: Duration) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let last_sent = Arc::new(Mutex::new(None));
        let (stop_flag, last) = (Arc::clone(&stop), Arc::clone(&last_sent));
        let writer = thread::spawn(move || {
            let most = (PATIENCE.as_millis() / every.as_millis()) as usize;
            let mut sent = 0;
            for &byte in pattern.iter().cycle().take(most) {
                if stop_flag.load(Ordering::SeqCst) || (&stream).write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                *last.lock().unwrap() = Some(Instant::now());
                // The pace is the behaviour under test, not a synchronisation.
                thread::sleep(every);
            }
            sent
        });
        Trickle { stop, last_sent, writer }
    }

    fn last_sent(&self) -> Option<Instant> {
        *self.last_sent.lock().unwrap()
    }

    /// Stops sending; returns how many bytes went.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.writer.join().expect("the trickle's writer")
    }
}

#[test]
fn a_trickle_of_bytes_does_not_put_off_the_join_timeout() {
    const EVERY: Duration = Duration::from_millis(200);
    let chatd = start_chatd();
    // A line that grows and never ends, empty lines (each one handled and
    // ignored), a JOIN spelt too slowly, and PINGs that are answered.
    let patterns: [&'static [u8]; 4] = [b"x", b"\n", b"JOIN slowloris\n", b"PING\n"];
    let lorises: Vec<(Instant, Client, Trickle, &[u8])> = patterns
        .iter()
        .map(|&pattern| {
            let connected = Instant::now();
            let client = chatd.connect();
            let trickle = Trickle::start(client.stream().try_clone().unwrap(), pattern, EVERY);
            (connected, client, trickle, pattern)
        })
        .collect();

    for (connected, mut client, trickle, pattern) in lorises {
        let what = format!("the slowloris sending {:?}", String::from_utf8_lossy(pattern));
        let timed_out = expect_timed_out(&mut client, connected, &what);
        // It was sending all along: its last byte went well within a join
        // timeout before it was timed out, so the timer did not count from it.
        let last = trickle.last_sent().unwrap_or_else(|| panic!("{what}: sent nothing"));
        let quiet = timed_out.saturating_duration_since(last);
        assert!(quiet < JOIN_TIMEOUT, "{what}: its last byte went {quiet:?} before the timeout; not a trickle");
        let sent = trickle.stop();
        assert!(sent >= 2, "{what}: sent {sent} bytes; the trickle did not go on");
        expect_closed_after_bye(&mut client, &what);
    }
    // Its places are free again.
    chatd.join_when_a_place_is_free("after").expect_quiet();
}
