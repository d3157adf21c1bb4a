//! A real terminal for the tests, in the way of fzf's `test/lib/common.rb`:
//! a private tmux server per test (`tmux -L`), keys typed with `send-keys`,
//! the screen read with `capture-pane`, and waits that poll the screen until
//! a condition holds, failing at a deadline with the last screen shown.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// One tmux server of this test's own, with one 100×30 pane; the server is
/// killed when dropped.
pub struct Tmux {
    socket: String,
    /// The socket's file, which `kill-server` leaves behind.
    socket_path: Option<String>,
}

const TARGET: &str = "test";

impl Tmux {
    /// Whether tmux can be run here; a test without it says `SKIPPED`.
    pub fn available() -> bool {
        let found = Command::new("tmux").arg("-V").output().is_ok_and(|out| out.status.success());
        if !found {
            println!("SKIPPED: tmux is not installed");
        }
        found
    }

    /// Runs the shell command `command` in a new terminal. The pane stays on
    /// the screen after the command ends, so its last words can be read.
    pub fn start(command: &str) -> Tmux {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let socket = format!("minichat-{}-{}", std::process::id(), SERVERS.fetch_add(1, Ordering::Relaxed));
        let mut tmux = Tmux { socket, socket_path: None };
        // tmux runs the commands of one call in order before it looks at the
        // pane's process again, so `remain-on-exit` is set before it can end.
        #[rustfmt::skip]
        tmux.run(&[
            "-f", "/dev/null", "new-session", "-d", "-s", TARGET, "-x", "100", "-y", "30", command,
            ";", "set-option", "-g", "remain-on-exit", "on",
        ]);
        let path = tmux.run(&["display-message", "-p", "#{socket_path}"]).stdout;
        tmux.socket_path = Some(String::from_utf8_lossy(&path).trim_end().to_owned());
        tmux
    }

    /// Types `text` as it is.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", TARGET, "-l", text]);
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, text: &str) {
        self.type_text(text);
        self.press("Enter");
    }

    /// Presses a key by tmux's name for it: `Enter`, `Up`, `C-c`.
    pub fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", TARGET, key]);
    }

    /// What the terminal shows, one line per row, trailing spaces dropped.
    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", TARGET]);
        let screen = String::from_utf8_lossy(&out.stdout);
        screen.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    }

    /// Waits until `condition` holds for the screen, and returns that screen;
    /// fails after `PATIENCE` with `what` and the last screen.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the terminal never showed {what}; it shows:\n{screen}\n---");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until some line of the screen is exactly `line` (trailing
    /// spaces aside).
    pub fn wait_for_line(&self, line: &str) -> String {
        self.wait_for(&format!("the line {line:?}"), |screen| has_line(screen, line))
    }

    /// Waits until some line of the screen is `text` after a local time,
    /// `HH:MM `, as `chat` shows room events.
    pub fn wait_for_timed_line(&self, text: &str) -> String {
        self.wait_for(&format!("the line \"HH:MM {text}\""), |screen| has_timed_line(screen, text))
    }

    fn run(&self, args: &[&str]) -> Output {
        let out =
            Command::new("tmux").arg("-L").arg(&self.socket).args(args).env_remove("TMUX").output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether a line of `screen` is exactly `line`, trailing spaces aside.
pub fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim_end() == line.trim_end())
}

/// Whether a line of `screen` is `text` after a local time, `HH:MM `.
pub fn has_timed_line(screen: &str, text: &str) -> bool {
    screen.lines().any(|line| {
        let (time, rest) = line.split_at_checked(6).unwrap_or(("", ""));
        let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        time.ends_with(' ')
            && time[..5].split_once(':').is_some_and(|(h, m)| digits(h) && digits(m))
            && rest.trim_end() == text
    })
}

/// The last line of `screen` with something on it.
pub fn last_line(screen: &str) -> &str {
    screen.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}

/// `text` quoted for `sh`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
