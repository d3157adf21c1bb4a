//! Each command and reply of the protocol, one by one.

use crate::util::{Chatd, Client};

/// Ana and Bob in the room, Ana having read `JOINED Bob`.
fn ana_and_bob(chatd: &Chatd) -> (Client, Client) {
    let mut ana = chatd.join("Ana");
    let bob = chatd.join("Bob");
    ana.expect("JOINED Bob");
    (ana, bob)
}

#[test]
fn a_session_as_in_the_protocol() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let mut carlos = chatd.join("Carlos");
    ana.expect("JOINED Carlos");
    carlos.send("NAMES");
    carlos.expect("NAMES Ana Carlos");
    ana.send("MSG Hola a todos");
    carlos.expect("MSG Ana Hola a todos");
    carlos.send("MSG ¡Hola, Ana!");
    ana.expect("MSG Carlos ¡Hola, Ana!");
    let mut luis = chatd.join("Luis");
    carlos.expect("JOINED Luis");
    carlos.send("PING 1");
    carlos.expect("PONG 1");
    carlos.send("EXIT");
    carlos.expect_closed_after("BYE exit");
    luis.expect("LEFT Carlos exit");
    ana.expect("JOINED Luis");
    ana.expect("LEFT Carlos exit");
    ana.expect_quiet();
}

// ---- HELLO, JOIN, JOINED, MSG, NAMES, PING, EXIT, LEFT ----

#[test]
fn hello_is_the_first_line_and_names_the_server_and_version() {
    let chatd = Chatd::start(&[]);
    let mut client = Client::connect(chatd.addr);
    // Even a client that speaks at once is greeted first.
    client.send("JOIN Ana");
    let hello = client.recv();
    let want = format!("HELLO chatd/{} ", env!("CARGO_PKG_VERSION"));
    assert!(hello.starts_with(&want), "{hello:?} should start {want:?}");
    client.expect("OK JOIN Ana");
}

#[test]
fn join_answers_ok_join_with_the_name_as_stored_in_nfc() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send("JOIN Jose\u{301}");
    client.expect("OK JOIN Jos\u{e9}");
}

#[test]
fn joined_goes_to_the_others_but_not_to_the_newcomer() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let mut bob = chatd.join("Bob");
    ana.expect("JOINED Bob");
    bob.expect_quiet();
}

#[test]
fn msg_reaches_the_others_but_never_comes_back_to_its_sender() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let mut cleo = chatd.join("Cleo");
    ana.expect("JOINED Cleo");
    bob.expect("JOINED Cleo");
    ana.send("MSG hola a todos");
    bob.expect("MSG Ana hola a todos");
    cleo.expect("MSG Ana hola a todos");
    ana.expect_quiet();
}

#[test]
fn names_lists_the_members_in_join_order() {
    let chatd = Chatd::start(&[]);
    let mut zoe = chatd.join("Zoe");
    let _ana = chatd.join("Ana");
    let _mia = chatd.join("Mia");
    zoe.expect("JOINED Ana");
    zoe.expect("JOINED Mia");
    zoe.send("NAMES");
    zoe.expect("NAMES Zoe Ana Mia");
}

#[test]
fn ping_is_answered_with_pong_and_its_token() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("PING 42");
    ana.expect("PONG 42");
    ana.send("PING");
    ana.expect("PONG");
}

#[test]
fn ping_works_before_join_too() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send("PING early");
    client.expect("PONG early");
}

#[test]
fn exit_is_answered_with_bye_exit_and_the_connection_closes() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("EXIT");
    assert_eq!(ana.recv_all(), ["BYE exit"]);
}

#[test]
fn the_others_see_left_exit_when_a_member_exits() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    bob.send("EXIT");
    bob.expect_closed_after("BYE exit");
    ana.expect("LEFT Bob exit");
}

#[test]
fn the_others_see_left_lost_when_a_member_just_closes_its_socket() {
    let chatd = Chatd::start(&[]);
    let (mut ana, bob) = ana_and_bob(&chatd);
    drop(bob);
    ana.expect("LEFT Bob lost");
    ana.send("NAMES");
    ana.expect("NAMES Ana");
}

// ---- Error codes; the connection stays open after each ----

#[test]
fn bad_name_for_an_invalid_name_then_a_good_one_joins() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    for bad in ["JOIN", "JOIN ", "JOIN Ana;drop", "JOIN Ana Maria"] {
        client.send(bad);
        client.expect_prefix("ERR BAD_NAME ");
    }
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

