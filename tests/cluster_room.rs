//! One room served by several chatd servers through NATS JetStream (`chatd
//! --cluster`), against real nats-server and chatd processes on 127.0.0.1:
//! members on different servers talk in one order at the same positions;
//! names are one across servers, and a membership taken over elsewhere ends
//! where it was; a server that stops, is killed or is cut off from NATS
//! loses its members within `--dead-server-timeout` while the clients go on
//! with another server, missing nothing and sending each line once; the
//! room outlives a dead NATS node, a NATS restart and a restart of
//! everything; rooms on one NATS are apart; and a NATS that is not there
//! stops chatd at start-up, as does a single NATS server asked for three
//! replicas. Every test but the one without NATS says `SKIPPED` without a
//! nats-server; `MINICHAT_NATS_SERVER` chooses one.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use minichat::cluster::{Bridge, Options};
use minichat::protocol::Tags;
use nix::sys::signal::Signal;

use crate::util::nats::{free_port, Nats, NatsCluster};
use crate::util::netns::Proc;
use crate::util::{bin, Chatd, Client, TempDir, PATIENCE};

/// How long a leader election may take (nats-server 2.9: about 30 s).
const ELECTION: Duration = Duration::from_secs(45);

/// `chatd --cluster URL,… ARGS…`, listening on a port of its own.
fn chatd_on(urls: &[String], args: &[&str]) -> Chatd {
    let cluster = urls.join(",");
    Chatd::start(&[&["--cluster", cluster.as_str()][..], args].concat())
}

/// Two chatd serving one room on `urls`, with the default options.
fn two_servers(urls: &[String]) -> (Chatd, Chatd) {
    (chatd_on(urls, &[]), chatd_on(urls, &[]))
}

/// Every line `client` gets until its connection closes, if it closes
/// within `patience`.
fn closed_within(mut client: Client, patience: Duration) -> Option<Vec<String>> {
    let (tx, closed) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(client.recv_all());
    });
    closed.recv_timeout(patience).ok()
}

/// A room event as a client with tags on was sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    seq: u64,
    time: String,
    line: String,
}

fn seen(line: &str) -> Seen {
    let (tags, rest) = Tags::split(line).unwrap_or_else(|| panic!("bad tags in {line:?}"));
    let seq = tags.seq.unwrap_or_else(|| panic!("no position in {line:?}"));
    let time = tags.time.unwrap_or_else(|| panic!("no time in {line:?}"));
    Seen { seq, time, line: rest.to_owned() }
}

/// A connection with tags on, joined as `name` with `options` (` LAST 9`):
/// and the tags of its `OK JOIN`.
fn join_tagged(chatd: &Chatd, name: &str, options: &str) -> (Client, Tags) {
    let mut client = chatd.connect();
    client.send("TAGS");
    client.expect("OK TAGS");
    client.send(&format!("JOIN {name}{options}"));
    let line = client.recv();
    let (tags, rest) = Tags::split(&line).unwrap_or_else(|| panic!("bad tags in {line:?}"));
    assert_eq!(rest, format!("OK JOIN {name}"), "{line:?}");
    (client, tags)
}

/// The next `n` events a client with tags on is sent.
fn next_events(client: &mut Client, n: usize) -> Vec<Seen> {
    (0..n).map(|_| seen(&client.recv())).collect()
}

fn lines(events: &[Seen]) -> Vec<&str> {
    events.iter().map(|e| e.line.as_str()).collect()
}

/// Positions count 1, 2, 3, … without a gap.
fn assert_gapless(events: &[Seen]) {
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "a gap or a repeat after {:?}", pair[0]);
    }
}

/// A client binary given `--server LIST`, with nothing from the environment
/// of whoever runs the tests; killed when dropped.
fn tool(program: &str, servers: &[SocketAddr], args: &[&str]) -> Proc {
    let list = servers.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",");
    let mut command = Command::new(bin(program));
    command.args(["--server", &list]).args(args);
    command.env_remove("CHAT_SERVER").env_remove("CHAT_NAME").env_remove("CHAT_RETRY_FOR").env("USER", "tester");
    Proc::spawn(command, program)
}

/// Writes the numbers 1 to `count`, a line each, to `proc`'s input from a
/// thread of their own, and closes it.
/// Starts `chat-send -n bulk` on both servers (the first first), writing
/// the numbers 1 to `count`, and returns once `watcher` heard number `at`:
/// some lines confirmed, some in flight, most still to come. Returns
/// chat-send, the thread writing its input, and what `watcher` heard.
fn bulk_under_way(
    one: &Chatd,
    two: &Chatd,
    watcher: &mut Client,
    count: u64,
    at: u64,
) -> (Proc, thread::JoinHandle<std::io::Result<()>>, Vec<String>) {
    let mut send = tool("chat-send", &[one.addr, two.addr], &["-n", "bulk", "--retry-for", "30s"]);
    let writer = write_numbers(&mut send, count);
    watcher.expect("JOINED bulk");
    let mut heard: Vec<String> = Vec::new();
    while heard.last().is_none_or(|line| *line != format!("MSG bulk {at}")) {
        assert!(heard.len() < at as usize, "not bulk's numbers: {:?}", &heard[heard.len().saturating_sub(5)..]);
        heard.push(watcher.recv());
    }
    (send, writer, heard)
}

