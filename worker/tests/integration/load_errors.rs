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
