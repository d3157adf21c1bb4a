//! What a client trusts: the fingerprint it was given (`--fingerprint`), or
//! else the one it remembered the first time it met that server, as SSH
//! does with `known_hosts`. A changed certificate, or a server that used
//! TLS before and now offers none, is refused with what changed and what
//! to do.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::Fingerprint;

/// The file of remembered servers, under `$XDG_DATA_HOME/minichat/`.
pub const KNOWN_SERVERS: &str = "known_servers";

/// What a client accepts of a server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only this one (`--fingerprint`).
    Pinned(Fingerprint),
    /// The one remembered of each server; a server met for the first time is
    /// remembered.
    Remembered(KnownServers),
}

/// What came of checking a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The server was met before, or its fingerprint given.
    Known,
    /// Met for the first time: now remembered in this file.
    FirstMet(PathBuf),
}

impl Trust {
    /// From `--fingerprint` when given, else the file of remembered servers
    /// in this process's environment.
    pub fn from_env(pinned: Option<Fingerprint>) -> Trust {
        match pinned {
            Some(fingerprint) => Trust::Pinned(fingerprint),
            None => Trust::Remembered(KnownServers::at(crate::paths::own_data_dir().map(|d| d.join(KNOWN_SERVERS)))),
        }
    }

    /// Whether the client insists on TLS with `server`: a pinned
    /// fingerprint, or a server remembered with TLS.
    pub fn expects_tls(&self, server: &str) -> bool {
        match self {
            Trust::Pinned(_) => true,
            Trust::Remembered(known) => known.lookup(server).is_some(),
        }
    }

    /// The error for a server that offered no TLS where it was expected.
    pub fn no_tls(&self, server: &str) -> TrustError {
        let was = match self {
            Trust::Pinned(fingerprint) => Expected::Pinned(*fingerprint),
            Trust::Remembered(known) => Expected::Remembered(known.path.clone().unwrap_or_default()),
        };
        TrustError::NoTls { server: server.to_owned(), was }
    }

    /// Checks the certificate `seen` of `server`, remembering it when the
    /// server is met for the first time.
    pub fn check(&self, server: &str, seen: Fingerprint) -> Result<Checked, TrustError> {
        match self {
            Trust::Pinned(pinned) if *pinned == seen => Ok(Checked::Known),
            Trust::Pinned(pinned) => Err(TrustError::NotPinned { server: server.to_owned(), pinned: *pinned, seen }),
            Trust::Remembered(known) => match known.lookup(server) {
                Some(was) if was == seen => Ok(Checked::Known),
                Some(was) => Err(TrustError::Changed {
                    server: server.to_owned(),
                    was,
                    now: seen,
                    file: known.path.clone().unwrap_or_default(),
                }),
                None => match &known.path {
                    Some(path) => match known.remember(server, seen) {
                        Ok(()) => Ok(Checked::FirstMet(path.clone())),
                        Err(e) => Err(TrustError::CannotRemember { path: path.clone(), source: e }),
                    },
                    // Nowhere to remember it (no home): trusted this once.
                    None => Ok(Checked::Known),
                },
            },
        }
    }
}

/// The servers met before and their certificates' fingerprints, one
/// `SERVER FINGERPRINT` line each.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: Option<PathBuf>,
}

impl KnownServers {
    pub fn at(path: Option<PathBuf>) -> KnownServers {
        KnownServers { path }
    }

    /// The fingerprint remembered for `server` (`HOST:PORT`, as typed or found).
    pub fn lookup(&self, server: &str) -> Option<Fingerprint> {
        let text = fs::read_to_string(self.path.as_ref()?).ok()?;
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(name, _)| *name == server)
            .find_map(|(_, fingerprint)| Fingerprint::parse(fingerprint).ok())
    }

    fn remember(&self, server: &str, fingerprint: Fingerprint) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        // One short append: two clients meeting servers at once both keep
        // their line.
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(format!("{server} {}\n", fingerprint.compact()).as_bytes())
    }
}

