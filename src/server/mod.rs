//! The room server: the accept loop, one thread per connection (which reads,
//! answers and ends it), a few writer threads that send every member the
//! room's events, and a clean shutdown. [`Server::bind`] then
//! [`Server::serve`]; `chatd` is a thin wrapper over these two.

mod connection;
mod link;
mod log;
mod nudge;
mod outbox;
mod password;
mod registry;
mod shutdown;
mod socket;
mod wakeup;
mod wire;
mod writers;

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use self::connection::Connection;
pub use self::log::{Log, Verbosity};
use self::nudge::Nudge;
use self::password::Door;
use self::registry::{Registry, Turned};
pub use self::shutdown::ShutdownSignal;
pub use self::socket::KeepaliveTiming;
use self::writers::Writers;
use crate::protocol::{ByeReason, ErrorCode, Refusal, ServerLine, SERVER_ID};
use crate::room::Room;

/// Each connection thread's stack. Little is kept on it; the pages it never
/// touches cost no memory, but an idle member's touched ones do: two, with
/// the thread's own data (chatbench's idle scenario shows a third at once).
const THREAD_STACK: usize = 128 * 1024;

/// Everything `chatd`'s options set.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub max_clients: usize,
    /// Most connections from one address; this computer's own are not
    /// counted.
    pub max_per_address: usize,
    pub max_line: usize,
    pub max_queue: usize,
    pub join_timeout: Duration,
    pub dead_peer_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Lines a second one connection may send; 0 for no limit.
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub verbosity: Verbosity,
    pub history: crate::history::Config,
    /// Set to serve a room kept in NATS JetStream (`--cluster`).
    pub cluster: Option<ClusterConfig>,
    /// The certificate to offer TLS with (`STARTTLS`, and `tls_bind`);
    /// `None` for plain text only (`--no-tls`).
    pub tls: Option<crate::tls::Identity>,
    /// Where TLS is spoken from the first byte, for tools that know TLS but
    /// not `STARTTLS` (`openssl s_client`); `None` for nowhere.
    pub tls_bind: Option<SocketAddr>,
    /// Whether `tls_bind` was asked for (`--tls-bind`): then not getting it
    /// is an error; the default port, when taken, is done without.
    pub tls_bind_given: bool,
    /// The room's password (`--password-file`), if it has one.
    pub password: Option<crate::password::Password>,
    /// With a password: take it, and joins, in plain text from other
    /// computers too (`--allow-plain`).
    pub allow_plain: bool,
    /// The longest wait between two tries at the password from one address.
    pub password_max_wait: Duration,
}

/// Where the room is kept when it spans several servers.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub urls: Vec<String>,
    pub room: String,
    pub replicas: usize,
    pub dead_after: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: SocketAddr::from(([0, 0, 0, 0], crate::protocol::DEFAULT_PORT)),
            max_clients: 1000,
            max_per_address: 64,
            max_line: crate::protocol::DEFAULT_MAX_LINE,
            max_queue: 4 << 20,
            join_timeout: Duration::from_secs(60),
            dead_peer_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            rate_limit: 200_000,
            rate_burst: 20_000,
            verbosity: Verbosity::Normal,
            history: crate::history::Config {
                dir: PathBuf::from("chatd-history"),
                keep: 0,
                sync: crate::history::SyncPolicy::EverySecond,
            },
            cluster: None,
            tls: None,
            tls_bind: None,
            tls_bind_given: false,
            password: None,
            allow_plain: false,
            password_max_wait: Duration::from_secs(20),
        }
    }
}

/// What every connection thread shares.
#[derive(Debug)]
struct Context {
    config: Config,
    room: Arc<Room>,
    registry: Arc<Registry>,
    writers: Writers,
    log: Log,
    /// The port plain text is spoken on, as bound.
    plain_port: u16,
    /// Where a room with a password checks it.
    door: Option<Door>,
}

#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// Where TLS is spoken from the first byte (`--tls-bind`).
    tls_listener: Option<TcpListener>,
    ctx: Arc<Context>,
    /// What the start-up lines say of the history.
    history_summary: Vec<String>,
}

