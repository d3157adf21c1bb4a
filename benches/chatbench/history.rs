//! The history scenarios, chatd only (the peers keep no room history):
//! a replay of the room's latest events (`JOIN … LAST n`), a resume after a
//! lost connection (`JOIN … SINCE epoch:seq`), and a start-up over a big
//! history, with what it costs in memory and on disk.
//!
//! A member here is a plain blocking connection with tags on (`TAGS`), read
//! line by line: every wait has a deadline, and a replay that comes back
//! short is counted and said, never waited for. A `PING` sent right after
//! the `JOIN` marks the end of the replay (its `PONG` comes after the whole
//! replay), so even a chatd that keeps nothing answers at once.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::load::{Load, Payloads, Role};
use crate::report::Row;
use crate::scenarios::{chatd_options, join_all, Scenario};
use crate::servers::{DataDir, Kind, Server};
use crate::wire::parse_payload;

/// How long a replay, a join or a reply may take before the scenario says
/// what it got and gives up.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// Publishers filling the history: a few, so chatd's reading of them can
/// spread over its threads.
const FILL_PUBLISHERS: usize = 2;

/// One member's connection, with tags on.
struct Member {
    reader: BufReader<TcpStream>,
    /// The line being read: bytes, as a read timeout may cut a character.
    line: Vec<u8>,
}

