//! `chat-tail`: the room's events on standard output, one per line, flushed
//! as they arrive, for `grep`, `jq` and `while read`.

use std::io::{self, Write};

use anyhow::Context;

use crate::cli::ChatTailArgs;
use crate::client::{self, render, ClientError, Receiver, Sender};
use crate::protocol::{ErrorCode, Request, ServerLine};

/// How many numbered names (`ana-tail2` …) to try when the derived one is taken.
const NAME_TRIES: u32 = 9;

pub fn run(args: &ChatTailArgs) -> anyhow::Result<()> {
    let (mut sender, mut receiver) = client::connect(&args.server.server)?;
    join(&mut sender, &mut receiver, args)?;
    if args.count == Some(0) {
        return leave(sender, receiver);
    }
    let format = args.format();
    let mut out = io::stdout().lock();
    let mut messages = 0;
    loop {
        let line = receiver.recv()?;
        match &line {
            ServerLine::Msg { .. } => messages += 1,
            ServerLine::Joined(_) | ServerLine::Left { .. } if !args.messages_only => {}
            ServerLine::Bye(reason) => return Err(receiver.bye(*reason).into()),
            _ => continue,
        }
        if let Some(text) = render(&line, format) {
            writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to standard output")?;
        }
        if args.count == Some(messages) {
            return leave(sender, receiver);
        }
    }
}

/// Joins under the name asked for; a derived name that is taken gets a
/// number (`ana-tail2`), so two tails of one person never collide.
fn join(sender: &mut Sender, receiver: &mut Receiver, args: &ChatTailArgs) -> Result<String, ClientError> {
    if let Some(name) = &args.name {
        return client::join(sender, receiver, name);
    }
    let base = match std::env::var("CHAT_NAME") {
        Ok(name) if !name.is_empty() => {
            let room = crate::name::MAX_CHARS - "-tail".len() - 1;
            format!("{}-tail", name.chars().take(room).collect::<String>())
        }
        _ => client::login_name("-tail"),
    };
    let mut result = client::join(sender, receiver, &base);
    for n in 2..=NAME_TRIES {
        match &result {
            Err(ClientError::NameRefused { refusal, .. }) if refusal.code == ErrorCode::NameTaken => {
                result = client::join(sender, receiver, &format!("{base}{n}"));
            }
            _ => break,
        }
    }
    result
}

/// Sends `EXIT` and waits (a few seconds at most) for the server to close,
/// so it sees a clean goodbye rather than a reset.
fn leave(mut sender: Sender, mut receiver: Receiver) -> anyhow::Result<()> {
    sender.send(&Request::Exit)?;
    sender.finish()?;
    while receiver.recv().is_ok() {}
    Ok(())
}
