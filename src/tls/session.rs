//! One TLS connection over a socket, shared by the thread that reads it and
//! the thread that writes it.
//!
//! rustls keeps both directions in one state, so it sits under one lock,
//! held only while bytes are encrypted, decrypted or handed to the kernel,
//! never across a wait. On the server the socket is non-blocking and the
//! threads wait in `poll`; on the clients it blocks, with a timeout.
//!
//! A writer's batch of lines goes into rustls with one vectored write and
//! out as records with one vectored `sendmsg`: TLS costs the encryption and
//! one copy, not a system call per line.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, MsgFlags, SockaddrStorage};

use super::Fingerprint;

/// An encrypted connection's state; the socket is passed to each call.
#[derive(Debug)]
pub struct Session {
    conn: Mutex<rustls::Connection>,
}

/// What a handshake waits for before it can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

impl Session {
    pub fn new(conn: impl Into<rustls::Connection>) -> Session {
        Session { conn: Mutex::new(conn.into()) }
    }

    /// A client's session with the server at `server`, trusting any
    /// certificate whose key the server holds: check `peer_fingerprint`
    /// after the handshake (`tls::Trust`).
    pub fn client(server: std::net::IpAddr) -> io::Result<Session> {
        let name = rustls::pki_types::ServerName::IpAddress(server.into());
        let conn = rustls::ClientConnection::new(super::client_config(), name).map_err(io::Error::other)?;
        Ok(Session::new(conn))
    }

    /// Bytes that arrived before TLS began (after a `STARTTLS` line, a client
    /// that did not wait for the answer), taken as the start of the handshake.
    pub fn feed(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut conn = self.lock();
        while !bytes.is_empty() {
            conn.read_tls(&mut bytes)?;
            conn.process_new_packets().map_err(tls_error)?;
        }
        Ok(())
    }

    /// Encrypts as much of `slices` as rustls takes and sends what the socket
    /// takes; returns how many plaintext bytes were taken. `WouldBlock` when
    /// records sent earlier still wait for room: nothing new is taken then,
    /// so what waits stays bounded.
    pub fn send(&self, sock: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.lock();
        if !write_out(&mut conn, sock)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = conn.writer().write_vectored(slices)?;
        write_out(&mut conn, sock)?;
        Ok(taken)
    }

    /// Sends the records still waiting; true when none is left.
    pub fn flush(&self, sock: &TcpStream) -> io::Result<bool> {
        write_out(&mut self.lock(), sock)
    }

    /// Reads plaintext from a non-blocking socket: what was decrypted
    /// already, or else what the socket has. `Ok(0)` at the end, whether the
    /// peer said `close_notify` or just closed: a chat line is whole or not
    /// there, so a cut cannot forge one.
    pub fn read(&self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        self.read_after(sock, buf, || Ok(()))
    }

    /// `read` for a blocking socket: waits for input (up to the socket's
    /// read timeout) without holding the lock, so that another thread can
    /// write meanwhile.
    pub fn read_blocking(&self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        self.read_after(sock, buf, || {
            let timeout = match sock.read_timeout()? {
                None => PollTimeout::NONE,
                Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
            };
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Reads plaintext, calling `wait` before each read from the socket.
    fn read_after(&self, sock: &TcpStream, buf: &mut [u8], wait: impl Fn() -> io::Result<()>) -> io::Result<usize> {
        loop {
            let mut conn = self.lock();
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            drop(conn);
            wait()?;
            let mut conn = self.lock();
            conn.read_tls(&mut &*sock)?;
            if let Err(e) = conn.process_new_packets() {
                // The alert that says why, if the socket takes it.
                let _ = write_out(&mut conn, sock);
                return Err(tls_error(e));
            }
            // A key update to answer, say; whatever the socket does not take
            // now goes out with the next write, and an error is the next
            // write's to report: a read reports what reading met.
            let _ = write_out(&mut conn, sock);
        }
    }

    /// Whether plaintext waits in rustls: then the socket may have nothing
    /// to read and still there is something to read.
    pub fn has_buffered(&self) -> bool {
        match self.lock().process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0,
            // Reading reports the error.
            Err(_) => true,
        }
    }

    /// Says `close_notify`: the peer then sees the end of the stream after
    /// everything sent before.
    pub fn close(&self, sock: &TcpStream) -> io::Result<()> {
        let mut conn = self.lock();
        conn.send_close_notify();
        write_out(&mut conn, sock).map(drop)
    }

    /// The fingerprint of the certificate the peer showed.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.lock().peer_certificates().and_then(<[_]>::first).map(|cert| Fingerprint::of(cert))
    }

    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        // rustls leaves its state consistent when it returns an error; a
        // thread that panicked holding the lock did not get halfway through.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the handshake over `sock`. `wait` is called when the socket must
/// become readable or writable first (a non-blocking socket); it returns an
/// error to give up (a deadline, the server closing).
pub fn handshake(session: &Session, sock: &TcpStream, wait: &mut dyn FnMut(Want) -> io::Result<()>) -> io::Result<()> {
    loop {
        let mut conn = session.lock();
        if !write_out(&mut conn, sock)? {
            drop(conn);
            wait(Want::Write)?;
            continue;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        match conn.read_tls(&mut &*sock) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other side closed the connection during the TLS handshake",
                ))
            }
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    let _ = write_out(&mut conn, sock);
                    return Err(tls_error(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drop(conn);
                wait(Want::Read)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hands the kernel the records waiting, until none is left (true) or the
/// socket is full (false).
fn write_out(conn: &mut rustls::Connection, sock: &TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut NoSignal(sock)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Writes to the socket with `sendmsg`, so that a peer that went away is an
/// error rather than SIGPIPE, as for plain text (`server::outbox`).
struct NoSignal<'a>(&'a TcpStream);

impl Write for NoSignal<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(sendmsg::<SockaddrStorage>(self.0.as_raw_fd(), bufs, &[], MsgFlags::MSG_NOSIGNAL, None)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
