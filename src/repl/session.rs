//! The connection once joined: the sending half for the thread that reads
//! what the person types, and a reader thread that shows what the server
//! says. When the server goes away, the reader thread ends the process
//! itself, because rustyline's `readline` cannot be interrupted from another
//! thread.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use crate::client::{render, ClientError, Format, Receiver, Sender};
use crate::protocol::{ByeReason, Request, ServerLine};

/// How long a failed send waits for the reader thread to report why the
/// connection ended (it knows better: `BYE shutdown` rather than "broken pipe").
const VERDICT_PATIENCE: Duration = Duration::from_secs(2);

/// A joined connection: the sending half for this thread, and a reader
/// thread that shows what the server says.
pub(super) struct Session {
    sender: Sender,
    server: String,
    /// Set before `EXIT`: from then on the end of the connection is expected.
    leaving: Arc<AtomicBool>,
    /// How the reader thread ended, when it ended as expected.
    ended: mpsc::Receiver<Result<(), ClientError>>,
}

impl Session {
    /// Starts the reader thread, which passes each event to `show`.
    /// `terminal` is the terminal's state to put back if the connection ends
    /// without our asking.
    pub(super) fn start(
        sender: Sender,
        mut receiver: Receiver,
        mut show: impl FnMut(String) + Send + 'static,
        terminal: Option<Termios>,
    ) -> Session {
        let server = receiver.server().to_owned();
        let leaving = Arc::new(AtomicBool::new(false));
        let (report, ended) = mpsc::channel();
        let expected = Arc::clone(&leaving);
        thread::spawn(move || {
            let end = listen(&mut receiver, &mut show);
            match end {
                Err(e) if !expected.load(Ordering::SeqCst) => quit_lost(&e, terminal.as_ref()),
                end => drop(report.send(end)),
            }
        });
        Session { sender, server, leaving, ended }
    }

    /// Sends a request at once.
    pub(super) fn say(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        self.send(request)?;
        self.flush()
    }

    /// Queues a request; it goes out at `flush`.
    pub(super) fn send(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        self.sender.send(request).map_err(|e| self.broken(e))
    }

    pub(super) fn flush(&mut self) -> Result<(), ClientError> {
        self.sender.flush().map_err(|e| self.broken(e))
    }

    /// The connection broke under a send. The reader thread sees that too,
    /// and ends the process with a better reason; this is for in case it
    /// does not.
    fn broken(&self, e: io::Error) -> ClientError {
        let _ = self.ended.recv_timeout(VERDICT_PATIENCE);
        ClientError::Lost { server: self.server.clone(), detail: e.to_string() }
    }

    /// Says `EXIT` and waits up to `patience` for `BYE exit`, while the
    /// events before it are shown.
    pub(super) fn leave(mut self, patience: Duration) -> Result<(), ClientError> {
        self.leaving.store(true, Ordering::SeqCst);
        // If EXIT cannot go out, the reader thread sees the end of the
        // connection, and tells why.
        let _ = self.sender.send(&Request::Exit).and_then(|()| self.sender.flush());
        self.ended.recv_timeout(patience).unwrap_or_else(|_| {
            Err(ClientError::Lost { server: self.server, detail: "the server did not answer EXIT".into() })
        })
    }
}

/// Shows the room's events until the server says `BYE exit`; any other end
/// is an error.
fn listen(receiver: &mut Receiver, show: &mut impl FnMut(String)) -> Result<(), ClientError> {
    loop {
        match receiver.recv() {
            Ok(ServerLine::Bye(ByeReason::Exit)) => return Ok(()),
            Ok(ServerLine::Bye(reason)) => return Err(receiver.bye(reason)),
            Ok(line) => {
                if let Some(text) = render(&line, Format::Human) {
                    show(text);
                }
            }
            // A line this client does not know may be a later extension of
            // the protocol, which a client may ignore.
            Err(ClientError::Protocol(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Ends the process for a connection that ended without our asking, from
/// the reader thread, while the main thread may be inside `readline`: so the
/// terminal is put back first, as the editor would have on return. History
/// is saved line by line, so nothing is lost.
fn quit_lost(err: &ClientError, terminal: Option<&Termios>) -> ! {
    if let Some(saved) = terminal {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, saved);
        // Bracketed paste off, as the editor leaves it; then off the prompt line.
        let mut out = io::stdout();
        let _ = out.write_all(b"\x1b[?2004l\n").and_then(|()| out.flush());
    }
    eprintln!("chat: {err}");
    std::process::exit(err.exit_code().into())
}
