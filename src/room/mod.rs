//! The room: its members, their unique names, and the one ordered stream of
//! events (`MSG`, `JOINED`, `LEFT`) that every member reads.
//!
//! The stream is a shared log of finished wire lines. Saying something
//! appends one line, whatever the number of members; each member reads the
//! log from its own cursor and skips what it said itself. So everyone sees
//! one order, a line is never copied per member, and a member that falls
//! more than `max_lag` bytes behind while its socket is full is expelled
//! (`LEFT <name> slow`) instead of holding anyone up. One that is behind only
//! because its thread has not run yet is left alone, up to a hard limit that
//! keeps the log's memory bounded whatever happens.
//!
//! Nobody waits on the room itself: whoever delivers events subscribes with
//! [`Room::listen`] and is told when the log grows, and each member is told
//! through its own [`Notify`] when it is expelled.
//!
//! A room spanning several servers (`chatd --cluster`, [`Room::clustered`])
//! is this same room whose positions a NATS JetStream stream gives: see
//! `stream`. Members, the log, reading and expelling are as here; joining,
//! saying and leaving go through the stream.
//!
//! Every event has a position (its sequence number, counting on from the
//! history's last one across restarts) and a time, and goes into the room's
//! [`History`] as it is appended, under the lock, so the history has the one
//! order too. Nobody is sent an event before the history says it is safe
//! ([`History::durable`]): whoever fetches first makes the events safe, so
//! one write covers every event appended meanwhile.

mod stream;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use self::stream::Clustered;
pub use self::stream::{Report, Unavailable, PATIENCE};
use crate::cluster::Bridge;
use crate::history::{self, History, NotStored};
use crate::name::Name;
use crate::protocol::{self, LeaveReason, Replay, ServerLine};

/// One finished wire line, shared by every reader.
pub type Line = Arc<[u8]>;

/// Something to tell: a delivering thread that the log grew, a member's
/// connection that it was expelled. Called with the room locked, so it must
/// only set a flag or write to a descriptor, never block.
pub trait Notify: Send + Sync + fmt::Debug {
    fn notify(&self);
}

#[derive(Debug)]
pub struct Room {
    state: Mutex<State>,
    /// The sequence number the next entry will get, readable without the
    /// lock: delivering threads compare it with their members' cursors.
    head: AtomicU64,
    closed: AtomicBool,
    max_lag: u64,
    history: Arc<dyn History>,
    /// Set when the room spans several servers: the stream gives the order.
    cluster: OnceLock<Arc<Clustered>>,
}

/// How far behind a member may fall even while it keeps reading, as a
/// multiple of `max_lag` (with a floor of `HARD_LAG_FLOOR`): past it, it is
/// expelled all the same, so the log cannot grow without bound.
const HARD_LAG_FACTOR: u64 = 8;
const HARD_LAG_FLOOR: u64 = 64 << 20;

#[derive(Debug, Default)]
struct State {
    log: VecDeque<Entry>,
    /// The sequence number of `log[0]`.
    base: u64,
    /// Bytes appended before `log[0]`.
    base_bytes: u64,
    /// Bytes appended in all.
    head_bytes: u64,
    /// Everyone still reading the log, in join order: the members, and those
    /// that left but have not yet been sent what came before their leaving.
    readers: Vec<Arc<Member>>,
    /// The members, by name key.
    names: HashMap<String, Arc<Member>>,
    /// Told whenever the log grows.
    listeners: Vec<Arc<dyn Notify>>,
    next_id: u64,
    /// `head_bytes` before which no sweep is due: sweeps are O(members), so
    /// at least a quarter of `max_lag` is appended between two.
    next_sweep: u64,
    /// The time of the last event: times never go backwards, whatever the
    /// clock does.
    last_time: u64,
}

#[derive(Debug)]
struct Entry {
    from: u64,
    line: Line,
    time_ms: u64,
    /// `@seq=…;time=… `, made the first time a reader with tags wants it.
    tags: OnceLock<Line>,
    /// `head_bytes` once this entry was appended.
    end_bytes: u64,
}

