//! The interactive client: the editor, the name asked for until the server
//! takes one, and what each typed line asks for.

use std::io;
use std::time::Duration;

use nix::sys::termios;
use rustyline::error::ReadlineError;
use rustyline::{Config, ExternalPrinter as _};

use super::line_history::History;
use super::session::{Look, Session, Unsent};
use super::typing::{ChatEditor, Typing};
use super::ChatError;
use crate::cli::ChatArgs;
use crate::client::{self, ClientError, Joined, Membership, Receiver, Sender};
use crate::password::Password;
use crate::protocol::{self, ByeReason, ErrorCode, Join, Printable, Replay};

/// How long `/quit` waits for `BYE exit`: only so that what the server said
/// before it is shown; the person wants to be gone.
const QUIT_PATIENCE: Duration = Duration::from_secs(2);

/// The room's events shown on joining, unless `--history` says otherwise.
pub(super) const DEFAULT_HISTORY: u64 = 20;

/// Lines of history kept.
const HISTORY_SIZE: usize = 1000;

const HELP: &str = "\
commands:
  /who     list who is in the room
  /quit    leave (Ctrl-D too)
  /help    show this list
  //text   send a message that starts with /
Ctrl-C clears the line (marked ^C); Up and Down go through earlier lines.
";

/// Joins, then reads and sends lines until `/quit` or Ctrl-D.
pub(super) fn interactive(args: &ChatArgs) -> Result<(), ChatError> {
    // Taken before the editor changes anything, so that the connection's
    // thread can put the terminal back if it ends the process mid-prompt.
    let terminal = termios::tcgetattr(io::stdin()).ok();
    let mut editor = ChatEditor::with_config(Config::builder().max_history_size(HISTORY_SIZE)?.build())?;
    let typing = Typing::default();
    typing.install(&mut editor);
    let history_events = args.history.unwrap_or(DEFAULT_HISTORY);
    crate::client::set_trust(args.server.trust());
    let servers = match args.server.server.as_deref() {
        Some(given) => given.to_owned(),
        None => match find_room(&mut editor, &typing)? {
            Some(servers) => servers,
            None => return Ok(()),
        },
    };
    let mut settings = args.server.settings(&servers)?;
    let mut connection = client::connect(&servers)?;
    if let Err(e) = client::give_password(&mut connection.0, &mut connection.1, settings.password.as_ref()) {
        ask_password(&mut connection, &mut settings.password, e)?;
    }
    // A name from CHAT_NAME that is taken (this person's chat is open in
    // another window) is asked again, as a typed one is; --name is final.
    let from_env = std::env::var("CHAT_NAME").ok().filter(|name| !name.is_empty() && args.name.is_none());
    let mut joined = None;
    if let Some(name) = args.name.as_ref().or(from_env.as_ref()) {
        match join_patiently(&mut connection, &joining(name, history_events), &mut settings.password) {
            Ok(done) => joined = Some(done),
            Err(ChatError::Client(ClientError::NameRefused { refusal, .. })) if from_env.is_some() => {
                println!("{}", Printable(&refusal.text));
            }
            Err(e) => return Err(e),
        }
    }
    let joined = match joined {
        Some(joined) => joined,
        None => match ask_name(&mut editor, &typing, &mut connection, history_events, &mut settings.password)? {
            Some(joined) => joined,
            None => {
                let _ = connection.0.finish();
                return Ok(());
            }
        },
    };
    let name = joined.name.clone();
    let mut history = History::open(&mut editor);
    let mut printer = editor.create_external_printer()?;
    println!("* you are {} on {}; /help lists the commands", Printable(&name), connection.1.server());
    let membership = Membership::start(connection, joined, None, settings)?;
    // The printer shows a line above the prompt and redraws the line being typed.
    let show = move |text: String| {
        let _ = printer.print(format!("{text}\n"));
    };
    let unsent = Unsent { line: typing.line(), history: history.file().map(ToOwned::to_owned) };
    let session =
        Session::start(membership, show, Look { timed: true }, terminal, Some(unsent)).map_err(ChatError::Input)?;
    let result = converse(&mut editor, &typing, &session, &name, &mut history);
    if session.leave(Some(QUIT_PATIENCE)).is_err() {
        // Disconnected, or a server slow to say goodbye: say what that may cost.
        eprintln!("chat: left without the server's goodbye; lines typed last may not have arrived");
    }
    result
}

