//! The history on disk: [`Store`] behind the room's [`History`] interface,
//! and what start-up learns from it (who was still in the room, what was
//! repaired).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Config, Event, History, NotStored, Opened, Replay, SyncPolicy};
use crate::name::Name;
use crate::protocol::ServerLine;
use crate::store::{self, AppendError, Reader, Store, StoredEvent};

/// How often the same kind of trouble may be logged.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `LEFT <name> <reason>` record: room for one is kept back per
/// possible member, so leaving is stored even on a full disk.
const LEFT_RECORD: u64 = 24 + "LEFT  timeout\n".len() as u64 + 4 * crate::name::MAX_CHARS as u64;

#[derive(Debug)]
struct Disk {
    store: Store,
    last_complaint: Mutex<Option<Instant>>,
}

/// Opens the store in `config.dir`, keeping room for `members` leaves.
pub(super) fn open(config: &Config, members: usize) -> anyhow::Result<Opened> {
    let mut options = store::Options::new(&config.dir);
    options.keep = config.keep;
    options.reserve = LEFT_RECORD * members.max(1) as u64;
    options.sync = match config.sync {
        SyncPolicy::EverySecond => store::SyncPolicy::EverySecond,
        SyncPolicy::Always => store::SyncPolicy::Always,
    };
    let mut present = Present::default();
    let (store, recovery) = Store::open(options, |event| present.see(event.line))?;
    let new = if recovery.new_epoch { "new epoch" } else { "epoch" };
    let place = format!("in {} ({new} {}; keeping the last {})", config.dir.display(), store.epoch(), config.keep);
    let mut warnings: Vec<String> =
        recovery.cut.into_iter().map(|cut| format!("the history was repaired: {cut}")).collect();
    if recovery.renamed_after_crash {
        warnings.push(format!(
            "the computer stopped while chatd was running (a power cut?): the last second of the history may be \
             lost, so it goes on under a new epoch, {}; resuming clients are told MISSED ?",
            store.epoch()
        ));
    }
    let history = std::sync::Arc::new(Disk { store, last_complaint: Mutex::new(None) });
    Ok(Opened { history, present: present.names(), place: Some(place), warnings })
}

impl Disk {
    /// Logs trouble the room cannot report to anyone, now and then.
    fn complain(&self, what: &str, e: &io::Error) {
        let mut last = self.last_complaint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < COMPLAINT_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        eprintln!("chatd: cannot {what} the history in {}: {e}; events wait until it can", self.store.dir().display());
    }
}

impl History for Disk {
    fn epoch(&self) -> &str {
        self.store.epoch()
    }

    fn last_seq(&self) -> u64 {
        self.store.last_seq()
    }

    fn last_time_ms(&self) -> u64 {
        self.store.last_time_ms()
    }

    fn first_kept(&self) -> u64 {
        self.store.first_kept()
    }

    fn append(&self, seq: u64, time_ms: u64, line: &[u8], urgent: bool) -> Result<(), NotStored> {
        let event = store::Event { seq, time_ms, line };
        self.store.append(&event, urgent).map_err(|e| match e {
            AppendError::Full(e) => NotStored::Full(e),
            AppendError::Failed(e) => {
                self.complain("write", &e);
                NotStored::Failed(e)
            }
        })
    }

    fn durable(&self) -> u64 {
        self.store.durable()
    }

    fn make_durable(&self, seq: u64) -> io::Result<()> {
        self.store.make_durable(seq).inspect_err(|e| self.complain("write", e))
    }

    fn read(&self, from: u64, to: u64) -> io::Result<Box<dyn Replay>> {
        let reader = self.store.read(from, to).inspect_err(|e| self.complain("read", e))?;
        Ok(Box::new(DiskReplay { reader, chunk: Vec::new() }))
    }

    fn sync(&self) -> io::Result<()> {
        self.store.close()
    }
}

#[derive(Debug)]
struct DiskReplay {
    reader: Reader,
    chunk: Vec<StoredEvent>,
}

impl Replay for DiskReplay {
    fn next_chunk(&mut self, out: &mut Vec<Event>, max: usize) -> io::Result<bool> {
        let more = self.reader.next_chunk(&mut self.chunk, max)?;
        out.extend(self.chunk.drain(..).map(|e| Event { seq: e.seq, time_ms: e.time_ms, line: e.line }));
        Ok(more)
    }
}

/// Who is in the room, as the history tells it: every `JOINED` not yet
/// followed by its `LEFT`, in join order.
#[derive(Debug, Default)]
struct Present {
    /// By name key: when they joined (a count) and the name as written.
    members: HashMap<String, (u64, String)>,
    joins: u64,
}

impl Present {
    fn see(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line.strip_suffix(b"\n").unwrap_or(line)) else { return };
        let (name, joined) = match ServerLine::parse(text) {
            Ok(ServerLine::Joined(name)) => (name, true),
            Ok(ServerLine::Left { name, .. }) => (name, false),
            _ => return,
        };
        let Ok(key) = Name::parse(&name).map(|n| n.key().to_owned()) else { return };
        if joined {
            self.joins += 1;
            self.members.insert(key, (self.joins, name));
        } else {
            self.members.remove(&key);
        }
    }

    fn names(self) -> Vec<String> {
        let mut members: Vec<(u64, String)> = self.members.into_values().collect();
        members.sort_unstable();
        members.into_iter().map(|(_, name)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_members_are_those_joined_and_not_left_in_join_order() {
        let mut present = Present::default();
        for line in
            ["JOINED Ana\n", "JOINED Luis\n", "MSG Ana hola\n", "JOINED Eva\n", "LEFT ana exit\n", "JOINED Ana\n"]
        {
            present.see(line.as_bytes());
        }
        assert_eq!(present.names(), ["Luis", "Eva", "Ana"]);
    }
}
