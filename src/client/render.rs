//! How a room event is shown: for people, as protocol lines, or as JSON. Text
//! from the network never reaches a terminal raw: control characters are
//! shown escaped, so nobody's escape sequence can take over a screen.

use std::fmt::Write;

use super::Event;
use crate::protocol::{Printable, ServerLine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `Ana: hola`, `* Luis joined`, `* Luis left (lost)`
    Human,
    /// The protocol line as the server sent it
    Raw,
    /// One JSON object per line: `{"event":"msg","from":"Ana","text":"hola"}`
    Json,
}

/// The event as one line (without newline), or `None` for lines that are not
/// room events or replies a person needs to see.
pub fn render(line: &ServerLine, format: Format) -> Option<String> {
    match format {
        Format::Human => human(line),
        Format::Raw => is_event(line).then(|| Printable(&line.to_string()).to_string()),
        Format::Json => json(line, &mut |_| {}),
    }
}

/// A room event as `render` shows it; in JSON with its position (`"seq"`, a
/// number, in the history `"epoch"`: together what `--since` takes) and
/// time (`"time"`, RFC 3339 as the server sent it) too.
pub fn render_event(event: &Event, format: Format) -> Option<String> {
    if format != Format::Json {
        return render(&event.line, format);
    }
    json(&event.line, &mut |out| {
        if let Some(seq) = event.seq {
            let _ = write!(out, ",\"seq\":{seq}");
        }
        if let Some(time) = &event.time {
            out.push_str(",\"time\":");
            json_string(out, time);
        }
        if let Some(epoch) = &event.epoch {
            out.push_str(",\"epoch\":");
            json_string(out, epoch);
        }
    })
}

/// `MISSED` as a JSON event: `{"event":"missed","count":N}`, `null` when
/// nobody can say how many.
pub fn json_missed(count: Option<u64>) -> String {
    match count {
        Some(n) => format!("{{\"event\":\"missed\",\"count\":{n}}}"),
        None => "{\"event\":\"missed\",\"count\":null}".to_owned(),
    }
}

fn is_event(line: &ServerLine) -> bool {
    matches!(line, ServerLine::Msg { .. } | ServerLine::Joined(_) | ServerLine::Left { .. })
}

fn human(line: &ServerLine) -> Option<String> {
    Some(match line {
        ServerLine::Msg { from, text } => format!("{}: {}", Printable(from), Printable(text)),
        ServerLine::Joined(name) => format!("* {} joined", Printable(name)),
        ServerLine::Left { name, reason } => format!("* {} left ({reason})", Printable(name)),
        ServerLine::Names(names) => {
            let names: Vec<String> = names.iter().map(|n| Printable(n).to_string()).collect();
            format!("* in the room: {}", names.join(", "))
        }
        ServerLine::Err(refusal) => format!("! {}", Printable(&refusal.text)),
        _ => return None,
    })
}

/// The JSON object of an event; `more` adds fields before the closing brace.
fn json(line: &ServerLine, more: &mut dyn FnMut(&mut String)) -> Option<String> {
    let mut out = String::from("{");
    let mut field = |key: &str, value: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        let _ = write!(out, "\"{key}\":");
        json_string(&mut out, value);
    };
    match line {
        ServerLine::Msg { from, text } => {
            field("event", "msg");
            field("from", from);
            field("text", text);
        }
        ServerLine::Joined(name) => {
            field("event", "joined");
            field("name", name);
        }
        ServerLine::Left { name, reason } => {
            field("event", "left");
            field("name", name);
            field("reason", reason.as_str());
        }
        _ => return None,
    }
    more(&mut out);
    out.push('}');
    Some(out)
}

fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if crate::protocol::is_unsafe_to_show(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LeaveReason;

    fn msg(from: &str, text: &str) -> ServerLine {
        ServerLine::Msg { from: from.into(), text: text.into() }
    }

    #[test]
    fn each_format() {
        let left = ServerLine::Left { name: "Luis".into(), reason: LeaveReason::Lost };
        let cases = [
            (msg("Ana", "hola"), Format::Human, "Ana: hola"),
            (ServerLine::Joined("Luis".into()), Format::Human, "* Luis joined"),
            (left.clone(), Format::Human, "* Luis left (lost)"),
            (ServerLine::Names(vec!["Ana".into(), "Luis".into()]), Format::Human, "* in the room: Ana, Luis"),
            (msg("Ana", "hola"), Format::Raw, "MSG Ana hola"),
            (left.clone(), Format::Raw, "LEFT Luis lost"),
            (
                msg("Ana", "dice \"hola\"\t\\"),
                Format::Json,
                r#"{"event":"msg","from":"Ana","text":"dice \"hola\"\t\\"}"#,
            ),
            (left, Format::Json, r#"{"event":"left","name":"Luis","reason":"lost"}"#),
        ];
        for (line, format, want) in cases {
            assert_eq!(render(&line, format).as_deref(), Some(want), "{line:?} as {format:?}");
        }
        assert_eq!(render(&ServerLine::Pong(None), Format::Raw), None);
        assert_eq!(render(&ServerLine::Names(vec![]), Format::Json), None);
    }

    #[test]
    fn json_events_carry_their_position_and_time() {
        let event = Event {
            epoch: Some("k3f9a".into()),
            seq: Some(42),
            time: Some("2026-11-30T13:40:01.123Z".into()),
            line: msg("Ana", "hola"),
            replayed: false,
        };
        let want =
            r#"{"event":"msg","from":"Ana","text":"hola","seq":42,"time":"2026-11-30T13:40:01.123Z","epoch":"k3f9a"}"#;
        assert_eq!(render_event(&event, Format::Json).as_deref(), Some(want));
        assert_eq!(render_event(&event, Format::Human).as_deref(), Some("Ana: hola"));
        assert_eq!(json_missed(Some(3)), r#"{"event":"missed","count":3}"#);
        assert_eq!(json_missed(None), r#"{"event":"missed","count":null}"#);
    }

    #[test]
    fn control_characters_from_the_network_never_reach_the_terminal() {
        let evil = msg("Eve", "\u{1b}]0;pwned\u{7}\u{1b}[2J see \u{202e}fdp.exe");
        for format in [Format::Human, Format::Raw, Format::Json] {
            let shown = render(&evil, format).unwrap();
            assert!(!shown.chars().any(crate::protocol::is_unsafe_to_show), "{format:?}: {shown:?}");
        }
    }
}