/// What the client expected instead.
#[derive(Debug)]
pub enum Expected {
    Pinned(Fingerprint),
    Remembered(PathBuf),
}

/// Why a client refused a server.
#[derive(Debug)]
pub enum TrustError {
    /// The certificate is not the one remembered.
    Changed { server: String, was: Fingerprint, now: Fingerprint, file: PathBuf },
    /// The certificate is not the one given with `--fingerprint`.
    NotPinned { server: String, pinned: Fingerprint, seen: Fingerprint },
    /// The server offered no TLS where it was expected.
    NoTls { server: String, was: Expected },
    /// The fingerprint of a server met for the first time could not be kept.
    CannotRemember { path: PathBuf, source: io::Error },
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustError::Changed { server, was, now, file } => write!(
                f,
                "the TLS certificate of {server} has changed: it was {was}, it is now {now}. Someone may be \
                 in between, or the server lost its data directory. Ask its operator for the fingerprint \
                 chatd printed when it started; if it is the new one, delete the line of {server} in {}",
                file.display()
            ),
            TrustError::NotPinned { server, pinned, seen } => write!(
                f,
                "{server} showed the TLS certificate {seen}, not the {pinned} given with --fingerprint: \
                 someone may be in between, or the fingerprint is wrong; check it with the operator"
            ),
            TrustError::NoTls { server, was: Expected::Pinned(_) } => write!(
                f,
                "{server} offers no TLS, but a fingerprint was given: someone may be in between, or chatd \
                 runs with --no-tls; leave out --fingerprint to talk in plain text"
            ),
            TrustError::NoTls { server, was: Expected::Remembered(file) } => write!(
                f,
                "{server} offers no TLS, but it did when first met (see {}): someone may be in between, or \
                 chatd now runs with --no-tls; if so, delete the line of {server} in that file",
                file.display()
            ),
            TrustError::CannotRemember { path, source } => write!(
                f,
                "cannot remember the server's TLS certificate in {}: {source}; give it with --fingerprint \
                 instead, or set XDG_DATA_HOME to a writable directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TrustError {}

/// The clients' TLS settings: any certificate, as long as the server proves
/// it holds its key; whether it is the right one is `Trust::check`'s work.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = super::provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts every certificate but checks the handshake's signatures, so the
/// server cannot show a certificate whose key it does not hold.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Says on standard error that a server was met for the first time, with
/// the fingerprint to compare with the one chatd printed.
pub fn say_first_met(server: &str, fingerprint: Fingerprint, file: &Path) {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "minichat".into());
    eprintln!(
        "{program}: first connection to {server}; its TLS certificate is {fingerprint}. Compare it with \
         the one chatd printed at start; it is remembered in {}",
        file.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_remembered_once_and_a_changed_certificate_refused() {
        let dir = std::env::temp_dir().join(format!("minichat-trust-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = dir.join(KNOWN_SERVERS);
        let trust = Trust::Remembered(KnownServers::at(Some(file.clone())));
        let (one, two) = (Fingerprint::of(b"one"), Fingerprint::of(b"two"));
        assert!(!trust.expects_tls("a:5000"));
        assert_eq!(trust.check("a:5000", one).unwrap(), Checked::FirstMet(file.clone()));
        assert_eq!(trust.check("a:5000", one).unwrap(), Checked::Known);
        assert!(trust.expects_tls("a:5000"));
        assert_eq!(trust.check("b:5000", two).unwrap(), Checked::FirstMet(file.clone()));
        let err = trust.check("a:5000", two).unwrap_err().to_string();
        assert!(err.contains(&one.to_string()) && err.contains(&two.to_string()), "{err}");
        assert!(err.contains("delete the line of a:5000"), "{err}");

        let pinned = Trust::Pinned(one);
        assert_eq!(pinned.check("c:5000", one).unwrap(), Checked::Known);
        assert!(matches!(pinned.check("c:5000", two), Err(TrustError::NotPinned { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
