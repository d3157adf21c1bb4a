//! What the run prints: one table (a row per scenario and server), the
//! ratios of chatd to each other server, and the targets with the
//! figures measured, PASS or MISS. The targets are information: they never
//! change the exit status.

use std::time::Duration;

use crate::histogram::Histogram;
use crate::scenarios::Scenario;
use crate::servers::Kind;

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: Scenario,
    pub kind: Kind,
    /// Deliveries a second (bulk: lines a second).
    pub rate: Option<f64>,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub delivered: Option<(u64, u64)>,
    /// CPU over the measured stretch, as a fraction of one core.
    pub server_cpu: Option<f64>,
    pub gen_cpu: Option<f64>,
    /// All CPUs' busy time, softirqs (loopback TCP) included.
    pub machine_cpu: Option<f64>,
    /// CPU time over the measured stretch: the server's, the generator's.
    pub cpu_time: Option<(Duration, Duration)>,
    pub rss_per_member_kib: Option<f64>,
    pub join: Option<Duration>,
    pub held: Option<bool>,
    pub wall: Option<Duration>,
    pub stall_ns: Option<u64>,
    /// chatd's start-up: with the history, and with an empty one.
    pub startup: Option<(Duration, Duration)>,
    /// chatd's VmRSS with one member: with the history, and an empty room.
    pub rss_history_kib: Option<(u64, u64)>,
    /// The store's `*.log` bytes over the events written.
    pub bytes_per_event: Option<f64>,
    pub notes: Vec<String>,
    /// Why the scenario failed: it could not run, the server crashed, or a
    /// delivery was lost.
    pub failure: Option<String>,
    /// Why the figures are partial without anything being wrong (a server too
    /// slow to finish within a time limit).
    pub incomplete: Option<String>,
}

impl Row {
    pub fn new(scenario: Scenario, kind: Kind) -> Row {
        Row {
            scenario,
            kind,
            rate: None,
            p50_ns: None,
            p99_ns: None,
            max_ns: None,
            delivered: None,
            server_cpu: None,
            gen_cpu: None,
            machine_cpu: None,
            cpu_time: None,
            rss_per_member_kib: None,
            join: None,
            held: None,
            wall: None,
            stall_ns: None,
            startup: None,
            rss_history_kib: None,
            bytes_per_event: None,
            notes: Vec::new(),
            failure: None,
            incomplete: None,
        }
    }

    pub fn latency(&mut self, histogram: &Histogram) {
        self.p50_ns = histogram.quantile(0.50);
        self.p99_ns = histogram.quantile(0.99);
        self.max_ns = histogram.max();
    }
}

pub fn nanos(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.0}µs", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn rate(per_s: f64) -> String {
    match per_s {
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e3 => format!("{:.0}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

fn count(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        _ if n % 1000 == 0 || n < 10_000_000 => format!("{:.1}k", n as f64 / 1e3).replace(".0k", "k"),
        _ => format!("{:.3}M", n as f64 / 1e6),
    }
}

/// 1000000 → `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

fn or_dash<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), f)
}

/// The table: one row per scenario and server.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "server",
        "deliv/s",
        "p50",
        "p99",
        "max",
        "delivered/expected",
        "srv CPU",
        "gen CPU",
        "all CPU",
        "RSS/member",
        "join",
        "notes",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let delivered = row.delivered.map(|(got, want)| {
            let exact = if got == want { String::new() } else { format!(" ({} short)", want.saturating_sub(got)) };
            format!("{}/{}{exact}", count(got), count(want))
        });
        let mut notes = row.notes.clone();
        if let Some(incomplete) = &row.incomplete {
            notes.insert(0, format!("INCOMPLETE: {incomplete}"));
        }
        if let Some(failure) = &row.failure {
            notes.insert(0, format!("FAILED: {failure}"));
        }
        if row.held == Some(false) {
            notes.insert(0, "NOT all held".into());
        }
        cells.push(vec![
            row.scenario.label(),
            row.kind.name().to_owned(),
            or_dash(row.rate, rate),
            or_dash(row.p50_ns, nanos),
            or_dash(row.p99_ns, nanos),
            or_dash(row.max_ns, nanos),
            delivered.unwrap_or_else(|| "-".into()),
            or_dash(row.server_cpu, percent),
            or_dash(row.gen_cpu, percent),
            or_dash(row.machine_cpu, percent),
            or_dash(row.rss_per_member_kib, |k| format!("{k:.1} KiB")),
            or_dash(row.join, |d| format!("{:.2}s", d.as_secs_f64())),
            notes.join("; "),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, line) in cells.iter().enumerate() {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(c, (cell, &w))| {
                    if c < 2 || c == header.len() - 1 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                },
            )
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    out
}

