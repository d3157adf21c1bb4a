//! Computers on one machine: network namespaces. [`Netns`] is one namespace
//! of the test's own; [`Lan`] is a small LAN of them, each host joined by a
//! veth pair to a bridge in a "switch" namespace, with an address of its own
//! in a /24 of the test's own. Nothing here touches the machine's own
//! interfaces, routes or firewall: every `ip` and `nft` command runs inside a
//! namespace created here, and everything created is deleted when dropped,
//! on a panic too. Processes are started inside a host with
//! `ip netns exec` (which execs, so the PID is the program's); sockets are
//! opened inside one from a thread that entered it (`setns`).
//!
//! These need root, `ip` and `nft`; a test that cannot have them says
//! `SKIPPED: …` (see [`Lan::or_skip`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{bin, Client, PATIENCE};

/// Where `ip netns` keeps the namespaces' names.
const NETNS_DIR: &str = "/var/run/netns";

/// What every namespace name of ours starts with: `minichat-PID-N-…`.
const PREFIX: &str = "minichat";

/// `ip netns add` and `del` one at a time in this process: the first `add`
/// on a machine sets up a mount that concurrent ones could trip over.
static IP_NETNS: Mutex<()> = Mutex::new(());

/// A name no other namespace of this or any other process has:
/// `minichat-PID-N`.
fn unique_name() -> (String, usize) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (format!("{PREFIX}-{}-{n}", std::process::id()), n)
}

/// Runs a command to its end; its output if it failed.
pub fn run(words: &[&str]) -> Result<(), String> {
    run_with_input(words, "")
}

/// Runs a command with `input` on its standard input.
fn run_with_input(words: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(words[0])
        .args(&words[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{words:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).map_err(|e| format!("{words:?}: writing its input: {e}"))?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| format!("{words:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{words:?}: {}; {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Why namespace tests cannot run here, if they cannot: not root, or `ip`,
/// `nft` or one of `tools` missing.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces and nft".into());
    }
    for tool in ["ip", "nft"].iter().chain(tools) {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not available"));
        }
    }
    None
}

/// Says once, on the real standard error (the test harness does not hold it
/// back), that the running test did not run and why.
pub fn skip(why: &str) {
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {why}");
}

/// Deletes namespaces of ours left behind by test processes that are gone
/// (killed before they could clean up): `minichat-PID-…` whose PID is no
/// process. Once per process.
fn delete_leftovers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('-');
            let (Some(PREFIX), Some(pid)) = (parts.next(), parts.next()) else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run(&["ip", "netns", "del", &name]);
            }
        }
    });
}

/// A network namespace of this test's own, with `lo` up; deleted when
/// dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: AtomicBool,
}

impl Netns {
    /// A new namespace with a name of its own.
    pub fn create() -> Result<Netns, String> {
        Netns::named(unique_name().0)
    }

    fn named(name: String) -> Result<Netns, String> {
        delete_leftovers();
        {
            let _one = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
            run(&["ip", "netns", "add", &name])?;
        }
        let ns = Netns { name, deleted: AtomicBool::new(false) };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The words that run a command inside: `ip netns exec NAME`.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Runs a command inside, to its end.
    pub fn exec(&self, command: &[&str]) -> Result<(), String> {
        let mut words = self.prefix().to_vec();
        words.extend_from_slice(command);
        run(&words)
    }

    /// Runs `ip -n NAME ARGS…`: `ip` acting inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut words = vec!["ip", "-n", &self.name];
        words.extend_from_slice(args);
        run(&words)
    }

