//! The exit statuses of the binaries, in one place: the man pages list them,
//! and the errors of every client map to them (`ClientError::exit_code`).

/// Success, or a clean shutdown.
pub const OK: u8 = 0;
/// A runtime error: cannot listen, cannot connect, and the like.
pub const FAILURE: u8 = 1;
/// Bad usage: an unknown option or a bad value (clap's own status).
pub const USAGE: u8 = 2;
/// A client could not connect (refused, unreachable, not a chat server, full).
pub const CONNECT: u8 = 3;
/// A client's name was taken or invalid.
pub const NAME: u8 = 4;
/// A client lost its connection: the server shut down, dropped it, or vanished.
pub const LOST: u8 = 5;
/// The server refused something the client sent (`chat-send`: a line).
pub const REFUSED: u8 = 6;
/// A client given no server found several rooms on the LAN and could not
/// ask which (`chat-send`, `chat-tail`, a piped `chat`): `--server` says.
pub const SEVERAL_ROOMS: u8 = 7;
/// A client refused the server's TLS certificate: not the one remembered
/// or pinned (`--fingerprint`), or no TLS where it was expected.
pub const UNTRUSTED: u8 = 9;
/// The room has a password, and none or a wrong one was given, with no
/// person to ask (`chat-send`, `chat-tail`, a piped `chat`).
pub const PASSWORD: u8 = 8;
/// Ended by Ctrl-C (`chat` at its name prompt), as shells report SIGINT.
pub const INTERRUPTED: u8 = 130;
