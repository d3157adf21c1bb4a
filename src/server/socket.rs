//! Options on each accepted socket: no Nagle delay (writes are batched
//! already), and dead-peer detection by TCP keepalive and `TCP_USER_TIMEOUT`,
//! so a member whose computer vanished is found without its help.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

/// Prepares `stream` so that a vanished peer is declared dead within
/// `dead_peer` (at least 3 s), whether the connection was idle or had data
/// in flight.
pub fn configure(stream: &TcpStream, dead_peer: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    let timing = KeepaliveTiming::within(dead_peer);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    setsockopt(stream, sockopt::TcpKeepIdle, &timing.idle_secs)?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    setsockopt(stream, sockopt::TcpKeepAlive, &timing.idle_secs)?;
    setsockopt(stream, sockopt::TcpKeepInterval, &timing.interval_secs)?;
    setsockopt(stream, sockopt::TcpKeepCount, &timing.probes)?;
    #[cfg(target_os = "linux")]
    setsockopt(stream, sockopt::TcpUserTimeout, &timing.user_timeout_ms)?;
    Ok(())
}

/// Keepalive settings whose detection time stays within a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveTiming {
    pub idle_secs: u32,
    pub interval_secs: u32,
    pub probes: u32,
    pub user_timeout_ms: u32,
}

impl KeepaliveTiming {
    /// Two clocks find a vanished peer. Idle, keepalive probes start after a
    /// quarter of the bound, and with `TCP_USER_TIMEOUT` (Linux) the first
    /// probe after 0.4 of the bound with nothing heard ends the connection.
    /// But once data is sent, keepalive stops and the user timeout counts
    /// from that first unacknowledged send, so in the worst case the two add
    /// up: the timeout is kept under half the bound for their sum to fit.
    /// Elsewhere the probe count alone ends an idle connection at the bound.
    pub fn within(bound: Duration) -> KeepaliveTiming {
        let bound_ms = bound.as_millis().clamp(3000, u32::MAX as u128 / 2) as u32;
        let bound = bound_ms / 1000;
        let idle_secs = (bound / 4).max(1);
        let interval_secs = (bound / 10).max(1);
        KeepaliveTiming {
            idle_secs,
            interval_secs,
            probes: ((bound - idle_secs) / interval_secs).max(1),
            user_timeout_ms: bound_ms * 2 / 5,
        }
    }

    /// When a vanished idle peer is declared dead, at the latest.
    pub fn idle_detection(&self) -> Duration {
        let after_idle_ms = self.user_timeout_ms.saturating_sub(self.idle_secs * 1000);
        let probes_until_timeout = after_idle_ms.div_ceil(self.interval_secs * 1000);
        let probes = probes_until_timeout.clamp(1, self.probes);
        Duration::from_secs((self.idle_secs + probes * self.interval_secs) as u64)
    }

    /// The worst case: data sent just before the idle detection would have
    /// fired, then unacknowledged for the user timeout.
    pub fn worst_detection(&self) -> Duration {
        self.idle_detection() + Duration::from_millis(self.user_timeout_ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_stays_within_the_bound() {
        for secs in [10, 15, 30, 60, 61, 600] {
            let t = KeepaliveTiming::within(Duration::from_secs(secs));
            assert!(t.worst_detection() <= Duration::from_secs(secs) * 19 / 20, "{secs}s: {t:?}");
            assert!(t.idle_secs + t.probes * t.interval_secs <= secs as u32, "{secs}s: {t:?}");
        }
        // Keepalive counts whole seconds: small bounds can overshoot a little.
        for secs in [3, 5, 6] {
            let t = KeepaliveTiming::within(Duration::from_secs(secs));
            assert!(t.worst_detection() <= Duration::from_secs(secs) + Duration::from_millis(500), "{secs}s: {t:?}");
            assert!(t.idle_secs >= 1 && t.interval_secs >= 1 && t.probes >= 1, "{secs}s: {t:?}");
        }
    }
}
