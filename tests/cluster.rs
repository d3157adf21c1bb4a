//! The cluster's bridge to JetStream (`minichat::cluster`) against real
//! nats-server processes on 127.0.0.1: one order for every server, dedupe,
//! subscriptions and replays, names claimed once across the cluster, dead
//! servers' names freed, and nothing acknowledged lost when NATS restarts or
//! a cluster node dies. `MINICHAT_NATS_SERVER` chooses the nats-server.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use minichat::cluster::{Bridge, Claim, Delivery, Options};
use minichat::history::Event;

use crate::util::nats::{free_port, server_or_skip, Nats, NatsCluster};
use crate::util::PATIENCE;

/// How long a leader election may take (nats-server 2.9: about 30 s).
const ELECTION: Duration = Duration::from_secs(45);

fn options() -> Options {
    Options { keep: 1000, ..Options::default() }
}

fn bridge(urls: &[String], options: Options) -> Bridge {
    Bridge::connect(urls, "lobby", options).unwrap_or_else(|e| panic!("connect to {urls:?}: {e:#}"))
}

/// The next `n` events of a subscription, checking they follow each other.
fn take_events(deliveries: &mpsc::Receiver<Delivery>, n: usize) -> Vec<Event> {
    take_events_within(deliveries, n, PATIENCE)
}

/// The same, waiting up to `patience` for each.
fn take_events_within(deliveries: &mpsc::Receiver<Delivery>, n: usize, patience: Duration) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while events.len() < n {
        match deliveries.recv_timeout(patience) {
            Ok(Delivery::Event { event, .. }) => {
                if let Some(last) = events.last() {
                    assert_eq!(event.seq, last.seq + 1, "a gap or a repeat after {}", last.seq);
                }
                events.push(event);
            }
            Ok(missed) => panic!("unexpected {missed:?} after {} events", events.len()),
            Err(e) => panic!("{e} after {} of {n} events", events.len()),
        }
    }
    events
}

fn read_all(bridge: &Bridge, from: u64, to: u64) -> Vec<Event> {
    bridge.read(from, to).unwrap().flat_map(|chunk| chunk.unwrap()).collect()
}

