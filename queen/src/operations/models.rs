//! Model operations: download from the hub on hives, push from this machine, and the
//! catalog (list, with each hive's platform; get, delete). Each fans out over the hives a pattern selects; the
//! agent does the work on the hive and its events (progress included) are relayed as
//! they arrive.

use std::path::PathBuf;
use std::sync::Arc;

use rbee_hive::AgentCommand;
use rbee_hive::models::ModelCommand;
use rbee_protocol::models::{HubAccess, ModelEntry, ModelTransfer};
use rbee_protocol::platform::Platform;
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, Level, OperationResult, validate};

use super::agent::answer_as;
use super::fan_out::{HostContext, HostDone, fan_out, fan_out_within};
use super::hive_client::{HiveClient, Input, no_usable_agent, unreadable};
use super::{JobContext, OpResult};

/// The inventory variable that points one hive (or a group) at a hub mirror.
const ENDPOINT_VAR: &str = "hf_endpoint";

/// The hub as this hive should reach it: its `hf_endpoint` inventory variable, else
/// the queen's `hf_endpoint` (`HF_ENDPOINT`); the token is the queen's `hf_token`
/// (`HF_TOKEN`), both from the configuration.
fn hub_access(host: &HostContext) -> HubAccess {
    let queen = &host.job.state.config.queen;
    HubAccess {
        endpoint: host
            .hive
            .vars
            .get(ENDPOINT_VAR)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| queen.hf_endpoint.clone()),
        token: queen.hf_token.clone(),
    }
}

fn check_model_id(model: &str) -> Result<(), ErrorDetail> {
    if validate::is_valid_model_id(model) {
        return Ok(());
    }
    Err(ErrorDetail::new(
        ErrorCode::BadRequest,
        format!("`{model}` is not a valid model id"),
    )
    .with_hint("use `org/repo`, `org/repo:file.gguf`, `local:file.gguf` or a file name"))
}

fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn transferred(transfer: ModelTransfer, verb: &str) -> HostDone {
    let verified = if transfer.sha256.is_some() {
        ", sha256 verified"
    } else {
        ""
    };
    if transfer.changed {
        HostDone::changed(format!(
            "{verb} {} ({}{verified})",
            transfer.model.id,
            size(transfer.model.size)
        ))
    } else {
        HostDone::ok(format!(
            "{} already present; nothing transferred",
            transfer.model.id
        ))
    }
}

pub async fn download(ctx: &JobContext, pattern: &str, model: &str) -> OpResult {
    check_model_id(model)?;
    // No deadline: a download takes as long as its bytes; a stalled one fails on the
    // hive (read timeout) and a dead hive with its SSH keepalive.
    fan_out_within(ctx, pattern, "model_download", None, |host| async move {
        download_on(&host, model, false).await
    })
    .await
}

/// Downloads `model` on the hive unless it has it; with `check`, only says whether it
/// would.
pub(super) async fn download_on(
    host: &HostContext,
    model: &str,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    check_model_id(model)?;
    if check {
        let get = AgentCommand::Model(ModelCommand::Get {
            model: model.to_owned(),
        });
        return Ok(match HiveClient::new(host).call(get).await {
            Ok(answer) => {
                let entry = answer_as!(answer, Model, "get")?;
                HostDone::ok(format!("{} already present", entry.id))
            }
            Err(e) if e.code == ErrorCode::ModelNotFound || no_usable_agent(&e) => {
                HostDone::changed(format!("would download {model}"))
            }
            Err(e) => return Err(e),
        });
    }
    let access = hub_access(host);
    let command = AgentCommand::Model(ModelCommand::Download {
        model: model.to_owned(),
        hub: HubAccess::default(),
    });
    let transfer = answer_as!(
        HiveClient::new(host)
            .call_with(command, Input::Hub(access))
            .await?,
        ModelTransfer,
        "download"
    )?;
    Ok(transferred(transfer, "downloaded"))
}

/// The local file to push: readable, a GGUF file, with a name a hive accepts.
pub(super) struct PushFile {
    path: PathBuf,
    name: String,
    size: u64,
    sha256: String,
}

pub(super) async fn push_file(path: &str) -> Result<Arc<PushFile>, ErrorDetail> {
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !validate::is_valid_name(&name) || !name.to_ascii_lowercase().ends_with(".gguf") {
            return Err(ErrorDetail::new(
                ErrorCode::BadRequest,
                format!("`{name}` is not a model file name rbee pushes"),
            )
            .with_hint("push a `*.gguf` file whose name has only letters, digits, `-`, `_`, `.`"));
        }
        let file = std::fs::File::open(&path).map_err(|e| unreadable(&path, e))?;
        let size = file.metadata().map_err(|e| unreadable(&path, e))?.len();
        rbee_gguf::check(&mut std::io::BufReader::new(file), size).map_err(|e| {
            ErrorDetail::new(
                ErrorCode::BadRequest,
                format!("{} is not a usable GGUF file: {e}", path.display()),
            )
        })?;
        let sha256 = super::binaries::sha256_cached(&path).map_err(|e| unreadable(&path, e))?;
        Ok(Arc::new(PushFile {
            path,
            name,
            size,
            sha256,
        }))
    })
    .await
    .map_err(|e| ErrorDetail::new(ErrorCode::Internal, e.to_string()))?
}

