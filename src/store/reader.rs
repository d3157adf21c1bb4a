//! Reading a range of stored events back: the segment files it needs are
//! held open from the start, and read lazily, 64 KiB at a time, with pread.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::record::{self, Parsed, RECORD_HEADER, SEGMENT_HEADER};
use super::segment::SegFile;
use super::StoredEvent;

/// How much one read asks for, and about how much one chunk returns.
const READ_SIZE: usize = 64 << 10;

/// The events `from..=to` of a store, in order.
#[derive(Debug)]
pub struct Reader {
    /// The segments to read, with their first seqs, in order.
    parts: Vec<(u64, Arc<SegFile>)>,
    /// The part being read, the offset of its next record, and that
    /// record's seq.
    part: usize,
    offset: u64,
    seq: u64,
    from: u64,
    to: u64,
    /// Bytes read from the part, starting at offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
}

impl Reader {
    /// A reader of `from..=to` over `parts`, starting at the record with seq
    /// `seq` at `offset` of the first part (at or before `from`).
    pub(crate) fn new(parts: Vec<(u64, Arc<SegFile>)>, (seq, offset): (u64, u64), from: u64, to: u64) -> Reader {
        Reader { parts, part: 0, offset, seq, from, to, buf: Vec::new(), buf_at: 0 }
    }

    /// Appends up to `max` events (or about 64 KiB of them, at least one) to
    /// `out`. Returns `Ok(true)` if it appended any, `Ok(false)` once every
    /// event was read: `while reader.next_chunk(&mut out, n)? { … }`.
    pub fn next_chunk(&mut self, out: &mut Vec<StoredEvent>, max: usize) -> io::Result<bool> {
        let (mut taken, mut bytes) = (0, 0);
        while self.seq <= self.to && (taken == 0 || (taken < max && bytes < READ_SIZE)) {
            if self.parts.get(self.part + 1).is_some_and(|&(first, _)| first == self.seq) {
                self.part += 1;
                self.offset = SEGMENT_HEADER as u64;
                self.buf.clear();
            }
            let (ev, size) = self.record()?;
            if ev.seq >= self.from {
                out.push(ev);
                taken += 1;
                bytes += size;
            }
            self.offset += size as u64;
            self.seq += 1;
        }
        Ok(taken > 0)
    }

    /// The record at `offset`, which must have seq `seq`.
    fn record(&mut self) -> io::Result<(StoredEvent, usize)> {
        let mut need = RECORD_HEADER;
        loop {
            self.fill(need)?;
            let at = (self.offset - self.buf_at) as usize;
            match record::parse(&self.buf[at..]) {
                Parsed::Whole(ev, size) if ev.seq == self.seq => {
                    let ev = StoredEvent { seq: ev.seq, time_ms: ev.time_ms, line: ev.line.to_vec() };
                    return Ok((ev, size));
                }
                Parsed::Short { need: more } if more > need => need = more,
                Parsed::Whole(ev, _) => return Err(self.bad(&format!("seq {} where seq {} belongs", ev.seq, self.seq))),
                Parsed::Short { .. } => return Err(self.bad("a record cut short")),
                Parsed::BadLength(len) => return Err(self.bad(&format!("a record length of {len}"))),
                Parsed::BadCrc(_) => return Err(self.bad("a record whose checksum fails")),
            }
        }
    }

    /// Makes the buffer hold at least `need` bytes from `offset`, if the
    /// file has them.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        let held = self.buf_at + self.buf.len() as u64;
        if self.buf_at <= self.offset && self.offset + need as u64 <= held {
            return Ok(());
        }
        let file = &self.parts[self.part].1.file;
        self.buf.resize(need.max(READ_SIZE), 0);
        self.buf_at = self.offset;
        let mut got = 0;
        while got < need {
            match file.read_at(&mut self.buf[got..], self.offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(got);
        Ok(())
    }

    fn bad(&self, what: &str) -> io::Error {
        let path = self.parts[self.part].1.path.display();
        let e = format!("{path} at offset {}: {what}, reading seq {}", self.offset, self.seq);
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}
