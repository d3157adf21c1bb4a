//! The room as a whole: one order for everyone under concurrent senders,
//! unique names under a race, and a big room's `NAMES`.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;

use crate::util::{Chatd, Client};

/// Reads exactly `n` lines (each read has the harness deadline).
fn recv_n(client: &mut Client, n: usize) -> Vec<String> {
    (0..n).map(|_| client.recv()).collect()
}

#[test]
fn every_member_receives_the_same_interleaving_of_concurrent_senders() {
    const SENDERS: usize = 5;
    const LISTENERS: usize = 2;
    const EACH: usize = 500;
    let chatd = Chatd::start(&[]);

    let listener_names: Vec<String> = (0..LISTENERS).map(|i| format!("listener{i}")).collect();
    let sender_names: Vec<String> = (0..SENDERS).map(|i| format!("sender{i}")).collect();
    let all_names: Vec<&String> = listener_names.iter().chain(&sender_names).collect();
    let mut clients: Vec<Client> = all_names.iter().map(|n| chatd.join(n)).collect();
    // Before the flood, each member has seen exactly the JOINED of those after it.
    for (i, client) in clients.iter_mut().enumerate() {
        let want: Vec<String> = all_names[i + 1..].iter().map(|n| format!("JOINED {n}")).collect();
        assert_eq!(client.sync(), want, "{} before the flood", all_names[i]);
    }
    let senders = clients.split_off(LISTENERS);
    let listeners = clients;

    let start = Arc::new(Barrier::new(SENDERS + LISTENERS));
    let mut listener_threads = Vec::new();
    for mut listener in listeners {
        let start = Arc::clone(&start);
        listener_threads.push(thread::spawn(move || {
            start.wait();
            let lines = recv_n(&mut listener, SENDERS * EACH);
            (listener, lines)
        }));
    }
    let mut sender_threads = Vec::new();
    for (s, mut sender) in senders.into_iter().enumerate() {
        let start = Arc::clone(&start);
        let mut out = sender.stream().try_clone().unwrap();
        sender_threads.push(thread::spawn(move || {
            let writer = thread::spawn(move || {
                start.wait();
                for j in 0..EACH {
                    out.write_all(format!("MSG {s}-{j}\n").as_bytes()).expect("send to chatd");
                }
            });
            // Everyone else's messages, read while this member's own go out.
            let lines = recv_n(&mut sender, (SENDERS - 1) * EACH);
            writer.join().expect("writer thread");
            (sender, lines)
        }));
    }

    // Every member stays connected until all have checked: a leaving one
    // would be an event for the others.
    let mut keep = Vec::new();
    let mut listener_seqs = Vec::new();
    for t in listener_threads {
        let (mut listener, lines) = t.join().expect("listener thread");
        let rest = listener.sync();
        assert!(rest.is_empty(), "a listener then got {rest:?}");
        listener_seqs.push(lines);
        keep.push(listener);
    }
    let mut sender_seqs = Vec::new();
    for t in sender_threads {
        let (mut sender, lines) = t.join().expect("sender thread");
        let rest = sender.sync();
        assert!(rest.is_empty(), "a sender then got {rest:?}");
        sender_seqs.push(lines);
        keep.push(sender);
    }

    let reference = &listener_seqs[0];
    // The reference holds every message once, each sender's in its order.
    let mut next = [0usize; SENDERS];
    for line in reference {
        let (from, text) = line
            .strip_prefix("MSG sender")
            .and_then(|rest| rest.split_once(' '))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let s: usize = from.parse().unwrap();
        assert_eq!(text, format!("{s}-{}", next[s]), "sender {s}'s order");
        next[s] += 1;
    }
    assert_eq!(next, [EACH; SENDERS]);
    for (i, seq) in listener_seqs.iter().enumerate().skip(1) {
        assert!(
            seq == reference,
            "listener{i} saw another order than listener0 (first difference at {:?})",
            seq.iter().zip(reference).position(|(a, b)| a != b)
        );
    }
    for (s, seq) in sender_seqs.iter().enumerate() {
        let own = format!("MSG sender{s} ");
        let want: Vec<&String> = reference.iter().filter(|l| !l.starts_with(&own)).collect();
        let got: Vec<&String> = seq.iter().collect();
        assert!(
            got == want,
            "sender{s} saw another order than the listeners (first difference at {:?})",
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}

/// `name` with its letters' case changed as the bits of `variant` say.
fn spelling(name: &str, variant: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if variant >> (i % usize::BITS as usize) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Has every client in `racers` send `JOIN <its spelling>` at once; returns
/// the index of the one that got `OK JOIN`, after checking every other got
/// `ERR NAME_TAKEN`.
fn race_for_the_name(racers: Vec<(Client, String)>) -> (usize, Vec<(Client, String)>) {
    let barrier = Arc::new(Barrier::new(racers.len()));
    let threads: Vec<_> = racers
        .into_iter()
        .map(|(mut client, name)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                client.send(&format!("JOIN {name}"));
                let reply = client.recv();
                (client, name, reply)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().expect("racer thread")).collect();
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, (_, name, reply))| *reply == format!("OK JOIN {name}"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one OK JOIN expected; replies: {:?}",
        results.iter().map(|r| &r.2).collect::<Vec<_>>()
    );
    for (i, (_, name, reply)) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(reply.starts_with("ERR NAME_TAKEN "), "JOIN {name} lost the race but got {reply:?}");
        }
    }
    let rest = results.into_iter().map(|(c, name, _)| (c, name)).collect();
    (winners[0], rest)
}

