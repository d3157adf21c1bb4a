//! The room when it spans several servers (`chatd --cluster`): the order
//! is a NATS JetStream stream's, not this server's.
//!
//! Saying something publishes it to the stream without waiting; a reply
//! that says where it falls (`PONG`, `NAMES`) waits until the member's
//! messages are stored and back here ([`Membership::confirm`]). Every event,
//! this server's own too, enters the room's log from the stream, in the
//! stream's order, through one thread ([`Room::apply`]). So no server
//! delivers an event ahead of the stream, and every member anywhere reads
//! the same events at the same positions. An event carries the id it was
//! published with (`<server id>-<n>`), which tells this server which of its
//! members said it, so that member is not sent its own words.
//!
//! Names are claimed in the cluster's names bucket, create-only, with the
//! member's token, its name as spelled and its place in the join order;
//! a `TOKEN` that matches takes the name over from any server, and every
//! server watches the bucket for its members' names changing hands. A
//! member leaving is recorded by one thread (the leaver): the name marked
//! leaving, the `LEFT` published, the name freed. Leaving never fails, it
//! is only late while NATS is away; a member that asked to leave is sent
//! `BYE exit` once its `LEFT` is stored. The names of a dead server are
//! freed by whichever server sees it first, which records their `LEFT
//! <name> lost`; a server that cannot reach NATS sends its own members away
//! before the others may take them for lost.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    line_of, JoinError, Joined, Member, Membership, Notify, Room, State, LEFT, PRESENT, REPLACED, UNAVAILABLE,
};
use crate::cluster::{self, Bridge, Delivery, Freed, Holder};
use crate::history::Event;
use crate::name::Name;
use crate::protocol::{LeaveReason, Replay, ServerLine};

/// How long a message or a join waits for the stream: a leader election
/// on nats-server 2.9 takes up to about 30 s.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// After this long without an answer, the log says what is awaited.
const SAY_AFTER: Duration = Duration::from_secs(3);

/// How often a wait for the stream looks whether to go on waiting.
const GLANCE: Duration = Duration::from_millis(250);

/// How often the log says it again, however many messages wait.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// An event submitted to the stream, not yet confirmed.
#[derive(Debug)]
pub struct Said {
    /// The number in its id.
    n: u64,
    receipt: cluster::Receipt,
}

/// How long a claim waits for a name whose member is leaving to be free.
const LEAVING_PATIENCE: Duration = Duration::from_secs(3);

/// How long one try at publishing a departure waits.
const LEAVE_PATIENCE: Duration = Duration::from_secs(10);

/// Where the cluster's parts report what goes wrong.
pub type Report = Arc<dyn Fn(&str) + Send + Sync>;

/// The cluster's side of a room.
pub struct Clustered {
    bridge: Arc<Bridge>,
    report: Report,
    next_id: AtomicU64,
    /// Events published from here, not yet back: the number in their id,
    /// and the member that said them.
    origins: Mutex<HashMap<u64, u64>>,
    /// The last position applied to the room's log.
    applied: Mutex<u64>,
    grew: Condvar,
    departures: Mutex<Option<mpsc::Sender<Queued>>>,
    /// When the log last said what messages wait for.
    last_report: Mutex<Option<Instant>>,
    /// Told once the leaver has said everything it was given.
    leaver_done: Mutex<Option<mpsc::Receiver<()>>>,
    /// The stream's events coming in, the dead servers' names going out, and
    /// the names changing hands.
    subscriptions: Mutex<Vec<cluster::Subscription>>,
}

impl fmt::Debug for Clustered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clustered").field("server", &self.bridge.server_id()).finish_non_exhaustive()
    }
}

/// A `LEFT` to publish.
#[derive(Debug)]
enum Departure {
    /// A member of this server: its `LEFT`, then its name freed, unless
    /// the name changed hands meanwhile (taken over with the member's
    /// token, here or on another server, or freed as this server's while
    /// it was taken for dead): the claim must still hold the member's
    /// `token`. `joined` is a `JOINED` whose publishing failed: it may be
    /// stored, so it goes again with its id first.
    Member { key: String, name: String, token: String, reason: LeaveReason, joined: Option<(Vec<u8>, String)> },
    /// A name this server just freed; its server died.
    Lost { name: String, id: String },
}

