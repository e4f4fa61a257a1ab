//! `worker-spawn` against device memory: a worker that would not fit in the chosen
//! device's free memory is refused before any process starts. Devices and their
//! memory come from `RBEE_HIVE_DEVICES`, as on a hive without those GPUs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use rbee_protocol::{DeviceKind, ErrorCode, JobEvent, OperationResult};
use serde_json::json;

use crate::support::{AGENT, events_of, result_of};

const GIB: u64 = 1 << 30;

/// A GGUF header with a llama-7B-like attention shape (32 layers, hidden size 4096,
/// 32 heads, 8 for keys and values) and 4096 positions: its f32 context cache alone
/// takes 1 GiB, whatever the tiny file's size.
fn write_model(install_dir: &Path) {
    fn string(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    }
    let numbers: [(&str, u32); 5] = [
        ("llama.context_length", 4096),
        ("llama.block_count", 32),
        ("llama.embedding_length", 4096),
        ("llama.attention.head_count", 32),
        ("llama.attention.head_count_kv", 8),
    ];
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((numbers.len() as u64 + 1).to_le_bytes());
    string(&mut bytes, "general.architecture");
    bytes.extend(8u32.to_le_bytes());
    string(&mut bytes, "llama");
    for (key, value) in numbers {
        string(&mut bytes, key);
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(value.to_le_bytes());
    }
    let dir = install_dir.join("models/local");
    std::fs::create_dir_all(&dir).expect("models dir");
    std::fs::write(dir.join("shaped.gguf"), bytes).expect("write the model");
}

fn device(kind: &str, index: u32, total: u64, free: u64) -> serde_json::Value {
    json!({
        "id": format!("{}-{index}", if kind == "cpu" { "CPU" } else { "GPU" }),
        "kind": kind,
        "index": index,
        "name": format!("pretend {kind}"),
        "memory_total": total,
        "memory_free": free,
    })
}

fn agent_with_devices(install_dir: &Path, devices: &serde_json::Value, args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(["--install-dir", install_dir.to_str().expect("UTF-8 path")])
        .args(["--hive-id", "h1"])
        .args(args)
        .env("RBEE_HIVE_DEVICES", devices.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run rbee-hive")
}

fn spawn_on(install_dir: &Path, devices: &serde_json::Value, device: &str) -> Output {
    agent_with_devices(
        install_dir,
        devices,
        &[
            "worker-spawn",
            "--worker-id",
            "w-fit",
            "--model",
            "shaped.gguf",
            "--device",
            device,
            "--queen-url",
            "http://127.0.0.1:9",
            "--bind",
            "127.0.0.1",
            "--advertise-host",
            "127.0.0.1",
            "--heartbeat-interval-ms",
            "1000",
        ],
    )
}

fn assert_refused_without_a_worker(install_dir: &Path, output: &Output, expected: &str) {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let events = events_of(output);
    let Some(JobEvent::Error(error)) = events.last() else {
        panic!("ends with an error event: {events:?}");
    };
    assert_eq!(error.code, ErrorCode::InsufficientMemory, "{error:?}");
    assert!(
        error.message.starts_with("the model needs ~") && error.message.contains(expected),
        "{}",
        error.message
    );
    let hint = error.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("another device or hive"), "{hint}");
    // Refused before anything started: no state file, no log.
    assert!(!install_dir.join("workers/w-fit.json").exists());
    assert!(!install_dir.join("logs/w-fit.log").exists());
}

#[test]
fn detect_reports_the_devices_rbee_hive_devices_names() {
    let install_dir = tempfile::tempdir().expect("temp dir");
    let devices = json!([device("cuda", 0, 80 * GIB, 79 * GIB)]);
    let output = agent_with_devices(install_dir.path(), &devices, &["detect"]);
    assert!(output.status.success(), "{output:?}");
    let OperationResult::Capabilities(capabilities) = result_of(&events_of(&output)) else {
        panic!("not the agent's answer");
    };
    let gpu = &capabilities.devices[0];
    assert_eq!(
        (gpu.kind, gpu.worker_device()),
        (DeviceKind::Cuda, rbee_protocol::DeviceSpec::Cuda(0))
    );
    assert_eq!((gpu.memory_total, gpu.memory_free), (80 * GIB, 79 * GIB));
    assert_eq!(
        capabilities.devices.last().map(|d| d.kind),
        Some(DeviceKind::Cpu)
    );

    let broken = agent_with_devices(install_dir.path(), &json!("not a list"), &["detect"]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let events = events_of(&broken);
    assert!(
        matches!(events.last(), Some(JobEvent::Error(e)) if e.message.contains("RBEE_HIVE_DEVICES")),
        "{events:?}"
    );
}

#[test]
fn a_gpu_with_too_little_free_memory_is_refused_before_the_worker_starts() {
    let install_dir = tempfile::tempdir().expect("temp dir");
    write_model(install_dir.path());
    // 1 GiB cache + 0.5 GiB CUDA runtime do not fit in 1 GiB free of 8.
    let devices = json!([device("cuda", 0, 8 * GIB, GIB)]);
    let output = spawn_on(install_dir.path(), &devices, "cuda:0");
    assert_refused_without_a_worker(
        install_dir.path(),
        &output,
        "cuda:0 on h1 has 1.0 GiB free of 8.0 GiB",
    );
}

#[test]
fn the_cpu_is_checked_against_free_ram() {
    let install_dir = tempfile::tempdir().expect("temp dir");
    write_model(install_dir.path());
    let devices = json!([device("cpu", 0, 4 * GIB, GIB / 2)]);
    let output = spawn_on(install_dir.path(), &devices, "cpu");
    assert_refused_without_a_worker(install_dir.path(), &output, "cpu on h1 has 0.5 GiB free");
}
