//! One record's bytes, and the check of a whole segment's bytes: what
//! recovery runs over each file, and what the fuzz target feeds garbage to.
//! Pure functions over byte slices; nothing here touches the disk.

use std::fmt;

use super::Event;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"MCHATLG1";
/// A segment's header: the magic alone.
pub const SEGMENT_HEADER: usize = MAGIC.len();
/// `len u32 | crc u32 | seq u64 | time_ms u64`, before the payload.
pub const RECORD_HEADER: usize = 24;
/// The longest payload a record may hold. Lines are at most about 1 MiB; a
/// length field past this is damage, not a line.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// The bytes a record of `line` takes on disk.
pub fn record_len(line: &[u8]) -> u64 {
    (RECORD_HEADER + line.len()) as u64
}

/// Appends `ev` as a record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, ev: &Event) {
    out.extend_from_slice(&(ev.line.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(ev.seq, ev.time_ms, ev.line).to_le_bytes());
    out.extend_from_slice(&ev.seq.to_le_bytes());
    out.extend_from_slice(&ev.time_ms.to_le_bytes());
    out.extend_from_slice(ev.line);
}

fn checksum(seq: u64, time_ms: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&time_ms.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// What the bytes at the start of a slice hold.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A whole record whose checksum holds, and the bytes it takes.
    Whole(Event<'a>, usize),
    /// The slice ends inside a record: `need` bytes would hold it.
    Short { need: usize },
    /// A length field no record can have.
    BadLength(u32),
    /// A whole record whose checksum fails, and the bytes it claims.
    BadCrc(usize),
}

/// Reads the record at the start of `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Parsed<'_> {
    let Some(header) = bytes.get(..RECORD_HEADER) else { return Parsed::Short { need: RECORD_HEADER } };
    let field = |at: usize, n: usize| &header[at..at + n];
    let len = u32::from_le_bytes(field(0, 4).try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Parsed::BadLength(len);
    }
    let size = RECORD_HEADER + len as usize;
    let Some(payload) = bytes.get(RECORD_HEADER..size) else { return Parsed::Short { need: size } };
    let crc = u32::from_le_bytes(field(4, 4).try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(field(8, 8).try_into().expect("8 bytes"));
    let time_ms = u64::from_le_bytes(field(16, 8).try_into().expect("8 bytes"));
    if checksum(seq, time_ms, payload) != crc {
        return Parsed::BadCrc(size);
    }
    Parsed::Whole(Event { seq, time_ms, line: payload }, size)
}

/// What a segment holds, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: u64,
    /// The last record's seq; the first seq less one when there is none.
    pub last_seq: u64,
    /// The last record's time; 0 when there is none.
    pub last_time_ms: u64,
    /// The offset just past the last whole record.
    pub end: u64,
    /// The torn tail after `end`, if any: only ever in the last segment.
    pub cut: Option<Torn>,
}

/// A torn last record: what a crash in the middle of a write leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub offset: u64,
    pub bytes: u64,
    pub what: &'static str,
}

/// Damage that is not a torn tail: the segment cannot be trusted past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for Damage {}

/// Checks a segment's bytes: the magic, then records with seqs `first_seq`,
/// `first_seq + 1`, … each with a sound checksum. In the last segment
/// (`is_last`) a torn final record is reported in `cut` rather than as
/// damage. Never panics, whatever the bytes.
pub fn scan_segment(bytes: &[u8], first_seq: u64, is_last: bool) -> Result<SegmentScan, Damage> {
    scan_segment_with(bytes, first_seq, is_last, |_, _| {})
}

/// [`scan_segment`], calling `visit(offset, event)` for each whole record in
/// order (those before any damage, too: the caller must not act on them
/// until the scan has succeeded).
pub fn scan_segment_with(
    bytes: &[u8],
    first_seq: u64,
    is_last: bool,
    mut visit: impl FnMut(u64, &Event),
) -> Result<SegmentScan, Damage> {
    let mut scan = SegmentScan {
        records: 0,
        last_seq: first_seq.wrapping_sub(1),
        last_time_ms: 0,
        end: bytes.len() as u64,
        cut: None,
    };
    if bytes.len() < SEGMENT_HEADER && is_last && MAGIC.starts_with(bytes) {
        // A segment whose creation a crash interrupted: it holds nothing.
        return Ok(scan);
    }
    if !bytes.starts_with(MAGIC) {
        let what = "the file does not start with the segment magic (not a minichat segment, or overwritten)";
        return Err(Damage { offset: 0, what: what.into() });
    }
    let mut pos = SEGMENT_HEADER;
    while pos < bytes.len() {
        let expect = scan.last_seq.wrapping_add(1);
        match parse(&bytes[pos..]) {
            Parsed::Whole(ev, size) if ev.seq == expect => {
                visit(pos as u64, &ev);
                scan.records += 1;
                scan.last_seq = ev.seq;
                scan.last_time_ms = ev.time_ms;
                pos += size;
            }
            Parsed::Whole(ev, _) => {
                let what = format!("a record holds seq {} where seq {expect} belongs", ev.seq);
                return Err(Damage { offset: pos as u64, what });
            }
            problem => {
                scan.end = pos as u64;
                scan.cut = Some(torn_tail(bytes, pos, expect, is_last, &problem)?);
                return Ok(scan);
            }
        }
    }
    Ok(scan)
}