pub async fn push(ctx: &JobContext, pattern: &str, path: &str) -> OpResult {
    let file = push_file(path).await?;
    ctx.narrate(
        "model_push",
        pattern,
        format!(
            "{} is {} with sha256 {}",
            file.name,
            size(file.size),
            file.sha256
        ),
    );
    fan_out_within(ctx, pattern, "model_push", None, |host| {
        let file = file.clone();
        async move { push_on(&host, &file, false).await }
    })
    .await
}

/// Sends the file unless the hive has it with the same checksum; with `check`, only
/// says whether it would.
pub(super) async fn push_on(
    host: &HostContext,
    file: &PushFile,
    check: bool,
) -> Result<HostDone, ErrorDetail> {
    let has = AgentCommand::Model(ModelCommand::Has {
        file: file.name.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
    });
    let presence = match HiveClient::new(host).call(has).await {
        Ok(answer) => answer_as!(answer, ModelPresence, "has")?,
        Err(e) if check && no_usable_agent(&e) => {
            return Ok(HostDone::changed(format!(
                "would send {} (no agent on the hive yet)",
                file.name
            )));
        }
        Err(e) => return Err(e),
    };
    if presence.present {
        return Ok(HostDone::ok(format!(
            "local:{} already here with the same sha256; nothing sent",
            file.name
        )));
    }
    if check {
        return Ok(HostDone::changed(format!(
            "would send {} ({})",
            file.name,
            size(file.size)
        )));
    }
    host.narrate(Level::Info, "model_push", format!("sending {}", file.name));
    let receive = AgentCommand::Model(ModelCommand::Receive {
        file: file.name.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
    });
    let input = Input::File {
        path: file.path.clone(),
        label: file.name.clone(),
    };
    let transfer = answer_as!(
        HiveClient::new(host).call_with(receive, input).await?,
        ModelTransfer,
        "receive"
    )?;
    Ok(transferred(transfer, "pushed"))
}

pub async fn list(ctx: &JobContext, pattern: &str) -> OpResult {
    fan_out(ctx, pattern, "model_list", |host| async move {
        let entries = held(&host).await?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let platform = match platform_of(&host).await {
            Some(platform) => {
                let said = format!("; {platform}");
                host.job.emit(JobEvent::Result {
                    hive: Some(host.hive.alias.clone()),
                    result: OperationResult::Platform(platform),
                });
                said
            }
            None => String::new(),
        };
        Ok(HostDone::ok(format!(
            "{} model(s), {}{platform}",
            entries.len(),
            size(total)
        )))
    })
    .await
}

/// The hive's OS, architecture and C library: as its last detection found them, else
/// asked of its agent (without marking the hive started); `None` when the agent does
/// not answer, which does not fail a listing that succeeded.
async fn platform_of(host: &HostContext) -> Option<Platform> {
    if let Some(caps) = host
        .job
        .state
        .hives
        .get(&host.hive.alias)
        .and_then(|r| r.capabilities)
    {
        return Some(caps.platform());
    }
    let answer = HiveClient::new(&host.quiet())
        .call(AgentCommand::Detect)
        .await
        .ok()?;
    match answer {
        OperationResult::Capabilities(caps) => Some(caps.platform()),
        _ => None,
    }
}

/// The models one hive holds, remembered as its catalog (`/v1/models`, the list a
/// `model_not_found` answer gives). Relayed as the hive's result unless `host` is
/// quiet.
pub(super) async fn held(host: &HostContext) -> Result<Vec<ModelEntry>, ErrorDetail> {
    let entries = answer_as!(
        HiveClient::new(host)
            .call(AgentCommand::Model(ModelCommand::List))
            .await?,
        Models,
        "list"
    )?;
    host.job.state.hives.set_models(
        &host.hive.alias,
        entries.iter().map(|e| e.id.clone()).collect(),
    );
    Ok(entries)
}

pub async fn get(ctx: &JobContext, pattern: &str, model: &str) -> OpResult {
    check_model_id(model)?;
    fan_out(ctx, pattern, "model_get", |host| async move {
        let command = AgentCommand::Model(ModelCommand::Get {
            model: model.to_owned(),
        });
        let entry = answer_as!(HiveClient::new(&host).call(command).await?, Model, "get")?;
        Ok(HostDone::ok(format!("{} at {}", entry.id, entry.path)))
    })
    .await
}

pub async fn delete(ctx: &JobContext, pattern: &str, model: &str) -> OpResult {
    check_model_id(model)?;
    fan_out(ctx, pattern, "model_delete", |host| async move {
        let command = AgentCommand::Model(ModelCommand::Delete {
            model: model.to_owned(),
        });
        let entry = answer_as!(HiveClient::new(&host).call(command).await?, Model, "delete")?;
        Ok(HostDone::changed(format!(
            "deleted {} ({})",
            entry.id,
            size(entry.size)
        )))
    })
    .await
}
