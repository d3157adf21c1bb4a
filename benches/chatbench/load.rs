//! A room driven by the generator: members joined through `Net`, publishers
//! fed at a pace, and the tally of what each subscriber received: counts,
//! order, latency and gaps. The same code drives every server; only the
//! wire protocol differs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rustls::ClientConfig;

use crate::histogram::Histogram;
use crate::net::{Handler, Net};
use crate::system::now_ns;
use crate::wire::{parse_decimal, parse_payload, Event, Proto};

/// Deliveries are acknowledged to the publishers' window in blocks of this
/// many messages, so the window costs O(1) per delivery.
const BLOCK: u64 = 64;
/// Messages a publisher writes at once, and output it may have unsent (its
/// socket being full) before it waits for the socket.
const BATCH: u64 = 256;
const MAX_UNSENT: usize = 64 * 1024;
/// The smallest window per publisher, whatever the server's pace.
const MIN_WINDOW: u64 = 4 * BLOCK;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listens and is counted.
    Subscriber,
    /// Publishes; on chat it is a member too, and what it receives is drained
    /// and not counted.
    Publisher,
    /// Joins, then never reads again.
    Silent,
}

/// What subscribers receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payloads {
    /// The generator's own `<publisher> <seq> <t_ns>` payloads.
    Timed,
    /// chat-send's lines `1`, `2`, … (the bulk scenario).
    Counter,
}

/// How publishers send.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the server delivers: each publisher stays at most this many
    /// messages ahead of its slowest subscriber.
    Window(u64),
    /// This many messages a second in all, whatever happens.
    Rate(f64),
}

#[derive(Debug, Default)]
struct Member {
    role: Option<Role>,
    ready: bool,
    awaiting_pong: bool,
    /// Subscribers: the next sequence number expected from each publisher.
    next: Vec<u64>,
    /// Publishers: their flow's index.
    flow: Option<usize>,
    last_ns: u64,
    max_gap_ns: u64,
}

/// A publisher's progress: sent, and how far every subscriber has received.
#[derive(Debug, Default)]
struct Flow {
    id: usize,
    sent: u64,
    /// Blocks (of `BLOCK` messages) every subscriber has received.
    done_blocks: u64,
    /// For the blocks after those: how many subscribers have received each.
    counts: VecDeque<u32>,
    /// `publish_acked`: the messages sent before each PING not yet answered,
    /// and the messages the server has answered for.
    pings: VecDeque<u64>,
    acked: u64,
}

/// Everything read, per connection and in all.
#[derive(Debug)]
pub struct Tally {
    members: Vec<Member>,
    flows: Vec<Flow>,
    subscribers: u32,
    payloads: Payloads,
    pub ready: usize,
    /// When the last member became ready, in `now_ns` time.
    pub last_ready_ns: u64,
    pub closed: usize,
    pongs_due: usize,
    /// Latency and gaps are recorded only while measuring.
    pub measuring: bool,
    pub latency: Histogram,
    /// When the server last answered a publisher's PING of `publish_acked`.
    pub last_ack_ns: u64,
    /// Subscriber deliveries in all, and when the last one arrived.
    pub delivered: u64,
    pub last_delivery_ns: u64,
    /// Deliveries that were not the next one expected from their publisher.
    pub out_of_order: u64,
    /// `LEFT` lines seen by the first subscriber, with their time.
    pub lefts: Vec<(u64, String)>,
    /// The first few error lines and unexpected closes, for the notes.
    pub errors: Vec<String>,
}

