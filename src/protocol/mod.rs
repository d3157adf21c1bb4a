//! The wire: every line a client or the server may send, how it is parsed and
//! how it is written. `shared/PROTOCOL.md` is the contract; this module is the
//! only place that knows its spelling, so the server and every client agree.

mod join;
mod tags;

use std::fmt;

pub use self::join::{is_epoch, Join, Position, PositionRef, Replay, MAX_EPOCH};
pub use self::tags::{event_prefix, now_ms, parse_time, Tags, Time};
use crate::name::{self, NameError};

/// The server's name and version, as the `HELLO` line announces it.
pub const SERVER_ID: &str = concat!("chatd/", env!("CARGO_PKG_VERSION"));

/// The default TCP port.
pub const DEFAULT_PORT: u16 = 5000;

/// The default longest line, in bytes, terminator included.
pub const DEFAULT_MAX_LINE: usize = 4096;

/// A line from a client, borrowed from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// The room's password, before `JOIN`: the rest of the line, spaces
    /// included.
    Pass(&'a str),
    Join(Join<'a>),
    /// Version 2: tags on events and `OK JOIN` from now on.
    Tags,
    Msg(&'a str),
    Exit,
    Names,
    Ping(Option<&'a str>),
    /// TLS from the next byte on (`docs/protocol.md`, "Nobody listening in").
    StartTls,
}

impl<'a> Request<'a> {
    /// Parses one line (without its terminator). The verb is case-insensitive
    /// and separated from its argument by exactly one space; whatever follows
    /// that space is the argument, leading spaces included.
    pub fn parse(line: &'a str) -> Result<Request<'a>, Refusal> {
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        let is = |word: &str| verb.eq_ignore_ascii_case(word);
        if is("JOIN") {
            Ok(Request::Join(Join::parse(arg.unwrap_or(""))?))
        } else if is("PASS") {
            match arg {
                Some(password) if !password.is_empty() => Ok(Request::Pass(password)),
                _ => Err(Refusal::new(ErrorCode::Empty, "no password after PASS; type PASS <password>")),
            }
        } else if is("MSG") {
            let text = arg.unwrap_or("");
            check_text(text)?;
            Ok(Request::Msg(text))
        } else if is("EXIT") {
            Ok(Request::Exit)
        } else if is("NAMES") {
            Ok(Request::Names)
        } else if is("PING") {
            Ok(Request::Ping(arg.filter(|token| !token.is_empty())))
        } else if is("TAGS") {
            Ok(Request::Tags)
        } else if is("STARTTLS") {
            Ok(Request::StartTls)
        } else {
            Err(Refusal::new(
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command \"{}\"; commands: JOIN <name>, MSG <text>, NAMES, PING, EXIT, TAGS, PASS <password>",
                    Printable(verb)
                ),
            ))
        }
    }
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Pass(password) => write!(f, "PASS {password}"),
            Request::Join(join) => write!(f, "JOIN {join}"),
            Request::Tags => f.write_str("TAGS"),
            Request::Msg(text) => write!(f, "MSG {text}"),
            Request::Exit => f.write_str("EXIT"),
            Request::Names => f.write_str("NAMES"),
            Request::Ping(Some(token)) => write!(f, "PING {token}"),
            Request::Ping(None) => f.write_str("PING"),
            Request::StartTls => f.write_str("STARTTLS"),
        }
    }
}

/// The longest `MSG` text a server on the default line limit takes: the
/// limit less `MSG `, and the newline. A server may take longer lines
/// (`chatd --max-line`), or fewer: only it can judge.
pub const MAX_TEXT: usize = DEFAULT_MAX_LINE - "MSG \n".len();

/// What a client checks before sending a message, so that a message the
/// server would refuse whatever its limits is refused at once, with the
/// same words. The length is not checked: the line limit is the server's
/// (`ERR TOO_LONG`).
pub fn check_outgoing(text: &str) -> Result<(), Refusal> {
    check_text(text)
}

/// Checks the text of a `MSG`: not empty, and no control character but tab,
/// because an escape sequence in a message could take over readers' terminals.
pub fn check_text(text: &str) -> Result<(), Refusal> {
    if text.is_empty() {
        return Err(Refusal::new(ErrorCode::Empty, "empty message; type MSG <text>"));
    }
    if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(Refusal::new(
            ErrorCode::BadText,
            format!("control character U+{:04X} in message; only tab is allowed", c as u32),
        ));
    }
    Ok(())
}

/// Why a request failed: the code and the words for people after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal { code, text: text.into() }
    }
}