impl Member {
    /// Connects, reads `HELLO` and turns tags on.
    fn connect(addr: SocketAddr) -> anyhow::Result<Member> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("connecting")?;
        stream.set_nodelay(true)?;
        // Reads wake at least this often to look at the deadline.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut member = Member { reader: BufReader::with_capacity(256 * 1024, stream), line: Vec::new() };
        let deadline = Instant::now() + REPLY_LIMIT;
        member.expect("HELLO", deadline)?;
        member.send("TAGS\n")?;
        member.expect("OK TAGS", deadline)?;
        Ok(member)
    }

    fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(text.as_bytes()).context("sending to chatd")
    }

    /// The next line, without its `\n`, or `None` once `deadline` has passed.
    fn next_line(&mut self, deadline: Instant) -> anyhow::Result<Option<&str>> {
        self.line.clear();
        loop {
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => bail!("chatd closed the connection"),
                Ok(_) if self.line.ends_with(b"\n") => {
                    self.line.pop();
                    let line = std::str::from_utf8(&self.line).context("a line from chatd that is not UTF-8")?;
                    return Ok(Some(line));
                }
                // The rest of a line cut by a timeout: read_until keeps
                // what it read.
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading from chatd"),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Reads until a line whose event (after its tags) starts with `start`;
    /// returns that line's tags and event.
    fn expect(&mut self, start: &str, deadline: Instant) -> anyhow::Result<(String, String)> {
        loop {
            let Some(line) = self.next_line(deadline)? else {
                bail!("no {start:?} from chatd within {} s", REPLY_LIMIT.as_secs())
            };
            let (tags, event) = split_tags(line);
            if event.starts_with(start) {
                return Ok((tags.to_owned(), event.to_owned()));
            }
            if event.starts_with("ERR ") || event.starts_with("BYE ") {
                bail!("waiting for {start:?}, chatd said {event:?}");
            }
        }
    }

    /// Joins as `name` (with nothing replayed) and waits until joined.
    fn join(&mut self, name: &str) -> anyhow::Result<Joined> {
        self.send(&format!("JOIN {name}\nPING joined\n"))?;
        let deadline = Instant::now() + REPLY_LIMIT;
        let (tags, _) = self.expect("OK JOIN", deadline)?;
        let joined = Joined::from_tags(&tags)?;
        self.expect("PONG joined", deadline)?;
        Ok(joined)
    }

    /// Sends `join` and a `PING` behind it, and reads the replay that comes
    /// between the `OK JOIN` and the `PONG`, timing it.
    fn replay(&mut self, join: &str) -> anyhow::Result<Replay> {
        let start = Instant::now();
        self.send(&format!("{join}\nPING replayed\n"))?;
        let deadline = start + REPLY_LIMIT;
        let mut replay = Replay::default();
        let mut joined = None;
        loop {
            let Some(line) = self.next_line(deadline)? else {
                replay.timed_out = true;
                return Ok(replay);
            };
            let (tags, event) = split_tags(line);
            if event.starts_with("OK JOIN") {
                joined = Some(Joined::from_tags(tags)?);
            } else if event == "PONG replayed" {
                replay.joined = joined;
                return Ok(replay);
            } else if let Some(n) = event.strip_prefix("MISSED ") {
                replay.missed = Some(n.to_owned());
            } else if event.starts_with("ERR ") || event.starts_with("BYE ") {
                bail!("{join}: chatd said {event:?}");
            } else if let (Some(seq), Some(j)) = (tag(tags, "seq"), &joined) {
                let seq: u64 = seq.parse().map_err(|_| anyhow!("odd seq tag in {line:?}"))?;
                if seq > j.seq {
                    continue; // a live event, after the replay
                }
                replay.lines += 1;
                replay.last_line = Some(start.elapsed());
                if let Some(text) = event.strip_prefix("MSG ") {
                    replay.message(text);
                }
            }
        }
    }
}

/// What a tagged `OK JOIN` says.
#[derive(Debug, Clone)]
struct Joined {
    epoch: String,
    /// The last position of the past: the replay ends with it.
    seq: u64,
}

impl Joined {
    fn from_tags(tags: &str) -> anyhow::Result<Joined> {
        let epoch = tag(tags, "epoch").ok_or_else(|| anyhow!("OK JOIN without an epoch tag ({tags:?})"))?;
        let seq = tag(tags, "seq").and_then(|s| s.parse().ok());
        let seq = seq.ok_or_else(|| anyhow!("OK JOIN without a seq tag ({tags:?})"))?;
        Ok(Joined { epoch: epoch.to_owned(), seq })
    }
}

/// A replay as read.
#[derive(Debug, Default)]
struct Replay {
    joined: Option<Joined>,
    /// Replayed event lines, and `MSG`s among them.
    lines: u64,
    messages: u64,
    /// A message that was not the next one of its publisher.
    out_of_order: u64,
    next: Vec<Option<u64>>,
    /// From sending the `JOIN` to reading the last replayed line.
    last_line: Option<Duration>,
    missed: Option<String>,
    timed_out: bool,
}

impl Replay {
    /// `MSG <from> <payload>`: each publisher's sequence numbers must follow
    /// one another (where the replay starts is free).
    fn message(&mut self, text: &str) {
        self.messages += 1;
        let payload = text.split_once(' ').map_or("", |(_, payload)| payload);
        let Some((publisher, seq, _)) = parse_payload(payload.as_bytes()) else {
            self.out_of_order += 1;
            return;
        };
        if self.next.len() <= publisher {
            self.next.resize(publisher + 1, None);
        }
        if self.next[publisher].is_some_and(|next| next != seq) {
            self.out_of_order += 1;
        }
        self.next[publisher] = Some(seq + 1);
    }
}

/// `@a=1;b=2 EVENT` → (`a=1;b=2`, `EVENT`); an untagged line has no tags.
fn split_tags(line: &str) -> (&str, &str) {
    match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
        Some((tags, event)) => (tags, event),
        None => ("", line),
    }
}

fn tag<'a>(tags: &'a str, name: &str) -> Option<&'a str> {
    tags.split(';').find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
}

/// Whether chatd wrote a history to `data`: a store keeps `*.log` segments.
fn keeps_history(server: &Server) -> bool {
    server.data().and_then(|d| d.files(".log").ok()).is_some_and(|(count, _, _)| count > 0)
}