fn write_numbers(proc: &mut Proc, count: u64) -> thread::JoinHandle<std::io::Result<()>> {
    let mut input = proc.take_stdin();
    thread::spawn(move || {
        let numbers: String = (1..=count).map(|n| format!("{n}\n")).collect();
        input.write_all(numbers.as_bytes())
    })
}

/// A connection that sent `JOIN {join}` (a name and options) and had `OK
/// JOIN`; sent again while chatd answers `ERR UNAVAILABLE` (after a NATS node
/// died, the names' bucket may still be electing a leader), until `patience`
/// runs out. Waits up to `ELECTION` for each answer.
fn join_within(chatd: &Chatd, join: &str, patience: Duration) -> Client {
    let deadline = Instant::now() + patience;
    let name = join.split(' ').next().unwrap_or_default();
    let mut client = chatd.connect();
    client.stream().set_read_timeout(Some(ELECTION)).unwrap();
    loop {
        client.send(&format!("JOIN {join}"));
        let reply = client.recv();
        if reply == format!("OK JOIN {name}") {
            return client;
        }
        assert!(reply.starts_with("ERR UNAVAILABLE ") && Instant::now() < deadline, "JOIN {join}: {reply:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The numbers `bulk` said, as `JOIN … LAST` on `chatd` replays them to
/// `checker`, who then leaves; `patience` as for `join_within`. A checker
/// sent away with `BYE unavailable` meanwhile (chatd could not write its
/// heartbeat while NATS elected, and sent its members away, as it must)
/// joins again, until `patience` runs out.
fn said_by_bulk(chatd: &Chatd, checker: &str, patience: Duration) -> Vec<u64> {
    let deadline = Instant::now() + patience;
    let lines = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut check = join_within(chatd, &format!("{checker} LAST 100000"), left);
        check.send("PING replayed");
        let (mut lines, mut answered) = (Vec::new(), false);
        while let Some(line) = check.try_recv() {
            answered = line == "PONG replayed";
            if answered {
                break;
            }
            lines.push(line);
        }
        let sent_away = lines.last().is_some_and(|line| line == "BYE unavailable");
        if sent_away && Instant::now() < deadline {
            continue;
        }
        assert!(
            answered,
            "{checker} was not answered its PING; it got {} lines, the last {:?}",
            lines.len(),
            lines.last()
        );
        check.send("EXIT");
        check.expect_closed_after("BYE exit");
        break lines;
    };
    lines.iter().filter_map(|line| line.strip_prefix("MSG bulk ")).map(|n| n.parse().unwrap()).collect()
}

/// Fails unless `said` holds 1, 2, … `count` each once, in any order.
fn assert_each_once(said: &[u64], count: u64, what: &str) {
    let mut sorted = said.to_vec();
    sorted.sort_unstable();
    assert_each_once_in_order(&sorted, count, what);
}

/// Fails with where `said` first differs from 1, 2, … `count`.
fn assert_each_once_in_order(said: &[u64], count: u64, what: &str) {
    let want: Vec<u64> = (1..=count).collect();
    assert!(
        said == want,
        "{what}: {} messages; first wrong at {:?}: {:?}",
        said.len(),
        { said.iter().zip(&want).position(|(a, b)| a != b) },
        {
            let at = said.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(said.len().min(want.len()));
            &said[at.saturating_sub(3)..(at + 3).min(said.len())]
        }
    );
}

#[test]
fn members_on_two_servers_hear_each_other_at_the_same_positions() {
    let Some(nats) = Nats::start("members_on_two_servers_hear_each_other_at_the_same_positions") else { return };
    let urls = [nats.url()];
    let (one, two) = two_servers(&urls);
    let (mut w1, joined1) = join_tagged(&one, "w1", "");
    let (mut w2, joined2) = join_tagged(&two, "w2", "");
    assert!(joined1.epoch.is_some() && joined1.epoch == joined2.epoch, "one history: {joined1:?} {joined2:?}");
    let w2_joined = next_events(&mut w1, 1).remove(0);
    assert_eq!(w2_joined.line, "JOINED w2");
    assert_eq!(Some(w2_joined.seq), joined2.seq.map(|seq| seq + 1), "w2's own JOINED comes right after its OK JOIN");

    let mut ana = one.join("Ana");
    let mut bea = two.join("Bea");
    ana.expect("JOINED Bea");
    bea.send("MSG hola from two");
    ana.expect("MSG Bea hola from two");
    ana.send("MSG hi from one");
    bea.expect("MSG Ana hi from one");
    for member in [&mut ana, &mut bea] {
        member.send("NAMES");
        member.expect("NAMES w1 w2 Ana Bea");
    }
    // Names are one across servers, as spelled in any case.
    let mut imposter = two.connect();
    imposter.send("JOIN ana");
    imposter.expect_prefix("ERR NAME_TAKEN ");
    bea.send("EXIT");
    bea.expect_closed_after("BYE exit");
    // Ana is not sent her own message back.
    ana.expect("LEFT Bea exit");
    ana.send("NAMES");
    ana.expect("NAMES w1 w2 Ana");

    let want = ["JOINED Ana", "JOINED Bea", "MSG Bea hola from two", "MSG Ana hi from one", "LEFT Bea exit"];
    let (on_one, on_two) = (next_events(&mut w1, want.len()), next_events(&mut w2, want.len()));
    assert_eq!(lines(&on_one), want);
    assert_eq!(on_one[0].seq, w2_joined.seq + 1);
    assert_gapless(&on_one);
    // The same positions, and the same times: the stream's.
    assert_eq!(on_one, on_two, "one event, one position, on every server");
    w1.expect_quiet();
    w2.expect_quiet();
}

#[test]
fn five_senders_on_two_servers_make_one_order_that_readers_on_both_see() {
    let Some(nats) = Nats::start("five_senders_on_two_servers_make_one_order_that_readers_on_both_see") else {
        return;
    };
    let urls = [nats.url()];
    let (one, two) = two_servers(&urls);
    let (mut r1, _) = join_tagged(&one, "r1", "");
    let (mut r2, _) = join_tagged(&two, "r2", "");
    assert_eq!(next_events(&mut r1, 1)[0].line, "JOINED r2");

    const SENDERS: usize = 5;
    const EACH: usize = 100;
    let servers = [one.addr, two.addr];
    let start = Arc::new(Barrier::new(SENDERS));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (addr, start) = (servers[i % 2], Arc::clone(&start));
            thread::spawn(move || {
                let mut sender = Client::connect(addr);
                sender.expect_prefix("HELLO chatd/");
                sender.send(&format!("JOIN s{i}"));
                sender.expect(&format!("OK JOIN s{i}"));
                start.wait();
                for n in 0..EACH {
                    sender.send(&format!("MSG {n}"));
                }
                // Everything confirmed, then gone.
                sender.sync();
                sender.send("EXIT");
                sender.expect_closed_after("BYE exit");
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }

    let total = SENDERS * (EACH + 2);
    let (on_one, on_two) = (next_events(&mut r1, total), next_events(&mut r2, total));
    assert_gapless(&on_one);
    assert_eq!(on_one, on_two, "one order, at the same positions, on both servers");
    for i in 0..SENDERS {
        let from: Vec<&str> = on_one
            .iter()
            .map(|e| e.line.as_str())
            .filter(|line| line.ends_with(&format!(" s{i}")) || line.contains(&format!(" s{i} ")))
            .collect();
        let want: Vec<String> = std::iter::once(format!("JOINED s{i}"))
            .chain((0..EACH).map(|n| format!("MSG s{i} {n}")))
            .chain([format!("LEFT s{i} exit")])
            .collect();
        assert_eq!(from, want, "s{i}'s events, each once, in the order it sent them");
    }
    r1.expect_quiet();
    r2.expect_quiet();
}

#[test]
fn of_sixty_joins_of_one_name_on_two_servers_exactly_one_wins() {
    let Some(nats) = Nats::start("of_sixty_joins_of_one_name_on_two_servers_exactly_one_wins") else { return };
    let urls = [nats.url()];
    let (one, two) = two_servers(&urls);
    let servers = [&one, &two];
    const CLIENTS: usize = 60;
    let start = Arc::new(Barrier::new(CLIENTS));
    let joins: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = servers[i % 2].connect();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut client = client;
                start.wait();
                client.send("JOIN samename");
                let reply = client.recv();
                (client, reply)
            })
        })
        .collect();
    let mut joins: Vec<(Client, String)> = joins.into_iter().map(|join| join.join().unwrap()).collect();
    let replies: Vec<&str> = joins.iter().map(|(_, reply)| reply.as_str()).collect();
    let winners: Vec<usize> = (0..CLIENTS).filter(|&i| replies[i] == "OK JOIN samename").collect();
    assert_eq!(winners.len(), 1, "{replies:?}");
    let losers = replies.iter().filter(|reply| reply.starts_with("ERR NAME_TAKEN ")).count();
    assert_eq!(losers, CLIENTS - 1, "{replies:?}");

    // The server that lost every race sees the winner, and sees it go.
    let winner = winners[0];
    let other = servers[1 - winner % 2];
    let mut watcher = other.join("watcher");
    watcher.send("NAMES");
    watcher.expect("NAMES samename watcher");
    let (winning, _) = &mut joins[winner];
    winning.send("EXIT");
    winning.expect_closed_after("BYE exit");
    watcher.expect("LEFT samename exit");
    // Now the name is free, for one that was refused it on the other server.
    let (refused, _) = &mut joins[1 - winner % 2];
    refused.send("JOIN samename");
    refused.expect("OK JOIN samename");
    watcher.expect("JOINED samename");
}

