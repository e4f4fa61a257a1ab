//! The queen's integration tests: in-process over HTTP, and against real sshd hosts.

mod api;
mod dashboard;
mod fake_hives;
mod health;
mod hive_wizard;
mod hives;
mod hostile;
mod hub_mirror;
#[cfg(feature = "local-hive")]
mod local_hive;
mod models;
mod on_demand;
mod openai;
mod platforms;
mod playbooks;
mod queen_process;
mod scheduling;
mod support;
mod webdriver;
mod workers;
