//! What the benchmark reads from the operating system: the shared monotonic
//! clock, CPU time (its own and a server's), a server's resident memory,
//! the open-file limit, and whether the kernel has TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::time::{clock_gettime, ClockId};

/// CLOCK_MONOTONIC in nanoseconds: publishers write it into each message and
/// subscribers, in the same process, subtract it from the time they read it.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always there");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The CPU time (user + system) this process has used, all threads.
pub fn own_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF) cannot fail");
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = (user.tv_sec() + system.tv_sec()) * 1_000_000 + user.tv_usec() + system.tv_usec();
    Duration::from_micros(micros as u64)
}

/// The CPU time (user + system) process `pid` has used, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // The command name in parentheses may hold spaces: count fields after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow!("odd /proc/PID/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `after_name` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow!("short /proc/PID/stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Ok(Duration::from_millis(ticks * 10))
}

/// The machine's busy time so far, all CPUs (user, system, interrupts and
/// softirqs, from /proc/stat): loopback TCP is processed largely in softirqs,
/// which no process is charged for.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return Duration::ZERO };
    let Some(cpu) = stat.lines().next().filter(|l| l.starts_with("cpu ")) else { return Duration::ZERO };
    let ticks: Vec<u64> = cpu.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| !matches!(i, 3 | 4)).map(|(_, t)| t).sum();
    Duration::from_millis(busy * 10)
}

/// Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let line =
        status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS in /proc/PID/status"))?;
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).ok_or_else(|| anyhow!("odd VmRSS line: {line}"))
}

/// Whether the kernel could encrypt TLS records itself (the `tls` upper
/// layer protocol), as said in the header.
pub fn kernel_tls() -> String {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp") {
        Ok(ulps) if ulps.split_whitespace().any(|u| u == "tls") => "available in this kernel (unused)".into(),
        Ok(ulps) => format!("not in this kernel (tcp_available_ulp: {})", ulps.trim()),
        Err(e) => format!("unknown (tcp_available_ulp: {e})"),
    }
}

/// Raises the open-file limit as far as allowed, aiming for `want`: 10,000
/// members take 10,000 descriptors here and 20,000 in chatd (a socket and a
/// wake-up each), which inherits this limit. Root may raise the hard limit
/// too. Returns the soft limit in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Where `name` is on PATH (or in the sbin directories, where Debian puts
/// nats-server, which a user's PATH may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}
