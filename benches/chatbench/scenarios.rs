//! The scenarios. Each starts its own server, so memory and CPU figures
//! belong to it alone, runs within its time limits, and fills one `Row`.
//! The history ones, chatd's alone, are in `history.rs`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::resource::{getrusage, UsageWho};

use crate::history;
use crate::load::{Load, Pace, Payloads, Role};
use crate::report::Row;
use crate::servers::{Kind, Server, CHAT_SEND};
use crate::system::{machine_busy, now_ns, own_cpu};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Publishers as fast as the server delivers to every subscriber.
    Fanout { subscribers: usize, publishers: usize },
    /// One publisher paced so that subscribers get `deliveries` a second in all.
    Latency { subscribers: usize, deliveries: u64 },
    /// Members that join and then only listen.
    Idle { members: usize },
    /// `chat-send` of `lines` lines, read by one member.
    Bulk { lines: u64 },
    /// `readers` fed at full speed while one more member never reads.
    Slow { readers: usize },
    /// A room of `events` messages; a new member asks for them all with
    /// `JOIN … LAST events`.
    Replay { events: u64 },
    /// A member leaves, `events` events happen, it comes back with `SINCE`.
    Resume { events: u64 },
    /// chatd restarted on a history of `events` messages (`--history events`):
    /// its start-up time, memory, and bytes on disk.
    Startup { events: u64 },
    /// Fan-out through two chatd on one JetStream (the members and the
    /// publishers split between them), beside one chatd and nats-server.
    ClusterFanout { subscribers: usize, publishers: usize },
    /// Latency through two chatd on one JetStream, the publisher on the
    /// first and the subscribers split between them, beside one chatd.
    ClusterLatency { subscribers: usize, deliveries: u64 },
    /// `senders` members (split between the two chatd) publishing as fast
    /// as the room's stream confirms them, beside one chatd.
    ClusterPublish { senders: usize },
    /// Fan-out as `Fanout` runs it, chatd's members in plain text and over
    /// TLS (`Kind::ChatdTls`), side by side.
    TlsFanout { subscribers: usize, publishers: usize },
    /// Idle members as `Idle`, in plain text and over TLS: what TLS adds to
    /// chatd's memory per member.
    TlsIdle { members: usize },
}

/// Durations and sizes, from `--quick` or not.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long publishers publish in fan-out and latency.
    pub run: Duration,
    /// How long the slow scenario publishes: long enough for the silent
    /// member's buffers (its socket's and the server's) to fill.
    pub slow_run: Duration,
    /// Deliveries in flight at full speed (published, not yet read by
    /// every subscriber): enough to keep a server busy, few enough that the
    /// kernel's TCP memory stays far from its pressure limit.
    pub in_flight: u64,
    /// How long deliveries may take to finish after publishing stops.
    pub settle_limit: Duration,
    /// How long the idle members have to join before the scenario gives up.
    pub join_limit: Duration,
    /// How long idle members are held (and kept reading) after joining.
    pub hold: Duration,
    /// How long filling the history for a start-up may take.
    pub fill_limit: Duration,
    /// `--quick`: chatd's variants and Redis streams run in one fan-out only.
    pub quick: bool,
}

impl Settings {
    /// Whether `kind` runs `scenario` in this run.
    pub fn runs(&self, scenario: Scenario, kind: Kind) -> bool {
        let extra = matches!(kind, Kind::ChatdNoStore | Kind::ChatdSyncAlways | Kind::RedisStreams);
        scenario.applies_to(kind)
            && !(self.quick && extra && !matches!(scenario, Scenario::Fanout { publishers: 1, .. }))
    }

    /// Messages in flight for `subscribers`, all publishers together; at
    /// most 32 Ki, so no subscriber is more than 2 MiB behind (chatd's
    /// --max-queue is 4 MiB).
    pub fn window(&self, subscribers: usize) -> u64 {
        (self.in_flight / subscribers as u64).clamp(256, 32 * 1024)
    }
}

