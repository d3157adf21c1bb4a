//! Opening a history: every kept segment checked record by record, a torn
//! last record cut, anything else that is wrong refused with what to do
//! about it, and the segments wholly older than the kept range deleted.
//! Nothing on disk changes until every check has passed.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use super::record::{self, Damage, SegmentScan, MAGIC, SEGMENT_HEADER};
use super::segment::{self, Segment};
use super::Event;

/// The largest first seq a segment's name may give.
const MAX_FIRST_SEQ: u64 = 1 << 62;

/// What was found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The kept segments, oldest first; none when there is no history.
    pub segments: Vec<Segment>,
    pub last_time_ms: u64,
    /// What was cut or removed, for the log.
    pub cut: Option<String>,
}

/// A segment file found in the directory.
#[derive(Debug)]
struct Found {
    first: u64,
    path: PathBuf,
    /// Its bytes when it holds nothing but (part of) the magic: a segment
    /// whose creation may have been cut short.
    blank: Option<Vec<u8>>,
}

/// What recovery will keep, cut and remove, gathered before anything on
/// disk changes.
#[derive(Debug, Default)]
struct Plan {
    segments: Vec<Segment>,
    last_time_ms: u64,
    retired: Vec<PathBuf>,
    notes: Vec<String>,
}

impl Plan {
    fn add(&mut self, seg: Segment, scan: &SegmentScan) {
        if scan.records > 0 {
            self.last_time_ms = scan.last_time_ms;
        }
        self.segments.push(seg);
    }
}

/// Checks the segments in `dir`, calling `each` for every event from the
/// first kept one on. If it fails, what `each` saw means nothing.
pub(crate) fn recover(dir: &Path, keep: u64, each: &mut dyn FnMut(&Event)) -> anyhow::Result<Recovered> {
    let found = find(dir)?;
    let mut plan = Plan::default();
    // The last segment that holds more than a header is the one whose end
    // may be torn; the blank ones after it are looked at apart.
    let last = found.iter().rposition(|f| f.blank.is_none());
    if let Some(last) = last {
        check_all(dir, &found[..=last], keep, each, &mut plan)?;
    }
    place_blanks(&found[last.map_or(0, |i| i + 1)..], &mut plan)?;
    finish(&plan.segments, &plan.retired)?;
    let cut = (!plan.notes.is_empty()).then(|| plan.notes.join("; "));
    Ok(Recovered { segments: plan.segments, last_time_ms: plan.last_time_ms, cut })
}

/// Checks `found`, the last of which may have a torn end. That one is read
/// first: its last seq says which events are kept, and so which older
/// segments are deleted unread.
fn check_all(
    dir: &Path,
    found: &[Found],
    keep: u64,
    each: &mut dyn FnMut(&Event),
    plan: &mut Plan,
) -> anyhow::Result<()> {
    let (last, older) = found.split_last().expect("at least one segment");
    let mut bytes = Vec::new();
    read_into(&last.path, &mut bytes)?;
    let scan = record::scan_segment(&bytes, last.first, true).map_err(|d| damaged(dir, &last.path, &d))?;
    let first_kept = found[0].first.max((scan.last_seq + 1).saturating_sub(keep));
    let mut prev_last = None;
    let mut buf = Vec::new();
    for (i, f) in older.iter().enumerate() {
        if found[i + 1].first <= first_kept {
            plan.retired.push(f.path.clone());
            continue;
        }
        read_into(&f.path, &mut buf)?;
        let (seg, scan) = check(dir, f, &buf, false, prev_last, first_kept, each)?;
        prev_last = Some(seg.last_seq());
        plan.add(seg, &scan);
    }
    let (seg, scan) = check(dir, last, &bytes, true, prev_last, first_kept, each)?;
    if let Some(torn) = &scan.cut {
        plan.notes.push(format!(
            "cut the torn end of {}: {} bytes from offset {} ({}); the last whole event is seq {}",
            last.path.display(),
            torn.bytes,
            torn.offset,
            torn.what,
            scan.last_seq
        ));
    }
    plan.add(seg, &scan);
    Ok(())
}

