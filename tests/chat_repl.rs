//! `chat`, the interactive client, driven in a real terminal (tmux) as a
//! person would; and its plain mode, driven through pipes.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::util::tmux::{has_line, has_timed_line, last_line, quote, Tmux};
use crate::util::{bin, Chatd, TempDir, PATIENCE};

/// The shell command that runs `chat` against `chatd` with its state in
/// `state`, then shows its exit status as `EXITED:<status>`.
fn chat_command(chatd: &Chatd, state: &Path, args: &str) -> String {
    format!(
        "env -u CHAT_NAME -u CHAT_SERVER XDG_STATE_HOME={} {} --server {} {args}; echo EXITED:$?",
        quote(&state.display().to_string()),
        quote(&bin("chat").display().to_string()),
        chatd.addr,
    )
}

/// `chat` in a terminal, asked for its name, answering `name`.
fn chat_as(chatd: &Chatd, state: &Path, name: &str) -> Tmux {
    let tmux = Tmux::start(&chat_command(chatd, state, ""));
    tmux.wait_for_line("name:");
    tmux.type_line(name);
    tmux.wait_for_line(&format!("{name}>"));
    tmux
}

#[test]
fn a_name_typed_at_the_prompt_joins_and_messages_go_both_ways() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = Tmux::start(&chat_command(&chatd, state.path(), ""));
    ana.wait_for_line("name:");
    ana.type_line("Ana");
    bob.expect("JOINED Ana");
    ana.wait_for_line("Ana>");
    ana.type_line("hola Bob");
    bob.expect("MSG Ana hola Bob");
    bob.send("MSG hola Ana");
    ana.wait_for("Bob's message with its time", |screen| has_timed_line(screen, "Bob: hola Ana"));
}

#[test]
fn a_message_arrives_above_the_line_being_typed_without_breaking_it() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    ana.type_text("hello wor");
    ana.wait_for_line("Ana> hello wor");
    bob.send("MSG are you there?");
    ana.wait_for("Bob's message above the half-typed line", |screen| {
        has_timed_line(screen, "Bob: are you there?") && last_line(screen) == "Ana> hello wor"
    });
    ana.type_line("ld");
    bob.expect("MSG Ana hello world");
}

#[test]
fn history_is_kept_across_runs_without_the_name() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let first = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    first.type_line("remember me");
    bob.expect("MSG Ana remember me");
    first.type_line("/quit");
    first.wait_for_line("EXITED:0");
    bob.expect("LEFT Ana exit");
    drop(first);

    let file = state.path().join("minichat/history");
    let history = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(has_line(&history, "remember me"), "history: {history:?}");
    assert!(!has_line(&history, "Ana") && !has_line(&history, "/quit"), "history: {history:?}");

    let second = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    second.press("Up");
    second.wait_for_line("Ana> remember me");
}

#[test]
fn a_taken_name_is_asked_again_on_the_same_connection() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut holder = chatd.join("Ana");
    let state = TempDir::new("chat");
    let chat = Tmux::start(&chat_command(&chatd, state.path(), ""));
    chat.wait_for_line("name:");
    chat.type_line("Ana");
    chat.wait_for("that Ana is taken, and the name prompt again", |screen| {
        screen.contains("Ana is taken") && last_line(screen) == "name:"
    });
    chat.type_line("Ana2");
    holder.expect("JOINED Ana2");
    chat.wait_for_line("Ana2>");
}

#[test]
fn who_lists_the_room_and_quit_exits_0() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = Tmux::start(&chat_command(&chatd, state.path(), "--name Ana2"));
    bob.expect("JOINED Ana2");
    ana.wait_for_line("Ana2>");
    ana.type_line("/who");
    ana.wait_for_line("* in the room: Bob, Ana2");
    ana.type_line("/quit");
    ana.wait_for_line("EXITED:0");
    bob.expect("LEFT Ana2 exit");
}