    /// A command that runs `program` inside. Its clients remember servers'
    /// certificates (`$XDG_DATA_HOME`) in a folder of this namespace's, so
    /// no test meets what another remembered, nor the person's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command.env("XDG_DATA_HOME", self.data_home());
        command
    }

    /// `$XDG_DATA_HOME` for what runs inside; removed with the namespace.
    pub fn data_home(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("minichat-data-{}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace: a socket it
    /// opens belongs here for its whole life, whichever thread uses it
    /// afterwards, and a process or thread it starts lives here.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("{NETNS_DIR}/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        thread::scope(|scope| {
            let inside = scope.spawn(|| {
                // SAFETY: a plain system call on a descriptor that stays open
                // meanwhile; it changes this new thread's namespace only.
                let entered = unsafe { nix::libc::setns(file.as_raw_fd(), nix::libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
                f()
            });
            inside.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A line client connected from inside to `server`, its `HELLO` read.
    pub fn connect(&self, server: SocketAddr) -> Client {
        let stream = self
            .within(|| TcpStream::connect_timeout(&server, PATIENCE))
            .unwrap_or_else(|e| panic!("connect from {} to {server}: {e}", self.name));
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut client = Client { reader, stream, pings: 0 };
        client.expect_prefix("HELLO chatd/");
        client
    }

    /// A line client from inside, joined as `name`.
    pub fn join(&self, server: SocketAddr, name: &str) -> Client {
        let mut client = self.connect(server);
        client.send(&format!("JOIN {name}"));
        client.expect(&format!("OK JOIN {name}"));
        client
    }

    /// Deletes the namespace's name. The namespace itself lives on while a
    /// process or socket is still inside.
    pub fn delete(&self) {
        if !self.deleted.swap(true, Ordering::SeqCst) {
            let _one = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.data_home());
        self.delete();
    }
}

/// A LAN on this machine: one switch (a bridge in a namespace of its own)
/// and hosts `a`, `b`, `c`, … each a namespace with an `eth0` cabled to the
/// switch by a veth pair, at 10.N.0.1, .2, .3, … /24, N chosen per LAN.
/// Everything is deleted when dropped.
#[derive(Debug)]
pub struct Lan {
    // Dropped in this order: the hosts, then the switch.
    hosts: Vec<Host>,
    switch: Netns,
}

/// One computer of a [`Lan`].
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    label: char,
    addr: Ipv4Addr,
}

impl Lan {
    /// A LAN of `hosts` computers, or why this machine cannot make one (no
    /// namespaces, bridges or veth pairs here). Fails the test if a later
    /// step goes wrong.
    pub fn new(hosts: usize) -> Result<Lan, String> {
        assert!((1..=26).contains(&hosts), "{hosts} hosts");
        let (name, n) = unique_name();
        // A /24 of its own for each LAN of this process. The LANs are
        // isolated from each other and from the machine anyway: no route
        // leads from one namespace to another except through its switch.
        let subnet = (n % 250 + 1) as u8;
        let switch = Netns::named(format!("{name}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        let mut lan = Lan { hosts: Vec::new(), switch };
        for i in 0..hosts {
            let label = (b'a' + i as u8) as char;
            let ns = Netns::named(format!("{name}-{label}"))?;
            let addr = Ipv4Addr::new(10, subnet, 0, i as u8 + 1);
            let port = format!("p{label}");
            // Made inside the switch, its other end moved straight into the
            // host: neither end is ever in the machine's own namespace.
            lan.switch.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])?;
            let host = Host { ns, label, addr };
            lan.hosts.push(host);
            let host = lan.hosts.last().unwrap();
            lan.switch.ip(&["link", "set", &port, "master", "br0", "up"]).expect("switch port up");
            host.ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]).expect("address");
            host.ns.ip(&["link", "set", "eth0", "up"]).expect("eth0 up");
        }
        Ok(lan)
    }

    /// A LAN of `hosts`, or `None` after saying `SKIPPED: …` when this
    /// machine cannot make one or lacks one of `tools` (`nft`, `tmux`).
    pub fn or_skip(hosts: usize, tools: &[&str]) -> Option<Lan> {
        if let Some(why) = unavailable(tools) {
            skip(&why);
            return None;
        }
        let lan = match Lan::new(hosts) {
            Ok(lan) => lan,
            Err(e) => {
                skip(&format!("cannot make a LAN of network namespaces here: {e}"));
                return None;
            }
        };
        if tools.contains(&"nft") {
            if let Err(e) = lan.hosts[0].ns.exec(&["nft", "list", "ruleset"]) {
                skip(&format!("nftables does not work in a network namespace here: {e}"));
                return None;
            }
        }
        Some(lan)
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Drops every multicast frame at the switch (nftables on its bridge),
    /// as a network that blocks multicast does: mDNS no longer gets from one
    /// host to another, while unicast, and ARP's broadcasts, still do.
    pub fn block_multicast(&self) {
        let rules = "\
            table bridge minichat_multicast {
                chain forward { type filter hook forward priority 0; policy accept; meta pkttype multicast drop; }
            }
        ";
        let mut words = self.switch.prefix().to_vec();
        words.extend(["nft", "-f", "-"]);
        run_with_input(&words, rules).unwrap_or_else(|e| panic!("blocking multicast at the switch: {e}"));
    }
}

impl Host {
    /// The host's address on the LAN.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// A command that runs `program` on this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.ns.command(program)
    }

    /// See [`Netns::within`].
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.within(f)
    }

    /// See [`Netns::connect`].
    pub fn connect(&self, server: SocketAddr) -> Client {
        self.ns.connect(server)
    }

    /// See [`Netns::join`].
    pub fn join(&self, server: SocketAddr, name: &str) -> Client {
        self.ns.join(server, name)
    }

    /// Pulls the host's cable: from now on not one packet goes in or out of
    /// it (nftables in its namespace, IP and ARP), and nobody is told.
    pub fn cut_cable(&self) {
        let rules = "\
            table inet minichat_cable {
                chain input { type filter hook input priority -400; policy drop; }
                chain output { type filter hook output priority -400; policy drop; }
            }
            table arp minichat_cable {
                chain input { type filter hook input priority 0; policy drop; }
                chain output { type filter hook output priority 0; policy drop; }
            }
        ";
        let mut words = self.ns.prefix().to_vec();
        words.extend(["nft", "-f", "-"]);
        run_with_input(&words, rules).unwrap_or_else(|e| panic!("cutting host {}'s cable: {e}", self.label));
    }

    /// The computer is gone: its cable is cut off at the switch and its
    /// namespace deleted. Processes still running there can send nothing
    /// any more, not even a FIN when they are killed.
    pub fn delete(&self) {
        self.ns.ip(&["link", "del", "eth0"]).unwrap_or_else(|e| panic!("host {}: {e}", self.label));
        self.ns.delete();
        let path = format!("{NETNS_DIR}/{}", self.ns.name);
        assert!(!std::path::Path::new(&path).exists(), "{path} is still there");
    }
}

