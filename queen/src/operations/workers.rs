//! Worker operations: spawn, stop and logs go to the hive's agent; list and get read
//! the heartbeat-fed registry; wait_ready waits on it.

use std::net::IpAddr;
use std::time::Duration;

use rbee_config::Hive;
use rbee_hive::{AgentCommand, SpawnRequest};
use rbee_protocol::agent::HiveWorker;
use rbee_protocol::{
    ErrorCode, ErrorDetail, JobEvent, KeepAlive, Level, OperationResult, Progress, validate,
};

use super::agent::answer_as;
use super::fan_out::{HostContext, HostDone};
use super::hive_client::{HiveClient, no_usable_agent};
use super::{JobContext, OpResult};
use crate::workers::WorkerView;

/// Seconds a stopping worker may drain before it is killed.
const STOP_TIMEOUT_S: u64 = 15;

pub async fn list(ctx: &JobContext, hive: Option<&str>) -> OpResult {
    let workers: Vec<WorkerView> = ctx
        .state
        .workers
        .list()
        .into_iter()
        .filter(|w| hive.is_none_or(|h| h == "all" || w.heartbeat.hive_id == h))
        .collect();
    ctx.result(OperationResult::Workers(workers));
    Ok(())
}

pub async fn get(ctx: &JobContext, worker_id: &str) -> OpResult {
    let worker = ctx
        .state
        .workers
        .get(worker_id)
        .ok_or_else(|| unknown_worker(worker_id))?;
    ctx.result(OperationResult::Worker(worker));
    Ok(())
}

fn unknown_worker(worker_id: &str) -> ErrorDetail {
    ErrorDetail::new(ErrorCode::NotFound, format!("no worker {worker_id}"))
        .with_hint("`rbee-keeper worker list` shows the workers the queen knows")
}