/// A scenario's headline figure, and whether more is better.
fn headline(row: &Row) -> Option<(&'static str, f64, bool)> {
    if row.failure.is_some() && !matches!(row.scenario, Scenario::Slow { .. }) {
        return None;
    }
    match row.scenario {
        Scenario::Fanout { .. } => row.rate.map(|r| ("deliveries/s", r, true)),
        Scenario::Latency { .. } => row.p99_ns.map(|p| ("p99 latency", p as f64, false)),
        Scenario::Idle { .. } => row.rss_per_member_kib.map(|k| ("RSS/member", k, false)),
        Scenario::Bulk { .. } => row.wall.map(|w| ("wall time", w.as_secs_f64(), false)),
        Scenario::Slow { .. } => row.stall_ns.map(|s| ("longest stall", s as f64, false)),
        // chatd's alone: nothing to compare with. The cluster's are compared
        // in its targets, with one chatd.
        Scenario::Replay { .. }
        | Scenario::Resume { .. }
        | Scenario::Startup { .. }
        | Scenario::ClusterFanout { .. }
        | Scenario::ClusterLatency { .. }
        | Scenario::ClusterPublish { .. }
        | Scenario::TlsFanout { .. }
        | Scenario::TlsIdle { .. } => None,
    }
}

fn find(rows: &[Row], scenario: Scenario, kind: Kind) -> Option<&Row> {
    rows.iter().find(|r| r.scenario == scenario && r.kind == kind)
}

