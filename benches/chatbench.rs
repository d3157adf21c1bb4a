//! chatbench: how fast, how far and how cheaply chatd copies each line to
//! every member, and what its history costs and gives, measured from this
//! process on 127.0.0.1, side by side with nats-server, redis-server (pub/sub
//! and streams) and a plain Python threaded server when they are installed.
//!
//! `cargo bench --bench chatbench -- [--quick] [--only SCENARIO,…] [--against nats,redis,redis-streams,python|none]`
//!
//! The `cluster` scenarios run two chatd on one nats-server's JetStream
//! (`chatd --cluster`, issue 13) beside one chatd alone. The `tls` ones run
//! fan-out and idle members against one chatd build twice: its members in
//! plain text, and speaking TLS from the first byte.
//!
//! The load generator is one thread over epoll, so it stays small next to
//! the server (its CPU is printed beside the server's). The exit status is 0
//! whatever the figures; 1 if the benchmark itself failed against chatd (a
//! lost or reordered message, a history replayed short by a chatd that
//! wrote one, chatd crashed or would not stop); 2 for bad usage.

#[path = "../tests/util/find_nats.rs"]
mod find_nats;
#[path = "chatbench/histogram.rs"]
mod histogram;
#[path = "chatbench/history.rs"]
mod history;
#[path = "chatbench/load.rs"]
mod load;
#[path = "chatbench/net.rs"]
mod net;
#[path = "chatbench/report.rs"]
mod report;
#[path = "chatbench/scenarios.rs"]
mod scenarios;
#[path = "chatbench/servers.rs"]
mod servers;
#[path = "chatbench/system.rs"]
mod system;
#[path = "chatbench/wire.rs"]
mod wire;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use scenarios::{chatd_options, Scenario, Settings};
use servers::Kind;

const USAGE: &str =
    "usage: cargo bench --bench chatbench -- [--quick] [--only fanout,latency,idle,bulk,slow,history,cluster,tls] \
                     [--against nats,redis,redis-streams,python|none]";
const GROUPS: [&str; 8] = ["fanout", "latency", "idle", "bulk", "slow", "history", "cluster", "tls"];

