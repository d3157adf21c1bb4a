//! The socket as a connection reads and writes it: plain text, or through
//! TLS once a handshake made it so. Everything above (the outbox, the
//! connection's line reader) is the same either way.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::sys::socket::{sendmsg, MsgFlags, SockaddrStorage};

use crate::tls::Session;

/// Most bytes gathered into one buffer for one `sendmsg`.
pub(crate) const MAX_GATHER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Wire<'a> {
    pub stream: &'a TcpStream,
    pub tls: Option<&'a Session>,
    /// A writer thread's buffer to gather short lines in (plain text).
    /// Only writer threads have one: a buffer a connection thread used
    /// would stay with it, and there are as many of those as members.
    pub gather: Option<&'a RefCell<Vec<u8>>>,
}

impl Wire<'_> {
    /// Sends what the socket takes of `slices` in one `sendmsg` (through
    /// rustls with TLS); `WouldBlock` when it takes nothing.
    pub fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.tls {
            Some(tls) => tls.send(self.stream, slices),
            None => {
                // Not `writev`: a client that went away is an error rather
                // than SIGPIPE, so a program embedding the server need not
                // ignore that signal.
                let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
                let fd = self.stream.as_raw_fd();
                let Some(gather) = self.gather.filter(|_| slices.len() > 2) else {
                    return Ok(sendmsg::<SockaddrStorage>(fd, slices, &[], flags, None)?);
                };
                // Many short lines: the kernel copies one buffer much faster
                // than as many pieces of one line each, and the copy into it
                // costs less than the difference.
                let mut joined = gather.borrow_mut();
                joined.clear();
                for slice in slices {
                    let room = MAX_GATHER - joined.len();
                    joined.extend_from_slice(&slice[..slice.len().min(room)]);
                    if room <= slice.len() {
                        break;
                    }
                }
                Ok(sendmsg::<SockaddrStorage>(fd, &[IoSlice::new(&joined)], &[], flags, None)?)
            }
        }
    }

    /// Sends the TLS records that wait for room in the socket; true when
    /// nothing waits (always, in plain text).
    pub fn flush(&self) -> io::Result<bool> {
        self.tls.map_or(Ok(true), |tls| tls.flush(self.stream))
    }

    /// Whether decrypted input waits, which `poll` on the socket cannot see.
    pub fn has_buffered(&self) -> bool {
        self.tls.is_some_and(Session::has_buffered)
    }
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls {
            Some(tls) => tls.read(self.stream, buf),
            None => (&*self.stream).read(buf),
        }
    }
}