#[derive(Debug)]
struct Member {
    id: u64,
    name: Name,
    /// The sequence number of the next entry to read.
    cursor: AtomicU64,
    /// Where reading stops: `u64::MAX` while a member, the sequence number of
    /// its `LEFT` once it left.
    end: AtomicU64,
    status: AtomicU8,
    /// Whether its connection last found its socket full.
    blocked: AtomicBool,
    /// Told when it is expelled or replaced.
    connection: Arc<dyn Notify>,
    /// The secret that lets a later connection take this membership over.
    token: String,
    /// In a room across servers: the names bucket's revision at which it
    /// got its name; later changes of hands concern it.
    claimed_at: u64,
}

const PRESENT: u8 = 0;
const LEFT: u8 = 1;
const EXPELLED: u8 = 2;
const REPLACED: u8 = 3;
/// Sent away: this server lost the cluster (see `stream`).
const UNAVAILABLE: u8 = 4;

/// Why a join failed.
#[derive(Debug)]
pub enum JoinError {
    /// Someone has that name (as they spelled it).
    Taken(String),
    /// The server is shutting down.
    Closed,
    /// The history could not take the `JOINED` event.
    NotStored(NotStored),
    /// The history could not be read for the replay, or no token made.
    Failed(std::io::Error),
    /// The cluster's stream or names did not answer: the join was not
    /// taken (a `JOINED` that may have been stored is followed by a `LEFT`).
    Unavailable(Unavailable),
}

/// What a successful join hands the new member's connection.
#[derive(Debug)]
pub struct Joined {
    pub membership: Membership,
    pub epoch: String,
    /// The last position of the past: the replay ends with it, live events
    /// come after it.
    pub past: u64,
    /// For a later `TOKEN`.
    pub token: String,
    /// `Some(Some(n))`: `n` asked-for events are no longer kept;
    /// `Some(None)`: the asked position is not this history's.
    pub missed: Option<Option<u64>>,
    /// The events asked for, from the history, to send before live ones.
    pub replay: Option<Box<dyn history::Replay>>,
    /// Whether this join took over a membership (no `JOINED` was sent).
    pub took_over: bool,
}

/// Why a member could not say something.
#[derive(Debug)]
pub enum SayError {
    /// The server is shutting down.
    Closed,
    /// The member is gone: replaced by a newer connection, or expelled.
    Gone,
    /// The history could not take it: nothing was said.
    NotStored(NotStored),
    /// The cluster's stream did not confirm it in time: it may or may not
    /// be stored, and the connection must end for its client to find out.
    Unavailable(Unavailable),
}

/// The room no longer takes events: the server is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The member fell too far behind and was expelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expelled;

impl Room {
    /// A room that expels a member once more than `max_lag` bytes of events
    /// wait for it, and keeps its events in `history`, going on from its last
    /// position.
    pub fn new(max_lag: usize, history: Arc<dyn History>) -> Arc<Room> {
        let next = history.last_seq() + 1;
        let state = State { base: next, last_time: history.last_time_ms(), ..State::default() };
        Arc::new(Room {
            state: Mutex::new(state),
            head: AtomicU64::new(next),
            closed: AtomicBool::new(false),
            max_lag: max_lag as u64,
            history,
            cluster: OnceLock::new(),
        })
    }

    /// A room kept in the stream `bridge` leads to, shared with every server
    /// on it; `report` is told what goes wrong in the cluster.
    pub fn clustered(max_lag: usize, bridge: Arc<Bridge>, report: Report) -> anyhow::Result<Arc<Room>> {
        let history = Arc::new(history::Stream::open(Arc::clone(&bridge))?);
        let room = Room::new(max_lag, history);
        let clustered = Clustered::start(&room, bridge, report)?;
        let _ = room.cluster.set(clustered);
        Ok(room)
    }

    /// The bridge to the cluster, when the room spans several servers.
    pub fn bridge(&self) -> Option<&Arc<Bridge>> {
        self.cluster.get().map(|c| c.bridge())
    }

    /// Waits, until `deadline`, for the departures of this server's members
    /// to be recorded in the cluster: at shutdown, once every connection
    /// ended. `false` when some were not.
    pub fn finish(&self, deadline: Instant) -> bool {
        self.cluster.get().is_none_or(|c| c.finish(deadline))
    }

    /// The room's history.
    pub fn history(&self) -> &Arc<dyn History> {
        &self.history
    }

