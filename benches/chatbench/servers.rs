//! The servers under test, each started on 127.0.0.1 for one scenario and
//! stopped after it: chatd (the release build cargo made for this bench),
//! and for comparison nats-server, redis-server and the Python baseline when
//! their programs are installed.
//!
//! chatd keeps its history in a data directory and refuses a second chatd on
//! one directory, so every chatd gets a fresh one of its own under
//! `target/tmp` ([`DataDir`]), never the user's default, removed afterwards.
//!
//! `chatd-cluster` is three processes: a nats-server with JetStream (its
//! store in a `DataDir` too) and two chatd started with `--cluster` on it and
//! one `--room`. The first chatd is the [`Server`]; the nats-server and the
//! second chatd are its companions, stopped with it, and the generator
//! spreads the members over both chatd ([`Server::addrs`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::system::{find_program, process_cpu, rss_kib};
use crate::wire::Proto;

pub const CHATD: &str = env!("CARGO_BIN_EXE_chatd");
pub const CHAT_SEND: &str = env!("CARGO_BIN_EXE_chat-send");
const PYTHON_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/baseline/chat_server.py");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// chatd as shipped: the store on, with its default options.
    Chatd,
    /// chatd with the store off (`--history 0`), to see what the store costs.
    ChatdNoStore,
    /// chatd with every event on the disk before anyone is sent it
    /// (`--sync always`).
    ChatdSyncAlways,
    Nats,
    /// redis-server's pub/sub, which keeps nothing.
    Redis,
    /// redis-server's streams, kept in its append-only file (fsynced every
    /// second): the durable peer of chatd's store.
    RedisStreams,
    Python,
    /// Two chatd serving one room through one nats-server's JetStream
    /// (`--cluster`), the members split between them.
    ChatdCluster,
    /// chatd as shipped, its members speaking TLS from the first byte on
    /// its second port (`--tls-bind`), beside `Chatd` in plain text.
    ChatdTls,
    /// The nats-server with JetStream that a `ChatdCluster` keeps its room
    /// in: started and stopped as part of the cluster, never on its own.
    NatsJetStream,
}

impl Kind {
    /// The servers chatd is compared with, for `--against`.
    pub const OTHERS: [Kind; 4] = [Kind::Nats, Kind::Redis, Kind::RedisStreams, Kind::Python];
    /// chatd and the variants of its options that run beside it.
    pub const CHATDS: [Kind; 3] = [Kind::Chatd, Kind::ChatdNoStore, Kind::ChatdSyncAlways];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Chatd => "chatd",
            Kind::ChatdNoStore => "chatd-nostore",
            Kind::ChatdSyncAlways => "chatd-syncalways",
            Kind::Nats => "nats",
            Kind::Redis => "redis",
            Kind::RedisStreams => "redis-streams",
            Kind::Python => "python",
            Kind::ChatdCluster => "chatd-cluster",
            Kind::ChatdTls => "chatd-tls",
            Kind::NatsJetStream => "nats-jetstream",
        }
    }

    pub fn is_chatd(self) -> bool {
        Kind::CHATDS.contains(&self) || matches!(self, Kind::ChatdCluster | Kind::ChatdTls)
    }

    /// Whether its members speak TLS (from the first byte).
    pub fn tls(self) -> bool {
        self == Kind::ChatdTls
    }

    /// What this variant of chatd adds to every scenario's options.
    pub fn chatd_variant(self) -> &'static [&'static str] {
        match self {
            Kind::ChatdNoStore => &["--history", "0"],
            Kind::ChatdSyncAlways => &["--sync", "always"],
            _ => &[],
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            Kind::Chatd
            | Kind::ChatdNoStore
            | Kind::ChatdSyncAlways
            | Kind::ChatdCluster
            | Kind::ChatdTls
            | Kind::Python => Proto::Chat,
            Kind::Nats | Kind::NatsJetStream => Proto::Nats,
            Kind::Redis => Proto::Redis,
            Kind::RedisStreams => Proto::RedisStreams,
        }
    }

    /// The program to run, or why it cannot be. A cluster needs
    /// nats-server as much as chatd: without it, this says why.
    pub fn program(self) -> Result<PathBuf, String> {
        let (name, package) = match self {
            Kind::Chatd | Kind::ChatdNoStore | Kind::ChatdSyncAlways | Kind::ChatdTls => {
                return Ok(PathBuf::from(CHATD))
            }
            Kind::ChatdCluster => return nats_server().map(|_| PathBuf::from(CHATD)),
            Kind::Nats | Kind::NatsJetStream => return nats_server(),
            Kind::Redis | Kind::RedisStreams => ("redis-server", "redis-server"),
            Kind::Python => ("python3", "python3"),
        };
        find_program(name).ok_or_else(|| format!("{name} not installed; apt-get install {package} to compare"))
    }

    /// The program's version, for the header.
    pub fn version(self) -> String {
        if self == Kind::ChatdCluster {
            return format!("{} + {}", Kind::Chatd.version(), Kind::NatsJetStream.version());
        }
        let Ok(program) = self.program() else { return "not installed".into() };
        let flag = if self.is_chatd() { "-V" } else { "--version" };
        let out = Command::new(program).arg(flag).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    }
}

