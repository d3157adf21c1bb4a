//! The shutdown request: SIGTERM or SIGINT, or a call to `trigger`, makes a
//! descriptor readable that the accept loop polls beside the listener, so a
//! blocked `accept` wakes at once. A second signal exits at once.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

#[derive(Debug)]
pub struct ShutdownSignal {
    read: UnixStream,
    write: UnixStream,
    requested: Arc<AtomicBool>,
}

impl ShutdownSignal {
    /// A signal that only `trigger` fires.
    pub fn new() -> io::Result<ShutdownSignal> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(ShutdownSignal { read, write, requested: Arc::new(AtomicBool::new(false)) })
    }

    /// A signal fired by SIGTERM and SIGINT. While the first is being handled,
    /// a second ends the process at once with status 128 + its number, as a
    /// person pressing Ctrl-C twice expects.
    pub fn on_signals() -> io::Result<ShutdownSignal> {
        let signal = ShutdownSignal::new()?;
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&signal.requested))?;
            signal_hook::flag::register(sig, Arc::clone(&signal.requested))?;
            signal_hook::low_level::pipe::register(sig, signal.write.try_clone()?)?;
        }
        Ok(signal)
    }

    /// Asks for a shutdown, as a signal would.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = (&self.write).write(&[1]);
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

impl AsFd for ShutdownSignal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}
