//! A file descriptor another thread can make readable: how a connection thread
//! blocked in `poll` on its socket learns that the room has news for it or
//! that the server is shutting down. An eventfd on Linux, a pipe elsewhere.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

#[derive(Debug)]
pub struct Wakeup {
    #[cfg(target_os = "linux")]
    fd: nix::sys::eventfd::EventFd,
    #[cfg(not(target_os = "linux"))]
    pipe: (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
}

impl Wakeup {
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Wakeup> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Wakeup { fd })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Wakeup> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (read, write) = nix::unistd::pipe()?;
        for fd in [&read, &write] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        Ok(Wakeup { pipe: (read, write) })
    }

    /// Makes the descriptor readable. Never blocks: a wake-up already
    /// pending is as good as a second one.
    pub fn wake(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.fd.write(1);
        #[cfg(not(target_os = "linux"))]
        let _ = nix::unistd::write(&self.pipe.1, &[1]);
    }

    /// Consumes pending wake-ups.
    pub fn clear(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.fd.read();
        #[cfg(not(target_os = "linux"))]
        {
            use std::os::fd::AsRawFd;
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(self.pipe.0.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        }
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        #[cfg(target_os = "linux")]
        return self.fd.as_fd();
        #[cfg(not(target_os = "linux"))]
        return self.pipe.0.as_fd();
    }
}
