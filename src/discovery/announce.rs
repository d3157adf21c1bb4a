//! chatd's announcement: a `_minichat._tcp` service on the interfaces the
//! server can be reached on, and nowhere else. A server bound to loopback is
//! never announced (no other computer could reach it, and mDNS would send
//! multicast for nothing); one bound to one address is announced on that
//! address's interface only; `0.0.0.0` on every IPv4 interface but loopback,
//! `[::]` on every interface but loopback.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};

use super::{txt_record, SERVICE_TYPE};

/// How long an unregistration or a shutdown of the responder may take when
/// chatd stops.
const GOODBYE_PATIENCE: Duration = Duration::from_secs(1);

/// A room announced on the LAN; dropping it says goodbye (the records are
/// withdrawn, so browsers forget the room at once) and stops the responder.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
    /// Whether the responder said it sent the announcement (`false`: not yet
    /// within the time allowed, and why).
    pub confirmed: Result<(), String>,
    /// The responder's events, kept while the announcement is not
    /// confirmed: see `on_sent_later`.
    events: Option<mdns_sd::Receiver<DaemonEvent>>,
}

/// Why a server is not announced.
#[derive(Debug)]
pub enum NotAnnounced {
    /// `--no-announce`.
    Off,
    /// Bound to a loopback address, which no other computer can reach.
    Loopback(IpAddr),
    /// The responder could not start.
    Failed(String),
}

impl fmt::Display for NotAnnounced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAnnounced::Off => f.write_str("not announced on the LAN (--no-announce)"),
            NotAnnounced::Loopback(ip) => {
                write!(f, "not announced on the LAN: bound to loopback ({ip}), which no other computer can reach")
            }
            NotAnnounced::Failed(why) => write!(f, "not announced on the LAN: {why}"),
        }
    }
}

/// Where a server bound to an address is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `0.0.0.0`: every IPv4 interface, loopback aside.
    Ipv4,
    /// `[::]`: every interface, loopback aside.
    Everywhere,
    /// One address: its interface alone.
    Only(IpAddr),
}

/// The rule: loopback is never announced.
fn scope(ip: IpAddr) -> Option<Scope> {
    match ip {
        ip if ip.is_loopback() => None,
        IpAddr::V4(v4) if v4.is_unspecified() => Some(Scope::Ipv4),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(Scope::Everywhere),
        // An IPv4 address seen through IPv6 (::ffff:127.0.0.1) is what it maps to.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if v4.is_loopback() => None,
            Some(v4) => Some(Scope::Only(IpAddr::V4(v4))),
            None => Some(Scope::Only(ip)),
        },
        ip => Some(Scope::Only(ip)),
    }
}

/// The interfaces the responder must leave alone for a scope: applied in
/// order, the later overriding the earlier.
fn selections(scope: Scope) -> (Vec<IfKind>, Vec<IfKind>) {
    let loopback = [IfKind::LoopbackV4, IfKind::LoopbackV6];
    match scope {
        Scope::Ipv4 => (vec![IfKind::IPv6, loopback[0].clone(), loopback[1].clone()], vec![]),
        Scope::Everywhere => (loopback.to_vec(), vec![]),
        Scope::Only(ip) => (vec![IfKind::All], vec![IfKind::Addr(ip)]),
    }
}