/// The nats-server to run, found as the tests find it.
pub use crate::find_nats::nats_server;

/// A fresh, empty directory under `target/tmp` for one server's data,
/// removed with everything in it when the last holder drops it. A server
/// restarted on the same history shares it (`Rc`).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Makes `target/tmp/chatbench-data/<label>-<pid>-<n>`, new and empty.
    pub fn new(label: &str) -> anyhow::Result<Rc<DataDir>> {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("chatbench-data")
            .join(format!("{label}-{}-{n}", std::process::id()));
        // A directory left by an earlier run that was killed, if the pid
        // came round again: it must not hand this server an old history.
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Rc::new(DataDir { path }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files in the directory (and below) whose names end in `suffix`:
    /// how many, their sizes added up, and the bytes the disk gave them
    /// (more than the size where space is reserved ahead of writes).
    pub fn files(&self, suffix: &str) -> anyhow::Result<(usize, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut totals = (0, 0, 0);
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else if entry.file_name().to_string_lossy().ends_with(suffix) {
                    totals.0 += 1;
                    totals.1 += meta.len();
                    totals.2 += meta.blocks() * 512;
                }
            }
        }
        Ok(totals)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Where members connect, in turn: `addr` alone, or a cluster's chatd.
    pub addrs: Vec<SocketAddr>,
    /// From spawning the program to its accepting connections (chatd: to
    /// its `listening on` line, which comes once its history is loaded).
    pub startup: Duration,
    child: Child,
    log: PathBuf,
    /// Kept until the server is dropped: the directory goes with the last.
    data: Option<Rc<DataDir>>,
    /// A cluster's other processes: its second chatd, then its nats-server
    /// (stopped last, once no chatd needs it).
    companions: Vec<Server>,
}

impl Server {
    /// Starts a `kind` server on 127.0.0.1 (chatd with `options` added) and
    /// waits until it accepts connections.
    pub fn start(kind: Kind, options: &[&str]) -> anyhow::Result<Server> {
        if kind == Kind::ChatdCluster {
            return Server::start_cluster(options);
        }
        Server::start_on(kind, options, None, Duration::from_secs(10))
    }

    /// A nats-server with JetStream, then two chatd with `--cluster` on it
    /// and one `--room` (and `options`), each waited for in turn.
    fn start_cluster(options: &[&str]) -> anyhow::Result<Server> {
        let limit = Duration::from_secs(10);
        let nats = Server::spawn(Kind::NatsJetStream, "nats-jetstream", &[], None, limit)?;
        let url = format!("nats://{}", nats.addr);
        let mut cluster = options.to_vec();
        cluster.extend(["--cluster", &url, "--room", "bench"]);
        // On an error, what started is killed in reverse order: a chatd,
        // then the NATS.
        let mut first = Server::spawn(Kind::ChatdCluster, "chatd-cluster-a", &cluster, None, limit)?;
        let second = Server::spawn(Kind::ChatdCluster, "chatd-cluster-b", &cluster, None, limit)?;
        first.addrs = vec![first.addr, second.addr];
        first.companions = vec![second, nats];
        Ok(first)
    }

