//! The real `rbee-hive` binary run as a process: on its own, and over real SSH on the
//! hosts of `lab/lab.sh`.

mod cli;
mod lab;
mod spawn;
mod support;
