//! The store on real files, each test in a directory of its own under the
//! system's temporary directory.

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("minichat-store-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Path) -> Options {
    Options { segment_bytes: 4096, ..Options::new(dir) }
}

fn line(seq: u64) -> Vec<u8> {
    format!("MSG ana message number {seq}\n").into_bytes()
}

fn event(seq: u64, line: &[u8]) -> Event<'_> {
    Event { seq, time_ms: 1_700_000_000_000 + seq, line }
}

/// Appends the events `from..=to`, each as `line` makes it.
fn append_range(store: &Store, from: u64, to: u64) {
    for seq in from..=to {
        store.append(&event(seq, &line(seq)), false).unwrap();
    }
}

fn open(opts: Options) -> (Store, Recovery, Vec<u64>) {
    let mut seen = Vec::new();
    let (store, recovery) = Store::open(opts, |ev| seen.push(ev.seq)).unwrap();
    (store, recovery, seen)
}

fn open_err(opts: Options) -> String {
    format!("{:#}", Store::open(opts, |_| {}).unwrap_err())
}

fn read_all(store: &Store, from: u64, to: u64, max: usize) -> Vec<StoredEvent> {
    let mut reader = store.read(from, to).unwrap();
    let mut out = Vec::new();
    while reader.next_chunk(&mut out, max).unwrap() {}
    out
}

fn check_events(events: &[StoredEvent], from: u64, to: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (from..=to).collect::<Vec<_>>());
    for ev in events {
        assert_eq!((ev.line.as_slice(), ev.time_ms), (line(ev.seq).as_slice(), event(ev.seq, &[]).time_ms));
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|(_, path)| path).collect()
}

#[test]
fn a_store_and_its_readers_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
    shared::<Reader>();
}

#[test]
fn appended_events_come_back_after_reopening_in_the_same_epoch() {
    let tmp = TempDir::new("reopen");
    let (store, recovery, seen) = open(options(&tmp.data()));
    assert_eq!(recovery, Recovery { events: 0, cut: None, new_epoch: true, renamed_after_crash: false });
    assert!(seen.is_empty());
    assert_eq!((store.last_seq(), store.last_time_ms(), store.first_kept()), (0, 0, 1));
    let epoch = store.epoch().to_owned();
    assert_eq!(epoch.len(), 16);
    append_range(&store, 1, 300);
    drop(store);

    let (store, recovery, seen) = open(options(&tmp.data()));
    assert_eq!(recovery, Recovery { events: 300, cut: None, new_epoch: false, renamed_after_crash: false });
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    assert_eq!((store.epoch(), store.last_seq(), store.last_time_ms()), (&*epoch, 300, event(300, &[]).time_ms));
    assert_eq!(store.durable(), 301);
    check_events(&read_all(&store, 1, 300, 1000), 1, 300);
    append_range(&store, 301, 310);
    store.make_durable(310).unwrap();
    check_events(&read_all(&store, 295, 310, 7), 295, 310);
}

