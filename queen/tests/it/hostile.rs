//! Hostile names against a real lab hive: model ids, worker ids, devices, hive
//! patterns and file names carrying shell syntax, path traversal or newlines are
//! refused or passed as plain words, and never run; an install directory full of shell
//! syntax works like any other.

use std::path::{Path, PathBuf};

use rbee_config::Inventory;
use rbee_protocol::{ErrorCode, JobEvent};
use serde_json::json;

use crate::hives::{queen, recap, rows, terminal};
use crate::models::{hive_results, narrations};
use crate::support::{Lab, test_model};

/// Names that run `touch <marker>` if any shell ever interprets them.
fn payloads(marker: &str) -> Vec<String> {
    vec![
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("x;touch {marker}"),
        format!("x|touch {marker}"),
        format!("x&&touch {marker}"),
        format!("x\ntouch {marker}"),
        format!("org/repo:$(touch {marker}).gguf"),
        format!("'; touch {marker}; '"),
        "../../../../etc/passwd".to_owned(),
        "org/../../etc:passwd.gguf".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_or_quoted_and_nothing_runs_on_the_hive() {
    let lab = Lab::up(1);
    let unique = format!(
        "rbee-pwned-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    // The lab's hosts share this machine's file system: an absolute marker and a
    // relative one (which a remote shell would create in the login's home directory).
    let marker = std::env::temp_dir().join(&unique);
    let home_marker =
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(&unique);
    let absent = |when: &str| {
        for path in [&marker, &home_marker] {
            assert!(!path.exists(), "{} was created ({when})", path.display());
        }
    };

    // The hive's own install directory is full of shell syntax and a newline.
    let path = lab.dir.path().join("inventory.toml");
    let text = std::fs::read_to_string(&path).expect("inventory");
    let plain_dir = lab.dir.path().join("hosts/hive-1/rbee");
    let hostile_dir = format!(
        "{} $(touch {m}) `touch {m}`;touch {unique}|x\nx",
        plain_dir.display(),
        m = marker.display()
    );
    let text = text.replace(
        &format!("install_dir = \"{}\"", plain_dir.display()),
        &format!(
            "install_dir = {}\nvars = {{ queen_url = \"http://127.0.0.1:9\" }}",
            toml_string(&hostile_dir)
        ),
    );
    assert!(text.contains("touch"), "{text}");
    let inventory = Inventory::parse(&path, &text).expect("inventory");
    assert_eq!(inventory.hives["hive-1"].install_dir, hostile_dir);
    let queen = queen(inventory, |_| {}).await;

    for operation in ["hive_install", "hive_start"] {
        let events = queen
            .run(json!({"operation": operation, "hive_id": "hive-1"}))
            .await;
        assert_eq!(
            terminal(&events),
            &JobEvent::Done,
            "{:#?}",
            narrations(&events)
        );
    }
    let agent = Path::new(&hostile_dir).join("bin/rbee-hive");
    assert!(agent.is_file(), "installed under the literal directory");
    let model = test_model().display().to_string();
    let pushed = queen
        .run(json!({"operation": "model_push", "hive_id": "hive-1", "path": model}))
        .await;
    assert_eq!(recap(&pushed), rows(&[("hive-1", "changed")]));
    let listed = queen
        .run(json!({"operation": "model_list", "hive_id": "hive-1"}))
        .await;
    assert_eq!(
        hive_results(&listed, "hive-1")[0][0]["id"],
        "local:SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    absent("install, start, push and list in a hostile install_dir");

    // Every field that names something, given each payload: an error, never a panic,
    // and nothing runs.
    let mut operations = Vec::new();
    for payload in payloads(&marker.display().to_string())
        .into_iter()
        .chain(payloads(&unique))
    {
        operations.extend([
            json!({"operation": "model_download", "hive_id": "hive-1", "model": payload}),
            json!({"operation": "model_get", "hive_id": "hive-1", "model": payload}),
            json!({"operation": "model_delete", "hive_id": "hive-1", "model": payload}),
            json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": payload, "device": "cpu"}),
            json!({"operation": "worker_get", "worker_id": payload}),
            json!({"operation": "worker_stop", "worker_id": payload}),
            json!({"operation": "worker_logs", "worker_id": payload, "lines": 5}),
            json!({"operation": "hive_status", "hive_id": payload}),
            json!({"operation": "model_list", "hive_id": payload}),
        ]);
    }
    // A device name is parsed where the operation enters: refused before any job.
    for payload in payloads(&marker.display().to_string()) {
        let operation = json!({"operation": "worker_spawn", "hive_id": "hive-1", "model": "SmolLM2-135M-Instruct.Q4_1", "device": payload});
        let response = queen.post_operation(&operation).await;
        assert_eq!(response.status(), 400, "{operation}");
        absent(&operation.to_string());
    }
    for operation in operations {
        let events = queen.run(operation.clone()).await;
        let JobEvent::Error(error) = terminal(&events) else {
            panic!("{operation}: {events:#?}");
        };
        assert!(
            matches!(
                error.code,
                ErrorCode::BadRequest
                    | ErrorCode::NotFound
                    | ErrorCode::ModelNotFound
                    | ErrorCode::AgentFailed
            ),
            "{operation}: {error:?}"
        );
        absent(&operation.to_string());
    }

    // A file to push whose name is shell syntax is refused before any byte moves.
    let local = tempfile::tempdir().expect("tempdir");
    for name in [
        format!("$(touch {unique}).gguf"),
        format!("x;touch {unique}.gguf"),
        format!("x\ntouch {unique}.gguf"),
    ] {
        let file = local.path().join(&name);
        std::fs::copy(test_model(), &file).expect("copy");
        let events = queen
            .run(json!({"operation": "model_push", "hive_id": "hive-1", "path": file.display().to_string()}))
            .await;
        assert!(
            matches!(terminal(&events), JobEvent::Error(e) if e.code == ErrorCode::BadRequest),
            "{events:#?}"
        );
    }
    absent("pushes of hostile file names");

    // Uninstalling removes exactly the hostile directory's rbee parts, nothing beside.
    let events = queen
        .run(json!({"operation": "hive_uninstall", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    assert!(!agent.exists());
    assert!(Path::new(&hostile_dir).join("models").is_dir());
    assert!(lab.dir.path().join("hosts/hive-1").is_dir());
    absent("uninstall");

    // A hive alias with shell syntax never gets into an inventory.
    for alias in ["$(touch x)", "a;b", "../x", "a\nb"] {
        let text = format!("[hives.{}]\nhost = \"127.0.0.1\"\n", toml_string(alias));
        assert!(
            Inventory::parse(Path::new("inventory.toml"), &text).is_err(),
            "{alias:?} accepted"
        );
    }
    queen.stop().await;
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}
