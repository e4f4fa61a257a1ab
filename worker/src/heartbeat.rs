//! Reports the worker to the queen every interval, from start until the final
//! `stopping` beat.

use std::sync::Arc;
use std::time::Duration;

use rbee_protocol::{WorkerHeartbeat, WorkerState};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::status::{WorkerStatus, resident_memory_bytes};

/// Who this worker is, as the queen's registry knows it.
#[derive(Clone)]
pub struct Identity {
    pub worker_id: String,
    pub hive_id: String,
    pub model: String,
    pub model_file: String,
    pub device: String,
    pub url: String,
}

pub struct Heartbeat {
    pub queen_url: String,
    pub identity: Identity,
    pub interval: Duration,
    pub token: Option<String>,
}

impl Heartbeat {
    /// Beats until `stop` fires, then sends one last beat with the state at that time
    /// (`stopping`). `first_sent` fires after the first attempt, delivered or not.
    pub async fn run(
        self,
        status: Arc<WorkerStatus>,
        stop: CancellationToken,
        first_sent: oneshot::Sender<()>,
    ) {
        let client = match reqwest::Client::builder()
            .timeout(
                self.interval
                    .clamp(Duration::from_millis(500), Duration::from_secs(5)),
            )
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the heartbeat client; sending no heartbeats");
                return;
            }
        };
        let endpoint = format!(
            "{}/v1/worker-heartbeat",
            self.queen_url.trim_end_matches('/')
        );
        let mut first_sent = Some(first_sent);
        let mut failing = false;
        loop {
            let delivered = self.send(&client, &endpoint, &status, None).await;
            // The queen may be restarting; say so once, not every interval.
            if !delivered && !failing {
                tracing::warn!(queen = %self.queen_url, "queen unreachable; heartbeats will keep retrying");
            } else if delivered && failing {
                tracing::info!(queen = %self.queen_url, "queen reachable again");
            }
            failing = !delivered;
            if let Some(sender) = first_sent.take() {
                let _ = sender.send(());
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => break,
            }
        }
        self.send(&client, &endpoint, &status, Some(WorkerState::Stopping))
            .await;
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        status: &WorkerStatus,
        state: Option<WorkerState>,
    ) -> bool {
        let beat = WorkerHeartbeat {
            worker_id: self.identity.worker_id.clone(),
            hive_id: self.identity.hive_id.clone(),
            model: self.identity.model.clone(),
            model_file: Some(self.identity.model_file.clone()),
            device: self.identity.device.clone(),
            url: self.identity.url.clone(),
            state: state.unwrap_or_else(|| status.state()),
            queue_depth: status.queue_depth(),
            slots_total: status.slots().counts().0,
            slots_busy: status.slots().counts().1,
            tokens_generated: status.tokens_generated(),
            memory_bytes: resident_memory_bytes(),
            interval_ms: self.interval.as_millis() as u64,
            pid: Some(std::process::id()),
            load_percent: status.load_percent(),
            engine: status.engine().map(str::to_owned),
        };
        let mut request = client.post(endpoint).json(&beat);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => true,
            Ok(response) => {
                tracing::debug!(status = %response.status(), "queen refused a heartbeat");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat not delivered");
                false
            }
        }
    }
}
