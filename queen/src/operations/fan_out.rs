//! Running one operation on many hives at once, Ansible-style: a host that is
//! unreachable or fails never delays or fails the others, and the run ends with a
//! per-host recap.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use rbee_config::Hive;
use rbee_protocol::result::{HostStatus, RecapRow};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, Level, Narration, OperationResult};

use super::{JobContext, OpResult};

/// A hive's part of a fan-out, with helpers that tag its events with the hive.
#[derive(Clone)]
pub struct HostContext {
    pub job: JobContext,
    pub hive: Hive,
}

impl HostContext {
    /// The same host and job, with the agents' answers kept from the job's `result`
    /// events: for a step whose answer is the operation's own business.
    pub fn quiet(&self) -> HostContext {
        HostContext {
            job: JobContext {
                relay_agent_results: false,
                ..self.job.clone()
            },
            hive: self.hive.clone(),
        }
    }

    pub fn narrate(&self, level: Level, action: &str, human: impl Into<String>) {
        self.job.emit(JobEvent::Narration(Narration {
            actor: "queen".to_owned(),
            action: action.to_owned(),
            target: self.hive.alias.clone(),
            human: human.into(),
            level,
            hive: Some(self.hive.alias.clone()),
        }));
    }
}

/// A hive's success: whether something changed, and a one-line account.
pub struct HostDone {
    pub changed: bool,
    pub message: String,
}

impl HostDone {
    pub fn ok(message: impl Into<String>) -> Self {
        HostDone {
            changed: false,
            message: message.into(),
        }
    }

    pub fn changed(message: impl Into<String>) -> Self {
        HostDone {
            changed: true,
            message: message.into(),
        }
    }
}

/// Runs one hive's work within `deadline` (none: as long as it takes). A hive that
/// misses it is unreachable, and its pooled connection is dropped.
pub async fn within<Fut>(
    host: &HostContext,
    deadline: Option<Duration>,
    work: Fut,
) -> Result<HostDone, ErrorDetail>
where
    Fut: Future<Output = Result<HostDone, ErrorDetail>>,
{
    let Some(deadline) = deadline else {
        return work.await;
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // A connection that let an operation hang (a cut link) is not trusted
            // again: the next operation connects afresh.
            host.job.state.ssh.forget(&host.hive.alias).await;
            Err(ErrorDetail::new(
                ErrorCode::Unreachable,
                format!("no answer within the {}s deadline", deadline.as_secs()),
            ))
        }
    }
}

pub fn is_unreachable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unreachable
            | ErrorCode::HostKeyUnknown
            | ErrorCode::HostKeyChanged
            | ErrorCode::Timeout
    )
}

/// Runs `per_host` on every hive `pattern` selects, `forks` at a time, each within the
/// operation deadline; emits the recap as the job's result and fails the job when any
/// hive failed.
pub async fn fan_out<F, Fut>(ctx: &JobContext, pattern: &str, action: &str, per_host: F) -> OpResult
where
    F: Fn(HostContext) -> Fut,
    Fut: Future<Output = Result<HostDone, ErrorDetail>>,
{
    let deadline = Duration::from_secs(ctx.state.config.queen.operation_timeout_secs);
    fan_out_within(ctx, pattern, action, Some(deadline), per_host).await
}

/// [`fan_out`] with the per-hive deadline given: `None` for transfers whose length
/// depends on the bytes moved (model downloads and pushes), which report progress and
/// fail on their own when a connection stalls.
pub async fn fan_out_within<F, Fut>(
    ctx: &JobContext,
    pattern: &str,
    action: &str,
    deadline: Option<Duration>,
    per_host: F,
) -> OpResult
where
    F: Fn(HostContext) -> Fut,
    Fut: Future<Output = Result<HostDone, ErrorDetail>>,
{
    let inventory = ctx.state.inventory();
    let hives: Vec<Hive> = inventory
        .select(pattern)
        .map_err(|e| {
            let hint = e.hint();
            let detail = ErrorDetail::new(ErrorCode::NotFound, e.to_string());
            match hint {
                Some(hint) => detail.with_hint(hint),
                None => detail,
            }
        })?
        .into_iter()
        .cloned()
        .collect();
    let forks = ctx.state.config.queen.forks.max(1);
    ctx.narrate(
        action,
        pattern,
        format!(
            "{action} on {} hive(s): {}",
            hives.len(),
            hives
                .iter()
                .map(|h| h.alias.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let runs = hives.into_iter().map(|hive| {
        let host = HostContext {
            job: ctx.clone(),
            hive,
        };
        let work = per_host(host.clone());
        async move {
            let outcome = within(&host, deadline, work).await;

            match outcome {
                Ok(done) => {
                    host.narrate(
                        Level::Info,
                        action,
                        format!(
                            "{}: {}",
                            if done.changed { "changed" } else { "ok" },
                            done.message
                        ),
                    );
                    RecapRow {
                        hive: host.hive.alias.clone(),
                        status: if done.changed {
                            HostStatus::Changed
                        } else {
                            HostStatus::Ok
                        },
                        message: done.message,
                        code: None,
                    }
                }
                Err(error) => {
                    let status = if is_unreachable(error.code) {
                        HostStatus::Unreachable
                    } else {
                        HostStatus::Failed
                    };
                    if status == HostStatus::Unreachable {
                        host.job.state.ssh.forget(&host.hive.alias).await;
                    }
                    let mut message = error.message.clone();
                    if let Some(hint) = &error.hint {
                        message.push_str(&format!(" (hint: {hint})"));
                    }
                    host.narrate(
                        Level::Error,
                        action,
                        format!(
                            "{}: {message}",
                            if status == HostStatus::Failed {
                                "FAILED"
                            } else {
                                "UNREACHABLE"
                            }
                        ),
                    );
                    RecapRow {
                        hive: host.hive.alias.clone(),
                        status,
                        message: error.message,
                        code: Some(error.code),
                    }
                }
            }
        }
    });
    let mut recap: Vec<RecapRow> = futures::stream::iter(runs)
        .buffer_unordered(forks)
        .collect()
        .await;
    recap.sort_by(|a, b| a.hive.cmp(&b.hive));
    ctx.result(OperationResult::Recap(recap.clone()));
    let failed: Vec<&RecapRow> = recap
        .iter()
        .filter(|r| matches!(r.status, HostStatus::Failed | HostStatus::Unreachable))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let codes: Vec<ErrorCode> = failed.iter().filter_map(|r| r.code).collect();
    let code = if codes.contains(&ErrorCode::HostKeyChanged) {
        ErrorCode::HostKeyChanged
    } else if codes.contains(&ErrorCode::HostKeyUnknown) {
        ErrorCode::HostKeyUnknown
    } else if codes.iter().all(|c| is_unreachable(*c)) {
        ErrorCode::Unreachable
    } else {
        ErrorCode::AgentFailed
    };
    let names: Vec<String> = failed
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.hive,
                if r.status == HostStatus::Failed {
                    "failed"
                } else {
                    "unreachable"
                }
            )
        })
        .collect();
    let hint = match code {
        ErrorCode::HostKeyUnknown => {
            "check the fingerprints above; trust them with --accept-new-host-keys"
        }
        ErrorCode::HostKeyChanged => {
            "a host key changed: verify the host before removing its old key from known_hosts"
        }
        _ => "the messages above say what went wrong on each hive",
    };
    Err(ErrorDetail::new(
        code,
        format!(
            "{} of {} hive(s) did not succeed: {}",
            failed.len(),
            recap.len(),
            names.join(", ")
        ),
    )
    .with_hint(hint))
}