impl From<NameError> for Refusal {
    fn from(err: NameError) -> Refusal {
        Refusal::new(ErrorCode::BadName, format!("{err}; a name is 1 to {} letters, digits, _ - or .", name::MAX_CHARS))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

macro_rules! wire_words {
    ($(#[$meta:meta])* $vis:vis enum $ty:ident { $($variant:ident => $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $ty { $($variant,)* }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];

            /// The word on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word,)* }
            }

            /// The value a wire word names, if any.
            pub fn from_word(word: &str) -> Option<$ty> {
                match word { $($word => Some($ty::$variant),)* _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_words! {
    /// The `<CODE>` of an `ERR` line.
    pub enum ErrorCode {
        BadName => "BAD_NAME",
        NameTaken => "NAME_TAKEN",
        NotJoined => "NOT_JOINED",
        AlreadyJoined => "ALREADY_JOINED",
        Empty => "EMPTY",
        BadText => "BAD_TEXT",
        UnknownCommand => "UNKNOWN_COMMAND",
        TooLong => "TOO_LONG",
        BadEncoding => "BAD_ENCODING",
        Full => "FULL",
        Timeout => "TIMEOUT",
        BadOption => "BAD_OPTION",
        Unavailable => "UNAVAILABLE",
        NoTls => "NO_TLS",
        PasswordRequired => "PASSWORD_REQUIRED",
        BadPassword => "BAD_PASSWORD",
        TlsRequired => "TLS_REQUIRED",
    }
}

wire_words! {
    /// Why a member left, as `LEFT <name> <reason>` says.
    pub enum LeaveReason {
        Exit => "exit",
        Lost => "lost",
        Timeout => "timeout",
        Slow => "slow",
    }
}

wire_words! {
    /// Why the server closes a connection, as `BYE <reason>` says.
    pub enum ByeReason {
        Exit => "exit",
        Shutdown => "shutdown",
        Slow => "slow",
        Timeout => "timeout",
        Full => "full",
        Replaced => "replaced",
        Unavailable => "unavailable",
    }
}

/// The `MSG <from> <text>` line the room sends, terminator included; built
/// in one allocation because it is built for every message.
pub fn msg_line(from: &str, text: &str) -> std::sync::Arc<[u8]> {
    let mut line = Vec::with_capacity(6 + from.len() + text.len());
    for part in [b"MSG ", from.as_bytes(), b" ", text.as_bytes(), b"\n"] {
        line.extend_from_slice(part);
    }
    line.into()
}

/// A line from the server. Parsing owns its strings: clients keep events
/// around, and a server line has no length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    Hello {
        server: String,
        text: String,
    },
    OkJoin(String),
    OkTags,
    /// TLS begins with the next byte.
    OkStartTls,
    /// The password was right, or the room has none.
    OkPass,
    /// `MISSED <n>`, or `MISSED ?` (`None`) when the position was not this
    /// room's.
    Missed(Option<u64>),
    Err(Refusal),
    Msg {
        from: String,
        text: String,
    },
    Joined(String),
    Left {
        name: String,
        reason: LeaveReason,
    },
    Names(Vec<String>),
    Pong(Option<String>),
    Bye(ByeReason),
}

impl ServerLine {
    /// Parses one line from the server (without its terminator), tags
    /// skipped.
    pub fn parse(line: &str) -> Result<ServerLine, MalformedLine> {
        ServerLine::parse_tagged(line).map(|(_, line)| line)
    }

    /// Parses one line from the server (without its terminator), with the
    /// tags before it, if any.
    pub fn parse_tagged(whole: &str) -> Result<(Tags, ServerLine), MalformedLine> {
        let bad = || MalformedLine(whole.to_owned());
        let (tags, line) = Tags::split(whole).ok_or_else(bad)?;
        Ok((tags, ServerLine::parse_untagged(line).ok_or_else(bad)?))
    }

    fn parse_untagged(line: &str) -> Option<ServerLine> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        Some(match verb {
            "HELLO" => {
                let (server, text) = rest.split_once(' ').unwrap_or((rest, ""));
                ServerLine::Hello { server: server.to_owned(), text: text.to_owned() }
            }
            "OK" => match rest.split_once(' ') {
                Some(("JOIN", name)) if !name.is_empty() => ServerLine::OkJoin(name.to_owned()),
                None if rest == "TAGS" => ServerLine::OkTags,
                None if rest == "STARTTLS" => ServerLine::OkStartTls,
                None if rest == "PASS" => ServerLine::OkPass,
                _ => return None,
            },
            "ERR" => {
                let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
                ServerLine::Err(Refusal::new(ErrorCode::from_word(code)?, text))
            }
            "MSG" => {
                let (from, text) = rest.split_once(' ')?;
                ServerLine::Msg { from: from.to_owned(), text: text.to_owned() }
            }
            "JOINED" if !rest.is_empty() => ServerLine::Joined(rest.to_owned()),
            "LEFT" => {
                let (name, reason) = rest.split_once(' ')?;
                ServerLine::Left { name: name.to_owned(), reason: LeaveReason::from_word(reason)? }
            }
            "NAMES" => ServerLine::Names(rest.split(' ').filter(|n| !n.is_empty()).map(str::to_owned).collect()),
            "PONG" => ServerLine::Pong((!rest.is_empty()).then(|| rest.to_owned())),
            "BYE" => ServerLine::Bye(ByeReason::from_word(rest)?),
            "MISSED" if rest == "?" => ServerLine::Missed(None),
            "MISSED" if rest.bytes().all(|b| b.is_ascii_digit()) => ServerLine::Missed(Some(rest.parse().ok()?)),
            _ => return None,
        })
    }

    /// Whether this is a room event, which has a position.
    pub fn is_event(&self) -> bool {
        matches!(self, ServerLine::Msg { .. } | ServerLine::Joined(_) | ServerLine::Left { .. })
    }
}

impl fmt::Display for ServerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerLine::Hello { server, text } => write!(f, "HELLO {server} {text}"),
            ServerLine::OkJoin(name) => write!(f, "OK JOIN {name}"),
            ServerLine::OkTags => f.write_str("OK TAGS"),
            ServerLine::OkStartTls => f.write_str("OK STARTTLS"),
            ServerLine::OkPass => f.write_str("OK PASS"),
            ServerLine::Missed(Some(n)) => write!(f, "MISSED {n}"),
            ServerLine::Missed(None) => f.write_str("MISSED ?"),
            ServerLine::Err(refusal) => write!(f, "ERR {refusal}"),
            ServerLine::Msg { from, text } => write!(f, "MSG {from} {text}"),
            ServerLine::Joined(name) => write!(f, "JOINED {name}"),
            ServerLine::Left { name, reason } => write!(f, "LEFT {name} {reason}"),
            ServerLine::Names(names) => {
                f.write_str("NAMES")?;
                names.iter().try_for_each(|name| write!(f, " {name}"))
            }
            ServerLine::Pong(Some(token)) => write!(f, "PONG {token}"),
            ServerLine::Pong(None) => f.write_str("PONG"),
            ServerLine::Bye(reason) => write!(f, "BYE {reason}"),
        }
    }
}

