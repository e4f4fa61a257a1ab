//! The portable worker (`scripts/release.sh`: cargo-zigbuild against glibc 2.17, the
//! build older hives get) computes what this machine's own build computes: the same
//! kernels, the same tokens, the same log-probabilities, bit for bit.

use std::path::{Path, PathBuf};

use rbee_protocol::InferenceEvent;
use serde_json::json;

use crate::support::{NO_QUEEN, Worker, text_of};

/// The portable worker the test command builds (in the lab profile: the worker's own code
/// optimised as in this one's);
/// run alone, the test builds it (minutes, once).
fn portable_worker() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(repo.join("scripts/release.sh"))
        .arg(repo.join("target/portable-bin"))
        .env("RBEE_PROFILE", "lab")
        .output()
        .expect("release.sh runs");
    assert!(
        out.status.success(),
        "scripts/release.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout);
    let binary =
        PathBuf::from(dir.lines().last().expect("a directory").trim()).join("llm-worker-rbee");
    assert!(binary.is_file(), "{}", binary.display());
    binary
}

#[tokio::test]
async fn the_portable_worker_gives_the_native_builds_tokens_and_logprobs_bit_for_bit() {
    let portable = portable_worker();
    let native = Worker::start(NO_QUEEN, None, &[]);
    let other = Worker::start_binary(&portable, NO_QUEEN, None, &[]);
    native.ready().await;
    other.ready().await;
    let engine = |worker: &Worker| {
        let worker = worker.request(reqwest::Method::GET, "/health");
        async move {
            let health: serde_json::Value = worker
                .send()
                .await
                .expect("health")
                .json()
                .await
                .expect("JSON");
            health["engine"].clone()
        }
    };
    let built_here = engine(&native).await;
    assert!(built_here.is_string(), "{built_here}");
    assert_eq!(engine(&other).await, built_here);
    for prompt in [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a land far away,",
    ] {
        let body =
            json!({ "prompt": prompt, "temperature": 0, "max_tokens": 24, "top_logprobs": 5 });
        let (a, b) = (native.infer(body.clone()).await, other.infer(body).await);
        assert!(!text_of(&a).is_empty());
        let tokens = |events: &[InferenceEvent]| -> Vec<(String, Vec<(String, u32)>)> {
            events
                .iter()
                .filter_map(|e| match e {
                    InferenceEvent::Token { lp, .. } => Some(lp.iter()),
                    _ => None,
                })
                .flatten()
                .map(|entry| {
                    let top = entry
                        .top
                        .iter()
                        .map(|t| (t.token.clone(), t.logprob.to_bits()))
                        .collect();
                    (entry.token.clone(), top)
                })
                .collect()
        };
        assert_eq!(tokens(&a), tokens(&b), "{prompt}");
        assert_eq!(text_of(&a), text_of(&b), "{prompt}");
    }
}