#[test]
fn name_taken_for_a_name_in_use() {
    let chatd = Chatd::start(&[]);
    let _carlos = chatd.join("Carlos");
    let mut other = chatd.connect();
    other.send("JOIN Carlos");
    other.expect_prefix("ERR NAME_TAKEN ");
    other.send("JOIN Carla");
    other.expect("OK JOIN Carla");
}

#[test]
fn name_taken_ignores_case() {
    let chatd = Chatd::start(&[]);
    let _carlos = chatd.join("Carlos");
    let mut other = chatd.connect();
    for spelling in ["carlos", "CARLOS", "cArLoS"] {
        other.send(&format!("JOIN {spelling}"));
        other.expect_prefix("ERR NAME_TAKEN ");
    }
    other.expect_quiet();
}

#[test]
fn name_taken_ignores_the_unicode_normal_form() {
    let chatd = Chatd::start(&[]);
    let _jose = chatd.join("Jos\u{e9}");
    let mut other = chatd.connect();
    other.send("JOIN Jose\u{301}");
    other.expect_prefix("ERR NAME_TAKEN ");
    other.send("JOIN JOSE\u{301}");
    other.expect_prefix("ERR NAME_TAKEN ");
}

#[test]
fn name_taken_also_for_a_precomposed_name_after_a_decomposed_one() {
    let chatd = Chatd::start(&[]);
    let mut first = chatd.connect();
    first.send("JOIN Jose\u{301}");
    first.expect("OK JOIN Jos\u{e9}");
    let mut other = chatd.connect();
    other.send("JOIN jos\u{e9}");
    other.expect_prefix("ERR NAME_TAKEN ");
}

#[test]
fn not_joined_for_msg_and_names_before_join() {
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let mut client = chatd.connect();
    client.send("MSG hola");
    client.expect_prefix("ERR NOT_JOINED ");
    client.send("NAMES");
    client.expect_prefix("ERR NOT_JOINED ");
    bob.expect_quiet();
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

#[test]
fn already_joined_for_a_second_join() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("JOIN Other");
    ana.expect_prefix("ERR ALREADY_JOINED ");
    ana.send("NAMES");
    ana.expect("NAMES Ana");
}

#[test]
fn empty_for_msg_without_text() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    for empty in ["MSG", "MSG "] {
        ana.send(empty);
        ana.expect_prefix("ERR EMPTY ");
    }
    bob.expect_quiet();
    ana.send("MSG now");
    bob.expect("MSG Ana now");
}

#[test]
fn bad_text_for_control_characters_in_a_message() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    for text in ["\u{1b}[2J", "nul\0", "bell\u{7}", "del\u{7f}", "c1\u{9b}", "a\rb"] {
        ana.send(&format!("MSG {text}"));
        ana.expect_prefix("ERR BAD_TEXT ");
    }
    bob.expect_quiet();
    ana.send("MSG clean");
    bob.expect("MSG Ana clean");
}

#[test]
fn a_tab_in_a_message_is_allowed() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send("MSG a\tb");
    bob.expect("MSG Ana a\tb");
    ana.expect_quiet();
}

#[test]
fn unknown_command_for_an_unknown_verb() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    for line in ["HELLO", "SHOUT hi", "MSGX hi", " MSG hi"] {
        ana.send(line);
        ana.expect_prefix("ERR UNKNOWN_COMMAND ");
    }
    ana.send("NAMES");
    ana.expect("NAMES Ana");
}

#[test]
fn too_long_for_a_line_over_the_limit() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send(&format!("MSG {}", "x".repeat(5000)));
    ana.expect_prefix("ERR TOO_LONG ");
    ana.send("MSG short");
    bob.expect("MSG Ana short");
}

#[test]
fn bad_encoding_for_a_line_that_is_not_utf8() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"MSG caf\xe9\n");
    ana.expect_prefix("ERR BAD_ENCODING ");
    ana.send("MSG caf\u{e9}");
    bob.expect("MSG Ana caf\u{e9}");
}

#[test]
fn full_turns_away_one_connection_too_many() {
    let chatd = Chatd::start(&["--max-clients", "1"]);
    let mut ana = chatd.join("Ana");
    let mut late = chatd.connect();
    late.expect_prefix("ERR FULL ");
    late.expect("BYE full");
    assert_eq!(late.try_recv(), None, "the connection should be closed");
    ana.send("NAMES");
    ana.expect("NAMES Ana");
}

#[test]
fn timeout_when_no_join_comes_in_time() {
    let chatd = Chatd::start(&["--join-timeout", "300ms"]);
    let mut idle = chatd.connect();
    idle.expect_prefix("ERR TIMEOUT ");
    idle.expect("BYE timeout");
    assert_eq!(idle.try_recv(), None, "the connection should be closed");
}

