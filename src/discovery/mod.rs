//! Finding the room on the LAN without typing an address: chatd announces
//! itself with mDNS / DNS-SD as a `_minichat._tcp` service, and a client
//! given no server looks for one for a moment. What the announcement's TXT
//! record holds is a contract others may read (`docs/protocol.md`, "Finding
//! the room").
//!
//! - this file: the service type, the TXT record, a room as found;
//! - `announce`: chatd's announcement, on the interfaces of its address
//!   only, and never from loopback;
//! - `browse`: looking for rooms, and what the clients do with what was
//!   found (one room: use it; several: choose; none: say why that may be).

mod announce;
mod browse;

use std::fmt;
use std::net::SocketAddr;

pub use self::announce::{announce, Announcement, NotAnnounced};
pub use self::browse::{browse, servers, BROWSE_FOR};

/// The DNS-SD service type, with its domain.
pub const SERVICE_TYPE: &str = "_minichat._tcp.local.";

/// The TXT record's own version (RFC 6763, 6.7: `txtvers` comes first).
const TXT_VERSION: &str = "1";

/// The protocol version chatd speaks (`docs/PROTOCOL.md`), in `proto`.
const PROTOCOL_VERSION: &str = "2";

/// Most bytes of a room's label: it is the service instance's name too, one
/// DNS label.
pub const MAX_LABEL_BYTES: usize = 63;

/// The TXT record of a room labelled `label`: `txtvers=1`, `room=<label>`,
/// `proto=2`, and for a room served by several chatd (`--cluster`),
/// `cluster=<the room's epoch>`, the same on each of them. With TLS:
/// `tls=starttls`, `tlsport=<port>` where TLS is spoken from the first byte,
/// and `fp=<SHA-256 of the certificate, 64 hex digits>`. Clients ignore keys
/// they do not know.
pub fn txt_record(label: &str, cluster: Option<&str>, tls: Option<&TlsOffer>) -> Vec<(&'static str, String)> {
    let mut txt = vec![("txtvers", TXT_VERSION.into()), ("room", label.into()), ("proto", PROTOCOL_VERSION.into())];
    txt.extend(cluster.map(|epoch| ("cluster", epoch.to_owned())));
    if let Some(tls) = tls {
        txt.push(("tls", "starttls".into()));
        txt.extend(tls.port.map(|port| ("tlsport", port.to_string())));
        txt.push(("fp", tls.fingerprint.compact()));
    }
    txt
}

/// How a chatd offers TLS, for its TXT record.
#[derive(Debug, Clone, Copy)]
pub struct TlsOffer {
    /// Where TLS is spoken from the first byte, if anywhere.
    pub port: Option<u16>,
    pub fingerprint: crate::tls::Fingerprint,
}

/// A room's label as given to `chatd --label`: 1 to 63 bytes of UTF-8 text
/// with no control characters.
pub fn parse_label(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a room's label cannot be empty".into());
    }
    if text.len() > MAX_LABEL_BYTES {
        return Err(format!("{} bytes is too long for a label: at most {MAX_LABEL_BYTES}", text.len()));
    }
    if text.chars().any(|c| c.is_control() || crate::protocol::is_unsafe_to_show(c)) {
        return Err("a label cannot hold control characters".into());
    }
    Ok(text.to_owned())
}

/// The label a room gets when `--label` says nothing: this computer's name.
pub fn default_label() -> String {
    let name = nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_default();
    parse_label(&name).unwrap_or_else(|_| "minichat".into())
}

/// A room found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRoom {
    /// Its label (`room=` in its TXT record), safe to print: control
    /// characters and tabs escaped.
    pub label: String,
    /// Where its servers listen: IPv4 addresses first, server by server.
    /// Never empty.
    pub addrs: Vec<SocketAddr>,
    /// For a room several chatd serve: what they all announce (`cluster=`).
    pub cluster: Option<String>,
    /// How many chatd announced it.
    pub servers: usize,
}

impl FoundRoom {
    /// The room's addresses as a `--server` list: the clients try each in
    /// turn, as they do a list given by hand.
    pub fn servers(&self) -> String {
        self.addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
    }

    /// One line of `chat --list`: the address to give `--server`, a tab, the label.
    pub fn listing(&self) -> String {
        format!("{}\t{}", self.addrs[0], self.label)
    }
}

impl fmt::Display for FoundRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" at {}", self.label, self.addrs[0])?;
        match self.servers {
            1 => Ok(()),
            2 => write!(f, " (and 1 more server)"),
            n => write!(f, " (and {} more servers)", n - 1),
        }
    }
}

