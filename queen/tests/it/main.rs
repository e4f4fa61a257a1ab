//! The queen's integration tests: in-process over HTTP, and against real sshd hosts.

mod api;
mod hives;
#[cfg(feature = "local-hive")]
mod local_hive;
mod openai;
mod support;
mod workers;
