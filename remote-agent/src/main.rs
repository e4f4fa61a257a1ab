//! `rbee-hive`: the hive agent's executable. All behaviour lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(rbee_hive::cli::run(std::env::args_os().skip(1)))
}
