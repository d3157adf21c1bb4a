//! `chat` without a terminal: each line of standard input is a message, and
//! the room's events go to standard output, until input ends.

use std::io::{self, BufRead, BufReader, Write};
use std::time::Duration;

use super::prompt::check_message;
use super::session::Session;
use super::ChatError;
use crate::cli::ChatArgs;
use crate::client;
use crate::protocol::Request;

/// How long the plain mode waits for `BYE exit`, which proves that every
/// line sent before it was taken.
const PLAIN_PATIENCE: Duration = Duration::from_secs(10);

/// Sends each line of standard input as a message and prints the room's
/// events on standard output, until input ends; then leaves and waits for
/// `BYE exit`, which proves every line was taken.
pub(super) fn plain(args: &ChatArgs) -> Result<(), ChatError> {
    let name = args.name.clone().unwrap_or_else(|| client::login_name(""));
    let (mut sender, mut receiver) = client::connect(&args.server.server)?;
    client::join(&mut sender, &mut receiver, &name)?;
    let mut out = io::stdout();
    let mut open = true;
    // With standard output closed (`chat | head -1`) the input is still sent.
    let show = move |text: String| open = open && writeln!(out, "{text}").is_ok();
    let mut session = Session::start(sender, receiver, show, None);
    let mut input = BufReader::new(io::stdin().lock());
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(ChatError::Input)? == 0 {
            break;
        }
        if line.ends_with(b"\n") {
            line.pop();
        }
        if line.ends_with(b"\r") {
            line.pop();
        }
        match std::str::from_utf8(&line) {
            Err(_) => eprintln!("chat: line {number} not sent: it is not UTF-8"),
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => match check_message(text) {
                Ok(()) => session.send(&Request::Msg(text))?,
                Err(why) => eprintln!("chat: line {number} not sent: {why}"),
            },
        }
        // Out as soon as nothing more is waiting, so a slow input (a pipe
        // from a person, a log) is sent line by line.
        if input.buffer().is_empty() {
            session.flush()?;
        }
    }
    Ok(session.leave(PLAIN_PATIENCE)?)
}
