//! The catalog on a real directory tree: what is listed, how specs resolve, when
//! delete refuses, and how pushed bytes land.

use std::fs;
use std::io::{Cursor, Read};
use std::path::Path;

use rbee_protocol::models::ModelEntry;
use sha2::{Digest, Sha256};

use super::*;

/// A small but well-formed GGUF file: architecture, file type, context length.
fn tiny_gguf(quant_file_type: u32) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(3u64.to_le_bytes());
    let string = |bytes: &mut Vec<u8>, s: &str| {
        bytes.extend((s.len() as u64).to_le_bytes());
        bytes.extend(s.as_bytes());
    };
    string(&mut bytes, "general.architecture");
    bytes.extend(8u32.to_le_bytes());
    string(&mut bytes, "llama");
    string(&mut bytes, "general.file_type");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(quant_file_type.to_le_bytes());
    string(&mut bytes, "llama.context_length");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(4096u32.to_le_bytes());
    string(&mut bytes, "w");
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(64u64.to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes
}

fn put(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join("models").join(relative);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("write");
}

fn ids(entries: &[ModelEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

fn catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    put(root, "org/repo-GGUF/m.Q4_K_M.gguf", &tiny_gguf(15));
    put(root, "org/repo-GGUF/m.Q8_0.gguf", &tiny_gguf(7));
    put(root, "other/solo/solo.Q4_0.gguf", &tiny_gguf(2));
    put(root, "local/pushed.gguf", &tiny_gguf(3));
    put(root, "local/broken.gguf", b"not a gguf");
    // Never listed: partial files, locks, other files.
    put(
        root,
        "org/repo-GGUF/.m.Q5_K_M.gguf.0123456789abcdef.partial",
        b"half",
    );
    put(root, "org/repo-GGUF/.m.Q4_K_M.gguf.lock", b"");
    put(root, "org/repo-GGUF/README.md", b"# readme");
    dir
}

#[test]
fn list_shows_complete_models_with_metadata_and_never_partials_or_locks() {
    let dir = catalog();
    let entries = list(dir.path()).expect("list");
    assert_eq!(
        ids(&entries),
        [
            "local:broken.gguf",
            "local:pushed.gguf",
            "org/repo-GGUF:m.Q4_K_M.gguf",
            "org/repo-GGUF:m.Q8_0.gguf",
            "other/solo:solo.Q4_0.gguf",
        ]
    );
    let q4 = &entries[2];
    assert_eq!(q4.file, "m.Q4_K_M.gguf");
    assert_eq!(
        Path::new(&q4.path),
        dir.path().join("models/org/repo-GGUF/m.Q4_K_M.gguf")
    );
    assert_eq!(q4.size, tiny_gguf(15).len() as u64);
    let metadata = q4.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.architecture.as_deref(), Some("llama"));
    assert_eq!(metadata.quantization.as_deref(), Some("Q4_K_M"));
    assert_eq!(metadata.context_length, Some(4096));
    assert_eq!(metadata.parameters, 64);
    assert!(!metadata.chat_template);
    let broken = &entries[0];
    assert!(broken.metadata.is_none());
    assert!(
        broken
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("GGUF magic")),
        "{broken:?}"
    );
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(list(empty.path()).expect("no models dir").is_empty());
}

#[test]
fn resolve_takes_full_ids_repo_ids_and_unique_file_names() {
    let dir = catalog();
    let cases = [
        ("org/repo-GGUF:m.Q8_0.gguf", "org/repo-GGUF:m.Q8_0.gguf"),
        ("local:pushed.gguf", "local:pushed.gguf"),
        ("other/solo", "other/solo:solo.Q4_0.gguf"),
        ("m.Q4_K_M.gguf", "org/repo-GGUF:m.Q4_K_M.gguf"),
        ("m.Q4_K_M", "org/repo-GGUF:m.Q4_K_M.gguf"),
        ("pushed", "local:pushed.gguf"),
    ];
    for (spec, id) in cases {
        assert_eq!(
            resolve(dir.path(), spec).map(|e| e.id).ok().as_deref(),
            Some(id),
            "{spec}"
        );
    }
    match resolve(dir.path(), "org/repo-GGUF") {
        Err(ambiguous @ ModelError::Ambiguous { .. }) => {
            // The candidates travel typed, so a client can offer them as a list.
            let detail = ambiguous.to_detail();
            assert_eq!(detail.choices.len(), 2, "{detail:?}");
            assert!(detail.message.contains(&detail.choices[0]), "{detail:?}");
        }
        other => panic!("two files of one repo are ambiguous: {other:?}"),
    }
    let miss = resolve(dir.path(), "nope").expect_err("no such model");
    let detail = miss.to_detail();
    assert_eq!(detail.code, rbee_protocol::ErrorCode::ModelNotFound);
    assert!(
        detail
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("other/solo:solo.Q4_0.gguf")),
        "the hint lists what the hive holds: {detail:?}"
    );
}

