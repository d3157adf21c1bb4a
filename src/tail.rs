//! `chat-tail`: the room's events on standard output, one per line, flushed
//! as they arrive, for `grep`, `jq` and `while read`. It can start with the
//! room's last events (`-n`) or from a kept position (`--since`), and goes on
//! across lost connections and server restarts.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;

use crate::cli::ChatTailArgs;
use crate::client::{
    self, json_missed, render_event, ClientError, Format, Joined, Membership, News, Receiver, Sender, Watch,
};
use crate::protocol::{Join, Replay, ServerLine};

/// How long `--count` waits for the server's goodbye after `EXIT`.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);

pub fn run(args: &ChatTailArgs) -> anyhow::Result<()> {
    crate::client::set_trust(args.server.trust());
    let servers = crate::discovery::servers(args.server.server.as_deref(), "chat-tail")?;
    let settings = args.server.settings(&servers)?;
    let mut connection = client::connect(&servers)?;
    client::give_password(&mut connection.0, &mut connection.1, settings.password.as_ref())?;
    let replay = match &args.since {
        Some(position) => Replay::Since(position.as_ref()),
        None => Replay::Last(args.lines),
    };
    let joined = join(&mut connection, args, replay)?;
    let mut membership = Membership::start(connection, joined, args.since.clone(), settings)?;
    if args.count == Some(0) {
        return leave(membership);
    }
    let stdout = io::stdout();
    // A pipe whose reader closed reports POLLERR on its writing end: so
    // `chat-tail | head -n 2` ends as soon as head does, quiet room or not.
    let watch = Watch::hangup(stdout.as_fd());
    let mut out = stdout.lock();
    let mut messages = 0;
    loop {
        let event = match membership.next(Some(watch))? {
            News::Event(event) => event,
            // The reader went away: leave as politely as after --count.
            News::Watched(_) => return leave(membership),
            News::Missed { count, epoch } => {
                report_missed(&mut out, args.format(), count, &epoch)?;
                continue;
            }
            News::Lost(why) => {
                eprintln!("chat-tail: {why}; reconnecting");
                continue;
            }
            News::Resumed { .. } => {
                eprintln!("chat-tail: reconnected to {}", membership.server());
                continue;
            }
            News::Live | News::Confirmed | News::Reply(_) | News::Left | News::TimeUp => continue,
        };
        match &event.line {
            ServerLine::Msg { .. } => messages += 1,
            ServerLine::Joined(_) | ServerLine::Left { .. } if !args.messages_only => {}
            _ => continue,
        }
        if let Some(text) = render_event(&event, args.format()) {
            writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to standard output")?;
        }
        if args.count == Some(messages) {
            return leave(membership);
        }
    }
}

/// Says on standard error, and in the JSON stream, that events were missed.
fn report_missed(out: &mut impl Write, format: Format, count: Option<u64>, epoch: &str) -> anyhow::Result<()> {
    match count {
        Some(n) => eprintln!("chat-tail: {n} events missed"),
        None => {
            eprintln!("chat-tail: the server's history is not the one of {epoch}: some events may have been missed")
        }
    }
    if format == Format::Json {
        writeln!(out, "{}", json_missed(count))
            .and_then(|()| out.flush())
            .context("cannot write to standard output")?;
    }
    Ok(())
}

/// Joins under the name asked for; a derived name that is taken gets a
/// number (`ana-tail2`), so two tails of one person never collide.
fn join(connection: &mut (Sender, Receiver), args: &ChatTailArgs, replay: Replay<'_>) -> Result<Joined, ClientError> {
    let (sender, receiver) = connection;
    match &args.name {
        Some(name) => client::join(sender, receiver, &Join { name, replay, token: None }),
        None => client::join_first_free(sender, receiver, client::suffixed_names(&client::own_name(), "-tail"), replay),
    }
}

/// Sends `EXIT` and waits (a few seconds at most) for the server's
/// goodbye, so it sees a clean leave rather than a reset.
fn leave(mut membership: Membership) -> anyhow::Result<()> {
    membership.leave(LEAVE_PATIENCE);
    while !matches!(membership.next(None), Ok(News::Left) | Err(_)) {}
    Ok(())
}
