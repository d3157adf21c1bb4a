//! `chat` without a terminal: each line of standard input is a message, and
//! the room's events go to standard output, until input ends. When standard
//! output is a terminal, the room's last events come first, with times.

use std::io::{self, BufRead, BufReader, IsTerminal, Write};

use super::prompt::{check_message, DEFAULT_HISTORY};
use super::session::{Look, Session};
use super::ChatError;
use crate::cli::ChatArgs;
use crate::client::{self, Membership};
use crate::protocol::Replay;

/// Sends each line of standard input as a message and prints the room's
/// events on standard output, until input ends; then leaves once the server
/// confirmed every line, riding out lost connections meanwhile.
pub(super) fn plain(args: &ChatArgs) -> Result<(), ChatError> {
    // At a terminal (`echo hi | chat`) a person reads the output: show the
    // room as the prompt does, its last events with their times first.
    let at_terminal = io::stdout().is_terminal();
    crate::client::set_trust(args.server.trust());
    let servers = crate::discovery::servers(args.server.server.as_deref(), "chat")?;
    let settings = args.server.settings(&servers)?;
    let mut connection = client::connect(&servers)?;
    client::give_password(&mut connection.0, &mut connection.1, settings.password.as_ref())?;
    let replay = Replay::Last(args.history.unwrap_or(if at_terminal { DEFAULT_HISTORY } else { 0 }));
    let joined = client::join_as_a_sender(&mut connection, args.name.as_deref(), replay)?;
    let membership = Membership::start(connection, joined, None, settings)?;
    let mut out = io::stdout();
    let mut open = true;
    // With standard output closed (`chat | head -1`) the input is still sent.
    let show = move |text: String| open = open && writeln!(out, "{text}").is_ok();
    let session =
        Session::start(membership, show, Look { timed: at_terminal }, None, None).map_err(ChatError::Input)?;
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
                Ok(()) => session.say(text),
                Err(why) => eprintln!("chat: line {number} not sent: {why}"),
            },
        }
    }
    Ok(session.leave(None)?)
}
