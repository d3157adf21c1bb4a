//! Giving the room its password: `PASS` before `JOIN`, on every connection,
//! and only over one that nobody else can read.

use std::time::Duration;

use super::{ClientError, Receiver, Sender, CONNECT_TIMEOUT};
use crate::password::Password;
use crate::protocol::{Request, ServerLine};

/// How long the answer to `PASS` may take: a server holds it back after
/// wrong tries from this address (chatd: up to 20 s), so more than a join.
const PASS_PATIENCE: Duration = Duration::from_secs(60);

/// Sends `password`, if there is one, and waits for `OK PASS`. A wrong
/// password, or a room that wants it encrypted, is an error that says so.
pub fn give_password(
    sender: &mut Sender,
    receiver: &mut Receiver,
    password: Option<&Password>,
) -> Result<(), ClientError> {
    let Some(password) = password else { return Ok(()) };
    if !receiver.is_private() {
        return Err(ClientError::Unencrypted { server: receiver.server().to_owned(), refusal: None });
    }
    sender.send(&Request::Pass(password.as_str()))?;
    sender.flush()?;
    receiver.set_patience(Some(PASS_PATIENCE))?;
    let answer = loop {
        match receiver.recv()? {
            ServerLine::OkPass => break Ok(()),
            ServerLine::Err(refusal) => break Err(ClientError::refused(receiver.server(), refusal)),
            ServerLine::Bye(reason) => break Err(receiver.bye(reason)),
            _ => {}
        }
    };
    receiver.set_patience(Some(CONNECT_TIMEOUT))?;
    answer
}
