//! chat-tail: the room's events out, one per line.

use std::process::ExitCode;

use clap::Parser;
use minichat::cli::ChatTailArgs;
use minichat::report::finish;

fn main() -> ExitCode {
    let args = ChatTailArgs::parse();
    finish("chat-tail", minichat::tail::run(&args))
}