/// Most answers at the room prompt before `chat` gives up asking.
const ROOM_TRIES: usize = 10;

/// Given no server: the room found on the LAN, or the one the person
/// chooses when there are several; `None` if they gave up (Ctrl-D).
fn find_room(editor: &mut ChatEditor, typing: &Typing) -> Result<Option<String>, ChatError> {
    eprintln!("chat: looking for rooms on the LAN (--server HOST:PORT goes straight to one)…");
    let rooms = match crate::discovery::servers(None, "chat") {
        Err(ClientError::SeveralRooms(rooms)) => rooms,
        found => return Ok(Some(found?)),
    };
    println!("{} rooms on the LAN:", rooms.len());
    for (n, room) in rooms.iter().enumerate() {
        println!("  {}) {}", n + 1, room);
    }
    let prompt = format!("room (1-{}): ", rooms.len());
    for _ in 0..ROOM_TRIES {
        let typed = match editor.readline(&prompt) {
            Ok(_) if typing.take_cleared() => return Err(ChatError::Interrupted),
            Ok(typed) => typed,
            Err(ReadlineError::Interrupted) => return Err(ChatError::Interrupted),
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match typed.trim().parse::<usize>() {
            Ok(n) if (1..=rooms.len()).contains(&n) => return Ok(Some(rooms[n - 1].servers())),
            _ if typed.trim().is_empty() => {}
            _ => println!("type the number of a room, from 1 to {}", rooms.len()),
        }
    }
    Err(ClientError::SeveralRooms(rooms).into())
}

/// The join `chat` asks for: with the room's last `history` events.
fn joining(name: &str, history: u64) -> Join<'_> {
    Join { name, replay: Replay::Last(history), token: None }
}

