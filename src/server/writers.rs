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

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::link::Link;
use crate::room::{Notify, Room};
use crate::wakeup::Wakeup;

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

#[derive(Debug)]
struct Shard {
    links: Mutex<HashMap<u64, Arc<Link>>>,
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
            let shard =
                Arc::new(Shard { links: Mutex::default(), epoll, bell: Arc::clone(&bell), stop: AtomicBool::new(false) });
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
        let mut links = shard.lock();
        // Edge-triggered: one event each time a full socket gets room again.
        let interest = EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        shard.epoll.add(&link.stream, EpollEvent::new(interest, link.id))?;
        links.insert(link.id, Arc::clone(link));
        drop(links);
        // It may have missed news while not yet attached.
        shard.bell.notify_always();
        Ok(Attachment(i))
    }

    /// Takes the link back: once this returns, no writer touches it again.
    pub fn detach(&self, link: &Link, at: Attachment) {
        let shard = &self.shards[at.0];
        let mut links = shard.lock();
        let _ = shard.epoll.delete(&link.stream);
        links.remove(&link.id);
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
    fn notify_always(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        self.wakeup.wake();
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, room: &Room) {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut timeout = EpollTimeout::NONE;
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
            self.bell.asleep.store(false, Ordering::SeqCst);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let head = room.head();
            let links = self.lock();
            for event in &events[..ready] {
                match event.data() {
                    BELL => self.bell.wakeup.clear(),
                    id => {
                        if let Some(link) = links.get(&id) {
                            link.deliver();
                        }
                    }
                }
            }
            for link in links.values() {
                if link.is_due(head) {
                    link.deliver();
                }
            }
            drop(links);
            // Asleep from here: an event appended after this is either seen
            // below or rings the bell.
            self.bell.asleep.store(true, Ordering::SeqCst);
            timeout = if room.head() != head { EpollTimeout::ZERO } else { EpollTimeout::NONE };
        }
    }
}