    /// Records that these members of an earlier run are gone (`LEFT <name>
    /// lost`): a restart ended their connections.
    pub fn record_departures(&self, names: &[String]) -> Result<(), NotStored> {
        let mut st = self.lock();
        for name in names {
            let line = ServerLine::Left { name: name.clone(), reason: LeaveReason::Lost };
            self.append(&mut st, 0, line_of(&line), true)?;
        }
        Ok(())
    }

    /// Has `listener` told each time the log grows. It is told while the
    /// room is locked, so one that has not yet looked at [`Room::head`] again
    /// cannot miss news.
    pub fn listen(&self, listener: Arc<dyn Notify>) {
        self.lock().listeners.push(listener);
    }

    /// The sequence number the next event will get.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Enters the room under `name`. Everyone else is told `JOINED`; the new
    /// member reads events from this point on, after the past events that
    /// `replay` asks for. `connection` is told if the member is expelled for
    /// falling behind, or replaced.
    ///
    /// With the `token` of the member now holding the name, this takes its
    /// place instead: nobody is told anything, the old member reads nothing
    /// after this point, says nothing more, and its connection is told.
    pub fn join(
        self: &Arc<Self>,
        name: Name,
        replay: Replay<'_>,
        token: Option<&str>,
        connection: Arc<dyn Notify>,
    ) -> Result<Joined, JoinError> {
        let fresh_token = history::random_word(24).map_err(JoinError::Failed)?;
        if let Some(clustered) = self.cluster.get() {
            return self.join_clustered(clustered, name, replay, token, connection, fresh_token);
        }
        let mut st = self.lock();
        if self.is_closed() {
            return Err(JoinError::Closed);
        }
        let holder = st.names.get(name.key()).cloned();
        let replaced = match (holder, token) {
            (Some(holder), Some(token)) if same_secret(&holder.token, token) => Some(holder),
            (Some(holder), _) => return Err(JoinError::Taken(holder.name.as_str().to_owned())),
            (None, _) => None,
        };
        let past = st.head() - 1;
        let (missed, range) = self.replay_range(replay, past);
        let replay = match range {
            Some((from, to)) => {
                self.history.make_durable(to).map_err(JoinError::Failed)?;
                Some(self.history.read(from, to).map_err(JoinError::Failed)?)
            }
            None => None,
        };
        // A takeover keeps the name as the room knows it, however it was typed.
        let name = replaced.as_ref().map_or(name, |old| old.name.clone());
        let member = st.new_member(name, connection, fresh_token.clone(), 0);
        if replaced.is_none() {
            let line = ServerLine::Joined(member.name.to_string());
            self.append(&mut st, member.id, line_of(&line), false).map_err(JoinError::NotStored)?;
        }
        st.admit(&member, replaced.as_ref());
        let membership = Membership::new(Arc::clone(self), member);
        let epoch = self.history.epoch().to_owned();
        Ok(Joined { membership, epoch, past, token: fresh_token, missed, replay, took_over: replaced.is_some() })
    }

    /// Which past events a join gets (`from..=to`), and what it missed.
    fn replay_range(&self, replay: Replay<'_>, past: u64) -> (Option<Option<u64>>, Option<(u64, u64)>) {
        let kept = self.history.first_kept();
        let (missed, from) = match replay {
            Replay::Nothing => return (None, None),
            Replay::Last(n) => (None, (past + 1).saturating_sub(n).max(kept)),
            Replay::Since(at) if at.epoch != self.history.epoch() || at.seq > past => (Some(None), kept),
            Replay::Since(at) if at.seq + 1 < kept => (Some(Some(kept - at.seq - 1)), kept),
            Replay::Since(at) => (None, at.seq + 1),
        };
        (missed, (from <= past).then_some((from, past)))
    }

