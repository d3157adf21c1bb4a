//! The integration tests: real chatd processes, real sockets, real signals.

mod util;

mod server_protocol;