impl Server {
    pub fn bind(mut config: Config) -> anyhow::Result<Server> {
        raise_fd_limit();
        let listener = TcpListener::bind(config.bind).map_err(|e| bind_error(config.bind, e, "--bind"))?;
        listener.set_nonblocking(true)?;
        let log = Log::new(config.verbosity);
        let tls_listener = match (&config.tls, config.tls_bind) {
            (Some(_), Some(addr)) => match TcpListener::bind(addr) {
                Ok(tls_listener) => {
                    tls_listener.set_nonblocking(true)?;
                    Some(tls_listener)
                }
                Err(e) if !config.tls_bind_given => {
                    // STARTTLS on the main port still works.
                    log.error(format_args!(
                        "{}; TLS from the first byte is off, STARTTLS still works",
                        bind_error(addr, e, "--tls-bind")
                    ));
                    None
                }
                Err(e) => return Err(bind_error(addr, e, "--tls-bind")),
            },
            _ => None,
        };
        let (room, summary) = match &config.cluster {
            Some(cluster) => open_cluster(cluster, &config, log)?,
            None => {
                let opened = crate::history::open(&config.history, config.max_clients)?;
                opened.warnings.iter().for_each(|warning| log.error(format_args!("{warning}")));
                let room = Room::new(config.max_queue, Arc::clone(&opened.history));
                room.record_departures(&opened.present)
                    .map_err(|e| anyhow!("cannot record that the last run's members left: {e}"))?;
                let summary = crate::history::summary(room.history().as_ref(), opened.place.as_deref());
                (room, summary)
            }
        };
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let writers = Writers::start(&room, cpus).map_err(|e| anyhow!("cannot start the writer threads: {e}"))?;
        // The door holds the password from now on: one copy of it.
        let door = config.password.take().map(|password| Door::new(password, config.password_max_wait));
        let registry = Registry::new(config.max_clients, config.max_per_address);
        let plain_port = listener.local_addr()?.port();
        let ctx = Context { room, writers, registry, log, door, config, plain_port };
        let history_summary = vec![summary];
        Ok(Server { listener, tls_listener, ctx: Arc::new(ctx), history_summary })
    }

    /// For a room served by several chatd (`--cluster`), what names it the
    /// same on each of them: its history's epoch.
    pub fn cluster(&self) -> Option<String> {
        self.ctx.room.bridge().map(|_| self.ctx.room.history().epoch().to_owned())
    }

