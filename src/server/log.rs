//! The server's log: one line per event on stderr, as much as `-q`/`-v` ask.

use std::fmt;
use std::io::Write;

/// How much the server says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Joins, leaves, refusals of whole connections, errors, shutdown.
    Normal,
    /// Also every connection and every `ERR` sent.
    Verbose,
}

#[derive(Debug, Clone, Copy)]
pub struct Log {
    verbosity: Verbosity,
}

impl Log {
    pub fn new(verbosity: Verbosity) -> Log {
        Log { verbosity }
    }

    pub fn error(&self, args: fmt::Arguments<'_>) {
        write_line(args);
    }

    pub fn info(&self, args: fmt::Arguments<'_>) {
        if self.verbosity >= Verbosity::Normal {
            write_line(args);
        }
    }

    pub fn debug(&self, args: fmt::Arguments<'_>) {
        if self.verbosity >= Verbosity::Verbose {
            write_line(args);
        }
    }
}

fn write_line(args: fmt::Arguments<'_>) {
    // One write per line, so lines from many threads never interleave; a
    // closed stderr must not take the server down.
    let line = format!("chatd: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
