//! Running a playbook, as Ansible runs one: plays in order; each play's hives in
//! rolling batches (`serial`); tasks in step across a batch (`linear`) or at each
//! hive's own pace (`free`). Every task reports ok / changed / failed / unreachable /
//! skipped per hive as it happens; a hive that fails leaves the rest of the run; a
//! batch that fails more than `max_fail_percentage` aborts it. The run ends with the
//! recap as the job's result, and fails when any hive did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rbee_config::playbook::{Play, Resolved, Strategy, Task};
use rbee_config::{Hive, Playbook};
use rbee_protocol::result::{PlayTally, PlaybookRecap, TaskOutcome, TaskStatus};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, Level, OperationResult};
use tokio::sync::OnceCell;

use super::binaries::Binaries;
use super::fan_out::{HostContext, HostDone, is_unreachable, within};
use super::hive_client::HiveClient;
use super::models::PushFile;
use super::{JobContext, OpResult, hives, models, workers};

/// One `play` job: the options and what the run has learnt so far.
struct Run<'a> {
    ctx: &'a JobContext,
    check: bool,
    /// Where relative paths in the playbook start: the playbook's directory.
    dir: Option<PathBuf>,
    binaries: OnceCell<Result<Arc<Binaries>, ErrorDetail>>,
    push_files: tokio::sync::Mutex<HashMap<PathBuf, Arc<PushFile>>>,
    tally: Mutex<BTreeMap<String, PlayTally>>,
    /// Hives that failed or were unreachable: out of the rest of the run.
    dropped: Mutex<BTreeSet<String>>,
}

pub async fn run(
    ctx: &JobContext,
    name: &str,
    content: &str,
    check: bool,
    limit: Option<&str>,
    dir: Option<&str>,
) -> OpResult {
    let book = Playbook::parse(Path::new(name), content)
        .map_err(|e| ErrorDetail::new(ErrorCode::BadRequest, e.to_string()).with_hint(e.hint()))?;
    let inventory = ctx.state.inventory();
    let limit: Option<BTreeSet<String>> = match limit {
        None => None,
        Some(pattern) => Some(
            inventory
                .select(pattern)
                .map_err(|e| {
                    ErrorDetail::new(ErrorCode::NotFound, format!("--limit: {e}"))
                        .with_hint(e.hint().unwrap_or_default())
                })?
                .into_iter()
                .map(|h| h.alias.clone())
                .collect(),
        ),
    };
    let run = Run {
        ctx,
        check,
        dir: dir.map(PathBuf::from),
        binaries: OnceCell::new(),
        push_files: Default::default(),
        tally: Default::default(),
        dropped: Default::default(),
    };
    let mut aborted = None;
    'plays: for play in &book.plays {
        let selected: Vec<Hive> = match inventory.select(&play.hosts) {
            Ok(hives) => hives.into_iter().cloned().collect(),
            Err(e) => {
                ctx.emit(JobEvent::narration(
                    "queen",
                    "play",
                    &play.name,
                    format!("PLAY [{}]: {e}; skipping the play", play.name),
                ));
                continue;
            }
        };
        let hosts: Vec<Hive> = selected
            .into_iter()
            .filter(|h| limit.as_ref().is_none_or(|l| l.contains(&h.alias)))
            .filter(|h| !run.is_dropped(&h.alias))
            .collect();
        ctx.narrate(
            "play",
            &play.name,
            format!(
                "PLAY [{}] on {} hive(s){}{}",
                play.name,
                hosts.len(),
                play.serial
                    .map(|s| format!(", batches of {}", s.batch_size(hosts.len())))
                    .unwrap_or_default(),
                if check {
                    " (check mode: nothing changes)"
                } else {
                    ""
                }
            ),
        );
        if hosts.is_empty() {
            continue;
        }
        let batch_size = play
            .serial
            .map_or(hosts.len(), |s| s.batch_size(hosts.len()));
        for batch in hosts.chunks(batch_size) {
            let failed = match play.strategy {
                Strategy::Linear => run.linear(play, batch).await,
                Strategy::Free => run.free(play, batch).await,
            };
            if failed == 0 {
                continue;
            }
            let over_limit = play
                .max_fail_percentage
                .is_some_and(|max| failed * 100 > usize::from(max) * batch.len());
            if over_limit || failed == batch.len() {
                let why = if over_limit {
                    format!(
                        "{failed} of {} hive(s) in the batch failed, over max_fail_percentage {}",
                        batch.len(),
                        play.max_fail_percentage.unwrap_or_default()
                    )
                } else {
                    format!("every hive of the batch failed ({failed})")
                };
                ctx.emit(JobEvent::Narration(rbee_protocol::Narration {
                    actor: "queen".to_owned(),
                    action: "play".to_owned(),
                    target: play.name.clone(),
                    human: format!("PLAY [{}] aborted: {why}", play.name),
                    level: Level::Error,
                    hive: None,
                }));
                aborted = Some(format!("play {:?} aborted: {why}", play.name));
                break 'plays;
            }
        }
    }
    run.finish(aborted)
}