#[test]
fn slash_lines_are_commands_unless_doubled() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    ana.type_line("/nope");
    ana.wait_for("a hint for /nope", |screen| screen.contains("unknown command /nope: /help lists the commands"));
    ana.type_line("//etc/hosts is a file");
    // Had `/nope` been sent, it would have come first.
    bob.expect("MSG Ana /etc/hosts is a file");
}

#[test]
fn a_line_the_server_would_refuse_is_refused_and_not_sent() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    // The length is the server's to judge: it refuses, and says so.
    ana.type_line(&"x".repeat(4092));
    ana.wait_for_line("! line longer than 4096 bytes (newline included); it was discarded");
    // Ctrl-V inserts the next key as it is: here an escape character.
    ana.type_text("esc");
    ana.press("C-v");
    ana.press("Escape");
    ana.press("Enter");
    ana.wait_for_line("not sent: control character U+001B in message; only tab is allowed");
    ana.type_line(&"y".repeat(4091));
    // The first line Bob gets: neither refused line was sent.
    bob.expect(&format!("MSG Ana {}", "y".repeat(4091)));
}

#[test]
fn a_server_that_never_comes_back_ends_chat_with_status_5_and_a_usable_terminal() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let state = TempDir::new("chat");
    // After chat, the shell reads a line: that works only if the terminal
    // echoes again and ends lines at Enter.
    let command = chat_command(&chatd, state.path(), "--name Ana --retry-for 1s") + "; read line; echo GOT:$line";
    let ana = Tmux::start(&command);
    ana.wait_for_line("Ana>");
    ana.type_text("half typed");
    ana.wait_for_line("Ana> half typed");
    chatd.signal(nix::sys::signal::Signal::SIGTERM);
    ana.wait_for_line("* connection lost; reconnecting…");
    let screen = ana.wait_for_line("EXITED:5");
    assert!(screen.contains("the server shut down; gave up reconnecting after 1.0 s"), "{screen}");
    assert!(has_line(&screen, "chat: not sent (kept in the history: Up finds it next time): half typed"), "{screen}");
    ana.type_line("still works");
    ana.wait_for_line("GOT:still works");
    assert!(has_line(&ana.screen(), "still works"), "the typed line was not echoed:\n{}", ana.screen());
    let history = std::fs::read_to_string(state.path().join("minichat/history")).unwrap();
    assert!(has_line(&history, "half typed"), "history: {history:?}");
}

#[test]
fn ctrl_c_at_the_name_prompt_leaves_with_status_130() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let state = TempDir::new("chat");
    // The shell stays, so that tmux keeps the whole screen once chat is gone.
    let chat = Tmux::start(&(chat_command(&chatd, state.path(), "") + "; read line"));
    chat.wait_for_line("name:");
    chat.type_text("An");
    chat.wait_for_line("name: An");
    chat.press("C-c");
    let screen = chat.wait_for_line("EXITED:130");
    assert!(has_line(&screen, "name: An^C"), "{screen}");
}

#[test]
fn joining_shows_the_rooms_last_events_with_their_times_then_what_is_live() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    for text in ["one", "two", "three"] {
        bob.send(&format!("MSG {text}"));
    }
    bob.sync();
    let state = TempDir::new("chat");
    let ana = Tmux::start(&chat_command(&chatd, state.path(), "--name Ana --history 2"));
    bob.expect("JOINED Ana");
    ana.wait_for_line("-- live --");
    bob.send("MSG four");
    let screen = ana.wait_for("the live message", |screen| has_timed_line(screen, "Bob: four"));
    let rows: Vec<&str> = screen.lines().filter(|l| l.contains("Bob: ") || *l == "-- live --").collect();
    let texts: Vec<&str> = rows.iter().map(|l| l.split_once(' ').map_or(*l, |(_, t)| t)).collect();
    assert_eq!(texts, ["Bob: two", "Bob: three", "live --", "Bob: four"], "{screen}");
    assert!(rows.iter().filter(|l| l.contains("Bob: ")).all(|l| has_timed_line(l, l.split_at(6).1)), "{screen}");
}

