//! `queen-rbee`: the daemon. Parses arguments, sets up logging, runs the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = queen_rbee::cli::Args::parse();
    queen_rbee::cli::init_tracing(args.log_json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(queen_rbee::cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
