//! The integration tests: real chatd processes, real sockets, real signals.

mod util;

mod chat_repl;
mod clients_connect;
mod clients_pipeline;
mod clients_resume;
mod clients_servers;
mod cluster;
mod cluster_room;
mod discovery;
mod generated_docs;
mod hostile;
mod install;
mod lan;
mod password;

mod server_faults;
mod server_history;
mod server_input;
mod server_protocol;
mod server_room;
mod tls;
