//! The generator's connections: non-blocking sockets in one level-triggered
//! epoll, on one thread. Reads go into one shared 256 KiB buffer, so 10,000
//! connections cost no more than their unfinished lines; each read is
//! stamped with the clock once and parsed at once.
//!
//! A connection may speak TLS from the first byte (a rustls client over the
//! same non-blocking socket): it reads as big a piece of the socket as plain
//! text does, into a second shared buffer (rustls alone would read 4 KiB a
//! system call), decrypts it record by record and hands on the plaintext,
//! and writes its output through rustls. The generator then pays for
//! decrypting every delivery, as a member would.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::system::now_ns;
use crate::wire::{Event, Proto};

const READ_BUFFER: usize = 256 * 1024;

/// Room a TLS read leaves in the plaintext buffer beyond the ciphertext it
/// reads: the rest of a record begun in an earlier read (16 KiB at most)
/// and then some, so rustls never holds plaintext that epoll cannot see.
const TLS_READ_ROOM: usize = 32 * 1024;

/// What a connection's reader is told.
pub trait Handler {
    /// One event read from connection `id` at `now_ns`.
    fn event(&mut self, id: usize, event: Event<'_>, now_ns: u64);
    /// Connection `id` ended (closed by the server, or an error).
    fn closed(&mut self, id: usize, why: &str);
}

pub struct Net {
    epoll: Epoll,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    /// What TLS connections read from their socket, before decrypting it.
    cipher: Vec<u8>,
    events: Vec<EpollEvent>,
}

struct Conn {
    stream: TcpStream,
    proto: Proto,
    /// An unfinished unit from the last read.
    partial: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    connecting: bool,
    reading: bool,
    open: bool,
    interest: EpollFlags,
    /// TLS from the first byte; boxed, as rustls's state is large.
    tls: Option<Box<ClientConnection>>,
}

impl Net {
    pub fn new() -> anyhow::Result<Net> {
        Ok(Net {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?,
            conns: Vec::new(),
            buf: vec![0; READ_BUFFER],
            cipher: vec![0; READ_BUFFER],
            events: vec![EpollEvent::empty(); 1024],
        })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Starts connecting to `addr` (never blocking: a full accept queue would
    /// otherwise stall the whole generator), over TLS with `tls`; `greeting`
    /// goes out once connected (and with TLS, once the handshake is done).
    /// Returns the connection's id.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        proto: Proto,
        tls: Option<&Arc<ClientConfig>>,
        greeting: Vec<u8>,
    ) -> anyhow::Result<usize> {
        let SocketAddr::V4(v4) = addr else { bail!("only IPv4 loopback is used") };
        let tls = match tls {
            Some(config) => {
                let conn = ClientConnection::new(Arc::clone(config), ServerName::from(addr.ip()))
                    .context("starting a TLS client")?;
                Some(Box::new(conn))
            }
            None => None,
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).context("socket (out of descriptors?)")?;
        let connecting = match connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
            Ok(()) => false,
            Err(Errno::EINPROGRESS) => true,
            Err(e) => return Err(anyhow!(e).context(format!("connecting to {addr}"))),
        };
        // Pings and paced messages must not wait for Nagle.
        setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
        let id = self.conns.len();
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT;
        self.epoll.add(&fd, EpollEvent::new(interest, id as u64)).context("epoll_ctl add")?;
        let stream = TcpStream::from(fd);
        let conn = Conn {
            stream,
            proto,
            partial: Vec::new(),
            out: greeting,
            written: 0,
            connecting,
            reading: true,
            open: true,
            interest,
            tls,
        };
        self.conns.push(conn);
        Ok(id)
    }

    /// Waits up to `timeout` for sockets to be ready, and handles them.
    pub fn poll(&mut self, timeout: Duration, handler: &mut impl Handler) -> anyhow::Result<()> {
        // epoll counts in milliseconds: round up, or a short wait would spin.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(u16::MAX as u128) as u16;
        let n = match self.epoll.wait(&mut self.events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(anyhow!(e).context("epoll_wait")),
        };
        for i in 0..n {
            let event = self.events[i];
            let id = event.data() as usize;
            let flags = event.events();
            if !self.conns[id].open {
                continue;
            }
            if self.conns[id].connecting {
                self.finish_connect(id, handler);
            }
            let broken = flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
            if self.conns[id].reading && (flags.contains(EpollFlags::EPOLLIN) || broken) {
                self.read(id, handler)?;
            } else if broken && !self.conns[id].reading {
                // A connection we do not read from was reset: stop watching it,
                // or level-triggered epoll would report it forever.
                self.close(id, handler, "reset by the server");
            }
            self.flush(id, handler);
        }
        Ok(())
    }

    fn finish_connect(&mut self, id: usize, handler: &mut impl Handler) {
        let conn = &mut self.conns[id];
        match getsockopt(&conn.stream, sockopt::SocketError) {
            Ok(0) => conn.connecting = false,
            Ok(errno) => self.close(id, handler, &format!("connect: {}", Errno::from_raw(errno).desc())),
            Err(e) => self.close(id, handler, &format!("connect: {e}")),
        }
    }