/// Decides whether the bad record at `pos` is a torn tail, which may be cut,
/// or damage. A tail is cut only from the last segment, and only when no
/// whole record that belongs after it follows: a crash tears the last write,
/// while a flipped bit leaves good records behind the bad one.
fn torn_tail(bytes: &[u8], pos: usize, expect: u64, is_last: bool, problem: &Parsed) -> Result<Torn, Damage> {
    let rest = &bytes[pos..];
    let zeros = rest.iter().all(|&b| b == 0);
    let (what, after) = match *problem {
        _ if zeros => ("zeros where a record belongs", &[][..]),
        Parsed::Short { .. } if rest.len() < RECORD_HEADER => ("a record header cut short", &[][..]),
        Parsed::Short { .. } => ("a record cut short", &[][..]),
        Parsed::BadCrc(size) => ("a record whose checksum fails", &rest[size..]),
        Parsed::BadLength(_) => ("a record length no record has", rest),
        Parsed::Whole(..) => unreachable!("a whole record is not a problem"),
    };
    let damage = |what: String| Err(Damage { offset: pos as u64, what });
    if !is_last {
        return damage(format!("{what} (seq {expect}), in a segment that is not the last"));
    }
    if !after.iter().all(|&b| b == 0) {
        return damage(format!("{what} (seq {expect}), with more data after it"));
    }
    if let Some((at, seq)) = later_record(bytes, pos + 1, expect) {
        return damage(format!("{what} (seq {expect}), yet a whole record with seq {seq} follows at offset {at}"));
    }
    Ok(Torn { offset: pos as u64, bytes: rest.len() as u64, what })
}

/// The first whole record at or after `from` whose seq is `expect` or the
/// one after it.
fn later_record(bytes: &[u8], from: usize, expect: u64) -> Option<(usize, u64)> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER)?;
    (from..=last_start).find_map(|at| {
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        if seq != expect && seq != expect.wrapping_add(1) {
            return None;
        }
        match parse(&bytes[at..]) {
            Parsed::Whole(..) => Some((at, seq)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, lines: &[&str]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for (i, line) in lines.iter().enumerate() {
            encode(&mut bytes, &Event { seq: first + i as u64, time_ms: 1000 + i as u64, line: line.as_bytes() });
        }
        bytes
    }

    #[test]
    fn reads_back_what_was_encoded() {
        let bytes = segment(5, &["MSG a x\n", "MSG b y\n"]);
        let mut seen = Vec::new();
        let scan = scan_segment_with(&bytes, 5, false, |at, ev| seen.push((at, ev.seq, ev.line.to_vec()))).unwrap();
        assert_eq!(
            scan,
            SegmentScan { records: 2, last_seq: 6, last_time_ms: 1001, end: bytes.len() as u64, cut: None }
        );
        assert_eq!(seen, [(8, 5, b"MSG a x\n".to_vec()), (40, 6, b"MSG b y\n".to_vec())]);
    }

    #[test]
    fn an_empty_or_unfinished_last_segment_holds_nothing() {
        for bytes in [&b""[..], b"MCH", MAGIC] {
            let scan = scan_segment(bytes, 7, true).unwrap();
            assert_eq!((scan.records, scan.last_seq, scan.cut), (0, 6, None), "{bytes:?}");
        }
        assert!(scan_segment(b"MCH", 7, false).is_err());
        assert!(scan_segment(b"XXXXXXXXXX", 7, true).unwrap_err().what.contains("magic"));
    }

    #[test]
    fn a_torn_last_record_is_cut_only_in_the_last_segment() {
        let whole = segment(1, &["MSG a one\n", "MSG a two\n"]);
        let first_end = whole.len() as u64 - 34;
        for keep in [whole.len() - 1, whole.len() - 20, first_end as usize + 3] {
            let scan = scan_segment(&whole[..keep], 1, true).unwrap();
            assert_eq!((scan.records, scan.end), (1, first_end), "cut at {keep}");
            assert_eq!(scan.cut.unwrap().bytes, keep as u64 - first_end);
            assert!(scan_segment(&whole[..keep], 1, false).is_err());
        }
    }

    #[test]
    fn a_bad_checksum_is_cut_at_the_end_and_damage_before_more_data() {
        let mut bytes = segment(1, &["MSG a one\n", "MSG a two\n"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(scan_segment(&bytes, 1, true).unwrap().cut.unwrap().what, "a record whose checksum fails");
        bytes.extend_from_slice(&[0; 100]);
        assert_eq!(scan_segment(&bytes, 1, true).unwrap().records, 1);
        bytes.push(1);
        assert!(scan_segment(&bytes, 1, true).unwrap_err().what.contains("more data"));
    }

    #[test]
    fn damage_in_the_middle_is_never_cut() {
        let good = segment(1, &["MSG a one\n", "MSG a two\n", "MSG a three\n"]);
        // A flipped payload bit in the first record, then a length field
        // pointing past the end: both leave whole records after them.
        let mut flipped = good.clone();
        flipped[8 + 24] ^= 4;
        assert!(scan_segment(&flipped, 1, true).unwrap_err().what.contains("more data after it"));
        let mut long = good.clone();
        long[8 + 1] = 0x40;
        assert!(scan_segment(&long, 1, true).unwrap_err().what.contains("follows"));
    }

    #[test]
    fn seqs_must_follow_on() {
        let bytes = segment(3, &["MSG a one\n"]);
        assert!(scan_segment(&bytes, 2, true).unwrap_err().what.contains("seq 3 where seq 2"));
        let mut two = segment(1, &["MSG a one\n"]);
        encode(&mut two, &Event { seq: 1, time_ms: 0, line: b"MSG again\n" });
        assert!(scan_segment(&two, 1, true).unwrap_err().what.contains("seq 1 where seq 2"));
    }
}
