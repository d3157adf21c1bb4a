//! The async side of the bridge, run on its runtime: the connection, the
//! room's stream and buckets, publishing, following and replaying.

use std::collections::VecDeque;
use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;

use super::{Delivery, Error, Kept, Options, StatusCell};
use crate::history::Event;

/// How long one request to JetStream may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many events a replay's chunk holds.
const CHUNK: usize = 256;

/// The room in NATS, as one server sees it.
#[derive(Debug)]
pub struct Link {
    pub server_id: String,
    /// The stream's: `js` and the time it was made, in nanoseconds.
    pub epoch: String,
    js: jetstream::Context,
    stream: String,
    subject: String,
    pub names: kv::Store,
    pub servers: kv::Store,
    /// How often the heartbeat is written and the names scanned.
    pub period: Duration,
    /// How long after its last heartbeat a server is taken for dead.
    pub dead_after: Duration,
    /// When this server's heartbeat was last written.
    pub last_beat: Mutex<Option<Instant>>,
    status: Arc<StatusCell>,
}

/// A room's name must be one token of a NATS subject and fit stream and
/// bucket names.
pub fn check_room(room: &str) -> anyhow::Result<()> {
    let fits = !room.is_empty() && room.len() <= 64;
    anyhow::ensure!(
        fits && room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the room's name {room:?} must be 1 to 64 letters, digits, '-' or '_'"
    );
    Ok(())
}

impl Link {
    pub async fn open(
        urls: &[String],
        room: &str,
        options: &Options,
        server_id: String,
        status: Arc<StatusCell>,
    ) -> anyhow::Result<Link> {
        let list = urls.join(",");
        let addrs = urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>().with_context(|| format!("{url:?} is not a NATS URL")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let events = Arc::clone(&status);
        let client = async_nats::ConnectOptions::new()
            .name(format!("chatd {server_id}"))
            .connection_timeout(Duration::from_secs(5))
            // Back soon after a NATS restart, never a storm: 0.1 s, 0.2 s…
            // up to 2 s between tries.
            .reconnect_delay_callback(|tries| Duration::from_millis(100 * tries.min(20) as u64))
            .event_callback(move |event| {
                let status = Arc::clone(&events);
                async move {
                    match event {
                        async_nats::Event::Connected => status.set(|s| s.connected = true),
                        async_nats::Event::Disconnected => status.set(|s| {
                            s.connected = false;
                            s.losses += 1;
                        }),
                        _ => {}
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach NATS at {list}: {e}; is nats-server running there? Start one with `nats-server -js`"
                )
            })?;
        let mut js = jetstream::new(client);
        // How long a request waits for its answer: a publish that gets no
        // acknowledgement is sent again (same id) after this, within the
        // caller's timeout. Making a consumer on nats-server 2.9 while its
        // cluster replaces a dead node's leaders takes seconds.
        js.set_timeout(Duration::from_secs(5));

        let deadline = Instant::now() + options.start_timeout;
        let stream = format!("minichat-{room}");
        let subject = format!("minichat.{room}.events");
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            max_messages: i64::try_from(options.keep.max(1)).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            duplicate_window: options.dedupe_window,
            ..Default::default()
        };
        let made = retry(&list, "the room's stream", deadline, || js.get_or_create_stream(config.clone())).await?;
        // `--history` decides how much the stream keeps, whoever made it.
        let found = &made.cached_info().config;
        if found.max_messages != config.max_messages {
            let resized = stream::Config { max_messages: config.max_messages, ..found.clone() };
            retry(&list, "the room's stream's size", deadline, || js.update_stream(resized.clone())).await?;
        }
        // Positions are `<epoch>:<seq>`: a stream deleted and made again
        // starts another history, with another epoch.
        let epoch = format!("js{}", made.cached_info().created.unix_timestamp_nanos());
        let names_bucket = format!("minichat-{room}-names");
        let names =
            retry(&list, "the names bucket", deadline, || open_bucket(&js, &names_bucket, Duration::ZERO, options))
                .await?;
        let servers_bucket = format!("minichat-{room}-servers");
        let servers = retry(&list, "the servers bucket", deadline, || {
            open_bucket(&js, &servers_bucket, options.dead_after * 2 / 3, options)
        })
        .await?;
        let link = Link {
            server_id,
            epoch,
            js,
            stream,
            subject,
            names,
            servers,
            period: (options.dead_after / 6).max(Duration::from_millis(100)),
            dead_after: options.dead_after,
            last_beat: Mutex::new(None),
            status,
        };
        // The first heartbeat, before any name is claimed: a server is
        // never seen holding names without one.
        retry(&list, "the first heartbeat", deadline, || link.beat()).await?;
        Ok(link)
    }

    pub async fn kept(&self) -> Result<Kept, Error> {
        let stream = self.js.get_stream(&self.stream).await.map_err(failed("find the room's stream"))?;
        let info = stream.get_info().await.map_err(failed("read the room's stream"))?;
        let state = info.state;
        let last_time_ms =
            if state.last_sequence == 0 { 0 } else { ms_of(state.last_timestamp.unix_timestamp_nanos()) };
        let first = if state.messages == 0 { state.last_sequence + 1 } else { state.first_sequence };
        Ok(Kept { first, last: state.last_sequence, last_time_ms })
    }

    pub async fn leader(&self) -> Result<Option<String>, Error> {
        let stream = self.js.get_stream(&self.stream).await.map_err(failed("find the room's stream"))?;
        let info = stream.get_info().await.map_err(failed("read the room's stream"))?;
        Ok(info.cluster.and_then(|cluster| cluster.leader))
    }

    /// An ordered consumer of the stream from `from` on.
    async fn messages(&self, from: u64) -> Result<consumer::pull::Ordered, Error> {
        let stream = self.js.get_stream(&self.stream).await.map_err(failed("find the room's stream"))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            })
            .await
            .map_err(failed("create a consumer of the room's stream"))?;
        consumer.messages().await.map_err(failed("read the room's stream"))
    }

    async fn beat(&self) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.servers.put(&self.server_id, now.as_millis().to_string().into()).await?;
        *self.last_beat.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }
}

