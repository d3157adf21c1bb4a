//! The command lines, as clap definitions: `--help`, and later the man pages
//! and shell completions, all come from here so they never drift apart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::history::SyncPolicy;
use crate::server::{Config, Verbosity};

const CHATD_ABOUT: &str = "The minichat room server: everyone connected talks in one room";

const CHATD_LONG_ABOUT: &str = "\
The minichat room server: everyone connected talks in one room.

Clients speak a line protocol (JOIN <name>, MSG <text>, EXIT, NAMES, PING) that \
works from the chat tools, from `nc HOST 5000`, or from a script in any language. \
Every message reaches every other member in one order for all; a member that \
stops reading is dropped without holding anyone up; SIGTERM or SIGINT delivers \
what was accepted, says BYE to everyone and exits 0.

The room remembers: its latest events (--history) are kept in an append-only log \
in --data-dir, across restarts and crashes. Clients that join with LAST get the \
latest ones, and a client that lost its connection resumes with SINCE without \
missing anything (protocol version 2). Each event reaches the operating system \
before anyone is sent it and before the PONG that confirms it, so kill -9 of chatd \
loses nothing that a client saw or had confirmed. It reaches the disk within a \
second (a power cut loses at most about a second), or, with --sync always, before \
anything is sent or confirmed. After a crash a torn last record is cut, and the log \
says so; damage anywhere else stops start-up with an error naming the file. When \
the disk is full, new messages are refused with ERR UNAVAILABLE and taken again \
once there is room; members can always leave.

What is said crosses the network encrypted (TLS) with every minichat client on another \
computer, while `nc` still talks in plain text: the clients ask for TLS with STARTTLS, \
and trust chatd's certificate as SSH trusts a host, by its fingerprint (see ENCRYPTION).

With --password-file, the room has a password that clients give with PASS before JOIN; \
wrong tries are slowed down per address and logged, and other computers may give it only over \
an encrypted connection unless --allow-plain is given (see ROOM PASSWORD).

With --cluster, the room is kept in NATS JetStream instead, and every chatd on the same NATS and --room serves it: one order and one history for all, names unique across servers, and a chatd that dies takes none of the room with it (see MORE THAN ONE SERVER).

The first line on standard output is `listening on ADDRESS:PORT`, with the port \
really bound (useful with --bind 127.0.0.1:0); the lines after it say how another \
computer reaches this one, where TLS is spoken and the certificate's SHA-256 fingerprint \
(`tls: ...`), whether the room is announced on the LAN (mDNS / DNS-SD, so \
that the clients there find it with no address; never when bound to loopback, and not with \
--no-announce), whether the room has a password (never the password itself), and the last one \
where the history is and how much of it there is (`history: N events in DIR ...`). The log goes to standard error.";

/// `chatd`'s options.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about = CHATD_ABOUT, long_about = CHATD_LONG_ABOUT)]
pub struct ChatdArgs {
    /// Address and port to listen on; a port alone means all IPv4 addresses.
    #[arg(short, long, value_name = "ADDR:PORT", default_value = "0.0.0.0:5000", env = "CHATD_BIND", value_parser = parse_bind)]
    pub bind: SocketAddr,

    /// The room's name as the clients list it when they look for rooms on the LAN [default: this computer's
    /// name]. Up to 63 bytes.
    #[arg(long, value_name = "TEXT", value_parser = crate::discovery::parse_label)]
    pub label: Option<String>,

    /// Do not announce the room on the LAN (mDNS / DNS-SD, _minichat._tcp): clients must then be given its
    /// address. A server bound to loopback is never announced; one bound to one address is announced on that
    /// address's interface only.
    #[arg(long)]
    pub no_announce: bool,

    /// Most connections at once, joined or not; one more is told ERR FULL and BYE full. Each takes a thread and
    /// a descriptor (see the open-file limit, ulimit -n).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = parse_count)]
    pub max_clients: usize,

    /// Most connections from one computer (one address), so that no computer can take every
    /// place; one more is told ERR FULL and BYE full. This computer's own (loopback) are not counted.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_count)]
    pub max_per_address: usize,

