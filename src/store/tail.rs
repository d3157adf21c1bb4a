//! The append side: the segments, where the current one ends and how far
//! its disk space is reserved, and the records appended but not yet handed
//! to the OS. All of it lives under the store's `tail` lock, which `append`
//! holds for a copy and, now and then, a fallocate or a roll to a new
//! segment: never for a write(2) of pending records, never for an fsync.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{self, MAX_PAYLOAD, SEGMENT_HEADER};
use super::segment::{self, Prealloc, SegFile, Segment};
use super::{AppendError, Event};

/// Space is reserved ahead of the writes in steps of this much, so that one
/// fallocate serves thousands of appends.
const PREALLOC_STEP: u64 = 256 << 10;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub keep: u64,
    pub reserve: u64,
    pub segment_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Tail {
    dir: PathBuf,
    limits: Limits,
    /// Oldest first; the last is the current one. Never empty.
    pub segments: VecDeque<Segment>,
    pub last_seq: u64,
    pub last_time_ms: u64,
    /// How far the current segment's space is reserved (a file offset).
    alloc_end: u64,
    /// False once the filesystem said it cannot preallocate: records are
    /// then just written, and a full disk shows when writing them.
    prealloc: bool,
    /// Records of the current segment that no writer has taken yet.
    open: Chunk,
    /// The last records of finished segments that no writer has taken yet.
    sealed: Vec<Chunk>,
    /// A buffer a writer gave back, for the next `open` chunk.
    spare: Vec<u8>,
    pub closed: bool,
}

/// Records to write at `offset` of a segment file.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub file: Arc<SegFile>,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// How many of `bytes` are written: a failed write resumes there.
    pub written: usize,
    /// The segment ends with this chunk.
    pub last: bool,
}

/// What a writer took from the tail: chunks in file order, and the seq
/// after the last record they hold.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub chunks: Vec<Chunk>,
    pub next_seq: u64,
}

impl Tail {
    /// The tail after recovery, the last of `segments` being the current one.
    pub fn new(dir: PathBuf, limits: Limits, segments: Vec<Segment>, last_time_ms: u64) -> Tail {
        let current = segments.last().expect("a store always has a current segment");
        let open = Chunk::new(Arc::clone(&current.file), current.end, Vec::new());
        Tail {
            dir,
            limits,
            last_seq: current.last_seq(),
            last_time_ms,
            alloc_end: current.end,
            prealloc: true,
            open,
            sealed: Vec::new(),
            spare: Vec::new(),
            closed: false,
            segments: segments.into(),
        }
    }

    pub fn current(&self) -> &Segment {
        self.segments.back().expect("a store always has a current segment")
    }

    pub fn first_kept(&self) -> u64 {
        let first_on_disk = self.segments.front().expect("a current segment").first_seq;
        first_on_disk.max((self.last_seq + 1).saturating_sub(self.limits.keep))
    }

    /// Bytes appended that no writer has taken yet.
    pub fn pending_bytes(&self) -> usize {
        self.open.bytes.len() + self.sealed.iter().map(|c| c.bytes.len()).sum::<usize>()
    }

    /// Adds `ev` to the pending records once its space is reserved; returns
    /// whether a new segment was started for it.
    pub fn append(&mut self, ev: &Event, urgent: bool) -> Result<bool, AppendError> {
        assert_eq!(ev.seq, self.last_seq + 1, "store: events must be appended in seq order");
        if self.closed {
            return Err(AppendError::Failed(io::Error::other("the store is closed")));
        }
        if ev.line.is_empty() || ev.line.len() > MAX_PAYLOAD {
            let e = io::Error::new(io::ErrorKind::InvalidInput, format!("a line of {} bytes", ev.line.len()));
            return Err(AppendError::Failed(e));
        }
        let size = record::record_len(ev.line);
        // An urgent event never waits for a new segment: it may have to use
        // the current one's reserve because the disk is full.
        let roll = !urgent && self.current().end >= self.limits.segment_bytes;
        if roll {
            self.roll(size)?;
        }
        self.make_room(size, urgent)?;
        record::encode(&mut self.open.bytes, ev);
        self.segments.back_mut().expect("a current segment").note(ev.seq, size);
        self.last_seq = ev.seq;
        self.last_time_ms = ev.time_ms;
        self.retire();
        Ok(roll)
    }