/// An event to publish, and where its answer goes.
#[derive(Debug)]
pub struct Submitted {
    pub line: Vec<u8>,
    pub id: String,
    pub timeout: Duration,
    pub answer: mpsc::SyncSender<Result<u64, Error>>,
    /// Set once nobody may store it any more ([`super::Receipt::withdraw`]).
    pub withdrawn: Arc<AtomicBool>,
}

impl Submitted {
    fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::SeqCst)
    }

    fn answer_withdrawn(&self) {
        let why = "withdrawn: its sender was sent away before the stream confirmed it".to_owned();
        let _ = self.answer.send(Err(Error::Failed(why)));
    }
}

/// Publishes what is submitted, in the order submitted, without waiting
/// for one acknowledgement before sending the next: one connection, sent
/// in order to one stream leader, is stored in order. When an
/// acknowledgement does not come (no leader, a reconnection), the first
/// event not acknowledged is sent again, alone, until the stream stores it
/// (or already had it: its id is not stored twice); only then do the ones
/// behind it go out again, in order. Sending them all again at once would
/// let a new leader, elected while they were on their way, store the later
/// ones while the earlier ones were dropped for want of a leader: one
/// server's events out of order.
pub async fn publisher(link: Arc<Link>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Submitted>) {
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut backoff = Duration::from_millis(50);
    // Since a failure: only the window's first event is out.
    let mut recovering = false;
    loop {
        if window.is_empty() {
            let Some(event) = queue.recv().await else { return };
            if event.is_withdrawn() {
                event.answer_withdrawn();
                continue;
            }
            window.push_back(link.send(event).await);
        }
        // Everything submitted meanwhile goes out before the next wait,
        // unless the events before it are not known to be stored.
        while !recovering && window.len() < WINDOW {
            let Ok(event) = queue.try_recv() else { break };
            if event.is_withdrawn() {
                event.answer_withdrawn();
                continue;
            }
            window.push_back(link.send(event).await);
        }
        let front = window.front_mut().expect("not empty");
        let answer = match front.ack.take() {
            Some(ack) => tokio::time::timeout_at(front.deadline, ack).await.ok().and_then(Result::ok),
            None => None,
        };
        if let Some(ack) = answer {
            let done = window.pop_front().expect("not empty");
            let _ = done.event.answer.send(Ok(ack.sequence));
            backoff = Duration::from_millis(50);
            if std::mem::take(&mut recovering) {
                // The stream stores again, the first of the rest behind
                // what it just stored.
                drop_withdrawn(&mut window);
                for in_flight in &mut window {
                    in_flight.ack = link.send_again(&in_flight.event).await;
                }
            }
            continue;
        }
        // Past its deadline: given up, and said so; the others go on.
        let now = tokio::time::Instant::now();
        while window.front().is_some_and(|f| f.deadline <= now) {
            let late = window.pop_front().expect("not empty");
            let what = format!("stream {} to store the event ({}s)", link.stream, late.event.timeout.as_secs_f32());
            let _ = late.event.answer.send(Err(Error::Timeout(link.failing(what))));
        }
        drop_withdrawn(&mut window);
        if window.is_empty() {
            continue;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
        recovering = true;
        if let Some(front) = window.front_mut() {
            front.ack = link.send_again(&front.event).await;
        }
    }
}

/// Drops the events whose senders were sent away: sending them again could
/// store them after their sender said them again elsewhere.
fn drop_withdrawn(window: &mut VecDeque<InFlight>) {
    window.retain(|in_flight| {
        let keep = !in_flight.event.is_withdrawn();
        if !keep {
            in_flight.event.answer_withdrawn();
        }
        keep
    });
}

/// How many events may be out without their acknowledgement.
const WINDOW: usize = 4096;

type AckFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>>
            + Send,
    >,
>;

/// An event sent, and its acknowledgement to come.
struct InFlight {
    event: Submitted,
    deadline: tokio::time::Instant,
    /// `None` when it could not even be sent.
    ack: Option<AckFuture>,
}

impl Link {
    async fn send(&self, event: Submitted) -> InFlight {
        let deadline = tokio::time::Instant::now() + event.timeout;
        let ack = self.send_again(&event).await;
        InFlight { event, deadline, ack }
    }

    async fn send_again(&self, event: &Submitted) -> Option<AckFuture> {
        // While the connection is down, async-nats would queue the event
        // and send it once reconnected, whatever happened meanwhile (its
        // sender sent away, events behind it sent again first): it is not
        // sent, and goes out again from the window once NATS answers.
        let connected = self.js.client().connection_state() == async_nats::connection::State::Connected;
        if !connected || event.is_withdrawn() {
            return None;
        }
        let message =
            jetstream::message::PublishMessage::build().payload(event.line.clone().into()).message_id(&event.id);
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, self.js.send_publish(self.subject.clone(), message)).await;
        match sent {
            Ok(Ok(ack)) => Some(Box::pin(ack.into_future())),
            _ => None,
        }
    }

    /// What an event waits for, with the connection's state.
    fn failing(&self, what: String) -> String {
        if self.status.get().connected {
            what
        } else {
            format!("{what}; the connection to NATS is lost, reconnecting")
        }
    }
}