    /// Longest line a client may send, in bytes, newline included; a longer one is
    /// answered ERR TOO_LONG and skipped.
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_size)]
    pub max_line: usize,

    /// Most bytes of events waiting for one member; a member further behind is
    /// dropped with LEFT <name> slow, so nobody else ever waits for it.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub max_queue: usize,

    /// How long a connection may stay without JOIN before ERR TIMEOUT and BYE timeout.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub join_timeout: Duration,

    /// A member whose computer vanished (cable pulled, power lost) is declared gone,
    /// with LEFT <name> timeout, within this time, whether it was idle or had messages
    /// queued for it (TCP keepalive and TCP_USER_TIMEOUT). At least 3s; keepalive counts whole
    /// seconds, so a bound under 10s may be overshot by a fraction of a second.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_dead_peer_timeout)]
    pub dead_peer_timeout: Duration,

    /// On SIGTERM or SIGINT, how long to spend delivering accepted messages and BYE
    /// shutdown before exiting anyway. A second signal exits at once.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Flood control: lines a second one connection may send, 0 for no limit. A faster
    /// sender is slowed down by reading from it less (TCP backpressure), never cut off,
    /// and no line is thrown away.
    #[arg(long, value_name = "LINES", default_value_t = 200_000)]
    pub rate_limit: u32,

    /// Flood control: lines a connection may send at once above --rate-limit.
    #[arg(long, value_name = "LINES", default_value_t = 20_000)]
    pub rate_burst: u32,

    /// Where the room's history and chatd's TLS certificate are kept [default:
    /// $XDG_STATE_HOME/minichat/chatd, or ~/.local/state/minichat/chatd]. Created if missing;
    /// one chatd per directory.
    #[arg(long, value_name = "DIR", env = "CHATD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// How many of the room's latest events are kept, across restarts, for clients that
    /// join with LAST or resume with SINCE; older ones go. 0 keeps none and uses no store.
    #[arg(long, value_name = "EVENTS", default_value_t = 10_000)]
    pub history: u64,

    /// When the history reaches the disk: every-second (a power cut loses at most about a
    /// second; kill -9 of chatd loses nothing acknowledged), or always (before any event is
    /// sent or acknowledged, in batches).
    #[arg(long, value_name = "WHEN", value_enum, default_value = "every-second")]
    pub sync: SyncPolicy,

    /// Serve a room kept in NATS JetStream, with every chatd started with the same NATS and
    /// --room: one order, one history, names unique across servers. A comma-separated list of
    /// nats:// URLs of one NATS server or the nodes of a cluster; --data-dir then keeps only the
    /// TLS certificate.
    #[arg(long, value_name = "URL[,URL...]", env = "CHATD_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,

    /// With --cluster: which room of that NATS to serve (letters, digits, '-' and '_').
    #[arg(long, value_name = "NAME", default_value = "lobby", requires = "cluster", value_parser = parse_room)]
    pub room: String,

    /// With --cluster: on how many NATS nodes the room is kept (1, or 3 on a cluster of three
    /// or more). The first chatd to make the room decides.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_count, requires = "cluster")]
    pub replicas: usize,

    /// With --cluster: a chatd that stopped without a word (kill -9, a power cut) is taken for
    /// dead this long after its last sign of life; the others then record its members as
    /// LEFT <name> lost and free their names. The first chatd to make the room decides.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_dead_server_timeout, requires = "cluster")]
    pub dead_server_timeout: Duration,

    /// Speak plain text only: no STARTTLS, no TLS port, no certificate.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_bind"])]
    pub no_tls: bool,

    /// The TLS certificate to offer, in PEM, with its chain [default: one chatd makes on its
    /// first start, tls.pem in --data-dir, kept across restarts].
    #[arg(long, value_name = "FILE", env = "CHATD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, in PEM (it may be the same file).
    #[arg(long, value_name = "FILE", env = "CHATD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where TLS is spoken from the first byte, for TLS tools that know no STARTTLS
    /// (openssl s_client, socat); the minichat tools use STARTTLS on --bind [default: the
    /// --bind address with the next port, 0.0.0.0:5001].
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_bind)]
    pub tls_bind: Option<SocketAddr>,

    /// Give the room a password: the first line of FILE (without its line end; spaces count). Clients
    /// send it with PASS before JOIN, and wrong tries from one address are answered more and more slowly
    /// (up to 20 s apart) and logged. Never on the command line, where every user of this computer can read
    /// it; the file should be readable by chatd's user alone (chatd warns otherwise).
    #[arg(long, value_name = "FILE", env = "CHATD_PASSWORD_FILE", value_hint = clap::ValueHint::FilePath)]
    pub password_file: Option<PathBuf>,

    /// With --password-file: let other computers give the password, and join, over plain text. Without it,
    /// only this computer's connections and encrypted ones (TLS) may: anyone on the LAN could read a password
    /// sent in clear.
    #[arg(long, requires = "password_file")]
    pub allow_plain: bool,

    /// Log every connection and every ERR sent, too (to standard error).
    #[arg(short, long, action = ArgAction::SetTrue, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Log errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

