//! A model file that cannot be used stops the worker with an error naming the file
//! and the reason, never a panic.

use std::io::Read;

use crate::support::{model_path, run_to_exit};

fn assert_fails_with(model: &std::path::Path, reason: &str) {
    let output = run_to_exit(model);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        stderr.contains(&model.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains(reason), "says {reason:?}: {stderr}");
}

#[test]
fn a_corrupt_gguf_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00garbage that is not a header").expect("write");
    assert_fails_with(&path, "is not a readable GGUF file");
}

#[test]
fn a_truncated_model_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("truncated.gguf");
    let mut head = Vec::new();
    std::fs::File::open(model_path())
        .expect("open the test model")
        .take(8 << 20)
        .read_to_end(&mut head)
        .expect("read");
    std::fs::write(&path, head).expect("write");
    assert_fails_with(&path, "is truncated");
}

#[test]
fn a_missing_model_is_refused() {
    let path = std::path::Path::new("/nonexistent/model.gguf");
    assert_fails_with(path, "cannot open model file");
}

/// `llm-worker-rbee plan`'s one JSON line for `model` on `device`.
fn plan(model: &std::path::Path, device: &str) -> serde_json::Value {
    let out = std::process::Command::new(crate::support::WORKER_BIN)
        .args(["plan", "--device", device, "--model"])
        .arg(model)
        .env_remove("RBEE_WORKER_ENGINE")
        .output()
        .expect("run plan");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[test]
fn plan_names_the_engine_a_file_would_run_on_or_why_it_would_be_refused() {
    let model = model_path();
    let engine = plan(&model, "cpu")["engine"].clone();
    assert!(
        engine.as_str().is_some_and(|e| e.starts_with("cpu-")),
        "{engine}"
    );
    assert_eq!(
        plan(&model, "cuda:0"),
        serde_json::json!({"engine": "candle"})
    );
    // What loading would refuse, `plan` refuses with the same words, without loading.
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(
        &corrupt,
        b"GGUF\x03\x00\x00\x00garbage that is not a header",
    )
    .expect("write");
    let refused = plan(&corrupt, "cpu")["refused"].clone();
    assert!(
        refused
            .as_str()
            .is_some_and(|r| r.contains("is not a readable GGUF file")),
        "{refused}"
    );
}