    /// The members' names, in the order they joined.
    pub fn names(&self) -> Vec<String> {
        self.lock().names()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.lock().names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes no more events or members, and tells every listener so the
    /// last events go out.
    pub fn close(&self) {
        let st = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        st.listeners.iter().for_each(|l| l.notify());
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A connection thread that panicked leaves the state consistent: every
        // change below is complete before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event to the history and the log, expels whoever fell too
    /// far behind, and tells the listeners. An event the history refuses is
    /// not appended at all.
    fn append(&self, st: &mut State, from: u64, line: Line, urgent: bool) -> Result<(), NotStored> {
        self.push(st, from, line, urgent)?;
        self.grew(st);
        Ok(())
    }

    /// After the log grew: expels whoever fell too far behind, and tells the
    /// listeners.
    fn grew(&self, st: &mut State) {
        if st.head_bytes - st.base_bytes > self.max_lag + self.max_lag / 4 && st.head_bytes >= st.next_sweep {
            for member in st.sweep(self.max_lag) {
                if let Some(clustered) = self.cluster.get() {
                    self.expelled_in_cluster(clustered, &member);
                    continue;
                }
                let line = ServerLine::Left { name: member.name.to_string(), reason: LeaveReason::Slow };
                // Urgent appends take room kept back for them; one that still
                // fails (an I/O error, which the history logs) loses only the
                // notice, and the positions stay without gaps.
                let _ = self.push(st, member.id, line_of(&line), true);
            }
            st.next_sweep = st.head_bytes + self.max_lag / 4;
        }
        self.head.store(st.head(), Ordering::SeqCst);
        st.listeners.iter().for_each(|l| l.notify());
    }
}

fn line_of(line: &ServerLine) -> Line {
    format!("{line}\n").into_bytes().into()
}

impl Room {
    /// Puts one event in the history, then in the log.
    fn push(&self, st: &mut State, from: u64, line: Line, urgent: bool) -> Result<(), NotStored> {
        let time_ms = protocol::now_ms().max(st.last_time);
        self.history.append(st.head(), time_ms, &line, urgent)?;
        st.last_time = time_ms;
        st.push(from, line, time_ms);
        Ok(())
    }
}

/// Compares two secrets in time that does not depend on where they differ,
/// so a token cannot be guessed a letter at a time.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && differ == 0
}

impl State {
    fn head(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// A member reading from the head on, not yet in the room.
    fn new_member(&mut self, name: Name, connection: Arc<dyn Notify>, token: String, claimed_at: u64) -> Arc<Member> {
        self.next_id += 1;
        Arc::new(Member {
            id: self.next_id,
            cursor: AtomicU64::new(self.head()),
            end: AtomicU64::new(u64::MAX),
            status: AtomicU8::new(PRESENT),
            blocked: AtomicBool::new(false),
            connection,
            name,
            token,
            claimed_at,
        })
    }

    /// Puts a member in the room, in the place of `replaced`, which reads
    /// nothing after this point and whose connection is told.
    fn admit(&mut self, member: &Arc<Member>, replaced: Option<&Arc<Member>>) {
        if let Some(old) = replaced {
            old.end.store(self.head(), Ordering::SeqCst);
            old.status.store(REPLACED, Ordering::SeqCst);
            old.connection.notify();
        }
        self.names.insert(member.name.key().to_owned(), Arc::clone(member));
        self.readers.push(Arc::clone(member));
    }

    fn names(&self) -> Vec<String> {
        let present = self.readers.iter().filter(|m| m.status.load(Ordering::SeqCst) == PRESENT);
        present.map(|m| m.name.to_string()).collect()
    }

    fn push(&mut self, from: u64, line: Line, time_ms: u64) {
        self.head_bytes += line.len() as u64;
        let end_bytes = self.head_bytes;
        self.log.push_back(Entry { from, line, time_ms, tags: OnceLock::new(), end_bytes });
    }

    /// Expels the readers more than `max_lag` bytes behind, then forgets the
    /// entries that every remaining reader has read.
    /// Returns the members expelled, for their `LEFT … slow`.
    fn sweep(&mut self, max_lag: u64) -> Vec<Arc<Member>> {
        let mut expelled = Vec::new();
        let mut expelled_names = Vec::new();
        self.readers.retain(|m| {
            let behind = self.head_bytes - {
                let seq = m.cursor.load(Ordering::SeqCst);
                match seq - self.base {
                    0 => self.base_bytes,
                    n => self.log[n as usize - 1].end_bytes,
                }
            };
            let hard_limit = (max_lag * HARD_LAG_FACTOR).max(HARD_LAG_FLOOR);
            let keep = behind <= max_lag || (behind <= hard_limit && !m.blocked.load(Ordering::SeqCst));
            if !keep {
                expelled.push(Arc::clone(m));
            }
            keep
        });
        for member in expelled {
            let was_present = member.status.swap(EXPELLED, Ordering::SeqCst) == PRESENT;
            if was_present {
                self.names.remove(member.name.key());
                expelled_names.push(Arc::clone(&member));
            }
            member.connection.notify();
        }
        self.trim();
        expelled_names
    }

    /// Drops the log entries below every reader's cursor.
    fn trim(&mut self) {
        let oldest = self.readers.iter().map(|m| m.cursor.load(Ordering::SeqCst)).min();
        let keep_from = oldest.unwrap_or_else(|| self.head());
        while self.base < keep_from {
            let entry = self.log.pop_front().expect("cursor beyond the log");
            self.base += 1;
            self.base_bytes = entry.end_bytes;
        }
    }
}

/// A connection's place in the room, from `join` until it is dropped.
/// Dropping it without `leave` counts as leaving with `lost`.
pub struct Membership {
    room: Arc<Room>,
    member: Arc<Member>,
    /// In a room across servers: what it said that the stream has not yet
    /// confirmed.
    unconfirmed: Mutex<Vec<stream::Said>>,
}

/// How many messages of one member may await the stream's confirmation
/// before saying more waits for them.
const MAX_UNCONFIRMED: usize = 4096;

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership").field("name", &self.member.name).finish_non_exhaustive()
    }
}

