//! The lines typed at the prompt, kept across runs in
//! `$XDG_STATE_HOME/minichat/history` so that Up finds them again.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;

use super::typing::ChatEditor;
use rustyline::error::ReadlineError;

/// The file that keeps typed lines across runs, when there is one.
#[derive(Debug)]
pub(super) struct History {
    file: Option<PathBuf>,
}

impl History {
    /// Creates the history's directory if needed and loads what it holds. A
    /// history that cannot be kept is a warning, not a failure: chatting
    /// matters more.
    pub(super) fn open(editor: &mut ChatEditor) -> History {
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

    /// The file, when a history is kept.
    pub(super) fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// Adds a line and saves it at once, so that a killed session keeps it.
    pub(super) fn add(&mut self, editor: &mut ChatEditor, line: &str) {
        let Some(file) = &self.file else { return };
        let saved = editor.add_history_entry(line).and_then(|_| editor.append_history(file));
        if let Err(e) = saved {
            eprintln!("chat: warning: cannot save the history in {}: {e}; no more is kept this time", file.display());
            self.file = None;
        }
    }
}

/// Adds `line` to the history in `file`, from a thread that has no editor:
/// the line that was being typed when the connection was lost for good.
pub(super) fn save_line(file: &std::path::Path, line: &str) -> rustyline::Result<()> {
    use rustyline::history::History as _;
    let mut history = rustyline::history::FileHistory::new();
    history.add(line)?;
    history.append(file)
}

/// `$XDG_STATE_HOME/minichat/history` (see `paths::state_dir`).
fn history_file(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    Some(crate::paths::state_dir(xdg_state_home, home)?.join("history"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