/// Joins the publishers that will fill a history of `events` messages:
/// one, or a few for a big one.
fn fillers(server: &Server, events: u64) -> anyhow::Result<Load> {
    let publishers = if events >= 100_000 { FILL_PUBLISHERS } else { 1 };
    join_all(server, &vec![Role::Publisher; publishers], Payloads::Timed)
}

/// Has the publishers of `load` publish `events` messages, pipelined,
/// noting how fast in `row`. Returns how many the server took.
fn fill(load: &mut Load, row: &mut Row, events: u64, limit: Duration) -> anyhow::Result<u64> {
    let start = Instant::now();
    let (sent, took) = load.fill(events, start + limit)?;
    let took_s = start.elapsed().as_secs_f64();
    if !took {
        bail!("chatd did not take the {sent} messages published within {} s", limit.as_secs());
    }
    let publishers = load.ids(Role::Publisher).len();
    row.notes.push(format!(
        "filled with {sent} messages in {took_s:.2} s ({:.0}k/s, {publishers} publisher{})",
        sent as f64 / took_s / 1e3,
        if publishers == 1 { "" } else { "s" }
    ));
    if sent < events {
        row.notes.push(format!(
            "NOTE: only {sent} of {events} messages could be published within {} s on this machine",
            limit.as_secs()
        ));
    }
    Ok(sent)
}

/// Fills in the row what a replay of `asked` events gave. A short replay
/// fails the row when chatd has a store, and is only incomplete when it
/// kept nothing at all (a build without the store).
fn judge(server: &Server, row: &mut Row, replay: &Replay, asked: u64, what: &str) {
    row.delivered = Some((replay.lines, asked));
    if let Some(elapsed) = replay.last_line {
        row.wall = Some(elapsed);
        row.rate = Some(replay.lines as f64 / elapsed.as_secs_f64());
    }
    let time = replay.last_line.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
    row.notes.insert(0, format!("{what}: {} lines ({} MSG), the last after {time}", replay.lines, replay.messages));
    if let Some(missed) = &replay.missed {
        row.notes.push(format!("MISSED {missed}"));
    }
    if replay.out_of_order > 0 {
        row.failure = Some(format!("{} replayed messages out of order", replay.out_of_order));
    } else if replay.timed_out {
        row.failure = Some(format!(
            "SHORT: the replay did not end within {} s ({} of {asked} lines)",
            REPLY_LIMIT.as_secs(),
            replay.lines
        ));
    } else if replay.lines < asked {
        let short = format!("SHORT: {} of {asked} events replayed", replay.lines);
        if keeps_history(server) {
            row.failure = Some(short);
        } else {
            row.incomplete = Some(format!("{short}; this chatd wrote no *.log to its --data-dir: no store in it?"));
        }
    } else if replay.lines > asked {
        row.failure = Some(format!("{} lines replayed, {asked} asked for", replay.lines));
    }
}

/// (a) A room of `events` messages; a new member joins with `LAST events`.
pub fn replay_last(server: &Server, row: &mut Row, events: u64) -> anyhow::Result<Load> {
    let mut load = fillers(server, events)?;
    let sent = fill(&mut load, row, events, REPLY_LIMIT)?;
    let mut member = Member::connect(server.addr)?;
    let replay = member.replay(&format!("JOIN r LAST {events}"))?;
    judge(server, row, &replay, sent, &format!("JOIN r LAST {events}"));
    Ok(load)
}