#[test]
fn a_client_that_joined_in_time_is_not_timed_out() {
    let chatd = Chatd::start(&["--join-timeout", "1s"]);
    let mut ana = chatd.join("Ana");
    let mut idle = chatd.connect();
    idle.expect_prefix("ERR TIMEOUT ");
    idle.expect_closed_after("BYE timeout");
    // Ana joined before the idle client connected: she is long past her own
    // deadline and still served.
    ana.expect_quiet();
    ana.send("NAMES");
    ana.expect("NAMES Ana");
}

// ---- Names are freed ----

#[test]
fn a_name_is_free_again_after_its_owner_exits() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("EXIT");
    ana.expect_closed_after("BYE exit");
    let mut again = chatd.join("ana");
    again.send("NAMES");
    again.expect("NAMES ana");
}

#[test]
fn a_name_is_free_again_after_its_owner_closes_its_socket() {
    let chatd = Chatd::start(&[]);
    let (ana, mut bob) = ana_and_bob(&chatd);
    drop(ana);
    bob.expect("LEFT Ana lost");
    let _ana = chatd.join("Ana");
    bob.expect("JOINED Ana");
}

// ---- PONG is a barrier ----

#[test]
fn pong_comes_after_every_message_accepted_before_the_ping() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let sent: Vec<String> = (0..100).map(|i| format!("MSG m{i}")).collect();
    sent.iter().for_each(|line| ana.send(line));
    assert_eq!(ana.sync(), Vec::<String>::new());
    let want: Vec<String> = (0..100).map(|i| format!("MSG Ana m{i}")).collect();
    assert_eq!(bob.sync(), want);
}

#[test]
fn pong_comes_after_events_still_queued_for_a_member_that_was_not_reading() {
    // Bob reads nothing while Ana floods the room (megabytes, more than the
    // socket buffers hold), so most of it is still queued for him when his
    // PING arrives: the PONG must wait behind all of it.
    let chatd = Chatd::start(&["--max-queue", "64MiB", "--rate-limit", "0"]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let count = 500_000;
    ana.send_raw((0..count).map(|i| format!("MSG {i}\n")).collect::<String>().as_bytes());
    assert_eq!(ana.sync(), Vec::<String>::new());
    let got = bob.sync();
    assert_eq!(got.len(), count, "the PONG overtook {} queued messages", count - got.len().min(count));
    let first_wrong = (0..count).find(|&i| got[i] != format!("MSG Ana {i}"));
    assert_eq!(first_wrong, None, "messages out of order");
}

#[test]
fn pong_comes_after_joined_and_left_that_happened_before_the_ping() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let mut cleo = chatd.join("Cleo");
    assert_eq!(ana.sync(), ["JOINED Cleo"]);
    cleo.send("EXIT");
    cleo.expect_closed_after("BYE exit");
    assert_eq!(ana.sync(), ["LEFT Cleo exit"]);
}

#[test]
fn a_client_that_keeps_its_end_open_after_bye_is_reset_so_that_it_ends() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    ana.send("EXIT");
    ana.expect_closed_after("BYE exit");
    // Ana never closes her end, as nc reading a keyboard does not: a FIN
    // alone leaves her connection half open, a reset ends it (POLLHUP).
    let deadline = std::time::Instant::now() + crate::util::PATIENCE;
    loop {
        let mut fds = [PollFd::new(ana.stream().as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u8)).unwrap();
        if fds[0].revents().is_some_and(|events| events.contains(PollFlags::POLLHUP)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server never ended the connection, only sent its FIN");
    }
}

#[test]
fn netcat_exits_after_bye_exit_without_enter() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut nc) = Command::new("nc")
        .args(["127.0.0.1", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("SKIPPED: nc is not installed");
        return;
    };
    let _ = nc.wait();
    let chatd = Chatd::start(&[]);
    let mut nc = Command::new("nc")
        .args([&chatd.addr.ip().to_string(), &chatd.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Like a keyboard: input that stays open after EXIT.
    let mut keyboard = nc.stdin.take().unwrap();
    keyboard.write_all(b"JOIN Ana\nEXIT\n").unwrap();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(nc.wait_with_output()));
    let out = exited.recv_timeout(crate::util::PATIENCE).expect("nc did not exit after BYE exit").unwrap();
    drop(keyboard);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("OK JOIN Ana\nBYE exit\n"), "{text}");
}
