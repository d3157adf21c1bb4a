//! Whether the machine stopped under a running chatd: `DIR/running` holds
//! the kernel's boot id while a store is open, and is removed by a clean
//! close.
//!
//! After `kill -9` of chatd the file is still there with this boot's id,
//! and nothing was lost: every event sent or confirmed had reached the
//! operating system, which still has it. Found with another boot's id, the
//! machine itself stopped (a power cut, a kernel crash), and under
//! `SyncPolicy::EverySecond` up to a second of events that clients may have
//! seen can be gone: their positions would then be given to other events.
//! The history gets a new epoch instead, so no client takes two events for
//! one position.

use std::fs;
use std::io;
use std::path::Path;

const FILE: &str = "running";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, or an empty one where the kernel does not say (then a
/// stop of the machine cannot be told from one of chatd).
fn boot_id() -> String {
    fs::read_to_string(BOOT_ID).map(|id| id.trim().to_owned()).unwrap_or_default()
}

/// Whether a store was open in `dir` when the machine last stopped.
pub(crate) fn machine_stopped_while_open(dir: &Path) -> io::Result<bool> {
    match fs::read_to_string(dir.join(FILE)) {
        Ok(id) => Ok(id.trim() != boot_id()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Notes that a store is open in `dir`, on this boot. The caller syncs the
/// directory.
pub(crate) fn mark_open(dir: &Path) -> io::Result<()> {
    let path = dir.join(FILE);
    fs::write(&path, format!("{}\n", boot_id()))?;
    fs::File::open(&path)?.sync_all()
}

/// Notes that the store in `dir` was closed cleanly.
pub(crate) fn mark_closed(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => fs::File::open(dir)?.sync_all(),
    }
}