/// A name won in the cluster.
#[derive(Debug)]
pub(super) struct Won {
    /// The names bucket's revision that says so.
    revision: u64,
    /// When taken over with a token: the name as the room spells it, and
    /// the server of the member it was taken from.
    took_over: Option<(String, String)>,
}

/// A departure to record, and who waits until it is.
type Queued = (Departure, Option<mpsc::SyncSender<()>>);

/// Why the stream did not take an event.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a name's claim holds: the token, the name as spelled, and where in
/// the join order it came (the claim's own revision when it is a first
/// claim; kept through takeovers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClaimValue {
    pub token: String,
    pub name: String,
    pub order: Option<u64>,
}

impl ClaimValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = format!("{}\n{}", self.token, self.name);
        if let Some(order) = self.order {
            value.push_str(&format!("\n{order}"));
        }
        value.into_bytes()
    }

    pub fn decode(holder: &Holder) -> ClaimValue {
        let text = String::from_utf8_lossy(&holder.value);
        let mut parts = text.splitn(3, '\n');
        let token = parts.next().unwrap_or_default().to_owned();
        let name = parts.next().unwrap_or_default().to_owned();
        let order = parts.next().and_then(|order| order.parse().ok());
        ClaimValue { token, name, order }
    }

    /// Whether its member is leaving: its `LEFT` is being published, and the
    /// name is free as soon as it is.
    pub fn is_leaving(&self) -> bool {
        self.token.is_empty()
    }

    /// Where its member comes in the join order.
    pub fn order_of(holder: &Holder) -> u64 {
        ClaimValue::decode(holder).order.unwrap_or(holder.revision)
    }
}

impl Clustered {
    /// Starts following the stream from the history's next position, the
    /// leaver, and the watch for dead servers.
    pub(super) fn start(room: &Arc<Room>, bridge: Arc<Bridge>, report: Report) -> std::io::Result<Arc<Clustered>> {
        let (departures, queue) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let tell = Arc::clone(&report);
        let clustered = Arc::new(Clustered {
            bridge,
            report,
            next_id: AtomicU64::new(1),
            origins: Mutex::new(HashMap::new()),
            applied: Mutex::new(room.head() - 1),
            grew: Condvar::new(),
            departures: Mutex::new(Some(departures.clone())),
            last_report: Mutex::new(None),
            leaver_done: Mutex::new(Some(done_rx)),
            subscriptions: Mutex::new(Vec::new()),
        });
        let (events_tx, events) = mpsc::channel();
        let (freed_tx, freed) = mpsc::channel::<Freed>();
        let weak = Arc::downgrade(room);
        thread::Builder::new().name("applier".into()).spawn(move || apply_all(&weak, &events))?;
        let leaver = Arc::clone(&clustered);
        thread::Builder::new().name("leaver".into()).spawn(move || {
            leaver.leave_all(&queue);
            let _ = done_tx.send(());
        })?;
        thread::Builder::new().name("dead servers".into()).spawn(move || {
            for freed in freed {
                let name = ClaimValue::decode(&freed.holder).name;
                tell(&format!("server {} stopped answering: {name} is gone (LEFT {name} lost)", freed.holder.server));
                // The same from every server that might free this claim.
                let id = format!("lost-{}-{}", freed.holder.server, freed.holder.revision);
                if departures.send((Departure::Lost { name, id }, None)).is_err() {
                    return;
                }
            }
        })?;
        let weak = Arc::downgrade(room);
        thread::Builder::new().name("cluster watch".into()).spawn(move || watch_heartbeat(&weak))?;
        let (changes_tx, changes) = mpsc::channel();
        let weak = Arc::downgrade(room);
        thread::Builder::new().name("name changes".into()).spawn(move || {
            for change in changes {
                let Some(room) = weak.upgrade() else { return };
                room.name_changed(&change);
            }
        })?;
        let from = room.head();
        let subscriptions = vec![
            clustered.bridge.subscribe(from, events_tx),
            clustered.bridge.watch_dead(freed_tx),
            clustered.bridge.watch_names(changes_tx),
        ];
        *lock(&clustered.subscriptions) = subscriptions;
        Ok(clustered)
    }

    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// Publishes `line`, said by member `from`, without waiting: the
    /// events a member submits are stored in that order, and
    /// [`Clustered::settle`] waits for them.
    pub(super) fn submit(&self, from: u64, line: &[u8]) -> Said {
        self.submit_as(from, line, self.new_id())
    }