#[test]
fn chat_rides_out_a_chatd_restart_and_sends_what_was_typed_meanwhile_once() {
    if !Tmux::available() {
        return;
    }
    let data = TempDir::new("chatd-data");
    let mut chatd = Chatd::start_in(data.path(), &[]);
    let addr = chatd.addr.to_string();
    let state = TempDir::new("chat");
    let ana = Tmux::start(&chat_command(&chatd, state.path(), "--name Ana"));
    ana.wait_for_line("Ana>");
    ana.type_line("before");
    let mut bob = chatd.join("Bob");
    chatd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(chatd.wait().success());
    drop(bob);
    ana.wait_for_line("* connection lost; reconnecting…");
    ana.type_line("first while away");
    ana.type_line("second while away");
    ana.wait_for_line("Ana> second while away");
    let chatd = Chatd::start_in(data.path(), &["--bind", &addr]);
    ana.wait_for_line(&format!("* reconnected to {addr}, nothing missed"));
    bob = chatd.connect();
    bob.send("JOIN Bob LAST 50");
    bob.expect("OK JOIN Bob");
    let said: Vec<String> = bob.sync().into_iter().filter(|l| l.starts_with("MSG Ana ")).collect();
    assert_eq!(said, ["MSG Ana before", "MSG Ana first while away", "MSG Ana second while away"]);
    bob.send("MSG welcome back");
    ana.wait_for("Bob's message after the restart", |screen| has_timed_line(screen, "Bob: welcome back"));
}

#[test]
fn a_person_slower_than_the_join_timeout_still_joins() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&["--join-timeout", "1s"]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = Tmux::start(&chat_command(&chatd, state.path(), ""));
    ana.wait_for_line("name:");
    // Connected after chat: once it is timed out, so is chat.
    let mut probe = chatd.connect();
    probe.expect_prefix("ERR TIMEOUT");
    probe.expect("BYE timeout");
    ana.type_line("Ana");
    bob.expect("JOINED Ana");
    ana.wait_for_line("Ana>");
}

/// Starts `chat ARGS…` with pipes for its standard streams.
fn spawn_plain(chatd: &Chatd, args: &[&str]) -> Child {
    Command::new(bin("chat"))
        .args(["--server", &chatd.addr.to_string()])
        .args(args)
        .env_remove("CHAT_NAME")
        .env_remove("CHAT_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat")
}

/// Waits for a child's output, failing after `PATIENCE`.
fn output(child: Child) -> Output {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(child.wait_with_output()));
    result.recv_timeout(PATIENCE).expect("chat did not exit in time").expect("wait for chat")
}

#[test]
fn without_a_terminal_each_input_line_is_a_message_and_events_are_printed() {
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let mut chat = spawn_plain(&chatd, &["--name", "Pipe"]);
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"one\n").unwrap();
    bob.expect("JOINED Pipe");
    bob.expect("MSG Pipe one");
    bob.send("MSG hi Pipe");
    bob.expect_quiet();
    stdin.write_all(b"two\n").unwrap();
    drop(stdin);
    bob.expect("MSG Pipe two");
    bob.expect("LEFT Pipe exit");
    let out = output(chat);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Bob: hi Pipe\n", "stderr: {stderr}");
}

#[test]
fn without_a_terminal_a_taken_name_exits_4() {
    let chatd = Chatd::start(&[]);
    let _bob = chatd.join("Bob");
    let chat = spawn_plain(&chatd, &["--name", "Bob"]);
    let out = output(chat);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(stderr.contains("Bob is taken"), "stderr: {stderr}");
}