impl ChatdArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => crate::paths::own_state_dir()
                .ok_or_else(|| anyhow::anyhow!("neither XDG_STATE_HOME nor HOME is set: say where to keep the history with --data-dir DIR, or keep none with --history 0"))?
                .join("chatd"),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            _ if self.no_tls => None,
            (Some(cert), Some(key)) => Some(crate::tls::Identity::given(cert, key)?),
            _ => Some(crate::tls::Identity::own(&dir)?),
        };
        // Port 0 (the tests) stays 0: the system picks another free port.
        let next_port = if self.bind.port() == 0 { 0 } else { self.bind.port().wrapping_add(1) };
        let tls_bind = self.tls_bind.unwrap_or(SocketAddr::new(self.bind.ip(), next_port));
        let password = match &self.password_file {
            Some(path) => Some(crate::password::Password::read_file(path).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(Config {
            password,
            allow_plain: self.allow_plain,
            password_max_wait: Config::default().password_max_wait,
            bind: self.bind,
            max_clients: self.max_clients,
            max_per_address: self.max_per_address,
            max_line: self.max_line,
            max_queue: self.max_queue,
            join_timeout: self.join_timeout,
            dead_peer_timeout: self.dead_peer_timeout,
            shutdown_timeout: self.shutdown_timeout,
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            verbosity: match (self.quiet, self.verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            },
            history: crate::history::Config { dir, keep: self.history, sync: self.sync },
            cluster: (!self.cluster.is_empty()).then(|| crate::server::ClusterConfig {
                urls: self.cluster.clone(),
                room: self.room.clone(),
                replicas: self.replicas,
                dead_after: self.dead_server_timeout,
            }),
            tls,
            tls_bind: Some(tls_bind),
            tls_bind_given: self.tls_bind.is_some(),
        })
    }
}

/// The server a client talks to, and what to do when the connection to it
/// is lost: shared by the three clients.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpt {
    /// The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given); or several, separated by
    /// commas (a:5000,b:5000), all serving the one room: the first that answers as a chat server is used,
    /// and after a lost connection the others are tried in turn, starting with the one after the server lost.
    /// [default: the room announced on the LAN, looked for during 1.5 s: used when it is the only one;
    /// with several, chat asks which and the others stop with the list, exit status 7; with none, exit
    /// status 3]
    #[arg(short, long, value_name = "HOST[:PORT]", env = "CHAT_SERVER", value_parser = parse_server, value_hint = clap::ValueHint::Hostname)]
    pub server: Option<String>,

    /// After a lost connection (the server restarting, a network outage), how long to keep trying to
    /// reconnect, waiting 0.2 s between tries at first and up to 5 s later, before giving up with exit
    /// status 5. Once back, it resumes where it was: nothing missed is left unsaid, and nothing is sent
    /// twice.
    #[arg(long, value_name = "DURATION", env = "CHAT_RETRY_FOR", default_value = "60s", value_parser = parse_duration)]
    pub retry_for: Duration,

    /// Do not reconnect: a lost connection ends it at once, with exit status 5.
    #[arg(long)]
    pub no_reconnect: bool,

    /// Talk only to a server whose TLS certificate has this SHA-256 fingerprint (as chatd prints it
    /// when it starts), even on this computer; anything else ends with exit status 9. Without it, the
    /// certificate a server shows the first time is remembered (in $XDG_DATA_HOME/minichat/known_servers)
    /// and a changed one is refused, with exit status 9.
    #[arg(long, value_name = "SHA256", env = "CHAT_FINGERPRINT", value_parser = crate::tls::Fingerprint::parse)]
    pub fingerprint: Option<crate::tls::Fingerprint>,

    /// The room's password, as the first line of FILE (without its line end), sent with PASS before every
    /// JOIN, reconnections included [default: $CHAT_PASSWORD]. Sent only over a connection nobody else can
    /// read: to this computer, or encrypted. A room without a password takes it and ignores it.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub password_file: Option<PathBuf>,
}

