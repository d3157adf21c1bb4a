//! `chat`, the interactive client: a prompt to type messages at, with the
//! room's events shown above it, slash commands, and a history kept across
//! runs. With standard input or output not a terminal it is a plain line
//! reader instead (`echo hi | chat`), so scripts can use it too.
//!
//! Two threads: this one reads what the person types and sends it; a reader
//! thread shows what the server says. When the server goes away, the reader
//! thread ends the process itself, because rustyline's `readline` cannot be
//! interrupted from another thread.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor, ExternalPrinter as _};

use crate::cli::ChatArgs;
use crate::client::{self, render, ClientError, Format, Receiver, Sender};
use crate::exit_codes as exit;
use crate::protocol::{self, ByeReason, ErrorCode, Printable, Request, ServerLine};

/// How long `/quit` waits for `BYE exit`: only so that what the server said
/// before it is shown; the person wants to be gone.
const QUIT_PATIENCE: Duration = Duration::from_secs(2);

/// How long the plain mode waits for `BYE exit`, which proves that every
/// line sent before it was taken.
const PLAIN_PATIENCE: Duration = Duration::from_secs(10);

/// How long a failed send waits for the reader thread to report why the
/// connection ended (it knows better: `BYE shutdown` rather than "broken pipe").
const VERDICT_PATIENCE: Duration = Duration::from_secs(2);

/// Lines of history kept.
const HISTORY_SIZE: usize = 1000;

const HELP: &str = "\
commands:
  /who     list who is in the room
  /quit    leave (Ctrl-D too)
  /help    show this list
  //text   send a message that starts with /
Ctrl-C clears the line; Up and Down go through earlier lines.
";

/// Why `chat` stopped.
#[derive(Debug)]
pub enum ChatError {
    Client(ClientError),
    Terminal(ReadlineError),
    Input(io::Error),
}

impl ChatError {
    /// The exit status for this error (see `exit_codes`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ChatError::Client(e) => e.exit_code(),
            ChatError::Terminal(_) | ChatError::Input(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Client(e) => write!(f, "{e}"),
            ChatError::Terminal(e) => write!(f, "the terminal failed: {e}"),
            ChatError::Input(e) => write!(f, "cannot read standard input: {e}"),
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
    // Both ends must be a terminal for the editor: `chat > log` reads lines too.
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        interactive(args)
    } else {
        plain(args)
    }
}

// The interactive client.

fn interactive(args: &ChatArgs) -> Result<(), ChatError> {
    // Taken before the editor changes anything, so that the reader thread can
    // put the terminal back if the server goes away in the middle of a prompt.
    let terminal = termios::tcgetattr(io::stdin()).ok();
    let mut editor = DefaultEditor::with_config(Config::builder().max_history_size(HISTORY_SIZE)?.build())?;
    let server = &args.server.server;
    let mut connection = client::connect(server)?;
    let name = match &args.name {
        Some(name) => client::join(&mut connection.0, &mut connection.1, name)?,
        None => match ask_name(&mut editor, &mut connection, server)? {
            Some(name) => name,
            None => {
                let _ = connection.0.finish();
                return Ok(());
            }
        },
    };
    let mut history = History::open(&mut editor);
    let mut printer = editor.create_external_printer()?;
    let (sender, receiver) = connection;
    println!("* you are {} on {}; /help lists the commands", Printable(&name), receiver.server());
    // The printer shows a line above the prompt and redraws the line being typed.
    let show = move |text: String| {
        let _ = printer.print(format!("{text}\n"));
    };
    let mut session = Session::start(sender, receiver, show, terminal);
    let result = converse(&mut editor, &mut session, &name, &mut history);
    // A connection that broke cannot say EXIT.
    if !matches!(result, Err(ChatError::Client(_))) {
        let _ = session.leave(QUIT_PATIENCE);
    }
    result
}

