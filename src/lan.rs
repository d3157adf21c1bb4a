//! The machine's own LAN addresses, so `chatd` can tell a person what to type
//! on another computer instead of sending them hunting with `ip addr`.

use std::net::{IpAddr, SocketAddr};

/// The addresses of the interfaces that are up, loopback left out.
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for ifaddr in addrs {
        let up = ifaddr.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let Some(addr) = ifaddr.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if up && !ip.is_loopback() && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

/// An IPv4 client on an IPv6 socket is the same computer as on an IPv4
/// one.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `address` is this computer's own: loopback, over IPv4, IPv6, or
/// IPv4 on an IPv6 socket.
pub fn is_loopback(address: IpAddr) -> bool {
    canonical(address).is_loopback()
}

/// Lines for people: how another computer reaches a server bound to `bound`,
/// given this machine's interface addresses.
pub fn hints(bound: SocketAddr, interfaces: &[IpAddr]) -> Vec<String> {
    let port = bound.port();
    let ip = bound.ip();
    if ip.is_loopback() {
        return vec![format!("only this computer can connect; to let others in, use --bind 0.0.0.0:{port}")];
    }
    if !ip.is_unspecified() {
        return vec![format!("from another computer: chat --server {bound}")];
    }
    let reachable: Vec<SocketAddr> = interfaces
        .iter()
        .filter(|addr| match addr {
            // 0.0.0.0 takes IPv4 only; [::] takes both. Link-local IPv6
            // addresses need a zone that a person cannot guess.
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => ip.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .map(|addr| SocketAddr::new(*addr, port))
        .collect();
    if reachable.is_empty() {
        return vec!["no network interface is up besides loopback: other computers cannot reach this one yet".into()];
    }
    reachable.iter().map(|addr| format!("from another computer: chat --server {addr}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn hints_name_each_lan_address() {
        let bound = "0.0.0.0:5000".parse().unwrap();
        let lines = hints(bound, &ips(&["192.168.1.15", "10.0.0.2", "fe80::1", "2001:db8::5"]));
        assert_eq!(
            lines,
            [
                "from another computer: chat --server 192.168.1.15:5000",
                "from another computer: chat --server 10.0.0.2:5000"
            ]
        );
        let lines = hints("[::]:5000".parse().unwrap(), &ips(&["192.168.1.15", "fe80::1", "2001:db8::5"]));
        assert_eq!(lines[1], "from another computer: chat --server [2001:db8::5]:5000");
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn loopback_over_ipv4_ipv6_and_ipv4_on_an_ipv6_socket() {
        for (address, local) in [("127.0.0.1", true), ("127.1.2.3", true), ("::1", true), ("::ffff:127.0.0.1", true)]
            .into_iter()
            .chain([("192.0.2.1", false), ("::ffff:192.0.2.1", false), ("2001:db8::1", false), ("::", false)])
        {
            assert_eq!(is_loopback(address.parse().unwrap()), local, "{address}");
        }
    }

    #[test]
    fn hints_for_loopback_and_for_no_network() {
        let lines = hints("127.0.0.1:4000".parse().unwrap(), &ips(&["192.168.1.15"]));
        assert_eq!(lines, ["only this computer can connect; to let others in, use --bind 0.0.0.0:4000"]);
        let lines = hints("0.0.0.0:5000".parse().unwrap(), &[]);
        assert!(lines[0].starts_with("no network interface is up"), "{lines:?}");
    }
}
