//! The cluster's bridge to NATS JetStream: one room kept in a stream that
//! every chatd on the same NATS serves (`chatd --cluster`, the issue "One
//! room on several servers"). This module is the foundation: a [`Bridge`]
//! with blocking methods any std thread can call; the clustered room is
//! built on it.
//!
//! # What is where in NATS
//!
//! For a room `R` (letters, digits, `-` and `_`):
//!
//! - the stream `minichat-R`, subject `minichat.R.events`: one message per
//!   event, its payload the wire line. The stream's sequence is the room's
//!   position, one order for every server. It keeps the last
//!   [`Options::keep`] messages (discarding the oldest), on file, on
//!   [`Options::replicas`] nodes, and drops a message whose `Nats-Msg-Id`
//!   it saw in the last [`Options::dedupe_window`]: a publish retried after
//!   a lost acknowledgement is stored once and answered with the first
//!   sequence.
//! - the key-value bucket `minichat-R-names`: who holds which name. The key
//!   is the name key (`name::Name::key`) in hex (NATS keys are ASCII); the
//!   value is `<server id>\n<the caller's value>`. A claim is a create-only
//!   write, so of any number of servers claiming one name at once exactly
//!   one wins.
//! - the bucket `minichat-R-servers`: one key per live server (its id),
//!   written again every heartbeat period (a sixth of
//!   [`Options::dead_after`]); the bucket's `max_age` is two thirds of
//!   `dead_after`, so the key of a server that stopped (`kill -9`, a power
//!   cut, a network cut) expires by itself. The bucket is made by the first
//!   server: its `dead_after` holds for all.
//!
//! # Names of a dead server
//!
//! Every bridge started with [`Bridge::watch_dead`] scans the names bucket
//! every heartbeat period. A server is dead when its heartbeat key is
//! missing in two scans at least one heartbeat period apart while this
//! bridge's own heartbeats succeed in between: right after a JetStream
//! outage (a leader election can take ~30 s on nats-server 2.9) every
//! heartbeat may have expired at once, and a live server gets one period to
//! write its key again before its members are taken for lost. Each of a dead
//! server's names is then deleted with the revision that was read, so when
//! several servers sweep at once exactly one frees each name and tells its
//! caller ([`Freed`]), which records the `LEFT <name> lost`. The bound: a
//! name is freed about `dead_after` after its server's last heartbeat (two
//! thirds for the key to expire, one sixth until the first scan that misses
//! it, one sixth until the second), give or take the NATS server's expiry
//! timer and a scan's latency.
//!
//! # A runtime in a box
//!
//! async-nats needs tokio. [`Bridge::connect`] starts one thread that owns a
//! current-thread runtime; the methods hand it a task (through the
//! runtime's handle, a queue any thread may push to) and wait for the
//! answer on a oneshot channel, with a deadline; subscriptions deliver to a
//! std channel. No `async` reaches the callers, and no runtime runs unless
//! a bridge is made.
//!
//! # nats-server 2.9 and 2.15
//!
//! Both are tested (`tests/cluster.rs`). async-nats's `server_2_10`+
//! features stay off, and the buckets' streams are made here rather than by
//! `create_key_value`, which reads the account's information first and
//! cannot parse 2.9's. On 2.9, after a cluster node dies, making a consumer
//! waits for the new leaders: a subscription may pause 10 to 25 s, while
//! publishes are acknowledged again within a few seconds.

mod link;
mod names;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::history::Event;

pub use names::{Change, Claim, Freed, Holder};

pub use link::check_room;
use link::Link;

/// How the bridge sets up the room in JetStream. The server that makes the
/// stream and buckets decides; the others find them as they are.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many of the latest events the stream keeps (`--history`).
    pub keep: u64,
    /// On how many NATS nodes the stream and buckets are kept: 1, or 3 in a
    /// cluster of three (an odd number, at most the nodes there are).
    pub replicas: usize,
    /// How long the stream remembers a `Nats-Msg-Id`: a publish retried
    /// within it is stored once.
    pub dedupe_window: Duration,
    /// How long after its last heartbeat a server is taken for dead.
    pub dead_after: Duration,
    /// How long start-up waits for JetStream to be ready (a fresh cluster
    /// elects its leaders first).
    pub start_timeout: Duration,
    /// This server's id in the cluster; random when `None`.
    pub server_id: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep: 10_000,
            replicas: 1,
            dedupe_window: Duration::from_secs(120),
            dead_after: Duration::from_secs(10),
            start_timeout: Duration::from_secs(30),
            server_id: None,
        }
    }
}