/// Writes this server's heartbeat every period, for as long as the bridge
/// runs. A failed one is tried again at the next period.
pub async fn heartbeat(link: Arc<Link>) {
    let mut ticks = tokio::time::interval(link.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let _ = tokio::time::timeout(link.period, link.beat()).await;
    }
}

/// Delivers the stream from `next` on to `sink`, until its receiver is
/// gone.
pub async fn follow(link: Arc<Link>, from: u64, sink: mpsc::Sender<Delivery>) {
    let mut cursor = Cursor::new(link, from);
    loop {
        let expected = cursor.next;
        let (event, id) = cursor.next_event().await;
        if event.seq > expected && sink.send(Delivery::Missed { from: expected, to: event.seq - 1 }).is_err() {
            return;
        }
        if sink.send(Delivery::Event { event, id }).is_err() {
            return;
        }
    }
}

/// Sends the events `from..=to` to `chunks`, in chunks, riding out an
/// outage of up to `READ_PATIENCE` between two events.
pub async fn replay(link: Arc<Link>, from: u64, to: u64, chunks: tokio::sync::mpsc::Sender<Result<Vec<Event>, Error>>) {
    let mut cursor = Cursor::new(link, from);
    let mut chunk = Vec::with_capacity(CHUNK);
    while cursor.next <= to {
        let Ok((event, _)) = tokio::time::timeout(READ_PATIENCE, cursor.next_event()).await else {
            let what = format!("event {} of the room's stream ({}s)", cursor.next, READ_PATIENCE.as_secs());
            let _ = chunks.send(Err(Error::Timeout(what))).await;
            return;
        };
        if event.seq > to {
            break;
        }
        chunk.push(event);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if chunks.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.send(Ok(chunk)).await;
    }
}

