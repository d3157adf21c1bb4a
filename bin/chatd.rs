//! chatd: the room server. Parses options, runs the library's server.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use minichat::cli::ChatdArgs;
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
    let server = Server::bind(args.config()?)?;
    // Stdout may be closed (a service manager, a script that read the port);
    // the server is still wanted.
    let mut out = std::io::stdout().lock();
    let _ = announce(server.local_addr(), &mut out);
    for line in server.history_summary() {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    server.serve(&shutdown)
}