#[test]
fn a_membership_taken_over_from_another_server_ends_there_with_bye_replaced() {
    let test = "a_membership_taken_over_from_another_server_ends_there_with_bye_replaced";
    let Some(nats) = Nats::start(test) else { return };
    let urls = [nats.url()];
    let (one, two) = two_servers(&urls);
    let mut watcher = two.join("watcher");
    let (mut old, joined) = join_tagged(&one, "Ana", "");
    watcher.expect("JOINED Ana");
    old.send("MSG before");
    watcher.expect("MSG Ana before");

    // As a client does whose connection broke without chatd noticing, and
    // whose list of servers sends it to the next one.
    let (epoch, seq, token) = (joined.epoch.unwrap(), joined.seq.unwrap(), joined.token.unwrap());
    let (mut new, _) = join_tagged(&two, "Ana", &format!(" SINCE {epoch}:{seq} TOKEN {token}"));
    let replay: Vec<String> = new.sync().iter().map(|line| seen(line).line).collect();
    assert_eq!(replay, ["JOINED Ana", "MSG Ana before"]);
    // The old connection is told, and closed: it adds nothing to the room.
    let rest = closed_within(old, PATIENCE).unwrap_or_else(|| {
        panic!("the connection taken over on {} was neither sent BYE replaced nor closed", one.addr)
    });
    assert_eq!(rest.last().map(String::as_str), Some("BYE replaced"), "{rest:?}");
    // Nobody saw Ana leave or join again.
    new.send("MSG after");
    watcher.expect("MSG Ana after");
    watcher.send("NAMES");
    watcher.expect("NAMES watcher Ana");
}

