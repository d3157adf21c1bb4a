//! chat-send: standard input (or arguments) in, one message per line.

use std::process::ExitCode;

use clap::Parser;
use minichat::cli::ChatSendArgs;
use minichat::report::finish;

fn main() -> ExitCode {
    let args = ChatSendArgs::parse();
    finish("chat-send", minichat::send::run(&args).map(drop).map_err(Into::into))
}
