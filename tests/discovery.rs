//! Finding the room with no address: chatd announces itself with mDNS /
//! DNS-SD (`_minichat._tcp`) and the clients given no server look for it.
//! Every test runs on a LAN of network namespaces of its own (see
//! `util::netns`), so no multicast ever leaves them; outside namespaces every
//! test gives its clients a server, and every chatd there is bound to
//! loopback, which is never announced (the harness checks its start-up line).
//!
//! The waits are chatd's start-up line saying the announcement went out, and
//! then the clients' own bounded look (1.5 s). Without root, `ip`, `nft` (or
//! tmux, where `chat` is driven), each test says `SKIPPED: …` and returns.

use std::process::{Command, ExitStatus};

use crate::util::netns::{Host, Lan, NsChatd, Proc};
use crate::util::tmux::{last_line, quote, Tmux};
use crate::util::{bin, TempDir, PATIENCE};

/// Starts chatd on `host` where a person would (all addresses, port 5000)
/// and returns it with its start-up line about the LAN, which comes once
/// the announcement went out.
fn start_room(host: &Host, args: &[&str]) -> (NsChatd, String) {
    let chatd = NsChatd::start(host.ns(), &[&["--bind", "0.0.0.0:5000"], args].concat());
    let said = lan_line(&chatd);
    (chatd, said)
}

/// chatd's start-up line about the LAN: after `listening on` and the hints.
fn lan_line(chatd: &NsChatd) -> String {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let line = chatd.next_stdout_line();
        if line.contains("announc") {
            return line;
        }
        seen.push(line);
    }
    panic!("no line about the LAN in chatd's start-up: {seen:?}");
}

/// A client binary on `host` given no server: neither `--server` nor
/// `CHAT_SERVER`, nor anything else from the environment of whoever runs
/// the tests.
fn unaimed(host: &Host, program: &str) -> Command {
    let mut command = host.command(bin(program));
    command.env_remove("CHAT_NAME").env_remove("CHAT_SERVER").env("USER", "tester");
    command
}

/// mDNS's multicast groups.
const MDNS_V4: &str = "224.0.0.251";
const MDNS_V6: &str = "ff02::fb";

