//! Waiting in `poll` on the socket and one more descriptor at once: a
//! client blocked on a quiet room still hears that its reader went away
//! (`chat-tail`), that input came (`chat-send`), or that a line was typed
//! (`chat`'s wake-up pipe).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A descriptor to watch, and the events that matter on it. With no events
/// at all, `poll` still reports `POLLERR` and `POLLHUP`: that is how a pipe
/// whose reader closed shows on its writing end.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'a> {
    pub fd: BorrowedFd<'a>,
    pub events: PollFlags,
}

impl<'a> Watch<'a> {
    /// Reports only errors and hang-ups on `fd`.
    pub fn hangup(fd: BorrowedFd<'a>) -> Watch<'a> {
        Watch { fd, events: PollFlags::empty() }
    }

    /// Reports `fd` readable (or at its end).
    pub fn readable(fd: BorrowedFd<'a>) -> Watch<'a> {
        Watch { fd, events: PollFlags::POLLIN }
    }
}

/// What a wait found ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// What the watched descriptor reported, if anything.
    pub watched: Option<PollFlags>,
    /// The socket has something to read (or is at its end).
    pub socket: bool,
}

/// Waits until `socket` is readable, `watch` reports something, or
/// `timeout` passes (`None`: no limit), and says which. Nothing ready means
/// the time is up or a signal came: the caller looks again.
pub fn wait(socket: Option<BorrowedFd<'_>>, watch: Option<Watch<'_>>, timeout: Option<Duration>) -> io::Result<Ready> {
    let mut fds = Vec::with_capacity(2);
    fds.extend(watch.map(|w| PollFd::new(w.fd, w.events)));
    fds.extend(socket.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Rounded up, so that a wait never ends just before its time.
        Some(t) => PollTimeout::try_from(t + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX),
    };
    match poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(Ready::default()),
        Err(e) => return Err(e.into()),
    }
    let fired = |fd: &PollFd<'_>| fd.revents().filter(|events| !events.is_empty());
    let watched = if watch.is_some() { fired(&fds[0]) } else { None };
    let socket = socket.is_some() && fds.last().and_then(fired).is_some();
    Ok(Ready { watched, socket })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_closed_reader_shows_as_a_hangup_on_a_pipe_writer() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let quiet = wait(None, Some(Watch::hangup(writer.as_fd())), Some(Duration::from_millis(10))).unwrap();
        assert_eq!(quiet, Ready::default());
        drop(reader);
        let fired = wait(None, Some(Watch::hangup(writer.as_fd())), None).unwrap().watched.unwrap();
        assert!(fired.intersects(PollFlags::POLLERR | PollFlags::POLLHUP), "{fired:?}");
    }

    #[test]
    fn both_the_socket_and_the_watched_descriptor_are_reported() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (mut c, d) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let got = wait(Some(b.as_fd()), Some(Watch::readable(d.as_fd())), None).unwrap();
        assert_eq!(got, Ready { watched: None, socket: true });
        c.write_all(b"y").unwrap();
        let got = wait(Some(b.as_fd()), Some(Watch::readable(d.as_fd())), None).unwrap();
        assert_eq!(got, Ready { watched: Some(PollFlags::POLLIN), socket: true });
    }
}
