//! The agent's process contract: JSON event lines, exit statuses, clear errors.

use std::path::PathBuf;

use rbee_protocol::{DeviceKind, ErrorCode, JobEvent, OperationResult};

use crate::support::{cpuinfo_processors, mem_total, result_of, run_agent};

#[test]
fn version_reports_this_build_and_machine() {
    let (output, events) = run_agent(&["version"]);
    assert!(output.status.success(), "{output:?}");
    let OperationResult::AgentVersion(version) = result_of(&events) else {
        panic!("not the agent's answer");
    };
    assert_eq!(version.version, rbee_protocol::VERSION);
    assert_eq!(version.os, std::env::consts::OS);
    assert_eq!(version.arch, std::env::consts::ARCH);
}

#[test]
fn detect_reports_this_machines_cpu_ram_and_disk() {
    let install_dir = tempfile::tempdir().expect("temp dir");
    let dir = install_dir.path().to_str().expect("UTF-8 temp path");
    let (output, events) = run_agent(&["--install-dir", dir, "--hive-id", "h1", "detect"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        matches!(events.first(), Some(JobEvent::Narration(_))),
        "narrates first: {events:?}"
    );

    let OperationResult::Capabilities(capabilities) = result_of(&events) else {
        panic!("not the agent's answer");
    };
    assert_eq!(capabilities.ram_total, mem_total());
    assert!(capabilities.ram_available > 0 && capabilities.ram_available <= capabilities.ram_total);
    assert!(capabilities.disk_free > 0);

    let cpu = capabilities.devices.last().expect("a CPU device");
    assert_eq!((cpu.id.as_str(), cpu.kind), ("CPU-0", DeviceKind::Cpu));
    let cores = cpu.cores.expect("CPU cores");
    let usable = std::thread::available_parallelism()
        .expect("parallelism")
        .get();
    assert_eq!(cores as usize, usable);
    assert!(cores <= cpuinfo_processors());
    assert_eq!(cpu.memory_total, capabilities.ram_total);

    for (index, gpu) in capabilities
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Cuda)
        .enumerate()
    {
        assert_eq!(gpu.id, format!("GPU-{index}"));
    }
    let hive_tags = events.iter().filter_map(|event| match event {
        JobEvent::Result { hive, .. } => Some(hive.as_deref()),
        JobEvent::Narration(narration) => Some(narration.hive.as_deref()),
        _ => None,
    });
    assert!(
        hive_tags.into_iter().all(|hive| hive == Some("h1")),
        "every event names the hive"
    );
}

#[test]
fn status_lists_worker_state_files_under_a_tilde_install_dir() {
    let home = tempfile::tempdir().expect("temp dir");
    let install_dir = home.path().join("rbee");
    std::fs::create_dir_all(install_dir.join("workers")).expect("workers dir");
    std::fs::write(
        install_dir.join("workers/w-1.json"),
        r#"{"model":"m","port":9100}"#,
    )
    .expect("state file");

    // The queen escapes `~/rbee`, so the agent, not a shell, expands it.
    let output = std::process::Command::new(crate::support::AGENT)
        .args(["--install-dir", "~/rbee", "status"])
        .env("HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rbee-hive");
    assert!(output.status.success(), "{output:?}");
    let OperationResult::AgentStatus(status) = result_of(&crate::support::events_of(&output))
    else {
        panic!("not the agent's answer");
    };
    assert_eq!(PathBuf::from(&status.install_dir), install_dir);
    let ids: Vec<&str> = status.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["w-1"]);
    assert_eq!(status.version.version, rbee_protocol::VERSION);
    assert_eq!(status.capabilities.ram_total, mem_total());
}

#[test]
fn infer_is_rejected_with_an_error_event() {
    let (output, events) = run_agent(&["infer", "hello"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let Some(JobEvent::Error(detail)) = events.last() else {
        panic!("last event is an error: {events:?}");
    };
    assert_eq!(detail.code, ErrorCode::BadRequest);
    assert!(
        detail.message.contains("infer") && detail.message.contains("worker"),
        "{detail:?}"
    );
    assert!(detail.hint.is_some());
}

#[test]
fn an_unknown_command_exits_2_and_names_it() {
    let (output, events) = run_agent(&["--install-dir", "/nonexistent", "levitate"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    let JobEvent::Error(detail) = &events[0] else {
        panic!("an error event: {events:?}");
    };
    assert!(detail.message.contains("levitate"), "{detail:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("usage: rbee-hive"),
        "usage on stderr: {stderr}"
    );
}

#[test]
fn a_command_without_home_for_tilde_fails_with_a_hint() {
    let output = std::process::Command::new(crate::support::AGENT)
        .args(["--install-dir", "~/.rbee", "detect"])
        .env_remove("HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rbee-hive");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let events = crate::support::events_of(&output);
    let Some(JobEvent::Error(detail)) = events.last() else {
        panic!("last event is an error: {events:?}");
    };
    assert!(
        detail.message.contains("~/.rbee") && detail.hint.is_some(),
        "{detail:?}"
    );
}
