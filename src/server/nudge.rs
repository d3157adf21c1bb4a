//! Waking one connection thread out of its `poll` without spending a
//! descriptor on it: a signal sent to that thread alone.
//!
//! A descriptor per connection (an eventfd) would double chatd's descriptors,
//! and the open-file limit is what caps a server with thousands of members.
//! The signal is SIGURG, ignored by default and used by nothing else here
//! (Go's runtime nudges its threads the same way). A connection thread keeps
//! it blocked except inside `ppoll`, so a nudge sent at any moment either
//! interrupts that `ppoll` or waits for the next one: none is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::room::Notify;

const SIGNAL: Signal = Signal::SIGURG;

#[derive(Debug, Default)]
pub(crate) struct Nudge {
    pending: AtomicBool,
    /// The thread to signal, while it runs.
    thread: Mutex<Option<Pthread>>,
}

/// The calling thread is the one nudged until this is dropped.
#[derive(Debug)]
pub(crate) struct Attached<'a> {
    nudge: &'a Nudge,
    /// The signal mask to wait with: the thread's own, less the signal.
    pub wait_mask: SigSet,
}

impl Nudge {
    /// Makes the calling thread the one nudged. A nudge may come at once: it
    /// is already pending then.
    pub fn attach(&self) -> std::io::Result<Attached<'_>> {
        install_handler()?;
        let mut only = SigSet::empty();
        only.add(SIGNAL);
        let mut wait_mask = only.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        wait_mask.remove(SIGNAL);
        *self.lock() = Some(pthread_self());
        Ok(Attached { nudge: self, wait_mask })
    }

    /// Interrupts the thread's wait, or its next one.
    pub fn nudge(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            if let Some(thread) = *self.lock() {
                let _ = pthread_kill(thread, SIGNAL);
            }
        }
    }

    /// Takes the pending nudge: call before looking at what may have
    /// changed, so that a nudge after the look interrupts the next wait.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pthread>> {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Notify for Nudge {
    fn notify(&self) {
        self.nudge();
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // Under the lock: no signal can be on its way to a thread that ended.
        *self.nudge.lock() = None;
    }
}

/// A handler must exist for the signal to interrupt `ppoll` at all: an
/// ignored signal is discarded. This one does nothing else.
fn install_handler() -> std::io::Result<()> {
    static INSTALLED: OnceLock<Result<(), std::io::ErrorKind>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        signal_hook::flag::register(SIGNAL as i32, Arc::new(AtomicBool::new(false))).map(drop).map_err(|e| e.kind())
    });
    installed.map_err(|kind| std::io::Error::new(kind, "cannot install the SIGURG handler"))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use nix::poll::{ppoll, PollFd, PollFlags};

    use super::*;

    /// Waits on a socket that never becomes readable, as a connection
    /// thread does, until nudged; returns how many waits it took.
    fn wait_until_nudged(nudge: Arc<Nudge>, attached_tx: mpsc::Sender<i32>) -> usize {
        let (quiet, _other) = UnixStream::pair().unwrap();
        let attached = nudge.attach().unwrap();
        attached_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        let mut waits = 0;
        loop {
            if nudge.take() {
                return waits;
            }
            waits += 1;
            let mut fds = [PollFd::new(quiet.as_fd(), PollFlags::POLLIN)];
            match ppoll(&mut fds, None, Some(attached.wait_mask)) {
                Err(nix::errno::Errno::EINTR) => {}
                other => panic!("the quiet socket woke the wait: {other:?}"),
            }
        }
    }

    /// Whether the thread is asleep in the kernel (in `ppoll`, here).
    fn is_asleep(tid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The state follows the command name in parentheses.
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
    }

    #[test]
    fn a_nudge_interrupts_the_wait_whenever_it_comes() {
        // Right after attaching (before the wait, most likely), and once
        // the thread sleeps in it: either way the thread wakes.
        for during_the_wait in [false, true] {
            let nudge = Arc::new(Nudge::default());
            let (attached_tx, attached_rx) = mpsc::channel();
            let (done_tx, done_rx) = mpsc::channel();
            let waiter = Arc::clone(&nudge);
            thread::spawn(move || done_tx.send(wait_until_nudged(waiter, attached_tx)).unwrap());
            let tid = attached_rx.recv().unwrap();
            while during_the_wait && !is_asleep(tid) {
                thread::yield_now();
            }
            nudge.nudge();
            let waits = done_rx.recv_timeout(Duration::from_secs(10)).expect("the nudge was lost");
            assert!(waits <= 2, "woke only after {waits} waits");
        }
    }

    #[test]
    fn a_nudge_before_attaching_is_kept() {
        let nudge = Arc::new(Nudge::default());
        nudge.nudge();
        let (attached_tx, _attached_rx) = mpsc::channel();
        assert_eq!(wait_until_nudged(nudge, attached_tx), 0);
    }
}
