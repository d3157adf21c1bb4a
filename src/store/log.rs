//! The log the store's callers and its sync thread share, and the two steps
//! that make appended records durable: writing what is pending (write(2),
//! in file order, one writer at a time) and fdatasyncing what was written
//! (one syncer at a time). Whoever comes while a step is under way waits
//! for it and usually finds its own records covered: group commit.
//!
//! Locks, always taken in this order and never the other way:
//! `writing` (held across write(2)) → `tail` (append's, brief) → `dirty`;
//! `syncing` (held across fdatasync) → `dirty`. `append` holds `tail` alone
//! and never waits for `syncing`; it waits for `writing` only when more
//! than [`FLUSH_AT`] bytes are pending, after letting go of `tail`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::segment::{self, SegFile};
use super::tail::{Batch, Chunk, Tail};
use super::SyncPolicy;

/// Pending bytes past which `append` writes them out itself.
pub(crate) const FLUSH_AT: usize = 1 << 20;
/// How long written records may wait for an fdatasync.
const SYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Log {
    pub tail: Mutex<Tail>,
    /// The batch being written, or one whose write failed: it goes first
    /// next time, so records reach the file in order.
    writing: Mutex<Batch>,
    syncing: Mutex<()>,
    /// Segment files written since their last fdatasync.
    dirty: Mutex<Vec<Arc<SegFile>>>,
    /// Every seq below it is written.
    written: AtomicU64,
    /// Every seq below it is written and fdatasynced.
    synced: AtomicU64,
    policy: SyncPolicy,
    /// The data directory, fsynced once a new segment's entry is in it.
    dir: File,
    /// Why the store stopped, after an fdatasync failed.
    broken: AtomicBool,
    why_broken: Mutex<String>,
    /// Tells the sync thread to stop, or to look now.
    stop: Mutex<bool>,
    wake: Condvar,
}

/// Takes a lock whatever a panicking holder left: every change under these
/// locks is complete before anything that can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    pub fn new(tail: Tail, dir: File, policy: SyncPolicy) -> Log {
        let next = tail.last_seq + 1;
        Log {
            tail: Mutex::new(tail),
            writing: Mutex::default(),
            syncing: Mutex::new(()),
            dirty: Mutex::default(),
            written: AtomicU64::new(next),
            synced: AtomicU64::new(next),
            policy,
            dir,
            broken: AtomicBool::new(false),
            why_broken: Mutex::default(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    pub fn tail(&self) -> MutexGuard<'_, Tail> {
        lock(&self.tail)
    }

    pub fn durable(&self) -> u64 {
        match self.policy {
            SyncPolicy::EverySecond => self.written.load(Ordering::SeqCst),
            SyncPolicy::Always => self.synced.load(Ordering::SeqCst),
        }
    }

    /// Fails once an fdatasync has failed. The kernel may then have dropped
    /// the pages it could not write and marked them clean, so a later
    /// fdatasync would succeed without them: only reading the files again,
    /// on the next open, tells what is on disk.
    pub fn check(&self) -> io::Result<()> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(io::Error::other(format!("the store stopped: {}; restart chatd", lock(&self.why_broken))))
    }

    fn break_down(&self, why: String) -> io::Error {
        *lock(&self.why_broken) = why.clone();
        self.broken.store(true, Ordering::SeqCst);
        io::Error::other(why)
    }

    /// Writes every pending record, unless `upto` is given and already
    /// written by the time it is this caller's turn.
    pub fn write(&self, upto: Option<u64>) -> io::Result<()> {
        let mut batch = lock(&self.writing);
        if upto.is_some_and(|seq| self.written.load(Ordering::SeqCst) > seq) {
            return Ok(());
        }
        self.check()?;
        self.tail().take(&mut batch);
        for chunk in &mut batch.chunks {
            write_chunk(chunk)?;
        }
        let mut dirty = lock(&self.dirty);
        for chunk in &batch.chunks {
            if chunk.last {
                segment::release_unused(&chunk.file.file);
            }
            if !dirty.iter().any(|f| Arc::ptr_eq(f, &chunk.file)) {
                dirty.push(Arc::clone(&chunk.file));
            }
        }
        drop(dirty);
        self.written.fetch_max(batch.next_seq, Ordering::SeqCst);
        let biggest = batch.chunks.drain(..).map(|c| c.bytes).max_by_key(Vec::capacity);
        if let Some(bytes) = biggest {
            self.tail().give_back(bytes);
        }
        Ok(())
    }

    /// fdatasyncs every file written to, unless `upto` is given and already
    /// synced by the time it is this caller's turn.
    pub fn sync(&self, upto: Option<u64>) -> io::Result<()> {
        let _turn = lock(&self.syncing);
        if upto.is_some_and(|seq| self.synced.load(Ordering::SeqCst) > seq) {
            return Ok(());
        }
        self.check()?;
        // What is written by now is covered: a writer lists its files as
        // dirty before it moves `written` on, so read `written` first.
        let target = self.written.load(Ordering::SeqCst);
        let files = std::mem::take(&mut *lock(&self.dirty));
        if files.iter().any(|f| f.new_entry.swap(false, Ordering::SeqCst)) {
            self.dir.sync_all().map_err(|e| self.break_down(format!("fsync of the data directory failed: {e}")))?;
        }
        for f in &files {
            let path = f.path.display();
            f.file.sync_data().map_err(|e| self.break_down(format!("fdatasync of {path} failed: {e}")))?;
        }
        self.synced.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every seq up to `upto` durable as the policy says.
    pub fn make_durable(&self, upto: u64) -> io::Result<()> {
        if self.durable() > upto {
            return Ok(());
        }
        self.write(Some(upto))?;
        if self.policy == SyncPolicy::Always {
            self.sync(Some(upto))?;
        }
        if self.durable() <= upto {
            let e = format!("seq {upto} was never appended (durable below {})", self.durable());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        Ok(())
    }

    /// Tells the sync thread to look now.
    pub fn wake(&self) {
        self.wake.notify_all();
    }

    /// The sync thread: writes and fdatasyncs whatever is pending, every
    /// second and whenever woken, until told to stop. Its errors are not
    /// lost: the next `make_durable` or `close` meets them again.
    pub fn run_sync_thread(&self) {
        let mut stop = lock(&self.stop);
        while !*stop {
            stop = self.wake.wait_timeout(stop, SYNC_EVERY).unwrap_or_else(PoisonError::into_inner).0;
            drop(stop);
            let _ = self.write(None).and_then(|()| self.sync(None));
            stop = lock(&self.stop);
        }
    }

    pub fn stop_sync_thread(&self) {
        *lock(&self.stop) = true;
        self.wake();
    }
}

/// Writes what is left of `chunk`, noting how far it got.
fn write_chunk(chunk: &mut Chunk) -> io::Result<()> {
    while chunk.written < chunk.bytes.len() {
        let at = chunk.offset + chunk.written as u64;
        match chunk.file.file.write_at(&chunk.bytes[chunk.written..], at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => chunk.written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // As it is: a full disk must still read as ENOSPC.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
