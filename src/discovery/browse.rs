//! Looking for rooms on the LAN for a moment, and what a client given no
//! server does with what it found: one room, it is used; several, the
//! person chooses (`chat`) or the tool stops with the list; none, the error
//! says why that may be and what to type instead.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent};

use super::{merge_clusters, printable_label, FoundRoom, SERVICE_TYPE};
use crate::client::ClientError;

/// How long a client looks: a responder answers a query within half a
/// second or so, and announces itself again a second after its start.
pub const BROWSE_FOR: Duration = Duration::from_millis(1500);

/// How long the browser's own shutdown may take.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);

/// Most answers taken in one look, however many come.
const MAX_EVENTS: usize = 10_000;

/// The servers to talk to: `given` (`--server` or `CHAT_SERVER`) when there
/// is one, whatever the LAN holds; else the one room found on the LAN, said
/// on standard error as `PROGRAM: …`. Several rooms are
/// `ClientError::SeveralRooms`, none `ClientError::NoRoom`.
pub fn servers(given: Option<&str>, program: &str) -> Result<String, ClientError> {
    if let Some(given) = given {
        return Ok(given.to_owned());
    }
    let mut rooms = browse(BROWSE_FOR)?;
    if rooms.len() > 1 {
        return Err(ClientError::SeveralRooms(rooms));
    }
    let room = rooms.pop().expect("browse finds at least one room");
    eprintln!("{program}: found the room {room} on the LAN (--server HOST:PORT chooses another)");
    Ok(room.servers())
}

/// The rooms announced on the LAN within `window`, by label, then address;
/// none found is `ClientError::NoRoom`.
pub fn browse(window: Duration) -> Result<Vec<FoundRoom>, ClientError> {
    let cannot = |e: mdns_sd::Error| ClientError::NoRoom { waited: window, why: Some(e.to_string()) };
    let daemon = ServiceDaemon::new().map_err(cannot)?;
    let found = look(&daemon, window).map_err(cannot);
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(SHUTDOWN_PATIENCE);
    }
    let rooms = found?;
    if rooms.is_empty() {
        return Err(ClientError::NoRoom { waited: window, why: None });
    }
    Ok(rooms)
}

fn look(daemon: &ServiceDaemon, window: Duration) -> Result<Vec<FoundRoom>, mdns_sd::Error> {
    // A room on this computer is reached through its LAN address anyway.
    daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + window;
    let mut found = BTreeMap::new();
    for _ in 0..MAX_EVENTS {
        if Instant::now() >= deadline {
            break;
        }
        match events.recv_deadline(deadline) {
            Ok(ServiceEvent::ServiceResolved(service)) => {
                if let Some(room) = room_of(&service) {
                    found.insert(service.fullname.clone(), room);
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                found.remove(&fullname);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let mut rooms: Vec<FoundRoom> = found.into_values().collect();
    rooms.sort_by(|a, b| (&a.label, a.addrs[0]).cmp(&(&b.label, b.addrs[0])));
    Ok(merge_clusters(rooms))
}

/// A resolved service as a room: its label (`room=`, or else the instance
/// name) and the addresses a client can use, IPv4 first; `None` without any.
fn room_of(service: &ResolvedService) -> Option<FoundRoom> {
    let instance = service.fullname.strip_suffix(SERVICE_TYPE).map(|name| name.trim_end_matches('.'));
    let label = service.get_property_val_str("room").or(instance).unwrap_or(&service.fullname);
    let ips = service.get_addresses().iter().map(|ip| ip.to_ip_addr()).collect();
    let addrs: Vec<SocketAddr> = usable(ips).into_iter().map(|ip| SocketAddr::new(ip, service.port)).collect();
    let cluster = service.get_property_val_str("cluster").map(str::to_owned);
    (!addrs.is_empty()).then(|| FoundRoom { label: printable_label(label), addrs, cluster, servers: 1 })
}

/// The addresses a client can connect to as they are, IPv4 first, each in
/// order: a link-local IPv6 address needs a zone that a `--server` cannot
/// carry.
fn usable(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    });
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_comes_first_and_link_local_addresses_are_left_out() {
        let ips = ["fe80::1", "2001:db8::5", "10.0.0.9", "169.254.3.3", "10.0.0.2", "10.0.0.2"];
        let got = usable(ips.iter().map(|ip| ip.parse().unwrap()).collect());
        let want: Vec<IpAddr> = ["10.0.0.2", "10.0.0.9", "2001:db8::5"].iter().map(|ip| ip.parse().unwrap()).collect();
        assert_eq!(got, want);
    }
}