impl ServerOpt {
    /// What the client trusts of the servers' certificates; set for the
    /// whole process (`client::set_trust`) before it connects.
    pub fn trust(&self) -> crate::tls::Trust {
        crate::tls::Trust::from_env(self.fingerprint)
    }

    /// What the client's membership does when its connection to one of
    /// `servers` (given, or found on the LAN) is lost.
    pub fn settings(&self, servers: &str) -> Result<crate::client::Settings, crate::client::ClientError> {
        Ok(crate::client::Settings {
            servers: servers.split(',').map(str::to_owned).collect(),
            retry_for: (!self.no_reconnect).then_some(self.retry_for),
            password: self.password()?,
        })
    }

    /// The room's password: from --password-file, else from $CHAT_PASSWORD
    /// (read here rather than by clap, so `--help` never shows it).
    pub fn password(&self) -> Result<Option<crate::password::Password>, crate::client::ClientError> {
        use crate::client::ClientError;
        use crate::password::Password;
        if let Some(path) = &self.password_file {
            return Password::read_file(path).map(Some).map_err(ClientError::PasswordSource);
        }
        match std::env::var("CHAT_PASSWORD") {
            Ok(text) if !text.is_empty() => Password::new(&text)
                .map(Some)
                .map_err(|why| ClientError::PasswordSource(format!("CHAT_PASSWORD is not a password: {why}"))),
            _ => Ok(None),
        }
    }
}

/// The exit statuses, for `--help` (the man pages list them in their own section).
const CHAT_EXIT_STATUS: &str = "\
Exit status: 0 after /quit, Ctrl-D or the end of input; 1 another failure; 2 bad usage; 3 cannot \
connect, or no room found on the LAN; 4 the name is taken or invalid; 5 the connection was lost and \
not made again within --retry-for, or another connection took the membership over; 7 several rooms \
found on the LAN with input not a terminal (give --server); 8 the room has a password and none, or a \
wrong one, was given (set CHAT_PASSWORD or --password-file), with input not a terminal; 9 the server's TLS \
certificate is not the one remembered or given with --fingerprint, or it offered no TLS where it did before; \
130 Ctrl-C at the name, room or password prompt.";

const CHAT_SEND_EXIT_STATUS: &str = "\
Exit status: 0 once the server confirmed every line; 1 another failure; 2 bad usage; 3 cannot \
connect, or no room found on the LAN; 4 the name is taken or invalid; 5 the connection was lost and \
not made again within --retry-for, or whether the last lines arrived cannot be known (the message says up to which line \
the server confirmed); 6 a line was refused; 7 several rooms found on the LAN (give --server); 8 the \
room has a password and none, or a wrong one, was given (set CHAT_PASSWORD or --password-file); 9 the \
server's TLS certificate is not the one remembered or given with --fingerprint, or it offered no TLS where \
it did before.";

