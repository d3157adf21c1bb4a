//! `chat`, the interactive client: a prompt to type messages at, with the
//! room's events shown above it, slash commands, and a history kept across
//! runs. With standard input or output not a terminal it is a plain line
//! reader instead (`echo hi | chat`), so scripts can use it too.
//!
//! - `prompt`: the editor, the name asked for, and what a typed line means;
//! - `session`: the joined connection and the thread that shows the room;
//! - `line_history`: the typed lines kept across runs;
//! - `clock`: an event's time as a person reads it;
//! - `one_off`: a `chat-send`'s visit shown as its messages alone;
//! - `password_prompt`: the room's password asked for without echo;
//! - `typing`: the line being typed, Ctrl-C's mark on it;
//! - `plain`: the line reader for pipes.

mod clock;
mod line_history;
mod one_off;
mod password_prompt;
mod plain;
mod prompt;
mod session;
mod typing;

use std::fmt;
use std::io::{self, IsTerminal};

use rustyline::error::ReadlineError;

use crate::cli::ChatArgs;
use crate::client::ClientError;
use crate::exit_codes as exit;

/// Why `chat` stopped.
#[derive(Debug)]
pub enum ChatError {
    Client(ClientError),
    Terminal(ReadlineError),
    Input(io::Error),
    /// Standard output could not be written (`chat --list`).
    Output(io::Error),
    /// Ctrl-C at the name prompt: leaving, as a shell would.
    Interrupted,
}

impl ChatError {
    /// The exit status for this error (see `exit_codes`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ChatError::Client(e) => e.exit_code(),
            ChatError::Terminal(_) | ChatError::Input(_) | ChatError::Output(_) => exit::FAILURE,
            ChatError::Interrupted => exit::INTERRUPTED,
        }
    }
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Client(e) => write!(f, "{e}"),
            ChatError::Terminal(e) => write!(f, "the terminal failed: {e}"),
            ChatError::Input(e) => write!(f, "cannot read standard input: {e}"),
            ChatError::Output(e) => write!(f, "cannot write standard output: {e}"),
            ChatError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for ChatError {}

impl From<ClientError> for ChatError {
    fn from(e: ClientError) -> ChatError {
        ChatError::Client(e)
    }
}

impl From<ReadlineError> for ChatError {
    fn from(e: ReadlineError) -> ChatError {
        ChatError::Terminal(e)
    }
}

/// Runs `chat`: interactive on a terminal, a plain line reader otherwise.
pub fn run(args: &ChatArgs) -> Result<(), ChatError> {
    if args.list {
        return list();
    }
    // Both ends must be a terminal for the editor: `chat > log` reads lines too.
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        prompt::interactive(args)
    } else {
        plain::plain(args)
    }
}

/// `chat --list`: the rooms announced on the LAN, one a line, for scripts:
/// the address to give `--server`, a tab, the label.
fn list() -> Result<(), ChatError> {
    use std::io::Write;
    let rooms = crate::discovery::browse(crate::discovery::BROWSE_FOR)?;
    let mut out = io::stdout().lock();
    for room in rooms {
        match writeln!(out, "{}", room.listing()) {
            // `chat --list | head -1` ends quietly.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(ChatError::Output(e)),
            Ok(()) => {}
        }
    }
    Ok(())
}