#[test]
fn chat_tail_goes_on_with_another_server_of_the_room_missing_nothing_when_its_server_stops() {
    let test = "chat_tail_goes_on_with_another_server_of_the_room_missing_nothing_when_its_server_stops";
    let Some(nats) = Nats::start(test) else { return };
    let urls = [nats.url()];
    let (mut one, two) = two_servers(&urls);
    let mut bea = two.join("Bea");
    let tail = tool("chat-tail", &[one.addr, two.addr], &["--name", "tail", "-m"]);
    bea.expect("JOINED tail");
    bea.send("MSG first");
    tail.expect_line("Bea: first");

    one.signal(Signal::SIGTERM);
    assert!(one.wait().success(), "{}", one.stderr());
    // Said around chat-tail's reconnection: live or in its replay, once.
    bea.send("MSG meanwhile");
    tail.expect_stderr(&format!("chat-tail: reconnected to {}", two.addr));
    bea.send("MSG last");
    tail.expect_line("Bea: meanwhile");
    tail.expect_line("Bea: last");
    let err = tail.stderr();
    assert!(!err.contains("missed"), "one room, one history: nothing can have been missed; {err}");
}

#[test]
fn a_killed_servers_members_are_lost_in_time_and_chat_send_goes_on_elsewhere_exactly_once() {
    let test = "a_killed_servers_members_are_lost_in_time_and_chat_send_goes_on_elsewhere_exactly_once";
    let Some(nats) = Nats::start(test) else { return };
    let urls = [nats.url()];
    let dead_after = Duration::from_secs(4);
    let args = ["--dead-server-timeout", "4s", "--history", "50000"];
    let (one, two) = (chatd_on(&urls, &args), chatd_on(&urls, &args));
    let mut watcher = two.join("watcher");
    let _ana = one.join("Ana");
    watcher.expect("JOINED Ana");

    const COUNT: u64 = 5000;
    let (mut send, writer, mut heard) = bulk_under_way(&one, &two, &mut watcher, COUNT, 1000);
    one.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let mut one = one;
    one.wait();

    let (mut ana_lost_after, mut bulk_left) = (None, false);
    // Until bulk is done and Ana is gone; each line within `PATIENCE`.
    while ana_lost_after.is_none() || !bulk_left {
        assert!(heard.len() < COUNT as usize + 10, "more than was said: {:?}", &heard[heard.len() - 5..]);
        let line = watcher.recv();
        if line == "LEFT Ana lost" {
            ana_lost_after = Some(killed.elapsed());
        }
        bulk_left |= line == "LEFT bulk exit";
        heard.push(line);
    }
    let ana_lost_after = ana_lost_after.unwrap();
    println!("LEFT Ana lost {ana_lost_after:?} after the kill");
    // Within the bound, with a margin for a loaded machine; and not at the
    // first missed sign of life, which a busy live server may also miss.
    assert!(
        ana_lost_after >= dead_after / 2 && ana_lost_after <= dead_after + Duration::from_secs(10),
        "LEFT Ana lost {ana_lost_after:?} after the kill, with --dead-server-timeout {dead_after:?}"
    );

    writer.join().unwrap().expect("all of the input written");
    let status = send.wait();
    let err = send.stderr();
    assert!(status.success(), "chat-send: {status}: {err}");
    print!("chat-send said:\n{err}");
    assert!(err.contains(&format!("reconnected to {}", two.addr)), "{err}");
    let numbers: Vec<u64> = heard.iter().filter_map(|line| line.strip_prefix("MSG bulk ")?.parse().ok()).collect();
    assert_each_once_in_order(&numbers, COUNT, "heard live on the other server");
    // bulk took its membership over on the other server: nobody saw it leave
    // or join again, and only Ana, who stayed on the dead one, was lost.
    let mut others: Vec<&str> =
        heard.iter().map(String::as_str).filter(|line| !line.starts_with("MSG bulk ")).collect();
    others.sort_unstable();
    assert_eq!(others, ["LEFT Ana lost", "LEFT bulk exit"]);
    assert_each_once_in_order(&said_by_bulk(&two, "check", Duration::ZERO), COUNT, "in the room's history");

    // Ana's name is free again.
    let mut ana = two.join("Ana");
    ana.send("NAMES");
    ana.expect("NAMES watcher Ana");
}

