//! Cluster-wide views: `status` and `inventory list`.

use rbee_protocol::OperationResult;
use rbee_protocol::cluster::{ClusterStatus, HiveSummary, QueenSummary};

use super::{JobContext, OpResult};

fn hive_rows(ctx: &JobContext) -> Vec<HiveSummary> {
    ctx.state
        .inventory()
        .hives
        .values()
        .map(|h| {
            let record = ctx.state.hives.get(&h.alias);
            HiveSummary {
                alias: h.alias.clone(),
                host: h.host.clone(),
                ssh_port: h.ssh_port,
                ssh_user: h.ssh_user.clone(),
                install_dir: h.install_dir.clone(),
                groups: h.groups.iter().cloned().collect(),
                online: record.as_ref().is_some_and(|r| r.online),
                agent_version: record.as_ref().and_then(|r| r.agent_version.clone()),
                devices: record
                    .and_then(|r| r.capabilities)
                    .map(|c| c.devices.iter().map(|d| d.id.clone()).collect()),
                ssh: ctx.state.hives.ssh_health(&h.alias),
            }
        })
        .collect()
}

pub async fn status(ctx: &JobContext) -> OpResult {
    let inventory = ctx.state.inventory();
    let workers = ctx.state.workers.list();
    ctx.narrate(
        "status",
        "cluster",
        format!(
            "{} hives in {}, {} workers known",
            inventory.hives.len(),
            inventory.path.display(),
            workers.len()
        ),
    );
    ctx.result(OperationResult::ClusterStatus(ClusterStatus {
        queen: QueenSummary {
            version: rbee_protocol::VERSION.to_owned(),
            uptime_s: ctx.state.started.elapsed().as_secs(),
            jobs_running: ctx.state.jobs.running(),
        },
        hives: hive_rows(ctx),
        workers,
    }));
    Ok(())
}

pub async fn inventory_list(ctx: &JobContext) -> OpResult {
    ctx.result(OperationResult::Inventory(hive_rows(ctx)));
    Ok(())
}