/// What [`Membership::fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Entries read past, the member's own included.
    pub advanced: u64,
    /// Whether entries remain before the limit.
    pub more: bool,
}

impl Membership {
    fn new(room: Arc<Room>, member: Arc<Member>) -> Membership {
        Membership { room, member, unconfirmed: Mutex::new(Vec::new()) }
    }

    /// Waits until everything this member said is in the room's log, in a
    /// room across servers; at once otherwise. Before any reply that says
    /// where it falls (a `PONG`, `NAMES`).
    pub fn confirm(&self) -> Result<(), Unavailable> {
        let Some(clustered) = self.room.cluster.get() else { return Ok(()) };
        let said = std::mem::take(&mut *self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner));
        clustered.settle(said, &|| self.is_gone())
    }

    /// In a room across servers, before a member sent away or replaced is
    /// told so: what it said that the stream has not confirmed is never
    /// stored from now on, as its client may send it again, through another
    /// server, once it has been told.
    pub fn withdraw_unconfirmed(&self) {
        let Some(clustered) = self.room.cluster.get() else { return };
        let said = std::mem::take(&mut *self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner));
        clustered.withdraw(said);
    }

    /// Whether it is no longer in the room: left, expelled, replaced or sent
    /// away.
    fn is_gone(&self) -> bool {
        self.member.status.load(Ordering::SeqCst) != PRESENT
    }

    pub fn name(&self) -> &Name {
        &self.member.name
    }

    /// The sequence number of the next event this member will read.
    pub fn cursor(&self) -> u64 {
        self.member.cursor.load(Ordering::SeqCst)
    }

    /// The sequence number the next event will get: a reply given now belongs
    /// after every event before it.
    pub fn head(&self) -> u64 {
        self.room.lock().head()
    }

    /// The members' names in join order, and the sequence number they hold
    /// at: the `NAMES` reply belongs after the events before it.
    pub fn names(&self) -> (u64, Vec<String>) {
        // Every server's members, from the cluster's names; this server's
        // alone while NATS cannot say.
        let everyone = self.room.cluster.get().and_then(|c| c.names());
        let st = self.room.lock();
        (st.head(), everyone.unwrap_or_else(|| st.names()))
    }

    /// Sends `text` to everyone else.
    pub fn say(&self, text: &str) -> Result<(), SayError> {
        let line = protocol::msg_line(self.member.name.as_str(), text);
        if let Some(clustered) = self.room.cluster.get() {
            if self.room.is_closed() {
                return Err(SayError::Closed);
            }
            if self.member.status.load(Ordering::SeqCst) != PRESENT {
                return Err(SayError::Gone);
            }
            let mut unconfirmed = self.unconfirmed.lock().unwrap_or_else(PoisonError::into_inner);
            unconfirmed.push(clustered.submit(self.member.id, &line));
            if unconfirmed.len() >= MAX_UNCONFIRMED {
                let said = std::mem::take(&mut *unconfirmed);
                drop(unconfirmed);
                clustered.settle(said, &|| self.is_gone()).map_err(SayError::Unavailable)?;
            }
            return Ok(());
        }
        let mut st = self.room.lock();
        if self.room.is_closed() {
            return Err(SayError::Closed);
        }
        if self.member.status.load(Ordering::SeqCst) != PRESENT {
            return Err(SayError::Gone);
        }
        self.room.append(&mut st, self.member.id, line, false).map_err(SayError::NotStored)
    }

    /// Leaves the room: the name is free again and everyone else is told
    /// `LEFT`. Returns the sequence number up to which this member is still
    /// sent events (those that came before its leaving).
    pub fn leave(&self, reason: LeaveReason) -> u64 {
        let mut st = self.room.lock();
        let end = st.head();
        if self.member.status.compare_exchange(PRESENT, LEFT, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return end;
        }
        self.member.end.store(end, Ordering::SeqCst);
        st.names.remove(self.member.name.key());
        if let Some(clustered) = self.room.cluster.get() {
            drop(st);
            // Even at shutdown: the room goes on on the other servers.
            clustered.depart(&self.member, reason, None, reason == LeaveReason::Exit);
            return end;
        }
        if self.room.is_closed() {
            return end;
        }
        let line = ServerLine::Left { name: self.member.name.to_string(), reason };
        // A leave cannot be refused: see `Room::append` for an urgent
        // append that fails all the same.
        let _ = self.room.append(&mut st, self.member.id, line_of(&line), true);
        end
    }

    /// The sequence number a last reply belongs at: the room's head, or
    /// where reading stops for a member that left or was replaced.
    pub fn last_due(&self) -> u64 {
        let st = self.room.lock();
        st.head().min(self.member.end.load(Ordering::SeqCst))
    }

    /// Tells the room whether this member's socket was found full.
    pub fn set_blocked(&self, blocked: bool) {
        self.member.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Whether events before `head` (from [`Room::head`]) are still to be
    /// read: a cheap look, without the lock.
    pub fn is_behind(&self, head: u64) -> bool {
        self.cursor() < head.min(self.member.end.load(Ordering::SeqCst))
    }

    /// Whether the room expelled this member for falling behind.
    pub fn is_expelled(&self) -> bool {
        self.member.status.load(Ordering::SeqCst) == EXPELLED
    }

    /// Whether the room sent this member away because this server lost the
    /// cluster it is part of.
    pub fn is_unavailable(&self) -> bool {
        self.member.status.load(Ordering::SeqCst) == UNAVAILABLE
    }

    /// Whether a newer connection took this membership over with its token.
    pub fn is_replaced(&self) -> bool {
        self.member.status.load(Ordering::SeqCst) == REPLACED
    }

    /// Moves events from the cursor to `out`, up to `max` lines, stopping
    /// before sequence number `limit` and skipping this member's own events;
    /// with `tags`, each event is its tags line then its line. Events not
    /// yet safe in the history are made safe first: nobody is sent one
    /// before.
    pub fn fetch(&self, limit: u64, out: &mut VecDeque<Line>, max: usize, tags: bool) -> Result<Fetched, Expelled> {
        let history = &self.room.history;
        let wanted = self.room.head().min(limit);
        if history.durable() < wanted {
            // Outside the room's lock, so appends go on meanwhile; one that
            // fails is reported by the history and tried again.
            let _ = history.make_durable(wanted - 1);
        }
        let st = self.room.lock();
        if self.is_expelled() {
            return Err(Expelled);
        }
        let start = self.cursor();
        let end = st.head().min(limit).min(self.member.end.load(Ordering::SeqCst)).min(history.durable());
        let per_event = if tags { 2 } else { 1 };
        let mut seq = start;
        let mut taken = 0;
        while seq < end && taken + per_event <= max {
            let entry = &st.log[(seq - st.base) as usize];
            // An empty line stands for a position the stream no longer had.
            if entry.from != self.member.id && !entry.line.is_empty() {
                if tags {
                    let line =
                        entry.tags.get_or_init(|| protocol::event_prefix(seq, entry.time_ms).into_bytes().into());
                    out.push_back(Arc::clone(line));
                }
                out.push_back(Arc::clone(&entry.line));
                taken += per_event;
            }
            seq += 1;
        }
        self.member.cursor.store(seq, Ordering::SeqCst);
        Ok(Fetched { advanced: seq - start, more: seq < end })
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave(LeaveReason::Lost);
        let mut st = self.room.lock();
        let id = self.member.id;
        st.readers.retain(|m| m.id != id);
        // Only the oldest reader holds entries back.
        if self.cursor() == st.base && !st.log.is_empty() {
            st.trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(max_lag: usize) -> Arc<Room> {
        Room::new(max_lag, Arc::new(crate::history::Forgetful::new().unwrap()))
    }

    /// Counts what it is told.
    #[derive(Debug, Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Notify for Counter {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn try_join(room: &Arc<Room>, name: &str) -> Result<Joined, JoinError> {
        room.join(Name::parse(name).unwrap(), Replay::Nothing, None, Arc::new(Counter::default()))
    }

    fn join(room: &Arc<Room>, name: &str) -> Membership {
        try_join(room, name).unwrap().membership
    }

    fn read_all(m: &Membership) -> Vec<String> {
        let mut out = VecDeque::new();
        while m.fetch(u64::MAX, &mut out, 2, false).unwrap().more {}
        out.iter().map(|l| String::from_utf8(l.to_vec()).unwrap().trim_end().to_owned()).collect()
    }

    #[test]
    fn members_see_one_order_and_not_their_own_lines() {
        let room = room(1 << 20);
        let ana = join(&room, "Ana");
        let luis = join(&room, "Luis");
        ana.say("hola").unwrap();
        luis.say("buenas").unwrap();
        assert_eq!(read_all(&ana), ["JOINED Luis", "MSG Luis buenas"]);
        assert_eq!(read_all(&luis), ["MSG Ana hola"]);
        assert_eq!(room.names(), ["Ana", "Luis"]);
    }

    #[test]
    fn names_are_unique_until_their_owner_leaves() {
        let room = room(1 << 20);
        let carlos = join(&room, "Carlos");
        let taken = try_join(&room, "CARLOS");
        assert!(matches!(taken, Err(JoinError::Taken(holder)) if holder == "Carlos"));
        let watcher = join(&room, "Ana");
        carlos.leave(LeaveReason::Exit);
        assert_eq!(read_all(&watcher), ["LEFT Carlos exit"]);
        drop(carlos);
        let _carlos = join(&room, "carlos");
        assert_eq!(room.names(), ["Ana", "carlos"]);
    }

    #[test]
    fn a_leaving_member_still_reads_what_came_before_its_leave() {
        let room = room(1 << 20);
        let ana = join(&room, "Ana");
        let luis = join(&room, "Luis");
        luis.say("one").unwrap();
        let end = ana.leave(LeaveReason::Exit);
        luis.say("after").unwrap();
        assert_eq!(read_all(&ana), ["JOINED Luis", "MSG Luis one"]);
        assert_eq!(ana.cursor(), end);
        assert_eq!(read_all(&luis), ["LEFT Ana exit"]);
    }

    #[test]
    fn a_member_that_falls_behind_is_expelled_and_the_log_is_trimmed() {
        let room = room(1000);
        let reader = join(&room, "reader");
        let sleeper = join(&room, "sleeper");
        sleeper.set_blocked(true);
        let talker = join(&room, "talker");
        read_all(&reader);
        for i in 0..200 {
            talker.say(&format!("message {i}")).unwrap();
            read_all(&reader);
            read_all(&talker);
        }
        assert!(sleeper.is_expelled());
        assert_eq!(sleeper.fetch(u64::MAX, &mut VecDeque::new(), 10, false), Err(Expelled));
        assert_eq!(room.names(), ["reader", "talker"]);
        let st = room.lock();
        assert!(st.head_bytes - st.base_bytes <= 1250, "log holds {} bytes", st.head_bytes - st.base_bytes);
    }

    #[test]
    fn a_member_behind_but_still_reading_is_kept_until_the_hard_limit() {
        let room = room(1000);
        let waiting = join(&room, "waiting");
        let talker = join(&room, "talker");
        for i in 0..100 {
            talker.say(&format!("message {i}")).unwrap();
            read_all(&talker);
        }
        assert!(!waiting.is_expelled(), "a member that is only waiting for its turn was expelled");
        assert_eq!(read_all(&waiting).len(), 101);
        let line = "x".repeat(64 << 10);
        for _ in 0..(HARD_LAG_FLOOR >> 16) + 1 {
            talker.say(&line).unwrap();
            read_all(&talker);
        }
        assert!(waiting.is_expelled(), "the log grew past the hard limit");
    }

    #[test]
    fn a_token_takes_a_membership_over_without_a_word_to_the_room() {
        let room = room(1 << 20);
        let watcher = join(&room, "watcher");
        let old_told = Arc::new(Counter::default());
        let told = Arc::clone(&old_told) as Arc<dyn Notify>;
        let old = room.join(Name::parse("Ana").unwrap(), Replay::Nothing, None, told).unwrap();
        let wrong =
            room.join(Name::parse("ana").unwrap(), Replay::Nothing, Some("not-it"), Arc::new(Counter::default()));
        assert!(matches!(wrong, Err(JoinError::Taken(holder)) if holder == "Ana"));
        let new =
            room.join(Name::parse("ANA").unwrap(), Replay::Nothing, Some(&old.token), Arc::new(Counter::default()));
        let new = new.unwrap();
        assert!(new.took_over && new.token != old.token);
        assert!(old.membership.is_replaced() && old_told.count() == 1, "the old connection is told once");
        assert!(matches!(old.membership.say("late"), Err(SayError::Gone)));
        new.membership.say("still here").unwrap();
        drop(old);
        assert_eq!(read_all(&watcher), ["JOINED Ana", "MSG Ana still here"], "no LEFT, no JOINED for a takeover");
        assert_eq!(room.names(), ["watcher", "Ana"], "the name as the room knew it");
    }

    #[test]
    fn positions_go_on_from_the_history_and_times_never_go_back() {
        let history = Arc::new(crate::history::Forgetful::new().unwrap());
        history.append(41, u64::MAX / 2, b"JOINED x\n", false).unwrap();
        let room = Room::new(1 << 20, history);
        let ana = try_join(&room, "Ana").unwrap();
        assert_eq!((ana.past, ana.membership.cursor()), (41, 42));
        let st = room.lock();
        assert_eq!(st.log[0].time_ms, u64::MAX / 2, "a clock behind the last event does not go back");
    }

    #[test]
    fn dropping_a_membership_counts_as_lost() {
        let room = room(1 << 20);
        let ana = join(&room, "Ana");
        drop(join(&room, "Luis"));
        assert_eq!(read_all(&ana), ["JOINED Luis", "LEFT Luis lost"]);
    }

    #[test]
    fn a_closed_room_takes_nothing_more() {
        let room = room(1 << 20);
        let ana = join(&room, "Ana");
        room.close();
        assert!(matches!(ana.say("late"), Err(SayError::Closed)));
        assert!(matches!(try_join(&room, "Luis"), Err(JoinError::Closed)));
        assert!(read_all(&ana).is_empty());
        assert!(!ana.is_behind(room.head()));
    }

    #[test]
    fn listeners_hear_of_every_event_and_the_expelled_of_their_expulsion() {
        let room = room(1000);
        let listener = Arc::new(Counter::default());
        room.listen(Arc::clone(&listener) as Arc<dyn Notify>);
        let sleeper_told = Arc::new(Counter::default());
        let told = Arc::clone(&sleeper_told) as Arc<dyn Notify>;
        let sleeper = room.join(Name::parse("sleeper").unwrap(), Replay::Nothing, None, told);
        let sleeper = sleeper.unwrap().membership;
        sleeper.set_blocked(true);
        let talker = join(&room, "talker");
        assert_eq!(listener.count(), 2);
        assert!(sleeper.is_behind(room.head()));
        read_all(&talker);
        assert!(!talker.is_behind(room.head()));
        for i in 0..100 {
            talker.say(&format!("message {i}")).unwrap();
        }
        assert_eq!(listener.count(), 102);
        assert!(sleeper.is_expelled());
        assert_eq!(sleeper_told.count(), 1, "the expelled member's connection was not told once");
    }
}