/// chatd's headline figure over each other server's, scenario by scenario.
pub fn ratios(rows: &[Row], others: &[Kind]) -> String {
    let mut out =
        String::from("ratios chatd/other (higher-is-better figures: > 1 means chatd ahead; lower-is-better: < 1)\n");
    let scenarios = scenarios_of(rows, |s| find(rows, s, Kind::Chatd).and_then(headline).is_some());
    if scenarios.is_empty() {
        return String::new();
    }
    out.push_str(&format!("  {:<24} {:<32}", "scenario", "figure"));
    let heads: Vec<String> = others.iter().map(|kind| format!("chatd/{}", kind.name())).collect();
    let width = |i: usize| heads[i].chars().count().max(12);
    for (i, head) in heads.iter().enumerate() {
        out.push_str(&format!(" {head:>w$}", w = width(i)));
    }
    out.push('\n');
    for scenario in scenarios {
        let Some((figure, ours, higher)) = find(rows, scenario, Kind::Chatd).and_then(headline) else { continue };
        let direction = if higher { "higher is better" } else { "lower is better" };
        out.push_str(&format!("  {:<24} {:<32}", scenario.label(), format!("{figure} ({direction})")));
        for (i, &kind) in others.iter().enumerate() {
            let theirs = find(rows, scenario, kind).and_then(headline).map(|(_, v, _)| v);
            let cell = match theirs {
                Some(v) if v > 0.0 => format!("{:.2}×", ours / v),
                _ => "-".into(),
            };
            out.push_str(&format!(" {cell:>w$}", w = width(i)));
        }
        out.push('\n');
        if let Scenario::Idle { .. } = scenario {
            let join = |kind| find(rows, scenario, kind).and_then(|r| r.join).map(|d| d.as_secs_f64());
            if let Some(ours) = join(Kind::Chatd) {
                out.push_str(&format!("  {:<24} {:<32}", "", "join time (lower is better)"));
                for (i, &kind) in others.iter().enumerate() {
                    let cell = join(kind).filter(|&v| v > 0.0).map_or("-".into(), |v| format!("{:.2}×", ours / v));
                    out.push_str(&format!(" {cell:>w$}", w = width(i)));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The `tls` group's rows side by side: chatd with its members in plain
/// text, and over TLS; TLS's figure over plain text's.
pub fn tls(rows: &[Row]) -> String {
    let scenarios = scenarios_of(rows, |s| matches!(s, Scenario::TlsFanout { .. } | Scenario::TlsIdle { .. }));
    if scenarios.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "TLS beside plain text: one chatd build, its members (and publishers) in plain text (chatd) or \
         speaking TLS from the first byte (chatd-tls)\n",
    );
    out.push_str(&format!("  {:<24} {:<46} {:>10} {:>10} {:>10}\n", "scenario", "figure", "plain", "TLS", "TLS/plain"));
    for scenario in scenarios {
        let (Some(plain), Some(tls)) = (find(rows, scenario, Kind::Chatd), find(rows, scenario, Kind::ChatdTls)) else {
            continue;
        };
        let mut label = scenario.label();
        let mut line = |figure: &str, plain: Option<f64>, tls: Option<f64>, show: &dyn Fn(f64) -> String| {
            let ratio = match (plain, tls) {
                (Some(p), Some(t)) if p > 0.0 => format!("{:.2}×", t / p),
                _ => "-".into(),
            };
            let (plain, tls) = (or_dash(plain, show), or_dash(tls, show));
            out.push_str(&format!("  {label:<24} {figure:<46} {plain:>10} {tls:>10} {ratio:>10}\n"));
            label.clear();
        };
        let ns = |ns: f64| nanos(ns as u64);
        match scenario {
            Scenario::TlsFanout { .. } => {
                line("deliveries/s (higher is better)", plain.rate, tls.rate, &rate);
                line("p50 latency", plain.p50_ns.map(|n| n as f64), tls.p50_ns.map(|n| n as f64), &ns);
                line("p99 latency", plain.p99_ns.map(|n| n as f64), tls.p99_ns.map(|n| n as f64), &ns);
                // Milliseconds per million lines are nanoseconds per line.
                let ms = |ms: f64| format!("{ms:.0} ms");
                line("chatd CPU per 1M delivered lines (user+sys)", server_ns(plain), server_ns(tls), &ms);
                line("generator CPU per 1M delivered lines", gen_ns(plain), gen_ns(tls), &ms);
            }
            Scenario::TlsIdle { .. } => {
                let kib = |k: f64| format!("{k:.1} KiB");
                line("chatd RSS per idle member", plain.rss_per_member_kib, tls.rss_per_member_kib, &kib);
                let secs = |s: f64| format!("{s:.2}s");
                let join = |r: &Row| r.join.map(|d| d.as_secs_f64());
                line("time for all to join (TLS: with handshakes)", join(plain), join(tls), &secs);
            }
            _ => {}
        }
    }
    out
}

/// CPU time per delivery in ns (milliseconds per million), of the server
/// and of the generator, over the measured stretch.
fn server_ns(row: &Row) -> Option<f64> {
    per_delivery_ns(row, row.cpu_time?.0)
}

fn gen_ns(row: &Row) -> Option<f64> {
    per_delivery_ns(row, row.cpu_time?.1)
}

fn per_delivery_ns(row: &Row, cpu: Duration) -> Option<f64> {
    let (delivered, _) = row.delivered.filter(|&(d, _)| d > 0)?;
    Some(cpu.as_secs_f64() * 1e9 / delivered as f64)
}

/// The targets, each with what was measured.
pub fn targets(rows: &[Row], missing: &[(Kind, String)]) -> String {
    let mut out = String::from("targets (information only; the exit status does not depend on them)\n");
    let mut line = |text: String, verdict: Verdict| {
        let verdict = match verdict {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotRun => "n/a",
            Verdict::Info => "info",
        };
        out.push_str(&format!("  {verdict:<5} {text}\n"));
    };
    let why_missing =
        |kind: Kind| missing.iter().find(|(k, _)| *k == kind).map_or("not run".to_owned(), |(_, why)| why.clone());
    let chatd = |scenario| find(rows, scenario, Kind::Chatd);
    fn ok(row: Option<&Row>) -> Option<&Row> {
        row.filter(|r| r.failure.is_none())
    }
    let fanouts: Vec<Scenario> =
        scenarios_of(rows, |s| matches!(s, Scenario::Fanout { subscribers, .. } if subscribers >= 100));
    for scenario in &fanouts {
        let Some(ours) = ok(chatd(*scenario)).and_then(|r| r.rate) else { continue };
        let best = [Kind::Nats, Kind::Redis]
            .into_iter()
            .filter_map(|k| ok(find(rows, *scenario, k)).and_then(|r| r.rate).map(|r| (k, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((kind, theirs)) => line(
                format!(
                    "{}: chatd (store on) {}/s ≥ 1.0 × the faster of nats and redis pub/sub, which store \
                     nothing ({} {}/s): {:.2}×",
                    scenario.label(),
                    rate(ours),
                    kind.name(),
                    rate(theirs),
                    ours / theirs
                ),
                check(ours >= theirs),
            ),
            None => line(
                format!("{}: chatd {}/s vs nats/redis: {}", scenario.label(), rate(ours), why_missing(Kind::Nats)),
                Verdict::NotRun,
            ),
        }
        match ok(find(rows, *scenario, Kind::ChatdNoStore)).and_then(|r| r.rate) {
            Some(off) => line(
                format!(
                    "{}: store on / store off ≥ 0.9× (chatd {}/s, chatd --history 0 {}/s): {:.2}×",
                    scenario.label(),
                    rate(ours),
                    rate(off),
                    ours / off
                ),
                check(ours >= 0.9 * off),
            ),
            None => {
                line(format!("{}: store on / store off: chatd --history 0 not run", scenario.label()), Verdict::NotRun)
            }
        }
        if let Some(streams) = ok(find(rows, *scenario, Kind::RedisStreams)).and_then(|r| r.rate) {
            line(
                format!(
                    "{}: chatd {}/s beside redis streams (durable too, appendfsync everysec) {}/s: {:.2}× (no target)",
                    scenario.label(),
                    rate(ours),
                    rate(streams),
                    ours / streams
                ),
                Verdict::Info,
            );
        }
        if let Some(always) = ok(find(rows, *scenario, Kind::ChatdSyncAlways)).and_then(|r| r.rate) {
            line(
                format!(
                    "{}: with --sync always chatd delivers {}/s, {:.2}× as shipped (no target)",
                    scenario.label(),
                    rate(always),
                    always / ours
                ),
                Verdict::Info,
            );
        }
        match ok(find(rows, *scenario, Kind::Python)).and_then(|r| r.rate) {
            Some(theirs) => line(
                format!(
                    "{}: chatd {}/s ≥ 10 × python ({}/s): {:.1}×",
                    scenario.label(),
                    rate(ours),
                    rate(theirs),
                    ours / theirs
                ),
                check(ours >= 10.0 * theirs),
            ),
            None => line(format!("{}: vs python: {}", scenario.label(), why_missing(Kind::Python)), Verdict::NotRun),
        }
    }
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Latency { .. })) {
        let Some(ours) = ok(chatd(scenario)).and_then(|r| r.p99_ns) else { continue };
        match ok(find(rows, scenario, Kind::Nats)).and_then(|r| r.p99_ns) {
            Some(theirs) => line(
                format!("{}: chatd p99 {} ≤ nats p99 {}", scenario.label(), nanos(ours), nanos(theirs)),
                check(ours <= theirs),
            ),
            None => line(
                format!("{}: chatd p99 {}; nats: {}", scenario.label(), nanos(ours), why_missing(Kind::Nats)),
                Verdict::NotRun,
            ),
        }
    }
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Idle { .. })) {
        let Some(row) = chatd(scenario) else { continue };
        if let Some(kib) = row.rss_per_member_kib {
            line(format!("{}: RSS {kib:.1} KiB per idle member ≤ 20 KiB", scenario.label()), check(kib <= 20.0));
        }
        if let Scenario::Idle { members: 10_000.. } = scenario {
            let held = row.held == Some(true);
            let join = row.join.map_or("not all joined".into(), |d| format!("all joined in {:.2} s", d.as_secs_f64()));
            line(
                format!("{}: 10,000 members held ({}), all joined within 5 s ({join})", scenario.label(), yes(held)),
                check(held && row.join.is_some_and(|d| d <= Duration::from_secs(5))),
            );
        }
    }
    if !rows.iter().any(|r| matches!(r.scenario, Scenario::Idle { members: 10_000.. })) {
        line("10,000 members held, joined within 5 s: not run (the full run has it)".into(), Verdict::NotRun);
    }
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Slow { .. })) {
        if let Some(stall) = chatd(scenario).and_then(|r| r.stall_ns) {
            line(
                format!(
                    "{}: a never-reading member stalls the others ≤ 100 ms (longest stall {})",
                    scenario.label(),
                    nanos(stall)
                ),
                check(stall <= 100_000_000),
            );
        }
    }
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Bulk { .. })) {
        if let Some(wall) = ok(chatd(scenario)).and_then(|r| r.wall) {
            line(
                format!("{}: seq 100000 | chat-send < 1 s ({:.3} s)", scenario.label(), wall.as_secs_f64()),
                check(wall < Duration::from_secs(1)),
            );
        }
    }
    history_targets(rows, &mut line);
    cluster_targets(rows, &mut line);
    tls_targets(rows, &mut line);
    out
}

