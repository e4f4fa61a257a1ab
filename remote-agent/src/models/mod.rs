//! The hive's model cache under `<install_dir>/models`: the catalog (list, get,
//! resolve, delete), downloads from the Hugging Face hub, and files pushed by the queen.
//!
//! Layout: `models/<org>/<repo>/<file>.gguf` for hub downloads (id
//! `org/repo:file.gguf`), `models/local/<file>.gguf` for pushed files (id
//! `local:file.gguf`). Partial files and locks are hidden (`.name.…`) next to their
//! target and never listed. A file appears under its final name only once complete
//! and verified (partial file, sha256, rename).

mod command;
pub(crate) mod error;
mod hub;
mod receive;
mod transfer;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rbee_protocol::models::{LOCAL_PREFIX, ModelEntry, ModelMetadata};
use rbee_protocol::{Level, OperationResult};

pub use command::ModelCommand;
pub use error::ModelError;
pub use transfer::Meter as ProgressMeter;

use crate::cancel::CancelFlag;
use crate::error::AgentError;
use crate::report::Reporter;

/// The directory of pushed models inside `models/`.
const LOCAL_DIR: &str = "local";

/// `<install_dir>/models`.
pub fn models_dir(install_dir: &Path) -> PathBuf {
    install_dir.join("models")
}

/// Runs one model command.
pub(crate) fn execute(
    command: &ModelCommand,
    install_dir: &Path,
    input: Option<&mut dyn Read>,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<(), AgentError> {
    match command {
        ModelCommand::List => {
            let mut entries = list(install_dir)?;
            for entry in &mut entries {
                plan_engine(install_dir, entry);
            }
            report.narrate(
                Level::Info,
                "model_list",
                format!(
                    "{} model(s) in {}",
                    entries.len(),
                    models_dir(install_dir).display()
                ),
            );
            report.result(OperationResult::Models(entries));
        }
        ModelCommand::Get { model } => {
            let mut entry = resolve(install_dir, model)?;
            plan_engine(install_dir, &mut entry);
            report.result(OperationResult::Model(entry));
        }
        ModelCommand::Delete { model } => {
            let entry = delete(install_dir, model)?;
            report.narrate(Level::Info, "model_delete", format!("deleted {}", entry.id));
            report.result(OperationResult::Model(entry));
        }
        ModelCommand::Download { model, hub } => {
            let transfer = hub::download(install_dir, model, hub, report, cancel)?;
            report.result(OperationResult::ModelTransfer(transfer));
        }
        ModelCommand::Has { file, size, sha256 } => {
            let presence = receive::has(install_dir, file, *size, sha256)?;
            report.result(OperationResult::ModelPresence(presence));
        }
        ModelCommand::Receive { file, size, sha256 } => {
            let Some(input) = input else {
                return Err(ModelError::InvalidSpec {
                    spec: file.clone(),
                    reason: "receiving a model needs its bytes on stdin",
                }
                .into());
            };
            let transfer = receive::receive(install_dir, file, *size, sha256, input, cancel)?;
            report.result(OperationResult::ModelTransfer(transfer));
        }
    }
    Ok(())
}

/// Every complete model file, sorted by id, with its GGUF metadata.
pub fn list(install_dir: &Path) -> Result<Vec<ModelEntry>, ModelError> {
    let root = models_dir(install_dir);
    let mut entries = Vec::new();
    for org in visible_children(&root)? {
        let org_name = file_name(&org);
        if org.is_dir() {
            for repo in visible_children(&org)? {
                if repo.is_dir() {
                    let prefix = format!("{org_name}/{}:", file_name(&repo));
                    collect_files(&repo, &repo, &prefix, &mut entries)?;
                } else if org_name == LOCAL_DIR && is_gguf(&repo) {
                    entries.push(entry(
                        format!("{LOCAL_PREFIX}{}", file_name(&repo)),
                        file_name(&repo),
                        &repo,
                    ));
                }
            }
        }
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(entries)
}

/// Hub files of one repository, at any depth below it.
fn collect_files(
    repo: &Path,
    dir: &Path,
    prefix: &str,
    entries: &mut Vec<ModelEntry>,
) -> Result<(), ModelError> {
    for path in visible_children(dir)? {
        if path.is_dir() {
            collect_files(repo, &path, prefix, entries)?;
        } else if is_gguf(&path) {
            let relative = path
                .strip_prefix(repo)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| file_name(&path));
            entries.push(entry(format!("{prefix}{relative}"), relative, &path));
        }
    }
    Ok(())
}

/// Children of `dir` whose names do not start with `.` (partials, locks); none when
/// `dir` does not exist.
fn visible_children(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ModelError::io("list", dir)(e)),
    };
    let mut children = Vec::new();
    for item in read {
        let item = item.map_err(ModelError::io("list", dir))?;
        if !item.file_name().to_string_lossy().starts_with('.') {
            children.push(item.path());
        }
    }
    children.sort();
    Ok(children)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The catalog entry of the file at `path`, its header read for the metadata.
