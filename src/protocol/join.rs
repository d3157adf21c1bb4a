//! `JOIN <name> [LAST <n> | SINCE <epoch>:<seq>] [TOKEN <token>]`: the join
//! and what version 2 lets it ask for, history and taking a membership over.

use std::fmt;
use std::str::FromStr;

use super::{ErrorCode, Refusal};

/// A `JOIN` request, borrowed from its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join<'a> {
    /// The name as written; checked by `name::Name::parse`.
    pub name: &'a str,
    pub replay: Replay<'a>,
    /// The token of an earlier `OK JOIN` of this name.
    pub token: Option<&'a str>,
}

/// Which past events a join asks to be sent before the live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay<'a> {
    /// None: a version 1 join.
    Nothing,
    /// Up to `n` of the latest events.
    Last(u64),
    /// Every event after this position.
    Since(PositionRef<'a>),
}

/// A position in the room's order, `<epoch>:<seq>`, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionRef<'a> {
    pub epoch: &'a str,
    pub seq: u64,
}

/// A position a client keeps: `<epoch>:<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
}

/// The longest epoch the protocol allows.
pub const MAX_EPOCH: usize = 32;

/// Whether `epoch` is 1 to 32 ASCII letters and digits.
pub fn is_epoch(epoch: &str) -> bool {
    (1..=MAX_EPOCH).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Position {
    pub fn as_ref(&self) -> PositionRef<'_> {
        PositionRef { epoch: &self.epoch, seq: self.seq }
    }
}

impl<'a> PositionRef<'a> {
    fn parse(text: &'a str) -> Option<PositionRef<'a>> {
        let (epoch, seq) = text.split_once(':')?;
        let seq = seq.parse().ok().filter(|_| seq.bytes().all(|b| b.is_ascii_digit()))?;
        is_epoch(epoch).then_some(PositionRef { epoch, seq })
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        let position = PositionRef::parse(text)
            .ok_or_else(|| format!("{text:?} is not a position EPOCH:SEQ, such as k3f9a:1042"))?;
        Ok(Position { epoch: position.epoch.to_owned(), seq: position.seq })
    }
}

impl fmt::Display for PositionRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// The words that may follow the name.
const OPTIONS: [&str; 3] = ["LAST", "SINCE", "TOKEN"];

fn is_option(word: &str) -> bool {
    OPTIONS.iter().any(|option| word.eq_ignore_ascii_case(option))
}

impl<'a> Join<'a> {
    /// A version 1 join: the name alone.
    pub fn name(name: &'a str) -> Join<'a> {
        Join { name, replay: Replay::Nothing, token: None }
    }

    /// Parses the argument of `JOIN`. Without an option word after the
    /// first space, the whole argument is the name, as in version 1: so
    /// `JOIN Ana Maria` is still refused as a bad name (it has a space).
    pub fn parse(arg: &'a str) -> Result<Join<'a>, Refusal> {
        let mut words = arg.split(' ');
        let name = words.next().unwrap_or("");
        let mut rest = words.clone();
        if !rest.next().is_some_and(is_option) {
            return Ok(Join::name(arg));
        }
        let bad = |text: String| Refusal::new(ErrorCode::BadOption, text);
        let mut join = Join::name(name);
        let (mut replay_seen, mut token_seen) = (None::<&str>, false);
        while let Some(word) = words.next() {
            let upper = word.to_ascii_uppercase();
            if !is_option(word) {
                return Err(bad(format!(
                    "unknown option {:?}; options: LAST <n>, SINCE <epoch>:<seq>, TOKEN <token>",
                    super::Printable(word)
                )));
            }
            let value = words.next().filter(|v| !v.is_empty()).ok_or_else(|| bad(format!("{upper} needs a value")))?;
            match upper.as_str() {
                "TOKEN" if token_seen => return Err(bad("TOKEN given twice".into())),
                "TOKEN" => {
                    token_seen = true;
                    join.token = Some(value);
                }
                _ => {
                    if let Some(earlier) = replay_seen {
                        let text = if earlier == upper {
                            format!("{upper} given twice")
                        } else {
                            "LAST and SINCE exclude each other".into()
                        };
                        return Err(bad(text));
                    }
                    join.replay = if upper == "LAST" {
                        let n = value.parse().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                        Replay::Last(n.ok_or_else(|| {
                            bad(format!("LAST takes a number of events, not {:?}", super::Printable(value)))
                        })?)
                    } else {
                        let position = PositionRef::parse(value).ok_or_else(|| {
                            bad(format!("SINCE takes a position <epoch>:<seq> as an OK JOIN or an event's tags gave it, not {:?}", super::Printable(value)))
                        })?;
                        Replay::Since(position)
                    };
                    replay_seen = Some(if upper == "LAST" { "LAST" } else { "SINCE" });
                }
            }
        }
        Ok(join)
    }
}

impl fmt::Display for Join<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        match self.replay {
            Replay::Nothing => {}
            Replay::Last(n) => write!(f, " LAST {n}")?,
            Replay::Since(position) => write!(f, " SINCE {position}")?,
        }
        match self.token {
            Some(token) => write!(f, " TOKEN {token}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(epoch: &str, seq: u64) -> Replay<'_> {
        Replay::Since(PositionRef { epoch, seq })
    }

    #[test]
    fn options_in_any_order_and_case() {
        let cases: &[(&str, Join)] = &[
            ("Ana", Join::name("Ana")),
            ("Ana Maria", Join::name("Ana Maria")),
            (" Ana", Join::name(" Ana")),
            ("Ana LAST 20", Join { name: "Ana", replay: Replay::Last(20), token: None }),
            ("Ana last 0", Join { name: "Ana", replay: Replay::Last(0), token: None }),
            ("Ana SINCE k3f9a:1042", Join { name: "Ana", replay: since("k3f9a", 1042), token: None }),
            ("Ana token q8Zr SINCE e:0", Join { name: "Ana", replay: since("e", 0), token: Some("q8Zr") }),
            ("Ana TOKEN q8Zr", Join { name: "Ana", replay: Replay::Nothing, token: Some("q8Zr") }),
        ];
        for (arg, want) in cases {
            assert_eq!(Join::parse(arg).as_ref(), Ok(want), "{arg:?}");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        for arg in [
            "Ana LAST",
            "Ana LAST -1",
            "Ana LAST +3",
            "Ana LAST 1 LAST 2",
            "Ana LAST 1 SINCE e:1",
            "Ana SINCE e",
            "Ana SINCE e:x",
            "Ana SINCE :3",
            "Ana SINCE é:3",
            "Ana SINCE e:1 TOKEN",
            "Ana TOKEN a TOKEN b",
            "Ana LAST 3 Maria",
            "Ana LAST 3 ",
            &format!("Ana SINCE {}:1", "e".repeat(33)),
        ] {
            let refusal = Join::parse(arg).expect_err(arg);
            assert_eq!(refusal.code, ErrorCode::BadOption, "{arg:?}: {refusal}");
        }
    }

    #[test]
    fn joins_print_as_they_parse() {
        for line in ["Ana", "Ana LAST 5", "Ana SINCE k3f9a:7 TOKEN abc", "Ana TOKEN abc"] {
            assert_eq!(Join::parse(line).unwrap().to_string(), line);
        }
    }

    #[test]
    fn positions() {
        assert_eq!("k3f9a:1042".parse(), Ok(Position { epoch: "k3f9a".into(), seq: 1042 }));
        for bad in ["k3f9a", "k3f9a:", ":1", "k3-f9a:1", "a:1:2", "a:-1", "a:+1"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }
}