/// Asks for a name until the server takes one, on the same connection;
/// `None` if the person gave up (Ctrl-D).
fn ask_name(
    editor: &mut DefaultEditor,
    connection: &mut (Sender, Receiver),
    server: &str,
) -> Result<Option<String>, ChatError> {
    loop {
        let typed = match editor.readline("name: ") {
            Ok(typed) => typed,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let typed = typed.trim();
        if typed.is_empty() {
            continue;
        }
        match join_patiently(connection, server, typed) {
            Ok(name) => return Ok(Some(name)),
            Err(ClientError::NameRefused { refusal, .. }) => println!("{}", Printable(&refusal.text)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Joins as `name`. The server drops a connection that has not joined within
/// its join timeout (60 s by default), and a person may take longer than
/// that to choose a name: a connection that timed out is replaced once.
fn join_patiently(connection: &mut (Sender, Receiver), server: &str, name: &str) -> Result<String, ClientError> {
    match client::join(&mut connection.0, &mut connection.1, name) {
        Err(ClientError::Refused(refusal)) if refusal.code == ErrorCode::Timeout => {}
        Err(ClientError::Bye { reason: ByeReason::Timeout, .. }) => {}
        result => return result,
    }
    *connection = client::connect(server)?;
    client::join(&mut connection.0, &mut connection.1, name)
}

/// Reads lines and acts on them until `/quit` or Ctrl-D.
fn converse(
    editor: &mut DefaultEditor,
    session: &mut Session,
    name: &str,
    history: &mut History,
) -> Result<(), ChatError> {
    let prompt = format!("{name}> ");
    loop {
        let typed = match editor.readline(&prompt) {
            Ok(typed) => typed,
            // As in shells: Ctrl-C drops the line being typed.
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
                    Ok(()) => session.say(&Request::Msg(text))?,
                    Err(why) => println!("not sent: {why}"),
                },
                Input::Who => session.say(&Request::Names)?,
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
fn check_message(text: &str) -> Result<(), String> {
    protocol::check_outgoing(text).map_err(|refusal| refusal.text)
}

// The connection once joined.

/// A joined connection: the sending half for this thread, and a reader
/// thread that shows what the server says.
struct Session {
    sender: Sender,
    server: String,
    /// Set before `EXIT`: from then on the end of the connection is expected.
    leaving: Arc<AtomicBool>,
    /// How the reader thread ended, when it ended as expected.
    ended: mpsc::Receiver<Result<(), ClientError>>,
}

impl Session {
    /// Starts the reader thread, which passes each event to `show`.
    /// `terminal` is the terminal's state to put back if the connection ends
    /// without our asking.
    fn start(
        sender: Sender,
        mut receiver: Receiver,
        mut show: impl FnMut(String) + Send + 'static,
        terminal: Option<Termios>,
    ) -> Session {
        let server = receiver.server().to_owned();
        let leaving = Arc::new(AtomicBool::new(false));
        let (report, ended) = mpsc::channel();
        let expected = Arc::clone(&leaving);
        thread::spawn(move || {
            let end = listen(&mut receiver, &mut show);
            match end {
                Err(e) if !expected.load(Ordering::SeqCst) => quit_lost(&e, terminal.as_ref()),
                end => drop(report.send(end)),
            }
        });
        Session { sender, server, leaving, ended }
    }

    /// Sends a request at once.
    fn say(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        self.send(request)?;
        self.flush()
    }

    /// Queues a request; it goes out at `flush`.
    fn send(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        self.sender.send(request).map_err(|e| self.broken(e))
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.sender.flush().map_err(|e| self.broken(e))
    }

    /// The connection broke under a send. The reader thread sees that too,
    /// and ends the process with a better reason; this is for in case it
    /// does not.
    fn broken(&self, e: io::Error) -> ClientError {
        let _ = self.ended.recv_timeout(VERDICT_PATIENCE);
        ClientError::Lost { server: self.server.clone(), detail: e.to_string() }
    }

    /// Says `EXIT` and waits up to `patience` for `BYE exit`, while the
    /// events before it are shown.
    fn leave(mut self, patience: Duration) -> Result<(), ClientError> {
        self.leaving.store(true, Ordering::SeqCst);
        // If EXIT cannot go out, the reader thread sees the end of the
        // connection, and tells why.
        let _ = self.sender.send(&Request::Exit).and_then(|()| self.sender.flush());
        self.ended.recv_timeout(patience).unwrap_or_else(|_| {
            Err(ClientError::Lost { server: self.server, detail: "the server did not answer EXIT".into() })
        })
    }
}

/// Shows the room's events until the server says `BYE exit`; any other end
/// is an error.
fn listen(receiver: &mut Receiver, show: &mut impl FnMut(String)) -> Result<(), ClientError> {
    loop {
        match receiver.recv() {
            Ok(ServerLine::Bye(ByeReason::Exit)) => return Ok(()),
            Ok(ServerLine::Bye(reason)) => return Err(receiver.bye(reason)),
            Ok(line) => {
                if let Some(text) = render(&line, Format::Human) {
                    show(text);
                }
            }
            // A line this client does not know may be a later extension of
            // the protocol, which a client may ignore.
            Err(ClientError::Protocol(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Ends the process for a connection that ended without our asking, from
/// the reader thread, while the main thread may be inside `readline`: so the
/// terminal is put back first, as the editor would have on return. History
/// is saved line by line, so nothing is lost.
fn quit_lost(err: &ClientError, terminal: Option<&Termios>) -> ! {
    if let Some(saved) = terminal {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, saved);
        // Bracketed paste off, as the editor leaves it; then off the prompt line.
        let mut out = io::stdout();
        let _ = out.write_all(b"\x1b[?2004l\n").and_then(|()| out.flush());
    }
    eprintln!("chat: {err}");
    std::process::exit(err.exit_code().into())
}

// History.

/// The file that keeps typed lines across runs, when there is one.
#[derive(Debug)]
struct History {
    file: Option<PathBuf>,
}

impl History {
    /// Creates the history's directory if needed and loads what it holds. A
    /// history that cannot be kept is a warning, not a failure: chatting
    /// matters more.
    fn open(editor: &mut DefaultEditor) -> History {
        let Some(file) = history_file(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) else {
            eprintln!("chat: warning: neither XDG_STATE_HOME nor HOME is set, so no history is kept");
            return History { file: None };
        };
        let dir = file.parent().expect("the history file is inside a directory");
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            eprintln!("chat: warning: cannot create {}: {e}; no history is kept this time", dir.display());
            return History { file: None };
        }
        match editor.load_history(&file) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("chat: warning: cannot read the history in {}: {e}", file.display()),
        }
        History { file: Some(file) }
    }

    /// Adds a line and saves it at once, so that a killed session keeps it.
    fn add(&mut self, editor: &mut DefaultEditor, line: &str) {
        let Some(file) = &self.file else { return };
        let saved = editor.add_history_entry(line).and_then(|_| editor.append_history(file));
        if let Err(e) = saved {
            eprintln!("chat: warning: cannot save the history in {}: {e}; no more is kept this time", file.display());
            self.file = None;
        }
    }
}

/// `$XDG_STATE_HOME/minichat/history` (see `paths::state_dir`).
fn history_file(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    Some(crate::paths::state_dir(xdg_state_home, home)?.join("history"))
}

// The plain line reader.

/// Sends each line of standard input as a message and prints the room's
/// events on standard output, until input ends; then leaves and waits for
/// `BYE exit`, which proves every line was taken.
fn plain(args: &ChatArgs) -> Result<(), ChatError> {
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
        use crate::protocol::MAX_TEXT;
        assert_eq!(check_message(&"x".repeat(MAX_TEXT)), Ok(()));
        assert!(check_message(&"x".repeat(MAX_TEXT + 1)).unwrap_err().contains("4092 bytes"));
        assert!(check_message("esc\u{1b}[2J").unwrap_err().contains("U+001B"));
    }

    #[test]
    fn the_history_file_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        let cases = [
            (os("/state"), os("/home/ana"), Some("/state/minichat/history")),
            (None, os("/home/ana"), Some("/home/ana/.local/state/minichat/history")),
            (os(""), os("/home/ana"), Some("/home/ana/.local/state/minichat/history")),
            (os("relative"), os("/home/ana"), Some("/home/ana/.local/state/minichat/history")),
            (None, None, None),
            (None, os(""), None),
        ];
        for (xdg, home, want) in cases {
            assert_eq!(history_file(xdg.clone(), home.clone()), want.map(PathBuf::from), "{xdg:?} {home:?}");
        }
    }
}
