//! Real nats-server processes with JetStream on 127.0.0.1: one node, or a
//! cluster of three with routes. Each has ports and a store directory of
//! its own and is killed (by its PID) when dropped. Which nats-server runs:
//! `MINICHAT_NATS_SERVER`, else the first `nats-server` on the `PATH`, else
//! Debian's `/usr/sbin/nats-server`; a test without one says `SKIPPED`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use super::{TempDir, PATIENCE};

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

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
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
    }
}

/// Three nodes with JetStream, routed to each other.
pub struct NatsCluster {
    pub nodes: Vec<Nats>,
}

impl NatsCluster {
    /// Three nodes, each ready, or `None` after `SKIPPED`.
    pub fn start(test: &str) -> Option<NatsCluster> {
        let binary = server_or_skip(test)?;
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all = routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let nodes = routes
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let listen = format!("nats://127.0.0.1:{port}");
                let args = ["-js", "--cluster_name", "minichat", "--cluster", &listen, "--routes", &all];
                Nats::start_with(&binary, &format!("n{}", i + 1), &args)
            })
            .collect();
        Some(NatsCluster { nodes })
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Nats::url).collect()
    }

    pub fn node(&mut self, name: &str) -> &mut Nats {
        self.nodes.iter_mut().find(|node| node.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }
}
