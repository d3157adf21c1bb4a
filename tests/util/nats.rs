//! Real nats-server processes with JetStream on 127.0.0.1: one node, or a
//! cluster of three with routes. Each has ports and a store directory of
//! its own and is killed (by its PID) when dropped. Which nats-server runs:
//! `MINICHAT_NATS_SERVER`, else the first `nats-server` on the `PATH`, else
//! Debian's `/usr/sbin/nats-server`; a test without one says `SKIPPED`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{print_log_tail, TempDir, PATIENCE};

/// The nats-server these tests run, or why there is none.
pub use super::find_nats::nats_server as server_binary;

/// The binary, or `None` after printing `SKIPPED: <test>: <why>`.
pub fn server_or_skip(test: &str) -> Option<PathBuf> {
    match server_binary() {
        Ok(path) => Some(path),
        Err(why) => {
            println!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// A port nobody listens on now, kept for a nats-server that binds it later
/// (a cluster's nodes are given each other's route ports before they start).
/// It comes from below the kernel's ephemeral range, where `bind(0)` and
/// outgoing connections take theirs: a chatd or a client of a test running
/// beside cannot take it in the meantime, as one did (a cluster's route
/// port, perhaps) when these ports came from `bind(0)` too. A counter keeps
/// this process's ports apart; a start drawn from the pid keeps two test
/// processes' apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const SPAN: u32 = 10_000;
    if ephemeral_low < 1024 + SPAN {
        // No room below the range on this machine: the kernel's choice.
        return TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port();
    }
    let first = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below {ephemeral_low}");
        let port = u16::try_from(ephemeral_low - SPAN + (first + n) % SPAN).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One nats-server with JetStream.
pub struct Nats {
    binary: PathBuf,
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    store: Arc<TempDir>,
    child: Option<Child>,
    log: Arc<(Mutex<String>, Condvar)>,
}

impl Nats {
    /// A single node with JetStream, ready, or `None` after `SKIPPED`.
    pub fn start(test: &str) -> Option<Nats> {
        let binary = server_or_skip(test)?;
        Some(Nats::start_with(&binary, "n1", &["-js"]))
    }

    /// A nats-server with `extra` arguments after its name, port and store.
    pub fn start_with(binary: &Path, name: &str, extra: &[&str]) -> Nats {
        let store = Arc::new(TempDir::new(&format!("nats-{name}")));
        let port = free_port();
        let mut args: Vec<String> = ["-a", "127.0.0.1", "-p", &port.to_string(), "--server_name", name, "-sd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(store.path().display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut nats = Nats {
            binary: binary.to_owned(),
            name: name.to_owned(),
            port,
            args,
            store,
            child: None,
            log: Arc::default(),
        };
        nats.run();
        nats
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits for its "Server is ready".
    fn run(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        let pipe = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::clone(&self.log);
        thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                log.0.lock().unwrap().push_str(&format!("{line}\n"));
                log.1.notify_all();
            }
        });
        self.child = Some(child);
        self.wait_log_count("Server is ready", self.count("Server is ready") + 1);
    }

    /// The number of log lines containing `text`.
    fn count(&self, text: &str) -> usize {
        self.log.0.lock().unwrap().lines().filter(|line| line.contains(text)).count()
    }

    /// Waits for the `n`th line containing `text`.
    fn wait_log_count(&self, text: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let mut log = self.log.0.lock().unwrap();
        while log.lines().filter(|line| line.contains(text)).count() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{} did not log {text:?} in time; its log:\n{log}", self.name));
            log = self.log.1.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Kills it with SIGKILL, its store left as it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same store.
    pub fn restart(&mut self) {
        self.run();
    }

    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what NATS said: the cause of a refusal such
        // as "no suitable peers for placement" is only in its log.
        if thread::panicking() {
            print_log_tail(&format!("nats-server {}", self.name), &self.log(), LOG_TAIL);
        }
    }
}

/// How many lines of each nats-server's log a failing test shows.
const LOG_TAIL: usize = 150;

/// Three nodes with JetStream, routed to each other.
pub struct NatsCluster {
    pub nodes: Vec<Nats>,
}

impl NatsCluster {
    /// Three nodes, each ready and following one JetStream metadata
    /// leader, or `None` after `SKIPPED`. They log at debug level, where
    /// NATS says why it placed a stream where it did, or nowhere.
    pub fn start(test: &str) -> Option<NatsCluster> {
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let binary = server_or_skip(test)?;
        // A name of its own: a route that reached another test's cluster
        // would be refused, never merged.
        let name = format!("minichat-{}-{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::Relaxed));
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all = routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let nodes: Vec<Nats> = routes
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let listen = format!("nats://127.0.0.1:{port}");
                let args = ["-js", "-D", "--cluster_name", &name, "--cluster", &listen, "--routes", &all];
                Nats::start_with(&binary, &format!("n{}", i + 1), &args)
            })
            .collect();
        let cluster = NatsCluster { nodes };
        cluster.wait_for_metadata_leader();
        Some(cluster)
    }

    /// Waits until a node says it leads the cluster's JetStream metadata:
    /// before that, NATS answers every JetStream request "temporarily
    /// unavailable". Each node's log has a lock of its own, so they are
    /// looked at in turn, each waited on for a moment.
    fn wait_for_metadata_leader(&self) {
        const LEADER: &str = "Self is new JetStream cluster metadata leader";
        // An election after a split vote (nats-server 2.9) or after "no
        // contact with a meta leader" (2.15) takes seconds more.
        let deadline = Instant::now() + PATIENCE * 3;
        while !self.nodes.iter().any(|node| node.count(LEADER) > 0) {
            assert!(Instant::now() < deadline, "no node became the JetStream metadata leader in time");
            let (log, logged) = &*self.nodes[0].log;
            drop(logged.wait_timeout(log.lock().unwrap(), Duration::from_millis(50)).unwrap());
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Nats::url).collect()
    }

    pub fn node(&mut self, name: &str) -> &mut Nats {
        self.nodes.iter_mut().find(|node| node.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }
}
