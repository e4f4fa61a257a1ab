//! Changing the inventory while the queen runs: probing a hive that is not in it yet,
//! adding and removing a hive in the inventory file, and reloading the file.
//!
//! The queen owns the file it loaded, as it owns SSH and known_hosts: the keeper only
//! asks (it may run on another machine). Edits go through `toml_edit`
//! (`rbee_config::inventory_edit`), so the operator's comments and order stay; the
//! edited text must parse as an inventory before it is written, atomically. A reload
//! keeps everything the queen knows of hives whose settings did not change (their
//! connection, online state, SSH health and catalog); a changed hive reconnects with
//! its new settings at its next use, and a removed one is forgotten.

use std::path::{Path, PathBuf};

use rbee_config::Inventory;
use rbee_config::inventory_edit::{self, EditError};
use rbee_protocol::inventory::{HiveSpec, InventoryChange};
use rbee_protocol::{ErrorCode, ErrorDetail, Level, OperationResult};

use super::binaries::Binaries;
use super::fan_out::HostContext;
use super::hive_client::HiveClient;
use super::runnable::{HivePlatform, Unsettled};
use super::{JobContext, OpResult};

/// Below this much free disk at the install directory, `hive_probe` warns: one small
/// model and the binaries fit, little more.
const LOW_DISK_BYTES: u64 = 2 << 30;

/// Reaches `alias` as the inventory would with `spec` added, and checks it. The
/// candidate leaves nothing behind: its connection and what the registry learned of
/// it are dropped, whatever the outcome. Edits wait meanwhile, so no hive of that
/// alias can arrive and be forgotten with it.
pub async fn probe(ctx: &JobContext, alias: &str, spec: &HiveSpec, accept: bool) -> OpResult {
    let _edit = ctx.state.inventory_edits.lock().await;
    let (_, candidate) = with_hive_added(ctx, alias, spec).await?;
    let Some(hive) = candidate.hives.get(alias).cloned() else {
        return Err(ErrorDetail::new(
            ErrorCode::Internal,
            format!("the edited inventory lacks {alias}"),
        ));
    };
    ctx.narrate(
        "probe",
        alias,
        format!("reaching {alias} at {} as the inventory would", hive.host),
    );
    let host = HostContext {
        job: ctx.clone(),
        hive,
    };
    let probed = HiveClient::new(&host)
        .accepting_new_host_keys(accept)
        .probe_candidate()
        .await;
    ctx.state.ssh.forget(alias).await;
    ctx.state.hives.forget(alias);
    let probe = probed?;
    ctx.narrate(
        "probe",
        alias,
        format!(
            "{}@{}:{} answered with host key {}",
            probe.user, probe.host, probe.port, probe.fingerprint
        ),
    );
    // Judged as `hive install` will judge it: against every binary set the queen holds.
    if let Ok(binaries) = Binaries::find(ctx).await {
        let platform = HivePlatform {
            alias,
            os: &probe.os,
            arch: &probe.arch,
            libc: &probe.libc,
        };
        match binaries.pick(&platform) {
            Ok((_, Some(Unsettled(note)))) => host.narrate(Level::Warn, "probe", note),
            Ok((_, None)) => {}
            Err(refusal) => host.narrate(
                Level::Warn,
                "probe",
                format!(
                    "`hive install` will refuse it: {} ({})",
                    refusal.message.trim_end_matches("; nothing was pushed"),
                    refusal.hint.unwrap_or_default()
                ),
            ),
        }
    }
    if let Some(free) = probe.free_disk_bytes.filter(|&free| free < LOW_DISK_BYTES) {
        host.narrate(
            Level::Warn,
            "probe",
            format!(
                "only {} MiB free at {}: models may not fit",
                free >> 20,
                probe.install_dir
            ),
        );
    }
    let writable = probe.writable;
    let (user, dir) = (probe.user.clone(), probe.install_dir.clone());
    ctx.result(OperationResult::HiveProbe(probe));
    if !writable {
        return Err(ErrorDetail::new(
            ErrorCode::Conflict,
            format!("{user} cannot write to the install directory {dir} on {alias}"),
        )
        .with_hint("pass another --install-dir, or give that user write access to it"));
    }
    Ok(())
}