/// What TLS costs beside plain text: information, with no target. Where
/// the kernel has TLS (`tls` in tcp_available_ulp) a batch could stay one
/// `sendmsg` with the kernel encrypting; chatd encrypts in rustls.
fn tls_targets(rows: &[Row], line: &mut impl FnMut(String, Verdict)) {
    let ok = |scenario, kind| find(rows, scenario, kind).filter(|r| r.failure.is_none() && r.incomplete.is_none());
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::TlsFanout { .. } | Scenario::TlsIdle { .. })) {
        let label = scenario.label();
        let (Some(plain), Some(tls)) = (ok(scenario, Kind::Chatd), ok(scenario, Kind::ChatdTls)) else {
            line(
                format!("{label}: TLS beside plain text: not measured (a row failed or is incomplete)"),
                Verdict::Info,
            );
            continue;
        };
        match scenario {
            Scenario::TlsFanout { .. } => {
                let (Some(p), Some(t)) = (plain.rate, tls.rate) else { continue };
                let cpu = match (server_ns(plain), server_ns(tls)) {
                    (Some(p), Some(t)) => format!(
                        "; chatd's CPU per delivered line {t:.0} ns over TLS vs {p:.0} ns plain ({:+.0} ns, {:.2}×)",
                        t - p,
                        t / p
                    ),
                    _ => String::new(),
                };
                line(
                    format!(
                        "{label}: over TLS chatd delivers {}/s, {:.2}× plain text's {}/s{cpu}; p99 {} vs {} \
                         (no target; the generator decrypts too)",
                        rate(t),
                        t / p,
                        rate(p),
                        or_dash(tls.p99_ns, nanos),
                        or_dash(plain.p99_ns, nanos)
                    ),
                    Verdict::Info,
                );
            }
            Scenario::TlsIdle { .. } => {
                let (Some(p), Some(t)) = (plain.rss_per_member_kib, tls.rss_per_member_kib) else { continue };
                line(
                    format!(
                        "{label}: chatd's RSS per idle member {t:.1} KiB over TLS vs {p:.1} KiB plain ({:+.1} KiB) \
                         (no target)",
                        t - p
                    ),
                    Verdict::Info,
                );
            }
            _ => {}
        }
    }
}

