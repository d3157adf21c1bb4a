//! A descriptor another thread can make readable: how the room, or a
//! connection handing over its client, wakes a writer thread asleep in
//! `epoll`. An eventfd; chatd is Linux-only (see README, Platforms).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug)]
pub(crate) struct Wakeup {
    fd: EventFd,
}

impl Wakeup {
    pub fn new() -> io::Result<Wakeup> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Wakeup { fd })
    }

    /// Makes the descriptor readable. Never blocks: a wake-up already
    /// pending is as good as a second one.
    pub fn wake(&self) {
        let _ = self.fd.write(1);
    }

    /// Consumes pending wake-ups.
    pub fn clear(&self) {
        let _ = self.fd.read();
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
