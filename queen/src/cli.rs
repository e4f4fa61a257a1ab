//! The daemon's command line: flags over environment over config file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use rbee_config::{Config, Inventory};

use crate::state::AppState;

#[derive(Parser, Debug)]
#[command(name = "queen-rbee", version, about = "The rbee queen daemon")]
pub struct Args {
    /// config.toml to read (default: ~/.config/rbee/config.toml).
    #[arg(long, env = "RBEE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Inventory to read (default: the config's, else ~/.config/rbee/inventory.toml).
    #[arg(long, env = "RBEE_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Port to listen on (0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind; anything but loopback requires an API token.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "RBEE_LOG_JSON")]
    pub log_json: bool,
}

pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RBEE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Loads configuration and inventory, binds, and serves until SIGTERM, SIGINT or
/// `POST /v1/shutdown`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    if let Some(port) = args.port {
        config.queen.port = port;
    }
    if let Some(bind) = args.bind {
        config.queen.bind_addr = bind;
    }
    if let Some(inventory) = args.inventory {
        config.queen.inventory = Some(inventory);
    }
    check_bind_is_protected(&config)?;
    let inventory_path = config.inventory_path();
    let inventory = Inventory::load(&inventory_path, config.queen.inventory.is_some())
        .with_context(|| format!("loading the inventory {}", inventory_path.display()))?;

    let addr = std::net::SocketAddr::new(config.queen.bind_addr, config.queen.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; is another queen running? (`rbee-keeper queen status`)")
    })?;
    let state = Arc::new(AppState::new(config, inventory)?);
    let signals = state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, shutting down");
        signals.cancel();
    });
    crate::serve(listener, state).await
}

/// The queen listens on loopback unless an API token protects it.
fn check_bind_is_protected(config: &Config) -> anyhow::Result<()> {
    if !config.queen.bind_addr.is_loopback() && config.queen.api_token.is_none() {
        bail!(
            "refusing to listen on {} without an API token\nhint: set `api_token` under \
             [queen] in config.toml or RBEE_API_TOKEN in the environment, or bind 127.0.0.1",
            config.queen.bind_addr
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the queen still stops through /v1/shutdown.
            std::future::pending::<()>().await;
        }
    }
}