/// A server line that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine(pub String);

impl fmt::Display for MalformedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed line from the server: {:?}", Printable(&self.0))
    }
}

impl std::error::Error for MalformedLine {}

/// Shows a string with its control characters and bidirectional controls
/// escaped (`\u{1b}`, `\u{202e}`), so that text from the network can be
/// printed on a terminal safely.
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

/// Whether `c` cannot be shown as it is: a control character (tab aside),
/// or one of Unicode's bidirectional controls, which reorder the text around
/// them on a terminal and can make a message read as something else
/// (U+202E, RIGHT-TO-LEFT OVERRIDE, turns `exe.txt` around).
pub fn is_unsafe_to_show(c: char) -> bool {
    c.is_control() && c != '\t'
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if is_unsafe_to_show(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_case_insensitively_with_one_space() {
        let cases: &[(&str, Result<Request, ErrorCode>)] = &[
            ("JOIN Ana", Ok(Request::Join(Join::name("Ana")))),
            ("join Ana", Ok(Request::Join(Join::name("Ana")))),
            ("Join  Ana", Ok(Request::Join(Join::name(" Ana")))),
            ("JOIN", Ok(Request::Join(Join::name("")))),
            ("JOIN Ana LAST 5", Ok(Request::Join(Join { name: "Ana", replay: Replay::Last(5), token: None }))),
            ("JOIN Ana LAST x", Err(ErrorCode::BadOption)),
            ("tags", Ok(Request::Tags)),
            ("MSG hola a todos", Ok(Request::Msg("hola a todos"))),
            ("msg  leading", Ok(Request::Msg(" leading"))),
            ("MSG tab\there", Ok(Request::Msg("tab\there"))),
            ("MSG", Err(ErrorCode::Empty)),
            ("MSG ", Err(ErrorCode::Empty)),
            ("MSG a\u{1b}[2J", Err(ErrorCode::BadText)),
            ("MSG nul\0", Err(ErrorCode::BadText)),
            ("MSG c1\u{9b}", Err(ErrorCode::BadText)),
            ("exit", Ok(Request::Exit)),
            ("NAMES", Ok(Request::Names)),
            ("PING", Ok(Request::Ping(None))),
            ("PING 42", Ok(Request::Ping(Some("42")))),
            ("starttls", Ok(Request::StartTls)),
            ("PING ", Ok(Request::Ping(None))),
            ("PASS s3cret", Ok(Request::Pass("s3cret"))),
            ("pass  two words ", Ok(Request::Pass(" two words "))),
            ("PASS", Err(ErrorCode::Empty)),
            ("PASS ", Err(ErrorCode::Empty)),
            ("PASSWORD x", Err(ErrorCode::UnknownCommand)),
            ("HELLO", Err(ErrorCode::UnknownCommand)),
            ("MSGX hi", Err(ErrorCode::UnknownCommand)),
        ];
        for (line, want) in cases {
            let got = Request::parse(line).map_err(|r| r.code);
            assert_eq!(&got, want, "parsing {line:?}");
        }
    }

    #[test]
    fn server_lines_round_trip() {
        let lines = [
            "HELLO chatd/0.2.0 type JOIN <name> to enter",
            "OK JOIN Carlos",
            "ERR NAME_TAKEN the name is taken",
            "MSG Ana Hola a todos",
            "MSG Ana  two  spaces ",
            "JOINED Luis",
            "LEFT Luis timeout",
            "NAMES Ana Carlos",
            "NAMES",
            "PONG 1",
            "PONG",
            "BYE shutdown",
            "OK TAGS",
            "OK STARTTLS",
            "OK PASS",
            "ERR BAD_PASSWORD wrong password",
            "MISSED 12",
            "MISSED ?",
            "BYE replaced",
        ];
        for line in lines {
            let parsed = ServerLine::parse(line).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.to_string(), line);
        }
    }

    #[test]
    fn malformed_server_lines_are_errors() {
        for line in [
            "",
            "OK",
            "OK PART x",
            "ERR NOPE x",
            "LEFT Luis gone",
            "BYE later",
            "WHAT",
            "MISSED",
            "MISSED -1",
            "@seq=x MSG a b",
        ] {
            assert!(ServerLine::parse(line).is_err(), "{line:?} parsed");
        }
    }

    #[test]
    fn tagged_lines_parse_with_their_tags() {
        let (tags, line) = ServerLine::parse_tagged("@seq=3;time=2026-11-30T13:40:01.123Z JOINED Luis").unwrap();
        assert_eq!((tags.seq, line), (Some(3), ServerLine::Joined("Luis".into())));
        assert_eq!(ServerLine::parse("@seq=3;time=x LEFT Luis exit").unwrap().to_string(), "LEFT Luis exit");
    }

    #[test]
    fn an_unknown_verb_is_quoted_in_the_refusal() {
        let refusal = Request::parse("HELLO there").unwrap_err();
        assert!(refusal.text.starts_with("unknown command \"HELLO\"; commands: JOIN"), "{}", refusal.text);
    }

    #[test]
    fn printable_escapes_control_characters_but_not_tab() {
        assert_eq!(Printable("a\u{1b}[31mb\tc\r").to_string(), "a\\u{1b}[31mb\tc\\r");
        assert_eq!(Printable("José").to_string(), "José");
        assert_eq!(Printable("see \u{202e}txt.exe").to_string(), "see \\u{202e}txt.exe");
        for bidi in ['\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}'] {
            assert!(is_unsafe_to_show(bidi), "U+{:04X}", bidi as u32);
        }
        assert!(!is_unsafe_to_show('\u{2070}') && !is_unsafe_to_show('\t') && !is_unsafe_to_show('א'));
    }
}

#[cfg(test)]
mod doc_tests {
    /// `docs/PROTOCOL.md` is a verbatim copy of the shared contract; where the
    /// shared copy is beside the repository, the two must agree.
    #[test]
    fn the_protocol_copy_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let Ok(shared) = std::fs::read_to_string(root.join("../shared/PROTOCOL.md")) else { return };
        let ours = std::fs::read_to_string(root.join("docs/PROTOCOL.md")).unwrap();
        assert!(ours.ends_with(&shared), "docs/PROTOCOL.md differs from shared/PROTOCOL.md; copy it again");
    }
}
