//! A list of servers for one room (`--server a:5000,b:5000`): splitting it,
//! the order in which its servers are tried, and connecting to the first
//! that answers as a chat server.

use std::time::{Duration, Instant};

use super::{connect_within, with_default_port, ClientError, Receiver, Sender};

/// The servers of a list as written (`a:5000, b` gives `a:5000` and `b`).
pub fn split(list: &str) -> Vec<String> {
    list.split(',').map(|server| server.trim().to_owned()).collect()
}

/// The order in which a list of `count` servers is tried after losing the
/// one at `lost`: the next one first, round the list, the lost one last, so
/// a server that just died is not the first one waited for.
pub fn after(count: usize, lost: usize) -> impl Iterator<Item = usize> {
    (1..=count).map(move |k| (lost + k) % count.max(1))
}

/// Connects to the first of `servers`, taken in `order`, that answers as a
/// chat server, allowing each about `patience` but none past `until`
/// (always one try, though); returns which one it was. A server that
/// refuses the connection, is not a chat server, is full or drops us moves
/// on to the next; any other error is final. When none answers, the error
/// of a list of one server is its own, and the error of a longer list names
/// each server with its reason.
pub fn connect_first(
    servers: &[String],
    order: impl IntoIterator<Item = usize>,
    patience: Duration,
    until: Option<Instant>,
) -> Result<(usize, Sender, Receiver), ClientError> {
    let mut failed = Vec::new();
    for at in order {
        let left = until.map_or(patience, |until| until.saturating_duration_since(Instant::now()));
        if left.is_zero() && !failed.is_empty() {
            break;
        }
        match connect_within(&servers[at], patience.min(left.max(Duration::from_millis(200)))) {
            Ok((sender, receiver)) => return Ok((at, sender, receiver)),
            Err(e) if moves_on(&e) => failed.push(e),
            Err(e) => return Err(e),
        }
    }
    if failed.len() == 1 {
        return Err(failed.pop().expect("one error"));
    }
    Err(ClientError::NoServer(failed))
}

/// Where in `servers` the server named `server` (`HOST:PORT`) is.
pub fn position(servers: &[String], server: &str) -> usize {
    servers.iter().position(|s| with_default_port(s) == server).unwrap_or(0)
}

/// Whether another server of the list is worth a try after this error.
fn moves_on(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect { .. }
            | ClientError::NotChatd { .. }
            | ClientError::Full { .. }
            | ClientError::Lost { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_after_the_lost_one_comes_first_and_the_lost_one_last() {
        let cases: [(usize, usize, &[usize]); 5] =
            [(1, 0, &[0]), (2, 0, &[1, 0]), (2, 1, &[0, 1]), (3, 1, &[2, 0, 1]), (4, 3, &[0, 1, 2, 3])];
        for (count, lost, want) in cases {
            assert_eq!(after(count, lost).collect::<Vec<_>>(), want, "{count} servers, lost {lost}");
        }
    }

    #[test]
    fn a_list_is_split_on_commas_and_trimmed() {
        assert_eq!(split("a:5000, b"), ["a:5000", "b"]);
        assert_eq!(split("::1"), ["::1"]);
    }

    #[test]
    fn servers_are_found_by_the_name_a_connection_gives_them() {
        let servers = split("a,b:6000,[::1]");
        assert_eq!(position(&servers, "b:6000"), 1);
        assert_eq!(position(&servers, "[::1]:5000"), 2);
        assert_eq!(position(&servers, "a:5000"), 0);
    }
}
