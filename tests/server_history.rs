//! Version 2, the room remembers: positions, tags, history, resuming, taking
//! a membership over, and a store that survives restarts, `kill -9`, torn
//! files and a full disk. Real chatd processes on real disks.

use std::path::{Path, PathBuf};
use std::process::Command;

use minichat::protocol::{parse_time, ServerLine, Tags};
use nix::sys::signal::Signal;

use crate::util::netns;
use crate::util::{Chatd, Client, TempDir};

/// A line split into its tags and the protocol line.
fn tagged(line: &str) -> (Tags, ServerLine) {
    ServerLine::parse_tagged(line).unwrap_or_else(|e| panic!("{e}"))
}

/// What an `OK JOIN` with tags said: epoch, last position of the past, token.
fn ok_join(client: &mut Client, name: &str) -> (String, u64, String) {
    let line = client.recv();
    let (tags, rest) = tagged(&line);
    assert_eq!(rest, ServerLine::OkJoin(name.into()), "{line:?}");
    (tags.epoch.expect("epoch"), tags.seq.expect("seq"), tags.token.expect("token"))
}

/// Connects, asks for tags, and joins with `options` after the name.
fn join_tagged(chatd: &Chatd, name: &str, options: &str) -> (Client, (String, u64, String)) {
    let mut client = chatd.connect();
    client.send("TAGS");
    client.expect("OK TAGS");
    client.send(&format!("JOIN {name}{options}"));
    let joined = ok_join(&mut client, name);
    (client, joined)
}

/// The lines before the `PONG`, without their tags.
fn untagged(lines: &[String]) -> Vec<String> {
    lines.iter().map(|line| tagged(line).1.to_string()).collect()
}

/// The positions of tagged lines.
fn seqs(lines: &[String]) -> Vec<u64> {
    lines.iter().map(|line| tagged(line).0.seq.unwrap_or_else(|| panic!("no seq in {line:?}"))).collect()
}

/// Stops chatd cleanly, with SIGTERM.
fn stop(mut chatd: Chatd) {
    chatd.signal(Signal::SIGTERM);
    assert!(chatd.wait().success(), "{}", chatd.stderr());
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the data directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_version_1_client_sees_no_tags_and_no_history() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("MSG before");
    ana.sync();
    let mut luis = chatd.join("Luis");
    luis.expect_quiet();
    ana.send("MSG after");
    // Ana's PONG proves her message was taken before Luis's PING is sent.
    assert_eq!(ana.sync(), ["JOINED Luis"]);
    assert_eq!(luis.sync(), ["MSG Ana after"]);
}

#[test]
fn tags_give_positions_times_epoch_and_a_token() {
    let chatd = Chatd::start(&[]);
    let before = minichat::protocol::now_ms();
    let (mut ana, (epoch, seq, token)) = join_tagged(&chatd, "Ana", "");
    assert_eq!(seq, 0, "a room with no events yet");
    assert!(minichat::protocol::is_epoch(&epoch), "{epoch:?}");
    // 128 random bits take at least 22 letters of 62.
    assert!(token.len() >= 22 && token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token:?}");
    let mut luis = chatd.join("Luis");
    luis.send("MSG hola");
    luis.sync();
    let lines = ana.sync();
    assert_eq!(untagged(&lines), ["JOINED Luis", "MSG Luis hola"]);
    assert_eq!(seqs(&lines), [2, 3], "Ana's own JOINED is 1");
    let times: Vec<u64> = lines.iter().map(|l| tagged(l).0.time_ms().expect("a time")).collect();
    let after = minichat::protocol::now_ms();
    assert!(times.iter().all(|&t| before <= t && t <= after), "{times:?} not within {before}..{after}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times go backwards: {times:?}");
    assert!(lines[0].contains("time=") && lines[0].ends_with("Z JOINED Luis"), "{:?}", lines[0]);
    assert_eq!(parse_time("2026-11-30T13:40:01.123Z"), Some(1_796_046_001_123));
    // A PONG says where its PING fell: after every event so far.
    ana.send("PING here");
    assert_eq!(ana.recv(), "@seq=3 PONG here");
}

#[test]
fn last_replays_the_latest_events_then_live_ones() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    for i in 1..=5 {
        ana.send(&format!("MSG m{i}"));
    }
    ana.sync();
    let (mut luis, (_, past, _)) = join_tagged(&chatd, "Luis", " LAST 3");
    assert_eq!(past, 6, "JOINED Ana and five messages");
    ana.send("MSG live");
    ana.sync();
    let lines = luis.sync();
    assert_eq!(untagged(&lines), ["MSG Ana m3", "MSG Ana m4", "MSG Ana m5", "MSG Ana live"]);
    assert_eq!(seqs(&lines), [4, 5, 6, 8], "7 is Luis's own JOINED");
    // Without tags, and LAST 0, and more than there is.
    let mut eva = chatd.connect();
    eva.send("JOIN Eva last 100");
    eva.expect("OK JOIN Eva");
    let all = eva.sync();
    assert_eq!(all.first().map(String::as_str), Some("JOINED Ana"));
    assert_eq!(all.len(), 8, "{all:?}");
    let mut sol = chatd.connect();
    sol.send("JOIN Sol LAST 0");
    sol.expect("OK JOIN Sol");
    sol.expect_quiet();
}