const CHAT_TAIL_EXIT_STATUS: &str = "\
Exit status: 0 after --count messages, or when standard output is closed; 1 another failure; 2 bad \
usage; 3 cannot connect, or no room found on the LAN; 4 the name given is taken or invalid; 5 the \
connection was lost and not made again within --retry-for, or another connection took the membership \
over; 7 several rooms found on the LAN (give --server); 8 the room has a password and none, or a wrong \
one, was given (set CHAT_PASSWORD or --password-file); 9 the server's TLS certificate is not the one \
remembered or given with --fingerprint, or it offered no TLS where it did before.";

/// `chat`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "chat",
    version,
    about = "Talk in a minichat room from an interactive prompt",
    long_about = "Talk in a minichat room from an interactive prompt.

Lines you type are sent as messages; what others say appears above the prompt without \
disturbing the line you are typing. Commands: /who lists the room, /quit (or Ctrl-D) \
leaves, /help shows this list; start a message with // to send a line that begins with /. \
Ctrl-C clears the line, leaving it on the screen marked ^C, as shells do; at the name prompt it \
leaves (exit status 130). History is kept in $XDG_STATE_HOME/minichat/history \
(~/.local/state/minichat/history).

On joining it shows the room's last events (--history) with their local times, above a line \
`-- live --`; every event shows its time. A member that joins and leaves with EXIT within a \
second (a chat-send) is shown as its messages alone, without its joining and leaving; so a join \
is shown up to a second late, with what came after it. When the connection is lost it says so, reconnects, \
resumes where it was, and says whether anything was missed; lines typed meanwhile are sent once \
reconnected, in order, each exactly once.

With standard input not a terminal (echo hi | chat), each input line is sent as a message \
and the room's events are printed until input ends; at a terminal, the room's last events \
(--history) come first, so that echo hi | chat shows where the line went.",
    after_long_help = CHAT_EXIT_STATUS
)]
pub struct ChatArgs {
    #[command(flatten)]
    pub server: ServerOpt,

    /// The name to join as [default: $CHAT_NAME, or asked for; asked for too when $CHAT_NAME is taken]. With
    /// input not a terminal, the default is
    /// $CHAT_NAME or your login name, with -send after it (then -send2, ...) while your own chat holds that
    /// name, as chat-send does.
    #[arg(short, long, value_name = "NAME")]
    pub name: Option<String>,

    /// On joining, show the room's last N events (as many as the server keeps), with their times,
    /// above a line "-- live --"; 0 shows none [default: 20 when standard output is a terminal, echo hi |
    /// chat included; 0 when it is not].
    #[arg(long, value_name = "N")]
    pub history: Option<u64>,

    /// Print the rooms announced on the LAN, one a line: the address to give --server, a tab, the room's
    /// label; then exit (status 3 when none is found). Looks on the LAN whatever --server says.
    #[arg(long)]
    pub list: bool,
}

/// `chat-send`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "chat-send",
    version,
    about = "Send messages to a minichat room from arguments or standard input",
    long_about = "Send messages to a minichat room from arguments or standard input.

With TEXT, sends it as one message. Without, sends each line of standard input as one \
message until end of input (empty lines are skipped). Exits 0 only after the server has \
confirmed that it accepted every line; otherwise says how many lines were sent and where \
it stopped. A line the protocol refuses (too long, control characters, not UTF-8) stops \
it with an error naming the line; nothing is ever truncated.

A lost connection or a restarting server is ridden out: chat-send reconnects, learns from the \
room's history which of its last lines the server took, and sends the rest, so every line \
arrives exactly once. If the server no longer has that history, it says so and exits 5 rather \
than guess.",
    after_long_help = CHAT_SEND_EXIT_STATUS
)]
pub struct ChatSendArgs {
    #[command(flatten)]
    pub server: ServerOpt,

    /// The name to send as, exactly (status 4 when it is taken) [default: $CHAT_NAME or your login name; while
    /// your own chat holds that name, the name with -send after it (then -send2, ...), so the room still sees
    /// who said it].
    #[arg(short, long, value_name = "NAME")]
    pub name: Option<String>,

    /// The message to send; several words are joined with spaces. Without it, standard input is sent.
    #[arg(value_name = "TEXT", trailing_var_arg = true)]
    pub text: Vec<String>,
}

