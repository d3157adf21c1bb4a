//! The data directory's lock: one chatd at a time. An exclusive `flock` on
//! `DIR/lock`, held as long as the store is open and released by the kernel
//! however the process ends, so a crash never leaves a stale lock; the file
//! holds the holder's pid, for the message the next one gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock of `dir`, or says who holds it.
    pub fn take(dir: &Path) -> anyhow::Result<DirLock> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| unwritable(dir, &e))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let pid = if pid.is_empty() { "unknown" } else { pid };
                return Err(anyhow!(
                    "another chatd (pid {pid}) is using {}; stop it or give this one another --data-dir",
                    dir.display()
                ));
            }
            Err((_, e)) => return Err(anyhow!("cannot lock {}: {e}", path.display())),
        };
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(|e| unwritable(dir, &e))?;
        Ok(DirLock { _file: file })
    }
}

/// The error for a data directory chatd cannot write to.
pub(crate) fn unwritable(dir: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot write to {}: {e}; choose a writable --data-dir", dir.display())
}