#[test]
fn a_replay_includes_the_members_own_messages_and_comes_before_any_reply() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("MSG mine");
    ana.send("EXIT");
    ana.expect_closed_after("BYE exit");
    let mut again = chatd.connect();
    // The PING is sent with the JOIN: its PONG must wait for the replay.
    again.send("JOIN Ana LAST 10\nPING early");
    again.expect("OK JOIN Ana");
    assert_eq!(again.sync_with("early"), ["JOINED Ana", "MSG Ana mine", "LEFT Ana exit"]);
}

#[test]
fn since_resumes_without_losing_or_repeating() {
    let chatd = Chatd::start(&[]);
    let (mut luis, (epoch, _, _)) = join_tagged(&chatd, "Luis", "");
    let mut ana = chatd.join("Ana");
    ana.send("MSG one");
    ana.sync();
    let lines = luis.sync();
    let last = *seqs(&lines).last().unwrap();
    drop(luis);
    // chatd notices the closed connection on its own time: wait for it, so
    // that Luis's leaving comes before Ana's next messages.
    ana.expect("LEFT Luis lost");
    ana.send("MSG two");
    ana.send("MSG three");
    ana.sync();
    let (mut luis, (_, past, _)) = join_tagged(&chatd, "Luis", &format!(" SINCE {epoch}:{last}"));
    let replay = luis.sync();
    assert_eq!(untagged(&replay), ["LEFT Luis lost", "MSG Ana two", "MSG Ana three"]);
    assert_eq!(*seqs(&replay).last().unwrap(), past);
    // Up to date (Luis's own JOINED came after `past`): nothing.
    let mut up_to_date = chatd.connect();
    up_to_date.send(&format!("JOIN Eva SINCE {epoch}:{}", past + 1));
    up_to_date.expect("OK JOIN Eva");
    up_to_date.expect_quiet();
}

#[test]
fn missed_says_how_much_of_the_asked_replay_is_gone() {
    let chatd = Chatd::start(&["--history", "5"]);
    let (mut ana, (epoch, _, _)) = join_tagged(&chatd, "Ana", "");
    for i in 1..=19 {
        ana.send(&format!("MSG m{i}"));
    }
    ana.sync();
    // 20 events; the last 5 (16..=20) are kept; SINCE 2 asked for 3..=20.
    let mut luis = chatd.connect();
    luis.send(&format!("JOIN Luis SINCE {epoch}:2"));
    luis.expect("OK JOIN Luis");
    luis.expect("MISSED 13");
    assert_eq!(luis.sync(), ["MSG Ana m15", "MSG Ana m16", "MSG Ana m17", "MSG Ana m18", "MSG Ana m19"]);
    // Another epoch, and a position past the end: unknown.
    for position in ["someoneelse:3".to_owned(), format!("{epoch}:999")] {
        let mut eva = chatd.connect();
        eva.send(&format!("JOIN Eva SINCE {position}"));
        eva.expect("OK JOIN Eva");
        eva.expect("MISSED ?");
        let replay = eva.sync();
        assert_eq!(replay.len(), 5, "the kept events follow MISSED ?: {replay:?}");
        eva.send("EXIT");
        eva.expect_closed_after("BYE exit");
    }
}

#[test]
fn bad_options_are_refused_and_the_client_is_not_joined() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    for line in [
        "JOIN Ana LAST x",
        "JOIN Ana LAST 1 SINCE a:1",
        "JOIN Ana SINCE nope",
        "JOIN Ana TOKEN",
        "JOIN Ana LAST 1 LAST 2",
    ] {
        client.send(line);
        client.expect_prefix("ERR BAD_OPTION ");
    }
    client.send("MSG hi");
    client.expect_prefix("ERR NOT_JOINED ");
    client.send("JOIN Ana Maria");
    client.expect_prefix("ERR BAD_NAME ");
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

