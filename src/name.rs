//! Member names: what a valid name is, and the key under which two names count
//! as one (`Carlos`, `carlos` and a decomposed `Carlos` are one name).

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The longest name, in characters (after NFC normalisation).
pub const MAX_CHARS: usize = 32;

/// A valid name, in NFC as it will be stored and shown, with its unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    display: String,
    key: String,
}

impl Name {
    /// Checks a name as typed and normalises it to NFC.
    pub fn parse(raw: &str) -> Result<Name, NameError> {
        let display: String = raw.nfc().collect();
        let count = display.chars().count();
        if count == 0 {
            return Err(NameError::Empty);
        }
        if count > MAX_CHARS {
            return Err(NameError::TooLong(count));
        }
        if let Some(c) = display.chars().find(|&c| !is_name_char(c)) {
            return Err(NameError::BadChar(c));
        }
        let key = caseless::default_case_fold_str(&display).nfc().collect();
        Ok(Name { display, key })
    }

    /// The name as shown to others.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// Equal for names that differ only in case or Unicode normal form.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong(usize),
    BadChar(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("no name given"),
            NameError::TooLong(n) => write!(f, "name has {n} characters, more than {MAX_CHARS}"),
            NameError::BadChar(' ') => f.write_str("name contains a space"),
            NameError::BadChar(c) if c.is_control() || c.is_whitespace() => {
                write!(f, "name contains the character U+{:04X}", *c as u32)
            }
            NameError::BadChar(c) => write!(f, "name contains {c:?}"),
        }
    }
}

impl std::error::Error for NameError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> String {
        Name::parse(raw).unwrap().key().to_owned()
    }

    #[test]
    fn valid_names() {
        for raw in ["Ana", "José", "Ñandú", "luis_2", "a.b-c", "ß", "名前", "x", &"a".repeat(32)] {
            assert_eq!(Name::parse(raw).map(|n| n.as_str().to_owned()), Ok(raw.to_owned()));
        }
    }

    #[test]
    fn invalid_names() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("Ana Maria", NameError::BadChar(' ')),
            ("tab\tname", NameError::BadChar('\t')),
            ("nul\0", NameError::BadChar('\0')),
            ("semi;colon", NameError::BadChar(';')),
            ("emoji😀", NameError::BadChar('😀')),
            (&"a".repeat(33), NameError::TooLong(33)),
            (&"é".repeat(40), NameError::TooLong(40)),
        ];
        for (raw, want) in cases {
            assert_eq!(Name::parse(raw).as_ref(), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn names_are_one_after_nfc_and_case_folding() {
        assert_eq!(key("Carlos"), key("carlos"));
        assert_eq!(key("CARLOS"), key("carlos"));
        assert_eq!(key("José"), key("Jose\u{301}"));
        assert_eq!(key("JOSÉ"), key("jose\u{301}"));
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_ne!(key("Ana"), key("Ana2"));
    }

    #[test]
    fn decomposed_input_is_stored_composed() {
        let name = Name::parse("Jose\u{301}").unwrap();
        assert_eq!(name.as_str(), "José");
        // 40 decomposed characters that compose to 20 are within the limit.
        assert!(Name::parse(&"e\u{301}".repeat(20)).is_ok());
    }
}
