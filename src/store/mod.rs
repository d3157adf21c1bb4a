//! The room's history on disk: an append-only log of events, in segment
//! files, the oldest deleted whole once they fall out of the kept range.
//!
//! # On disk
//!
//! The data directory `DIR` (mode 0700) holds:
//!
//! - `lock`: `flock`ed while a store has the directory open; it holds that
//!   process's pid, for the message a second chatd gets.
//! - `epoch`: the history's name, 16 random letters and digits and a
//!   newline, made (from /dev/urandom) when the directory holds no history.
//!   The same seq in another epoch is another event.
//! - `<first seq, 20 digits>.log`: the segments, e.g.
//!   `00000000000000000001.log`. Each is the 8 bytes `MCHATLG1`, then
//!   records back to back, every integer little-endian:
//!
//!   ```text
//!   len u32 (payload bytes) | crc32 u32 of (seq, time_ms, payload) | seq u64 | time_ms u64 | payload
//!   ```
//!
//!   A record takes 24 bytes plus its line. Seqs run 1, 2, 3… without a gap,
//!   across segments too: a segment's first record has the seq its name
//!   says. A new segment is started once the current one passes
//!   `segment_bytes`.
//!
//! Disk space is reserved (`fallocate`, keeping the file size) ahead of the
//! writes, so a full disk shows at `append`, which refuses the event,
//! never while writing one already accepted. Where the filesystem cannot
//! preallocate, records are just written.
//!
//! # Crashes
//!
//! Records reach the file in order, so a crash can only tear the end of the
//! last segment: `open` cuts a record there that is incomplete, or whose
//! checksum fails with nothing but zeros after it, and says so in
//! [`Recovery::cut`]. Any other damage — a bad checksum with data after it,
//! a wrong seq, a missing segment, a file that is not a segment — stops
//! `open` with an error naming the file and the offset.
//!
//! # Memory
//!
//! Never the events themselves, but those not yet written (at most about
//! 1 MiB: past it `append` writes them out), and an index entry (16 bytes)
//! every 256 records. `open` reads one segment at a time (two at most) with
//! one large read each, checking every record's checksum: a million events
//! take a few tens of milliseconds.
//!
//! # Durability and locking
//!
//! `append` copies the record into memory; a writer (a caller of
//! [`Store::make_durable`], or the store's sync thread, every second) hands
//! everything pending to the OS in one write, and fdatasyncs it. How the
//! locks keep appends from ever waiting for a disk flush is in `log.rs`.

mod boot;
mod epoch;
mod lock;
mod log;
mod reader;
mod record;
mod recover;
mod segment;
mod tail;

use std::fmt;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use anyhow::{bail, Context};
use nix::unistd::{access, AccessFlags};

use self::lock::DirLock;
use self::log::{Log, FLUSH_AT};
pub use self::reader::Reader;
pub use self::record::{scan_segment, scan_segment_with, Damage, SegmentScan, Torn, MAGIC};
use self::segment::Segment;
use self::tail::{Limits, Tail};

/// What the store is opened with.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// How many of the latest events are kept (at least 1).
    pub keep: u64,
    pub sync: SyncPolicy,
    /// Bytes of reserved disk space held back for urgent appends: a member
    /// leaving must be stored even when the disk is full.
    pub reserve: u64,
    /// A new segment is started once the current one passes this size.
    pub segment_bytes: u64,
}

impl Options {
    /// Options for `dir`: a million events kept, synced every second, 64 KiB
    /// held back for urgent appends, segments of 8 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Options {
        Options {
            dir: dir.into(),
            keep: 1_000_000,
            sync: SyncPolicy::EverySecond,
            reserve: 64 << 10,
            segment_bytes: 8 << 20,
        }
    }
}

/// When appended events count as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Once written to the OS; they are fdatasynced within a second. A
    /// crash of the machine may lose that second.
    EverySecond,
    /// Once written and fdatasynced.
    Always,
}

/// An event to store: a finished protocol line, ending in `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub line: &'a [u8],
}