#[test]
fn a_token_takes_the_membership_over_while_the_old_connection_is_open() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("Watcher");
    let (mut old, (epoch, last_seen, token)) = join_tagged(&chatd, "Ana", "");
    old.send("MSG before the drop");
    assert_eq!(old.sync(), Vec::<String>::new());
    watcher.send("MSG while Ana is away");
    watcher.sync();
    // The old connection is still open: the server has not noticed anything.
    let (mut new, (_, past, new_token)) =
        join_tagged(&chatd, "Ana", &format!(" TOKEN {token} SINCE {epoch}:{last_seen}"));
    assert_ne!(new_token, token, "each OK JOIN hands out a new token");
    let replay = ["JOINED Ana", "MSG Ana before the drop", "MSG Watcher while Ana is away"];
    assert_eq!(untagged(&new.sync()), replay);
    assert_eq!(untagged(&old.recv_all()), ["MSG Watcher while Ana is away", "BYE replaced"]);
    watcher.send("MSG after");
    assert_eq!(watcher.sync(), Vec::<String>::new(), "no LEFT and no JOINED for a takeover");
    let lines = new.sync();
    assert_eq!(untagged(&lines), ["MSG Watcher after"]);
    assert_eq!(seqs(&lines), [past + 1]);
    new.send("MSG from the new one");
    new.sync();
    assert_eq!(watcher.sync(), ["MSG Ana from the new one"]);
    // A stale token is no token: the name is taken.
    let mut thief = chatd.connect();
    thief.send(&format!("JOIN Ana TOKEN {token}"));
    thief.expect_prefix("ERR NAME_TAKEN ");
    assert_eq!(chatd.stderr().matches("took over").count(), 1, "{}", chatd.stderr());
}

#[test]
fn a_restart_keeps_the_history_and_the_positions_and_records_who_was_gone() {
    let data = TempDir::new("restart");
    let chatd = Chatd::start_in(data.path(), &[]);
    assert!(
        chatd.startup.iter().any(|l| l.starts_with("history: 0 events") && l.contains(&*data.path().to_string_lossy())),
        "{:?}",
        chatd.startup
    );
    let (mut ana, (epoch, _, _)) = join_tagged(&chatd, "Ana", "");
    let _luis = chatd.join("Luis");
    ana.send("MSG before the restart");
    let last = *seqs(&ana.sync()).last().unwrap();
    stop(chatd);
    let chatd = Chatd::start_in(data.path(), &[]);
    assert!(chatd.startup.iter().any(|l| l.starts_with("history: 5 events")), "{:?}", chatd.startup);
    let (mut eva, (epoch2, past, _)) = join_tagged(&chatd, "Eva", " LAST 10");
    assert_eq!(epoch2, epoch, "the epoch stays while the history is kept");
    let replay = eva.sync();
    let want = ["JOINED Ana", "JOINED Luis", "MSG Ana before the restart", "LEFT Ana lost", "LEFT Luis lost"];
    assert_eq!(untagged(&replay), want);
    assert_eq!(seqs(&replay), [1, 2, 3, 4, 5]);
    // Ana saw up to Luis's JOINED; her own message was 3; two LEFTs since.
    assert_eq!((last, past), (2, 5));
}

#[test]
fn every_acknowledged_message_survives_kill_9_in_order_and_once() {
    let data = TempDir::new("kill9");
    let chatd = Chatd::start_in(data.path(), &[]);
    let mut talker = chatd.join("talker");
    let mut acknowledged = 0;
    for batch in 0..20 {
        for i in 0..50 {
            talker.send(&format!("MSG {}", batch * 50 + i));
        }
        talker.sync();
        acknowledged += 50;
    }
    // More in flight, unacknowledged, while the server dies.
    for i in 0..500 {
        talker.send(&format!("MSG {}", acknowledged + i));
    }
    chatd.signal(Signal::SIGKILL);
    drop(chatd);
    let chatd = Chatd::start_in(data.path(), &[]);
    let mut reader = chatd.connect();
    reader.send("JOIN reader LAST 100000");
    reader.expect("OK JOIN reader");
    let replay = reader.sync();
    let texts: Vec<usize> = replay
        .iter()
        .filter_map(|line| line.strip_prefix("MSG talker "))
        .map(|text| text.parse().expect("a number"))
        .collect();
    assert!(texts.len() >= acknowledged, "{} of {acknowledged} acknowledged messages kept", texts.len());
    assert!(texts.iter().enumerate().all(|(i, &n)| i == n), "out of order or repeated");
    assert_eq!(replay.last().map(String::as_str), Some("LEFT talker lost"));
}