/// How long a replay waits for its next event: a leader election on
/// nats-server 2.9 can take about 30 s.
const READ_PATIENCE: Duration = Duration::from_secs(45);

/// Reads the stream in order from a position, through outages: an ordered
/// consumer, made again from the next position wanted whenever it fails or
/// the connection was lost since it was made (a restarted NATS, a new
/// stream leader), so nothing is read twice or skipped.
struct Cursor {
    link: Arc<Link>,
    /// The position wanted next.
    next: u64,
    /// The consumer's messages, and the connection's losses when it was
    /// made.
    messages: Option<(consumer::pull::Ordered, u64)>,
    backoff: Duration,
    /// Since when nothing came.
    idle_since: Instant,
    /// How many times in a row a consumer skipped the position wanted.
    skips: u32,
}

/// How long a cursor waits for an event the stream has before it makes
/// its consumer again.
const STUCK_AFTER: Duration = Duration::from_secs(3);

impl Cursor {
    fn new(link: Arc<Link>, from: u64) -> Cursor {
        Cursor {
            link,
            next: from.max(1),
            messages: None,
            backoff: Duration::from_millis(100),
            idle_since: Instant::now(),
            skips: 0,
        }
    }

    /// The next event kept at or after `next`, and the id it was published
    /// with; waits as long as it takes.
    async fn next_event(&mut self) -> (Event, Option<String>) {
        loop {
            let losses = self.link.status.get().losses;
            if self.messages.as_ref().is_some_and(|(_, made)| *made != losses) {
                self.messages = None;
            }
            let messages = match &mut self.messages {
                Some((messages, _)) => messages,
                None => match self.link.messages(self.next).await {
                    Ok(messages) => {
                        self.idle_since = Instant::now();
                        &mut self.messages.insert((messages, losses)).0
                    }
                    Err(_) => {
                        self.wait().await;
                        continue;
                    }
                },
            };
            // Idle a second at most, to look at the connection again.
            match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                Ok(Some(Ok(message))) => {
                    let Ok(info) = message.info() else {
                        self.messages = None;
                        continue;
                    };
                    let seq = info.stream_sequence;
                    if seq < self.next {
                        continue;
                    }
                    // A consumer that skips a position the stream still
                    // keeps (seen once on nats-server 2.9 under load) is
                    // made again from it, a few times, before the gap is
                    // taken for real.
                    if seq > self.next && self.skips < 3 {
                        let kept = tokio::time::timeout(REQUEST_TIMEOUT, self.link.kept()).await;
                        if kept.is_ok_and(|kept| kept.is_ok_and(|kept| kept.first <= self.next)) {
                            self.skips += 1;
                            self.messages = None;
                            continue;
                        }
                    }
                    self.skips = 0;
                    self.next = seq + 1;
                    self.idle_since = Instant::now();
                    self.backoff = Duration::from_millis(100);
                    let time_ms = ms_of(info.published.unix_timestamp_nanos());
                    let id =
                        message.headers.as_ref().and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID));
                    let event = Event { seq, time_ms, line: message.payload.to_vec() };
                    return (event, id.map(|id| id.as_str().to_owned()));
                }
                Ok(_) => {
                    self.messages = None;
                    self.wait().await;
                }
                // Idle: a consumer lost with its node is only noticed by
                // async-nats after two missed heartbeats (30 s). When the
                // stream has what this one has not delivered for a while,
                // it is stuck: make another, from where it was.
                Err(_) if self.idle_since.elapsed() >= STUCK_AFTER => {
                    self.idle_since = Instant::now();
                    // No answer within a second: make another all the same.
                    let kept = tokio::time::timeout(Duration::from_secs(1), self.link.kept()).await;
                    if !kept.is_ok_and(|kept| kept.is_ok_and(|kept| kept.last < self.next)) {
                        self.messages = None;
                    }
                }
                Err(_) => {}
            }
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }
}