/// The one hive `pattern` names.
fn one_hive(ctx: &JobContext, pattern: &str) -> Result<Hive, ErrorDetail> {
    let inventory = ctx.state.inventory();
    let hives = inventory.select(pattern).map_err(|e| {
        let detail = ErrorDetail::new(ErrorCode::NotFound, e.to_string());
        match e.hint() {
            Some(hint) => detail.with_hint(hint),
            None => detail,
        }
    })?;
    match hives.as_slice() {
        [hive] => Ok((*hive).clone()),
        several => Err(ErrorDetail::new(
            ErrorCode::BadRequest,
            format!(
                "{pattern} names {} hives; a worker runs on one",
                several.len()
            ),
        )
        .with_hint(format!(
            "name one of: {}",
            several
                .iter()
                .map(|h| h.alias.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn host_context(ctx: &JobContext, hive: Hive) -> HostContext {
    HostContext {
        job: ctx.clone(),
        hive,
    }
}

/// The hive a worker runs on: from its heartbeats.
fn hive_of(ctx: &JobContext, worker_id: &str) -> Result<Hive, ErrorDetail> {
    let worker = ctx
        .state
        .workers
        .get(worker_id)
        .ok_or_else(|| unknown_worker(worker_id))?;
    one_hive(ctx, &worker.heartbeat.hive_id)
}

/// A worker's sequence slots and context, as asked for (the worker's defaults where
/// `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slots {
    pub parallel: Option<u32>,
    pub ctx_size: Option<u32>,
}

pub async fn spawn(
    ctx: &JobContext,
    pattern: &str,
    model: &str,
    device: &str,
    slots: Slots,
    keep_alive: Option<KeepAlive>,
) -> OpResult {
    let hive = one_hive(ctx, pattern)?;
    let worker = spawn_on(ctx, &hive, model, device, slots).await?;
    // Started by hand: pinned unless given a keep_alive.
    ctx.state
        .workers
        .lease(&worker.heartbeat.worker_id, keep_alive);
    ctx.result(OperationResult::Worker(worker));
    Ok(())
}

/// Starts a worker for `model` on `device` of `hive` and returns once it is ready and
/// its heartbeats reach this queen.
pub async fn spawn_on(
    ctx: &JobContext,
    hive: &Hive,
    model: &str,
    device: &str,
    slots: Slots,
) -> Result<WorkerView, ErrorDetail> {
    if !validate::is_valid_model_id(model) {
        return Err(ErrorDetail::new(
            ErrorCode::BadRequest,
            format!("{model:?} is not a valid model id"),
        )
        .with_hint("name a model as `org/repo`, `org/repo:file.gguf` or a file name"));
    }
    let host = host_context(ctx, hive.clone());
    let seen = if HiveClient::new(&host).in_process() {
        None
    } else {
        HiveClient::new(&host).queen_address_seen().await?
    };
    let queen_url = queen_url_for(ctx, hive, seen)?;
    let worker_id = new_worker_id(&hive.alias);
    let config = &ctx.state.config.queen;
    let request = SpawnRequest {
        worker_id: worker_id.clone(),
        model: model.to_owned(),
        device: device.to_owned(),
        queen_url: queen_url.clone(),
        bind: var(hive, "worker_bind").unwrap_or_else(|| {
            if hive.is_localhost() {
                "127.0.0.1".to_owned()
            } else {
                "0.0.0.0".to_owned()
            }
        }),
        advertise_host: var(hive, "worker_host").unwrap_or_else(|| hive.host.clone()),
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        parallel: slots.parallel,
        ctx_size: slots.ctx_size,
        token: Some(ctx.state.worker_token(&worker_id)),
    };
    ctx.narrate(
        "worker_spawn",
        &worker_id,
        format!(
            "spawning worker {worker_id} on {} ({device}) for {model}",
            hive.alias
        ),
    );
    let mut changed = ctx.state.workers.subscribe();
    let answer = HiveClient::new(&host)
        .call(AgentCommand::WorkerSpawn(Box::new(request)))
        .await?;
    let spawned = answer_as!(answer, SpawnedWorker, "worker-spawn")?;
    // Ready on the hive is not enough: the queen must hear the worker to use it.
    let patience =
        Duration::from_millis(config.heartbeat_interval_ms * 3).max(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        changed.borrow_and_update();
        if let Some(view) = ctx.state.workers.get(&worker_id)
            && view.is_schedulable()
        {
            return Ok(view);
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return Err(ErrorDetail::new(
                ErrorCode::Unreachable,
                format!(
                    "worker {worker_id} is ready on {} at {}, but its heartbeats do not reach the queen at {queen_url}",
                    hive.alias, spawned.record.url
                ),
            )
            .with_hint(format!(
                "the hive must reach {queen_url}: check firewalls, or set the hive's `queen_url` var; `rbee-keeper worker logs {worker_id}` shows the worker's side"
            )));
        }
    }
}

/// A hive var that is a string.
fn var(hive: &Hive, name: &str) -> Option<String> {
    hive.vars
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn new_worker_id(alias: &str) -> String {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let prefix: String = alias.chars().take(48).collect();
    format!("{prefix}-w{suffix}")
}

/// The URL a worker on `hive` reaches this queen at: the hive's `queen_url` var, else
/// the queen's own address as the hive sees it.
fn queen_url_for(
    ctx: &JobContext,
    hive: &Hive,
    seen: Option<IpAddr>,
) -> Result<String, ErrorDetail> {
    if let Some(url) = var(hive, "queen_url") {
        return Ok(url);
    }
    let listen = ctx.state.listen_addr();
    let port = listen.port();
    let ip = listen.ip();
    let url = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    };
    if hive.is_localhost() {
        let ip = if ip.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        };
        return Ok(url(ip));
    }
    if ip.is_loopback() {
        return Err(ErrorDetail::new(
            ErrorCode::Unreachable,
            format!(
                "the queen listens on {listen} only, which workers on {} cannot reach",
                hive.alias
            ),
        )
        .with_hint(
            "set bind_addr = \"0.0.0.0\" and an api_token under [queen] in config.toml (or RBEE_BIND_ADDR and RBEE_API_TOKEN), or give the hive a `queen_url` var",
        ));
    }
    if !ip.is_unspecified() {
        return Ok(url(ip));
    }
    match seen {
        Some(seen) => Ok(url(seen)),
        None => Err(ErrorDetail::new(
            ErrorCode::BadRequest,
            format!(
                "cannot tell which address {} reaches the queen at (it is behind a jump host)",
                hive.alias
            ),
        )
        .with_hint("give the hive a `queen_url` var in the inventory")),
    }
}

pub async fn stop(ctx: &JobContext, worker_id: &str) -> OpResult {
    let hive = hive_of(ctx, worker_id)?;
    let host = host_context(ctx, hive);
    let answer = HiveClient::new(&host)
        .call(AgentCommand::WorkerStop {
            worker_id: worker_id.to_owned(),
            timeout_s: STOP_TIMEOUT_S,
        })
        .await?;
    ctx.state.workers.remove(worker_id);
    ctx.result(answer);
    Ok(())
}

/// How often the queen looks for workers idle past their keep_alive.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Unloads workers idle past their keep_alive, for as long as the queen runs: each as
/// a `worker_stop` job (so the job list and the dashboard show it, with the reason),
/// logged in the queen's log. A stop that fails gives the worker back to scheduling.
pub async fn unload_idle(state: std::sync::Arc<crate::state::AppState>) {
    let mut tick = tokio::time::interval(IDLE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (worker, idle_for) in state.workers.take_idle(std::time::Instant::now()) {
            let id = worker.heartbeat.worker_id.clone();
            let reason = format!(
                "unloading worker {id} ({} on {}): no request for {:.1}s (keep_alive {})",
                worker.heartbeat.model,
                worker.heartbeat.hive_id,
                idle_for.as_secs_f64(),
                state
                    .workers
                    .idle_limit(&id)
                    .map_or_else(|| "-1".to_owned(), |d| KeepAlive::For(d).to_string()),
            );
            tracing::info!(worker_id = %id, model = %worker.heartbeat.model, "{reason}");
            let job = super::spawn(
                state.clone(),
                rbee_protocol::Operation::WorkerStop {
                    worker_id: id.clone(),
                },
            );
            job.emit(rbee_protocol::JobEvent::narration(
                "queen", "unload", &id, reason,
            ));
            let state = state.clone();
            tokio::spawn(async move {
                use futures::StreamExt;
                let mut events = Box::pin(job.subscribe(0));
                while let Some((_, event)) = events.next().await {
                    match event {
                        rbee_protocol::JobEvent::Done => return,
                        rbee_protocol::JobEvent::Error(error) => {
                            tracing::warn!(worker_id = %id, "unloading failed: {}", error.message);
                            state.workers.keep(&id);
                            return;
                        }
                        rbee_protocol::JobEvent::Cancelled { .. } => {
                            state.workers.keep(&id);
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    }
}

/// Stops a worker through its hive without reporting the agent's answer as a result
/// of the job (an eviction inside a request's job); forgets it once stopped.
pub(super) async fn stop_quietly(ctx: &JobContext, worker_id: &str) -> Result<(), ErrorDetail> {
    let hive = hive_of(ctx, worker_id)?;
    let host = host_context(ctx, hive).quiet();
    HiveClient::new(&host)
        .call(AgentCommand::WorkerStop {
            worker_id: worker_id.to_owned(),
            timeout_s: STOP_TIMEOUT_S,
        })
        .await?;
    ctx.state.workers.remove(worker_id);
    Ok(())
}

pub async fn logs(ctx: &JobContext, worker_id: &str, lines: u32, follow: bool) -> OpResult {
    let hive = hive_of(ctx, worker_id)?;
    let host = host_context(ctx, hive);
    let answer = HiveClient::new(&host)
        .call(AgentCommand::WorkerLogs {
            worker_id: worker_id.to_owned(),
            lines,
            follow,
        })
        .await?;
    ctx.result(answer);
    Ok(())
}

/// Stops every worker the hive's agent knows (for `hive stop`); returns how many ran.
pub async fn stop_all_on(host: &HostContext) -> Result<usize, ErrorDetail> {
    let running = running_on(host).await?;
    let count = running.len();
    stop_these(host, running).await?;
    Ok(count)
}

/// The workers whose processes run on the hive, oldest first.
pub(super) async fn running_on(host: &HostContext) -> Result<Vec<HiveWorker>, ErrorDetail> {
    let answer = HiveClient::new(host).call(AgentCommand::WorkerList).await?;
    let workers = answer_as!(answer, HiveWorkers, "worker-list")?;
    let mut running: Vec<HiveWorker> = workers.into_iter().filter(|w| w.alive).collect();
    running.sort_by_key(|w| w.record.started_unix_s);
    Ok(running)
}

async fn stop_these(host: &HostContext, workers: Vec<HiveWorker>) -> Result<(), ErrorDetail> {
    for worker in workers {
        let id = worker.record.worker_id;
        host.narrate(Level::Info, "worker_stop", format!("stopping worker {id}"));
        HiveClient::new(host)
            .call(AgentCommand::WorkerStop {
                worker_id: id.clone(),
                timeout_s: STOP_TIMEOUT_S,
            })
            .await?;
        host.job.state.workers.remove(&id);
    }
    Ok(())
}

/// Whether a worker the hive runs was spawned for `model` (as named, or its file).
fn runs_model(worker: &HiveWorker, model: &str) -> bool {
    let file = std::path::Path::new(&worker.record.model_path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    worker.record.model == model || file == model || file.strip_suffix(".gguf") == Some(model)
}

/// Spawns or stops workers until `count` run `model` on `device` of the hive (the
/// newest go first); with `check`, only says what it would do.
pub(super) async fn ensure_on(
    host: &HostContext,
    model: &str,
    device: &str,
    count: usize,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    let running = match running_on(host).await {
        Ok(running) => running,
        Err(e) if check && no_usable_agent(&e) => {
            return Ok(HostDone::changed(format!(
                "would spawn {count} worker(s) for {model} on {device} (no agent on the hive yet)"
            )));
        }
        Err(e) => return Err(e),
    };
    let mut matching: Vec<HiveWorker> = running
        .into_iter()
        .filter(|w| w.record.device == device && runs_model(w, model))
        .collect();
    let have = matching.len();
    if have == count {
        return Ok(HostDone::ok(format!(
            "{have} worker(s) run {model} on {device}"
        )));
    }
    if have > count {
        let extra = matching.split_off(count);
        let ids: Vec<String> = extra.iter().map(|w| w.record.worker_id.clone()).collect();
        if check {
            return Ok(HostDone::changed(format!("would stop {}", ids.join(", "))));
        }
        stop_these(host, extra).await?;
        return Ok(HostDone::changed(format!(
            "stopped {}; {count} worker(s) run {model} on {device}",
            ids.join(", ")
        )));
    }
    let missing = count - have;
    if check {
        return Ok(HostDone::changed(format!(
            "would spawn {missing} worker(s) for {model} on {device} ({have} run)"
        )));
    }
    let mut spawned = Vec::new();
    for _ in 0..missing {
        let view = spawn_on(&host.job, &host.hive, model, device, Slots::default()).await?;
        spawned.push(view.heartbeat.worker_id);
    }
    Ok(HostDone::changed(format!(
        "spawned {}; {count} worker(s) run {model} on {device}",
        spawned.join(", ")
    )))
}

/// Stops the hive's workers (those running `model`, when given).
pub(super) async fn stop_on(
    host: &HostContext,
    model: Option<&str>,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    let running = match running_on(host).await {
        Ok(running) => running,
        Err(e) if check && no_usable_agent(&e) => {
            return Ok(HostDone::ok("no agent on the hive; no workers"));
        }
        Err(e) => return Err(e),
    };
    let chosen: Vec<HiveWorker> = running
        .into_iter()
        .filter(|w| model.is_none_or(|m| runs_model(w, m)))
        .collect();
    if chosen.is_empty() {
        return Ok(HostDone::ok("no worker to stop"));
    }
    let ids: Vec<String> = chosen.iter().map(|w| w.record.worker_id.clone()).collect();
    if check {
        return Ok(HostDone::changed(format!("would stop {}", ids.join(", "))));
    }
    stop_these(host, chosen).await?;
    Ok(HostDone::changed(format!("stopped {}", ids.join(", "))))
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
    let worker = wait_for(ctx, model, hive, timeout_s).await?;
    ctx.narrate(
        "wait_ready",
        &worker.heartbeat.worker_id,
        format!(
            "worker {} is ready at {}",
            worker.heartbeat.worker_id, worker.heartbeat.url
        ),
    );
    ctx.result(OperationResult::Worker(worker));
    Ok(())
}

/// The first schedulable worker serving `model` (on `hive`, when given), waiting up to
/// `timeout_s` for one.
pub(super) async fn wait_for(
    ctx: &JobContext,
    model: &str,
    hive: Option<&str>,
    timeout_s: u64,
) -> Result<WorkerView, ErrorDetail> {
    let where_ = hive.map(|h| format!(" on {h}")).unwrap_or_default();
    let mut changed = ctx.state.workers.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    // The load percent last shown for each loading worker.
    let mut shown: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    loop {
        changed.borrow_and_update();
        let candidates: Vec<WorkerView> = ctx
            .state
            .workers
            .list()
            .into_iter()
            .filter(|w| w.serves(model) && hive.is_none_or(|h| w.heartbeat.hive_id == h))
            .collect();
        if let Some(worker) = candidates.iter().find(|w| w.is_schedulable()) {
            return Ok(worker.clone());
        }
        for worker in &candidates {
            let beat = &worker.heartbeat;
            if let Some(percent) = beat.load_percent
                && shown.insert(beat.worker_id.clone(), percent) != Some(percent)
            {
                ctx.emit(JobEvent::Progress(Progress {
                    label: format!("loading {model} ({})", beat.worker_id),
                    current: u64::from(percent),
                    total: Some(100),
                    unit: "%".to_owned(),
                    rate: None,
                    eta_s: None,
                    hive: Some(beat.hive_id.clone()),
                }));
            }
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