#[test]
fn the_directory_is_private_and_holds_lock_epoch_and_segments() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("layout");
    let (store, _, _) = open(options(&tmp.data()));
    let mode = fs::metadata(tmp.data()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let pid = fs::read_to_string(tmp.data().join("lock")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    assert_eq!(fs::read_to_string(tmp.data().join("epoch")).unwrap(), format!("{}\n", store.epoch()));
    assert_eq!(segments(&tmp.data()), [tmp.data().join("00000000000000000001.log")]);
    append_range(&store, 1, 2);
    store.close().unwrap();
    let bytes = fs::read(tmp.data().join("00000000000000000001.log")).unwrap();
    assert_eq!(bytes.len(), 8 + 2 * 24 + line(1).len() + line(2).len());
    assert!(bytes.starts_with(b"MCHATLG1"));
}

#[test]
fn a_store_left_open_by_a_stopped_machine_gets_a_new_epoch_and_keeps_its_events() {
    let tmp = TempDir::new("boot");
    let (store, _, _) = open(options(&tmp.data()));
    let first = store.epoch().to_owned();
    append_range(&store, 1, 10);
    store.make_durable(10).unwrap();
    let running = fs::read_to_string(tmp.data().join("running")).unwrap();
    assert!(!running.trim().is_empty(), "the boot id is noted while open");
    drop(store);
    assert!(!tmp.data().join("running").exists(), "a clean close removes the note");

    // As chatd's kill -9 leaves it: the note, with this boot's id.
    fs::write(tmp.data().join("running"), &running).unwrap();
    let (store, recovery, _) = open(options(&tmp.data()));
    assert_eq!((store.epoch(), recovery.renamed_after_crash), (&*first, false));
    drop(store);

    // As a power cut leaves it: the note, with an earlier boot's id.
    fs::write(tmp.data().join("running"), "an-earlier-boot\n").unwrap();
    let (store, recovery, seen) = open(options(&tmp.data()));
    assert!(recovery.renamed_after_crash);
    assert_ne!(store.epoch(), first, "positions of a history that may have lost events need a new epoch");
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    check_events(&read_all(&store, 1, 10, 100), 1, 10);
}

#[test]
fn reads_cross_segment_boundaries() {
    let tmp = TempDir::new("ranges");
    let opts = Options { segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 100);
    store.make_durable(100).unwrap();
    assert!(segments(&tmp.data()).len() > 20, "{:?}", segments(&tmp.data()));
    for (from, to) in [(1, 100), (1, 1), (100, 100), (3, 4), (4, 5), (17, 83), (50, 49)] {
        for max in [1, 3, 1000] {
            check_events(&read_all(&store, from, to, max), from, to);
        }
    }
    drop(store);
    let (store, _, _) = open(opts);
    check_events(&read_all(&store, 2, 99, 10), 2, 99);
}

#[test]
fn retention_deletes_old_segments_and_keeps_the_newest_events() {
    let tmp = TempDir::new("retention");
    let opts = Options { keep: 10, segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 100);
    store.make_durable(100).unwrap();
    assert_eq!(store.first_kept(), 91);
    let on_disk = segments(&tmp.data());
    assert!(on_disk.len() <= 4, "{on_disk:?}");
    let first_on_disk: u64 = on_disk[0].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert!(first_on_disk <= 91, "{first_on_disk}");
    check_events(&read_all(&store, 91, 100, 100), 91, 100);
    let refused = store.read(90, 100).unwrap_err();
    assert!(refused.to_string().contains("no longer kept"), "{refused}");
    drop(store);

    let (store, recovery, seen) = open(opts);
    assert_eq!((recovery.events, seen), (10, (91..=100).collect::<Vec<_>>()));
    assert_eq!(store.first_kept(), 91);
}

#[test]
fn fewer_kept_events_at_open_delete_older_segments() {
    let tmp = TempDir::new("keep-less");
    let opts = Options { segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 100);
    drop(store);
    let before = segments(&tmp.data()).len();
    let (store, recovery, seen) = open(Options { keep: 5, ..opts });
    assert_eq!((recovery.events, seen), (5, (96..=100).collect::<Vec<_>>()));
    assert!(segments(&tmp.data()).len() < before);
    check_events(&read_all(&store, 96, 100, 10), 96, 100);
}

#[test]
fn a_reader_keeps_reading_a_segment_that_retention_deleted() {
    let tmp = TempDir::new("reader-retention");
    let opts = Options { keep: 20, segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts);
    append_range(&store, 1, 30);
    store.make_durable(30).unwrap();
    let mut reader = store.read(11, 30).unwrap();
    append_range(&store, 31, 100);
    assert!(store.first_kept() > 30);
    let mut out = Vec::new();
    while reader.next_chunk(&mut out, 4).unwrap() {}
    check_events(&out, 11, 30);
}

/// The path of the last segment file.
fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

#[test]
fn a_torn_last_record_is_cut_and_appending_goes_on_from_before_it() {
    let tmp = TempDir::new("torn");
    let opts = options(&tmp.data());
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 20);
    drop(store);
    let path = last_segment(&tmp.data());
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();

    let (store, recovery, seen) = open(opts.clone());
    let cut = recovery.cut.unwrap();
    assert!(cut.contains(&path.display().to_string()) && cut.contains("a record cut short"), "{cut}");
    assert!(cut.contains(&format!("{} bytes", 24 + line(20).len() - 5)), "{cut}");
    assert_eq!((recovery.events, seen.len(), store.last_seq()), (19, 19, 19));
    store.append(&event(20, b"MSG bea again\n"), false).unwrap();
    append_range(&store, 21, 25);
    drop(store);

    let (store, recovery, _) = open(opts);
    assert_eq!((recovery.cut, store.last_seq()), (None, 25));
    assert_eq!(read_all(&store, 20, 20, 1)[0].line, b"MSG bea again\n");
}