    /// Makes sure the reserved space holds `size` more bytes, and `reserve`
    /// bytes beyond them unless `urgent`.
    fn make_room(&mut self, size: u64, urgent: bool) -> Result<(), AppendError> {
        let need = self.current().end + size;
        let want = need + if urgent { 0 } else { self.limits.reserve };
        if !self.prealloc || want <= self.alloc_end {
            return Ok(());
        }
        let file = Arc::clone(&self.current().file);
        let step = want.next_multiple_of(PREALLOC_STEP);
        // A whole step first; on a nearly full disk, just what is needed.
        let tried = segment::preallocate(&file.file, self.alloc_end, step).map(|p| (p, step));
        let tried = match tried {
            Err(e) if segment::is_full(&e) => segment::preallocate(&file.file, self.alloc_end, want).map(|p| (p, want)),
            other => other,
        };
        match tried {
            Ok((Prealloc::Done, to)) => self.alloc_end = to,
            Ok((Prealloc::Unsupported, _)) => self.prealloc = false,
            Err(e) => return Err(AppendError::from_io(e)),
        }
        Ok(())
    }

    /// Starts a new segment for a record of `size` bytes, its space
    /// reserved; the current one's pending records are sealed for writing.
    fn roll(&mut self, size: u64) -> Result<(), AppendError> {
        let first = self.last_seq + 1;
        let need = SEGMENT_HEADER as u64 + size + self.limits.reserve;
        let (file, prealloc, room) = if self.prealloc {
            let step = need.next_multiple_of(PREALLOC_STEP);
            match segment::create(&self.dir, first, step) {
                Err(e) if segment::is_full(&e) => segment::create(&self.dir, first, need).map(|(f, p)| (f, p, need)),
                made => made.map(|(f, p)| (f, p, step)),
            }
        } else {
            segment::create(&self.dir, first, 0).map(|(f, p)| (f, p, 0))
        }
        .map_err(AppendError::from_io)?;
        let file = Arc::new(file);
        let bytes = mem::take(&mut self.spare);
        let mut old = mem::replace(&mut self.open, Chunk::new(Arc::clone(&file), SEGMENT_HEADER as u64, bytes));
        old.last = true;
        self.sealed.push(old);
        self.segments.push_back(Segment::new(file, first));
        self.prealloc = self.prealloc && prealloc == Prealloc::Done;
        self.alloc_end = if self.prealloc { room } else { SEGMENT_HEADER as u64 };
        Ok(())
    }

    /// Deletes the segments wholly before the kept range. A reader still
    /// reading one keeps it open, so it reads on.
    fn retire(&mut self) {
        while self.segments.len() > 1 && self.segments[1].first_seq <= self.first_kept() {
            let old = self.segments.pop_front().expect("two segments");
            // One that cannot be deleted now is deleted by the next open.
            let _ = std::fs::remove_file(&old.file.path);
        }
    }

    /// Moves the pending records into `batch`, after any it already holds.
    pub fn take(&mut self, batch: &mut Batch) {
        batch.chunks.append(&mut self.sealed);
        if !self.open.bytes.is_empty() {
            let offset = self.open.offset + self.open.bytes.len() as u64;
            let next = Chunk::new(Arc::clone(&self.open.file), offset, mem::take(&mut self.spare));
            batch.chunks.push(mem::replace(&mut self.open, next));
        }
        batch.next_seq = self.last_seq + 1;
    }

    /// Keeps a written chunk's buffer for the next one.
    pub fn give_back(&mut self, mut bytes: Vec<u8>) {
        if bytes.capacity() > self.spare.capacity() {
            bytes.clear();
            self.spare = bytes;
        }
    }
}

impl Chunk {
    fn new(file: Arc<SegFile>, offset: u64, bytes: Vec<u8>) -> Chunk {
        Chunk { file, offset, bytes, written: 0, last: false }
    }
}
