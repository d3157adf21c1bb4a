//! The connection once joined, in a thread of its own: it shows what the
//! room says, sends what the person's thread asks it to, and rides out a
//! lost connection (it says so, reconnects, resumes, and says what was
//! missed). Lines typed meanwhile wait and go out once, in order.
//!
//! The person's thread is inside rustyline's `readline`, which cannot be
//! interrupted: so when the connection is gone for good, this thread puts
//! the terminal back and ends the process itself.

use std::io::{self, Read as _, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use nix::sys::termios::{self, SetArg, Termios};

use super::one_off::OneOffs;
use crate::client::{render, ClientError, Event, Format, Membership, News, Watch};
use crate::protocol::Printable;

/// Most messages waiting to be confirmed before typed lines wait in turn.
const MAX_UNCONFIRMED: usize = 8192;

/// What the person's thread asks of the connection's.
enum Ask {
    Say(String),
    Names,
    /// Leave once every message said is confirmed.
    Quit(Duration),
}

/// The person's end of a session.
pub(super) struct Session {
    asks: mpsc::SyncSender<Ask>,
    /// One byte per ask wakes the connection's thread from its `poll`.
    wake: UnixStream,
    /// How the connection's thread ended, when it ended as asked.
    ended: mpsc::Receiver<Result<(), ClientError>>,
}

/// The line being typed, and where the history is kept: a line typed when
/// the connection is gone for good is shown and kept, not lost.
pub(super) struct Unsent {
    pub line: Arc<Mutex<String>>,
    pub history: Option<PathBuf>,
}

/// How events are shown.
#[derive(Debug, Clone, Copy)]
pub(super) struct Look {
    /// Each event with its local time before it.
    pub timed: bool,
}

impl Session {
    /// Starts the connection's thread, which passes each line to show to
    /// `show`. `terminal` is the terminal's state to put back if the
    /// connection ends for good.
    pub(super) fn start(
        membership: Membership,
        show: impl FnMut(String) + Send + 'static,
        look: Look,
        terminal: Option<Termios>,
        unsent: Option<Unsent>,
    ) -> io::Result<Session> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let (asks, asked) = mpsc::sync_channel(256);
        let (report, ended) = mpsc::channel();
        thread::spawn(move || {
            let mut connection = Connection {
                membership,
                asked,
                woken,
                show,
                look,
                zone: TimeZone::system(),
                one_offs: OneOffs::default(),
            };
            let end = connection.run();
            let membership = &connection.membership;
            match end {
                Err(e) if !membership.is_leaving() => quit_lost(&e, terminal.as_ref(), unsent.as_ref()),
                // Everything said was confirmed: a goodbye cut short loses nothing.
                Err(_) if membership.all_confirmed() => drop(report.send(Ok(()))),
                end => drop(report.send(end)),
            }
        });
        Ok(Session { asks, wake, ended })
    }

    /// Sends a message (once reconnected, if the connection is down).
    pub(super) fn say(&self, text: &str) {
        self.ask(Ask::Say(text.to_owned()));
    }

    /// Asks who is in the room.
    pub(super) fn names(&self) {
        self.ask(Ask::Names);
    }

    fn ask(&self, ask: Ask) {
        // The thread is gone only when the process is ending.
        if self.asks.send(ask).is_ok() {
            // A full socket means a wake-up is pending already.
            let _ = (&self.wake).write(b"!");
        }
    }

    /// Leaves once every message said is confirmed: says `EXIT` and waits
    /// for `BYE exit`, while the events before it are shown; `None` waits
    /// as long as that takes, `Some` at most that long.
    pub(super) fn leave(self, patience: Option<Duration>) -> Result<(), ClientError> {
        self.ask(Ask::Quit(patience.unwrap_or(Duration::from_secs(10))));
        let gone = || ClientError::Lost { server: String::new(), detail: "the server did not answer EXIT".into() };
        match patience {
            Some(patience) => self.ended.recv_timeout(patience).unwrap_or_else(|_| Err(gone())),
            None => self.ended.recv().unwrap_or_else(|_| Err(gone())),
        }
    }
}

/// The connection's thread.
struct Connection<F> {
    membership: Membership,
    asked: mpsc::Receiver<Ask>,
    woken: UnixStream,
    show: F,
    look: Look,
    zone: TimeZone,
    /// Events held back while a visit may yet turn out to be a one-off.
    one_offs: OneOffs,
}