    /// Starts a `kind` server on `data` (chatd's `--data-dir`; a new one when
    /// none is given), allowing it `limit` to come up.
    pub fn start_on(
        kind: Kind,
        options: &[&str],
        data: Option<Rc<DataDir>>,
        limit: Duration,
    ) -> anyhow::Result<Server> {
        Server::spawn(kind, kind.name(), options, data, limit)
    }

    /// One process of `kind`, its log in `target/tmp/chatbench-<label>.log`.
    fn spawn(
        kind: Kind,
        label: &str,
        options: &[&str],
        data: Option<Rc<DataDir>>,
        limit: Duration,
    ) -> anyhow::Result<Server> {
        let program = kind.program().map_err(|e| anyhow!(e))?;
        let data = match data {
            None if kind.is_chatd() || matches!(kind, Kind::RedisStreams | Kind::NatsJetStream) => {
                Some(DataDir::new(label)?)
            }
            data => data,
        };
        let log = log_path(label);
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&program);
        command.stdin(Stdio::null()).stderr(stderr);
        let port = match kind {
            Kind::Nats | Kind::NatsJetStream | Kind::Redis | Kind::RedisStreams => free_port()?,
            _ => 0,
        };
        match kind {
            // With --cluster chatd keeps nothing in --data-dir; it gets one
            // anyway, so it never falls back on the user's.
            Kind::Chatd | Kind::ChatdNoStore | Kind::ChatdSyncAlways | Kind::ChatdCluster | Kind::ChatdTls => {
                let data = data.as_ref().expect("chatd always has a data directory");
                command.arg("--data-dir").arg(data.path());
                command.args(["--bind", "127.0.0.1:0", "-q"]).args(kind.chatd_variant()).args(options)
            }
            Kind::Python => command.arg(PYTHON_SERVER),
            Kind::Nats => command.args(["-a", "127.0.0.1", "-p", &port.to_string()]),
            Kind::NatsJetStream => {
                let data = data.as_ref().expect("JetStream always has a store directory");
                command.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(data.path())
            }
            Kind::Redis => command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]).args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "20000",
            ]),
            Kind::RedisStreams => {
                let data = data.as_ref().expect("redis streams always have a data directory");
                command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]).arg("--dir").arg(data.path()).args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--maxclients",
                    "20000",
                ])
            }
        };
        let announces = kind.is_chatd() || kind == Kind::Python;
        command.stdout(if announces { Stdio::piped() } else { Stdio::null() });
        let spawned = Instant::now();
        let mut child = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        let addr = if announces {
            let stdout = child.stdout.take().expect("piped");
            wait_for_announcement(stdout, limit, kind.tls())
        } else {
            wait_for_port(port, limit).map(|addr| (addr, None))
        };
        let startup = spawned.elapsed();
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server =
            Server { kind, addr: unbound, addrs: Vec::new(), startup, child, log, data, companions: Vec::new() };
        match addr {
            Ok((addr, tls_addr)) => {
                server.addr = addr;
                // Members of a TLS kind connect where TLS starts at once.
                server.addrs = vec![tls_addr.unwrap_or(addr)];
            }
            Err(e) => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                return Err(e.context(format!("{} did not start; see {}", kind.name(), server.log.display())));
            }
        }
        Ok(server)
    }

    /// chatd's `--data-dir`, Redis streams' `--dir`.
    pub fn data(&self) -> Option<&DataDir> {
        self.data.as_deref()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU used so far: a cluster's is its processes' together.
    pub fn cpu(&self) -> Duration {
        let companions: Duration = self.companions.iter().map(Server::cpu).sum();
        process_cpu(self.pid()).unwrap_or_default() + companions
    }

    /// A cluster's processes and the CPU each has used so far: where the
    /// cluster's CPU goes. Empty for a server of one process.
    pub fn cpu_parts(&self) -> Vec<(&'static str, Duration)> {
        if self.companions.is_empty() {
            return Vec::new();
        }
        let own = process_cpu(self.pid()).unwrap_or_default();
        let others = self.companions.iter().zip(["chatd b", "nats-server"]).map(|(c, n)| (n, c.cpu()));
        std::iter::once(("chatd a", own)).chain(others).collect()
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// What chatd logged (with -q, its errors): how many lines and the last
    /// one, which explains a scenario that went wrong.
    pub fn logged(&self) -> Option<String> {
        if self.kind == Kind::ChatdCluster && !self.companions.is_empty() {
            let chatds = std::iter::once(self).chain(self.companions.iter().filter(|c| c.kind == Kind::ChatdCluster));
            let logs: Vec<String> =
                chatds.zip(["a", "b"]).filter_map(|(c, n)| Some(format!("{n}: {}", c.logged_alone()?))).collect();
            return (!logs.is_empty()).then(|| logs.join("; "));
        }
        self.logged_alone()
    }

    fn logged_alone(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let last = text.lines().last()?;
        Some(format!("{} log lines, the last: {last}", text.lines().count()))
    }

    /// An error if the server has exited (crashed) while it should be serving.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for companion in &mut self.companions {
            companion.check_alive()?;
        }
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                bail!("{} exited during the scenario ({status}); see {}", self.kind.name(), self.log.display())
            }
        }
    }

    /// Asks the server to stop (SIGTERM). Call `wait` after closing the
    /// connections: a chatd shutting down sends no `LEFT`s, so closing them
    /// afterwards costs it nothing.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.check_alive()?;
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM)?;
        // A cluster's NATS is stopped in `wait`, after its chatd.
        for companion in self.companions.iter().filter(|c| c.kind != Kind::NatsJetStream) {
            kill(Pid::from_raw(companion.pid() as i32), Signal::SIGTERM)?;
        }
        Ok(())
    }

    /// Waits for the server to exit; kills it after 10 s. chatd must exit 0.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let companions = std::mem::take(&mut self.companions);
        let chatd = self.wait_alone();
        let mut outcome = chatd;
        for mut companion in companions {
            if companion.kind == Kind::NatsJetStream {
                companion.terminate()?;
            }
            let done = companion.wait_alone();
            outcome = outcome.and(done);
        }
        outcome
    }

    fn wait_alone(mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not stop within 10 s of SIGTERM; killed", self.kind.name());
            }
            thread::sleep(Duration::from_millis(10));
        };
        if self.kind.is_chatd() && !status.success() {
            bail!("chatd exited with {} after SIGTERM; see {}", describe(status), self.log.display());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After an error: never leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

fn log_path(label: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chatbench-{label}.log"))
}

/// A port nobody listens on now, for servers that cannot pick their own and
/// say which.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Reads `listening on ADDR` from the first line of `stdout`, and with
/// `tls` the address after `from the first byte on` in chatd's `tls:` line;
/// the rest of the output is read and dropped in the background, so the
/// server never blocks writing it.
fn wait_for_announcement(
    stdout: std::process::ChildStdout,
    limit: Duration,
    tls: bool,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // Once nobody listens, the sends fail and the lines are dropped.
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    let next_line = |what: &str| -> anyhow::Result<String> {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => Ok(line?),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("its output ended before a `{what}` line"),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("no `{what}` line within {limit:?}"),
        }
    };
    let line = next_line("listening on")?;
    let addr = line.strip_prefix("listening on ").ok_or_else(|| anyhow!("first line {line:?}"))?;
    let addr = addr.parse().with_context(|| format!("address in {line:?}"))?;
    if !tls {
        return Ok((addr, None));
    }
    loop {
        let line = next_line("tls:")?;
        if !line.starts_with("tls: ") {
            continue;
        }
        // `tls: STARTTLS on A, and from the first byte on B; certificate SHA-256 …`
        let tls_addr = line
            .split_once("from the first byte on ")
            .and_then(|(_, rest)| rest.split(';').next())
            .ok_or_else(|| anyhow!("no TLS port in {line:?}"))?;
        let tls_addr = tls_addr.parse().with_context(|| format!("TLS address in {line:?}"))?;
        return Ok((addr, Some(tls_addr)));
    }
}

fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(addr);
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listening on {addr} within {limit:?}")
}
