//! The `llm-worker-rbee` binary: parses arguments, sets up logging and runs the worker
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use llm_worker_rbee::cli::{Args, PlanArgs};

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "plan")
    {
        return plan(PlanArgs::parse_from(std::env::args_os().skip(1)));
    }
    let args = Args::parse();
    // SAFETY: the first thing the worker does; no other thread runs yet.
    unsafe { args.gpu_matmul.configure(args.device) };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the engine the model would run on, or why it would be refused; fails only
/// when it cannot say.
fn plan(args: PlanArgs) -> ExitCode {
    let answer = match llm_worker_rbee::model::plan(
        &args.model,
        args.device == llm_worker_rbee::device::DeviceSpec::Cpu,
        args.engine,
    ) {
        Ok(engine) => serde_json::json!({ "engine": engine }),
        Err(refused) => serde_json::json!({ "refused": refused.to_string() }),
    };
    println!("{answer}");
    ExitCode::SUCCESS
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        llm_worker_rbee::run(config, shutdown).await?;
        Ok(())
    })
}

/// Completes on SIGTERM (how spawners stop workers) or SIGINT (Ctrl-C).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