#[test]
fn a_torn_last_record_is_cut_and_logged() {
    let data = TempDir::new("torn");
    let chatd = Chatd::start_in(data.path(), &[]);
    let mut ana = chatd.join("Ana");
    ana.send("MSG kept");
    ana.sync();
    chatd.signal(Signal::SIGKILL);
    drop(chatd);
    let last = segments(data.path()).pop().expect("a segment");
    let mut file = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
    // The start of a record whose end never reached the disk.
    std::io::Write::write_all(&mut file, &[40, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(file);
    let chatd = Chatd::start_in(data.path(), &[]);
    chatd.expect_log("cut");
    let mut luis = chatd.connect();
    luis.send("JOIN Luis LAST 10");
    luis.expect("OK JOIN Luis");
    assert_eq!(luis.sync(), ["JOINED Ana", "MSG Ana kept", "LEFT Ana lost"]);
}

#[test]
fn damage_before_the_end_stops_start_up_naming_the_file() {
    let data = TempDir::new("damaged");
    let chatd = Chatd::start_in(data.path(), &[]);
    let mut ana = chatd.join("Ana");
    for i in 0..10 {
        ana.send(&format!("MSG message number {i}"));
    }
    ana.sync();
    stop(chatd);
    let segment = segments(data.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    let (status, log) = Chatd::spawn(data.path(), &[]).exited();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&*segment.to_string_lossy()), "the error names the file: {log}");
}

#[test]
fn a_second_chatd_on_one_directory_is_refused() {
    let data = TempDir::new("two");
    let first = Chatd::start_in(data.path(), &[]);
    let (status, log) = Chatd::spawn(data.path(), &[]).exited();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("pid {}", first.pid())) && log.contains("--data-dir"), "{log}");
    first.connect();
}

#[test]
fn a_directory_that_cannot_be_written_is_refused_at_start_up() {
    let data = TempDir::new("unwritable");
    // Root may write anywhere; a file in the way of the directory stops anyone.
    let blocked = data.path().join("a-file");
    std::fs::write(&blocked, "not a directory").unwrap();
    let (status, log) = Chatd::spawn(&blocked.join("history"), &[]).exited();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("a-file"), "{log}");
}

#[test]
fn history_0_keeps_nothing_and_creates_no_store_but_the_certificate() {
    let data = TempDir::new("nohistory");
    let dir = data.path().join("never");
    let chatd = Chatd::start_in(&dir, &["--history", "0"]);
    assert!(chatd.startup.iter().any(|l| l.starts_with("history: off")), "{:?}", chatd.startup);
    let mut ana = chatd.join("Ana");
    ana.send("MSG gone");
    ana.sync();
    let mut luis = chatd.connect();
    luis.send("JOIN Luis LAST 10");
    luis.expect("OK JOIN Luis");
    luis.expect_quiet();
    // Only the TLS certificate, which must outlive the process for the
    // clients that remembered it.
    let made: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(made, ["tls.pem"], "--history 0 made more in {}", dir.display());
}

/// A small tmpfs of the test's own, unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = TempDir::new("small-disk");
        let path = dir.path().to_str().ok_or("a path that is not UTF-8")?;
        netns::run(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path])?;
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_messages_with_an_error_then_takes_them_again() {
    let disk = match SmallDisk::mount("2m") {
        Ok(disk) => disk,
        Err(why) => return netns::skip(&format!("cannot mount a small tmpfs: {why}")),
    };
    let store = disk.path().join("history");
    let chatd = Chatd::start_in(&store, &[]);
    let (mut ana, (epoch, _, _)) = join_tagged(&chatd, "Ana", "");
    let mut luis = chatd.join("Luis");
    // Fill the disk to the last byte beside the store.
    let filler = disk.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![b'x'; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let _ = std::io::Write::write_all(&mut file, b"x");
    drop(file);
    let text = "y".repeat(3000);
    let mut refused = None;
    for i in 0..2000 {
        luis.send(&format!("MSG {i} {text}"));
        let answer = luis.sync();
        if let Some(err) = answer.iter().find(|l| l.starts_with("ERR ")) {
            refused = Some((i, err.clone()));
            break;
        }
    }
    let (refused_at, err) = refused.expect("a message refused once the disk was full");
    assert!(err.starts_with("ERR UNAVAILABLE ") && err.contains("disk is full"), "{err}");
    // Space comes back: messages are taken again.
    std::fs::remove_file(&filler).unwrap();
    luis.send("MSG after");
    luis.expect_quiet();
    // Everyone got every accepted message, in order, and nothing refused.
    let got = untagged(&ana.sync());
    let want: Vec<String> =
        (0..refused_at).map(|i| format!("MSG Luis {i} {text}")).chain(["MSG Luis after".to_owned()]).collect();
    assert_eq!(got.len(), want.len() + 1);
    assert_eq!(got[0], "JOINED Luis");
    assert!(got[1..] == want[..], "a refused message was delivered, or an accepted one lost");
    // And the history on the small disk has them too, after a restart.
    stop(chatd);
    let chatd = Chatd::start_in(&store, &[]);
    let mut reader = chatd.connect();
    reader.send(&format!("JOIN reader SINCE {epoch}:1"));
    reader.expect("OK JOIN reader");
    let replay = reader.sync();
    let msgs: Vec<&String> = replay.iter().filter(|l| l.starts_with("MSG ")).collect();
    assert_eq!(msgs.len(), want.len(), "the store lost or gained messages");
}