/// chatd's options in each scenario, beyond `--bind 127.0.0.1:0 -q` and its
/// data directory: enough clients for the members, and no flood control
/// where publishers must go at full speed (or fill a history fast). Bulk
/// uses the defaults, as a user would; the history is the default's
/// (10,000 events) but for the start-up's big one.
pub fn chatd_options(scenario: Scenario) -> Vec<String> {
    let options: &[&str] = match scenario {
        Scenario::Fanout { .. }
        | Scenario::Latency { .. }
        | Scenario::Slow { .. }
        | Scenario::Replay { .. }
        | Scenario::Resume { .. }
        | Scenario::Startup { .. }
        | Scenario::ClusterFanout { .. }
        | Scenario::ClusterLatency { .. }
        | Scenario::ClusterPublish { .. }
        | Scenario::TlsFanout { .. } => &["--max-clients", "20000", "--rate-limit", "0"],
        Scenario::Idle { .. } | Scenario::TlsIdle { .. } => &["--max-clients", "20000"],
        Scenario::Bulk { .. } => &[],
    };
    let mut options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    if let Scenario::Startup { events } = scenario {
        options.extend(["--history".to_owned(), events.to_string()]);
    }
    options
}

impl Scenario {
    pub fn label(self) -> String {
        match self {
            Scenario::Fanout { subscribers, publishers } => format!("fan-out N={subscribers} P={publishers}"),
            Scenario::Latency { subscribers, deliveries } => {
                format!("latency N={subscribers} @{}k/s", deliveries / 1000)
            }
            Scenario::Idle { members } => format!("idle N={members}"),
            Scenario::Bulk { lines } => format!("bulk {}k lines", lines / 1000),
            Scenario::Slow { readers } => format!("slow 1+{readers}"),
            Scenario::Replay { events } => format!("history LAST {events}"),
            Scenario::Resume { events } => format!("history SINCE +{events}"),
            Scenario::Startup { events } if events % 1_000_000 == 0 => {
                format!("history start-up {}M", events / 1_000_000)
            }
            Scenario::Startup { events } => format!("history start-up {}k", events / 1000),
            Scenario::ClusterFanout { subscribers, publishers } => {
                format!("cluster fan-out N={subscribers} P={publishers}")
            }
            Scenario::ClusterLatency { subscribers, deliveries } => {
                format!("cluster latency N={subscribers} @{}k/s", deliveries / 1000)
            }
            Scenario::ClusterPublish { senders } => format!("cluster publish S={senders}"),
            Scenario::TlsFanout { subscribers, publishers } => format!("tls fan-out N={subscribers} P={publishers}"),
            Scenario::TlsIdle { members } => format!("tls idle N={members}"),
        }
    }

    /// The name `--only` selects it by.
    pub fn group(self) -> &'static str {
        match self {
            Scenario::Fanout { .. } => "fanout",
            Scenario::Latency { .. } => "latency",
            Scenario::Idle { .. } => "idle",
            Scenario::Bulk { .. } => "bulk",
            Scenario::Slow { .. } => "slow",
            Scenario::Replay { .. } | Scenario::Resume { .. } | Scenario::Startup { .. } => "history",
            Scenario::ClusterFanout { .. } | Scenario::ClusterLatency { .. } | Scenario::ClusterPublish { .. } => {
                "cluster"
            }
            Scenario::TlsFanout { .. } | Scenario::TlsIdle { .. } => "tls",
        }
    }

    /// Bulk needs chat-send, which speaks chat only. chatd's variants (the
    /// store off, `--sync always`) show what the store costs where it costs
    /// most: fan-out to 100 members and more.
    ///
    /// The cluster runs its own scenarios alone, beside one chatd (and in
    /// fan-out nats-server's pub/sub); so does TLS, beside chatd in plain
    /// text.
    pub fn applies_to(self, kind: Kind) -> bool {
        match (self, kind) {
            (Scenario::TlsFanout { .. } | Scenario::TlsIdle { .. }, kind) => {
                matches!(kind, Kind::Chatd | Kind::ChatdTls)
            }
            (_, Kind::ChatdTls) => false,
            (Scenario::ClusterFanout { .. }, kind) => matches!(kind, Kind::ChatdCluster | Kind::Chatd | Kind::Nats),
            (Scenario::ClusterLatency { .. } | Scenario::ClusterPublish { .. }, kind) => {
                matches!(kind, Kind::ChatdCluster | Kind::Chatd)
            }
            (_, Kind::ChatdCluster | Kind::NatsJetStream) => false,
            (Scenario::Replay { .. } | Scenario::Resume { .. } | Scenario::Startup { .. }, kind) => kind == Kind::Chatd,
            (Scenario::Fanout { subscribers, .. }, Kind::ChatdNoStore | Kind::ChatdSyncAlways) => subscribers >= 100,
            (_, Kind::ChatdNoStore | Kind::ChatdSyncAlways) => false,
            // A stream's subscriber is blocked in XREAD: it cannot answer the
            // pings that idle and slow rely on.
            (Scenario::Fanout { .. } | Scenario::Latency { .. }, Kind::RedisStreams) => true,
            (_, Kind::RedisStreams) => false,
            (Scenario::Bulk { .. }, kind) => matches!(kind, Kind::Chatd | Kind::Python),
            _ => true,
        }
    }
}

