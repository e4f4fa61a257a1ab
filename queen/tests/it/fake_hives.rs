//! Queen operations against fake hives: the hive client's test seam answers agent
//! commands, so an operation's own logic (fan-out, recap, the answers it expects, the
//! events it relays) is tested with no agent, sshd or files.

use std::sync::Arc;

use queen_rbee::operations::FakeHive;
use rbee_config::{Config, Inventory};
use rbee_hive::AgentCommand;
use rbee_protocol::result::{HostStatus, RecapRow};
use rbee_protocol::{ErrorCode, ErrorDetail, JobEvent, OperationResult};
use serde_json::json;

use crate::support::{new_state, serve_state};

/// `a` answers as a current agent, `b` cannot be reached, `c` answers every command
/// with a model list (an agent of another version).
struct Hives;

impl FakeHive for Hives {
    fn answer(
        &self,
        hive: &str,
        command: &AgentCommand,
    ) -> Option<Result<OperationResult, ErrorDetail>> {
        Some(match (hive, command) {
            ("a", AgentCommand::Status) => Ok(OperationResult::AgentStatus(
                serde_json::from_value(json!({
                    "version": {"version": "9.9.9", "os": "linux", "arch": "x86_64"},
                    "install_dir": "/srv/rbee",
                    "capabilities": {
                        "agent_version": "9.9.9", "os": "linux", "arch": "x86_64",
                        "hostname": "a", "ram_total": 8u64 << 30, "ram_available": 4u64 << 30,
                        "disk_free": 1u64 << 40,
                        "devices": [{"id": "CPU-0", "kind": "cpu", "index": 0, "name": "fake",
                                     "memory_total": 8u64 << 30, "memory_free": 4u64 << 30}]
                    },
                    "workers": []
                }))
                .expect("an agent status"),
            )),
            ("a", AgentCommand::WorkerList) => Ok(OperationResult::HiveWorkers(Vec::new())),
            ("b", _) => Err(ErrorDetail::new(ErrorCode::Unreachable, "no route to b")),
            ("c", _) => Ok(OperationResult::Models(Vec::new())),
            _ => return None,
        })
    }
}

#[tokio::test]
async fn hive_status_recaps_each_fake_hive_by_what_it_answered() {
    let inventory = Inventory::parse(
        std::path::Path::new("inventory.toml"),
        "[hives.a]\nhost = \"192.0.2.1\"\n[hives.b]\nhost = \"192.0.2.2\"\n[hives.c]\nhost = \"192.0.2.3\"\n",
    )
    .expect("inventory");
    let mut state = new_state(Config::default(), inventory);
    state.fake_hives = Some(Arc::new(Hives));
    let queen = serve_state(state, "127.0.0.1:0").await;
    let events: Vec<JobEvent> = queen
        .run(json!({"operation": "hive_status", "hive_id": "all"}))
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();

    // a's answer reaches the job as a real agent's would, typed and with its hive.
    assert!(events.iter().any(|e| matches!(e, JobEvent::Result {
        hive: Some(h),
        result: OperationResult::AgentStatus(status),
    } if h == "a" && status.install_dir == "/srv/rbee")));
    let recap = events
        .iter()
        .find_map(|e| match e {
            JobEvent::Result {
                hive: None,
                result: OperationResult::Recap(rows),
            } => Some(rows.clone()),
            _ => None,
        })
        .expect("a recap");
    let row = |hive: &str| -> &RecapRow {
        recap
            .iter()
            .find(|r| r.hive == hive)
            .unwrap_or_else(|| panic!("no row for {hive}: {recap:?}"))
    };
    assert_eq!(row("a").status, HostStatus::Ok);
    assert!(row("a").message.contains("agent 9.9.9"), "{recap:?}");
    assert_eq!(
        (row("b").status, row("b").code),
        (HostStatus::Unreachable, Some(ErrorCode::Unreachable))
    );
    // An answer of the wrong kind is the agent's protocol error, naming what came.
    assert_eq!(
        (row("c").status, row("c").code),
        (HostStatus::Failed, Some(ErrorCode::AgentProtocol))
    );
    assert!(row("c").message.contains("models"), "{recap:?}");
    let Some(JobEvent::Error(error)) = events.last() else {
        panic!("the job did not fail: {events:?}");
    };
    assert_eq!(error.code, ErrorCode::AgentFailed);
    assert!(
        error.message.contains("2 of 3 hive(s)"),
        "{}",
        error.message
    );
    queen.stop().await;
}