/// Writes `spec` into the inventory file as `[hives.ALIAS]` and reloads it.
pub async fn add(ctx: &JobContext, alias: &str, spec: &HiveSpec) -> OpResult {
    let _edit = ctx.state.inventory_edits.lock().await;
    let (text, inventory) = with_hive_added(ctx, alias, spec).await?;
    reloadable(ctx, &inventory)?;
    write_text(&inventory.path, text).await?;
    let change = apply(ctx, inventory).await;
    ctx.narrate("add", alias, format!("added {alias} to {}", change.path));
    ctx.result(OperationResult::InventoryChange(change));
    Ok(())
}

/// Takes `[hives.ALIAS]` (and its name in groups' `hives` lists) out of the inventory
/// file and reloads it. Refused while the queen hears workers of that hive: they would
/// serve on from a hive nothing can reach any more.
pub async fn remove(ctx: &JobContext, alias: &str) -> OpResult {
    let _edit = ctx.state.inventory_edits.lock().await;
    let workers: Vec<String> = ctx
        .state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.heartbeat.hive_id == alias)
        .map(|w| w.heartbeat.worker_id)
        .collect();
    if !workers.is_empty() {
        return Err(ErrorDetail::new(
            ErrorCode::Conflict,
            format!("{alias} runs worker(s) {}", workers.join(", ")),
        )
        .with_hint(format!(
            "stop them first with `rbee-keeper hive stop {alias}`"
        )));
    }
    let path = ctx.state.inventory().path.clone();
    let text = read_text(&path).await?;
    let edited = inventory_edit::remove_hive(&text, alias).map_err(|e| edit_error(&path, e))?;
    let inventory = parse(&path, &edited)?;
    reloadable(ctx, &inventory)?;
    write_text(&path, edited).await?;
    let change = apply(ctx, inventory).await;
    ctx.narrate(
        "remove",
        alias,
        format!("removed {alias} from {}", change.path),
    );
    ctx.result(OperationResult::InventoryChange(change));
    Ok(())
}

/// Reads the inventory file again.
pub async fn reload(ctx: &JobContext) -> OpResult {
    let _edit = ctx.state.inventory_edits.lock().await;
    let path = ctx.state.inventory().path.clone();
    let required = ctx.state.config.queen.inventory.is_some();
    let loaded = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Inventory::load(&path, required)).await
    };
    let inventory = match loaded {
        Ok(Ok(inventory)) => inventory,
        Ok(Err(e)) => {
            let detail = ErrorDetail::new(ErrorCode::BadRequest, e.to_string());
            return Err(match e.hint() {
                Some(hint) => detail.with_hint(hint),
                None => detail.with_hint(
                    "fix the file and reload again; the queen keeps the inventory it had",
                ),
            });
        }
        Err(e) => return Err(internal(format!("reading {}: {e}", path.display()))),
    };
    reloadable(ctx, &inventory)?;
    let change = apply(ctx, inventory).await;
    ctx.narrate(
        "reload",
        "inventory",
        format!(
            "reloaded {}: {} added, {} removed, {} changed",
            change.path,
            change.added.len(),
            change.removed.len(),
            change.changed.len()
        ),
    );
    ctx.result(OperationResult::InventoryChange(change));
    Ok(())
}

/// The inventory file's text with `spec` added as `alias`, and the inventory it makes.
async fn with_hive_added(
    ctx: &JobContext,
    alias: &str,
    spec: &HiveSpec,
) -> Result<(String, Inventory), ErrorDetail> {
    let path = ctx.state.inventory().path.clone();
    let text = read_text(&path).await?;
    let edited = inventory_edit::add_hive(&text, alias, spec).map_err(|e| edit_error(&path, e))?;
    let inventory = parse(&path, &edited)?;
    Ok((edited, inventory))
}