/// The lines a pipe yields, read on a thread of their own so that waiting for
/// one can have a deadline.
pub fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A process this test started, its standard output read line by line and its
/// standard error kept; killed (SIGKILL, by its PID) and reaped when dropped
/// if still running.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Arc<(Mutex<String>, Condvar)>,
}

impl Proc {
    /// Starts `command` with its three standard streams piped. It is
    /// killed if the test process dies first, killed itself.
    pub fn spawn(mut command: Command, what: &str) -> Proc {
        // SAFETY: between fork and exec, one system call and nothing else.
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({command:?}): {e}"));
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                // A test that failed while waiting on it poisoned it: go on.
                sink.0.lock().unwrap_or_else(|e| e.into_inner()).push_str(&format!("{line}\n"));
                sink.1.notify_all();
            }
        });
        let stdout = lines_of(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        Proc { child, what: what.to_owned(), stdin, stdout, stderr }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.what));
    }

    pub fn kill_and_reap(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.child.wait().expect("reap our own child")
    }

    /// Its standard input; closing it is the end of its input.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("standard input taken already")
    }

    /// The next line of its standard output within `timeout`; `None` at
    /// the end of it or when time runs out.
    pub fn line_within(&self, timeout: Duration) -> Option<String> {
        self.stdout.recv_timeout(timeout).ok()
    }

    /// The next line of its standard output; fails the test after `PATIENCE`
    /// or at the end of it.
    pub fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("no line from {} ({e:?}); its stderr:\n{}", self.what, self.stderr()))
    }

    pub fn expect_line(&self, want: &str) {
        let got = self.next_line();
        assert_eq!(got, want, "from {}", self.what);
    }

    /// Everything it wrote to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until its standard error holds `text`; returns all of it.
    pub fn expect_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let (log, changed) = &*self.stderr;
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        while !log.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = log.clone();
                drop(log);
                panic!("{} never wrote {text:?} to stderr; it wrote:\n{seen}", self.what);
            }
            log = changed.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        log.clone()
    }

    /// Waits for it to exit, failing the test after `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for our own child") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit; its stderr:\n{}", self.what, self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A `chatd` inside a namespace (`Chatd::start` runs it in ours), started with
/// the arguments given and nothing else: pass `--bind` to choose where.
#[derive(Debug)]
pub struct NsChatd {
    proc: Proc,
    /// The address from its first line, `listening on ADDRESS:PORT`.
    pub addr: SocketAddr,
    /// Its history's directory, when the test did not give one.
    _data: Option<super::TempDir>,
}

impl NsChatd {
    pub fn start(ns: &Netns, args: &[&str]) -> NsChatd {
        let data = super::TempDir::new("ns-chatd-data");
        let mut chatd = NsChatd::start_in(ns, data.path(), args);
        chatd._data = Some(data);
        chatd
    }

    /// Starts chatd with its history in `dir`: a restart keeps the room's past.
    pub fn start_in(ns: &Netns, dir: &std::path::Path, args: &[&str]) -> NsChatd {
        let mut command = ns.command(bin("chatd"));
        command.arg("--data-dir").arg(dir).args(args);
        // `ip netns exec` execs chatd: this PID is chatd's.
        let proc = Proc::spawn(command, "chatd");
        let first = proc.next_line();
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("chatd's first line was {first:?}; its log:\n{}", proc.stderr()));
        NsChatd { proc, addr, _data: None }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next line chatd printed on standard output after `listening on`:
    /// how another computer reaches it.
    pub fn next_stdout_line(&self) -> String {
        self.proc.next_line()
    }

    /// Waits until the log holds `text`; returns the log.
    pub fn expect_log(&self, text: &str) -> String {
        self.proc.expect_stderr(text)
    }

    /// Everything chatd logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// Waits until chatd logs that `name` joined from an address of `from`,
    /// and returns the address it logged (the client's, as the server saw it).
    pub fn expect_joined_from(&self, name: &str, from: Ipv4Addr) -> SocketAddr {
        let text = format!("chatd: {name} joined from {from}:");
        let log = self.expect_log(&text);
        let line = log.lines().rfind(|line| line.starts_with(&text)).expect("the line just waited for");
        line.strip_prefix("chatd: ")
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn signal(&self, signal: Signal) {
        self.proc.signal(signal);
    }

    /// Waits for chatd to exit, failing the test after `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        self.proc.wait()
    }
}