/// An event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub time_ms: u64,
    pub line: Vec<u8>,
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Events readable after open.
    pub events: u64,
    /// For the log: what torn tail was cut (file, offset, bytes), and any
    /// unfinished segment file removed; `None` if nothing was.
    pub cut: Option<String>,
    /// The directory held no history: a new one was started.
    pub new_epoch: bool,
    /// The machine stopped while the store was open (a power cut): the
    /// history was kept, but under a new epoch, since its last second may
    /// be lost (see `boot`).
    pub renamed_after_crash: bool,
}

/// Why an event was not appended.
#[derive(Debug)]
pub enum AppendError {
    /// No room on disk: the event was NOT stored. Space may come back; the
    /// next append tries again.
    Full(io::Error),
    /// The store cannot take events: the disk failed, or it is closed.
    Failed(io::Error),
}

impl AppendError {
    fn from_io(e: io::Error) -> AppendError {
        if segment::is_full(&e) {
            AppendError::Full(e)
        } else {
            AppendError::Failed(e)
        }
    }
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full(e) => write!(f, "no room on disk for the event: {e}"),
            AppendError::Failed(e) => write!(f, "cannot store the event: {e}"),
        }
    }
}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Full(e) | AppendError::Failed(e) => Some(e),
        }
    }
}