/// Why the bridge could not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No answer in time; says what it was waiting for.
    Timeout(String),
    /// NATS or JetStream refused or failed.
    Failed(String),
    /// The bridge is shut down.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Error::Failed(why) => write!(f, "{why}"),
            Error::Closed => write!(f, "the cluster bridge is shut down"),
        }
    }
}

impl std::error::Error for Error {}

/// The connection to NATS as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub connected: bool,
    /// How many times the connection was lost since the bridge started.
    pub losses: u64,
}

/// What a subscription delivers, in the stream's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event, and the `msg_id` it was published with.
    Event { event: Event, id: Option<String> },
    /// These positions are no longer kept (older than the stream's first):
    /// they were dropped before they could be delivered.
    Missed { from: u64, to: u64 },
}

/// What the stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// The first position kept; `last + 1` when none is.
    pub first: u64,
    /// The last position stored, 0 for none.
    pub last: u64,
    /// The time of the last event, 0 for none.
    pub last_time_ms: u64,
}

/// A room kept in JetStream, seen from one server. Dropping it closes the
/// connection and stops its thread.
#[derive(Debug)]
pub struct Bridge {
    link: Arc<Link>,
    /// To the publisher task, which keeps events in the order submitted.
    publishing: tokio::sync::mpsc::UnboundedSender<link::Submitted>,
    runtime: tokio::runtime::Handle,
    status: Arc<StatusCell>,
    /// Dropped to stop the runtime's thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Bridge {
    /// Connects to the first NATS of `urls` that answers (the others are
    /// where it reconnects), and creates or finds the room's stream and
    /// buckets. Fails with a message naming the URLs when NATS cannot be
    /// reached or has no JetStream.
    pub fn connect(urls: &[String], room: &str, options: Options) -> anyhow::Result<Bridge> {
        link::check_room(room)?;
        anyhow::ensure!(!urls.is_empty(), "no NATS URL given");
        let server_id = match &options.server_id {
            Some(id) => id.clone(),
            None => crate::history::random_word(12)?,
        };
        let status = Arc::new(StatusCell::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (urls, room, cell) = (urls.to_vec(), room.to_owned(), Arc::clone(&status));
        let thread = thread::Builder::new().name("cluster".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context("cannot start the cluster's runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                match Link::open(&urls, &room, &options, server_id, cell).await {
                    Ok(link) => {
                        let link = Arc::new(link);
                        tokio::spawn(link::heartbeat(Arc::clone(&link)));
                        let (publishing, queue) = tokio::sync::mpsc::unbounded_channel();
                        tokio::spawn(link::publisher(Arc::clone(&link), queue));
                        let _ = ready_tx.send(Ok((link, publishing, tokio::runtime::Handle::current())));
                        // Until the bridge is dropped.
                        let _ = stop_rx.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        match ready_rx.recv() {
            Ok(Ok((link, publishing, runtime))) => {
                status.set(|s| s.connected = true);
                Ok(Bridge { link, publishing, runtime, status, stop: Some(stop_tx), thread: Some(thread) })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the cluster's thread ended before connecting")
            }
        }
    }

    /// This server's id in the cluster.
    pub fn server_id(&self) -> &str {
        &self.link.server_id
    }

    /// The name of the room's history, for positions `<epoch>:<seq>`: the
    /// same on every server, another one if the stream is made again.
    pub fn epoch(&self) -> &str {
        &self.link.epoch
    }

    /// Publishes one event and waits until the stream has stored it,
    /// riding out a leader election or a reconnection up to `timeout`: the
    /// event's position. Publishing again with the same `msg_id` (within
    /// the dedupe window) stores nothing and answers the first position. An
    /// error means the event may or may not be stored: retry with the same
    /// `msg_id`, never another.
    pub fn publish(&self, line: &[u8], msg_id: &str, timeout: Duration) -> Result<u64, Error> {
        self.submit(line, msg_id, timeout).wait(timeout + Duration::from_secs(1))
    }

    /// Publishes one event without waiting: events submitted one after the
    /// other are stored in that order, through outages too, and
    /// [`Receipt::wait`] gives each one's position as [`Bridge::publish`]
    /// would.
    pub fn submit(&self, line: &[u8], msg_id: &str, timeout: Duration) -> Receipt {
        let (answer, answered) = mpsc::sync_channel(1);
        let withdrawn = Arc::new(AtomicBool::new(false));
        let event = link::Submitted {
            line: line.to_vec(),
            id: msg_id.to_owned(),
            timeout,
            answer,
            withdrawn: Arc::clone(&withdrawn),
        };
        // A send that fails (the bridge shut down) drops the answer's
        // sender, and the receipt says so.
        let _ = self.publishing.send(event);
        Receipt { answered, withdrawn }
    }

    /// Delivers the stream's events from position `from` on, in order, to
    /// `sink`, through reconnections and NATS restarts, with neither gap
    /// nor repeat, until the [`Subscription`] is dropped or `sink`'s
    /// receiver is.
    pub fn subscribe(&self, from: u64, sink: mpsc::Sender<Delivery>) -> Subscription {
        let task = self.runtime.spawn(link::follow(Arc::clone(&self.link), from.max(1), sink));
        Subscription { task: task.abort_handle() }
    }

    /// The events `from..=to` still kept, a chunk at a time.
    pub fn read(&self, from: u64, to: u64) -> Result<Replay, Error> {
        let kept = self.kept()?;
        let (from, to) = (from.max(kept.first), to.min(kept.last));
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        if from <= to {
            self.runtime.spawn(link::replay(Arc::clone(&self.link), from, to, tx));
        }
        Ok(Replay { chunks: rx, done: false })
    }

    /// The positions the stream keeps, from NATS.
    pub fn kept(&self) -> Result<Kept, Error> {
        let link = Arc::clone(&self.link);
        self.ask(link::REQUEST_TIMEOUT, async move { link.kept().await })
    }

    /// The NATS node that leads the room's stream now (its server name), if
    /// any: for logs, while an election is awaited.
    pub fn leader(&self) -> Result<Option<String>, Error> {
        let link = Arc::clone(&self.link);
        self.ask(link::REQUEST_TIMEOUT, async move { link.leader().await })
    }

    /// Claims a name for this server: create-only, so exactly one of any
    /// number of claims at once wins. `Taken` says who holds it (this
    /// server too, when it already did).
    pub fn claim(&self, name_key: &str, value: &[u8]) -> Result<Claim, Error> {
        let (link, key, value) = (Arc::clone(&self.link), name_key.to_owned(), value.to_vec());
        self.ask(link::REQUEST_TIMEOUT, async move { names::claim(&link, &key, value).await })
    }

    /// Gives a name this server holds back; `false` when it held none.
    pub fn release(&self, name_key: &str) -> Result<bool, Error> {
        let (link, key) = (Arc::clone(&self.link), name_key.to_owned());
        self.ask(link::REQUEST_TIMEOUT, async move { names::release(&link, &key).await })
    }

    /// Frees a name if it is still held at `revision` (from
    /// [`Bridge::holder`]): `false` when it changed hands meanwhile.
    pub fn release_at(&self, name_key: &str, revision: u64) -> Result<bool, Error> {
        let (link, key) = (Arc::clone(&self.link), name_key.to_owned());
        self.ask(link::REQUEST_TIMEOUT, async move { names::release_at(&link, &key, revision).await })
    }

    /// Who holds a name now, if anyone.
    pub fn holder(&self, name_key: &str) -> Result<Option<Holder>, Error> {
        let (link, key) = (Arc::clone(&self.link), name_key.to_owned());
        self.ask(link::REQUEST_TIMEOUT, async move { names::holder(&link, &key).await })
    }

    /// Moves a name held at `revision` (from [`Claim::Taken`]) to this
    /// server, with `value`: the revision that says so, or `None` when it
    /// changed hands meanwhile.
    pub fn take_over(&self, name_key: &str, revision: u64, value: &[u8]) -> Result<Option<u64>, Error> {
        let (link, key, value) = (Arc::clone(&self.link), name_key.to_owned(), value.to_vec());
        self.ask(link::REQUEST_TIMEOUT, async move { names::take_over(&link, &key, revision, value).await })
    }

    /// Every name held on every server, with its holder, in no order.
    pub fn names(&self) -> Result<Vec<(String, Holder)>, Error> {
        let link = Arc::clone(&self.link);
        self.ask(link::REQUEST_TIMEOUT, async move { names::all(&link).await })
    }

    /// Sends every change of a name's hands (claims, takeovers, releases,
    /// on every server) to `sink`, from now on, until the returned
    /// [`Subscription`] is dropped.
    pub fn watch_names(&self, sink: mpsc::Sender<Change>) -> Subscription {
        let task = self.runtime.spawn(names::watch_changes(Arc::clone(&self.link), sink));
        Subscription { task: task.abort_handle() }
    }

    /// Frees the names of dead servers (see the module's documentation) and
    /// sends each one this bridge freed to `sink`, until the returned
    /// [`Subscription`] is dropped.
    pub fn watch_dead(&self, sink: mpsc::Sender<Freed>) -> Subscription {
        let task = self.runtime.spawn(names::watch_dead(Arc::clone(&self.link), sink));
        Subscription { task: task.abort_handle() }
    }

    /// When this server's heartbeat was last written: once it is older than
    /// [`Options::dead_after`], the other servers may take this one for
    /// dead and free its members' names.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        *self.link.last_beat.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long after its last heartbeat a server is taken for dead.
    pub fn dead_after(&self) -> Duration {
        self.link.dead_after
    }

    /// Whether this server's last heartbeat is older than
    /// [`Bridge::dead_after`]: the others may take it for dead.
    pub fn is_cut_off(&self) -> bool {
        self.last_heartbeat().is_none_or(|beat| beat.elapsed() >= self.link.dead_after)
    }

    /// The connection as last seen.
    pub fn status(&self) -> Status {
        self.status.get()
    }

    /// Waits up to `timeout` for the status to satisfy `want`; the status
    /// then, or `None` when it did not come.
    pub fn wait_status(&self, timeout: Duration, want: impl Fn(&Status) -> bool) -> Option<Status> {
        self.status.wait(timeout, want)
    }

    /// Runs `task` on the runtime and waits for its answer.
    fn ask<T: Send + 'static>(
        &self,
        timeout: Duration,
        task: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.runtime.spawn(async move {
            let answer = tokio::time::timeout(timeout, task).await;
            let _ = tx.send(answer.unwrap_or_else(|_| Err(Error::Timeout("an answer from NATS".into()))));
        });
        rx.blocking_recv().unwrap_or(Err(Error::Closed))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to come for an event submitted.
#[derive(Debug)]
pub struct Receipt {
    answered: mpsc::Receiver<Result<u64, Error>>,
    withdrawn: Arc<AtomicBool>,
}

impl Receipt {
    /// Nobody may store the event any more: its sender was sent away and
    /// may be sending it again through another server. The publisher no
    /// longer sends it, nor sends it again; a copy already on its way may
    /// still be stored.
    pub fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for the event's position; a `Timeout` may be
    /// waited again, the publishing goes on.
    pub fn wait(&self, timeout: Duration) -> Result<u64, Error> {
        match self.answered.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout("the stream to store the event".into())),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }
}

/// A task delivering to a sink; dropping it stops the task.
#[derive(Debug)]
pub struct Subscription {
    task: tokio::task::AbortHandle,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The events of a [`Bridge::read`], in chunks.
#[derive(Debug)]
pub struct Replay {
    chunks: tokio::sync::mpsc::Receiver<Result<Vec<Event>, Error>>,
    done: bool,
}

impl Replay {
    /// The next chunk, in order; `None` once all were read.
    pub fn next_chunk(&mut self) -> Option<Result<Vec<Event>, Error>> {
        if self.done {
            return None;
        }
        let chunk = self.chunks.blocking_recv();
        self.done = !matches!(chunk, Some(Ok(_)));
        chunk
    }
}

impl Iterator for Replay {
    type Item = Result<Vec<Event>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk()
    }
}

/// The status, shared with the client's event callback.
#[derive(Debug, Default)]
struct StatusCell {
    status: Mutex<Status>,
    changed: Condvar,
}

impl StatusCell {
    fn get(&self) -> Status {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    fn wait(&self, timeout: Duration, want: impl Fn(&Status) -> bool) -> Option<Status> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        while !want(&status) {
            let left = deadline.checked_duration_since(Instant::now())?;
            status = self.changed.wait_timeout(status, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        Some(*status)
    }
}
