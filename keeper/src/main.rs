//! `rbee-keeper`: parses the command line and runs it; the exit code says how it ended.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = rbee_keeper::cli::Cli::parse();
    rbee_keeper::init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rbee_keeper::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {e:#}", console::style("error:").red().bold());
            ExitCode::FAILURE
        }
    }
}