#[test]
fn nothing_listening_exits_3_and_says_so() {
    let out = Command::new(bin("chat"))
        .args(["--server", "127.0.0.1:1", "--name", "Ana"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat");
    let out = output(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("cannot connect to 127.0.0.1:1: connection refused"), "stderr: {stderr}");
}

#[test]
fn ctrl_c_clears_the_line_and_ctrl_d_leaves() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    ana.type_text("oops");
    ana.wait_for_line("Ana> oops");
    ana.press("C-c");
    // Marked as shells do, so that it never looks like a line sent.
    ana.wait_for("the cleared line marked, then an empty prompt", |screen| {
        has_line(screen, "Ana> oops^C") && last_line(screen) == "Ana>"
    });
    ana.type_line("fine");
    bob.expect("MSG Ana fine");
    ana.press("C-d");
    ana.wait_for_line("EXITED:0");
    bob.expect("LEFT Ana exit");
}

#[test]
fn a_history_that_cannot_be_kept_is_a_warning() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let not_a_dir = state.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let ana = chat_as(&chatd, &not_a_dir, "Ana");
    bob.expect("JOINED Ana");
    ana.wait_for("a warning about the history", |screen| screen.contains("no history is kept this time"));
    ana.type_line("still here");
    bob.expect("MSG Ana still here");
}

#[test]
fn a_one_off_chat_send_shows_as_its_message_alone() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let state = TempDir::new("chat");
    let ana = chat_as(&chatd, state.path(), "Ana");
    bob.expect("JOINED Ana");
    let sent = Command::new(bin("chat-send"))
        .args(["--server", &chatd.addr.to_string(), "--name", "deploy", "release 1.4 is out"])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    // A visit that stays is shown joining, after what came before it.
    let mut luis = chatd.join("Luis");
    luis.send("MSG hola");
    let screen = ana.wait_for("Luis's message", |screen| has_timed_line(screen, "Luis: hola"));
    assert!(has_timed_line(&screen, "deploy: release 1.4 is out"), "{screen}");
    assert!(!screen.contains("deploy joined") && !screen.contains("deploy left"), "{screen}");
    let rows: Vec<&str> = screen.lines().filter(|l| l.contains("deploy: ") || l.contains("Luis")).collect();
    assert_eq!(rows.len(), 3, "{screen}");
    assert!(rows[0].ends_with("deploy: release 1.4 is out") && rows[1].ends_with("* Luis joined"), "{screen}");
}

#[test]
fn echo_into_chat_at_a_terminal_shows_the_room() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    bob.send("MSG anyone here?");
    bob.sync();
    let state = TempDir::new("chat");
    // The shell stays, so that tmux keeps the whole screen once chat is gone.
    let command = format!("echo hi | {}; read line", chat_command(&chatd, state.path(), "--name Pipe"));
    let pipe = Tmux::start(&command);
    let screen = pipe.wait_for_line("EXITED:0");
    assert!(has_timed_line(&screen, "Bob: anyone here?") && has_line(&screen, "-- live --"), "{screen}");
    bob.expect("JOINED Pipe");
    bob.expect("MSG Pipe hi");
}

#[test]
fn a_taken_name_from_chat_name_is_asked_again() {
    if !Tmux::available() {
        return;
    }
    let chatd = Chatd::start(&[]);
    // Ana's chat is open in another window.
    let mut holder = chatd.join("Ana");
    let state = TempDir::new("chat");
    let command = chat_command(&chatd, state.path(), "").replacen(
        "-u CHAT_NAME -u CHAT_SERVER ",
        "-u CHAT_SERVER CHAT_NAME=Ana ",
        1,
    );
    let chat = Tmux::start(&command);
    chat.wait_for("that Ana is taken, and the name prompt", |screen| {
        screen.contains("Ana is taken") && last_line(screen) == "name:"
    });
    chat.type_line("Ana2");
    holder.expect("JOINED Ana2");
    chat.wait_for_line("Ana2>");
}