#[test]
fn two_bridges_publish_in_one_order_with_dedupe() {
    let Some(nats) = Nats::start("two_bridges_publish_in_one_order_with_dedupe") else { return };
    let urls = [nats.url()];
    let bridges = [Arc::new(bridge(&urls, options())), Arc::new(bridge(&urls, options()))];
    let (tx_a, seen_a) = mpsc::channel();
    let (tx_b, seen_b) = mpsc::channel();
    let _subs = (bridges[0].subscribe(1, tx_a), bridges[1].subscribe(1, tx_b));
    let talkers: Vec<_> = bridges
        .iter()
        .enumerate()
        .map(|(who, bridge)| {
            let bridge = Arc::clone(bridge);
            thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let line = format!("MSG s{who} {i}\n");
                        (bridge.publish(line.as_bytes(), &format!("s{who}-{i}"), PATIENCE).unwrap(), line)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acked: BTreeMap<u64, String> = talkers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
    let (a, b) = (take_events(&seen_a, 100), take_events(&seen_b, 100));
    assert_eq!(a, b, "both servers see one order");
    for event in &a {
        assert_eq!(String::from_utf8_lossy(&event.line), acked[&event.seq], "at {}", event.seq);
    }
    // The same id again, from either server: stored once, the first position.
    assert_eq!(
        bridges[1].publish(b"MSG s0 7 again\n", "s0-7", PATIENCE),
        Ok(acked.iter().find(|(_, l)| *l == "MSG s0 7\n").unwrap().0.to_owned())
    );
    assert_eq!(bridges[0].kept().unwrap().last, 100);
    let epoch = bridges[0].epoch();
    assert_eq!(epoch, bridges[1].epoch(), "one history");
    assert!(epoch.len() <= 32 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()), "{epoch}");
}

#[test]
fn a_subscription_from_a_position_gets_exactly_the_rest() {
    let Some(nats) = Nats::start("a_subscription_from_a_position_gets_exactly_the_rest") else { return };
    let bridge = bridge(&[nats.url()], options());
    for i in 1..=20 {
        assert_eq!(bridge.publish(format!("MSG {i}\n").as_bytes(), &format!("m{i}"), PATIENCE), Ok(i));
    }
    let (tx, deliveries) = mpsc::channel();
    let _sub = bridge.subscribe(8, tx);
    let past = take_events(&deliveries, 13);
    assert_eq!((past[0].seq, past[12].seq, &past[0].line[..]), (8, 20, &b"MSG 8\n"[..]));
    for i in 21..=25 {
        bridge.publish(format!("MSG {i}\n").as_bytes(), &format!("m{i}"), PATIENCE).unwrap();
    }
    let live = take_events(&deliveries, 5);
    assert_eq!((live[0].seq, live[4].seq), (21, 25));
    assert!(deliveries.recv_timeout(Duration::from_millis(300)).is_err(), "nothing more");
}

#[test]
fn reads_give_the_asked_range_of_what_is_kept() {
    let Some(nats) = Nats::start("reads_give_the_asked_range_of_what_is_kept") else { return };
    let bridge = bridge(&[nats.url()], Options { keep: 600, ..options() });
    let empty = bridge.kept().unwrap();
    assert_eq!((empty.first, empty.last, empty.last_time_ms), (1, 0, 0));
    assert!(read_all(&bridge, 1, 10).is_empty());
    for i in 1..=700u64 {
        bridge.publish(format!("MSG {i}\n").as_bytes(), &format!("m{i}"), PATIENCE).unwrap();
    }
    let kept = bridge.kept().unwrap();
    assert_eq!((kept.first, kept.last), (101, 700));
    assert!(kept.last_time_ms > 1_600_000_000_000);
    let chunks: Vec<usize> = bridge.read(1, 700).unwrap().map(|chunk| chunk.unwrap().len()).collect();
    assert_eq!(chunks, [256, 256, 88], "what is kept, a chunk at a time");
    let some = read_all(&bridge, 150, 160);
    assert_eq!(some.iter().map(|e| e.seq).collect::<Vec<_>>(), (150..=160).collect::<Vec<_>>());
    assert_eq!(some[0].line, b"MSG 150\n");
    assert!(some.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    assert_eq!(read_all(&bridge, 695, 9999).len(), 6);
    assert!(read_all(&bridge, 701, 800).is_empty());
}

#[test]
fn one_of_sixty_claims_of_a_name_wins() {
    let Some(nats) = Nats::start("one_of_sixty_claims_of_a_name_wins") else { return };
    let urls = [nats.url()];
    let bridges = [Arc::new(bridge(&urls, options())), Arc::new(bridge(&urls, options()))];
    let claims: Vec<_> = (0..60)
        .map(|i| {
            let bridge = Arc::clone(&bridges[i % 2]);
            thread::spawn(move || (i, bridge.claim("ana", format!("token{i}").as_bytes()).unwrap()))
        })
        .collect();
    let claims: Vec<_> = claims.into_iter().map(|c| c.join().unwrap()).collect();
    let winners: Vec<usize> = claims.iter().filter(|(_, c)| matches!(c, Claim::Claimed(_))).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let winner = &bridges[winners[0] % 2];
    let holder = winner.holder("ana").unwrap().unwrap();
    assert_eq!(
        (holder.server.as_str(), holder.value.clone()),
        (winner.server_id(), format!("token{}", winners[0]).into_bytes())
    );
    for (_, claim) in &claims {
        assert!(matches!(claim, Claim::Claimed(_)) || *claim == Claim::Taken(holder.clone()), "{claim:?}");
    }
    let other = &bridges[1 - winners[0] % 2];
    assert_eq!(other.release("ana"), Ok(false), "only its holder releases a name");
    assert_eq!(winner.release("ana"), Ok(true));
    assert_eq!(other.holder("ana"), Ok(None));
    assert!(matches!(other.claim("ana", b"mine"), Ok(Claim::Claimed(_))));
    assert!(matches!(other.claim("Josè 李", b"x"), Ok(Claim::Claimed(_))), "any name");
}

/// Not a test of its own: the process `a_dead_servers_names_are_freed`
/// kills. With `MINICHAT_TEST_HOLDER=URL` it holds the name `ana` and says
/// `HOLDING <server id>`, then waits to be killed.
#[test]
#[ignore]
fn holder_process() {
    let Ok(url) = std::env::var("MINICHAT_TEST_HOLDER") else { return };
    let bridge = bridge(
        &[url],
        Options { dead_after: Duration::from_secs(2), start_timeout: Duration::from_secs(5), ..options() },
    );
    assert!(matches!(bridge.claim("ana", b"held"), Ok(Claim::Claimed(_))));
    println!("HOLDING {}", bridge.server_id());
    let mut line = String::new();
    // Until killed (or its standard input closes).
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_dead_servers_names_are_freed_within_the_bound() {
    let Some(nats) = Nats::start("a_dead_servers_names_are_freed_within_the_bound") else { return };
    let urls = [nats.url()];
    let dead_after = Duration::from_secs(2);
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["cluster::holder_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("MINICHAT_TEST_HOLDER", &urls[0])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The harness may print `test … ... ` before it, on the same line.
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let holding =
        (&mut out).lines().map_while(Result::ok).find_map(|l| l.split_once("HOLDING ").map(|(_, id)| id.to_owned()));
    let holding = holding.expect("the holder claimed its name");
    let watcher = bridge(&urls, Options { dead_after, ..options() });
    let alive = bridge(&urls, Options { dead_after, ..options() });
    assert!(matches!(alive.claim("luis", b"alive"), Ok(Claim::Claimed(_))));
    let (tx, freed) = mpsc::channel();
    let _watch = watcher.watch_dead(tx);
    assert!(matches!(watcher.claim("ana", b"x"), Ok(Claim::Taken(h)) if h.server == holding));

    let killed = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let name = freed.recv_timeout(dead_after * 2 + PATIENCE).expect("the dead server's name freed");
    let took = killed.elapsed();
    assert_eq!(
        (name.name_key.as_str(), name.holder.server.as_str(), &name.holder.value[..]),
        ("ana", &holding[..], &b"held"[..])
    );
    // dead_after, give or take the expiry timer and a scan.
    println!("freed {took:?} after the kill");
    assert!(took <= dead_after + Duration::from_secs(2), "freed {took:?} after the kill");
    assert!(matches!(watcher.claim("ana", b"mine"), Ok(Claim::Claimed(_))));
    assert!(freed.recv_timeout(Duration::from_millis(1500)).is_err(), "a live server's names are left alone");
    assert!(matches!(watcher.holder("luis"), Ok(Some(h)) if h.server == alive.server_id()));
}

#[test]
fn unreachable_nats_is_named_with_how_to_start_one() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let error = Bridge::connect(std::slice::from_ref(&url), "lobby", options()).unwrap_err().to_string();
    assert!(error.contains(&url) && error.contains("nats-server -js"), "{error}");
}

#[test]
fn nats_without_jetstream_says_so() {
    let Some(binary) = server_or_skip("nats_without_jetstream_says_so") else { return };
    let nats = Nats::start_with(&binary, "plain", &[]);
    let started = Instant::now();
    let error = Bridge::connect(&[nats.url()], "lobby", options()).unwrap_err().to_string();
    assert!(
        error.contains("no JetStream") && error.contains("nats-server -js") && error.contains(&nats.url()),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "said at once");
}

/// Publishes `n` events with ids `tag-i`, each retried with its id until
/// stored: the positions acknowledged.
fn publish_many(
    bridge: Arc<Bridge>,
    tag: &'static str,
    n: usize,
    started: mpsc::Sender<usize>,
) -> thread::JoinHandle<Vec<(u64, String)>> {
    thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..n {
            let line = format!("MSG {tag} {i}\n");
            let deadline = Instant::now() + Duration::from_secs(60);
            let seq = loop {
                match bridge.publish(line.as_bytes(), &format!("{tag}-{i}"), Duration::from_secs(5)) {
                    Ok(seq) => break seq,
                    Err(e) => assert!(Instant::now() < deadline, "event {i} never stored: {e}"),
                }
            };
            acked.push((seq, line));
            let _ = started.send(i);
        }
        acked
    })
}

/// Every acknowledged event is in the stream, at its position, once.
fn check_nothing_lost(bridge: &Bridge, acked: &[(u64, String)], total: usize) {
    let stored = read_all(bridge, 1, u64::MAX);
    let lines: Vec<String> = stored.iter().map(|e| String::from_utf8_lossy(&e.line).into_owned()).collect();
    assert_eq!(lines.iter().collect::<HashSet<_>>().len(), lines.len(), "each event stored once");
    assert_eq!(stored.len(), total, "every event stored");
    for (seq, line) in acked {
        let at = stored.iter().find(|e| e.seq == *seq).unwrap_or_else(|| panic!("{seq} lost"));
        assert_eq!(String::from_utf8_lossy(&at.line), *line);
    }
}

#[test]
fn a_restarted_nats_loses_nothing_acknowledged() {
    let Some(mut nats) = Nats::start("a_restarted_nats_loses_nothing_acknowledged") else { return };
    let bridge = Arc::new(bridge(&[nats.url()], options()));
    let (tx, deliveries) = mpsc::channel();
    let _sub = bridge.subscribe(1, tx);
    let (started_tx, started) = mpsc::channel();
    let publisher = publish_many(Arc::clone(&bridge), "r", 200, started_tx);
    for _ in 0..50 {
        started.recv_timeout(PATIENCE).unwrap();
    }
    nats.kill();
    bridge.wait_status(PATIENCE, |s| !s.connected && s.losses >= 1).expect("the loss reported");
    nats.restart();
    bridge.wait_status(PATIENCE, |s| s.connected).expect("connected again");
    let acked = publisher.join().unwrap();
    check_nothing_lost(&bridge, &acked, 200);
    let seen = take_events(&deliveries, 200);
    assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
}

#[test]
fn three_nodes_keep_acknowledging_when_one_dies() {
    let Some(mut cluster) = NatsCluster::start("three_nodes_keep_acknowledging_when_one_dies") else { return };
    let urls = cluster.urls();
    let bridge = Arc::new(bridge(&urls, Options { replicas: 3, ..options() }));
    let (tx, deliveries) = mpsc::channel();
    let _sub = bridge.subscribe(1, tx);
    let (started_tx, started) = mpsc::channel();
    let publisher = publish_many(Arc::clone(&bridge), "c", 150, started_tx);
    for _ in 0..50 {
        started.recv_timeout(PATIENCE).unwrap();
    }
    // The stream's leader: an election is needed.
    let leader = bridge.leader().unwrap().expect("a stream leader");
    let killed = Instant::now();
    cluster.node(&leader).kill();
    let acked = publisher.join().unwrap();
    println!("{leader} killed: 100 more events stored {:?} later", killed.elapsed());
    let survivors: Vec<String> = cluster.nodes.iter().filter(|n| n.name != leader).map(|n| n.url()).collect();
    let reader = bridge_on(&survivors);
    check_nothing_lost(&reader, &acked, 150);
    println!("read back from the survivors {:?} after the kill", killed.elapsed());
    // A new stream leader, and on nats-server 2.9 maybe a new meta leader
    // before the subscription's consumer can be made again: up to ~30 s.
    let seen = take_events_within(&deliveries, 150, ELECTION);
    println!("the subscription caught up {:?} after the kill", killed.elapsed());
    assert_eq!(seen.last().map(|e| e.seq), Some(150));
}

fn bridge_on(urls: &[String]) -> Bridge {
    bridge(urls, Options { replicas: 3, ..options() })
}