    /// What the start-up lines say of the room's password, if it has one
    /// (never the password itself).
    pub fn password_summary(&self) -> Option<&'static str> {
        self.ctx.door.as_ref().map(|_| match self.ctx.config.allow_plain {
            true => "the room has a password; other computers may give it in plain text (--allow-plain)",
            false => {
                "the room has a password; other computers must connect with TLS (or start chatd with --allow-plain)"
            }
        })
    }

    /// Where the history is and how much of it there is, for the start-up lines.
    pub fn history_summary(&self) -> &[String] {
        &self.history_summary
    }

    /// The address really bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where TLS is spoken from the first byte, if anywhere.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The fingerprint of the certificate TLS is offered with.
    pub fn fingerprint(&self) -> Option<crate::tls::Fingerprint> {
        self.ctx.config.tls.as_ref().map(|identity| identity.fingerprint)
    }

    /// Serves until `shutdown` fires, then stops accepting, delivers what was
    /// accepted, says `BYE shutdown` to everyone and returns, within the
    /// shutdown timeout.
    pub fn serve(self, shutdown: &ShutdownSignal) -> anyhow::Result<()> {
        loop {
            let mut fds = vec![
                PollFd::new(shutdown.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(self.tls_listener.as_ref().map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(anyhow!(e).context("waiting for connections")),
            }
            if shutdown.is_requested() {
                break;
            }
            self.accept_ready(&self.listener, false);
            if let Some(tls_listener) = &self.tls_listener {
                self.accept_ready(tls_listener, true);
            }
        }
        drop(self.listener);
        drop(self.tls_listener);
        let ctx = &self.ctx;
        let deadline = Instant::now() + ctx.config.shutdown_timeout;
        ctx.log.info(format_args!(
            "shutting down: {} members, {} connections; delivering what was accepted",
            ctx.room.len(),
            ctx.registry.len()
        ));
        ctx.room.close();
        ctx.registry.wake_all();
        let open = ctx.registry.wait_until_empty(deadline);
        if !ctx.room.finish(deadline) {
            ctx.log.error(format_args!(
                "some members' departures were not recorded in the cluster in time; \
                 the other servers will record them as lost within --dead-server-timeout"
            ));
        }
        if let Err(e) = ctx.room.history().sync() {
            ctx.log.error(format_args!("cannot flush the history to disk: {e}; the last second of it may be lost"));
        }
        match open {
            0 => ctx.log.info(format_args!("stopped")),
            n => ctx.log.error(format_args!(
                "stopped; {n} connections did not take their last lines within {:?} (--shutdown-timeout)",
                ctx.config.shutdown_timeout
            )),
        }
        Ok(())
    }

    fn accept_ready(&self, listener: &TcpListener, tls_first: bool) {
        loop {
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, tls_first),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    self.ctx.log.error(format_args!(
                        "cannot accept a connection: {e}; raise the open-file limit (ulimit -n) if this repeats"
                    ));
                    // Out of descriptors, most likely: let some connections end.
                    thread::sleep(Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, tls_first: bool) {
        let ctx = &self.ctx;
        let nudge = Arc::new(Nudge::default());
        let ticket = match ctx.registry.admit(Arc::clone(&nudge), peer.ip()) {
            Ok(ticket) => ticket,
            Err(Turned::Full) => {
                let max = ctx.registry.max();
                let noun = if max == 1 { "connection" } else { "connections" };
                return self.refuse(stream, peer, tls_first, &format!("server full ({max} {noun}); try again later"));
            }
            Err(Turned::TooMany) => {
                let max = ctx.registry.max_per_address();
                let why = format!(
                    "too many connections from {} ({max} at most from one computer); close one, then try again",
                    peer.ip()
                );
                return self.refuse(stream, peer, tls_first, &why);
            }
        };
        if let Err(e) = socket::configure(&stream, ctx.config.dead_peer_timeout) {
            ctx.log.error(format_args!("{peer}: cannot set socket options: {e}"));
            return;
        }
        let connection = Box::new(Connection::new(Arc::clone(ctx), stream, peer, nudge, ticket, tls_first));
        let spawned = thread::Builder::new().stack_size(THREAD_STACK).spawn(move || connection.run());
        if let Err(e) = spawned {
            ctx.log.error(format_args!("{peer}: cannot start a thread: {e}; lower --max-clients"));
        }
    }

    /// Turns a connection away with `ERR FULL` and `BYE full`; on the TLS
    /// port, where plain words would be taken for a broken handshake, by
    /// closing it.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, tls_first: bool, why: &str) {
        self.ctx.log.info(format_args!("{peer}: turned away: {why}"));
        if tls_first {
            return;
        }
        let lines = [
            ServerLine::Hello { server: SERVER_ID.into(), text: "type JOIN <name> to enter".into() },
            ServerLine::Err(Refusal::new(ErrorCode::Full, why)),
            ServerLine::Bye(ByeReason::Full),
        ];
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        // A new socket's buffer takes these few bytes at once; never wait.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write_all(text.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Joins the room kept in NATS: the room, and the start-up line about it.
fn open_cluster(cluster: &ClusterConfig, config: &Config, log: Log) -> anyhow::Result<(Arc<Room>, String)> {
    anyhow::ensure!(
        config.history.keep > 0,
        "--history 0 cannot go with --cluster: the servers share the room's order through its history \
         in NATS; give --history the number of events to keep (at least 1)"
    );
    let options = crate::cluster::Options {
        keep: config.history.keep,
        replicas: cluster.replicas,
        dead_after: cluster.dead_after,
        ..crate::cluster::Options::default()
    };
    let bridge = crate::cluster::Bridge::connect(&cluster.urls, &cluster.room, options)?;
    let bridge = Arc::new(bridge);
    let report: crate::room::Report = Arc::new(move |text: &str| log.error(format_args!("cluster: {text}")));
    let room = Room::clustered(config.max_queue, Arc::clone(&bridge), report)?;
    let history = room.history();
    let summary = format!(
        "history: {} events in NATS stream minichat-{} at {} (epoch {}); this server is {}",
        (history.last_seq() + 1).saturating_sub(history.first_kept()),
        cluster.room,
        cluster.urls.join(","),
        history.epoch(),
        bridge.server_id()
    );
    Ok((room, summary))
}

fn bind_error(addr: SocketAddr, e: io::Error, option: &str) -> anyhow::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => format!("is another chatd running? choose another port with {option}"),
        io::ErrorKind::PermissionDenied => {
            format!("ports below 1024 need privileges; choose another port with {option}")
        }
        io::ErrorKind::AddrNotAvailable => format!("that address is not on this computer; try {option} 0.0.0.0:PORT"),
        _ => format!("check {option}"),
    };
    anyhow!("cannot listen on {addr}: {e}; {hint}")
}

/// Each connection needs a descriptor; the soft limit is often 1024 while the
/// hard one allows far more.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// How `chatd` announces itself: the address bound, then how another
/// computer reaches it.
pub fn announce(addr: SocketAddr, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "listening on {addr}")?;
    for line in crate::lan::hints(addr, &crate::lan::interface_addresses()) {
        writeln!(out, "{line}")?;
    }
    out.flush()
}