    fn submit_as(&self, from: u64, line: &[u8], (n, id): (u64, String)) -> Said {
        lock(&self.origins).insert(n, from);
        Said { n, receipt: self.bridge.submit(line, &id, PATIENCE) }
    }

    /// Publishes an event and waits until it is back in the room's log: its
    /// position.
    fn say_now(&self, from: u64, line: &[u8], id: (u64, String)) -> Result<u64, Unavailable> {
        let deadline = Instant::now() + PATIENCE;
        let said = self.submit_as(from, line, id);
        let cut_off = || self.bridge.is_cut_off();
        let seq = self.stored(&said, deadline, &cut_off).inspect_err(|_| {
            lock(&self.origins).remove(&said.n);
        })?;
        self.wait_applied(seq, deadline, &cut_off)?;
        Ok(seq)
    }

    /// Waits until every event of `said` is stored and back in the room's
    /// log, saying in the log what it waits for once that takes long;
    /// gives up as soon as `gone` (the member was sent away meanwhile).
    pub(super) fn settle(
        &self,
        said: impl IntoIterator<Item = Said>,
        gone: &dyn Fn() -> bool,
    ) -> Result<(), Unavailable> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = 0;
        let mut said = said.into_iter();
        while let Some(one) = said.next() {
            match self.stored(&one, deadline, gone) {
                Ok(seq) => last = last.max(seq),
                Err(e) => {
                    // Their sender learns which were stored by resuming,
                    // and sends the others again.
                    self.withdraw(std::iter::once(one).chain(said));
                    return Err(e);
                }
            }
        }
        self.wait_applied(last, deadline, gone)
    }

    /// Withdraws what a member sent away said that the stream has not
    /// confirmed ([`cluster::Receipt::withdraw`]): whatever comes back of
    /// it now is nobody's, and none of it may be stored from now on.
    pub(super) fn withdraw(&self, said: impl IntoIterator<Item = Said>) {
        let mut origins = lock(&self.origins);
        for s in said {
            origins.remove(&s.n);
            s.receipt.withdraw();
        }
    }

    /// The position of an event submitted, once stored.
    fn stored(&self, said: &Said, deadline: Instant, gone: &dyn Fn() -> bool) -> Result<u64, Unavailable> {
        let started = Instant::now();
        let mut reported = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match said.receipt.wait(left.min(GLANCE)) {
                Ok(seq) => return Ok(seq),
                Err(cluster::Error::Timeout(_)) if !left.is_zero() => {}
                Err(e) => return Err(self.not_stored(&e)),
            }
            if gone() {
                return Err(sent_away());
            }
            if !reported && started.elapsed() >= SAY_AFTER {
                self.report_waiting();
                reported = true;
            }
        }
    }

    /// Says in the log what a message waits for: once every
    /// [`REPORT_EVERY`], however many wait.
    fn report_waiting(&self) {
        {
            let mut last = lock(&self.last_report);
            if last.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let leader = match self.bridge.leader() {
            Ok(Some(leader)) => format!("the stream's leader is {leader}"),
            Ok(None) => "the stream has no leader yet (an election)".to_owned(),
            Err(e) => format!("NATS does not answer ({e})"),
        };
        let status = self.bridge.status();
        let connection = if status.connected { "connected to NATS" } else { "NATS connection lost, reconnecting" };
        (self.report)(&format!(
            "waiting for the room's stream to store messages for {}s; {connection}; {leader}; \
             holding their PONGs for up to {}s",
            SAY_AFTER.as_secs(),
            PATIENCE.as_secs()
        ));
    }

    fn not_stored(&self, e: &cluster::Error) -> Unavailable {
        (self.report)(&format!("the room's stream did not store a message: {e}"));
        Unavailable(format!(
            "the room's stream (NATS) did not confirm it within {}s ({e}); \
             it may or may not be stored: reconnect, to this or another server, to find out",
            PATIENCE.as_secs()
        ))
    }

    /// A fresh id for an event published from here: its number, and itself.
    fn new_id(&self) -> (u64, String) {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        (n, format!("{}-{n}", self.bridge.server_id()))
    }

    /// Waits until the event at `seq` is in the room's log.
    fn wait_applied(&self, seq: u64, deadline: Instant, gone: &dyn Fn() -> bool) -> Result<(), Unavailable> {
        let mut applied = lock(&self.applied);
        while *applied < seq {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(Unavailable(format!(
                    "the room's stream stored it (position {seq}) but did not send it back within {}s; \
                     reconnect, to this or another server",
                    PATIENCE.as_secs()
                )));
            };
            if gone() {
                return Err(sent_away());
            }
            applied = self.grew.wait_timeout(applied, left.min(GLANCE)).unwrap_or_else(PoisonError::into_inner).0;
        }
        Ok(())
    }

    /// Which member of this server said an event, from its id.
    fn origin(&self, id: Option<&str>) -> u64 {
        let Some(n) = id
            .and_then(|id| id.strip_prefix(self.bridge.server_id()))
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return 0;
        };
        lock(&self.origins).remove(&n).unwrap_or(0)
    }

    fn applied(&self, seq: u64) {
        let mut applied = lock(&self.applied);
        *applied = (*applied).max(seq);
        self.grew.notify_all();
    }

    /// Claims a name, or takes it over with the token of the member that
    /// holds it; `Err` with the name as its holder spells it when taken.
    pub(super) fn claim(
        &self,
        key: &str,
        name: &str,
        token: Option<&str>,
        fresh: &str,
    ) -> Result<Result<Won, String>, Unavailable> {
        let unavailable = |e: cluster::Error| Unavailable(format!("the cluster's names cannot be reached ({e})"));
        let value = ClaimValue { token: fresh.to_owned(), name: name.to_owned(), order: None };
        let deadline = Instant::now() + LEAVING_PATIENCE;
        let (holder, held) = loop {
            let holder = match self.bridge.claim(key, &value.encode()).map_err(unavailable)? {
                cluster::Claim::Claimed(revision) => return Ok(Ok(Won { revision, took_over: None })),
                cluster::Claim::Taken(holder) => holder,
            };
            let held = ClaimValue::decode(&holder);
            // Its `LEFT` may be out already: the name is about to be free.
            if !held.is_leaving() || Instant::now() >= deadline {
                break (holder, held);
            }
            thread::sleep(Duration::from_millis(20));
        };
        if !token.is_some_and(|token| super::same_secret(&held.token, token)) {
            return Ok(Err(held.name));
        }
        let order = Some(ClaimValue::order_of(&holder));
        let value = ClaimValue { token: fresh.to_owned(), name: held.name.clone(), order };
        match self.bridge.take_over(key, holder.revision, &value.encode()).map_err(unavailable)? {
            Some(revision) => Ok(Ok(Won { revision, took_over: Some((held.name, holder.server)) })),
            None => Ok(Err(held.name)),
        }
    }

    /// The members of every server, in join order; `None` when NATS cannot
    /// say.
    pub(super) fn names(&self) -> Option<Vec<String>> {
        if !self.bridge.status().connected {
            return None;
        }
        // A listing can fail under load (nats-server 2.9): tried again
        // before falling back on this server's members alone.
        let mut listed = self.bridge.names();
        for _ in 0..2 {
            if listed.is_ok() {
                break;
            }
            listed = self.bridge.names();
        }
        let mut held =
            listed.inspect_err(|e| (self.report)(&format!("NAMES lists this server's members only: {e}"))).ok()?;
        held.retain(|(_, holder)| !ClaimValue::decode(holder).is_leaving());
        held.sort_by_key(|(_, holder)| ClaimValue::order_of(holder));
        Some(held.iter().map(|(_, holder)| ClaimValue::decode(holder).name).collect())
    }

    /// Has a member's `LEFT` published and its name freed, in the background.
    /// With `wait`, returns once it is recorded (or after
    /// [`LEAVE_PATIENCE`]): a member that asked to leave is told `BYE exit`
    /// when the room has its `LEFT`, as on one server.
    pub(super) fn depart(&self, member: &Member, reason: LeaveReason, joined: Option<(Vec<u8>, String)>, wait: bool) {
        let (key, name, token) = (member.name.key().to_owned(), member.name.to_string(), member.token.clone());
        let departure = Departure::Member { key, name, token, reason, joined };
        let (recorded, done) = mpsc::sync_channel(1);
        if let Some(departures) = lock(&self.departures).as_ref() {
            let _ = departures.send((departure, wait.then_some(recorded)));
        }
        if wait {
            let _ = done.recv_timeout(LEAVE_PATIENCE);
        }
    }

    /// Publishes the departures until the queue is closed and empty.
    fn leave_all(&self, queue: &mpsc::Receiver<Queued>) {
        for (departure, recorded) in queue {
            let (_, id) = self.new_id();
            let mut backoff = Duration::from_millis(100);
            let mut reported = false;
            while let Err(e) = self.leave(&departure, &id) {
                if !reported {
                    (self.report)(&format!("cannot record a departure yet ({e}); trying again until NATS answers"));
                    reported = true;
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            if let Some(recorded) = recorded {
                let _ = recorded.send(());
            }
        }
    }

    fn leave(&self, departure: &Departure, id: &str) -> Result<(), cluster::Error> {
        let deadline = || LEAVE_PATIENCE;
        match departure {
            Departure::Lost { name, id } => {
                let line = line_of(&ServerLine::Left { name: name.clone(), reason: LeaveReason::Lost });
                self.bridge.publish(&line, id, deadline()).map(drop)
            }
            Departure::Member { key, name, token, reason, joined } => {
                let Some(holder) = self.bridge.holder(key)? else { return Ok(()) };
                let held = ClaimValue::decode(&holder);
                // Still the member's, or marked leaving by an earlier try;
                // else someone else's now: not ours to say it left.
                if holder.server != self.bridge.server_id() || !(held.token == *token || held.is_leaving()) {
                    return Ok(());
                }
                // Marked leaving first: a claim that finds it so waits until
                // it is free, so nobody is told the name is taken after they
                // saw its `LEFT`.
                let leaving = ClaimValue { token: String::new(), order: Some(ClaimValue::order_of(&holder)), ..held };
                let Some(revision) = self.bridge.take_over(key, holder.revision, &leaving.encode())? else {
                    return Ok(());
                };
                if let Some((line, joined_id)) = joined {
                    self.bridge.publish(line, joined_id, deadline())?;
                }
                let line = line_of(&ServerLine::Left { name: name.clone(), reason: *reason });
                self.bridge.publish(&line, id, deadline())?;
                self.bridge.release_at(key, revision).map(drop)
            }
        }
    }

    /// Stops taking departures and waits, until `deadline`, for those given
    /// to be published. `false` when some were not.
    pub(super) fn finish(&self, deadline: Instant) -> bool {
        // The dead-server watch holds a sender too: stopped first.
        lock(&self.subscriptions).clear();
        drop(lock(&self.departures).take());
        let Some(done) = lock(&self.leaver_done).take() else { return true };
        done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

/// Why a wait for the stream ended early.
fn sent_away() -> Unavailable {
    Unavailable("this server lost NATS and sent the member away; reconnect, to another server or later".into())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends this server's members away once it has not written its heartbeat
/// for `--dead-server-timeout`: the other servers may then take it for dead and record
/// them as lost, and a member left here would talk into a silence, or
/// worse, be heard while the room thinks it gone. They get `BYE
/// unavailable` and resume on another server, or here once NATS is back.
fn watch_heartbeat(room: &Weak<Room>) {
    let mut cut_off = false;
    loop {
        thread::sleep(Duration::from_millis(500));
        let Some(room) = room.upgrade() else { return };
        let Some(clustered) = room.cluster.get() else { return };
        let silent = clustered.bridge.last_heartbeat().map(|beat| beat.elapsed());
        match silent {
            Some(silent) if clustered.bridge.is_cut_off() => {
                let sent = room.send_everyone_away(clustered);
                if !cut_off || sent > 0 {
                    (clustered.report)(&format!(
                        "no heartbeat reached NATS for {}s: the other servers may take this one for dead; \
                         {sent} members sent away (BYE unavailable), joins refused until NATS answers",
                        silent.as_secs()
                    ));
                }
                cut_off = true;
            }
            Some(_) if cut_off => {
                (clustered.report)("NATS answers again: taking members");
                cut_off = false;
            }
            _ => {}
        }
    }
}

/// Applies the stream's events to the room, in order, while the room lives.
fn apply_all(room: &Weak<Room>, events: &mpsc::Receiver<Delivery>) {
    for delivery in events {
        let Some(room) = room.upgrade() else { return };
        let Some(clustered) = room.cluster.get() else { return };
        match delivery {
            Delivery::Event { event, id } => {
                let from = clustered.origin(id.as_deref());
                let seq = event.seq;
                room.apply(event, from);
                clustered.applied(seq);
            }
            Delivery::Missed { from, to } => {
                (clustered.report)(&format!(
                    "positions {from} to {to} of the room's stream were not delivered to this server \
                     (the stream no longer keeps them); its members are not sent them"
                ));
                room.skip_to(to + 1);
                clustered.applied(to);
            }
        }
    }
}

impl Room {
    /// Puts an event from the stream in the log, at its position.
    fn apply(&self, event: Event, from: u64) {
        let mut st = self.lock();
        if event.seq < st.head() {
            return;
        }
        self.fill_to(&mut st, event.seq);
        // The stream's leaders' clocks: every server sends the same time for
        // one position, as a replay does.
        let _ = self.history.append(event.seq, event.time_ms, &event.line, false);
        st.last_time = st.last_time.max(event.time_ms);
        st.push(from, event.line.into(), event.time_ms);
        self.grew(&mut st);
    }

    /// Positions the stream no longer has: nobody is sent anything for them.
    fn skip_to(&self, next: u64) {
        let mut st = self.lock();
        self.fill_to(&mut st, next);
        self.grew(&mut st);
    }

    fn fill_to(&self, st: &mut State, next: u64) {
        while st.head() < next {
            st.push(0, Arc::from(&b""[..]), st.last_time);
        }
    }

    /// Sends every member of this server away ([`watch_heartbeat`]): how
    /// many there were.
    fn send_everyone_away(&self, clustered: &Clustered) -> usize {
        let mut st = self.lock();
        let head = st.head();
        let members: Vec<Arc<Member>> = st.names.drain().map(|(_, member)| member).collect();
        for member in &members {
            if member.status.compare_exchange(PRESENT, UNAVAILABLE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                member.end.store(head, Ordering::SeqCst);
                // Recorded once NATS answers, unless its client came back
                // with its token first.
                clustered.depart(member, LeaveReason::Lost, None, false);
            }
            member.connection.notify();
        }
        members.len()
    }

    /// A name changed hands in the cluster. When it was one of this server's
    /// members' after it got it, that member's time is over: taken over with
    /// its token on another server (`BYE replaced`, as on one server), or
    /// freed as a dead server's while this one could not reach NATS (`BYE
    /// unavailable`; the room has recorded it as lost).
    fn name_changed(&self, change: &cluster::Change) {
        let Some(clustered) = self.cluster.get() else { return };
        let mut st = self.lock();
        let Some(member) = st.names.get(&change.name_key).cloned() else { return };
        if change.revision <= member.claimed_at {
            return;
        }
        let (status, what) = match &change.holder {
            Some(holder) => (REPLACED, format!("taken over with its token on server {}", holder.server)),
            None => (UNAVAILABLE, "freed by another server, which took this one for dead".to_owned()),
        };
        if member.status.compare_exchange(PRESENT, status, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            member.end.store(st.head(), Ordering::SeqCst);
            st.names.remove(&change.name_key);
            member.connection.notify();
            drop(st);
            (clustered.report)(&format!("{}'s name was {what}", member.name));
        }
    }

    /// A member expelled here, in a room across servers.
    pub(super) fn expelled_in_cluster(&self, clustered: &Clustered, member: &Member) {
        clustered.depart(member, LeaveReason::Slow, None, false);
    }
}

impl Room {
    /// [`Room::join`] in a room across servers: the name claimed in the
    /// cluster, then the `JOINED` published and back here before the member
    /// reads anything.
    pub(super) fn join_clustered(
        self: &Arc<Self>,
        clustered: &Clustered,
        name: Name,
        replay: Replay<'_>,
        token: Option<&str>,
        connection: Arc<dyn Notify>,
        fresh_token: String,
    ) -> Result<Joined, JoinError> {
        if self.is_closed() {
            return Err(JoinError::Closed);
        }
        if clustered.bridge.is_cut_off() {
            let why = "this server has lost NATS, where the room is kept";
            return Err(JoinError::Unavailable(Unavailable(why.into())));
        }
        let claimed = clustered.claim(name.key(), name.as_str(), token, &fresh_token);
        let Won { revision, took_over } = match claimed.map_err(JoinError::Unavailable)? {
            Err(holder) => return Err(JoinError::Taken(holder)),
            Ok(won) => won,
        };
        // A takeover keeps the name as the room knows it.
        let name = match &took_over {
            Some((spelled, _)) => Name::parse(spelled).unwrap_or(name),
            None => name,
        };
        let mut st = self.lock();
        if self.is_closed() {
            drop(st);
            if took_over.is_none() {
                let _ = clustered.bridge.release(name.key());
            }
            return Err(JoinError::Closed);
        }
        let member = st.new_member(name, connection, fresh_token.clone(), revision);
        // The member it takes over from, when on this server, stops here.
        let here = took_over.as_ref().is_some_and(|(_, server)| server == clustered.bridge.server_id());
        let replaced = st.names.get(member.name.key()).filter(|_| here).cloned();
        st.admit(&member, replaced.as_ref());
        let mut past = st.head() - 1;
        drop(st);
        let membership = Membership::new(Arc::clone(self), Arc::clone(&member));
        if took_over.is_none() {
            let line = line_of(&ServerLine::Joined(member.name.to_string()));
            let id = clustered.new_id();
            let joined_id = id.1.clone();
            match clustered.say_now(member.id, &line, id) {
                Ok(seq) => {
                    // Everything before its `JOINED` comes in the replay.
                    member.cursor.fetch_max(seq + 1, Ordering::SeqCst);
                    past = seq - 1;
                }
                Err(e) => {
                    // It may be stored: published again with its id before
                    // the `LEFT`, so the room sees both or neither.
                    member.status.store(LEFT, Ordering::SeqCst);
                    let mut st = self.lock();
                    if st.names.get(member.name.key()).is_some_and(|m| m.id == member.id) {
                        st.names.remove(member.name.key());
                    }
                    drop(st);
                    let joined = Some((line.to_vec(), joined_id));
                    clustered.depart(&member, LeaveReason::Lost, joined, false);
                    return Err(JoinError::Unavailable(e));
                }
            }
        }
        let (missed, range) = self.replay_range(replay, past);
        let replay = match range {
            Some((from, to)) => Some(self.history.read(from, to).map_err(JoinError::Failed)?),
            None => None,
        };
        let epoch = self.history.epoch().to_owned();
        let took_over = took_over.is_some();
        Ok(Joined { membership, epoch, past, token: fresh_token, missed, replay, took_over })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(value: &[u8], revision: u64) -> Holder {
        Holder { server: "s1".into(), value: value.to_vec(), revision }
    }

    #[test]
    fn a_claim_keeps_token_name_and_join_order_through_a_takeover() {
        let first = ClaimValue { token: "t1".into(), name: "José Ana".into(), order: None };
        let stored = holder(&first.encode(), 7);
        assert_eq!(ClaimValue::decode(&stored), first);
        assert_eq!(ClaimValue::order_of(&stored), 7, "a first claim comes in at its own revision");
        let taken =
            ClaimValue { token: "t2".into(), name: first.name.clone(), order: Some(ClaimValue::order_of(&stored)) };
        let restored = holder(&taken.encode(), 12);
        assert_eq!(ClaimValue::decode(&restored), taken);
        assert_eq!(ClaimValue::order_of(&restored), 7, "a takeover keeps its place in the join order");
    }

    #[test]
    fn a_value_from_elsewhere_decodes_to_something_harmless() {
        let odd = ClaimValue::decode(&holder(b"only-a-token", 3));
        assert_eq!((odd.token.as_str(), odd.name.as_str(), odd.order), ("only-a-token", "", None));
        assert_eq!(ClaimValue::order_of(&holder(b"t\nn\nnot-a-number", 4)), 4);
    }
}
