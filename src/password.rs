//! A room's password as both ends hold it: read from a file or the
//! environment (never the command line, which `ps` shows to every user),
//! kept out of `Debug` output and logs, and compared in constant time.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password as given: one line, not empty.
    pub fn new(text: &str) -> Result<Password, &'static str> {
        if text.is_empty() {
            return Err("it is empty");
        }
        if text.contains(['\n', '\r']) {
            return Err("it holds a line break, and a password is one line");
        }
        Ok(Password(text.to_owned()))
    }

    /// The first line of `path`, without its line end (`\n` or `\r\n`);
    /// spaces in it are part of the password. The error says what to do.
    pub fn read_file(path: &Path) -> Result<Password, String> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the password file {shown}: {e}; give a file this user can read"))?;
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let text = std::str::from_utf8(first)
            .map_err(|_| format!("the password file {shown} is not UTF-8 text; write the password as text"))?;
        Password::new(text)
            .map_err(|why| format!("no password in {shown}: its first line {why}; write the password on it"))
    }

    /// What goes after `PASS `.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this password. The time taken depends on the
    /// length of `given` alone, not on where it first differs nor on the
    /// password's length, so timing tells a guesser nothing.
    pub fn matches(&self, given: &str) -> bool {
        let (ours, given) = (self.0.as_bytes(), given.as_bytes());
        let mut same = (ours.len() as u64).ct_eq(&(given.len() as u64));
        for (n, byte) in given.iter().enumerate() {
            same &= byte.ct_eq(&ours[n % ours.len()]);
        }
        same.into()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// A warning when users other than the owner may read `path`: they could
/// read the password too.
pub fn loose_permissions(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "the password file {} can be read by other users (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_matches() {
        let password = Password::new("s3cret pass").unwrap();
        assert!(password.matches("s3cret pass"));
        for wrong in ["", "s3cret", "s3cret pass ", "S3cret pass", "s3cret pasS", "s3cret passs3cret pass"] {
            assert!(!password.matches(wrong), "{wrong:?}");
        }
        assert!(Password::new("").is_err() && Password::new("a\nb").is_err());
        assert_eq!(format!("{password:?}"), "Password(hidden)");
    }

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("minichat-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        for (content, want) in [(" two words \r\nsecond", Some(" two words ")), ("one", Some("one")), ("\nx", None)] {
            std::fs::write(&file, content).unwrap();
            assert_eq!(Password::read_file(&file).ok().map(|p| p.0), want.map(str::to_owned), "{content:?}");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(loose_permissions(&file).unwrap().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_permissions(&file), None);
        let missing = Password::read_file(&dir.join("missing")).unwrap_err();
        assert!(missing.starts_with("cannot read the password file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
