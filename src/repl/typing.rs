//! The line being typed at the prompt, as the editor sees it: Ctrl-C ends
//! it marked `^C`, as shells do, so that a cleared line never looks like a
//! sent one; and the connection's thread can read it, so that a line being
//! typed when the connection is gone for good is not lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, KeyEvent, RepeatCount};

/// The editor `chat` uses.
pub(super) type ChatEditor = Editor<Typing, FileHistory>;

/// What the editor shares with the rest of `chat`.
#[derive(Debug, Clone, Default)]
pub(super) struct Typing {
    /// Ctrl-C was pressed: the line that `readline` returns was cleared.
    cleared: Arc<AtomicBool>,
    /// The line as typed so far.
    line: Arc<Mutex<String>>,
}

/// What is shown after a line cleared with Ctrl-C.
const CLEARED_MARK: &str = "^C";

impl Typing {
    /// Puts this helper on `editor`, with Ctrl-C bound to end the line marked.
    pub(super) fn install(&self, editor: &mut ChatEditor) {
        editor.set_helper(Some(self.clone()));
        let ctrl_c = Box::new(CtrlC { cleared: Arc::clone(&self.cleared) });
        editor.bind_sequence(KeyEvent::ctrl('c'), EventHandler::Conditional(ctrl_c));
    }

    /// Whether the line `readline` just returned was cleared with Ctrl-C
    /// (and is not to be taken); the next one starts afresh.
    pub(super) fn take_cleared(&self) -> bool {
        self.line.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.cleared.swap(false, Ordering::SeqCst)
    }

    /// A handle on the line being typed, for another thread.
    pub(super) fn line(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.line)
    }
}

/// Ctrl-C: the line is accepted, to leave it on the screen with its mark,
/// and `take_cleared` tells that it was not meant.
struct CtrlC {
    cleared: Arc<AtomicBool>,
}

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, _: &EventContext<'_>) -> Option<Cmd> {
        self.cleared.store(true, Ordering::SeqCst);
        Some(Cmd::AcceptLine)
    }
}

impl Completer for Typing {
    type Candidate = String;
}

impl Highlighter for Typing {}

impl Hinter for Typing {
    type Hint = String;

    /// Called as the line changes: keeps it for `line`; and once Ctrl-C was
    /// pressed, shows the mark after it.
    fn hint(&self, line: &str, _pos: usize, _ctx: &rustyline::Context<'_>) -> Option<String> {
        let cleared = self.cleared.load(Ordering::SeqCst);
        if !cleared {
            line.clone_into(&mut self.line.lock().unwrap_or_else(|e| e.into_inner()));
        }
        cleared.then(|| CLEARED_MARK.to_owned())
    }
}

impl Validator for Typing {
    /// Every line is complete; one ended by Ctrl-C is shown with its mark.
    fn validate(&self, _: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let mark = self.cleared.load(Ordering::SeqCst).then(|| CLEARED_MARK.to_owned());
        Ok(ValidationResult::Valid(mark))
    }
}

impl rustyline::Helper for Typing {}
