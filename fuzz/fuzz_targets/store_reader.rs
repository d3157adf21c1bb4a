//! Arbitrary bytes as a segment file of the store: through the check that
//! recovery runs (`scan_segment`), and as the only segment of a data
//! directory that a store is opened on, read back and appended to.
//!
//! What must hold, whatever the bytes:
//! - nothing panics, and the check either accepts the bytes (a clean end or
//!   a torn tail to cut) or names the offset of the damage;
//! - what it accepts is records with seqs 1, 2, 3… back to back up to
//!   `end`, and a cut tail runs from `end` to the end of the bytes;
//! - as a segment that is not the last, bytes are accepted only whole, and
//!   then exactly as when they are the last;
//! - a store opens on them exactly when the check accepts them, reports the
//!   events the check found and serves them byte for byte, and takes the
//!   next event after them; when the check refuses them, the error names the
//!   file.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use minichat::store::{scan_segment, scan_segment_with, Event, Options, Store, StoredEvent, SyncPolicy};

const SEGMENT: &str = "00000000000000000001.log";

const DIR_PREFIX: &str = "minichat-fuzz-store-";

/// The data directory, on tmpfs where there is one: fsync is free there.
/// libFuzzer ends the process with exit(), so no destructor removes it:
/// the directories of processes that are gone are removed here instead.
fn data_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
        for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        base.join(format!("{DIR_PREFIX}{}", std::process::id()))
    })
}

/// The events the check accepts, in order.
fn accepted(data: &[u8]) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    let scan = scan_segment_with(data, 1, true, |offset, ev| {
        assert!(offset >= 8 && offset as usize + 24 + ev.line.len() <= data.len());
        events.push(StoredEvent { seq: ev.seq, time_ms: ev.time_ms, line: ev.line.to_vec() });
    });
    if scan.is_err() {
        events.clear();
    }
    events
}

fn check_scan(data: &[u8]) {
    let len = data.len() as u64;
    let last = scan_segment(data, 1, true);
    match &last {
        Ok(scan) => {
            assert!(scan.end <= len);
            match &scan.cut {
                Some(torn) => assert_eq!((torn.offset, torn.offset + torn.bytes), (scan.end, len), "{scan:?}"),
                None => assert_eq!(scan.end, len, "{scan:?}"),
            }
            assert_eq!(scan.last_seq, scan.records, "{scan:?}");
        }
        Err(damage) => assert!(damage.offset <= len, "{damage:?}"),
    }
    if let Ok(middle) = scan_segment(data, 1, false) {
        assert_eq!((middle.cut.as_ref(), middle.end), (None, len));
        assert_eq!(last.as_ref(), Ok(&middle));
    }
}

fn check_store(data: &[u8]) {
    let dir = data_dir();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("make the data directory");
    fs::write(dir.join("epoch"), "FuzzFuzzFuzz0001\n").expect("write the epoch");
    fs::write(dir.join(SEGMENT), data).expect("write the segment");
    let want = accepted(data);
    let scan = scan_segment(data, 1, true);
    let opts = Options { keep: u64::MAX, sync: SyncPolicy::EverySecond, ..Options::new(dir.clone()) };
    let mut seen = Vec::new();
    let opened = Store::open(opts, |ev| seen.push(ev.seq));
    let (store, recovery) = match (opened, scan) {
        (Ok(opened), Ok(_)) => opened,
        (Err(e), Err(_)) => {
            let e = format!("{e:#}");
            assert!(e.contains(SEGMENT), "the error does not name the file: {e}");
            return;
        }
        (Ok(_), Err(damage)) => panic!("the store opened on bytes the check refuses: {damage}"),
        (Err(e), Ok(scan)) => panic!("the store refused bytes the check accepts ({scan:?}): {e:#}"),
    };
    let n = want.len() as u64;
    assert_eq!((recovery.events, store.last_seq()), (n, n));
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    if n > 0 {
        let mut reader = store.read(1, n).expect("read what was recovered");
        let mut got = Vec::new();
        while reader.next_chunk(&mut got, 100).expect("read a chunk") {}
        assert!(got == want, "the store serves other events than the check found");
    }
    store.append(&Event { seq: n + 1, time_ms: 1, line: b"MSG fuzz after\n" }, false).expect("append after");
    store.make_durable(n + 1).expect("make it durable");
    store.close().expect("close");
}

fuzz_target!(|data: &[u8]| {
    check_scan(data);
    check_store(data);
});
