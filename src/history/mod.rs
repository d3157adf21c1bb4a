//! The room's history: one interface for the log of events the room keeps,
//! with an implementation per backend, chosen once at start-up. The room
//! appends to it under its lock, in order; nothing else in the server knows
//! which one it has.
//!
//! - [`Forgetful`] keeps nothing (`chatd --history 0`): positions still count,
//!   in a new epoch each run, as version 1 servers did without them.
//! - `disk` keeps the latest events on disk, across restarts, in
//!   `store::Store`.
//! - [`Stream`] is a room's NATS JetStream stream (`chatd --cluster`),
//!   shared by every server: it gives the positions, and the room appends
//!   what came back from it.

mod disk;
mod stream;

pub use stream::Stream;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What `chatd`'s options say of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the store lives.
    pub dir: PathBuf,
    /// How many of the latest events are kept; 0 for none, and no store.
    pub keep: u64,
    pub sync: SyncPolicy,
}

/// When the store's writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncPolicy {
    /// Flushed at least every second: a power cut loses at most about a
    /// second, `kill -9` nothing that was acknowledged.
    EverySecond,
    /// Flushed before every event is sent or acknowledged (in batches).
    Always,
}

/// A history opened at start-up, and what the log says of it.
#[derive(Debug)]
pub struct Opened {
    pub history: Arc<dyn History>,
    /// Who was still in the room when the last run ended.
    pub present: Vec<String>,
    /// Where the history is, for the start-up line; `None` when nothing is
    /// kept.
    pub place: Option<String>,
    /// For the log: what was repaired.
    pub warnings: Vec<String>,
}

/// Opens the history `config` asks for, with room kept back for the
/// leaving of up to `members` members.
pub fn open(config: &Config, members: usize) -> anyhow::Result<Opened> {
    if config.keep > 0 {
        return disk::open(config, members);
    }
    let history = Arc::new(Forgetful::new()?);
    Ok(Opened { history, present: Vec::new(), place: None, warnings: Vec::new() })
}

/// The start-up line about the history: where it is and how much of it
/// there is.
pub fn summary(history: &dyn History, place: Option<&str>) -> String {
    match place {
        Some(place) => format!("history: {} events {place}", history.last_seq() + 1 - history.first_kept()),
        None => format!("history: off (--history 0): nothing is kept; epoch {}", history.epoch()),
    }
}

/// One event as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    /// The version 1 wire line, `\n` included.
    pub line: Vec<u8>,
}

/// Why an event was not appended.
#[derive(Debug)]
pub enum NotStored {
    /// No room on the disk; try again later.
    Full(io::Error),
    /// Any other failure to store.
    Failed(io::Error),
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotStored::Full(e) => write!(f, "the server's disk is full ({e})"),
            NotStored::Failed(e) => write!(f, "the server cannot store it ({e})"),
        }
    }
}

/// Reads stored events in order, a chunk at a time, so that a long replay
/// never sits in memory whole.
pub trait Replay: Send + fmt::Debug {
    /// Appends up to `max` events to `out`; `Ok(false)` once done.
    fn next_chunk(&mut self, out: &mut Vec<Event>, max: usize) -> io::Result<bool>;
}

pub trait History: Send + Sync + fmt::Debug {
    /// The name of this history: positions are `<epoch>:<seq>`.
    fn epoch(&self) -> &str;
    /// The position of the last event kept or appended, 0 for none.
    fn last_seq(&self) -> u64;
    /// The time of the last event, 0 for none: times never go backwards.
    fn last_time_ms(&self) -> u64;
    /// The first position still kept; `last_seq() + 1` when none is.
    fn first_kept(&self) -> u64;
    /// Appends the next event (its `seq` is `last_seq() + 1`). Called with
    /// the room locked, so it must be quick. An `urgent` event (a member
    /// leaving) cannot be refused and may use room kept back for it.
    fn append(&self, seq: u64, time_ms: u64, line: &[u8], urgent: bool) -> Result<(), NotStored>;
    /// Every event before this position is safe: handed to the operating
    /// system, or on disk, as the server was told. Nobody is sent an event
    /// before it is safe. By default every event is safe once appended.
    fn durable(&self) -> u64 {
        u64::MAX
    }
    /// Makes every event up to `seq` safe, now.
    fn make_durable(&self, _seq: u64) -> io::Result<()> {
        Ok(())
    }
    /// The events `from..=to`, which must be safe.
    fn read(&self, from: u64, to: u64) -> io::Result<Box<dyn Replay>>;
    /// Puts everything appended on the disk: at shutdown.
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The history of `--history 0`: nothing is kept.
#[derive(Debug)]
pub struct Forgetful {
    epoch: String,
    last: AtomicU64,
    last_time: AtomicU64,
}

impl Forgetful {
    pub fn new() -> io::Result<Forgetful> {
        Ok(Forgetful { epoch: random_word(16)?, last: AtomicU64::new(0), last_time: AtomicU64::new(0) })
    }
}

impl History for Forgetful {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn last_seq(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    fn last_time_ms(&self) -> u64 {
        self.last_time.load(Ordering::SeqCst)
    }

    fn first_kept(&self) -> u64 {
        self.last_seq() + 1
    }

    fn append(&self, seq: u64, time_ms: u64, _: &[u8], _: bool) -> Result<(), NotStored> {
        self.last.store(seq, Ordering::SeqCst);
        self.last_time.store(time_ms, Ordering::SeqCst);
        Ok(())
    }

    fn read(&self, _: u64, _: u64) -> io::Result<Box<dyn Replay>> {
        Ok(Box::new(NothingKept))
    }
}

#[derive(Debug)]
struct NothingKept;

impl Replay for NothingKept {
    fn next_chunk(&mut self, _: &mut Vec<Event>, _: usize) -> io::Result<bool> {
        Ok(false)
    }
}

/// `len` random ASCII letters and digits, from the kernel's generator: for
/// epochs and membership tokens (16 letters of 62 carry 95 bits; tokens use
/// 24, 142 bits).
pub fn random_word(len: usize) -> io::Result<String> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut word = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    while word.len() < len {
        io::Read::read_exact(&mut urandom, &mut bytes)?;
        // 248 is the largest multiple of 62 under 256: no letter is likelier.
        word.extend(bytes.iter().filter(|&&b| b < 248).map(|&b| ALPHABET[usize::from(b % 62)] as char));
    }
    word.truncate(len);
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_words_are_alphanumeric_and_differ() {
        let (a, b) = (random_word(24).unwrap(), random_word(24).unwrap());
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn forgetful_keeps_positions_but_no_events() {
        let history = Forgetful::new().unwrap();
        assert_eq!((history.last_seq(), history.first_kept()), (0, 1));
        history.append(1, 10, b"JOINED Ana\n", false).unwrap();
        assert_eq!((history.last_seq(), history.first_kept(), history.last_time_ms()), (1, 2, 10));
        let mut out = Vec::new();
        assert!(!history.read(1, 1).unwrap().next_chunk(&mut out, 10).unwrap());
        assert!(out.is_empty());
    }
}
