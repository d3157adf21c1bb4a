//! minichat: a small threaded chat room server and the clients that speak its
//! line protocol (`shared/PROTOCOL.md`, summarised in `docs/protocol.md`).

pub mod cli;
pub mod client;
pub mod cluster;
pub mod discovery;
pub mod exit_codes;
pub mod framing;
pub mod history;
pub mod lan;
pub mod name;
pub mod password;
pub mod paths;
pub mod protocol;
pub mod repl;
pub mod report;
pub mod room;
pub mod send;
pub mod server;
pub mod store;
pub mod tail;
pub mod tls;
