//! Running operations as jobs: one handler per `Operation` variant.
//!
//! [`spawn`] starts a job's task; the handler reports through [`JobContext`] and
//! returns `Ok` (→ `done`) or an error (→ `error`). Cancellation aborts the handler's
//! future, so whatever it holds (SSH channels, HTTP streams) is dropped and closed.

mod agent;
mod binaries;
mod cluster;
mod elf;
mod fan_out;
mod hive_client;
mod hives;
mod inference;
mod inventory;
mod models;
mod playbook;
mod push;
mod runnable;
mod workers;

pub use crate::fake_hive::FakeHive;
pub use inference::{Pins, candidates};
pub use workers::unload_idle;

use std::sync::Arc;

use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, Operation, OperationResult};

use crate::jobs::Job;
use crate::state::AppState;

/// What a handler gets: the queen's state and its job to report to.
#[derive(Clone)]
pub struct JobContext {
    pub state: Arc<AppState>,
    pub job: Arc<Job>,
    /// Whether the agents' answers reach the job as `result` events with their hive
    /// (a playbook reports its own per-task outcomes instead).
    pub relay_agent_results: bool,
}

impl JobContext {
    pub fn emit(&self, event: JobEvent) {
        self.job.emit(event);
    }

    pub fn narrate(&self, action: &str, target: &str, human: impl Into<String>) {
        self.emit(JobEvent::narration("queen", action, target, human));
    }

    pub fn result(&self, result: OperationResult) {
        self.emit(JobEvent::Result { hive: None, result });
    }
}

pub type OpResult = Result<(), ErrorDetail>;

/// Registers a job for `operation` and runs it in the background.
pub fn spawn(state: Arc<AppState>, operation: Operation) -> Arc<Job> {
    let job = state.jobs.create(operation.name());
    let ctx = JobContext {
        state,
        job: job.clone(),
        relay_agent_results: true,
    };
    tracing::info!(job_id = %job.id, operation = operation.name(), "job submitted");
    let ctx_state = ctx.state.clone();
    tokio::spawn(async move {
        let job = ctx.job.clone();
        let mut handler = tokio::spawn(execute(ctx, operation));
        let outcome = tokio::select! {
            joined = &mut handler => match joined {
                Ok(Ok(())) => JobEvent::Done,
                Ok(Err(error)) => JobEvent::Error(error),
                Err(panic) => JobEvent::Error(ErrorDetail::new(
                    ErrorCode::Internal,
                    format!("the operation failed unexpectedly: {panic}"),
                ).with_hint("this is a bug in queen-rbee; the queen's log has details")),
            },
            () = job.cancellation().cancelled() => {
                handler.abort();
                JobEvent::Cancelled { reason: job.cancel_reason() }
            }
        };
        tracing::info!(job_id = %job.id, outcome = outcome.kind(), "job ended");
        ctx_state
            .metrics
            .job_finished(job.operation, outcome.kind());
        job.emit(outcome);
    });
    job
}

async fn execute(ctx: JobContext, operation: Operation) -> OpResult {
    match operation {
        Operation::Status => cluster::status(&ctx).await,
        Operation::InventoryList => cluster::inventory_list(&ctx).await,
        Operation::HiveInstall {
            hive_id,
            accept_new_host_keys,
        } => hives::install(&ctx, &hive_id, accept_new_host_keys).await,
        Operation::HiveStart {
            hive_id,
            accept_new_host_keys,
        } => hives::start(&ctx, &hive_id, accept_new_host_keys).await,
        Operation::HiveStop { hive_id } => hives::stop(&ctx, &hive_id).await,
        Operation::HiveStatus { hive_id } => hives::status(&ctx, &hive_id).await,
        Operation::HiveRefresh { hive_id } => hives::refresh(&ctx, &hive_id).await,
        Operation::HiveUninstall { hive_id } => hives::uninstall(&ctx, &hive_id).await,
        Operation::HiveProbe {
            alias,
            hive,
            accept_new_host_keys,
        } => inventory::probe(&ctx, &alias, &hive, accept_new_host_keys).await,
        Operation::HiveAdd { alias, hive } => inventory::add(&ctx, &alias, &hive).await,
        Operation::HiveRemove { alias } => inventory::remove(&ctx, &alias).await,
        Operation::InventoryReload => inventory::reload(&ctx).await,
        Operation::HiveList => hives::check(&ctx, "all").await,
        Operation::InventoryCheck { hive_id } => hives::check(&ctx, &hive_id).await,
        Operation::Infer {
            model,
            hive_id,
            worker_id,
            spawn,
            keep_alive,
            request,
        } => {
            let pins = inference::Pins {
                hive: hive_id,
                worker: worker_id,
                spawn,
                keep_alive,
            };
            inference::infer(&ctx, &model, &pins, request).await
        }
        Operation::ModelLoad {
            model,
            hive_id,
            keep_alive,
        } => {
            let pins = inference::Pins {
                hive: hive_id,
                keep_alive,
                ..inference::Pins::default()
            };
            inference::load(&ctx, &model, &pins).await
        }
        Operation::WorkerSpawn {
            hive_id,
            model,
            device,
            parallel,
            ctx_size,
            keep_alive,
        } => {
            let slots = workers::Slots { parallel, ctx_size };
            workers::spawn(
                &ctx,
                &hive_id,
                &model,
                &device.to_string(),
                slots,
                keep_alive,
            )
            .await
        }
        Operation::WorkerStop { worker_id } => workers::stop(&ctx, &worker_id).await,
        Operation::WorkerLogs {
            worker_id,
            lines,
            follow,
        } => workers::logs(&ctx, &worker_id, lines, follow).await,
        Operation::WorkerList { hive_id } => workers::list(&ctx, hive_id.as_deref()).await,
        Operation::WorkerGet { worker_id } => workers::get(&ctx, &worker_id).await,
        Operation::WaitReady {
            model,
            hive_id,
            timeout_s,
        } => workers::wait_ready(&ctx, &model, hive_id.as_deref(), timeout_s).await,
        Operation::ModelDownload { hive_id, model } => {
            models::download(&ctx, &hive_id, &model).await
        }
        Operation::ModelPush { hive_id, path } => models::push(&ctx, &hive_id, &path).await,
        Operation::ModelList { hive_id } => models::list(&ctx, &hive_id).await,
        Operation::ModelGet { hive_id, model } => models::get(&ctx, &hive_id, &model).await,
        Operation::ModelDelete { hive_id, model } => models::delete(&ctx, &hive_id, &model).await,
        Operation::PlaybookRun {
            name,
            content,
            check,
            limit,
            dir,
        } => {
            playbook::run(
                &ctx,
                &name,
                &content,
                check,
                limit.as_deref(),
                dir.as_deref(),
            )
            .await
        }
    }
}
