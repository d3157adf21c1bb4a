//! chat: the interactive client. Parses options, runs the library's REPL.

use std::process::ExitCode;

use clap::Parser;
use minichat::cli::ChatArgs;
use minichat::exit_codes as exit;

fn main() -> ExitCode {
    let args = ChatArgs::parse();
    match minichat::repl::run(&args) {
        Ok(()) => ExitCode::from(exit::OK),
        // Ctrl-C left its mark on the screen; nothing more to say.
        Err(err @ minichat::repl::ChatError::Interrupted) => ExitCode::from(err.exit_code()),
        Err(err) => {
            eprintln!("chat: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
