//! queen-rbee: the brain of an rbee cluster. An HTTP daemon that holds the inventory,
//! the job, hive and worker registries, drives every hive operation, and schedules
//! inference.
//!
//! [`serve`] takes a bound listener and the shared state, and returns once
//! `state.shutdown` is cancelled and every job has ended, so tests start it
//! in-process on `127.0.0.1:0` and stop it cleanly.

pub mod cli;
pub mod fake_hive;
pub mod hives;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod operations;
pub mod ssh;
pub mod state;
pub mod tokens;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use state::AppState;

/// How long shutdown waits for cancelled jobs to record their end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The cargo features this queen was built with, as `/v1/build-info` reports them.
pub fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "local-hive") {
        features.push("local-hive");
    }
    features
}

/// Serves the queen's API on `listener` until `state.shutdown` is cancelled.
///
/// On shutdown every running job is cancelled and given time to end with its
/// `cancelled` event, so subscribers see a terminal event before the streams close.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // The rule the CLI checks before binding, held here too, so that no way of starting
    // the queen serves its API beyond this machine unprotected.
    if !addr.ip().is_loopback() && state.config.queen.api_token.is_none() {
        anyhow::bail!(
            "refusing to serve on {addr} without an API token\nhint: set `api_token` under \
             [queen] in config.toml or RBEE_API_TOKEN in the environment, or bind 127.0.0.1"
        );
    }
    let _ = state.listen_addr.set(addr);
    tracing::info!(%addr, version = rbee_protocol::VERSION, "queen listening");
    let janitor = tokio::spawn(expire_jobs(state.clone()));
    let unloader = tokio::spawn(operations::unload_idle(state.clone()));
    let router = http::router(state.clone());
    let drain = state.clone();
    // Events are small writes; without TCP_NODELAY a client's delayed ACK holds each
    // burst's tail back by up to 40 ms (Nagle), which a stream's first token shows.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            drain.shutdown.cancelled().await;
            drain.jobs.cancel_all("the queen is shutting down");
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            while drain.jobs.running() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    janitor.abort();
    unloader.abort();
    tracing::info!("queen stopped");
    result.map_err(Into::into)
}

async fn expire_jobs(state: Arc<AppState>) {
    let period = (state.jobs.ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        state.jobs.expire();
    }
}