impl Tally {
    fn new(payloads: Payloads) -> Tally {
        Tally {
            members: Vec::new(),
            flows: Vec::new(),
            subscribers: 0,
            payloads,
            ready: 0,
            last_ready_ns: 0,
            closed: 0,
            pongs_due: 0,
            measuring: false,
            latency: Histogram::default(),
            last_ack_ns: 0,
            delivered: 0,
            last_delivery_ns: 0,
            out_of_order: 0,
            lefts: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn note_error(&mut self, text: String) {
        if self.errors.len() < 3 {
            self.errors.push(text);
        }
    }

    fn deliver(&mut self, id: usize, payload: &[u8], now: u64) {
        let measuring = self.measuring;
        let member = &mut self.members[id];
        let (publisher, seq) = match self.payloads {
            Payloads::Timed => match parse_payload(payload) {
                Some((publisher, seq, t_ns)) if publisher < member.next.len() => {
                    if measuring {
                        self.latency.record(now.saturating_sub(t_ns));
                    }
                    (publisher, seq)
                }
                _ => return self.note_error(format!("odd payload {:?}", String::from_utf8_lossy(payload))),
            },
            // chat-send's lines count from 1.
            Payloads::Counter => (0, parse_decimal(payload).unwrap_or(0).wrapping_sub(1)),
        };
        if seq != member.next[publisher] {
            self.out_of_order += 1;
        }
        member.next[publisher] = seq + 1;
        if measuring && now > member.last_ns {
            if member.last_ns > 0 {
                member.max_gap_ns = member.max_gap_ns.max(now - member.last_ns);
            }
            member.last_ns = now;
        }
        self.delivered += 1;
        self.last_delivery_ns = now;
        if (seq + 1) % BLOCK == 0 {
            if let Some(flow) = self.flows.get_mut(publisher) {
                flow.block_received((seq + 1) / BLOCK - 1, self.subscribers);
            }
        }
    }
}

impl Flow {
    /// Messages every subscriber has received (to a block).
    fn received(&self) -> u64 {
        self.done_blocks * BLOCK
    }

    fn block_received(&mut self, block: u64, subscribers: u32) {
        let Some(i) = block.checked_sub(self.done_blocks) else { return };
        let i = i as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        while self.counts.front() == Some(&subscribers) {
            self.counts.pop_front();
            self.done_blocks += 1;
        }
    }
}

impl Handler for Tally {
    fn event(&mut self, id: usize, event: Event<'_>, now: u64) {
        let member = &mut self.members[id];
        match event {
            // NATS confirms a subscription with the PONG to the PING after SUB.
            Event::Ready | Event::Pong if !member.ready => {
                member.ready = true;
                self.ready += 1;
                self.last_ready_ns = now;
            }
            // Answers come in order: those of publish_acked's PINGs before
            // a barrier's sent after them.
            Event::Pong if member.flow.is_some_and(|f| !self.flows[f].pings.is_empty()) => {
                let flow = &mut self.flows[member.flow.expect("checked")];
                flow.acked = flow.pings.pop_front().expect("checked");
                self.last_ack_ns = now;
            }
            Event::Pong if member.awaiting_pong => {
                member.awaiting_pong = false;
                self.pongs_due -= 1;
            }
            Event::Delivery(payload) if member.role == Some(Role::Subscriber) => self.deliver(id, payload, now),
            Event::Left(text) if id == 0 => self.lefts.push((now, String::from_utf8_lossy(text).into_owned())),
            Event::Error(text) => {
                let text = format!("{}: {}", id, String::from_utf8_lossy(text));
                self.note_error(text);
            }
            _ => {}
        }
    }

    fn closed(&mut self, id: usize, why: &str) {
        let member = &mut self.members[id];
        if member.awaiting_pong {
            member.awaiting_pong = false;
            self.pongs_due -= 1;
        }
        self.closed += 1;
        let role = member.role.unwrap_or(Role::Subscriber);
        self.note_error(format!("connection {id} ({role:?}) {why}"));
    }
}

/// One room on one server, driven from here.
pub struct Load {
    pub net: Net,
    pub tally: Tally,
    proto: Proto,
    /// Members connect to each in turn (a cluster's servers).
    addrs: Vec<SocketAddr>,
    /// Members speak TLS from the first byte, accepting any certificate
    /// (the library's client configuration, which still checks the
    /// handshake's signatures).
    tls: Option<Arc<ClientConfig>>,
}

/// When the join of all members began and ended.
#[derive(Debug)]
pub struct Joined {
    pub elapsed: Duration,
    pub all: bool,
}

impl Load {
    /// A room on the servers at `addrs`: the first member connects to the
    /// first, the next to the next, and so on round; with `tls`, each speaks
    /// TLS from the first byte.
    pub fn new(proto: Proto, tls: bool, addrs: &[SocketAddr], payloads: Payloads) -> anyhow::Result<Load> {
        if addrs.is_empty() {
            bail!("no server address");
        }
        let tls = tls.then(minichat::tls::client_config);
        Ok(Load { net: Net::new()?, tally: Tally::new(payloads), proto, addrs: addrs.to_vec(), tls })
    }

    pub fn ids(&self, role: Role) -> Vec<usize> {
        (0..self.net.len()).filter(|&id| self.tally.members[id].role == Some(role)).collect()
    }

    /// The members that joined (and may be pinged).
    pub fn ready_ids(&self) -> Vec<usize> {
        (0..self.net.len()).filter(|&id| self.tally.members[id].ready).collect()
    }

    /// Connects and joins members of `roles`, in that order, keeping at most
    /// `in_flight` connecting or joining at once (the server's accept queue
    /// is finite), until all are in or `deadline`.
    pub fn join(&mut self, roles: &[Role], in_flight: usize, deadline: Instant) -> anyhow::Result<Joined> {
        let start = Instant::now();
        let publishers = roles.iter().filter(|&&r| r == Role::Publisher).count();
        let first = self.net.len();
        let mut next = 0;
        while Instant::now() < deadline {
            let joined = self.tally.ready + self.tally.closed - first;
            while next < roles.len() && next - joined < in_flight {
                let role = roles[next];
                self.add(role, publishers, next)?;
                next += 1;
            }
            if self.tally.ready - first >= roles.len() || self.tally.closed > 0 {
                break;
            }
            self.net.poll(Duration::from_millis(5), &mut self.tally)?;
        }
        let elapsed = start.elapsed();
        for id in self.ids(Role::Silent) {
            self.net.set_reading(id, false);
        }
        Ok(Joined { elapsed, all: self.tally.ready - first == roles.len() && self.tally.closed == 0 })
    }

    fn add(&mut self, role: Role, publishers: usize, index: usize) -> anyhow::Result<()> {
        let name = match role {
            Role::Subscriber => format!("s{index}"),
            Role::Publisher => format!("p{}", self.tally.flows.len()),
            Role::Silent => format!("q{index}"),
        };
        let greeting = self.proto.greeting(role != Role::Publisher, &name);
        let addr = self.addrs[self.net.len() % self.addrs.len()];
        let id = self.net.connect(addr, self.proto, self.tls.as_ref(), greeting)?;
        let mut member = Member { role: Some(role), ..Member::default() };
        match role {
            Role::Subscriber => {
                member.next = vec![0; publishers.max(1)];
                self.tally.subscribers += 1;
            }
            Role::Publisher => {
                member.flow = Some(self.tally.flows.len());
                self.tally.flows.push(Flow { id, ..Flow::default() });
            }
            Role::Silent => {}
        }
        self.tally.members.push(member);
        Ok(())
    }

    /// Pings every open connection of `ids` and waits for all the answers:
    /// then each has read everything the server sent it before. Subscribers
    /// that cannot answer while they listen (a Redis stream's) are left out.
    pub fn barrier(&mut self, ids: &[usize], deadline: Instant) -> anyhow::Result<bool> {
        for &id in ids {
            let listening = self.tally.members[id].role != Some(Role::Publisher);
            if listening && !self.proto.pings_subscribers() {
                continue;
            }
            if self.net.is_open(id) && !self.tally.members[id].awaiting_pong {
                self.proto.ping(self.net.out(id));
                self.tally.members[id].awaiting_pong = true;
                self.tally.pongs_due += 1;
                self.net.flush(id, &mut self.tally);
            }
        }
        while self.tally.pongs_due > 0 && Instant::now() < deadline {
            self.net.poll(Duration::from_millis(10), &mut self.tally)?;
        }
        Ok(self.tally.pongs_due == 0)
    }

    /// Publishes at `pace` for `duration`, recording latency and gaps. Returns
    /// when sending started, in `now_ns` time.
    pub fn publish(&mut self, pace: Pace, duration: Duration) -> anyhow::Result<u64> {
        if self.tally.flows.is_empty() {
            bail!("no publisher");
        }
        let start = Instant::now();
        let start_ns = now_ns();
        let end = start + duration;
        self.tally.measuring = true;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let wait = match pace {
                Pace::Window(window) => {
                    self.feed_window(self.window_now(window, now - start));
                    Duration::from_millis(10)
                }
                Pace::Rate(rate) => self.feed_rate(rate, now - start),
            };
            self.net.poll(wait.min(end - now), &mut self.tally)?;
        }
        // A subscriber that stalled until the end had its longest gap last.
        let end_ns = now_ns();
        for member in &mut self.tally.members {
            if member.role == Some(Role::Subscriber) && member.last_ns > 0 {
                member.max_gap_ns = member.max_gap_ns.max(end_ns - member.last_ns);
            }
        }
        Ok(start_ns)
    }

    /// The window, capped once a fifth of a second has passed to one
    /// second of the deliveries measured so far: a server too slow for the
    /// window is left no more queued than it delivers in a second, so the
    /// final barrier does not wait long for it. A fast server never meets
    /// the cap.
    fn window_now(&self, window: u64, elapsed: Duration) -> u64 {
        let elapsed = elapsed.as_secs_f64();
        if elapsed < 0.2 {
            return window;
        }
        let per_subscriber = self.tally.delivered as f64 / self.tally.subscribers.max(1) as f64;
        let per_publisher_per_s = per_subscriber / self.tally.flows.len() as f64 / elapsed;
        window.min((per_publisher_per_s as u64).max(MIN_WINDOW))
    }

    /// Fills every publisher's window, as far as its socket takes it: the
    /// loop then sleeps only when every window is full (a delivery wakes it)
    /// or every socket is (writability wakes it).
    fn feed_window(&mut self, window: u64) {
        for i in 0..self.tally.flows.len() {
            loop {
                let flow = &self.tally.flows[i];
                let room = (flow.received() + window).saturating_sub(flow.sent).min(BATCH);
                if room == 0 || self.net.unsent(flow.id) >= MAX_UNSENT || !self.net.is_open(flow.id) {
                    break;
                }
                self.send(i, room);
            }
        }
    }

    /// Sends what is due by `elapsed` at `rate`, spread over the publishers;
    /// returns how long until the next message is due.
    fn feed_rate(&mut self, rate: f64, elapsed: Duration) -> Duration {
        let due = (elapsed.as_secs_f64() * rate) as u64 + 1;
        let sent: u64 = self.tally.flows.iter().map(|f| f.sent).sum();
        let publishers = self.tally.flows.len() as u64;
        for k in sent..due {
            self.send((k % publishers) as usize, 1);
        }
        let next_due = Duration::from_secs_f64(due.max(sent) as f64 / rate);
        next_due.saturating_sub(elapsed)
    }

    fn send(&mut self, publisher: usize, count: u64) {
        let id = self.write(publisher, count);
        self.net.flush(id, &mut self.tally);
    }

    /// Writes `count` messages of `publisher` to its output, unflushed;
    /// returns its connection.
    fn write(&mut self, publisher: usize, count: u64) -> usize {
        let flow = &mut self.tally.flows[publisher];
        let (id, first) = (flow.id, flow.sent);
        flow.sent += count;
        let t_ns = now_ns();
        let out = self.net.out(id);
        for seq in first..first + count {
            self.proto.publish(out, publisher, seq, t_ns);
        }
        id
    }

    /// Publishes for `duration` as fast as the server confirms: each
    /// publisher sends a PING after every batch and stays at most `window`
    /// messages ahead of the PONGs it has had (a chatd's PONG comes once it
    /// has taken every message before it: appended to its store, or
    /// published to the cluster's stream and acknowledged). Then waits,
    /// until `deadline` at the latest, for the PONGs still due. Returns when
    /// sending started, in `now_ns` time, and whether every PONG came.
    pub fn publish_acked(&mut self, window: u64, duration: Duration, deadline: Instant) -> anyhow::Result<(u64, bool)> {
        if self.tally.flows.is_empty() {
            bail!("no publisher");
        }
        let start_ns = now_ns();
        let end = Instant::now() + duration;
        while Instant::now() < end {
            for i in 0..self.tally.flows.len() {
                loop {
                    let flow = &self.tally.flows[i];
                    let room = (flow.acked + window).saturating_sub(flow.sent).min(BATCH);
                    if room == 0 || self.net.unsent(flow.id) >= MAX_UNSENT || !self.net.is_open(flow.id) {
                        break;
                    }
                    let id = self.write(i, room);
                    self.proto.ping(self.net.out(id));
                    let flow = &mut self.tally.flows[i];
                    flow.pings.push_back(flow.sent);
                    self.net.flush(id, &mut self.tally);
                }
            }
            self.net.poll(Duration::from_millis(10), &mut self.tally)?;
        }
        let due = |tally: &Tally| tally.flows.iter().any(|f| !f.pings.is_empty());
        while due(&self.tally) && self.tally.closed == 0 && Instant::now() < deadline {
            self.net.poll(Duration::from_millis(10), &mut self.tally)?;
        }
        Ok((start_ns, !due(&self.tally)))
    }

    /// Messages the server confirmed to `publish_acked`.
    pub fn acked(&self) -> u64 {
        self.tally.flows.iter().map(|f| f.acked).sum()
    }

    /// Publishes `count` messages in all, shared among the publishers, as
    /// fast as the server reads them (nobody's deliveries are counted, so
    /// there is no window), then proves with a barrier on the publishers
    /// that it took them all. Stops publishing at `deadline`. Returns how
    /// many were published and whether the server took them all.
    pub fn fill(&mut self, count: u64, deadline: Instant) -> anyhow::Result<(u64, bool)> {
        let publishers = self.tally.flows.len() as u64;
        if publishers == 0 {
            bail!("no publisher");
        }
        while Instant::now() < deadline {
            let mut due = false;
            for i in 0..self.tally.flows.len() {
                let share = count / publishers + u64::from((i as u64) < count % publishers);
                loop {
                    let flow = &self.tally.flows[i];
                    let left = share.saturating_sub(flow.sent);
                    if left == 0 || !self.net.is_open(flow.id) {
                        break;
                    }
                    due = true;
                    if self.net.unsent(flow.id) >= MAX_UNSENT {
                        break;
                    }
                    self.send(i, left.min(BATCH));
                }
            }
            if !due {
                break;
            }
            self.net.poll(Duration::from_millis(10), &mut self.tally)?;
        }
        let ids: Vec<usize> = self.tally.flows.iter().map(|f| f.id).collect();
        let took = self.barrier(&ids, Instant::now().max(deadline) + Duration::from_secs(10))?;
        Ok((self.sent(), took && self.tally.closed == 0))
    }

    /// After publishing: proves that the server took every message (a barrier
    /// on the publishers), then that every subscriber read every message sent
    /// to it (a barrier on the subscribers, or where they cannot answer one,
    /// their count of deliveries). Returns false on a timeout.
    pub fn settle(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        let publishers: Vec<usize> = self.tally.flows.iter().map(|f| f.id).collect();
        let took = self.barrier(&publishers, deadline)?;
        let read = if self.proto.pings_subscribers() {
            self.barrier(&self.ids(Role::Subscriber), deadline)?
        } else {
            while self.tally.delivered < self.expected() && self.tally.closed == 0 && Instant::now() < deadline {
                self.net.poll(Duration::from_millis(10), &mut self.tally)?;
            }
            self.tally.delivered >= self.expected()
        };
        self.tally.measuring = false;
        Ok(took && read)
    }

    /// Messages published in all.
    pub fn sent(&self) -> u64 {
        self.tally.flows.iter().map(|f| f.sent).sum()
    }

    /// Deliveries subscribers should have had: every message, to each.
    pub fn expected(&self) -> u64 {
        self.sent() * self.tally.subscribers as u64
    }

    /// The longest time any subscriber went without a delivery while
    /// messages were being published.
    pub fn longest_gap_ns(&self) -> u64 {
        self.tally.members.iter().map(|m| m.max_gap_ns).max().unwrap_or(0)
    }

    /// Keeps reading for `duration`, for members that must drain (chat's
    /// `JOINED` lines) while nothing else happens.
    pub fn idle(&mut self, duration: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + duration;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.net.poll(left, &mut self.tally)?;
        }
        Ok(())
    }
}