/// Announces the room labelled `label` served at `bound`, and waits up to
/// `patience` for the responder to say it went out (it first makes sure no
/// other service on the LAN has the name, which takes about a second).
pub fn announce(
    bound: SocketAddr,
    label: &str,
    cluster: Option<&str>,
    tls: Option<&super::TlsOffer>,
    patience: Duration,
) -> Result<Announcement, NotAnnounced> {
    let Some(scope) = scope(bound.ip()) else { return Err(NotAnnounced::Loopback(bound.ip())) };
    let failed = |e: mdns_sd::Error| NotAnnounced::Failed(e.to_string());
    // A host name of its own: two chatd on one computer (or in two network
    // namespaces of one) must not claim one name with different addresses.
    let word = crate::history::random_word(12).map_err(|e| NotAnnounced::Failed(e.to_string()))?;
    let host = format!("minichat-{}.local.", word.to_ascii_lowercase());
    let txt = txt_record(label, cluster, tls);
    let info = match scope {
        Scope::Only(ip) => {
            let mut info = ServiceInfo::new(SERVICE_TYPE, label, &host, ip, bound.port(), &txt[..]).map_err(failed)?;
            info.set_interfaces(vec![IfKind::Addr(ip)]);
            info
        }
        Scope::Ipv4 | Scope::Everywhere => {
            ServiceInfo::new(SERVICE_TYPE, label, &host, "", bound.port(), &txt[..]).map_err(failed)?.enable_addr_auto()
        }
    };
    let fullname = info.get_fullname().to_owned();
    let daemon = ServiceDaemon::new().map_err(failed)?;
    let mut announcement = Announcement { daemon, fullname, confirmed: Ok(()), events: None };
    let (disable, enable) = selections(scope);
    announcement.daemon.disable_interface(disable).map_err(failed)?;
    if !enable.is_empty() {
        announcement.daemon.enable_interface(enable).map_err(failed)?;
    }
    let monitor = announcement.daemon.monitor().map_err(failed)?;
    announcement.daemon.register(info).map_err(failed)?;
    // With no network up yet (a service started before it), there is
    // nothing to wait for: the responder announces the room once one is.
    let interfaces = crate::lan::interface_addresses();
    if !interfaces.iter().any(|ip| scope != Scope::Ipv4 || ip.is_ipv4()) {
        announcement.confirmed = Err("no network interface is up besides loopback; it will be once one is".into());
    } else {
        announcement.confirmed = wait_until_sent(&monitor, Instant::now() + patience);
    }
    // Confirmed, the events are of no more use: dropping them unsubscribes.
    announcement.events = announcement.confirmed.is_err().then_some(monitor);
    Ok(announcement)
}

impl Announcement {
    /// When the announcement was not confirmed at start-up, calls `sent`
    /// from a thread of its own once it goes out (a network came up), so
    /// that the log can say so; the thread ends then, or when the
    /// announcement is dropped.
    pub fn on_sent_later(&mut self, sent: impl FnOnce() + Send + 'static) {
        let Some(events) = self.events.take() else { return };
        std::thread::spawn(move || {
            // Each turn takes one event; dropping the announcement stops the
            // responder, which closes the channel.
            while let Ok(event) = events.recv() {
                if let DaemonEvent::Announce(..) = event {
                    sent();
                    return;
                }
            }
        });
    }
}

/// Waits for the responder's word that the announcement went out on an
/// interface; by `deadline`, why not (its last error, if it had one).
fn wait_until_sent(monitor: &mdns_sd::Receiver<DaemonEvent>, deadline: Instant) -> Result<(), String> {
    let mut why = "no interface has sent it yet".to_owned();
    // The deadline is checked on every turn, not only while waiting: on a
    // busy LAN events keep coming (each answer sent is one).
    while Instant::now() < deadline {
        match monitor.recv_deadline(deadline) {
            Ok(DaemonEvent::Announce(..)) => return Ok(()),
            Ok(DaemonEvent::Error(e)) => why = e.to_string(),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Err(why)
}

impl fmt::Debug for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcement").field("fullname", &self.fullname).field("confirmed", &self.confirmed).finish()
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(GOODBYE_PATIENCE);
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(GOODBYE_PATIENCE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_announced_and_an_address_only_on_its_interface() {
        let cases: [(&str, Option<Scope>); 8] = [
            ("127.0.0.1", None),
            ("127.3.2.1", None),
            ("::1", None),
            ("::ffff:127.0.0.1", None),
            ("0.0.0.0", Some(Scope::Ipv4)),
            ("::", Some(Scope::Everywhere)),
            ("192.168.1.15", Some(Scope::Only("192.168.1.15".parse().unwrap()))),
            ("::ffff:10.0.0.2", Some(Scope::Only("10.0.0.2".parse().unwrap()))),
        ];
        for (ip, want) in cases {
            assert_eq!(scope(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn loopback_is_left_out_wherever_the_server_listens() {
        for scope in [Scope::Ipv4, Scope::Everywhere] {
            let (disabled, enabled) = selections(scope);
            assert!(disabled.iter().any(|k| matches!(k, IfKind::LoopbackV4)), "{scope:?}");
            assert!(disabled.iter().any(|k| matches!(k, IfKind::LoopbackV6)), "{scope:?}");
            assert!(enabled.is_empty());
        }
        let (disabled, enabled) = selections(Scope::Only("10.0.0.2".parse().unwrap()));
        assert!(matches!(disabled[..], [IfKind::All]));
        assert!(matches!(enabled[..], [IfKind::Addr(ip)] if ip.to_string() == "10.0.0.2"));
    }

    #[test]
    fn a_loopback_server_is_refused_before_anything_is_started() {
        let refused = announce("127.0.0.1:5000".parse().unwrap(), "x", None, None, Duration::ZERO).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "not announced on the LAN: bound to loopback (127.0.0.1), which no other computer can reach"
        );
    }
}