/// Runs `scenario` against a fresh `kind` server and stops it. A failure of
/// the scenario or of the server is in `row.failure`.
pub fn run(scenario: Scenario, kind: Kind, settings: &Settings) -> Row {
    let mut row = Row::new(scenario, kind);
    if kind == Kind::ChatdCluster {
        if let Err(why) = kind.program() {
            row.notes.push(format!("skipped: no nats-server ({why})"));
            return row;
        }
    }
    if let Scenario::Startup { events } = scenario {
        // Starts and stops its servers itself.
        if let Err(e) = history::startup(&mut row, events, settings.fill_limit) {
            row.failure.get_or_insert(format!("{e:#}"));
        }
        return row;
    }
    let options = if kind.is_chatd() { chatd_options(scenario) } else { Vec::new() };
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let mut server = match Server::start(kind, &options) {
        Ok(server) => server,
        Err(e) => {
            row.failure = Some(format!("{e:#}"));
            return row;
        }
    };
    let outcome = match scenario {
        Scenario::Fanout { subscribers, publishers } => fanout(&server, &mut row, subscribers, publishers, settings),
        Scenario::Latency { subscribers, deliveries } => latency(&server, &mut row, subscribers, deliveries, settings),
        Scenario::Idle { members } => idle(&server, &mut row, members, settings),
        Scenario::Bulk { lines } => bulk(&server, &mut row, lines),
        Scenario::Slow { readers } => slow(&server, &mut row, readers, settings),
        Scenario::Replay { events } => history::replay_last(&server, &mut row, events),
        Scenario::Resume { events } => history::resume_since(&server, &mut row, events),
        Scenario::Startup { .. } => unreachable!("handled above"),
        Scenario::ClusterFanout { subscribers, publishers } => {
            fanout(&server, &mut row, subscribers, publishers, settings)
        }
        Scenario::ClusterLatency { subscribers, deliveries } => {
            latency(&server, &mut row, subscribers, deliveries, settings)
        }
        Scenario::ClusterPublish { senders } => publish(&server, &mut row, senders, settings),
        Scenario::TlsFanout { subscribers, publishers } => fanout(&server, &mut row, subscribers, publishers, settings),
        Scenario::TlsIdle { members } => idle(&server, &mut row, members, settings),
    };
    if let Some(suite) = outcome.as_ref().ok().and_then(|load| load.net.tls_suite()) {
        row.notes.push(suite);
    }
    if kind.is_chatd() {
        row.notes.extend(server.logged().map(|log| format!("chatd: {log}")));
    }
    // A crash explains any failure best; then the scenario's own; then a
    // server that would not stop. chatd shutting down sends no LEFT, so our
    // connections are closed only after the SIGTERM.
    let terminated = server.terminate();
    let error = match (terminated, outcome) {
        (Err(crash), _) => Some(crash),
        (Ok(()), Err(e)) => Some(e),
        (Ok(()), Ok(load)) => {
            drop(load);
            server.wait().err()
        }
    };
    if let Some(e) = error {
        row.failure.get_or_insert(format!("{e:#}"));
    }
    row
}

/// CPU used by the server and by this process over a stretch of wall time.
struct Clocks {
    wall: Instant,
    server: Duration,
    own: Duration,
    machine: Duration,
    /// A cluster's processes, each.
    parts: Vec<(&'static str, Duration)>,
}

impl Clocks {
    fn start(server: &Server) -> Clocks {
        Clocks {
            wall: Instant::now(),
            server: server.cpu(),
            own: own_cpu(),
            machine: machine_busy(),
            parts: server.cpu_parts(),
        }
    }