impl Run<'_> {
    fn is_dropped(&self, alias: &str) -> bool {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(alias)
    }

    fn forks(&self) -> usize {
        self.ctx.state.config.queen.forks.max(1)
    }

    /// Each task on every hive of the batch still in the run, then the next task.
    /// Returns how many hives of the batch failed.
    async fn linear(&self, play: &Play, batch: &[Hive]) -> usize {
        let mut active: Vec<&Hive> = batch.iter().collect();
        for task in &play.tasks {
            if active.is_empty() {
                break;
            }
            self.ctx
                .narrate("task", &task.name, format!("TASK [{}]", task.name));
            // Owned hives: a closure over borrowed ones is not `Send` for every lifetime.
            let hives: Vec<Hive> = active.iter().map(|h| (*h).clone()).collect();
            let outcomes: Vec<(String, TaskStatus)> = futures::stream::iter(hives)
                .map(|hive| async move {
                    let status = self.task(play, task, &hive).await;
                    (hive.alias, status)
                })
                .buffer_unordered(self.forks())
                .collect()
                .await;
            let failed: BTreeSet<String> = outcomes
                .into_iter()
                .filter(|(_, s)| matches!(s, TaskStatus::Failed | TaskStatus::Unreachable))
                .map(|(alias, _)| alias)
                .collect();
            active.retain(|h| !failed.contains(&h.alias));
        }
        batch.len() - active.len()
    }

    /// Every hive of the batch through all tasks at its own pace.
    async fn free(&self, play: &Play, batch: &[Hive]) -> usize {
        let outcomes: Vec<bool> = futures::stream::iter(batch.to_vec())
            .map(|hive| async move {
                for task in &play.tasks {
                    let status = self.task(play, task, &hive).await;
                    if matches!(status, TaskStatus::Failed | TaskStatus::Unreachable) {
                        return false;
                    }
                }
                true
            })
            .buffer_unordered(self.forks())
            .collect()
            .await;
        outcomes.into_iter().filter(|ok| !ok).count()
    }

    /// The vars a task on `hive` sees: the hive's, under the play's, plus the names
    /// Ansible gives every host.
    fn vars(play: &Play, hive: &Hive) -> toml::Table {
        let mut vars = hive.vars.clone();
        vars.extend(play.vars.clone());
        vars.insert("inventory_hostname".into(), hive.alias.clone().into());
        vars.insert("host".into(), hive.host.clone().into());
        vars.insert(
            "group_names".into(),
            toml::Value::Array(hive.groups.iter().map(|g| g.clone().into()).collect()),
        );
        vars
    }

    /// Runs one task on one hive, with its condition, retries and deadline, and
    /// reports the outcome.
    async fn task(&self, play: &Play, task: &Task, hive: &Hive) -> TaskStatus {
        let host = HostContext {
            job: JobContext {
                relay_agent_results: false,
                ..self.ctx.clone()
            },
            hive: hive.clone(),
        };
        let vars = Self::vars(play, hive);
        for condition in &task.when {
            match condition.holds(&vars) {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!("when {:?} is false", condition.text());
                    return self.report(play, task, hive, TaskStatus::Skipped, &message);
                }
                Err(e) => return self.report(play, task, hive, TaskStatus::Failed, &e),
            }
        }
        let action = match task.action.resolve(&vars) {
            Ok(action) => action,
            Err(e) => return self.report(play, task, hive, TaskStatus::Failed, &e),
        };
        if self.check && matches!(action, Resolved::WaitReady { .. } | Resolved::HiveRefresh) {
            return self.report(
                play,
                task,
                hive,
                TaskStatus::Skipped,
                "not run in check mode",
            );
        }
        let deadline = task.timeout.or_else(|| self.default_deadline(&action));
        let attempts = task.retries.saturating_add(1);
        let mut attempt = 1;
        let error = loop {
            match within(&host, deadline, self.execute(&host, &action)).await {
                Ok(done) => {
                    let status = if done.changed {
                        TaskStatus::Changed
                    } else {
                        TaskStatus::Ok
                    };
                    return self.report(play, task, hive, status, &done.message);
                }
                Err(error) if attempt < attempts => {
                    host.narrate(
                        Level::Warn,
                        "task",
                        format!(
                            "{}: {} (attempt {attempt} of {attempts}; retrying in {}s)",
                            task.name,
                            error.message,
                            task.delay.as_secs()
                        ),
                    );
                    if is_unreachable(error.code) {
                        self.ctx.state.ssh.forget(&hive.alias).await;
                    }
                    tokio::time::sleep(task.delay).await;
                    attempt += 1;
                }
                Err(error) => break error,
            }
        };
        let status = if is_unreachable(error.code) {
            self.ctx.state.ssh.forget(&hive.alias).await;
            TaskStatus::Unreachable
        } else {
            TaskStatus::Failed
        };
        let mut message = error.message;
        if let Some(hint) = error.hint {
            message.push_str(&format!(" (hint: {hint})"));
        }
        self.report(play, task, hive, status, &message)
    }

    /// Quick operations get the queen's operation deadline; transfers and spawns take
    /// as long as their bytes and model loads, and fail on their own when stalled.
    fn default_deadline(&self, action: &Resolved) -> Option<Duration> {
        let operation = Duration::from_secs(self.ctx.state.config.queen.operation_timeout_secs);
        match action {
            Resolved::HiveInstall { .. }
            | Resolved::ModelDownload { .. }
            | Resolved::ModelPush { .. }
            | Resolved::WorkerEnsure { .. } => None,
            Resolved::WaitReady { timeout_s, .. } => {
                Some(Duration::from_secs(*timeout_s) + operation)
            }
            Resolved::HiveStart { .. } | Resolved::HiveRefresh | Resolved::WorkerStop { .. } => {
                Some(operation)
            }
        }
    }

    async fn execute(
        &self,
        host: &HostContext,
        action: &Resolved,
    ) -> Result<HostDone, ErrorDetail> {
        let check = self.check;
        match action {
            Resolved::HiveInstall {
                accept_new_host_keys,
            } => {
                if HiveClient::new(host).in_process() {
                    return hives::install_on(host, None, *accept_new_host_keys, check).await;
                }
                let binaries = self.binaries().await?;
                hives::install_on(host, Some(&binaries), *accept_new_host_keys, check).await
            }
            Resolved::HiveStart {
                accept_new_host_keys,
            } => {
                let binaries = self.binaries().await.ok();
                hives::start_on(host, binaries.as_deref(), *accept_new_host_keys, check).await
            }
            Resolved::HiveRefresh => hives::refresh_on(host).await,
            Resolved::ModelDownload { model } => models::download_on(host, model, check).await,
            Resolved::ModelPush { path } => {
                let file = self.push_file(path).await?;
                models::push_on(host, &file, check).await
            }
            Resolved::WorkerEnsure {
                model,
                device,
                count,
            } => workers::ensure_on(host, model, device, *count, check).await,
            Resolved::WorkerStop { model } => workers::stop_on(host, model.as_deref(), check).await,
            Resolved::WaitReady { model, timeout_s } => {
                let worker =
                    workers::wait_for(self.ctx, model, Some(&host.hive.alias), *timeout_s).await?;
                Ok(HostDone::ok(format!(
                    "worker {} serves {model} at {}",
                    worker.heartbeat.worker_id, worker.heartbeat.url
                )))
            }
        }
    }

    /// The binaries to push, found and hashed once per run.
    async fn binaries(&self) -> Result<Arc<Binaries>, ErrorDetail> {
        self.binaries
            .get_or_init(|| Binaries::find(self.ctx))
            .await
            .clone()
    }

    /// A model file to push, checked and hashed once per run.
    async fn push_file(&self, path: &str) -> Result<Arc<PushFile>, ErrorDetail> {
        let path = match &self.dir {
            Some(dir) if Path::new(path).is_relative() => dir.join(path),
            _ => PathBuf::from(path),
        };
        let mut files = self.push_files.lock().await;
        if let Some(file) = files.get(&path) {
            return Ok(file.clone());
        }
        let file = models::push_file(&path.to_string_lossy()).await?;
        files.insert(path, file.clone());
        Ok(file)
    }

    fn report(
        &self,
        play: &Play,
        task: &Task,
        hive: &Hive,
        status: TaskStatus,
        message: &str,
    ) -> TaskStatus {
        {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            let row = tally
                .entry(hive.alias.clone())
                .or_insert_with(|| PlayTally {
                    hive: hive.alias.clone(),
                    ..PlayTally::default()
                });
            match status {
                TaskStatus::Ok => row.ok += 1,
                TaskStatus::Changed => {
                    row.ok += 1;
                    row.changed += 1;
                }
                TaskStatus::Failed => row.failed += 1,
                TaskStatus::Unreachable => row.unreachable += 1,
                TaskStatus::Skipped => row.skipped += 1,
            }
        }
        if matches!(status, TaskStatus::Failed | TaskStatus::Unreachable) {
            self.dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hive.alias.clone());
        }
        self.ctx.emit(JobEvent::Result {
            hive: Some(hive.alias.clone()),
            result: OperationResult::PlaybookTask(TaskOutcome {
                play: play.name.clone(),
                task: task.name.clone(),
                status,
                message: message.to_owned(),
            }),
        });
        status
    }

    /// Emits the recap and turns failures into the job's error.
    fn finish(self, aborted: Option<String>) -> OpResult {
        let tally = self.tally.into_inner().unwrap_or_else(|p| p.into_inner());
        self.ctx
            .result(OperationResult::PlaybookRecap(PlaybookRecap {
                play_recap: tally.values().cloned().collect(),
                check: self.check,
                aborted: aborted.clone(),
            }));
        let failed: Vec<String> = tally
            .iter()
            .filter(|(_, t)| t.failed + t.unreachable > 0)
            .map(|(hive, t)| {
                format!(
                    "{hive} ({})",
                    if t.failed > 0 {
                        "failed"
                    } else {
                        "unreachable"
                    }
                )
            })
            .collect();
        if failed.is_empty() && aborted.is_none() {
            return Ok(());
        }
        let all_unreachable = tally
            .values()
            .filter(|t| t.failed + t.unreachable > 0)
            .all(|t| t.failed == 0);
        let mut message = if failed.is_empty() {
            "the playbook did not finish".to_owned()
        } else {
            format!("the playbook failed on {}", failed.join(", "))
        };
        if let Some(aborted) = aborted {
            message.push_str(&format!("; {aborted}"));
        }
        Err(ErrorDetail::new(
            if all_unreachable && !failed.is_empty() {
                ErrorCode::Unreachable
            } else {
                ErrorCode::AgentFailed
            },
            message,
        )
        .with_hint("the task lines above say what went wrong on each hive; fix it and run the playbook again (it only changes what is not yet as wanted)"))
    }
}