/// `chat-tail`'s options.
#[derive(Debug, Parser)]
#[command(
    name = "chat-tail",
    version,
    about = "Print a minichat room's events, one per line, for pipelines",
    long_about = "Print a minichat room's events, one per line, for pipelines.

Each event is printed and flushed as it arrives: `Ana: hola`, `* Luis joined`, \
`* Luis left (lost)`; or the protocol lines with --raw, or one JSON object per line with \
--json. Control characters in what others wrote are shown escaped, never passed to the \
terminal. A closed standard output (chat-tail | head -3) ends it quietly with status 0, at \
once, even in a quiet room.

With -n N it prints the room's last N events first; with --since EPOCH:SEQ, every event after \
that position. When the connection is lost, or the server restarts, it reconnects and goes on \
from the last event it printed (see --retry-for); events the server no longer keeps are \
reported on standard error (chat-tail: 3 events missed).",
    after_long_help = CHAT_TAIL_EXIT_STATUS
)]
pub struct ChatTailArgs {
    #[command(flatten)]
    pub server: ServerOpt,

    /// The name to join as [default: $CHAT_NAME or your login name, with -tail after it, so it
    /// never collides with your own chat].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// First print the room's last N events (as many as the server keeps), as tail -n does; then the
    /// live ones.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 0, conflicts_with = "since")]
    pub lines: u64,

    /// First print every event after this position, then the live ones: a script that kept the
    /// position of the last event it handled ("epoch" and "seq" in --json) misses nothing in between.
    /// When the server no longer keeps them all, it says so on standard error.
    #[arg(long, value_name = "EPOCH:SEQ")]
    pub since: Option<crate::protocol::Position>,

    /// Print the protocol lines as they come (MSG Ana hola).
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,

    /// Print one JSON object per line: {"event":"msg","from":"Ana","text":"hola","seq":42,
    /// "time":"2026-11-30T13:40:01.123Z","epoch":"k3f9a"}, with the event's position (a number) in
    /// its history (epoch) and the server's time (UTC, RFC 3339); events that the server no longer
    /// keeps show as {"event":"missed","count":N} (null when nobody can say how many).
    #[arg(long)]
    pub json: bool,

    /// Exit after N messages.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,

    /// Print messages only, not joins and leaves.
    #[arg(short = 'm', long)]
    pub messages_only: bool,
}

impl ChatTailArgs {
    pub fn format(&self) -> crate::client::Format {
        use crate::client::Format;
        match (self.raw, self.json) {
            (true, _) => Format::Raw,
            (_, true) => Format::Json,
            _ => Format::Human,
        }
    }
}

/// `HOST:PORT`, `[V6]:PORT`, or a port alone.
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("{e}; expected ADDR:PORT such as 0.0.0.0:5000"))?;
    addrs.next().ok_or_else(|| format!("{text} names no address"))
}

/// A number of things there must be at least one of.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number such as 1000")),
    }
}

/// A duration longer than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| if d.is_zero() { Err("must be longer than 0s".into()) } else { Ok(d) })
}

/// A room's name, which NATS subjects and stream names must take.
fn parse_room(text: &str) -> Result<String, String> {
    crate::cluster::check_room(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// The dead-server timeout: a server's heartbeat is written six times in
/// it, at most every 0.1 s.
fn parse_dead_server_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_secs(1) {
        return Err(format!("{text} is too short: at least 1s"));
    }
    Ok(timeout)
}

/// The dead-peer timeout: TCP keepalive needs a second for each of its
/// steps, so anything under 3 s cannot be kept.
fn parse_dead_peer_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_secs(3) {
        return Err(format!("{text} is too short: TCP keepalive needs at least 3s"));
    }
    Ok(timeout)
}