/// Two chatd on one JetStream against one chatd: fan-out at least half of
/// one chatd's, p99 under 10 ms at 100,000 deliveries a second; the
/// publish rate and nats-server's pub/sub for information.
fn cluster_targets(rows: &[Row], line: &mut impl FnMut(String, Verdict)) {
    let ok = |scenario, kind| find(rows, scenario, kind).filter(|r| r.failure.is_none() && r.incomplete.is_none());
    let cluster_scenarios = scenarios_of(rows, |s| {
        matches!(s, Scenario::ClusterFanout { .. } | Scenario::ClusterLatency { .. } | Scenario::ClusterPublish { .. })
    });
    for scenario in cluster_scenarios {
        let label = scenario.label();
        let Some(cluster) = find(rows, scenario, Kind::ChatdCluster) else { continue };
        if let Some(skipped) = cluster.notes.iter().find(|n| n.starts_with("skipped")) {
            line(format!("{label}: {skipped}"), Verdict::NotRun);
            continue;
        }
        let why = |row: &Row| {
            row.failure.clone().or_else(|| row.incomplete.clone()).unwrap_or_else(|| "no figure".to_owned())
        };
        let alone = ok(scenario, Kind::Chatd);
        match scenario {
            Scenario::ClusterFanout { subscribers, .. } => {
                let (Some(ours), Some(one)) =
                    (ok(scenario, Kind::ChatdCluster).and_then(|r| r.rate), alone.and_then(|r| r.rate))
                else {
                    line(format!("{label}: cluster ≥ 0.5 × one chatd: not measured ({})", why(cluster)), Verdict::Miss);
                    continue;
                };
                // With fewer members the stream's publish rate, not the
                // fan-out, sets the pace: the target is for a thousand.
                let (scale, verdict) = if subscribers < 1000 {
                    (" (the target is for N = 1,000: the full run)", Verdict::Info)
                } else {
                    ("", check(ours >= 0.5 * one))
                };
                line(
                    format!(
                        "{label}: two chatd on JetStream {}/s ≥ 0.5 × one chatd alone ({}/s): {:.2}×{scale}",
                        rate(ours),
                        rate(one),
                        ours / one
                    ),
                    verdict,
                );
                if let Some(nats) = ok(scenario, Kind::Nats).and_then(|r| r.rate) {
                    line(
                        format!(
                            "{label}: the cluster {}/s beside nats-server's core pub/sub {}/s: {:.2}× (no target)",
                            rate(ours),
                            rate(nats),
                            ours / nats
                        ),
                        Verdict::Info,
                    );
                }
            }
            Scenario::ClusterLatency { .. } => {
                let Some(row) = ok(scenario, Kind::ChatdCluster).filter(|r| r.p99_ns.is_some()) else {
                    line(format!("{label}: cluster p99 < 10 ms: not measured ({})", why(cluster)), Verdict::Miss);
                    continue;
                };
                let p99 = row.p99_ns.unwrap_or(0);
                let one = alone.and_then(|r| r.p99_ns).map_or("not measured".to_owned(), nanos);
                line(
                    format!(
                        "{label}: two chatd on JetStream p50 {} p99 {} < 10 ms (one chatd alone: p99 {one})",
                        or_dash(row.p50_ns, nanos),
                        nanos(p99)
                    ),
                    check(p99 < 10_000_000),
                );
            }
            Scenario::ClusterPublish { .. } => {
                let Some(ours) = ok(scenario, Kind::ChatdCluster).and_then(|r| r.rate) else {
                    line(format!("{label}: cluster publish rate: not measured ({})", why(cluster)), Verdict::Miss);
                    continue;
                };
                let one = alone.and_then(|r| r.rate);
                let beside = one.map_or("one chatd alone: not measured".to_owned(), |one| {
                    format!("one chatd alone {} msgs/s: {:.2}×", rate(one), ours / one)
                });
                line(
                    format!("{label}: the room's stream takes {} msgs/s, confirmed; {beside} (no target)", rate(ours)),
                    Verdict::Info,
                );
            }
            _ => {}
        }
    }
}