    fn read(&mut self, id: usize, handler: &mut impl Handler) -> anyhow::Result<()> {
        let Net { conns, buf, cipher, .. } = self;
        let conn = &mut conns[id];
        let kept = conn.partial.len();
        if kept * 2 > buf.len() {
            bail!("connection {id}: a line longer than {} KiB from the server", buf.len() / 2048);
        }
        buf[..kept].copy_from_slice(&conn.partial);
        let n = match conn.receive(&mut buf[kept..], cipher) {
            Ok(0) => {
                self.close(id, handler, "closed by the server");
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(()),
            Err(e) => {
                self.close(id, handler, &e.to_string());
                return Ok(());
            }
        };
        let now = now_ns();
        let data = &buf[..kept + n];
        let out = &mut conn.out;
        let proto = conn.proto;
        let used = proto.parse(data, &mut |event| match event {
            Event::ServerPing => out.extend_from_slice(b"PONG\r\n"),
            Event::Resume(entry_id) => proto.resume(out, entry_id),
            event => handler.event(id, event, now),
        });
        let used = used.map_err(|e| anyhow!("connection {id}: {e}"))?;
        conn.partial.clear();
        conn.partial.extend_from_slice(&data[used..]);
        Ok(())
    }

    /// The output buffer of connection `id`, to append to; `flush` sends it.
    pub fn out(&mut self, id: usize) -> &mut Vec<u8> {
        &mut self.conns[id].out
    }

    /// Bytes appended to `out` and not yet written.
    pub fn unsent(&self, id: usize) -> usize {
        self.conns[id].out.len() - self.conns[id].written
    }

    /// Writes what `id` has to send, as far as the socket takes it.
    pub fn flush(&mut self, id: usize, handler: &mut impl Handler) {
        let conn = &mut self.conns[id];
        if conn.open && !conn.connecting {
            if let Err(e) = conn.send() {
                return self.close(id, handler, &e.to_string());
            }
        }
        if conn.written == conn.out.len() {
            conn.out.clear();
            conn.written = 0;
        }
        self.update_interest(id);
    }

    /// Stops (or resumes) reading from `id`: a member that never reads.
    pub fn set_reading(&mut self, id: usize, reading: bool) {
        self.conns[id].reading = reading;
        self.update_interest(id);
    }

    /// The TLS version and cipher suite the first TLS connection agreed on.
    pub fn tls_suite(&self) -> Option<String> {
        let tls = self.conns.iter().find_map(|c| c.tls.as_ref())?;
        let suite = tls.negotiated_cipher_suite()?;
        Some(format!("{:?}", suite.suite()))
    }

    pub fn is_open(&self, id: usize) -> bool {
        self.conns[id].open
    }

    /// Whether the server closed or reset connection `id`, judged without
    /// reading from it (what is still unread does not matter).
    pub fn peer_closed(&self, id: usize) -> bool {
        let conn = &self.conns[id];
        if !conn.open {
            return true;
        }
        // POLLRDHUP (the peer sent FIN), which nix 0.29 does not name.
        const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(0x2000);
        let mut fds = [PollFd::new(conn.stream.as_fd(), POLLRDHUP)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
    }

    fn update_interest(&mut self, id: usize) {
        let conn = &mut self.conns[id];
        if !conn.open {
            return;
        }
        let mut want = EpollFlags::empty();
        want.set(EpollFlags::EPOLLIN, conn.reading);
        let pending = conn.written < conn.out.len();
        let writes = match &conn.tls {
            // Records to send; or plaintext that rustls takes once the
            // handshake is done (until then it waits for the server).
            Some(tls) => tls.wants_write() || pending && !tls.is_handshaking(),
            None => pending,
        };
        want.set(EpollFlags::EPOLLOUT, conn.connecting || writes);
        if want != conn.interest {
            conn.interest = want;
            let _ = self.epoll.modify(&conn.stream, &mut EpollEvent::new(want, id as u64));
        }
    }

    fn close(&mut self, id: usize, handler: &mut impl Handler, why: &str) {
        let conn = &mut self.conns[id];
        if conn.open {
            conn.open = false;
            let _ = self.epoll.delete(&conn.stream);
            handler.closed(id, why);
        }
    }
}

impl Conn {
    /// Reads what the socket has into `buf`, with TLS through `cipher` and
    /// decrypted; `WouldBlock` when there is nothing, `Ok(0)` at the end.
    fn receive(&mut self, buf: &mut [u8], cipher: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else { return (&self.stream).read(buf) };
        // Plaintext is never left in rustls (below); the margin keeps it so.
        let want = buf.len().saturating_sub(TLS_READ_ROOM).min(cipher.len());
        let n = (&self.stream).read(&mut cipher[..want])?;
        if n == 0 {
            return Ok(0);
        }
        let (mut rest, mut filled) = (&cipher[..n], 0);
        while !rest.is_empty() {
            tls.read_tls(&mut rest)?;
            tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
            loop {
                match tls.reader().read(&mut buf[filled..]) {
                    // The end (close_notify), or a full buffer, which the
                    // margin rules out.
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // Handshake records only: nothing to hand on yet.
        if filled == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(filled)
    }

    /// Writes `out` from `written` on, as far as the socket takes it: with
    /// TLS, the records waiting first, then more plaintext into rustls
    /// (which takes none while 64 KiB of records wait, or before the
    /// handshake is done once 64 KiB wait for it).
    fn send(&mut self) -> io::Result<()> {
        loop {
            let Some(tls) = &mut self.tls else {
                if self.written == self.out.len() {
                    return Ok(());
                }
                match (&self.stream).write(&self.out[self.written..]) {
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            };
            while tls.wants_write() {
                match tls.write_tls(&mut &self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.written == self.out.len() {
                return Ok(());
            }
            match tls.writer().write(&self.out[self.written..])? {
                0 => return Ok(()),
                n => self.written += n,
            }
        }
    }
}