/// One room for all the chatd that serve it: those announcing one
/// `cluster=` become one room, whose addresses are all of theirs, so a
/// client moves between them as with a list given by hand. Its label is
/// the first in order.
fn merge_clusters(rooms: Vec<FoundRoom>) -> Vec<FoundRoom> {
    let mut merged: Vec<FoundRoom> = Vec::with_capacity(rooms.len());
    for room in rooms {
        let same = room.cluster.as_ref().and_then(|c| merged.iter_mut().find(|m| m.cluster.as_ref() == Some(c)));
        match same {
            Some(into) => {
                into.servers += room.servers;
                for addr in room.addrs {
                    if !into.addrs.contains(&addr) {
                        into.addrs.push(addr);
                    }
                }
            }
            None => merged.push(room),
        }
    }
    merged
}

/// A label from the network, made safe to print and to list with tabs
/// between fields.
fn printable_label(raw: &str) -> String {
    let shown = crate::protocol::Printable(raw).to_string();
    shown.replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_printable_text() {
        assert_eq!(parse_label("Aula 3 — planta baja").as_deref(), Ok("Aula 3 — planta baja"));
        for bad in ["", "  ", "a\tb", "bell\u{7}", "\u{202e}txt.exe", &"x".repeat(64)] {
            assert!(parse_label(bad).is_err(), "{bad:?}");
        }
        assert!(parse_label(&"é".repeat(31)).is_ok());
        assert!(parse_label(&default_label()).is_ok());
    }

    #[test]
    fn the_txt_record_starts_with_its_version_and_names_the_room() {
        let txt = txt_record("kitchen", None, None);
        assert_eq!(txt[0], ("txtvers", "1".to_owned()));
        assert_eq!(txt[1], ("room", "kitchen".to_owned()));
        assert_eq!(txt[2], ("proto", "2".to_owned()));
        assert_eq!(txt.len(), 3);
        let clustered = txt_record("kitchen", Some("js17"), None);
        assert_eq!(clustered[3], ("cluster", "js17".to_owned()));
        let fingerprint = crate::tls::Fingerprint::of(b"certificate");
        let secure = txt_record("kitchen", None, Some(&TlsOffer { port: Some(5001), fingerprint }));
        assert_eq!(
            secure[3..],
            [("tls", "starttls".into()), ("tlsport", "5001".into()), ("fp", fingerprint.compact())]
        );
    }

    fn found(label: &str, addr: &str, cluster: Option<&str>) -> FoundRoom {
        FoundRoom {
            label: label.into(),
            addrs: vec![addr.parse().unwrap()],
            cluster: cluster.map(str::to_owned),
            servers: 1,
        }
    }

    #[test]
    fn the_servers_of_one_cluster_are_one_room_with_all_their_addresses() {
        let rooms = vec![
            found("a-host", "10.0.0.1:5000", Some("js17")),
            found("alone", "10.0.0.9:5000", None),
            found("b-host", "10.0.0.2:5000", Some("js17")),
            found("other", "10.0.0.3:5000", Some("js99")),
            found("same label", "10.0.0.4:5000", None),
            found("same label", "10.0.0.5:5000", None),
        ];
        let merged = merge_clusters(rooms);
        let summary: Vec<(String, String, usize)> =
            merged.iter().map(|r| (r.label.clone(), r.servers(), r.servers)).collect();
        assert_eq!(
            summary,
            [
                ("a-host".to_owned(), "10.0.0.1:5000,10.0.0.2:5000".to_owned(), 2),
                ("alone".to_owned(), "10.0.0.9:5000".to_owned(), 1),
                ("other".to_owned(), "10.0.0.3:5000".to_owned(), 1),
                ("same label".to_owned(), "10.0.0.4:5000".to_owned(), 1),
                ("same label".to_owned(), "10.0.0.5:5000".to_owned(), 1),
            ]
        );
        assert_eq!(merged[0].to_string(), "\"a-host\" at 10.0.0.1:5000 (and 1 more server)");
    }

    #[test]
    fn a_found_room_lists_as_address_tab_label() {
        let room = FoundRoom {
            label: printable_label("big\troom\u{1b}[31m"),
            addrs: vec!["10.1.0.1:5000".parse().unwrap(), "[2001:db8::1]:5000".parse().unwrap()],
            cluster: None,
            servers: 1,
        };
        assert_eq!(room.listing(), "10.1.0.1:5000\tbig\\troom\\u{1b}[31m");
        assert_eq!(room.servers(), "10.1.0.1:5000,[2001:db8::1]:5000");
        assert_eq!(room.to_string(), "\"big\\troom\\u{1b}[31m\" at 10.1.0.1:5000");
    }
}