#[test]
fn a_last_segment_torn_to_nothing_leaves_the_one_before_it_last() {
    let tmp = TempDir::new("torn-to-nothing");
    let opts = Options { segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 10);
    drop(store);
    let path = last_segment(&tmp.data());
    let first: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(8 + 10).unwrap();

    let (store, recovery, seen) = open(opts);
    assert!(recovery.cut.unwrap().contains("a record header cut short"));
    assert_eq!(seen, (1..first).collect::<Vec<_>>());
    assert_eq!((store.last_seq(), store.last_time_ms()), (first - 1, event(first - 1, &[]).time_ms));
    append_range(&store, first, first + 3);
    store.make_durable(first + 3).unwrap();
    check_events(&read_all(&store, 1, first + 3, 100), 1, first + 3);
}

#[test]
fn a_bad_checksum_at_the_very_end_is_cut() {
    let tmp = TempDir::new("bad-crc-end");
    let opts = options(&tmp.data());
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 20);
    drop(store);
    let path = last_segment(&tmp.data());
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"X", len - 2).unwrap();
    drop(file);

    let (store, recovery, _) = open(opts);
    assert!(recovery.cut.unwrap().contains("checksum"));
    assert_eq!(store.last_seq(), 19);
    append_range(&store, 20, 21);
    store.make_durable(21).unwrap();
    check_events(&read_all(&store, 1, 21, 100), 1, 21);
}

/// Opens a history of 100 events in 200-byte segments, damages it with
/// `harm`, and returns the error the next open gives.
fn damaged_open(name: &str, harm: impl FnOnce(&[PathBuf])) -> String {
    let tmp = TempDir::new(name);
    let opts = Options { segment_bytes: 200, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 100);
    drop(store);
    harm(&segments(&tmp.data()));
    let err = open_err(opts.clone());
    // Nothing was changed: the same error again.
    assert_eq!(open_err(opts), err);
    err
}

fn flip(path: &Path, offset: u64) {
    let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();
}

#[test]
fn damage_before_the_end_fails_open_naming_the_file() {
    let mut named = String::new();
    let err = damaged_open("flip-middle", |files| {
        flip(&files[3], 8 + 24 + 2);
        named = files[3].display().to_string();
    });
    assert!(err.contains(&named) && err.contains("checksum") && err.contains("offset 8"), "{err}");
    assert!(err.contains("move this file and the segment files before it"), "{err}");

    let err = damaged_open("flip-last", |files| {
        flip(files.last().unwrap(), 8 + 24 + 2);
        named = files.last().unwrap().display().to_string();
    });
    assert!(err.contains(&named) && err.contains("checksum") && err.contains("more data after it"), "{err}");

    let err = damaged_open("missing", |files| {
        fs::remove_file(&files[5]).unwrap();
        named = files[6].display().to_string();
    });
    assert!(err.contains(&named) && err.contains("are missing"), "{err}");

    let err = damaged_open("magic", |files| {
        let file = fs::OpenOptions::new().write(true).open(&files[2]).unwrap();
        file.write_all_at(b"NOTALOG!", 0).unwrap();
        named = files[2].display().to_string();
    });
    assert!(err.contains(&named) && err.contains("magic") && err.contains("offset 0"), "{err}");

    let err = damaged_open("seq-gap", |files| {
        // A whole, sound record with the wrong seq, at the end.
        let mut bytes = Vec::new();
        record::encode(&mut bytes, &event(105, b"MSG x\n"));
        let last = files.last().unwrap();
        let len = fs::metadata(last).unwrap().len();
        fs::OpenOptions::new().write(true).open(last).unwrap().write_all_at(&bytes, len).unwrap();
    });
    assert!(err.contains("seq 105 where seq 101 belongs"), "{err}");
}