    /// Fills the CPU columns, as a fraction of one core.
    fn stop(&self, server: &Server, row: &mut Row) {
        let wall = self.wall.elapsed().as_secs_f64();
        let (server_cpu, gen_cpu) = (server.cpu() - self.server, own_cpu() - self.own);
        row.cpu_time = Some((server_cpu, gen_cpu));
        row.server_cpu = Some(server_cpu.as_secs_f64() / wall);
        row.gen_cpu = Some(gen_cpu.as_secs_f64() / wall);
        row.machine_cpu = Some((machine_busy() - self.machine).as_secs_f64() / wall);
        let parts: Vec<String> = (self.parts.iter().zip(server.cpu_parts()))
            .map(|((name, before), (_, after))| {
                format!("{name} {:.0}%", (after - *before).as_secs_f64() / wall * 100.0)
            })
            .collect();
        if !parts.is_empty() {
            row.notes.push(format!("srv CPU: {}", parts.join(", ")));
        }
    }
}

fn roles(subscribers: usize, silent: usize, publishers: usize) -> Vec<Role> {
    let mut roles = vec![Role::Subscriber; subscribers];
    roles.extend(vec![Role::Silent; silent]);
    roles.extend(vec![Role::Publisher; publishers]);
    roles
}

/// Connects and joins everyone, then waits until each has read what the
/// joins sent it (chat's `JOINED` lines), so the measurement starts clean.
pub fn join_all(server: &Server, roles: &[Role], payloads: Payloads) -> anyhow::Result<Load> {
    let mut load = Load::new(server.kind.proto(), server.kind.tls(), &server.addrs, payloads)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = load.join(roles, 100, deadline)?;
    ensure!(joined.all, "only {} of {} joined within 30 s: {:?}", load.tally.ready, roles.len(), load.tally.errors);
    let listening: Vec<usize> = (0..load.net.len()).filter(|&id| roles[id] != Role::Silent).collect();
    ensure!(load.barrier(&listening, deadline)?, "no PONG from every member within 30 s: {:?}", load.tally.errors);
    Ok(load)
}

/// `join_all`; in the cluster's scenarios the time it took, from the first
/// connection to every member's `PONG`, goes in the join column (each JOIN
/// and its JOINED lines go through the stream there).
fn join_timed(server: &Server, row: &mut Row, roles: &[Role]) -> anyhow::Result<Load> {
    let start = Instant::now();
    let load = join_all(server, roles, Payloads::Timed)?;
    if row.scenario.group() == "cluster" {
        row.join = Some(start.elapsed());
    }
    Ok(load)
}

/// Fills the delivery columns. A loss or a reordering makes the row a
/// failure; deliveries still missing when the final barrier timed out only
/// make it incomplete (the server was too slow, nothing is known lost).
fn deliveries(load: &Load, row: &mut Row, start_ns: u64, settled: bool, settle_limit: Duration) {
    let tally = &load.tally;
    let (delivered, expected) = (tally.delivered, load.expected());
    row.delivered = Some((delivered, expected));
    let elapsed = tally.last_delivery_ns.saturating_sub(start_ns) as f64 / 1e9;
    if elapsed > 0.0 {
        row.rate = Some(delivered as f64 / elapsed);
    }
    row.latency(&tally.latency);
    let missing = expected.saturating_sub(delivered);
    if tally.out_of_order > 0 || settled && delivered != expected {
        row.failure = Some(format!("LOSS: {missing} deliveries missing, {} out of order", tally.out_of_order));
    } else if !settled {
        row.incomplete = Some(format!(
            "{missing} deliveries still to make when the final PING barrier timed out, {} s after publishing",
            settle_limit.as_secs()
        ));
    }
    if !tally.errors.is_empty() {
        row.notes.push(format!("errors: {}", tally.errors.join("; ")));
    }
}

fn fanout(
    server: &Server,
    row: &mut Row,
    subscribers: usize,
    publishers: usize,
    settings: &Settings,
) -> anyhow::Result<Load> {
    let mut load = join_timed(server, row, &roles(subscribers, 0, publishers))?;
    let clocks = Clocks::start(server);
    let start_ns = load.publish(Pace::Window(settings.window(subscribers) / publishers as u64), settings.run)?;
    let settled = load.settle(Instant::now() + settings.settle_limit)?;
    clocks.stop(server, row);
    deliveries(&load, row, start_ns, settled, settings.settle_limit);
    Ok(load)
}

fn latency(
    server: &Server,
    row: &mut Row,
    subscribers: usize,
    deliveries_per_s: u64,
    settings: &Settings,
) -> anyhow::Result<Load> {
    let mut load = join_timed(server, row, &roles(subscribers, 0, 1))?;
    let clocks = Clocks::start(server);
    let rate = deliveries_per_s as f64 / subscribers as f64;
    let start_ns = load.publish(Pace::Rate(rate), settings.run)?;
    let settled = load.settle(Instant::now() + settings.settle_limit)?;
    clocks.stop(server, row);
    deliveries(&load, row, start_ns, settled, settings.settle_limit);
    Ok(load)
}

fn idle(server: &Server, row: &mut Row, members: usize, settings: &Settings) -> anyhow::Result<Load> {
    // Let the server finish starting before taking its base memory.
    std::thread::sleep(Duration::from_millis(100));
    let before = server.rss_kib()?;
    let mut load = Load::new(server.kind.proto(), server.kind.tls(), &server.addrs, Payloads::Timed)?;
    let clocks = Clocks::start(server);
    let start_ns = now_ns();
    let joined = load.join(&vec![Role::Subscriber; members], 100, Instant::now() + settings.join_limit)?;
    if joined.all {
        row.join = Some(joined.elapsed);
    } else {
        let last = load.tally.last_ready_ns.saturating_sub(start_ns) as f64 / 1e9;
        row.notes.push(format!(
            "only {} of {members} joined within {} s (the last at {last:.2} s)",
            load.tally.ready,
            settings.join_limit.as_secs()
        ));
    }
    // Held: every member answers a PING after the joins' traffic has drained
    // and a while has passed, and none was dropped.
    let drain_start = Instant::now();
    let all = load.ready_ids();
    let answered = load.barrier(&all, Instant::now() + settings.join_limit)?;
    let drained = drain_start.elapsed();
    load.idle(settings.hold)?;
    let answered = answered && load.barrier(&all, Instant::now() + Duration::from_secs(10))?;
    clocks.stop(server, row);
    let after = server.rss_kib()?;
    // Per member that joined: a server that could not take them all still
    // holds the ones it did.
    row.rss_per_member_kib = Some(after.saturating_sub(before) as f64 / load.tally.ready.max(1) as f64);
    row.held = Some(joined.all && answered && load.tally.closed == 0);
    row.notes.push(format!("RSS {} → {} MiB", before / 1024, after / 1024));
    if drained > Duration::from_millis(50) {
        row.notes.push(format!("join traffic drained {:.2} s later", drained.as_secs_f64()));
    }
    if !load.tally.errors.is_empty() {
        row.notes.push(format!("errors: {}", load.tally.errors.join("; ")));
    }
    Ok(load)
}

fn bulk(server: &Server, row: &mut Row, lines: u64) -> anyhow::Result<Load> {
    let mut load = join_all(server, &[Role::Subscriber], Payloads::Counter)?;
    let input = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chatbench-seq.txt");
    let mut file = File::create(&input)?;
    for n in 1..=lines {
        writeln!(file, "{n}")?;
    }
    drop(file);
    let children_before = children_cpu();
    let clocks = Clocks::start(server);
    let start = Instant::now();
    let mut child = Command::new(CHAT_SEND)
        .args(["--server", &server.addr.to_string(), "--name", "bulk"])
        .stdin(File::open(&input)?)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting chat-send")?;
    let deadline = start + Duration::from_secs(30);
    let mut exited = None;
    while exited.is_none() || load.tally.delivered < lines {
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("chat-send did not finish within 30 s ({} of {lines} lines delivered)", load.tally.delivered);
        }
        load.net.poll(Duration::from_millis(1), &mut load.tally)?;
        if exited.is_none() {
            if let Some(status) = child.try_wait()? {
                exited = Some((start.elapsed(), status));
            }
        }
    }
    let (wall, status) = exited.expect("loop ends after the exit");
    clocks.stop(server, row);
    row.gen_cpu = row.gen_cpu.map(|own| own + (children_cpu() - children_before).as_secs_f64() / wall.as_secs_f64());
    if !status.success() {
        let mut why = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut why);
        }
        bail!("chat-send failed ({status}): {}", why.trim());
    }
    row.wall = Some(wall);
    row.rate = Some(lines as f64 / wall.as_secs_f64());
    row.delivered = Some((load.tally.delivered, lines));
    row.notes.push(format!("seq {lines} | chat-send: {:.3} s (gen CPU includes chat-send)", wall.as_secs_f64()));
    if load.tally.delivered != lines || load.tally.out_of_order > 0 {
        row.failure = Some(format!(
            "LOSS: {} of {lines} lines read, {} out of order",
            load.tally.delivered, load.tally.out_of_order
        ));
    }
    Ok(load)
}

