//! A membership of the room that outlives its connections. It joins with
//! tags on, keeps the epoch, the token of the last `OK JOIN` and the
//! position of the last event seen; when the connection is lost (not after
//! our own `EXIT`) it reconnects with backoff and resumes with
//! `SINCE <last seen> TOKEN <token>`, so nothing is shown twice and nothing
//! is missed without saying so. The messages it says are kept until
//! confirmed (`pending`), and sent again after a resume exactly when the
//! server did not take them.
//!
//! With several servers for the room (`--server a:5000,b:5000`), each try
//! goes round the list, starting with the server after the one just lost,
//! and resumes on whichever answers.
//!
//! One thread drives it: `next` waits for the server and, through `poll`,
//! for one more descriptor the caller watches.

use std::io;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::backoff::Backoff;
use super::pending::Pending;
use super::{
    give_password, join, servers, wait, Arrival, ClientError, Joined, Receiver, Sender, Watch, CONNECT_TIMEOUT,
};
use crate::protocol::{ByeReason, ErrorCode, Join, Position, Replay, Request, ServerLine, Tags};

/// A room event with where and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The history its position belongs to (absent only from a version 1 server).
    pub epoch: Option<String>,
    /// Its position in the room's order (absent only from a version 1 server).
    pub seq: Option<u64>,
    /// When the server accepted it, RFC 3339, as the server wrote it.
    pub time: Option<String>,
    pub line: ServerLine,
    /// It happened before this membership's join: history.
    pub replayed: bool,
}

/// What `Membership::next` has to tell.
#[derive(Debug)]
pub enum News {
    Event(Event),
    /// Events asked for are no longer kept: `count` of them right after the
    /// position asked, or `None` when the room's history is no longer the
    /// one of `epoch`, so nobody can say how many.
    Missed {
        count: Option<u64>,
        epoch: String,
    },
    /// The replay asked for at the first join is all in; what comes now is live.
    Live,
    /// The connection was lost (why, for people); reconnecting.
    Lost(String),
    /// The server confirmed messages said (`Membership::unconfirmed` is less).
    Confirmed,
    /// Reconnected, and what happened meanwhile is all in; `resent`
    /// messages that the server had not taken went out again.
    Resumed {
        resent: usize,
    },
    /// A reply for the caller: `NAMES`, an `ERR`, a `PONG` it asked for.
    Reply(ServerLine),
    /// The watched descriptor reported these events.
    Watched(PollFlags),
    /// The time given to `next_until` passed first.
    TimeUp,
    /// The server said `BYE exit` after `leave`.
    Left,
}

/// How to behave when the connection is lost.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The servers of the room, each `HOST[:PORT]`, tried in this order.
    pub servers: Vec<String>,
    /// How long to keep trying to reconnect; `None` never tries.
    pub retry_for: Option<Duration>,
    /// The room's password, given on every connection.
    pub password: Option<crate::password::Password>,
}

enum Link {
    Up {
        sender: Sender,
        receiver: Receiver,
    },
    Down {
        backoff: Backoff,
        why: ClientError,
        last: Option<ClientError>,
    },
    /// Given up: nothing more will come.
    Closed,
}

/// The replay after a join, up to the `PONG` of the `PING` sent after it.
#[derive(Debug)]
struct Replaying {
    token: String,
    /// What was asked: `SINCE` this position, if it was.
    asked: Option<Position>,
    /// The join's position: events up to it are history, after it live.
    joined: u64,
    /// Events up to here were shown already (on a resume).
    shown: u64,
    /// A resume: our own events are ours to count, not to show, until the
    /// room says we left.
    resume: bool,
    own_left: bool,
}