/// One server, or several separated by commas (`a:5000,b:5000`), each
/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address: a port, when
/// there is one, must be one (1 to 65535), so a typo is a usage error naming
/// the entry rather than a connection that fails later. Spaces around an
/// entry are dropped.
pub fn parse_server(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("no server given; write HOST or HOST:PORT".into());
    }
    let servers: Vec<&str> = text.split(',').map(str::trim).collect();
    for (n, server) in servers.iter().enumerate() {
        let entry = || if servers.len() == 1 { String::new() } else { format!("entry {} ", n + 1) };
        if server.is_empty() {
            return Err(format!("{}of {text:?} is empty; write HOST[:PORT],HOST[:PORT]", entry()));
        }
        let with_port = crate::client::with_default_port(server);
        let port = with_port.rsplit_once(':').map(|(_, port)| port).unwrap_or("");
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            let entry = if servers.len() == 1 { String::new() } else { format!("{}{server:?}: ", entry()) };
            return Err(format!("{entry}{port:?} is not a port (1 to 65535); write HOST or HOST:PORT"));
        }
    }
    Ok(servers.join(","))
}

/// A duration: a number with `ms`, `s`, `m` or `h` after it (`250ms`, `5s`,
/// `1m`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 500ms, 5s or 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A size in bytes: a number, optionally with `K`, `KiB`, `M` or `MiB`
/// (powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| format!("{text:?} is not a size such as 4096, 64K or 4MiB"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use K or M")),
    };
    let bytes = value.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes < 16 {
        return Err(format!("{text:?} is too small; at least 16 bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        ChatdArgs::command().debug_assert();
        ChatArgs::command().debug_assert();
        ChatSendArgs::command().debug_assert();
        ChatTailArgs::command().debug_assert();
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("1").is_err());
    }

    #[test]
    fn nonsense_values_are_usage_errors() {
        assert_eq!(parse_count("1"), Ok(1));
        assert!(parse_count("0").is_err());
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(parse_dead_peer_timeout("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_dead_peer_timeout("1s").is_err());
        for good in ["localhost", "192.168.1.15", "192.168.1.15:6000", "::1", "[::1]:6000", "chat.lan:5000"] {
            assert_eq!(parse_server(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["127.0.0.1:99999", "127.0.0.1:0", "host:", "host:port", "[::1]:70000", "", " "] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_server_of_a_list_is_checked_and_named_when_wrong() {
        assert_eq!(parse_server("a:5000,b:6000").as_deref(), Ok("a:5000,b:6000"));
        assert_eq!(parse_server("a, ::1 ,[::1]:7").as_deref(), Ok("a,::1,[::1]:7"));
        let cases = [
            ("a:5000,,b", "entry 2 of \"a:5000,,b\" is empty"),
            ("a:5000,", "entry 2 of \"a:5000,\" is empty"),
            ("a:5000,b:99999", "entry 2 \"b:99999\": \"99999\" is not a port"),
            ("a:0,b", "entry 1 \"a:0\": \"0\" is not a port"),
        ];
        for (bad, want) in cases {
            let error = parse_server(bad).unwrap_err();
            assert!(error.starts_with(want), "{bad:?}: {error}");
        }
    }

    #[test]
    fn bind_takes_a_port_alone() {
        assert_eq!(parse_bind("6000"), Ok("0.0.0.0:6000".parse().unwrap()));
        assert_eq!(parse_bind("127.0.0.1:0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_bind("[::1]:7000"), Ok("[::1]:7000".parse().unwrap()));
        assert!(parse_bind("nowhere").is_err());
    }

    #[test]
    fn defaults_match_the_library() {
        // Without TLS: the default certificate would be made in the home
        // directory of whoever runs the tests.
        let args = ChatdArgs::parse_from(["chatd", "--no-tls"]);
        let (ours, lib) = (args.config().unwrap(), Config::default());
        assert_eq!(
            (ours.bind, ours.max_clients, ours.max_line, ours.max_queue, ours.join_timeout),
            (lib.bind, lib.max_clients, lib.max_line, lib.max_queue, lib.join_timeout)
        );
        assert_eq!(
            (ours.dead_peer_timeout, ours.shutdown_timeout, ours.rate_limit, ours.rate_burst),
            (lib.dead_peer_timeout, lib.shutdown_timeout, lib.rate_limit, lib.rate_burst)
        );
        assert_eq!(ours.max_per_address, lib.max_per_address);
    }
}