impl<F: FnMut(String)> Connection<F> {
    /// Shows the room and sends what is asked until `BYE exit` after a
    /// quit; any other end is an error.
    fn run(&mut self) -> Result<(), ClientError> {
        let (mut said, mut quit, mut history, mut missed) = (0, None, 0, None);
        // The person's end closed: nothing more will be asked.
        let mut abandoned = false;
        loop {
            if let Some(patience) = quit.filter(|_| self.membership.all_confirmed()) {
                self.membership.leave(patience);
                quit = None;
            }
            let room = self.membership.unconfirmed() < MAX_UNCONFIRMED && !self.membership.is_leaving() && !abandoned;
            let watch = room.then(|| Watch::readable(self.woken.as_fd()));
            match self.membership.next_until(watch, self.one_offs.due())? {
                News::TimeUp => self.show_held(),
                News::Watched(_) => {
                    abandoned = matches!((&self.woken).read(&mut [0; 512]), Ok(0));
                    for ask in self.asked.try_iter().take(256) {
                        match ask {
                            Ask::Say(text) => {
                                said += 1;
                                self.membership.say(&text, said);
                            }
                            Ask::Names => self.membership.names(),
                            Ask::Quit(patience) => quit = Some(patience),
                        }
                    }
                    // A PING after the lines typed: its PONG confirms them.
                    self.membership.checkpoint();
                    self.membership.flush();
                }
                News::Event(event) => {
                    history += usize::from(event.replayed);
                    for event in self.one_offs.take(event, Instant::now()) {
                        self.show_event(&event);
                    }
                }
                News::Live if history > 0 => {
                    self.show_held();
                    (self.show)("-- live --".into());
                }
                News::Lost(_) => {
                    self.show_held();
                    (self.show)("* connection lost; reconnecting…".into());
                }
                News::Missed { count, .. } => missed = Some(count),
                News::Resumed { .. } => {
                    self.show_held();
                    (self.show)(reconnected(self.membership.server(), missed.take()));
                }
                News::Reply(line) => {
                    if let Some(text) = render(&line, Format::Human) {
                        (self.show)(text);
                    }
                }
                News::Left => {
                    self.show_held();
                    return Ok(());
                }
                News::Live | News::Confirmed => {}
            }
        }
    }

    fn show_event(&mut self, event: &Event) {
        if let Some(text) = self.shown(event) {
            (self.show)(text);
        }
    }

    /// Shows what was held back for a visit that was no one-off.
    fn show_held(&mut self) {
        for event in self.one_offs.flush() {
            self.show_event(&event);
        }
    }

    /// An event as the person sees it.
    fn shown(&self, event: &Event) -> Option<String> {
        let text = render(&event.line, Format::Human)?;
        let time = event.time.as_deref().filter(|_| self.look.timed);
        match time.and_then(|t| super::clock::shown_time(t, &self.zone, jiff::Timestamp::now())) {
            Some(time) => Some(format!("{time} {text}")),
            None => Some(text),
        }
    }
}

/// What a resume says: to which server, and whether anything was missed
/// meanwhile.
fn reconnected(server: &str, missed: Option<Option<u64>>) -> String {
    match missed {
        None => format!("* reconnected to {server}, nothing missed"),
        Some(Some(n)) => format!("* reconnected to {server}; {n} events missed (the server no longer keeps them)"),
        Some(None) => {
            format!("* reconnected to {server}; its history is not the one left, so some events may have been missed")
        }
    }
}

/// Ends the process for a connection that ended for good, from this thread,
/// while the person's thread may be inside `readline`: so the terminal is
/// put back first, as the editor would have on return. History is saved
/// line by line, so nothing is lost.
fn quit_lost(err: &ClientError, terminal: Option<&Termios>, unsent: Option<&Unsent>) -> ! {
    if let Some(saved) = terminal {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, saved);
        // Bracketed paste off, as the editor leaves it; then off the prompt line.
        let mut out = io::stdout();
        let _ = out.write_all(b"\x1b[?2004l\n").and_then(|()| out.flush());
    }
    eprintln!("chat: {err}");
    if let Some(unsent) = unsent {
        let line = unsent.line.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !line.trim().is_empty() {
            let kept =
                unsent.history.as_deref().is_some_and(|file| super::line_history::save_line(file, &line).is_ok());
            let kept = if kept { " (kept in the history: Up finds it next time)" } else { "" };
            eprintln!("chat: not sent{kept}: {}", Printable(&line));
        }
    }
    std::process::exit(err.exit_code().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_says_what_was_missed() {
        assert_eq!(reconnected("b:5000", None), "* reconnected to b:5000, nothing missed");
        assert!(reconnected("b:5000", Some(Some(3))).starts_with("* reconnected to b:5000; 3 events missed"));
        assert!(reconnected("b:5000", Some(None)).contains("may have been missed"));
    }
}
