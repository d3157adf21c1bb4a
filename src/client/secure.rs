//! TLS on the client's side: asking for it (`STARTTLS`), checking the
//! server's certificate against what the person trusts, and the two halves
//! of a connection reading and writing through it.
//!
//! A server on another computer is always asked; one on this computer only
//! when a fingerprint is pinned, since nothing on the way can listen in.
//! A server that offers no TLS is talked to in plain text, unless the
//! client expected TLS of it: a pinned fingerprint, or a server remembered
//! with a certificate.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use super::{ClientError, Receiver};
use crate::protocol::{ErrorCode, Request, ServerLine};
use crate::tls::{Checked, Session, Trust};

static TRUST: OnceLock<Trust> = OnceLock::new();

/// Sets what this process trusts (`--fingerprint`, else the remembered
/// servers); once, before connecting.
pub fn set_trust(trust: Trust) {
    let _ = TRUST.set(trust);
}

fn trust() -> &'static Trust {
    TRUST.get_or_init(|| Trust::from_env(None))
}

/// Asks the server for TLS where it is wanted, and starts it; `None` when
/// the connection stays in plain text.
pub(super) fn start(receiver: &mut Receiver) -> Result<Option<Arc<Session>>, ClientError> {
    let server = receiver.server.clone();
    let peer = receiver.stream.peer_addr().map_err(|e| receiver.lost(&e.to_string()))?;
    let trust = trust();
    if peer.ip().is_loopback() && !matches!(trust, Trust::Pinned(_)) {
        return Ok(None);
    }
    (&receiver.stream).write_all(format!("{}\n", Request::StartTls).as_bytes())?;
    match receiver.recv()? {
        ServerLine::OkStartTls => {}
        ServerLine::Err(refusal) if refusal.code == ErrorCode::Full => {
            return Err(ClientError::Full { server, text: refusal.text })
        }
        // An older chatd does not know the word; a newer one may run
        // with --no-tls.
        ServerLine::Err(refusal) if matches!(refusal.code, ErrorCode::NoTls | ErrorCode::UnknownCommand) => {
            if trust.expects_tls(&server) {
                return Err(ClientError::Untrusted(Box::new(trust.no_tls(&server))));
            }
            return Ok(None);
        }
        ServerLine::Bye(reason) => return Err(receiver.bye(reason)),
        other => return Err(receiver.lost(&format!("the server answered STARTTLS with \"{other}\""))),
    }
    let session = Session::client(peer.ip()).map_err(|e| receiver.lost(&format!("cannot start TLS: {e}")))?;
    crate::tls::handshake(&session, &receiver.stream, &mut |_| {
        Err(io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake did not finish in time"))
    })
    .map_err(|e| receiver.lost(&e.to_string()))?;
    let seen = session.peer_fingerprint().ok_or_else(|| receiver.lost("the server showed no certificate"))?;
    match trust.check(&server, seen) {
        Ok(Checked::Known) => {}
        Ok(Checked::FirstMet(file)) => crate::tls::say_first_met(&server, seen, &file),
        Err(e) => return Err(ClientError::Untrusted(Box::new(e))),
    }
    Ok(Some(Arc::new(session)))
}

/// The socket as a client writes it: plain, or through TLS.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub stream: TcpStream,
    pub tls: Option<Arc<Session>>,
}

impl Write for Outgoing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            // The socket blocks: `send` hands the kernel every record it made.
            Some(tls) => tls.send(&self.stream, &[IoSlice::new(buf)]),
            None => (&self.stream).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.tls {
            Some(tls) => tls.flush(&self.stream).map(drop),
            None => Ok(()),
        }
    }
}

impl Outgoing {
    /// Says nothing more: `close_notify`, then the end of the stream.
    pub fn finish(&self) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            tls.close(&self.stream)?;
        }
        self.stream.shutdown(std::net::Shutdown::Write)
    }
}

/// The socket as a client reads it.
pub(super) struct Incoming<'a> {
    pub stream: &'a TcpStream,
    pub tls: Option<&'a Session>,
}

impl Read for Incoming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls {
            Some(tls) => tls.read_blocking(self.stream, buf),
            None => (&*self.stream).read(buf),
        }
    }
}
