//! Hostile and odd input: each is answered, and the connection stays usable.

use crate::util::{Chatd, Client};

/// Ana and Bob in the room, Ana having read `JOINED Bob`.
fn ana_and_bob(chatd: &Chatd) -> (Client, Client) {
    let mut ana = chatd.join("Ana");
    let bob = chatd.join("Bob");
    ana.expect("JOINED Bob");
    (ana, bob)
}

/// A `MSG` line of exactly `len` bytes, terminator not counted.
fn msg_of_len(len: usize) -> String {
    format!("MSG {}", "x".repeat(len - 4))
}

// ---- Long lines ----

#[test]
fn a_mebibyte_without_newline_gets_one_too_long_and_the_next_line_works() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(&vec![b'x'; 1 << 20]);
    ana.send_raw(b"\nMSG after\n");
    let replies = ana.sync();
    assert_eq!(replies.len(), 1, "replies: {replies:?}");
    assert!(replies[0].starts_with("ERR TOO_LONG "), "{replies:?}");
    bob.expect("MSG Ana after");
    bob.expect_quiet();
}

#[test]
fn a_line_one_byte_under_the_limit_with_its_newline_is_accepted() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let line = msg_of_len(63);
    ana.send(&line);
    bob.expect(&line.replacen("MSG ", "MSG Ana ", 1));
    ana.expect_quiet();
}

#[test]
fn a_line_at_the_limit_plus_its_newline_is_refused() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send(&msg_of_len(64));
    ana.expect_prefix("ERR TOO_LONG ");
    bob.expect_quiet();
    ana.send("MSG fits");
    bob.expect("MSG Ana fits");
}

#[test]
fn a_crlf_line_at_the_limit_is_accepted() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let line = msg_of_len(63);
    ana.send_raw(format!("{line}\r\n").as_bytes());
    bob.expect(&line.replacen("MSG ", "MSG Ana ", 1));
    ana.expect_quiet();
}

#[test]
fn a_line_at_the_limit_sent_byte_by_byte_is_judged_the_same() {
    let chatd = Chatd::start(&["--max-line", "64"]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    for line in [msg_of_len(63), msg_of_len(64)] {
        for byte in format!("{line}\n").bytes() {
            ana.send_raw(&[byte]);
        }
    }
    ana.expect_prefix("ERR TOO_LONG ");
    bob.expect(&msg_of_len(63).replacen("MSG ", "MSG Ana ", 1));
    bob.expect_quiet();
}

// ---- Bytes that are not text ----

#[test]
fn invalid_utf8_is_answered_bad_encoding_and_the_connection_goes_on() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"MSG \xff\xfe\n");
    ana.expect_prefix("ERR BAD_ENCODING ");
    bob.expect_quiet();
    ana.send("MSG ok");
    bob.expect("MSG Ana ok");
}

#[test]
fn invalid_utf8_in_join_is_bad_encoding_and_a_later_join_works() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send_raw(b"JOIN \xc3\n");
    client.expect_prefix("ERR BAD_ENCODING ");
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

#[test]
fn nul_bytes_in_a_message_are_bad_text() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"MSG a\0b\n");
    ana.expect_prefix("ERR BAD_TEXT ");
    bob.expect_quiet();
    ana.send("MSG ab");
    bob.expect("MSG Ana ab");
}

#[test]
fn nul_bytes_in_a_name_are_bad_name() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send_raw(b"JOIN A\0na\n");
    client.expect_prefix("ERR BAD_NAME ");
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

// ---- Line endings and empty lines ----

#[test]
fn crlf_lines_work_and_others_get_the_text_without_cr() {
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let mut ana = chatd.connect();
    ana.send_raw(b"JOIN Ana\r\n");
    ana.expect("OK JOIN Ana");
    bob.expect("JOINED Ana");
    ana.send_raw(b"MSG hola\r\nNAMES\r\n");
    bob.expect("MSG Ana hola");
    ana.expect("NAMES Bob Ana");
}

#[test]
fn empty_lines_are_ignored_silently_before_join() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send_raw(b"\n\r\n\n\r\n");
    client.expect_quiet();
    client.send("JOIN Ana");
    client.expect("OK JOIN Ana");
}

#[test]
fn empty_lines_are_ignored_silently_by_members() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"\n\r\n\nMSG between\n\r\n");
    ana.expect_quiet();
    bob.expect("MSG Ana between");
    bob.expect_quiet();
}

// ---- Verbs and names ----

#[test]
fn verbs_work_in_lower_and_mixed_case() {
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let mut ana = chatd.connect();
    ana.send("join Ana");
    ana.expect("OK JOIN Ana");
    ana.send("mSg hola");
    ana.send("Names");
    ana.expect("NAMES Bob Ana");
    ana.send("pInG t");
    ana.expect("PONG t");
    ana.send("Exit");
    ana.expect_closed_after("BYE exit");
    bob.expect("JOINED Ana");
    bob.expect("MSG Ana hola");
    bob.expect("LEFT Ana exit");
}