/// An open history. Every method takes `&self`; it is shared by the room
/// (which appends, under its own lock) and the threads that send events.
pub struct Store {
    log: Arc<Log>,
    dir: PathBuf,
    epoch: String,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
    _lock: DirLock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("epoch", &self.epoch)
            .field("last_seq", &self.last_seq())
            .field("durable", &self.durable())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the history in `opts.dir`, creating the directory if missing,
    /// and calls `each` for every kept event, in order (if `open` fails,
    /// what `each` saw means nothing). See the module's documentation for
    /// what is cut and what is refused.
    pub fn open(opts: Options, mut each: impl FnMut(&Event)) -> anyhow::Result<(Store, Recovery)> {
        if opts.keep == 0 {
            bail!("the store must keep at least one event");
        }
        if opts.segment_bytes <= record::SEGMENT_HEADER as u64 {
            bail!("segments must be larger than {} bytes", record::SEGMENT_HEADER);
        }
        let dir = opts.dir.clone();
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| lock::unwritable(&dir, &e))?;
        access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| lock::unwritable(&dir, &e))?;
        let dir_lock = DirLock::take(&dir)?;
        let found = recover::recover(&dir, opts.keep, &mut each)?;
        let new_epoch = found.segments.is_empty();
        let (segments, mut epoch) = if new_epoch { new_history(&dir)? } else { (found.segments, epoch::read(&dir)?) };
        let unclean = |e: io::Error| anyhow::anyhow!("cannot read {}: {e}", dir.join("running").display());
        let renamed_after_crash = !new_epoch && boot::machine_stopped_while_open(&dir).map_err(unclean)?;
        if renamed_after_crash {
            epoch = epoch::make(&dir)?;
        }
        boot::mark_open(&dir).map_err(|e| lock::unwritable(&dir, &e))?;
        let dir_file = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        // The epoch, a new segment, the files recovery removed: all on disk
        // before anything is appended.
        dir_file.sync_all().with_context(|| format!("syncing {}", dir.display()))?;
        segments.iter().for_each(|s| s.file.new_entry.store(false, Ordering::SeqCst));

        let limits = Limits { keep: opts.keep, reserve: opts.reserve, segment_bytes: opts.segment_bytes };
        let tail = Tail::new(dir.clone(), limits, segments, found.last_time_ms);
        let events = tail.last_seq + 1 - tail.first_kept();
        let log = Arc::new(Log::new(tail, dir_file, opts.sync));
        let for_thread = Arc::clone(&log);
        let sync_thread = thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || for_thread.run_sync_thread())
            .context("starting the store's sync thread")?;
        let store = Store { log, dir, epoch, sync_thread: Mutex::new(Some(sync_thread)), _lock: dir_lock };
        Ok((store, Recovery { events, cut: found.cut, new_epoch, renamed_after_crash }))
    }

    /// The history's name.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last seq appended; 0 when there is none.
    pub fn last_seq(&self) -> u64 {
        self.log.tail().last_seq
    }

    /// The last event's time; 0 when there is none.
    pub fn last_time_ms(&self) -> u64 {
        self.log.tail().last_time_ms
    }

    /// The first seq still served: `last_seq() + 1` when none is.
    pub fn first_kept(&self) -> u64 {
        self.log.tail().first_kept()
    }

    /// Appends `ev`, whose seq must be `last_seq() + 1` (anything else is a
    /// bug in the caller, and panics). It is copied into memory, once its
    /// disk space is reserved: a non-urgent event leaves `reserve` bytes of
    /// reserved space after it, and is refused with `Full` if the disk has
    /// no room for that; an urgent one (a member leaving) may use them.
    pub fn append(&self, ev: &Event, urgent: bool) -> Result<(), AppendError> {
        let mut tail = self.log.tail();
        let pending = tail.pending_bytes();
        if pending > 0 && pending + record::record_len(ev.line) as usize > FLUSH_AT {
            drop(tail);
            self.log.write(None).map_err(AppendError::from_io)?;
            tail = self.log.tail();
        }
        self.log.check().map_err(AppendError::Failed)?;
        if tail.append(ev, urgent)? {
            // The finished segment is fdatasynced by the sync thread, now.
            self.log.wake();
        }
        Ok(())
    }

    /// Every event with a seq below this is written to the OS (under
    /// `EverySecond`), or written and fdatasynced (under `Always`).
    pub fn durable(&self) -> u64 {
        self.log.durable()
    }

    /// Makes `durable() > upto_seq`, writing (and under `Always`
    /// fdatasyncing) whatever is pending, or waiting for the caller already
    /// doing so. Never holds up `append` for a disk flush.
    pub fn make_durable(&self, upto_seq: u64) -> io::Result<()> {
        self.log.make_durable(upto_seq)
    }

    /// A reader of the events `from..=to`, which must be kept and durable
    /// (see [`Store::make_durable`]). The segment files it needs are held
    /// open from now on: retention cannot take events from it.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Reader> {
        let durable = self.durable();
        let tail = self.log.tail();
        let first_kept = tail.first_kept();
        if from > to {
            return Ok(Reader::new(Vec::new(), (from, 0), from, to));
        }
        if from < first_kept {
            let e = format!("seq {from} is no longer kept: the first kept is {first_kept}");
            return Err(io::Error::new(io::ErrorKind::NotFound, e));
        }
        if to >= durable {
            let e = format!("seq {to} is not durable yet (durable below {durable}): make it durable first");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let mut needed = tail.segments.iter().filter(|s| s.records > 0 && s.last_seq() >= from && s.first_seq <= to);
        let first = needed.next().expect("a kept, durable seq is in a segment");
        let start = first.seek(from);
        let parts = std::iter::once(first).chain(needed).map(|s| (s.first_seq, Arc::clone(&s.file))).collect();
        Ok(Reader::new(parts, start, from, to))
    }

    /// Writes and fdatasyncs everything and stops the sync thread; appends
    /// are refused from now on. Also done when the store is dropped.
    pub fn close(&self) -> io::Result<()> {
        self.log.tail().closed = true;
        self.log.stop_sync_thread();
        let thread = log::lock(&self.sync_thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        self.log.write(None)?;
        self.log.sync(None)?;
        boot::mark_closed(&self.dir)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Starts a history in `dir`: a new epoch and the first, empty segment.
fn new_history(dir: &Path) -> anyhow::Result<(Vec<Segment>, String)> {
    let epoch = epoch::make(dir)?;
    let (file, _) = segment::create(dir, 1, 0).map_err(|e| lock::unwritable(dir, &e))?;
    Ok((vec![Segment::new(Arc::new(file), 1)], epoch))
}

#[cfg(test)]
mod tests;