/// Messages in flight per sender in the publish scenario: 4 batches of
/// 256, each followed by a PING.
const PUBLISH_WINDOW: u64 = 1024;

/// `senders` members publish for the run, each at most `PUBLISH_WINDOW`
/// messages ahead of the PONGs it has had. Figure: messages confirmed (a
/// PONG after them) a second, from the first sent to the last PONG. Every
/// sender is a member and reads every message too, as a room's members do.
fn publish(server: &Server, row: &mut Row, senders: usize, settings: &Settings) -> anyhow::Result<Load> {
    let mut load = join_timed(server, row, &roles(0, 0, senders))?;
    let clocks = Clocks::start(server);
    let (start_ns, settled) =
        load.publish_acked(PUBLISH_WINDOW, settings.run, Instant::now() + settings.run + settings.settle_limit)?;
    clocks.stop(server, row);
    let (acked, sent) = (load.acked(), load.sent());
    let elapsed = load.tally.last_ack_ns.saturating_sub(start_ns) as f64 / 1e9;
    if elapsed > 0.0 {
        row.rate = Some(acked as f64 / elapsed);
    }
    let senders = if senders == 1 { "1 sender".to_owned() } else { format!("{senders} senders") };
    row.notes.push(format!(
        "msgs/s: {acked} messages confirmed by PONG in {elapsed:.2} s, {senders}, {PUBLISH_WINDOW} in flight each"
    ));
    if !settled {
        row.incomplete = Some(format!(
            "{} of {sent} messages still unconfirmed {} s after publishing",
            sent - acked,
            settings.settle_limit.as_secs()
        ));
    }
    if !load.tally.errors.is_empty() {
        row.notes.push(format!("errors: {}", load.tally.errors.join("; ")));
    }
    Ok(load)
}

