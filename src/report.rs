//! How a pipeline tool ends: its error printed once, on one line, and the
//! exit status that error maps to (`exit_codes`).

use crate::exit_codes as exit;

/// Ends a binary: prints the error once, as `PROGRAM: error: context`, and
/// maps it to its exit status. A closed pipe anywhere in the chain ends
/// quietly with 0, as `chat-tail | head` must.
pub fn finish(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(err) = result else { return std::process::ExitCode::from(exit::OK) };
    let broken_pipe = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return std::process::ExitCode::from(exit::OK);
    }
    eprintln!("{program}: {err:#}");
    let code = if let Some(e) = err.downcast_ref::<crate::client::ClientError>() {
        e.exit_code()
    } else if let Some(e) = err.downcast_ref::<crate::send::SendError>() {
        e.exit_code()
    } else {
        exit::FAILURE
    };
    std::process::ExitCode::from(code)
}
