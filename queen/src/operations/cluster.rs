//! Cluster-wide views: `status` and `inventory list`.

use serde_json::json;

use super::{JobContext, OpResult};

fn hive_rows(ctx: &JobContext) -> Vec<serde_json::Value> {
    ctx.state
        .inventory()
        .hives
        .values()
        .map(|h| {
            let record = ctx.state.hives.get(&h.alias);
            json!({
                "alias": h.alias,
                "host": h.host,
                "ssh_port": h.ssh_port,
                "ssh_user": h.ssh_user,
                "install_dir": h.install_dir,
                "groups": h.groups,
                "online": record.as_ref().is_some_and(|r| r.online),
                "agent_version": record.as_ref().and_then(|r| r.agent_version.clone()),
                "devices": record
                    .and_then(|r| r.capabilities)
                    .map(|c| c.devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>()),
            })
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
    ctx.result(json!({
        "queen": {
            "version": rbee_protocol::VERSION,
            "uptime_s": ctx.state.started.elapsed().as_secs(),
            "jobs_running": ctx.state.jobs.running(),
        },
        "hives": hive_rows(ctx),
        "workers": workers,
    }));
    Ok(())
}

pub async fn inventory_list(ctx: &JobContext) -> OpResult {
    ctx.result(serde_json::Value::Array(hive_rows(ctx)));
    Ok(())
}