#[test]
fn a_second_open_is_refused_with_the_holders_pid_until_the_first_closes() {
    let tmp = TempDir::new("lock");
    let (store, _, _) = open(options(&tmp.data()));
    let err = open_err(options(&tmp.data()));
    let want = format!(
        "another chatd (pid {}) is using {}; stop it or give this one another --data-dir",
        std::process::id(),
        tmp.data().display()
    );
    assert_eq!(err, want);
    drop(store);
    let (store, recovery, _) = open(options(&tmp.data()));
    assert!(!recovery.new_epoch);
    drop(store);
}

#[test]
fn an_unwritable_directory_is_refused_clearly() {
    let tmp = TempDir::new("unwritable");
    fs::create_dir_all(&tmp.0).unwrap();
    // A regular file where the directory should be.
    fs::write(tmp.data(), b"").unwrap();
    let err = open_err(options(&tmp.data()));
    assert!(err.starts_with(&format!("cannot write to {}: ", tmp.data().display())), "{err}");
    assert!(err.ends_with("; choose a writable --data-dir"), "{err}");
}

#[test]
fn durable_follows_the_policy() {
    for sync in [SyncPolicy::EverySecond, SyncPolicy::Always] {
        let tmp = TempDir::new("durable");
        let (store, _, _) = open(Options { sync, ..options(&tmp.data()) });
        append_range(&store, 1, 5);
        assert_eq!(store.durable(), 1, "{sync:?}: appends only copy");
        store.make_durable(3).unwrap();
        assert_eq!(store.durable(), 6, "{sync:?}: one write covers all that is pending");
        store.make_durable(5).unwrap();
        let never = store.make_durable(6).unwrap_err();
        assert!(never.to_string().contains("never appended"), "{never}");
        // The sync thread writes within a second or so.
        append_range(&store, 6, 7);
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.durable() < 8 {
            assert!(Instant::now() < deadline, "{sync:?}: the sync thread never wrote");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn what_is_not_durable_is_not_read() {
    let tmp = TempDir::new("not-durable");
    let (store, _, _) = open(options(&tmp.data()));
    append_range(&store, 1, 3);
    store.make_durable(2).unwrap();
    append_range(&store, 4, 4);
    let refused = store.read(1, 4).unwrap_err();
    assert!(refused.to_string().contains("not durable"), "{refused}");
    check_events(&read_all(&store, 1, 3, 10), 1, 3);
}

#[test]
fn group_commit_serves_writers_while_appends_go_on() {
    let tmp = TempDir::new("group-commit");
    let (store, _, _) = open(Options { sync: SyncPolicy::Always, ..options(&tmp.data()) });
    let last = AtomicU64::new(0);
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while last.load(Ordering::SeqCst) < 2000 {
                    let upto = last.load(Ordering::SeqCst);
                    if upto > 0 {
                        store.make_durable(upto).unwrap();
                        assert!(store.durable() > upto);
                    }
                }
            });
        }
        for seq in 1..=2000 {
            store.append(&event(seq, &line(seq)), false).unwrap();
            last.store(seq, Ordering::SeqCst);
        }
    });
    store.make_durable(2000).unwrap();
    check_events(&read_all(&store, 1, 2000, 500), 1, 2000);
}

#[test]
fn big_lines_and_a_full_pending_buffer() {
    let tmp = TempDir::new("big");
    let (store, _, _) = open(options(&tmp.data()));
    let big: Vec<Vec<u8>> = (1..=5).map(|i| vec![b'a' + i as u8; 700 << 10]).collect();
    for (i, line) in big.iter().enumerate() {
        store.append(&event(i as u64 + 1, line), false).unwrap();
    }
    // More than FLUSH_AT was appended: what is pending stays below it.
    assert!(store.log.tail().pending_bytes() <= FLUSH_AT);
    store.make_durable(5).unwrap();
    let got = read_all(&store, 1, 5, 10);
    assert_eq!(got.iter().map(|e| &e.line).collect::<Vec<_>>(), big.iter().collect::<Vec<_>>());
}