/// Keeps the first blank segment after the others as the current one if it
/// is whole and next in line; removes the rest, which hold no events.
fn place_blanks(blanks: &[Found], plan: &mut Plan) -> anyhow::Result<()> {
    let next = plan.segments.last().map_or(1, |s| s.last_seq() + 1);
    for (i, f) in blanks.iter().enumerate() {
        if i == 0 && f.first == next && f.blank.as_deref() == Some(&MAGIC[..]) {
            // Made just before a crash or a stop.
            plan.segments.push(Segment::new(Arc::new(open(&f.path)?), next));
        } else {
            let len = f.blank.as_ref().map_or(0, Vec::len);
            let path = f.path.display();
            plan.notes.push(format!("removed {path}: a segment whose creation was cut short ({len} bytes, no events)"));
            plan.retired.push(f.path.clone());
        }
    }
    Ok(())
}

/// The segment files in `dir`, in order, the blank ones read.
fn find(dir: &Path) -> anyhow::Result<Vec<Found>> {
    let listed = segment::list(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut found = Vec::with_capacity(listed.len());
    for (first, path) in listed {
        // Seqs start at 1, and stay far from overflowing.
        if first == 0 || first > MAX_FIRST_SEQ {
            let (dir, path) = (dir.display(), path.display());
            bail!("{path} is not a segment this store makes (its name is not a seq); move it out of {dir}");
        }
        let len = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
        let mut blank = None;
        if len <= SEGMENT_HEADER as u64 {
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            blank = MAGIC.starts_with(&bytes).then_some(bytes);
        }
        found.push(Found { first, path, blank });
    }
    Ok(found)
}

/// Checks one segment's bytes and what comes before it, calling `each` for
/// its kept events; returns what the store keeps of it.
fn check(
    dir: &Path,
    f: &Found,
    bytes: &[u8],
    is_last: bool,
    prev_last: Option<u64>,
    first_kept: u64,
    each: &mut dyn FnMut(&Event),
) -> anyhow::Result<(Segment, SegmentScan)> {
    if let Some(prev_last) = prev_last.filter(|&last| last + 1 != f.first) {
        let (from, to, dir, path) = (prev_last + 1, f.first.saturating_sub(1), dir.display(), f.path.display());
        return Err(anyhow!(
            "the events {from}..{to} are missing from {dir}: the segment file holding them is gone. To keep the \
             events from {path} on, move the segment files before it out of {dir}; or remove {dir} to start a \
             new history"
        ));
    }
    let mut seg = Segment::new(Arc::new(open(&f.path)?), f.first);
    let scan = record::scan_segment_with(bytes, f.first, is_last, |at, ev| {
        debug_assert_eq!(at, seg.end);
        seg.note(ev.seq, record::record_len(ev.line));
        if ev.seq >= first_kept {
            each(ev);
        }
    })
    .map_err(|d| damaged(dir, &f.path, &d))?;
    Ok((seg, scan))
}

/// Cuts the torn tail (the scanned last segment is the only one whose file
/// can run past its last record), and deletes the `retired` files.
fn finish(segments: &[Segment], retired: &[PathBuf]) -> anyhow::Result<()> {
    for seg in segments {
        let file = &seg.file;
        let len = file.file.metadata().with_context(|| format!("reading {}", file.path.display()))?.len();
        if len > seg.end {
            file.file
                .set_len(seg.end)
                .and_then(|()| file.file.sync_all())
                .with_context(|| format!("cutting the torn end of {}", file.path.display()))?;
        }
    }
    for path in retired {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

fn read_into(path: &Path, bytes: &mut Vec<u8>) -> anyhow::Result<()> {
    bytes.clear();
    File::open(path).and_then(|mut f| f.read_to_end(bytes)).with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<segment::SegFile> {
    segment::open(path).with_context(|| format!("opening {}", path.display()))
}

/// The error for damage recovery must not cut: the events before it are
/// sound, but seqs must never be given twice, so only the events after it
/// can be kept (by moving the older files aside).
fn damaged(dir: &Path, path: &Path, damage: &Damage) -> anyhow::Error {
    let (dir, path) = (dir.display(), path.display());
    anyhow!(
        "{path} is damaged {damage}. To keep the events after it, move this file and the segment files before \
         it out of {dir}; or remove {dir} to start a new history"
    )
}