/// Refuses an inventory the running queen cannot take without a restart: one naming
/// another known_hosts file (the SSH pool checks keys against the one it started with).
/// Checked before anything is written.
fn reloadable(ctx: &JobContext, inventory: &Inventory) -> Result<(), ErrorDetail> {
    if inventory.known_hosts == ctx.state.inventory().known_hosts {
        return Ok(());
    }
    Err(ErrorDetail::new(
        ErrorCode::Conflict,
        "the inventory now names another known_hosts file; the queen checks host keys against the one it started with",
    )
    .with_hint("restart the queen (`rbee-keeper queen stop`, then `queen start`) to use the new file"))
}

/// Puts `inventory` in place of the running one and drops what no longer holds: the
/// connection of a hive whose settings changed (the next use reconnects with the new
/// ones) and everything known of a removed hive.
async fn apply(ctx: &JobContext, inventory: Inventory) -> InventoryChange {
    let old = ctx.state.inventory();
    let mut change = InventoryChange {
        path: inventory.path.display().to_string(),
        ..InventoryChange::default()
    };
    for (alias, hive) in &inventory.hives {
        match old.hives.get(alias) {
            None => change.added.push(alias.clone()),
            Some(before) if before != hive => change.changed.push(alias.clone()),
            Some(_) => {}
        }
    }
    change.removed = old
        .hives
        .keys()
        .filter(|alias| !inventory.hives.contains_key(*alias))
        .cloned()
        .collect();
    ctx.state.replace_inventory(inventory);
    for alias in change.changed.iter().chain(&change.removed) {
        ctx.state.ssh.forget(alias).await;
    }
    for alias in &change.removed {
        ctx.state.hives.forget(alias);
    }
    change
}

fn parse(path: &Path, text: &str) -> Result<Inventory, ErrorDetail> {
    Inventory::parse(path, text).map_err(|e| {
        let detail = ErrorDetail::new(ErrorCode::BadRequest, e.to_string());
        match e.hint() {
            Some(hint) => detail.with_hint(hint),
            None => detail,
        }
    })
}

fn edit_error(path: &Path, error: EditError) -> ErrorDetail {
    let code = match error {
        EditError::Exists { .. } => ErrorCode::Conflict,
        EditError::Missing { .. } => ErrorCode::NotFound,
        EditError::Parse(_) | EditError::NotATable => ErrorCode::Conflict,
    };
    let hint = error.hint().unwrap_or_else(|| {
        format!(
            "fix {} by hand, then `rbee-keeper inventory reload`",
            path.display()
        )
    });
    ErrorDetail::new(code, format!("{}: {error}", path.display())).with_hint(hint)
}

fn internal(message: String) -> ErrorDetail {
    ErrorDetail::new(ErrorCode::Internal, message)
}

/// The inventory file's text; a file that does not exist yet is empty.
async fn read_text(path: &Path) -> Result<String, ErrorDetail> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(internal(format!("cannot read {}: {e}", path.display()))
            .with_hint("the queen must be able to read its inventory file")),
    })
    .await
    .map_err(|e| internal(format!("reading the inventory: {e}")))?
}

/// Replaces the inventory file atomically (a partial file beside it, then a rename),
/// keeping its permissions.
async fn write_text(path: &Path, text: String) -> Result<(), ErrorDetail> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let partial = path.with_extension("toml.partial");
        let written = (|| {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&partial, text)?;
            if let Ok(metadata) = std::fs::metadata(&path) {
                std::fs::set_permissions(&partial, metadata.permissions())?;
            }
            std::fs::rename(&partial, &path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            internal(format!("cannot write {}: {e}", path.display()))
                .with_hint("the queen must be able to write its inventory file and its directory")
        })
    })
    .await
    .map_err(|e| internal(format!("writing the inventory: {e}")))?
}