#[test]
fn each_sees_exactly_the_kept_events_in_order() {
    let tmp = TempDir::new("each");
    let opts = Options { keep: 37, segment_bytes: 300, ..options(&tmp.data()) };
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 250);
    drop(store);
    let mut seen = Vec::new();
    let (store, recovery) = Store::open(opts, |ev| {
        assert_eq!(ev.line, line(ev.seq));
        seen.push(ev.seq);
    })
    .unwrap();
    assert_eq!(seen, (214..=250).collect::<Vec<_>>());
    assert_eq!((recovery.events, store.first_kept()), (37, 214));
}

#[test]
fn an_unfinished_new_segment_is_removed() {
    let tmp = TempDir::new("unfinished");
    let opts = options(&tmp.data());
    let (store, _, _) = open(opts.clone());
    append_range(&store, 1, 5);
    drop(store);
    // A crash between creating the next segment and writing its header,
    // and one between creating it and writing the last one's records.
    fs::write(tmp.data().join(segment::file_name(6)), b"MCH").unwrap();
    let (store, recovery, _) = open(opts.clone());
    assert!(recovery.cut.unwrap().contains("00000000000000000006.log"));
    append_range(&store, 6, 6);
    drop(store);
    fs::write(tmp.data().join(segment::file_name(9)), MAGIC).unwrap();
    let (store, recovery, _) = open(opts);
    assert!(recovery.cut.unwrap().contains("00000000000000000009.log"));
    assert_eq!(store.last_seq(), 6);
}

#[test]
fn urgent_appends_do_not_start_segments() {
    let tmp = TempDir::new("urgent");
    let (store, _, _) = open(Options { segment_bytes: 100, ..options(&tmp.data()) });
    // Two records of 57 bytes fill a segment.
    append_range(&store, 1, 4);
    assert_eq!(segments(&tmp.data()).len(), 2);
    for seq in 5..=8 {
        store.append(&event(seq, &line(seq)), true).unwrap();
    }
    assert_eq!(segments(&tmp.data()).len(), 2);
    append_range(&store, 9, 9);
    assert_eq!(segments(&tmp.data()).len(), 3);
    store.make_durable(9).unwrap();
    check_events(&read_all(&store, 1, 9, 100), 1, 9);
}

/// Runs `program` with `args`, saying why if it cannot.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
}

