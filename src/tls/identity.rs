//! The server's certificate and key: the operator's, or one chatd makes on
//! its first start and keeps in its data directory, so that its fingerprint
//! stays the same across restarts and the clients that remembered it keep
//! trusting it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Fingerprint;

/// The file chatd keeps its own certificate and key in, in its data
/// directory: one file, so that it is made whole or not at all.
pub const OWN_FILE: &str = "tls.pem";

/// What the server proves itself with.
#[derive(Debug, Clone)]
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: Fingerprint,
    /// Where the certificate came from, for the start-up lines.
    pub cert_path: PathBuf,
    /// Whether chatd made it just now.
    pub made: bool,
}

impl Identity {
    /// The certificate in `dir`, made there first if it has none.
    pub fn own(dir: &Path) -> anyhow::Result<Identity> {
        let path = dir.join(OWN_FILE);
        let made = !path.exists() && make(dir, &path)?;
        let mut identity = Identity::given(&path, &path).with_context(|| {
            format!(
                "{} is damaged: remove it and chatd makes a new certificate (the clients that remembered \
                 the old one will refuse the new one until told)",
                path.display()
            )
        })?;
        identity.made = made;
        Ok(identity)
    }

    /// The operator's certificate (with its chain) and key, in PEM (one
    /// file may hold both).
    pub fn given(cert_path: &Path, key_path: &Path) -> anyhow::Result<Identity> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect())
            .map_err(|e| anyhow!("cannot read the certificate {}: {e}", cert_path.display()))?;
        let Some(leaf) = chain.first() else {
            return Err(anyhow!("{} holds no certificate (PEM, BEGIN CERTIFICATE)", cert_path.display()));
        };
        let fingerprint = Fingerprint::of(leaf);
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| anyhow!("cannot read the private key {}: {e}", key_path.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                anyhow!(
                    "the certificate {} and key {} do not go together: {e}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
        // Nobody resumes a session: tickets would only be bytes on the wire.
        config.send_tls13_tickets = 0;
        Ok(Identity { config: Arc::new(config), fingerprint, cert_path: cert_path.to_owned(), made: false })
    }
}

/// Makes a self-signed certificate and its key into `path`, readable by its
/// owner only; false when another chatd made one there meanwhile (theirs
/// is kept). The file is written whole under a name of this process's, then
/// linked into place, which fails rather than replace a file: a crash
/// leaves no half file, and two chatd starting at once agree on one key.
fn make(dir: &Path, path: &Path) -> anyhow::Result<bool> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty());
    let mut names = vec!["minichat".to_owned(), "localhost".to_owned()];
    names.extend(host.clone().filter(|h| h != "localhost"));
    let cannot = |e: rcgen::Error| anyhow!("cannot make a TLS certificate: {e}");
    let mut params = rcgen::CertificateParams::new(names).map_err(cannot)?;
    // What `openssl s_client` shows as the subject.
    let subject = format!("chatd on {}", host.as_deref().unwrap_or("this computer"));
    params.distinguished_name.push(rcgen::DnType::CommonName, subject);
    let key = rcgen::KeyPair::generate().map_err(cannot)?;
    let cert = params.self_signed(&key).map_err(cannot)?;
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    let temporary = dir.join(format!(".{OWN_FILE}.{}", std::process::id()));
    let write = || -> std::io::Result<bool> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        let linked = match fs::hard_link(&temporary, path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        fs::remove_file(&temporary)?;
        File::open(dir)?.sync_all()?;
        Ok(linked)
    };
    let made = write().with_context(|| format!("cannot write {}", path.display()));
    let _ = fs::remove_file(&temporary);
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_certificate_is_made_once_with_a_private_key_and_kept() {
        let dir = std::env::temp_dir().join(format!("minichat-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = Identity::own(&dir).unwrap();
        assert!(first.made);
        let mode = fs::metadata(dir.join(OWN_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Identity::own(&dir).unwrap();
        assert!(!again.made);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only {OWN_FILE} is left");

        fs::write(dir.join(OWN_FILE), "torn").unwrap();
        let err = format!("{:#}", Identity::own(&dir).unwrap_err());
        assert!(err.contains("is damaged: remove it") && err.contains("holds no certificate"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