/// CPU used by reaped child processes (chat-send, once waited for).
fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage(RUSAGE_CHILDREN) cannot fail");
    let (user, system) = (usage.user_time(), usage.system_time());
    Duration::from_micros(((user.tv_sec() + system.tv_sec()) * 1_000_000 + user.tv_usec() + system.tv_usec()) as u64)
}

fn slow(server: &Server, row: &mut Row, readers: usize, settings: &Settings) -> anyhow::Result<Load> {
    let mut load = join_all(server, &roles(readers, 1, 1), Payloads::Timed)?;
    let silent = load.ids(Role::Silent)[0];
    let clocks = Clocks::start(server);
    let start_ns = load.publish(Pace::Window(settings.window(readers)), settings.slow_run)?;
    // A server that lets the silent member block everyone never settles: do
    // not wait long for it.
    let settle_limit = Duration::from_secs(3);
    let settled = load.settle(Instant::now() + settle_limit)?;
    clocks.stop(server, row);
    deliveries(&load, row, start_ns, settled, settle_limit);
    let stall = load.longest_gap_ns();
    row.stall_ns = Some(stall);
    let dropped = load.tally.lefts.iter().find(|(_, text)| text.starts_with(&format!("q{readers} ")));
    let fate = match dropped {
        Some((t, text)) => {
            format!("never-reader dropped (LEFT {text}) at {:.2} s", t.saturating_sub(start_ns) as f64 / 1e9)
        }
        None if load.net.peer_closed(silent) => "never-reader disconnected by the server".into(),
        None => "never-reader still connected".into(),
    };
    row.notes.insert(0, format!("longest stall {}; {fate}", crate::report::nanos(stall)));
    Ok(load)
}