/// A 1 MiB tmpfs mounted at a path of its own, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf) -> Result<SmallDisk, String> {
        fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", path.to_str().unwrap()])?;
        Ok(SmallDisk(path))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &[self.0.to_str().unwrap()]) {
            eprintln!("could not unmount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn a_full_disk_refuses_events_and_keeps_the_accepted_ones() {
    let tmp = TempDir::new("full");
    let disk = match SmallDisk::mount(tmp.0.join("disk")) {
        Ok(disk) => disk,
        Err(why) => return println!("SKIPPED: cannot mount a small tmpfs: {why}"),
    };
    let data = disk.0.join("data");
    let filler = disk.0.join("filler");
    fs::write(&filler, vec![1u8; 600 << 10]).unwrap();
    let opts = Options { reserve: 8 << 10, segment_bytes: 64 << 10, ..options(&data) };
    let (store, _, _) = open(opts.clone());
    let mut accepted = 0;
    let full = loop {
        let seq = accepted + 1;
        match store.append(&event(seq, &line(seq)), false) {
            Ok(()) => accepted = seq,
            Err(AppendError::Full(e)) => break e,
            Err(e) => panic!("append {seq}: {e}"),
        }
        assert!(accepted < 100_000, "the disk never filled up");
    };
    assert!(segment::is_full(&full), "{full}");
    println!("the disk filled after {accepted} events in {} segments", segments(&data).len());
    assert_eq!(store.last_seq(), accepted);
    // The reserve still takes urgent events (members leaving).
    for seq in accepted + 1..=accepted + 20 {
        store.append(&event(seq, &line(seq)), true).unwrap();
    }
    accepted += 20;
    assert!(matches!(store.append(&event(accepted + 1, &line(accepted + 1)), false), Err(AppendError::Full(_))));
    store.make_durable(accepted).unwrap();
    check_events(&read_all(&store, 1, accepted, 1000), 1, accepted);

    fs::remove_file(&filler).unwrap();
    append_range(&store, accepted + 1, accepted + 100);
    accepted += 100;
    drop(store);
    let (store, recovery, _) = open(opts);
    assert_eq!((recovery.events, recovery.cut), (accepted, None));
    check_events(&read_all(&store, 1, accepted, 1000), 1, accepted);
    drop(store);
    drop(disk);
}

/// Start-up time with a million events of about 60 bytes:
/// `cargo test --release --lib store::tests::start_up -- --ignored --nocapture`.
#[test]
#[ignore]
fn start_up_with_a_million_events() {
    let tmp = TempDir::new("million");
    let opts = Options::new(tmp.data());
    let (store, _, _) = open(opts.clone());
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("MSG somebody a line of about sixty bytes, as chat goes: {i:03}\n").into_bytes())
        .collect();
    let started = Instant::now();
    for seq in 1..=1_000_000u64 {
        store.append(&event(seq, &lines[seq as usize % 1000]), false).unwrap();
    }
    store.make_durable(1_000_000).unwrap();
    let appending = started.elapsed();
    let started = Instant::now();
    store.close().unwrap();
    let closing = started.elapsed();
    drop(store);
    let bytes: u64 = segments(&tmp.data()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();

    let started = Instant::now();
    let mut count = 0u64;
    let (store, recovery) = Store::open(opts, |_| count += 1).unwrap();
    let opening = started.elapsed();
    assert_eq!((recovery.events, count), (1_000_000, 1_000_000));
    println!(
        "1,000,000 events of {} bytes: appended and written in {appending:?} ({:.0} events/s), \
         fdatasynced in {closing:?}; {bytes} bytes on disk ({:.1} a record); reopened in {opening:?}",
        lines[0].len(),
        1e6 / appending.as_secs_f64(),
        bytes as f64 / 1e6,
    );
    let started = Instant::now();
    let events = read_all(&store, 1, 1_000_000, 1000);
    println!("read back in {:?}", started.elapsed());
    assert_eq!(events.len(), 1_000_000);
}

/// Appends under `SyncPolicy::Always` while two threads make them durable:
/// `cargo test --release --lib store::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_under_always_with_group_commit() {
    let tmp = TempDir::new("throughput");
    let (store, _, _) = open(Options { sync: SyncPolicy::Always, ..Options::new(tmp.data()) });
    let line = b"MSG somebody a line of about sixty bytes, as chat goes: 000\n";
    let (events, last, syncs) = (300_000u64, AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while last.load(Ordering::SeqCst) < events {
                    let upto = last.load(Ordering::SeqCst);
                    if upto > 0 && store.durable() <= upto {
                        store.make_durable(upto).unwrap();
                        syncs.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        for seq in 1..=events {
            store.append(&event(seq, line), false).unwrap();
            last.store(seq, Ordering::SeqCst);
        }
    });
    store.make_durable(events).unwrap();
    let elapsed = started.elapsed();
    println!(
        "{events} events appended and fdatasynced in {elapsed:?} ({:.0} events/s), {} make_durable calls that waited",
        events as f64 / elapsed.as_secs_f64(),
        syncs.load(Ordering::SeqCst)
    );
    let (started, mut one_by_one) = (Instant::now(), 0);
    while started.elapsed() < Duration::from_secs(2) {
        let seq = events + one_by_one + 1;
        store.append(&event(seq, line), false).unwrap();
        store.make_durable(seq).unwrap();
        one_by_one += 1;
    }
    println!("one append and one fdatasync at a time: {:.0} events/s", one_by_one as f64 / 2.0);
}
