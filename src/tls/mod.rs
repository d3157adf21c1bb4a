//! TLS for the room: the server's certificate, the fingerprint people
//! compare, the clients' trust on first use, and one encrypted connection
//! that a reading thread and a writing thread can share.
//!
//! - `identity`: the server's certificate and key, made on first start into
//!   the data directory or given by the operator;
//! - `session`: a rustls connection over a socket, read by one thread and
//!   written by another, each under one short lock;
//! - `trust`: what a client accepts: a pinned fingerprint, or the one it
//!   remembered of that server (SSH's way), and the verifier that records
//!   what the server showed.
//!
//! Certificates are not checked against authorities: a chat server on a LAN
//! has no name an authority would sign. What stands in for that is the
//! fingerprint, shown by chatd when it starts and by the client the first
//! time it meets the server.

mod identity;
mod session;
mod trust;

use std::fmt;
use std::sync::Arc;

pub use self::identity::Identity;
pub use self::session::{handshake, Session, Want};
pub use self::trust::{client_config, say_first_met, Checked, KnownServers, Trust, TrustError};

/// The SHA-256 digest of a certificate (DER), as `openssl x509 -fingerprint
/// -sha256` prints it: two hex digits a byte, with colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(certificate_der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, certificate_der);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// Reads a fingerprint as people copy it: hex with or without colons or
    /// spaces, in either case, after an optional `sha256:` or `SHA256
    /// Fingerprint=` (what openssl prints).
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let mut text = text.trim();
        if let Some((before, after)) = text.split_once('=') {
            if before.to_ascii_lowercase().contains("fingerprint") {
                text = after;
            }
        }
        for prefix in ["sha256:", "sha-256:"] {
            if text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix) {
                text = &text[prefix.len()..];
            }
        }
        let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        let wrong = || {
            format!(
                "\"{text}\" is not a SHA-256 fingerprint: give the 64 hex digits chatd prints at start \
                 (colons allowed)"
            )
        };
        if digits.len() != 64 {
            return Err(wrong());
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
        }
        Ok(Fingerprint(bytes))
    }

    /// Hex without colons: for TXT records and files.
    pub fn compact(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The one crypto provider: ring, which async-nats already brings in.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_as_people_copy_them() {
        let fp = Fingerprint::of(b"a certificate");
        let shown = fp.to_string();
        assert_eq!(shown.len(), 95, "{shown}");
        for text in [
            shown.clone(),
            shown.to_lowercase(),
            fp.compact(),
            format!("sha256:{}", fp.compact()),
            format!("SHA256 Fingerprint={shown}"),
            format!("  {shown}\n"),
        ] {
            assert_eq!(Fingerprint::parse(&text), Ok(fp), "{text:?}");
        }
        for bad in ["", "00", &fp.compact()[1..], &format!("{}zz", &fp.compact()[2..])] {
            let err = Fingerprint::parse(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{err}");
        }
    }
}