pub struct Membership {
    settings: Settings,
    /// Where in `settings.servers` the server of the last connection is.
    at: usize,
    /// That server, as `HOST:PORT`.
    server: String,
    name: String,
    epoch: Option<String>,
    token: Option<String>,
    /// The position of the last event seen.
    seen: u64,
    link: Link,
    replaying: Option<Replaying>,
    pending: Pending,
    /// A refusal came that could not be pinned to one message: a replay
    /// cannot say which were taken.
    doubtful: bool,
    leaving: bool,
    pings: u64,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("name", &self.name).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Membership {
    /// Takes over a connection that `client::join` just joined; `asked` is
    /// the `SINCE` position of that join, if any.
    pub fn start(
        (sender, receiver): (Sender, Receiver),
        joined: Joined,
        asked: Option<Position>,
        settings: Settings,
    ) -> Result<Membership, ClientError> {
        let seq = joined.seq.unwrap_or(0);
        let server = receiver.server().to_owned();
        let mut membership = Membership {
            at: servers::position(&settings.servers, &server),
            server,
            settings,
            name: joined.name,
            epoch: joined.epoch,
            token: joined.token,
            seen: seq,
            link: Link::Up { sender, receiver },
            replaying: None,
            pending: Pending::new(seq),
            doubtful: false,
            leaving: false,
            pings: 0,
        };
        membership.begin_replay(seq, asked, false)?;
        Ok(membership)
    }

    /// The name as the server stored it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server of the last connection, as `HOST:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether `leave` was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Whether every message said was confirmed by the server.
    pub fn all_confirmed(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many messages said are not confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.pending.len()
    }

    /// The note of the last message confirmed, as given to `say`.
    pub fn confirmed_note(&self) -> Option<u64> {
        self.pending.confirmed_note()
    }

    /// Says `text` (checked by the caller); `note` comes back from
    /// `confirmed_note`. While disconnected it waits, and goes out once
    /// reconnected, after what went before it.
    pub fn say(&mut self, text: &str, note: u64) {
        self.pending.push(note, text);
        if matches!(self.link, Link::Up { .. }) && self.replaying.as_ref().is_none_or(|r| !r.resume) {
            self.pending.all_written();
            self.send(&Request::Msg(text));
        }
    }

    /// Sends a `PING` after what was said, if anything was since the last:
    /// its `PONG` confirms it.
    pub fn checkpoint(&mut self) {
        if matches!(self.link, Link::Up { .. }) && self.pending.needs_ping() {
            self.pings += 1;
            let token = format!("sent-{}", self.pings);
            self.send(&Request::Ping(Some(&token)));
            self.pending.pinged(token);
        }
    }

    /// Asks who is in the room (nothing while disconnected).
    pub fn names(&mut self) {
        self.send(&Request::Names);
    }

    /// Sends what was queued.
    pub fn flush(&mut self) {
        if let Link::Up { sender, .. } = &mut self.link {
            // A failed write shows again, and better explained, on reading.
            let _ = sender.flush();
        }
    }

    /// Says `EXIT`: `next` brings the events before it, then `Left`, or an
    /// error when the server does not answer within `patience`. A lost
    /// connection is not resumed any more.
    pub fn leave(&mut self, patience: Duration) {
        self.leaving = true;
        if let Link::Up { sender, receiver } = &mut self.link {
            let _ = sender.send(&Request::Exit).and_then(|()| sender.flush());
            let _ = receiver.set_patience(Some(patience));
        }
    }

    fn send(&mut self, request: &Request<'_>) {
        if let Link::Up { sender, .. } = &mut self.link {
            let _ = sender.send(request);
        }
    }

    /// The next thing to tell: an event, a reply, a lost or resumed
    /// connection, or what `watch` reported. An error is final: the server
    /// said goodbye for good, refused to take us back, or did not come back
    /// in time.
    pub fn next(&mut self, watch: Option<Watch<'_>>) -> Result<News, ClientError> {
        self.next_until(watch, None)
    }

    /// As `next`, or `TimeUp` once `until` has passed with nothing to tell.
    pub fn next_until(&mut self, watch: Option<Watch<'_>>, until: Option<Instant>) -> Result<News, ClientError> {
        let news = self.wait_for_news(watch, until);
        if news.is_err() {
            // Final: nothing more goes out, and nothing more comes in.
            self.link = Link::Closed;
        }
        news
    }

    fn wait_for_news(&mut self, watch: Option<Watch<'_>>, until: Option<Instant>) -> Result<News, ClientError> {
        loop {
            match &mut self.link {
                Link::Up { receiver, .. } => match receiver.next(watch, until) {
                    Ok(Arrival::Watched(events)) => return Ok(News::Watched(events)),
                    Ok(Arrival::TimeUp) => return Ok(News::TimeUp),
                    Ok(Arrival::Line(tags, line)) => {
                        if let Some(news) = self.take(tags, line)? {
                            return Ok(news);
                        }
                    }
                    Err(ClientError::Protocol(_)) => {} // a later extension: ignored
                    Err(e) => return self.lost(e),
                },
                Link::Closed => {
                    let detail = "the connection was closed after an error".into();
                    return Err(ClientError::Lost { server: self.server.clone(), detail });
                }
                // Leaving needs no new connection.
                Link::Down { .. } if self.leaving => return Err(self.give_up()),
                Link::Down { backoff, .. } => {
                    let Some(due) = backoff.due() else { return Err(self.give_up()) };
                    let now = Instant::now();
                    if until.is_some_and(|until| now >= until) {
                        return Ok(News::TimeUp);
                    }
                    if now < due {
                        let wake = until.map_or(due, |until| until.min(due));
                        let ready = wait::wait(None, watch, Some(wake - now)).map_err(ClientError::from)?;
                        if let Some(events) = ready.watched {
                            return Ok(News::Watched(events));
                        }
                        continue;
                    }
                    match self.reconnect(due) {
                        Ok(()) => {}
                        Err(e) if retryable(&e) => {
                            if let Link::Down { backoff, last, .. } = &mut self.link {
                                backoff.failed(Instant::now());
                                *last = Some(e);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn give_up(&mut self) -> ClientError {
        let Link::Down { backoff, why, last } = std::mem::replace(&mut self.link, Link::Closed) else {
            unreachable!("only a link that is down is given up")
        };
        ClientError::GaveUp { why: Box::new(why), last: last.map(Box::new), after: backoff.since(Instant::now()) }
    }

    /// The connection ended under us: reconnect, unless we were leaving or
    /// are not to.
    fn lost(&mut self, why: ClientError) -> Result<News, ClientError> {
        let Some(retry_for) = self.settings.retry_for.filter(|_| !self.leaving) else { return Err(why) };
        self.pending.connection_lost();
        self.replaying = None;
        let news = News::Lost(why.to_string());
        self.link = Link::Down { backoff: Backoff::new(Instant::now(), retry_for), why, last: None };
        Ok(news)
    }

    /// One try at a new connection, resuming where we were: round the
    /// servers, the one lost last.
    fn reconnect(&mut self, due: Instant) -> Result<(), ClientError> {
        let until = match &self.link {
            Link::Down { backoff, .. } => {
                Some(due + self.settings.retry_for.unwrap_or_default().saturating_sub(backoff.since(due)))
            }
            _ => None,
        };
        let order = servers::after(self.settings.servers.len(), self.at);
        let (at, mut sender, mut receiver) =
            servers::connect_first(&self.settings.servers, order, CONNECT_TIMEOUT, until)?;
        (self.at, self.server) = (at, receiver.server().to_owned());
        give_password(&mut sender, &mut receiver, self.settings.password.as_ref())?;
        let from = if self.pending.is_empty() { self.seen } else { self.seen.min(self.pending.since()) };
        let asked = self.epoch.clone().map(|epoch| Position { epoch, seq: from });
        let replay = asked.as_ref().map_or(Replay::Last(0), |p| Replay::Since(p.as_ref()));
        let request = Join { name: &self.name, replay, token: self.token.as_deref() };
        let joined = join(&mut sender, &mut receiver, &request)?;
        self.token = joined.token.or(self.token.take());
        self.epoch = joined.epoch.or(self.epoch.take());
        self.link = Link::Up { sender, receiver };
        self.begin_replay(joined.seq.unwrap_or(0), asked, true)
    }

    /// Sends the `PING` whose `PONG` ends the replay of a join.
    fn begin_replay(&mut self, joined: u64, asked: Option<Position>, resume: bool) -> Result<(), ClientError> {
        self.pings += 1;
        let token = format!("joined-{}", self.pings);
        let Link::Up { sender, receiver } = &mut self.link else { unreachable!("just joined") };
        receiver.set_patience(None)?;
        sender.send(&Request::Ping(Some(&token)))?;
        sender.flush()?;
        let shown = if resume { self.seen } else { 0 };
        self.replaying = Some(Replaying { token, asked, joined, shown, resume, own_left: false });
        Ok(())
    }

    /// What a line from the server means for the caller, if anything.
    fn take(&mut self, tags: Tags, line: ServerLine) -> Result<Option<News>, ClientError> {
        Ok(match line {
            ServerLine::Msg { .. } | ServerLine::Joined(_) | ServerLine::Left { .. } => self.event(tags, line)?,
            ServerLine::Missed(count) => Some(self.missed(count)?),
            ServerLine::Pong(Some(token)) => Some(self.pong(token, tags.seq)),
            ServerLine::Bye(ByeReason::Exit) if self.leaving => Some(News::Left),
            ServerLine::Bye(reason @ (ByeReason::Exit | ByeReason::Replaced)) => {
                return Err(ClientError::Bye { server: self.server.clone(), reason });
            }
            ServerLine::Bye(reason) => {
                let why = ClientError::Bye { server: self.server.clone(), reason };
                Some(self.lost(why)?)
            }
            ServerLine::Err(refusal) => {
                if is_about_a_message(refusal.code) && !self.pending.refused() {
                    self.doubtful = true;
                }
                Some(News::Reply(ServerLine::Err(refusal)))
            }
            ServerLine::OkTags | ServerLine::Hello { .. } | ServerLine::OkJoin(_) => None,
            other => Some(News::Reply(other)),
        })
    }

    fn event(&mut self, tags: Tags, line: ServerLine) -> Result<Option<News>, ClientError> {
        let seq = tags.seq;
        let position = seq.unwrap_or(self.seen + 1);
        let replayed = self.replaying.as_ref().is_some_and(|r| position <= r.joined);
        if replayed {
            let me = about(&line) == Some(self.name.as_str());
            let r = self.replaying.as_mut().expect("a replay is under way");
            // On a resume, our own events are what we did: counted, not shown.
            if r.resume && me && !r.own_left {
                r.own_left = matches!(line, ServerLine::Left { .. });
                if let ServerLine::Msg { text, .. } = &line {
                    if let Err(mismatch) = self.pending.replayed(position, text) {
                        return Err(self.unsure(mismatch.0));
                    }
                }
                return Ok(None);
            }
            if position <= r.shown {
                return Ok(None);
            }
        }
        self.seen = self.seen.max(position);
        Ok(Some(News::Event(Event { epoch: self.epoch.clone(), seq, time: tags.time, line, replayed })))
    }

    fn missed(&mut self, count: Option<u64>) -> Result<News, ClientError> {
        let asked = self.replaying.as_ref().and_then(|r| r.asked.clone());
        let epoch = asked.as_ref().map_or_else(String::new, |p| p.epoch.clone());
        let resume = self.replaying.as_ref().is_some_and(|r| r.resume);
        // The doubtful messages are after `pending.since()`: are they gone?
        let gone_to = match (count, &asked) {
            (Some(n), Some(p)) => Some(p.seq + n),
            _ => None,
        };
        let lost_ours = gone_to.is_none_or(|to| to > self.pending.since());
        if resume && !self.pending.is_empty() && lost_ours {
            let what = match count {
                Some(n) => format!(
                    "the server no longer keeps {n} events after position {epoch}:{}",
                    asked.map_or(0, |p| p.seq)
                ),
                None => format!("the server's history is no longer the one of {epoch}"),
            };
            return Err(self.unsure(what));
        }
        if count.is_none() {
            // A new history: its positions are new to us.
            self.seen = 0;
            if let Some(r) = &mut self.replaying {
                r.shown = 0;
            }
        }
        Ok(News::Missed { count, epoch })
    }

    /// A `PONG`: the end of a join's replay, a confirmation of messages
    /// said, or the caller's own.
    fn pong(&mut self, token: String, seq: Option<u64>) -> News {
        if self.replaying.as_ref().is_some_and(|r| r.token == token) {
            self.replay_done()
        } else if self.pending.ponged(&token, seq) {
            News::Confirmed
        } else {
            News::Reply(ServerLine::Pong(Some(token)))
        }
    }

    /// The `PONG` after a join came: the replay is all in.
    fn replay_done(&mut self) -> News {
        let Some(replaying) = self.replaying.take() else { return News::Live };
        if !replaying.resume {
            return News::Live;
        }
        let resent = self.pending.resumed(replaying.joined);
        let lines: Vec<String> = self.pending.unwritten().map(str::to_owned).collect();
        for text in &lines {
            self.send(&Request::Msg(text));
        }
        self.pending.all_written();
        self.checkpoint();
        self.flush();
        News::Resumed { resent }
    }

    fn unsure(&self, why: String) -> ClientError {
        ClientError::Unsure {
            server: self.server.clone(),
            unconfirmed: self.pending.len(),
            why: if self.doubtful {
                format!("{why}; and the server refused a message it cannot be told which")
            } else {
                why
            },
        }
    }
}

/// The name an event is about: the sender, who joined, who left.
fn about(line: &ServerLine) -> Option<&str> {
    match line {
        ServerLine::Msg { from, .. } => Some(from),
        ServerLine::Joined(name) | ServerLine::Left { name, .. } => Some(name),
        _ => None,
    }
}

/// Whether an `ERR` with this code answers a `MSG`.
fn is_about_a_message(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Empty | ErrorCode::BadText | ErrorCode::TooLong | ErrorCode::BadEncoding | ErrorCode::Unavailable
    )
}

/// Whether a failed reconnection is worth another try: the server may be
/// restarting, full for now, or its disk full for now. A name taken by
/// someone else, or a server that refuses the join, is final.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::NotChatd { .. } | ClientError::Full { .. } => true,
        ClientError::NoServer(_) => true,
        ClientError::Lost { .. } => true,
        ClientError::Bye { reason, .. } => !matches!(reason, ByeReason::Replaced),
        ClientError::Refused(refusal) => {
            matches!(refusal.code, ErrorCode::Unavailable | ErrorCode::Full | ErrorCode::Timeout)
        }
        _ => false,
    }
}

impl From<nix::errno::Errno> for ClientError {
    fn from(e: nix::errno::Errno) -> ClientError {
        io::Error::from(e).into()
    }
}