/// (b) A member notes its position and leaves; `events` events happen (its
/// own `LEFT` and `events - 1` messages); it comes back with `SINCE`.
pub fn resume_since(server: &Server, row: &mut Row, events: u64) -> anyhow::Result<Load> {
    let deadline = Instant::now() + REPLY_LIMIT;
    let mut load = fillers(server, events)?;
    let mut member = Member::connect(server.addr)?;
    let joined = member.join("m")?;
    // The position a client keeps: where its last PONG fell (chatd tags it),
    // after its own JOINED.
    member.send("PING position\n")?;
    let (tags, _) = member.expect("PONG position", deadline)?;
    let position = tag(&tags, "seq").and_then(|s| s.parse().ok()).unwrap_or(joined.seq);
    member.send("EXIT\n")?;
    member.expect("BYE", deadline)?;
    drop(member);
    let sent = fill(&mut load, row, events - 1, REPLY_LIMIT)?;
    let mut member = Member::connect(server.addr)?;
    let since = format!("JOIN m SINCE {}:{position}", joined.epoch);
    let replay = member.replay(&since)?;
    judge(server, row, &replay, sent + 1, &since);
    if let Some(again) = &replay.joined {
        if again.epoch != joined.epoch {
            row.failure.get_or_insert(format!("the epoch changed from {} to {}", joined.epoch, again.epoch));
        }
    }
    Ok(load)
}

/// (c), (d), (e): chatd with `--history events` is filled, stopped, and
/// started again on its history: how long it takes to listen, its memory
/// with one member against an empty room's, and the bytes the store took.
pub fn startup(row: &mut Row, events: u64, fill_limit: Duration) -> anyhow::Result<()> {
    let options = chatd_options(Scenario::Startup { events });
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let data = DataDir::new("chatd-startup")?;

    let mut first = Server::start_on(Kind::Chatd, &options, Some(Rc::clone(&data)), REPLY_LIMIT)?;
    let mut load = fillers(&first, events)?;
    let sent = fill(&mut load, row, events, fill_limit)?;
    let publishers = load.ids(Role::Publisher).len() as u64;
    let kept_any = keeps_history(&first);
    first.terminate()?;
    drop(load);
    first.wait()?;

    let written = sent + publishers; // their JOINEDs too
    let (files, bytes, disk) = data.files(".log")?;
    if files > 0 {
        row.bytes_per_event = Some(bytes as f64 / written as f64);
        row.notes.push(format!(
            "store: {files} *.log files, {:.1} MiB for {written} events ({:.1} MiB on disk)",
            bytes as f64 / 1048576.0,
            disk as f64 / 1048576.0
        ));
    } else {
        row.notes.push("no *.log in the data dir: this chatd keeps no history (no store in it?)".into());
    }

    let (with_history, joined) = started_with_member(Some(data), &options)?;
    let empty = started_with_member(None, &options)?.0;
    row.startup = Some((with_history.startup, empty.startup));
    row.rss_history_kib = Some((with_history.rss_kib, empty.rss_kib));
    row.wall = Some(with_history.startup);
    row.notes.insert(
        0,
        format!(
            "start-up {:.3} s with the history, {:.3} s empty; RSS {:.1} MiB with it, {:.1} MiB empty",
            with_history.startup.as_secs_f64(),
            empty.startup.as_secs_f64(),
            with_history.rss_kib as f64 / 1024.0,
            empty.rss_kib as f64 / 1024.0
        ),
    );
    if joined.seq < sent {
        let lost = format!("after the restart the room's last position is {}, not {sent} or more", joined.seq);
        if kept_any {
            bail!("history lost: {lost}");
        }
        row.incomplete = Some(format!("no history kept: {lost}"));
    }
    Ok(())
}

/// What a chatd just started measured.
struct Started {
    startup: Duration,
    rss_kib: u64,
}

/// Starts chatd (on `data`, or a new directory), joins one member, reads
/// its memory, and stops it.
fn started_with_member(data: Option<Rc<DataDir>>, options: &[&str]) -> anyhow::Result<(Started, Joined)> {
    let mut server = Server::start_on(Kind::Chatd, options, data, REPLY_LIMIT)?;
    let mut member = Member::connect(server.addr)?;
    let joined = member.join("r")?;
    let started = Started { startup: server.startup, rss_kib: server.rss_kib()? };
    server.terminate()?;
    drop(member);
    server.wait()?;
    Ok((started, joined))
}