#[derive(Debug)]
struct Options {
    quick: bool,
    only: Vec<String>,
    against: Vec<Kind>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options { quick: false, only: Vec::new(), against: Kind::OTHERS.to_vec() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--quick" => options.quick = true,
            "--only" => {
                let list = args.next().ok_or("--only needs a scenario")?;
                for group in list.split(',') {
                    if !GROUPS.contains(&group) {
                        return Err(format!("unknown scenario {group:?}; choose from {}", GROUPS.join(", ")));
                    }
                    options.only.push(group.to_owned());
                }
            }
            "--against" => {
                let list = args.next().ok_or("--against needs a list")?;
                options.against.clear();
                for name in list.split(',').filter(|n| *n != "none") {
                    let kind = Kind::OTHERS.into_iter().find(|k| k.name() == name).ok_or_else(|| {
                        let names: Vec<&str> = Kind::OTHERS.iter().map(|k| k.name()).collect();
                        format!("unknown server {name:?}; choose from {}", names.join(", "))
                    })?;
                    options.against.push(kind);
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// The scenarios, in order: the full run's sizes, or `--quick`'s smaller ones
/// (under a minute in all, for CI's smoke test).
fn plan(quick: bool) -> (Vec<Scenario>, Settings) {
    let fanout_sizes: &[usize] = if quick { &[100] } else { &[10, 100, 1000] };
    let mut plan = Vec::new();
    for &subscribers in fanout_sizes {
        for publishers in [1, 4] {
            plan.push(Scenario::Fanout { subscribers, publishers });
        }
    }
    let latency_sizes: &[usize] = if quick { &[100] } else { &[100, 1000] };
    plan.extend(latency_sizes.iter().map(|&subscribers| Scenario::Latency { subscribers, deliveries: 100_000 }));
    let idle_sizes: &[usize] = if quick { &[1000] } else { &[1000, 10_000] };
    plan.extend(idle_sizes.iter().map(|&members| Scenario::Idle { members }));
    plan.push(Scenario::Bulk { lines: 100_000 });
    plan.push(Scenario::Slow { readers: 10 });
    // --quick touches the history's code paths with smaller ones.
    let (replayed, kept) = if quick { (1000, 100_000) } else { (10_000, 1_000_000) };
    plan.push(Scenario::Replay { events: replayed });
    plan.push(Scenario::Resume { events: replayed });
    plan.push(Scenario::Startup { events: kept });
    // Two chatd on one JetStream, beside one chatd: --quick with 100 members.
    let members = if quick { 100 } else { 1000 };
    plan.push(Scenario::ClusterFanout { subscribers: members, publishers: 2 });
    let latency_sizes: &[usize] = if quick { &[100] } else { &[100, 1000] };
    plan.extend(latency_sizes.iter().map(|&subscribers| Scenario::ClusterLatency { subscribers, deliveries: 100_000 }));
    plan.push(Scenario::ClusterPublish { senders: 4 });
    // Plain text beside TLS, one chatd build: fan-out as above, and idle
    // members for the memory TLS adds to each.
    let tls_sizes: &[(usize, usize)] = if quick { &[(100, 1)] } else { &[(100, 1), (100, 4), (1000, 1), (1000, 4)] };
    plan.extend(tls_sizes.iter().map(|&(subscribers, publishers)| Scenario::TlsFanout { subscribers, publishers }));
    plan.push(Scenario::TlsIdle { members: 1000 });
    let settings = if quick {
        Settings {
            run: Duration::from_secs(1),
            slow_run: Duration::from_secs(2),
            in_flight: 500_000,
            settle_limit: Duration::from_secs(5),
            join_limit: Duration::from_secs(10),
            hold: Duration::from_millis(200),
            fill_limit: Duration::from_secs(15),
            quick: true,
        }
    } else {
        Settings {
            run: Duration::from_secs(3),
            slow_run: Duration::from_secs(6),
            in_flight: 500_000,
            settle_limit: Duration::from_secs(10),
            join_limit: Duration::from_secs(30),
            hold: Duration::from_secs(1),
            fill_limit: Duration::from_secs(60),
            quick: false,
        }
    };
    (plan, settings)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("chatbench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let (mut plan, settings) = plan(options.quick);
    if !options.only.is_empty() {
        plan.retain(|s| options.only.iter().any(|g| g == s.group()));
    }
    let fd_limit = system::raise_fd_limit(65_536);

    let mut kinds = Kind::CHATDS.to_vec();
    // Its rows say so when there is no nats-server.
    kinds.push(Kind::ChatdCluster);
    kinds.push(Kind::ChatdTls);
    let mut missing = Vec::new();
    for &kind in &options.against {
        match kind.program() {
            Ok(_) => kinds.push(kind),
            Err(why) => missing.push((kind, why)),
        }
    }
    print_header(&options, &settings, &kinds, &missing, fd_limit, &plan);

    let mut rows = Vec::new();
    for &scenario in &plan {
        for &kind in kinds.iter().filter(|k| settings.runs(scenario, **k)) {
            eprint!("chatbench: {:<26} {:<16} ", scenario.label(), kind.name());
            let t = Instant::now();
            let row = scenarios::run(scenario, kind, &settings);
            let verdict = row.failure.as_deref().map_or("ok".to_owned(), |f| format!("FAILED: {f}"));
            eprintln!("{:5.1} s  {verdict}", t.elapsed().as_secs_f64());
            rows.push(row);
        }
    }

    println!();
    print!("{}", report::table(&rows));
    println!();
    let others: Vec<Kind> =
        kinds[1..].iter().copied().filter(|&k| !matches!(k, Kind::ChatdCluster | Kind::ChatdTls)).collect();
    let ratios = if others.is_empty() { String::new() } else { report::ratios(&rows, &others) };
    if !ratios.is_empty() {
        print!("{ratios}");
        println!();
    }
    let tls = report::tls(&rows);
    if !tls.is_empty() {
        print!("{tls}");
        println!();
    }
    print!("{}", report::targets(&rows, &missing));
    println!();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());

    let failed: Vec<&report::Row> = rows.iter().filter(|r| r.kind.is_chatd() && r.failure.is_some()).collect();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for row in failed {
            eprintln!("chatbench: FAILED {} on chatd: {}", row.scenario.label(), row.failure.as_deref().unwrap_or(""));
        }
        ExitCode::FAILURE
    }
}

fn print_header(
    options: &Options,
    settings: &Settings,
    kinds: &[Kind],
    missing: &[(Kind, String)],
    fd_limit: u64,
    plan: &[Scenario],
) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mode = if options.quick { "--quick" } else { "full run" };
    println!("chatbench ({mode}): {cpus} CPUs, open-file limit {fd_limit}, everything on 127.0.0.1");
    let tls_extra = format!(
        " (tls scenarios only: the same chatd, its members and publishers speaking TLS from the first byte on its \
         --tls-bind port, through rustls; chatd encrypts in userspace, rustls too; kernel TLS {})",
        system::kernel_tls()
    );
    for &kind in kinds {
        let extra = match kind {
            Kind::Chatd => " (this release build, as shipped: the store on, --history 10000 --sync every-second)",
            Kind::ChatdNoStore => " (the same, with the store off: --history 0)",
            Kind::ChatdSyncAlways => " (the same, with --sync always)",
            Kind::Python => " running benches/baseline/chat_server.py (a thread per client, one lock)",
            Kind::RedisStreams => {
                " (a stream: XADD / XREAD BLOCK, --appendonly yes --appendfsync everysec, its own --dir)"
            }
            Kind::ChatdCluster if Kind::ChatdCluster.program().is_err() => " (skipped: no nats-server)",
            Kind::ChatdCluster => {
                " (cluster scenarios only: two chatd --cluster nats://… --room bench on one nats-server -js \
                 with its own -sd DIR; members and publishers split between them; CPU is all three processes')"
            }
            Kind::ChatdTls => &tls_extra,
            _ => " (pub/sub on one subject)",
        };
        println!("  {:<16} {}{extra}", kind.name(), kind.version());
    }
    // redis and redis-streams are one program: say it once.
    let mut said_missing: Vec<&str> = Vec::new();
    for (_, why) in missing {
        if !said_missing.contains(&why.as_str()) {
            println!("  {why}");
            said_missing.push(why);
        }
    }
    if settings.quick {
        println!("  --quick: chatd-nostore, chatd-syncalways and redis-streams run in fan-out P=1 only");
    }
    let mut said = Vec::new();
    for &scenario in plan {
        let options = chatd_options(scenario).join(" ");
        let options = if options.is_empty() { "defaults".to_owned() } else { options };
        // A group's options once; a scenario that differs from them on its own.
        match said.iter().find(|(g, _)| *g == scenario.group()) {
            None => said.push((scenario.group().to_owned(), options)),
            Some((_, first)) if *first != options => said.push((scenario.label(), options)),
            Some(_) => {}
        }
    }
    let said: Vec<String> = said.iter().map(|(what, options)| format!("{what}: {options}")).collect();
    println!(
        "  chatd options (after --bind 127.0.0.1:0 -q --data-dir DIR, a new DIR under target/tmp each time): {}",
        said.join("; ")
    );
    println!(
        "  generator: one thread, level-triggered epoll, non-blocking sockets; 56-byte payloads (64-byte chatd lines) \
         stamped with CLOCK_MONOTONIC; fan-out keeps {}k deliveries in flight (at most 32k messages), publishes for {:.0} s",
        settings.in_flight / 1000,
        settings.run.as_secs_f64()
    );
    let before = (Instant::now(), system::machine_busy());
    std::thread::sleep(Duration::from_millis(500));
    let busy = (system::machine_busy() - before.1).as_secs_f64() / before.0.elapsed().as_secs_f64();
    if busy > 0.2 {
        println!(
            "  WARNING: the machine was {:.0}% busy (of one CPU) before starting: other processes share the CPUs, \
             so every figure is lower than on a quiet machine",
            busy * 100.0
        );
    }
    // chatd needs one descriptor per member, and so does the load generator
    // (a process of its own, with the same limit).
    if plan.iter().any(|s| matches!(s, Scenario::Idle { members: 10_000.. })) && fd_limit < 10_100 {
        println!("  note: chatd needs a descriptor per member; open-file limit {fd_limit} is too low for 10,000 (raise ulimit -Hn)");
    }
}