/// The multicast groups joined on `host`, on one device or all of them, as
/// `ip maddr` lists them.
fn multicast_groups(host: &Host, device: Option<&str>) -> String {
    let mut command = Command::new("ip");
    command.args(["-n", host.ns().name(), "maddr", "show"]);
    if let Some(device) = device {
        command.args(["dev", device]);
    }
    let out = command.output().expect("run ip maddr");
    assert!(out.status.success(), "ip maddr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("ip's output is text")
}

/// What a finished client did: its exit status, its standard output's
/// lines and its standard error.
fn finish(mut proc: Proc) -> (ExitStatus, Vec<String>, String) {
    let status = proc.wait();
    let mut out = Vec::new();
    // Its output ends with it; each line was already read.
    while let Some(line) = proc.line_within(PATIENCE) {
        out.push(line);
    }
    (status, out, proc.stderr())
}

#[test]
fn a_client_on_another_host_finds_the_only_room_with_no_address() {
    let Some(lan) = Lan::or_skip(4, &[]) else { return };
    let (a, b, c, d) = (lan.host(0), lan.host(1), lan.host(2), lan.host(3));
    let (kitchen, said) = start_room(a, &["--label", "kitchen"]);
    assert_eq!(said, "announced on the LAN as \"kitchen\": chat finds it with no --server");
    // Two servers that must not be found: one told not to announce, and one
    // on loopback, which no other computer could reach.
    let (_quiet, said) = start_room(c, &["--label", "quiet", "--no-announce"]);
    assert_eq!(said, "not announced on the LAN (--no-announce)");
    let local = NsChatd::start(d.ns(), &["--bind", "127.0.0.1:5000", "--label", "local"]);
    assert_eq!(
        lan_line(&local),
        "not announced on the LAN: bound to loopback (127.0.0.1), which no other computer can reach"
    );
    // Nor does it listen for mDNS anywhere: no responder was started.
    let groups = multicast_groups(d, None);
    assert!(!groups.contains(MDNS_V4) && !groups.contains(MDNS_V6), "{groups}");

    let server = format!("{}:5000", a.addr());
    let found = format!("found the room \"kitchen\" at {server} on the LAN (--server HOST:PORT chooses another)");
    let mut watcher = b.join(server.parse().unwrap(), "watcher");
    let mut tail = unaimed(b, "chat-tail");
    tail.args(["--count", "1"]);
    let tail = Proc::spawn(tail, "chat-tail");
    kitchen.expect_joined_from("tester-tail", b.addr());
    watcher.expect("JOINED tester-tail");

    let mut send = unaimed(b, "chat-send");
    send.args(["--name", "Bo", "hola"]);
    let (status, _, err) = finish(Proc::spawn(send, "chat-send"));
    assert!(status.success(), "chat-send: {status}; {err}");
    assert_eq!(err, format!("chat-send: {found}\n"));
    watcher.expect("JOINED Bo");
    watcher.expect("MSG Bo hola");

    let (status, out, err) = finish(tail);
    assert!(status.success(), "chat-tail: {status}; {err}");
    assert_eq!(out, ["* Bo joined", "Bo: hola"]);
    // The first of b's tools to meet the server says so; chat-send, after
    // it, trusted what it remembered.
    let (found_line, first_met) = err.split_once('\n').unwrap_or((&err, ""));
    assert_eq!(found_line, format!("chat-tail: {found}"));
    assert_first_met(first_met, "chat-tail", &server);
}

/// `program`'s line for a server met for the first time, and that what it
/// says it remembered is in the file it names.
fn assert_first_met(said: &str, program: &str, server: &str) {
    let start = format!("{program}: first connection to {server}; its TLS certificate is ");
    let Some(rest) = said.strip_prefix(&start) else { panic!("not a first meeting: {said:?}") };
    let (fingerprint, rest) = rest.split_once(". ").expect("a sentence after the fingerprint");
    let file = rest.trim_end().rsplit(' ').next().expect("the file named last");
    let remembered = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let compact = fingerprint.replace(':', "").to_lowercase();
    assert_eq!(compact.len(), 64, "{said}");
    assert!(remembered.lines().any(|line| line == format!("{server} {compact}")), "{remembered}");
}

#[test]
fn with_two_rooms_the_pipeline_tools_stop_with_both_and_chat_list_prints_both() {
    let Some(lan) = Lan::or_skip(3, &[]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (_kitchen, said) = start_room(a, &["--label", "kitchen"]);
    assert!(said.starts_with("announced"), "{said}");
    let (_attic, said) = start_room(b, &["--label", "attic"]);
    assert!(said.starts_with("announced"), "{said}");
    let (kitchen, attic) = (format!("{}:5000", a.addr()), format!("{}:5000", b.addr()));

    // All three look at once.
    let mut send = unaimed(c, "chat-send");
    send.arg("hola");
    let send = Proc::spawn(send, "chat-send");
    let tail = Proc::spawn(unaimed(c, "chat-tail"), "chat-tail");
    // chat with input from a pipe cannot ask either.
    let piped = Proc::spawn(unaimed(c, "chat"), "piped chat");
    let mut list = unaimed(c, "chat");
    list.arg("--list");
    let list = Proc::spawn(list, "chat --list");
    // On a server's own computer too: through its LAN interface, not loopback.
    let mut own = unaimed(a, "chat");
    own.arg("--list");
    let own = Proc::spawn(own, "chat --list on kitchen's host");

    let rooms = format!(
        "2 chat rooms found on the LAN; say which with --server (or CHAT_SERVER):\n  --server {attic:<22} # attic\n  --server {kitchen:<22} # kitchen\n"
    );
    for (program, proc) in [("chat-send", send), ("chat-tail", tail), ("chat", piped)] {
        let (status, out, err) = finish(proc);
        assert_eq!(status.code(), Some(7), "{program}: {err}");
        assert_eq!(err, format!("{program}: {rooms}"));
        assert!(out.is_empty(), "{program}: {out:?}");
    }
    for list in [list, own] {
        let (status, out, err) = finish(list);
        assert!(status.success(), "chat --list: {status}; {err}");
        assert_eq!(out, [format!("{attic}\tattic"), format!("{kitchen}\tkitchen")]);
        assert_eq!(err, "");
    }

    // An address given by hand wins, and nobody looks.
    for (server, env) in [(&kitchen, false), (&attic, true)] {
        let mut send = c.command(bin("chat-send"));
        send.env_remove("CHAT_NAME").env("USER", "tester");
        if env {
            send.env("CHAT_SERVER", server);
        } else {
            send.env_remove("CHAT_SERVER").args(["--server", server]);
        }
        send.args(["--name", "Cy", "by hand"]);
        let (status, _, err) = finish(Proc::spawn(send, "chat-send --server"));
        assert!(status.success(), "chat-send to {server}: {status}; {err}");
        assert_first_met(&err, "chat-send", server);
    }
}

#[test]
fn chat_asks_which_of_two_rooms_and_joins_the_one_chosen() {
    let Some(lan) = Lan::or_skip(3, &["tmux"]) else { return };
    let (a, b, c) = (lan.host(0), lan.host(1), lan.host(2));
    let (kitchen, _) = start_room(a, &["--label", "kitchen"]);
    let (_attic, _) = start_room(b, &["--label", "attic"]);
    let state = TempDir::new("discovery-chat");
    let command = format!(
        "env -u CHAT_NAME -u CHAT_SERVER XDG_STATE_HOME={0} XDG_DATA_HOME={0} {1}; echo EXITED:$?",
        quote(&state.path().display().to_string()),
        quote(&bin("chat").display().to_string()),
    );
    let chat = c.within(|| Tmux::start(&command));
    chat.wait_for("the room prompt", |screen| last_line(screen) == "room (1-2):");
    let screen = chat.screen();
    for line in [
        "2 rooms on the LAN:".to_owned(),
        format!("  1) \"attic\" at {}:5000", b.addr()),
        format!("  2) \"kitchen\" at {}:5000", a.addr()),
    ] {
        assert!(screen.lines().any(|l| l.trim_end() == line), "no {line:?} in:\n{screen}");
    }
    chat.type_line("3");
    chat.wait_for_line("type the number of a room, from 1 to 2");
    chat.type_line("2");
    chat.wait_for_line("name:");
    chat.type_line("Ana");
    chat.wait_for_line(&format!("* you are Ana on {}:5000; /help lists the commands", a.addr()));
    kitchen.expect_joined_from("Ana", c.addr());
    chat.type_line("/quit");
    chat.wait_for_line("EXITED:0");
}

#[test]
fn with_multicast_blocked_the_error_says_why_and_the_address_by_hand_still_works() {
    let Some(lan) = Lan::or_skip(2, &["nft"]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    lan.block_multicast();
    let (_kitchen, said) = start_room(a, &["--label", "kitchen"]);
    // chatd sent it; the switch drops it.
    assert!(said.starts_with("announced"), "{said}");

    let mut send = unaimed(b, "chat-send");
    send.arg("hola");
    let send = Proc::spawn(send, "chat-send");
    let mut list = unaimed(b, "chat");
    list.arg("--list");
    let list = Proc::spawn(list, "chat --list");
    let (status, _, err) = finish(send);
    assert_eq!(status.code(), Some(3), "chat-send: {err}");
    assert!(err.starts_with("chat-send: no chat room found on the LAN within 1.5 s: "), "{err}");
    for why in ["no chatd may be running", "client isolation", "block multicast", "--server HOST:PORT"] {
        assert!(err.contains(why), "no {why:?} in {err:?}");
    }
    let (status, out, err) = finish(list);
    assert_eq!(status.code(), Some(3), "chat --list: {err}");
    assert!(out.is_empty(), "{out:?}");
    assert!(err.starts_with("chat: no chat room found on the LAN"), "{err}");

    let mut send = b.command(bin("chat-send"));
    let server = format!("{}:5000", a.addr());
    send.env_remove("CHAT_NAME").env_remove("CHAT_SERVER").env("USER", "tester").args(["--server", &server, "hola"]);
    let (status, _, err) = finish(Proc::spawn(send, "chat-send --server"));
    assert!(status.success(), "chat-send --server {server}: {status}; {err}");
}

#[test]
fn a_server_bound_to_one_address_speaks_mdns_on_that_interface_only() {
    let Some(lan) = Lan::or_skip(2, &[]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    // A second network on host a, which must not hear of the room.
    a.ns().ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth1-end"]).unwrap();
    a.ns().ip(&["addr", "add", "10.254.0.1/24", "dev", "eth1"]).unwrap();
    a.ns().ip(&["link", "set", "eth1-end", "up"]).unwrap();
    a.ns().ip(&["link", "set", "eth1", "up"]).unwrap();

    // Bound to every address, chatd listens for mDNS on both networks: what
    // is looked at below can show an interface that should not be there.
    let everywhere = NsChatd::start(a.ns(), &["--bind", "0.0.0.0:5001", "--label", "everywhere"]);
    assert!(lan_line(&everywhere).starts_with("announced"));
    for device in ["eth0", "eth1"] {
        let groups = multicast_groups(a, Some(device));
        assert!(groups.contains(MDNS_V4), "{device}: {groups}");
    }
    drop(everywhere);

    let server = format!("{}:5000", a.addr());
    let (chatd, said) = start_room_bound(a, &server, "kitchen");
    assert!(said.starts_with("announced"), "{said}");
    let groups = multicast_groups(a, Some("eth0"));
    assert!(groups.contains(MDNS_V4), "eth0: {groups}");
    let groups = multicast_groups(a, Some("eth1"));
    assert!(!groups.contains(MDNS_V4) && !groups.contains(MDNS_V6), "eth1: {groups}");

    let mut list = unaimed(b, "chat");
    list.arg("--list");
    let (status, out, err) = finish(Proc::spawn(list, "chat --list"));
    assert!(status.success(), "chat --list: {status}; {err}");
    assert_eq!(out, [format!("{server}\tkitchen")]);
    drop(chatd);
}

/// Starts chatd on `host` bound to `bind`, labelled `label`; see `start_room`.
fn start_room_bound(host: &Host, bind: &str, label: &str) -> (NsChatd, String) {
    let chatd = NsChatd::start(host.ns(), &["--bind", bind, "--label", label]);
    let said = lan_line(&chatd);
    (chatd, said)
}

#[test]
fn a_server_started_before_the_network_is_announced_once_it_is_up() {
    let Some(lan) = Lan::or_skip(2, &[]) else { return };
    let (a, b) = (lan.host(0), lan.host(1));
    a.ns().ip(&["link", "set", "eth0", "down"]).unwrap();
    // Said at once, without waiting for an announcement that cannot go out.
    let (late, said) = start_room(a, &["--label", "late"]);
    assert_eq!(
        said,
        "announcing on the LAN as \"late\", not sent yet: no network interface is up besides loopback; \
         it will be once one is"
    );
    a.ns().ip(&["link", "set", "eth0", "up"]).unwrap();
    // The responder looks for new addresses every 5 s, then announces.
    late.expect_log("chatd: announced on the LAN as \"late\" at last");
    let mut list = unaimed(b, "chat");
    list.arg("--list");
    let (status, out, err) = finish(Proc::spawn(list, "chat --list"));
    assert!(status.success(), "chat --list: {status}; {err}");
    assert_eq!(out, [format!("{}:5000\tlate", a.addr())]);
}

#[test]
fn the_servers_of_one_room_across_servers_are_found_as_one_room_with_all_their_addresses() {
    let test = "the_servers_of_one_room_across_servers_are_found_as_one_room_with_all_their_addresses";
    let Some(nats_binary) = crate::util::nats::server_or_skip(test) else { return };
    let Some(lan) = Lan::or_skip(4, &[]) else { return };
    let (n, a, b, c) = (lan.host(0), lan.host(1), lan.host(2), lan.host(3));
    // NATS on a computer of the LAN of its own.
    let store = TempDir::new("nats-on-the-lan");
    let mut nats = n.command(&nats_binary);
    nats.args(["-js", "-a", &n.addr().to_string(), "-p", "4222", "-sd"]).arg(store.path());
    let nats = Proc::spawn(nats, "nats-server");
    nats.expect_stderr("Server is ready");
    let url = format!("nats://{}:4222", n.addr());
    let (_one, said) = start_room(a, &["--label", "kitchen", "--cluster", &url]);
    assert!(said.starts_with("announced"), "{said}");
    let (_two, said) = start_room(b, &["--label", "kitchen-b", "--cluster", &url]);
    assert!(said.starts_with("announced"), "{said}");
    // And a room of its own, which stays apart.
    let (_attic, said) = start_room(c, &["--label", "attic"]);
    assert!(said.starts_with("announced"), "{said}");
    let (one, two, attic) = (format!("{}:5000", a.addr()), format!("{}:5000", b.addr()), format!("{}:5000", c.addr()));

    let mut list = unaimed(n, "chat");
    list.arg("--list");
    let (status, out, err) = finish(Proc::spawn(list, "chat --list"));
    assert!(status.success(), "chat --list: {status}; {err}");
    assert_eq!(out, [format!("{attic}\tattic"), format!("{one}\tkitchen")], "one line for the room of two servers");

    // The pipeline tools see two rooms, and name each once.
    let (status, _, err) = finish(Proc::spawn(unaimed(n, "chat-tail"), "chat-tail"));
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.starts_with("chat-tail: 2 chat rooms found on the LAN"), "{err}");
    assert!(!err.contains(&two), "the second server of the room is not a room of its own: {err}");

    // With the attic gone, the one room left is used, with both its servers.
    drop(_attic);
    let mut send = unaimed(n, "chat-send");
    send.args(["--name", "Cy", "hola"]);
    let (status, _, err) = finish(Proc::spawn(send, "chat-send"));
    assert!(status.success(), "chat-send: {status}; {err}");
    assert!(err.contains(&format!("\"kitchen\" at {one} (and 1 more server)")), "{err}");
}
