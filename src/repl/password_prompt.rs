//! The room's password asked for at the terminal, without showing what is
//! typed: echo off, and Ctrl-C read as a key rather than a signal, so the
//! terminal is always put back as it was.

use std::io::{self, BufRead, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};

use super::ChatError;
use crate::password::Password;

/// What the person did at the prompt.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    Line(String),
    /// Ctrl-C.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of input.
    Eof,
}

/// Asks for the password until one is typed; `None` after Ctrl-D.
pub(super) fn ask_password() -> Result<Option<Password>, ChatError> {
    loop {
        let typed = read_quietly("password: ").map_err(ChatError::Input)?;
        match typed {
            Typed::Line(line) => match Password::new(&line) {
                Ok(password) => return Ok(Some(password)),
                Err(why) => println!("not a password: {why}; type it again, or Ctrl-D to give up"),
            },
            Typed::Interrupted => return Err(ChatError::Interrupted),
            Typed::Eof => return Ok(None),
        }
    }
}

fn read_quietly(prompt: &str) -> io::Result<Typed> {
    let stdin = io::stdin();
    let saved = termios::tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG);
    termios::tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)?;
    let mut out = io::stdout();
    let _ = write!(out, "{prompt}").and_then(|()| out.flush());
    let typed = read_line(stdin.lock());
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
    println!();
    typed
}

/// Reads a line typed with the terminal in raw-ish mode: Enter ends it,
/// Backspace takes a character back, Ctrl-U the whole line.
fn read_line(input: impl BufRead) -> io::Result<Typed> {
    let mut line = Vec::new();
    for byte in input.bytes() {
        match byte? {
            b'\r' | b'\n' => return Ok(Typed::Line(String::from_utf8_lossy(&line).into_owned())),
            0x03 => return Ok(Typed::Interrupted),
            0x04 if line.is_empty() => return Ok(Typed::Eof),
            0x7f | 0x08 => {
                // A whole character: its continuation bytes, then its first.
                while line.pop().is_some_and(|b| b & 0xC0 == 0x80) {}
            }
            0x15 => line.clear(),
            byte => line.push(byte),
        }
    }
    Ok(Typed::Eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_the_password_prompt() {
        let line = |s: &str| Typed::Line(s.to_owned());
        let cases: &[(&[u8], Typed)] = &[
            (b"s3cret\r", line("s3cret")),
            (b"two words\n", line("two words")),
            (b"abx\x7fc\r", line("abc")),
            ("añ\x7f\x7fz\r".as_bytes(), line("z")),
            (b"wrong\x15right\r", line("right")),
            (b"ab\x03", Typed::Interrupted),
            (b"\x04", Typed::Eof),
            (b"a\x04b\r", line("a\x04b")),
            (b"no end", Typed::Eof),
        ];
        for (keys, want) in cases {
            assert_eq!(&read_line(*keys).unwrap(), want, "{keys:?}");
        }
    }
}