pub(crate) fn entry(id: String, file: String, path: &Path) -> ModelEntry {
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let summary = fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            rbee_gguf::summarize(&mut std::io::BufReader::new(f), size).map_err(|e| e.to_string())
        });
    let (metadata, problem) = match summary {
        Ok(s) => (
            Some(ModelMetadata {
                architecture: s.architecture,
                name: s.name,
                parameters: s.parameters,
                quantization: s.quantization,
                context_length: s.context_length,
                chat_template: s.chat_template,
            }),
            None,
        ),
        Err(reason) => (None, Some(format!("not a readable GGUF file: {reason}"))),
    };
    ModelEntry {
        id,
        file,
        path: path.display().to_string(),
        size,
        metadata,
        problem,
        engine: None,
    }
}

/// Asks the hive's worker binary which engine a CPU worker would run `entry` on
/// (`llm-worker-rbee plan`), from the header alone; where it would refuse the file,
/// the engine is `none` and the reason the entry's problem. Left unset when no worker
/// binary answers (none installed, or one older than `plan`).
fn plan_engine(install_dir: &Path, entry: &mut ModelEntry) {
    if entry.problem.is_some() {
        return;
    }
    let Ok(worker) = crate::binaries::worker_binary(install_dir) else {
        return;
    };
    let Ok(out) = std::process::Command::new(worker)
        .args(["plan", "--device", "cpu", "--model"])
        .arg(&entry.path)
        .env_remove("RBEE_WORKER_ENGINE")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return;
    };
    #[derive(serde::Deserialize)]
    struct Plan {
        engine: Option<String>,
        refused: Option<String>,
    }
    let answer = String::from_utf8_lossy(&out.stdout);
    let Some(plan) = answer
        .lines()
        .find_map(|line| serde_json::from_str::<Plan>(line).ok())
        .filter(|_| out.status.success())
    else {
        return;
    };
    match (plan.engine, plan.refused) {
        (Some(engine), _) => entry.engine = Some(engine),
        (None, Some(reason)) => {
            entry.engine = Some("none".to_owned());
            entry.problem = Some(reason);
        }
        (None, None) => {}
    }
}

/// Finds the one model `spec` names: a full id (`org/repo:file.gguf`,
/// `local:file.gguf`), a repository id (`org/repo`) when the hive holds exactly one
/// file of it, or a file name or file stem (without `.gguf`) that is unique across the
/// catalog. A miss names what the hive holds.
pub fn resolve(install_dir: &Path, spec: &str) -> Result<ModelEntry, ModelError> {
    let entries = list(install_dir)?;
    if let Some(exact) = entries.iter().find(|e| e.id == spec) {
        return Ok(exact.clone());
    }
    let repo_prefix = format!("{spec}:");
    let matches: Vec<&ModelEntry> = if spec.contains('/') && !spec.contains(':') {
        entries
            .iter()
            .filter(|e| e.id.starts_with(&repo_prefix))
            .collect()
    } else {
        entries
            .iter()
            .filter(|e| {
                let base = e.file.rsplit('/').next().unwrap_or(&e.file);
                e.file == spec || base == spec || base.strip_suffix(".gguf") == Some(spec)
            })
            .collect()
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ModelError::NotFound {
            spec: spec.to_owned(),
            held: entries.into_iter().map(|e| e.id).collect(),
        }),
        many => Err(ModelError::Ambiguous {
            spec: spec.to_owned(),
            candidates: many.iter().map(|e| e.id.clone()).collect(),
        }),
    }
}

/// Deletes the model `spec` resolves to, unless a live worker uses it or a transfer
/// holds its lock; removes directories it leaves empty.
pub fn delete(install_dir: &Path, spec: &str) -> Result<ModelEntry, ModelError> {
    let entry = resolve(install_dir, spec)?;
    let path = PathBuf::from(&entry.path);
    let workers = live_workers_using(&install_dir.join("workers"), &entry)?;
    if !workers.is_empty() {
        return Err(ModelError::InUse {
            id: entry.id,
            workers,
        });
    }
    let Some(_lock) = transfer::FileLock::try_acquire(&path)? else {
        return Err(ModelError::Busy { id: entry.id });
    };
    fs::remove_file(&path).map_err(ModelError::io("delete", &path))?;
    transfer::remove_notes(&path);
    let root = models_dir(install_dir);
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(&root) && *d != root) {
        // Only an empty directory (a lock file keeps it) goes; any error just stops.
        if fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(entry)
}

/// Ids of the workers whose state file (`workers/<id>.json`) names this model and
/// whose process is alive.
fn live_workers_using(workers_dir: &Path, entry: &ModelEntry) -> Result<Vec<String>, ModelError> {
    let canonical = fs::canonicalize(&entry.path).ok();
    let mut users: Vec<String> = crate::worker_state::running_records(workers_dir)
        .map_err(ModelError::io("list", workers_dir))?
        .into_iter()
        .filter(|record| {
            let path = Path::new(&record.model_path);
            path == Path::new(&entry.path)
                || canonical.is_some() && fs::canonicalize(path).ok() == canonical
                || record.model == entry.id
        })
        .map(|record| record.worker_id)
        .collect();
    users.sort();
    Ok(users)
}

#[cfg(test)]
mod tests;