/// The history's figures: the issue gives targets for the start-up and its
/// memory; the replays and the bytes on disk are printed for information.
fn history_targets(rows: &[Row], line: &mut impl FnMut(String, Verdict)) {
    let chatd = |scenario| find(rows, scenario, Kind::Chatd);
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Replay { .. } | Scenario::Resume { .. })) {
        let Some(row) = chatd(scenario) else { continue };
        let what = match scenario {
            Scenario::Replay { .. } => "from JOIN … LAST to the last replayed line",
            _ => "from JOIN … SINCE to the last replayed line",
        };
        let label = scenario.label();
        match (row.delivered, row.wall, &row.failure) {
            (Some((got, asked)), Some(wall), None) if got == asked => line(
                format!(
                    "{label}: {what}: {:.1} ms for {got} lines, {}/s (no target)",
                    wall.as_secs_f64() * 1e3,
                    rate(got as f64 / wall.as_secs_f64())
                ),
                Verdict::Info,
            ),
            (Some((got, asked)), _, _) => {
                line(format!("{label}: {what}: SHORT, {got} of {asked} events replayed"), Verdict::Miss)
            }
            (None, _, failure) => {
                line(format!("{label}: {what}: not measured ({})", failure.as_deref().unwrap_or("?")), Verdict::Miss)
            }
        }
    }
    for scenario in scenarios_of(rows, |s| matches!(s, Scenario::Startup { .. })) {
        let Scenario::Startup { events } = scenario else { continue };
        let Some(row) = chatd(scenario) else { continue };
        let label = scenario.label();
        let scale = if events < 1_000_000 { " (the target is for 1,000,000 events: the full run)" } else { "" };
        if let Some(failure) = &row.failure {
            line(format!("{label}: FAILED: {failure}"), Verdict::Miss);
        }
        match row.startup {
            Some((with, empty)) => line(
                format!(
                    "{label}: chatd listening < 1 s after it is started on {} events of history \
                     ({:.3} s; {:.3} s on an empty one){scale}",
                    thousands(events),
                    with.as_secs_f64(),
                    empty.as_secs_f64()
                ),
                check(with < Duration::from_secs(1) && row.incomplete.is_none()),
            ),
            None => line(format!("{label}: start-up: not measured"), Verdict::Miss),
        }
        if let Some((with, empty)) = row.rss_history_kib {
            let more = (with as f64 - empty as f64) / 1024.0;
            line(
                format!(
                    "{label}: chatd's RSS with {} events of history within 10 MiB of an empty room's, one member \
                     joined ({:.1} MiB vs {:.1} MiB: {more:+.1} MiB){scale}",
                    thousands(events),
                    with as f64 / 1024.0,
                    empty as f64 / 1024.0
                ),
                check(more <= 10.0 && row.incomplete.is_none()),
            );
        }
        match row.bytes_per_event {
            Some(bytes) => line(
                format!(
                    "{label}: the store takes {bytes:.1} bytes per event (*.log size; 64-byte MSG lines) (no target)"
                ),
                Verdict::Info,
            ),
            None => line(format!("{label}: store bytes per event: no *.log in the data dir"), Verdict::Miss),
        }
        if let Some(incomplete) = &row.incomplete {
            line(format!("{label}: {incomplete}"), Verdict::Miss);
        }
    }
}

/// What a target line says of its figure.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Pass,
    Miss,
    /// Not measured in this run (a server missing, a scenario left out).
    NotRun,
    /// A figure printed for information, with no target.
    Info,
}

fn check(pass: bool) -> Verdict {
    if pass {
        Verdict::Pass
    } else {
        Verdict::Miss
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn scenarios_of(rows: &[Row], keep: impl Fn(Scenario) -> bool) -> Vec<Scenario> {
    let mut out = Vec::new();
    for row in rows {
        if keep(row.scenario) && !out.contains(&row.scenario) {
            out.push(row.scenario);
        }
    }
    out
}