#[test]
fn delete_refuses_while_a_live_worker_uses_the_model() {
    let dir = catalog();
    let target = dir.path().join("models/other/solo/solo.Q4_0.gguf");
    let workers = dir.path().join("workers");
    fs::create_dir_all(&workers).expect("workers dir");
    let state = |pid: u32| {
        serde_json::json!({
            "worker_id": "w-1",
            "pid": pid,
            "model_path": target.display().to_string(),
            "model": "other/solo:solo.Q4_0.gguf",
            "device": "cpu",
            "port": 1,
            "url": "http://127.0.0.1:1",
            "log": "/dev/null",
            "queen_url": "http://127.0.0.1:2",
            "started_unix_s": 0,
        })
        .to_string()
    };
    // A process whose command line names the worker, as a real worker's does.
    let mut worker = std::process::Command::new("sh")
        .args(["-c", "sleep 30; true", "w-1"])
        .spawn()
        .expect("spawn");
    // Until the child has exec'd, its command line is still this test's.
    let cmdline = format!("/proc/{}/cmdline", worker.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fs::read(&cmdline).is_ok_and(|c| String::from_utf8_lossy(&c).contains("w-1")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never ran sh"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fs::write(workers.join("w-1.json"), state(worker.id())).expect("state");
    match delete(dir.path(), "other/solo") {
        Err(ModelError::InUse { workers, .. }) => assert_eq!(workers, ["w-1"]),
        other => panic!("a live worker's model must not be deleted: {other:?}"),
    }
    assert!(target.is_file());

    // A live pid that is not that worker (reused by the system for another program)
    // does not block, by the same rule `worker-list` uses to say the worker is gone.
    fs::write(workers.join("w-1.json"), state(std::process::id())).expect("state");
    worker.kill().expect("kill");
    worker.wait().expect("wait");
    let deleted = delete(dir.path(), "other/solo").expect("delete");
    assert_eq!(deleted.id, "other/solo:solo.Q4_0.gguf");
    assert!(!target.exists());
    assert!(!ids(&list(dir.path()).expect("list")).contains(&"other/solo:solo.Q4_0.gguf"));
}

#[test]
fn a_lock_left_by_a_killed_process_does_not_block_the_next_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("models/org/repo/m.gguf");
    fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    let lock = target.with_file_name(".m.gguf.lock");
    // flock(1) takes the lock, then waits for sleep; -o keeps the lock from sleep.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while transfer::FileLock::try_acquire(&target)
        .expect("lock")
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "flock(1) never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    // flock(1)'s forked child holds the descriptor until it closes it before exec, so
    // the release can trail the kill by a moment; it must come without any clean-up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut acquired = false;
    while !acquired && std::time::Instant::now() < deadline {
        acquired = transfer::FileLock::try_acquire(&target)
            .expect("lock")
            .is_some();
        if !acquired {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(acquired, "the kernel released the dead holder's lock");
}

#[test]
fn receive_reads_exactly_the_announced_bytes_and_checks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_gguf(3);
    let sha = hex::encode(Sha256::digest(&model));
    let size = model.len() as u64;
    let cancel = CancelFlag::new();

    let absent = receive::has(dir.path(), "m.gguf", size, &sha).expect("has");
    assert!(!absent.present);

    // Bytes after the announced size stay unread: the end of stdin comes after them.
    let mut input = Cursor::new([model.clone(), b"trailing".to_vec()].concat());
    let transfer =
        receive::receive(dir.path(), "m.gguf", size, &sha, &mut input, &cancel).expect("receive");
    assert_eq!(transfer.model.id, "local:m.gguf");
    assert_eq!(transfer.model.size, size);
    let mut rest = String::new();
    input.read_to_string(&mut rest).expect("rest");
    assert_eq!(rest, "trailing");
    assert!(
        receive::has(dir.path(), "m.gguf", size, &sha)
            .expect("has")
            .present
    );

    // Rewritten in place with other bytes of the same size, the file no longer
    // matches: the sha256 noted at receive time is not trusted past a change.
    let path = dir.path().join("models/local/m.gguf");
    let mut altered = model.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, &altered).expect("rewrite");
    let changed = receive::has(dir.path(), "m.gguf", size, &sha).expect("has");
    assert!(!changed.present);
    fs::write(&path, &model).expect("restore");

    // A wrong checksum and a short stream both fail and leave nothing behind.
    let wrong = "0".repeat(64);
    let err = receive::receive(
        dir.path(),
        "x.gguf",
        size,
        &wrong,
        &mut Cursor::new(model.clone()),
        &cancel,
    )
    .expect_err("wrong checksum");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let err = receive::receive(
        dir.path(),
        "y.gguf",
        size,
        &sha,
        &mut Cursor::new(model[..10].to_vec()),
        &cancel,
    )
    .expect_err("short");
    assert!(err.to_string().contains("expected"), "{err}");
    let local = fs::read_dir(dir.path().join("models/local"))
        .expect("local dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock") && !n.ends_with(".sha256"))
        .collect::<Vec<_>>();
    assert_eq!(local, ["m.gguf"], "no partial or failed file remains");

    for bad in ["../x.gguf", "x.bin", "a/b.gguf"] {
        assert!(receive::local_path(dir.path(), bad).is_err(), "{bad}");
    }
}
