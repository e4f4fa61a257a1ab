//! Worker views from the heartbeat-fed registry, and waiting for readiness.

use std::time::Duration;

use rbee_protocol::{ErrorCode, ErrorDetail};
use serde_json::json;

use super::{JobContext, OpResult};
use crate::workers::WorkerView;

pub async fn list(ctx: &JobContext, hive: Option<&str>) -> OpResult {
    let workers: Vec<WorkerView> = ctx
        .state
        .workers
        .list()
        .into_iter()
        .filter(|w| hive.is_none_or(|h| h == "all" || w.heartbeat.hive_id == h))
        .collect();
    ctx.result(json!(workers));
    Ok(())
}

pub async fn get(ctx: &JobContext, worker_id: &str) -> OpResult {
    match ctx.state.workers.get(worker_id) {
        Some(worker) => {
            ctx.result(json!(worker));
            Ok(())
        }
        None => Err(
            ErrorDetail::new(ErrorCode::NotFound, format!("no worker {worker_id}"))
                .with_hint("`rbee-keeper worker list` shows the workers the queen knows"),
        ),
    }
}

/// Waits until a schedulable worker serves `model` (on `hive`, when given).
pub async fn wait_ready(
    ctx: &JobContext,
    model: &str,
    hive: Option<&str>,
    timeout_s: u64,
) -> OpResult {
    let where_ = hive.map(|h| format!(" on {h}")).unwrap_or_default();
    ctx.narrate(
        "wait_ready",
        model,
        format!("waiting for a ready worker serving {model}{where_}"),
    );
    let mut changed = ctx.state.workers.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    loop {
        changed.borrow_and_update();
        let ready = ctx.state.workers.list().into_iter().find(|w| {
            w.is_schedulable()
                && (w.heartbeat.model == model
                    || w.heartbeat.model.strip_suffix(".gguf") == Some(model))
                && hive.is_none_or(|h| w.heartbeat.hive_id == h)
        });
        if let Some(worker) = ready {
            ctx.narrate(
                "wait_ready",
                &worker.heartbeat.worker_id,
                format!(
                    "worker {} is ready at {}",
                    worker.heartbeat.worker_id, worker.heartbeat.url
                ),
            );
            ctx.result(json!(worker));
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return Err(ErrorDetail::new(
                ErrorCode::Timeout,
                format!("no ready worker serving {model}{where_} after {timeout_s}s"),
            )
            .with_hint(
                "spawn one with `rbee-keeper worker spawn`, or check `rbee-keeper worker list`",
            ));
        }
    }
}
