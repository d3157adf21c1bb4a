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
