//! Segment files: their names, what the store remembers of each (a sparse
//! index, not the events), and the disk space kept ahead of the writes.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

use super::record::{MAGIC, SEGMENT_HEADER};

/// One entry in a segment's index every this many records: a reader seeks
/// to the entry before its first seq and skips at most this many records,
/// and the index of a million events is 4,000 entries.
const INDEX_EVERY: u64 = 256;

/// An open segment file, shared by the store and any reader still reading
/// it: a file deleted by retention stays readable through this.
#[derive(Debug)]
pub(crate) struct SegFile {
    pub file: File,
    pub path: PathBuf,
    /// The file was created and its directory entry is not yet known to be
    /// on disk: the directory is fsynced before its records count as synced.
    pub new_entry: AtomicBool,
}

/// What the store knows of a segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: Arc<SegFile>,
    pub first_seq: u64,
    pub records: u64,
    /// The offset past its last record, those not yet written included.
    pub end: u64,
    /// `(seq, offset)` of every `INDEX_EVERY`th record, the first included.
    pub index: Vec<(u64, u64)>,
}

impl Segment {
    pub fn new(file: Arc<SegFile>, first_seq: u64) -> Segment {
        Segment { file, first_seq, records: 0, end: SEGMENT_HEADER as u64, index: Vec::new() }
    }

    /// The last seq it holds; `first_seq - 1` while it holds none.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.records - 1
    }

    /// Counts a record of `size` bytes with seq `seq`, placed at `end`.
    pub fn note(&mut self, seq: u64, size: u64) {
        if self.records % INDEX_EVERY == 0 {
            self.index.push((seq, self.end));
        }
        self.records += 1;
        self.end += size;
    }

    /// The seq and offset of the indexed record at or before `seq`.
    pub fn seek(&self, seq: u64) -> (u64, u64) {
        let at = self.index.partition_point(|&(s, _)| s <= seq);
        match at {
            0 => (self.first_seq, SEGMENT_HEADER as u64),
            _ => self.index[at - 1],
        }
    }
}

pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first seq a segment's file name gives, if it is one.
fn parse_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The segment files in `dir`, by first seq.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = parse_name(&entry.file_name()) {
            found.push((first, entry.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

pub(crate) fn open(path: &Path) -> io::Result<SegFile> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    Ok(SegFile { file, path: path.to_owned(), new_entry: AtomicBool::new(false) })
}

/// Creates the segment starting at `first_seq` with `room` bytes
/// preallocated (when the filesystem can) and its header written. Nothing
/// is left behind when it fails.
pub(crate) fn create(dir: &Path, first_seq: u64, room: u64) -> io::Result<(SegFile, Prealloc)> {
    let path = dir.join(file_name(first_seq));
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    let made = preallocate(&file, 0, room).and_then(|prealloc| {
        file.write_all_at(MAGIC, 0)?;
        Ok(prealloc)
    });
    match made {
        Ok(prealloc) => Ok((SegFile { file, path, new_entry: AtomicBool::new(true) }, prealloc)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Whether the filesystem preallocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prealloc {
    Done,
    Unsupported,
}

/// Reserves the disk blocks for bytes `from..to` of `file` without changing
/// its size, so a later write there cannot fail for want of space.
pub(crate) fn preallocate(file: &File, from: u64, to: u64) -> io::Result<Prealloc> {
    if to <= from {
        return Ok(Prealloc::Done);
    }
    let (offset, len) = (from as i64, (to - from) as i64);
    match fallocate(file.as_raw_fd(), FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len) {
        Ok(()) => Ok(Prealloc::Done),
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => Ok(Prealloc::Unsupported),
        Err(e) => Err(e.into()),
    }
}

/// Gives back the blocks preallocated past the end of a finished segment,
/// all of whose records are written: truncating a file to its own size
/// drops the blocks kept past it (ext4, XFS and tmpfs all do). Best effort:
/// where they stay, retention frees them with the file.
pub(crate) fn release_unused(file: &File) {
    if let Ok(meta) = file.metadata() {
        let _ = file.set_len(meta.len());
    }
}

/// Whether an error means the disk (or the quota) is full.
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq_and_parse_back() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_name(OsStr::new(&file_name(u64::MAX))), Some(u64::MAX));
        for other in ["lock", "epoch", "42.log", "0000000000000000004x.log", "00000000000000000042.log~"] {
            assert_eq!(parse_name(OsStr::new(other)), None, "{other}");
        }
    }
}
