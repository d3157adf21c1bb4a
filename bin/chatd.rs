//! chatd: the room server. Parses options, runs the library's server.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use minichat::cli::ChatdArgs;
use minichat::discovery::{self, Announcement, NotAnnounced, TlsOffer};
use minichat::exit_codes as exit;
use minichat::server::{announce, Server, ShutdownSignal};

fn main() -> ExitCode {
    let args = ChatdArgs::parse();
    match run(&args) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("chatd: {err:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn run(args: &ChatdArgs) -> anyhow::Result<()> {
    // Signals first: a SIGTERM that arrives while binding still shuts down cleanly.
    let shutdown = ShutdownSignal::on_signals()?;
    let config = args.config()?;
    if let Some(warning) = args.password_file.as_deref().and_then(minichat::password::loose_permissions) {
        eprintln!("chatd: warning: {warning}");
    }
    let server = Server::bind(config)?;
    // Stdout may be closed (a service manager, a script that read the port);
    // the server is still wanted.
    let mut out = std::io::stdout().lock();
    let _ = announce(server.local_addr(), &mut out);
    let tls =
        server.fingerprint().map(|fingerprint| TlsOffer { port: server.tls_addr().map(|a| a.port()), fingerprint });
    let _ = writeln!(out, "{}", tls_line(&server));
    // On the LAN too, unless bound to loopback or told not to; kept until
    // the server stops, when the room says goodbye.
    let (_announcement, said) = announce_on_lan(args, server.local_addr(), server.cluster().as_deref(), tls.as_ref());
    let _ = writeln!(out, "{said}");
    if let Some(line) = server.password_summary() {
        let _ = writeln!(out, "{line}");
    }
    for line in server.history_summary() {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    server.serve(&shutdown)
}

/// The start-up line about TLS: the fingerprint people compare with what
/// the clients show when they first connect.
fn tls_line(server: &Server) -> String {
    let Some(fingerprint) = server.fingerprint() else {
        return "tls: off (--no-tls): what is said here crosses the network in plain text".into();
    };
    let first_byte = match server.tls_addr() {
        Some(addr) => format!(", and from the first byte on {addr}"),
        None => String::new(),
    };
    format!("tls: STARTTLS on {}{first_byte}; certificate SHA-256 {fingerprint}", server.local_addr())
}

/// How long start-up waits for the announcement to go out: about a second
/// is spent first making sure no other service on the LAN has its name.
const ANNOUNCE_PATIENCE: Duration = Duration::from_secs(3);

/// Announces the room on the LAN; returns the announcement and the start-up
/// line that says what became of it.
fn announce_on_lan(
    args: &ChatdArgs,
    bound: SocketAddr,
    cluster: Option<&str>,
    tls: Option<&TlsOffer>,
) -> (Option<Announcement>, String) {
    let label = args.label.clone().unwrap_or_else(discovery::default_label);
    let announced = if args.no_announce {
        Err(NotAnnounced::Off)
    } else {
        discovery::announce(bound, &label, cluster, tls, ANNOUNCE_PATIENCE)
    };
    match announced {
        Ok(mut announcement) => {
            if !args.quiet {
                let label = label.clone();
                announcement.on_sent_later(move || eprintln!("chatd: announced on the LAN as \"{label}\" at last"));
            }
            let said = match &announcement.confirmed {
                Ok(()) => format!("announced on the LAN as \"{label}\": chat finds it with no --server"),
                Err(why) => format!("announcing on the LAN as \"{label}\", not sent yet: {why}"),
            };
            (Some(announcement), said)
        }
        Err(not) => (None, not.to_string()),
    }
}