#[test]
fn only_one_of_many_simultaneous_joins_gets_a_name_whatever_its_case() {
    const RACERS: usize = 50;
    let chatd = Chatd::start(&[]);
    let mut watcher = chatd.join("watcher");
    let racers: Vec<(Client, String)> = (0..RACERS).map(|i| (chatd.connect(), spelling("racer", i))).collect();
    assert!(racers.iter().any(|(_, n)| n == "racer"));
    assert!(racers.iter().any(|(_, n)| n == "RACER"));

    let (winner, mut racers) = race_for_the_name(racers);
    let (mut first, first_name) = racers.swap_remove(winner);
    assert_eq!(watcher.sync(), [format!("JOINED {first_name}")]);
    first.send("NAMES");
    first.expect(&format!("NAMES watcher {first_name}"));
    // The losers are still connected, unjoined.
    for (loser, _) in &mut racers {
        assert!(loser.sync().is_empty());
    }

    first.send("EXIT");
    first.expect_closed_after("BYE exit");
    watcher.expect(&format!("LEFT {first_name} exit"));

    // The name is free again: the losers race once more, and one wins.
    let (winner, mut racers) = race_for_the_name(racers);
    let (mut second, second_name) = racers.swap_remove(winner);
    assert_eq!(watcher.sync(), [format!("JOINED {second_name}")]);
    second.send("MSG hello");
    watcher.expect(&format!("MSG {second_name} hello"));
    second.send("NAMES");
    second.expect(&format!("NAMES watcher {second_name}"));
}

#[test]
fn names_lists_two_hundred_members_in_join_order() {
    const MEMBERS: usize = 200;
    let chatd = Chatd::start(&[]);
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:03}")).collect();
    // Joined in an order unlike the names' sort order.
    let order: Vec<usize> = (0..MEMBERS).map(|i| (i * 37 + 11) % MEMBERS).collect();
    let mut members: Vec<Client> = order.iter().map(|&i| chatd.join(&names[i])).collect();
    let joined: Vec<&str> = order.iter().map(|&i| names[i].as_str()).collect();

    let want = format!("NAMES {}", joined.join(" "));
    for k in [0, MEMBERS / 2, MEMBERS - 1] {
        let seen = members[k].sync();
        let want_joined: Vec<String> = joined[k + 1..].iter().map(|n| format!("JOINED {n}")).collect();
        assert_eq!(seen, want_joined);
        members[k].send("NAMES");
        assert_eq!(members[k].recv(), want);
    }

    // Leaving keeps the others' order; joining again goes to the end.
    let leaver = 3;
    members[leaver].send("EXIT");
    members[leaver].expect_closed_after("BYE exit");
    let mut still: Vec<&str> = joined.clone();
    still.remove(leaver);
    let mut again = chatd.join(joined[leaver]);
    still.push(joined[leaver]);
    again.send("NAMES");
    again.expect(&format!("NAMES {}", still.join(" ")));
    assert_eq!(members[0].sync(), [format!("LEFT {} exit", joined[leaver]), format!("JOINED {}", joined[leaver])]);
}

/// The open-file limit is what caps a big room: each member may cost the
/// server its socket and nothing more (no wake-up descriptor of its own).
#[test]
fn a_member_costs_the_server_one_descriptor() {
    const MEMBERS: usize = 300;
    let chatd = Chatd::start(&[]);
    let descriptors = || std::fs::read_dir(format!("/proc/{}/fd", chatd.pid())).unwrap().count();
    let mut first = chatd.join("first");
    let before = descriptors();
    let mut members: Vec<Client> = (0..MEMBERS).map(|i| chatd.join(&format!("d{i:03}"))).collect();
    assert_eq!(first.sync().len(), MEMBERS, "first was not told of every join");
    assert_eq!(descriptors() - before, MEMBERS);

    // And each is sent the room's events.
    first.send("MSG all here");
    assert_eq!(first.sync(), Vec::<String>::new());
    for member in &mut members[MEMBERS - 3..] {
        assert!(member.sync().contains(&"MSG first all here".to_owned()));
    }
}
