//! The writer threads: a few threads (one per CPU) that send the room's
//! events to every member, so that a message costs a few wake-ups rather than
//! one per member.
//!
//! Each connection thread still reads, answers and ends its own client. Once
//! joined, its link is also attached to one writer. A writer sleeps in
//! `epoll` until the room's log grows (the room rings its bell, only when it
//! sleeps) or a full socket has room again. It then walks its links and
//! writes to each member everything it has not been sent, in one `writev`.
//! The busier the room, the more each walk finds to send per member: batching
//! comes from the load itself, with no timer and no added delay.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::link::Link;
use super::wakeup::Wakeup;
use crate::room::{Notify, Room};

/// Each writer's stack: it only walks links and writes.
const WRITER_STACK: usize = 256 * 1024;

/// The epoll token of a writer's bell (link ids start at 1).
const BELL: u64 = 0;

#[derive(Debug)]
pub(crate) struct Writers {
    shards: Vec<Arc<Shard>>,
    next: AtomicUsize,
    threads: Vec<JoinHandle<()>>,
}

/// One writer's share of the links. The writer keeps its links to itself
/// while it walks them; others only queue arrivals and departures, so a join
/// never waits for a walk to end.
#[derive(Debug)]
struct Shard {
    arriving: Mutex<Vec<Arc<Link>>>,
    leaving: Mutex<Vec<u64>>,
    epoll: Epoll,
    bell: Arc<Bell>,
    stop: AtomicBool,
}

/// How the room wakes a writer: only when it sleeps, so a busy room costs no
/// system call per message.
#[derive(Debug)]
struct Bell {
    asleep: AtomicBool,
    wakeup: Wakeup,
}

impl Notify for Bell {
    fn notify(&self) {
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.wakeup.wake();
        }
    }
}

/// Where a link is attached, for [`Writers::detach`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attachment(usize);

impl Writers {
    /// Starts `count` writer threads for `room`.
    pub fn start(room: &Arc<Room>, count: usize) -> io::Result<Writers> {
        let mut writers = Writers { shards: Vec::new(), next: AtomicUsize::new(0), threads: Vec::new() };
        for i in 0..count.max(1) {
            let bell = Arc::new(Bell { asleep: AtomicBool::new(false), wakeup: Wakeup::new()? });
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            epoll.add(bell.wakeup.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, BELL))?;
            let shard = Arc::new(Shard {
                arriving: Mutex::default(),
                leaving: Mutex::default(),
                epoll,
                bell: Arc::clone(&bell),
                stop: AtomicBool::new(false),
            });
            room.listen(bell);
            let (shard2, room) = (Arc::clone(&shard), Arc::clone(room));
            let thread = thread::Builder::new()
                .name(format!("writer-{i}"))
                .stack_size(WRITER_STACK)
                .spawn(move || shard2.run(&room))?;
            writers.shards.push(shard);
            writers.threads.push(thread);
        }
        Ok(writers)
    }

    /// Has a writer send this joined member its events from now on.
    pub fn attach(&self, link: &Arc<Link>) -> io::Result<Attachment> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let shard = &self.shards[i];
        lock(&shard.arriving).push(Arc::clone(link));
        // Edge-triggered: one event each time a full socket gets room again.
        let interest = EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        if let Err(e) = shard.epoll.add(&link.stream, EpollEvent::new(interest, link.id)) {
            self.detach(link, Attachment(i));
            return Err(e.into());
        }
        // It may have missed news while not yet attached.
        shard.bell.ring();
        Ok(Attachment(i))
    }

    /// Takes the link back. Its writer may still be in the middle of a
    /// delivery, which the outbox's lock orders with the caller's writes; it
    /// lets the link go before its next walk.
    pub fn detach(&self, link: &Link, at: Attachment) {
        let shard = &self.shards[at.0];
        let _ = shard.epoll.delete(&link.stream);
        lock(&shard.leaving).push(link.id);
        shard.bell.ring();
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for shard in &self.shards {
            shard.stop.store(true, Ordering::SeqCst);
            shard.bell.wakeup.wake();
        }
        for thread in self.threads.drain(..) {
            // Not from a writer itself (a writer holds no `Writers`).
            let _ = thread.join();
        }
    }
}

impl Bell {
    fn ring(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        self.wakeup.wake();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    fn run(&self, room: &Room) {
        let mut links: HashMap<u64, Arc<Link>> = HashMap::new();
        let mut events = vec![EpollEvent::empty(); 256];
        let mut timeout = EpollTimeout::NONE;
        let gather = RefCell::new(Vec::with_capacity(super::wire::MAX_GATHER));
        loop {
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                // Not expected of a valid epoll; do not spin on it.
                Err(_) => {
                    thread::sleep(std::time::Duration::from_millis(10));
                    0
                }
            };
            // Before looking at anything the bell may announce: a ring after
            // this is kept for the next wait.
            if events[..ready].iter().any(|e| e.data() == BELL) {
                self.bell.wakeup.clear();
            }
            self.bell.asleep.store(false, Ordering::SeqCst);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            for link in lock(&self.arriving).drain(..) {
                links.insert(link.id, link);
            }
            for id in lock(&self.leaving).drain(..) {
                links.remove(&id);
            }
            let head = room.head();
            // Whether a member was left with more to send after its turn.
            let mut unfinished = false;
            for event in &events[..ready] {
                if let Some(link) = links.get(&event.data()) {
                    unfinished |= link.deliver(&gather);
                }
            }
            for link in links.values() {
                if link.is_due(head) {
                    unfinished |= link.deliver(&gather);
                }
            }
            // Asleep from here: an event appended after this is either seen
            // below or rings the bell.
            self.bell.asleep.store(true, Ordering::SeqCst);
            timeout = if unfinished || room.head() != head { EpollTimeout::ZERO } else { EpollTimeout::NONE };
        }
    }
}