/// Finds a key-value bucket keeping one value a key, or makes it.
///
/// The bucket's stream is made here, as `create_key_value` would make it:
/// that one asks for the account's information first, whose answer from
/// nats-server 2.9 async-nats 0.46 cannot read.
async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    options: &Options,
) -> anyhow::Result<kv::Store> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        // At most the age: the server refuses a longer one.
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config).await?;
    Ok(js.get_key_value(bucket).await?)
}

/// Tries `step` until it succeeds or the deadline passes (a fresh cluster
/// elects its leaders first and learns which nodes can hold a stream); at
/// once when waiting cannot help: JetStream is not there at all, or a single
/// server is asked for more than one replica.
async fn retry<T, E, F, Fut>(urls: &str, what: &str, deadline: Instant, mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match step().await {
            Ok(value) => return Ok(value),
            Err(e) => e.to_string(),
        };
        let lower = error.to_lowercase();
        if lower.contains("no responders")
            || lower.contains("not enabled")
            || lower.contains("unavailable") && !lower.contains("temporarily")
        {
            anyhow::bail!(
                "NATS at {urls} has no JetStream ({error}): start it with `nats-server -js` (a cluster's nodes each with -js)"
            );
        }
        if lower.contains(&error_code(jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED)) {
            anyhow::bail!(
                "NATS at {urls} is a single server, which keeps a room on one node only ({error}): \
                 run chatd with --replicas 1, or give --cluster the nodes of a NATS cluster"
            );
        }
        if Instant::now() + backoff > deadline {
            if lower.contains(&error_code(jetstream::ErrorCode::CLUSTER_NO_PEERS)) {
                anyhow::bail!(
                    "NATS at {urls}: cannot set up {what}: {error}: fewer JetStream nodes of one cluster are up \
                     than the room's --replicas; start every node with -js and routes to the others \
                     (`nats server report jetstream` lists those it sees), or run chatd with a smaller --replicas"
                );
            }
            anyhow::bail!("NATS at {urls}: cannot set up {what}: {error}");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// How async-nats writes a JetStream error's code in its message.
fn error_code(code: jetstream::ErrorCode) -> String {
    format!("error code {}", code.0)
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Failed(format!("cannot {what}: {e}"))
}

/// Milliseconds since the epoch, from a timestamp's nanoseconds.
pub fn ms_of(nanos: i128) -> u64 {
    u64::try_from(nanos / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_one_token_of_a_subject() {
        for good in ["lobby", "team-2", "a_b", &"x".repeat(64)] {
            assert!(check_room(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a b", "a*", ">", "é", &"x".repeat(65)] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_become_milliseconds() {
        assert_eq!(ms_of(1_700_000_000_123_456_789), 1_700_000_000_123);
        assert_eq!(ms_of(-5), 0);
    }
}