/// A TCP relay on 127.0.0.1 to a NATS port that can be cut: every
/// connection through it closed, and new ones closed at once, as when the
/// network between one chatd and NATS breaks while the others still reach it.
struct Relay {
    port: u16,
    /// The connections through it; `None` once cut.
    open: Arc<Mutex<Option<Vec<TcpStream>>>>,
}

impl Relay {
    fn to(port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = Arc::new(Mutex::new(Some(Vec::new())));
        let kept = Arc::clone(&open);
        let relay = Relay { port: listener.local_addr().unwrap().port(), open };
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mut open = kept.lock().unwrap();
                // Cut: dropped, so closed at once.
                let Some(open) = open.as_mut() else { continue };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                for (from, to) in [(&client, &upstream), (&upstream, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                open.extend([client, upstream]);
            }
        });
        relay
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn mend(&self) {
        *self.open.lock().unwrap() = Some(Vec::new());
    }

    fn cut(&self) {
        for stream in self.open.lock().unwrap().take().unwrap_or_default() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_server_cut_off_from_nats_sends_its_members_away_and_chat_send_goes_on_elsewhere_exactly_once() {
    let test = "a_server_cut_off_from_nats_sends_its_members_away_and_chat_send_goes_on_elsewhere_exactly_once";
    let Some(nats) = Nats::start(test) else { return };
    let relay = Relay::to(nats.port);
    let dead_after = Duration::from_secs(4);
    let args = ["--dead-server-timeout", "4s", "--history", "50000"];
    let (one, two) = (chatd_on(&[relay.url()], &args), chatd_on(&[nats.url()], &args));
    let mut watcher = two.join("watcher");
    let ana = one.join("Ana");
    watcher.expect("JOINED Ana");

    const COUNT: u64 = 5000;
    let (mut send, writer, mut heard) = bulk_under_way(&one, &two, &mut watcher, COUNT, 1000);
    relay.cut();
    let cut = Instant::now();

    // Ana, who said nothing, is sent away too, once the others may take
    // her for lost.
    let rest = closed_within(ana, dead_after + PATIENCE).expect("Ana sent away in time");
    let took = cut.elapsed();
    println!("Ana sent away {took:?} after the cut");
    assert_eq!(rest.last().map(String::as_str), Some("BYE unavailable"), "{rest:?}");
    assert!(took >= dead_after / 2, "sent away {took:?} after the cut, with --dead-server-timeout {dead_after:?}");
    // So is bulk, in the middle of sending: the other servers take it for
    // lost as they do Ana, and it must resume elsewhere rather than wait
    // for NATS here.
    send.expect_stderr("reconnecting");
    let took = cut.elapsed();
    println!("chat-send sent away {took:?} after the cut");
    assert!(took <= dead_after + Duration::from_secs(10), "chat-send sent away {took:?} after the cut");

    let mut bulk_left = false;
    while !bulk_left || !heard.iter().any(|line| line == "LEFT Ana lost") {
        assert!(heard.len() < COUNT as usize + 10, "more than was said: {:?}", &heard[heard.len() - 5..]);
        let line = watcher.recv();
        bulk_left |= line == "LEFT bulk exit";
        heard.push(line);
    }
    writer.join().unwrap().expect("all of the input written");
    let status = send.wait();
    let err = send.stderr();
    assert!(status.success(), "chat-send: {status}: {err}");
    print!("chat-send said:\n{err}");
    assert!(err.contains(&format!("reconnected to {}", two.addr)), "{err}");
    let numbers: Vec<u64> = heard.iter().filter_map(|line| line.strip_prefix("MSG bulk ")?.parse().ok()).collect();
    assert_each_once_in_order(&numbers, COUNT, "heard live on the other server");
    // bulk may have come back before or after its name was freed.
    for line in heard.iter().filter(|line| !line.starts_with("MSG bulk ")) {
        assert!(
            ["LEFT Ana lost", "JOINED bulk", "LEFT bulk lost", "LEFT bulk exit"].contains(&line.as_str()),
            "{line:?}"
        );
    }
    assert_eq!(heard.iter().filter(|line| *line == "LEFT Ana lost").count(), 1, "Ana is lost once");
    assert_each_once_in_order(&said_by_bulk(&two, "check", Duration::ZERO), COUNT, "in the room's history");
}

#[test]
fn the_room_keeps_talking_and_loses_nothing_when_one_of_three_nats_nodes_dies() {
    let test = "the_room_keeps_talking_and_loses_nothing_when_one_of_three_nats_nodes_dies";
    let Some(mut cluster) = NatsCluster::start(test) else { return };
    let urls = cluster.urls();
    let args = ["--replicas", "3", "--history", "50000"];
    let (one, two) = (chatd_on(&urls, &args), chatd_on(&urls, &args));
    let mut reader = two.join("reader");
    reader.stream().set_read_timeout(Some(ELECTION)).unwrap();

    const COUNT: u64 = 2000;
    const KILL_AT: u64 = 300;
    let mut send = tool("chat-send", &[one.addr, two.addr], &["-n", "bulk", "--retry-for", "120s"]);
    let writer = write_numbers(&mut send, COUNT);
    reader.expect("JOINED bulk");
    let mut heard = Vec::new();
    while heard.last().is_none_or(|line| *line != format!("MSG bulk {KILL_AT}")) {
        assert!(heard.len() < KILL_AT as usize, "not bulk's numbers: {:?}", &heard[heard.len().saturating_sub(5)..]);
        heard.push(reader.recv());
    }
    // The stream's leader: an election is needed.
    let leader = {
        let options = Options { replicas: 3, keep: 50_000, ..Options::default() };
        let bridge = Bridge::connect(&urls, "lobby", options).expect("a bridge to the room's stream");
        bridge.leader().unwrap().expect("a stream leader")
    };
    let killed = Instant::now();
    cluster.node(&leader).kill();

    // The last line, then bulk's leaving; if a server could not confirm a
    // line in time, bulk may have been sent away and come back meanwhile.
    let last = format!("MSG bulk {COUNT}");
    let mut said_last = false;
    while !said_last || heard.last().is_some_and(|line| line != "LEFT bulk exit") {
        assert!(heard.len() < 2 * COUNT as usize, "more than was said: {:?}", &heard[heard.len() - 5..]);
        let line = reader.recv();
        said_last |= line == last;
        heard.push(line);
    }
    println!("{leader} killed: all {COUNT} lines heard {:?} later", killed.elapsed());
    writer.join().unwrap().expect("all of the input written");
    let status = send.wait();
    let err = send.stderr();
    assert!(status.success(), "chat-send: {status}: {err}");
    print!("chat-send said:\n{err}");
    let numbers: Vec<u64> = heard.iter().filter_map(|line| line.strip_prefix("MSG bulk ")?.parse().ok()).collect();
    // Each once; not necessarily in the order sent: lines handed to NATS
    // just as the connection died with the stream's leader may be sent
    // again after later ones were stored (docs/protocol.md, "A sender's
    // order at a NATS failure").
    assert_each_once(&numbers, COUNT, &format!("heard live; chat-send said: {err}"));
    for line in heard.iter().filter(|line| !line.starts_with("MSG bulk ")) {
        assert!(["JOINED bulk", "LEFT bulk lost", "LEFT bulk exit"].contains(&line.as_str()), "{line:?}");
    }
    // One order for everyone: the history is what was heard live. On
    // nats-server 2.9, the names' bucket may still be electing.
    assert_eq!(said_by_bulk(&two, "check", ELECTION), numbers, "the room's history, beside what was heard live");

    // And the room goes on, on both servers.
    let mut ana = join_within(&one, "Ana", ELECTION);
    ana.send("MSG after the election");
    let mut since = Vec::new();
    loop {
        let line = reader.recv();
        if line == "MSG Ana after the election" {
            break;
        }
        // A join refused for want of NATS may have been recorded as
        // joined and lost.
        let comings_and_goings = ["JOINED check", "LEFT check exit", "LEFT check lost", "JOINED Ana", "LEFT Ana lost"];
        assert!(since.len() < 20 && comings_and_goings.contains(&line.as_str()), "{since:?} then {line:?}");
        since.push(line);
    }
    assert_eq!(since.iter().filter(|line| *line == "LEFT check exit").count(), 1, "{since:?}");
}

#[test]
fn a_message_said_while_nats_restarts_under_running_servers_arrives_once() {
    let test = "a_message_said_while_nats_restarts_under_running_servers_arrives_once";
    let Some(mut nats) = Nats::start(test) else { return };
    let urls = [nats.url()];
    let (one, two) = two_servers(&urls);
    let (mut watcher, _) = join_tagged(&two, "watcher", "");
    let mut ana = one.join("Ana");
    ana.send("MSG before");
    let before = next_events(&mut watcher, 2);
    assert_eq!(lines(&before), ["JOINED Ana", "MSG Ana before"]);

    nats.kill();
    ana.send("MSG during");
    nats.restart();
    // Confirmed once NATS is back (chatd waits up to 45 s for it).
    ana.stream().set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(ana.sync(), Vec::<String>::new());
    ana.send("MSG after");
    let mut bea = two.join("Bea");
    ana.expect("JOINED Bea");
    let after = next_events(&mut watcher, 3);
    assert_eq!(lines(&after), ["MSG Ana during", "MSG Ana after", "JOINED Bea"]);
    assert_gapless(&[before, after].concat());
    bea.send("NAMES");
    bea.expect("NAMES watcher Ana Bea");
}

#[test]
fn the_whole_history_comes_back_at_its_positions_when_everything_restarts() {
    let test = "the_whole_history_comes_back_at_its_positions_when_everything_restarts";
    let Some(mut nats) = Nats::start(test) else { return };
    let urls = [nats.url()];
    let (mut one, mut two) = two_servers(&urls);
    let mut ana = one.join("Ana");
    let mut bea = two.join("Bea");
    ana.expect("JOINED Bea");
    for i in 0..10 {
        ana.send(&format!("MSG a{i}"));
        bea.send(&format!("MSG b{i}"));
    }
    // Every message confirmed.
    ana.sync();
    bea.sync();
    bea.send("EXIT");
    bea.expect_closed_after("BYE exit");
    let (mut check, joined) = join_tagged(&one, "check", " LAST 1000");
    let before = check.sync().iter().map(|line| seen(line)).collect::<Vec<_>>();
    assert_eq!(before.len(), 23, "2 joins, 20 messages, a leave: {before:#?}");
    assert_eq!((before[0].seq, before[22].seq), (1, 23), "{before:#?}");
    assert_eq!(joined.seq, Some(23));
    assert_gapless(&before);
    // Nobody left to leave when the servers stop: the history after the
    // restart is known to the event.
    for member in [&mut ana, &mut check] {
        member.send("EXIT");
        member.expect_closed_after("BYE exit");
    }
    for chatd in [&mut one, &mut two] {
        chatd.signal(Signal::SIGTERM);
        assert!(chatd.wait().success(), "{}", chatd.stderr());
    }
    nats.kill();
    nats.restart();
    let (one, two) = two_servers(&urls);

    let (mut again, rejoined) = join_tagged(&one, "again", " LAST 1000");
    assert_eq!(rejoined.epoch, joined.epoch, "the same history");
    let after = again.sync().iter().map(|line| seen(line)).collect::<Vec<_>>();
    assert_eq!(after[..before.len().min(after.len())], before[..], "the past, as it was, where it was");
    assert_eq!(lines(&after[before.len()..]), ["JOINED check", "LEFT Ana exit", "LEFT check exit"]);
    assert_gapless(&after);
    assert_eq!(rejoined.seq, after.last().map(|e| e.seq));

    // The other server serves the same past, and the room goes on after it.
    let (mut other, _) = join_tagged(&two, "other", " LAST 1000");
    let mut on_two = other.sync().iter().map(|line| seen(line)).collect::<Vec<_>>();
    let again_joined = on_two.pop().expect("again's JOINED, after the past");
    assert_eq!(on_two, after);
    assert_eq!((again_joined.seq, again_joined.line.as_str()), (rejoined.seq.unwrap() + 1, "JOINED again"));
    again.send("MSG still here");
    let next = next_events(&mut other, 1).remove(0);
    assert_eq!((next.seq, next.line.as_str()), (again_joined.seq + 2, "MSG again still here"));
}

#[test]
fn rooms_on_one_nats_are_apart_and_each_keeps_its_own_history() {
    let Some(nats) = Nats::start("rooms_on_one_nats_are_apart_and_each_keeps_its_own_history") else { return };
    let urls = [nats.url()];
    let red = ["--room", "red", "--history", "10"];
    let (red1, red2, blue) = (chatd_on(&urls, &red), chatd_on(&urls, &red), chatd_on(&urls, &["--room", "blue"]));
    let (mut in_red, red_joined) = join_tagged(&red1, "Ana", "");
    // Names are the room's own.
    let (mut in_blue, blue_joined) = join_tagged(&blue, "Ana", "");
    assert_ne!(red_joined.epoch, blue_joined.epoch, "two histories");
    for n in 1..=20 {
        in_red.send(&format!("MSG {n}"));
    }
    in_red.sync();
    in_blue.send("NAMES");
    in_blue.expect("NAMES Ana");
    in_blue.expect_quiet();

    // red keeps its last 10 events: a resume from its first is told what
    // is gone, then given the rest, up to its own join.
    let epoch = red_joined.epoch.unwrap();
    let (mut late, joined) = join_tagged(&red2, "late", &format!(" SINCE {epoch}:1"));
    let mut lines = late.sync().into_iter();
    let first = lines.next().unwrap_or_default();
    let missed: u64 = first.strip_prefix("MISSED ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{first:?}"));
    let replay: Vec<Seen> = lines.map(|line| seen(&line)).collect();
    assert_gapless(&replay);
    assert!((9..=10).contains(&replay.len()), "kept: {replay:#?}");
    assert_eq!(replay.first().map(|e| e.seq), Some(1 + missed + 1), "MISSED {missed}, then {replay:#?}");
    assert_eq!(replay.last().map(|e| (e.seq, e.line.as_str())), Some((joined.seq.unwrap(), "MSG Ana 20")));
    assert_eq!(joined.seq, Some(21), "Ana's join and her 20 messages");
}

#[test]
fn chatd_exits_1_naming_the_url_when_nats_cannot_be_reached() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let data = TempDir::new("chatd-data");
    let mut command = Command::new(bin("chatd"));
    command.args(["--bind", "127.0.0.1:0", "--cluster", &url, "--data-dir"]).arg(data.path());
    let mut chatd = Proc::spawn(command, "chatd");
    // Bounded: a chatd that waited forever for NATS fails here.
    let status = chatd.wait();
    let log = chatd.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&url), "{log}");
}