#[test]
fn a_name_with_a_space_is_bad_name() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send("JOIN Ana Maria");
    client.expect_prefix("ERR BAD_NAME ");
    client.send("JOIN Ana_Maria");
    client.expect("OK JOIN Ana_Maria");
}

#[test]
fn a_name_of_40_characters_is_bad_name() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send(&format!("JOIN {}", "a".repeat(40)));
    client.expect_prefix("ERR BAD_NAME ");
    client.send("PING");
    client.expect("PONG");
}

#[test]
fn a_name_of_32_characters_is_accepted() {
    let chatd = Chatd::start(&[]);
    let name = "b".repeat(32);
    let mut client = chatd.join(&name);
    client.send("NAMES");
    client.expect(&format!("NAMES {name}"));
}

#[test]
fn a_name_of_32_accented_characters_is_accepted() {
    let chatd = Chatd::start(&[]);
    let name = "\u{e9}".repeat(32);
    let mut client = chatd.join(&name);
    client.send("NAMES");
    client.expect(&format!("NAMES {name}"));
}

#[test]
fn accented_names_join_and_are_shown_as_typed() {
    let chatd = Chatd::start(&[]);
    let mut jose = chatd.join("Jos\u{e9}");
    let _nandu = chatd.join("\u{d1}and\u{fa}");
    jose.expect("JOINED \u{d1}and\u{fa}");
    jose.send("NAMES");
    jose.expect("NAMES Jos\u{e9} \u{d1}and\u{fa}");
}

#[test]
fn a_decomposed_name_is_stored_and_shown_composed() {
    let chatd = Chatd::start(&[]);
    let mut bob = chatd.join("Bob");
    let mut jose = chatd.connect();
    jose.send("JOIN Jose\u{301}");
    jose.expect("OK JOIN Jos\u{e9}");
    bob.expect("JOINED Jos\u{e9}");
    jose.send("MSG hola");
    bob.expect("MSG Jos\u{e9} hola");
}

// ---- Closing the write side ----

#[test]
fn a_last_line_without_newline_is_handled_before_the_client_is_lost() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"MSG bye");
    ana.close_write();
    bob.expect("MSG Ana bye");
    bob.expect("LEFT Ana lost");
    assert_eq!(ana.recv_all(), Vec::<String>::new());
}

#[test]
fn a_client_that_half_closes_after_names_still_gets_the_reply() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send("NAMES");
    ana.close_write();
    assert_eq!(ana.recv_all(), ["NAMES Ana Bob"]);
    bob.expect("LEFT Ana lost");
}

#[test]
fn a_client_that_half_closes_after_names_without_newline_still_gets_the_reply() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"NAMES");
    ana.close_write();
    assert_eq!(ana.recv_all(), ["NAMES Ana Bob"]);
    bob.expect("LEFT Ana lost");
}

#[test]
fn a_last_exit_without_newline_says_bye_exit() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    ana.send_raw(b"EXIT");
    ana.close_write();
    assert_eq!(ana.recv_all(), ["BYE exit"]);
    bob.expect("LEFT Ana exit");
}

// ---- Many lines at once ----

#[test]
fn a_thousand_messages_in_one_write_all_arrive_in_order() {
    let chatd = Chatd::start(&[]);
    let (mut ana, mut bob) = ana_and_bob(&chatd);
    let batch: String = (0..1000).map(|i| format!("MSG line {i}\n")).collect();
    ana.send_raw(batch.as_bytes());
    assert_eq!(ana.sync(), Vec::<String>::new());
    let want: Vec<String> = (0..1000).map(|i| format!("MSG Ana line {i}")).collect();
    assert_eq!(bob.sync(), want);
}

#[test]
fn commands_pipelined_in_one_write_are_answered_in_order() {
    let chatd = Chatd::start(&[]);
    let mut client = chatd.connect();
    client.send_raw(b"PING 1\nJOIN Ana\nBOGUS\nNAMES\nPING 2\nEXIT\n");
    let lines = client.recv_all();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(lines[..2], ["PONG 1", "OK JOIN Ana"]);
    assert!(lines[2].starts_with("ERR UNKNOWN_COMMAND "), "{lines:?}");
    assert_eq!(lines[3..], ["NAMES Ana", "PONG 2", "BYE exit"]);
}

#[test]
fn telnet_negotiation_and_ctrl_c_are_ignored() {
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let mut telnet = chatd.connect();
    // What telnet sends first (WILL TERMINAL-TYPE, its subnegotiation), and
    // on Ctrl-C (IP, DO TIMING-MARK), before the lines typed.
    telnet.send_raw(b"\xff\xfb\x18\xff\xfa\x18\x00xterm\xff\xf0JOIN Tomas\r\n");
    telnet.expect("OK JOIN Tomas");
    telnet.send_raw(b"MSG half a line\xff\xf4\xff\xfd\x06\r\n");
    telnet.send_raw(b"\xff\xf4\xff\xfd\x06MSG after Ctrl-C\r\n");
    telnet.expect_quiet();
    assert_eq!(watcher.sync(), ["JOINED Tomas", "MSG Tomas half a line", "MSG Tomas after Ctrl-C"]);
}