/// Asks for a name until the server takes one, on the same connection;
/// `None` if the person gave up (Ctrl-D); Ctrl-C leaves, as in a shell.
fn ask_name(
    editor: &mut ChatEditor,
    typing: &Typing,
    connection: &mut (Sender, Receiver),
    history: u64,
    password: &mut Option<Password>,
) -> Result<Option<Joined>, ChatError> {
    loop {
        let typed = match editor.readline("name: ") {
            Ok(_) if typing.take_cleared() => return Err(ChatError::Interrupted),
            Ok(typed) => typed,
            Err(ReadlineError::Interrupted) => return Err(ChatError::Interrupted),
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let typed = typed.trim();
        if typed.is_empty() {
            continue;
        }
        match join_patiently(connection, &joining(typed, history), password) {
            Ok(joined) => return Ok(Some(joined)),
            Err(ChatError::Client(ClientError::NameRefused { refusal, .. })) => {
                println!("{}", Printable(&refusal.text))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Joins as `join` asks, asking for the room's password when it wants
/// one. The server drops a connection that has not joined within its join
/// timeout (60 s by default), and a person may take longer than that to
/// choose a name: a connection that timed out is replaced once, by one to
/// the same server.
fn join_patiently(
    connection: &mut (Sender, Receiver),
    join: &Join<'_>,
    password: &mut Option<Password>,
) -> Result<Joined, ChatError> {
    let mut replaced = false;
    loop {
        match client::join(&mut connection.0, &mut connection.1, join) {
            Err(e @ ClientError::Password { .. }) => ask_password(connection, password, e)?,
            Err(e) if timed_out(&e) && !replaced => {
                replaced = true;
                reconnect(connection, password.as_ref())?;
            }
            result => return Ok(result?),
        }
    }
}

/// Whether the server ended the connection for want of a `JOIN` in time.
fn timed_out(error: &ClientError) -> bool {
    match error {
        ClientError::Refused(refusal) => refusal.code == ErrorCode::Timeout,
        ClientError::Bye { reason, .. } => *reason == ByeReason::Timeout,
        _ => false,
    }
}

/// A new connection to the same server, given the password.
fn reconnect(connection: &mut (Sender, Receiver), password: Option<&Password>) -> Result<(), ClientError> {
    let server = connection.1.server().to_owned();
    *connection = client::connect(&server)?;
    client::give_password(&mut connection.0, &mut connection.1, password)
}

/// After `why` (the room wants a password, or a right one), asks the person
/// for it, without echo, until the room takes it; Ctrl-D gives up with
/// `why`. What is typed replaces `password`, for reconnections too.
fn ask_password(
    connection: &mut (Sender, Receiver),
    password: &mut Option<Password>,
    mut why: ClientError,
) -> Result<(), ChatError> {
    let mut replaced = false;
    loop {
        let ClientError::Password { refusal, .. } = &why else { return Err(why.into()) };
        match refusal.code {
            // Its words are for programs: PASS, then JOIN again.
            ErrorCode::PasswordRequired => println!("this room has a password (Ctrl-D gives up)"),
            _ => println!("{}", Printable(&refusal.text)),
        }
        let Some(typed) = super::password_prompt::ask_password()? else { return Err(why.into()) };
        *password = Some(typed);
        let mut given = client::give_password(&mut connection.0, &mut connection.1, password.as_ref());
        if given.as_ref().is_err_and(timed_out) && !replaced {
            // The person took longer than the server's join timeout.
            replaced = true;
            given = reconnect(connection, password.as_ref());
        }
        match given {
            Ok(()) => return Ok(()),
            Err(e) => why = e,
        }
    }
}

/// Reads lines and acts on them until `/quit` or Ctrl-D.
fn converse(
    editor: &mut ChatEditor,
    typing: &Typing,
    session: &Session,
    name: &str,
    history: &mut History,
) -> Result<(), ChatError> {
    let prompt = format!("{name}> ");
    loop {
        let typed = match editor.readline(&prompt) {
            // As in shells: Ctrl-C drops the line being typed, marked ^C.
            Ok(_) if typing.take_cleared() => continue,
            Ok(typed) => typed,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A paste of several lines arrives as one; each is taken on its own.
        for line in typed.split('\n') {
            let input = Input::parse(line);
            // `/quit` is left out: Up then Enter in the next session should
            // not leave at once.
            if !matches!(input, Input::Blank | Input::Quit) {
                history.add(editor, line);
            }
            match input {
                Input::Blank => {}
                Input::Say(text) => match check_message(text) {
                    Ok(()) => session.say(text),
                    Err(why) => println!("not sent: {why}"),
                },
                Input::Who => session.names(),
                Input::Quit => return Ok(()),
                Input::Help => print!("{HELP}"),
                Input::Unknown(command) => println!(
                    "unknown command {}: /help lists the commands; start with // to send a line that begins with /",
                    Printable(command)
                ),
            }
        }
    }
}

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Blank,
    Say(&'a str),
    Who,
    Quit,
    Help,
    Unknown(&'a str),
}

impl<'a> Input<'a> {
    fn parse(line: &'a str) -> Input<'a> {
        if line.trim().is_empty() {
            return Input::Blank;
        }
        if line.starts_with("//") {
            return Input::Say(&line[1..]);
        }
        if !line.starts_with('/') {
            return Input::Say(line);
        }
        let command = line.split_whitespace().next().unwrap_or(line);
        match command {
            "/who" => Input::Who,
            "/quit" => Input::Quit,
            "/help" => Input::Help,
            _ => Input::Unknown(command),
        }
    }
}

/// Refuses, before sending, a message the server would refuse, with words
/// that say why.
pub(super) fn check_message(text: &str) -> Result<(), String> {
    protocol::check_outgoing(text).map_err(|refusal| refusal.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines() {
        let cases = [
            ("", Input::Blank),
            ("   ", Input::Blank),
            ("hola", Input::Say("hola")),
            (" leading space", Input::Say(" leading space")),
            ("//etc/hosts", Input::Say("/etc/hosts")),
            ("//", Input::Say("/")),
            ("/who", Input::Who),
            ("/who ", Input::Who),
            ("/quit", Input::Quit),
            ("/help", Input::Help),
            ("/nope x", Input::Unknown("/nope")),
            ("/", Input::Unknown("/")),
            ("a /who", Input::Say("a /who")),
        ];
        for (line, want) in cases {
            assert_eq!(Input::parse(line), want, "{line:?}");
        }
    }

    #[test]
    fn messages_the_server_would_refuse_are_refused_here() {
        assert_eq!(check_message("tab\tis fine"), Ok(()));
        // The line limit is the server's to judge: it may take long lines.
        assert_eq!(check_message(&"x".repeat(64 * 1024)), Ok(()));
        assert!(check_message("esc\u{1b}[2J").unwrap_err().contains("U+001B"));
    }
}