#[test]
fn chatd_exits_1_at_once_asking_for_one_replica_when_nats_is_a_single_server() {
    let Some(nats) = Nats::start("chatd_exits_1_at_once_asking_for_one_replica_when_nats_is_a_single_server") else {
        return;
    };
    let data = TempDir::new("chatd-data");
    let mut command = Command::new(bin("chatd"));
    command.args(["--bind", "127.0.0.1:0", "--cluster", &nats.url(), "--replicas", "3", "--data-dir"]);
    command.arg(data.path());
    let mut chatd = Proc::spawn(command, "chatd");
    // Waiting cannot help here: a chatd that waited out its start-up
    // timeout (30 s) fails `wait`'s patience.
    let status = chatd.wait();
    let log = chatd.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("single server") && log.contains("--replicas 1"), "{log}");
}

/// A server cut off from NATS sends its members away; chat-send says the
/// lines not confirmed again through the other server; then the cut is
/// mended. The first server must not store those lines when NATS answers
/// again: they would be in the room twice. (It did: 1 to 1,024 lines.)
#[test]
fn a_server_that_gets_nats_back_stores_nothing_its_sent_away_member_said_again_elsewhere() {
    let test = "a_server_that_gets_nats_back_stores_nothing_its_sent_away_member_said_again_elsewhere";
    let Some(nats) = Nats::start(test) else { return };
    let relay = Relay::to(nats.port);
    let args = ["--dead-server-timeout", "4s", "--history", "50000"];
    let (one, two) = (chatd_on(&[relay.url()], &args), chatd_on(&[nats.url()], &args));
    let mut watcher = two.join("watcher");
    const COUNT: u64 = 5000;
    let (mut send, writer, _) = bulk_under_way(&one, &two, &mut watcher, COUNT, 1000);
    relay.cut();
    send.expect_stderr("reconnected to");
    relay.mend();
    writer.join().unwrap().expect("all of the input written");
    let status = send.wait();
    assert!(status.success(), "chat-send: {status}: {}", send.stderr());
    // Once `one` has NATS again, a message said there is stored after
    // everything `one` still had to store: its PONG comes after them.
    one.expect_log("NATS answers again");
    let mut probe = join_within(&one, "probe", ELECTION);
    probe.send("MSG after");
    probe.send("PING stored");
    probe.expect("PONG stored");
    assert_each_once(&said_by_bulk(&two, "check", ELECTION), COUNT, "in the room's history");
}
