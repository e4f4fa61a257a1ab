//! Model operations end to end: downloads from a local hub mirror onto lab hives over
//! real SSH (picking, interruption and resume, a corrupted file), pushes to two hives,
//! and the catalog with the real test model's GGUF metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbee_config::Inventory;
use rbee_protocol::{ErrorCode, JobEvent};
use serde_json::{Value, json};

use crate::hives::{queen, recap, rows, terminal};
use crate::hub_mirror::{HubMirror, MirrorFile};
use crate::support::Lab;
use crate::support::{Queen, payload, test_model};

pub(crate) const REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
pub(crate) const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub(crate) fn model_bytes() -> Arc<Vec<u8>> {
    Arc::new(std::fs::read(test_model()).expect("read the test model"))
}

/// The lab's inventory with each hive pointed at the mirror through the
/// `hf_endpoint` variable: in netns mode a hive reaches this machine only at its
/// link's near end (`10.x.I.1`), in loopback mode at 127.0.0.1.
fn inventory_with_mirror(lab: &Lab, port: u16) -> Inventory {
    let path = lab.dir.path().join("inventory.toml");
    Inventory::parse(&path, &inventory_text_with_mirror(lab, port))
        .expect("inventory with the mirror")
}

/// The text of [`inventory_with_mirror`].
pub(crate) fn inventory_text_with_mirror(lab: &Lab, port: u16) -> String {
    let path = lab.dir.path().join("inventory.toml");
    let text = std::fs::read_to_string(&path).expect("inventory");
    let netns =
        std::fs::read_to_string(lab.dir.path().join("mode")).is_ok_and(|m| m.trim() == "netns");
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if let Some(host) = line
            .strip_prefix("host = \"")
            .and_then(|h| h.strip_suffix('"'))
        {
            let near = match host.rsplit_once('.') {
                Some((net, _)) if netns => format!("{net}.1"),
                _ => "127.0.0.1".to_owned(),
            };
            out.push_str(&format!(
                "vars = {{ hf_endpoint = \"http://{near}:{port}\" }}\n"
            ));
        }
    }
    out
}

pub(crate) fn install_dir(lab: &Lab, hive: &str) -> PathBuf {
    lab.dir.path().join(format!("hosts/{hive}/rbee"))
}

/// Every file and directory under `dir`, relative, sorted.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for item in read.flatten() {
            let path = item.path();
            out.push(
                path.strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub(crate) fn hive_results(events: &[(Instant, JobEvent)], hive: &str) -> Vec<Value> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Result {
                hive: Some(h),
                result,
            } if h == hive => Some(payload(result)),
            _ => None,
        })
        .collect()
}

pub(crate) fn narrations(events: &[(Instant, JobEvent)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Narration(n) => Some(format!(
                "[{}] {}",
                n.hive.as_deref().unwrap_or("-"),
                n.human
            )),
            _ => None,
        })
        .collect()
}

fn progress_of(events: &[(Instant, JobEvent)], hive: &str) -> Vec<rbee_protocol::Progress> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Progress(p) if p.hive.as_deref() == Some(hive) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Whether an agent process downloading `repo` still runs (lab hosts share this
/// machine's process table).
pub(crate) fn agent_running(repo: &str) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline")).is_ok_and(|cmdline| {
            let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            words.iter().any(|w| w.ends_with(b"rbee-hive"))
                && words.iter().any(|w| *w == b"model-download")
                && words.iter().any(|w| w.starts_with(repo.as_bytes()))
        })
    })
}

async fn installed_lab_queen(lab: &Lab, mirror_port: u16) -> Queen {
    let queen = queen(inventory_with_mirror(lab, mirror_port), |_| {}).await;
    let install = queen
        .run(json!({"operation": "hive_install", "hive_id": "lab"}))
        .await;
    assert_eq!(terminal(&install), &JobEvent::Done, "{install:?}");
    queen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_download_over_ssh_resumes_after_a_cut_and_rejects_a_corrupt_file() {
    let lab = Lab::up(2);
    let mirror = HubMirror::start("0.0.0.0:0").await;
    let bytes = model_bytes();
    let size = bytes.len() as u64;
    // The first GET of each hive breaks off at 40%; each hive resumes with a Range.
    let mut flaky = MirrorFile::new(bytes.clone());
    flaky.cuts_left = 2;
    flaky.cut_at = size * 2 / 5;
    let sha256 = flaky.sha256.clone();
    mirror.add(REPO, FILE, flaky);
    mirror.add(
        REPO,
        "README.md",
        MirrorFile::new(Arc::new(b"# card".to_vec())),
    );
    let mut q8 = MirrorFile::new(Arc::new(b"not picked".to_vec()));
    q8.corrupt = true;
    mirror.add(REPO, "SmolLM2-135M-Instruct.Q8_0.gguf", q8);
    let queen = installed_lab_queen(&lab, mirror.addr.port()).await;

    // A repository without a file named: the agent picks by the usual preference.
    let first = queen
        .run(json!({"operation": "model_download", "hive_id": "lab", "model": REPO}))
        .await;
    assert_eq!(
        terminal(&first),
        &JobEvent::Done,
        "{:#?}",
        narrations(&first)
    );
    assert_eq!(
        recap(&first),
        rows(&[("hive-1", "changed"), ("hive-2", "changed")])
    );
    let said = narrations(&first);
    assert!(
        said.iter()
            .any(|l| l.starts_with("[hive-1]") && l.contains(&format!("picked {FILE}"))),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("broke off") && l.contains("Range")),
        "the cut was noticed and resumed: {said:#?}"
    );
    let ranges: Vec<String> = mirror.seen().into_iter().filter_map(|s| s.range).collect();
    assert_eq!(ranges.len(), 2, "one resume per hive: {ranges:?}");
    for range in &ranges {
        let from: u64 = range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .expect("bytes=N-");
        assert!(
            from > 0 && from <= size * 2 / 5,
            "resumed from the cut, not zero: {range}"
        );
    }
    for hive in ["hive-1", "hive-2"] {
        let progress = progress_of(&first, hive);
        let last = progress.last().expect("progress events");
        assert_eq!((last.current, last.total), (size, Some(size)));
        assert!(
            progress.iter().any(|p| p.rate.is_some_and(|r| r > 0)),
            "{progress:?}"
        );
        assert!(
            progress
                .iter()
                .all(|p| p.unit == "bytes" && p.label == FILE)
        );
        let transfer = &hive_results(&first, hive)[0];
        assert_eq!(transfer["changed"], true);
        assert_eq!(transfer["sha256"], sha256.as_str());
        assert_eq!(transfer["model"]["id"], format!("{REPO}:{FILE}"));
        let dir = install_dir(&lab, hive).join("models");
        let on_disk = std::fs::read(dir.join(REPO).join(FILE)).expect("downloaded file");
        assert!(
            on_disk == *bytes,
            "the file on {hive} is the mirror's, byte for byte"
        );
        let leftovers: Vec<String> = tree(&dir)
            .into_iter()
            .filter(|p| p.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    // Again: already there, nothing transferred.
    let again = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-1", "model": format!("{REPO}:{FILE}")}))
        .await;
    assert_eq!(recap(&again), rows(&[("hive-1", "ok")]));
    assert!(progress_of(&again, "hive-1").is_empty());

    // A file whose bytes do not match the announced sha256 is refused and removed.
    let mut corrupt = MirrorFile::new(bytes.clone());
    corrupt.corrupt = true;
    mirror.add("acme/broken", "broken.gguf", corrupt);
    let bad = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-2", "model": "acme/broken:broken.gguf"}))
        .await;
    let JobEvent::Error(error) = terminal(&bad) else {
        panic!("a corrupt download fails the job: {bad:?}");
    };
    assert_eq!(error.code, ErrorCode::AgentFailed);
    assert_eq!(recap(&bad), rows(&[("hive-2", "failed")]));
    let said = narrations(&bad).join("\n");
    assert!(said.contains("checksum mismatch"), "{said}");
    let broken_dir = install_dir(&lab, "hive-2").join("models/acme/broken");
    let left: Vec<String> = tree(&broken_dir)
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing of the corrupt file remains: {left:?}"
    );

    // A run whose every try breaks off fails and keeps its partial file; the next run
    // resumes it with a Range request from where it stopped.
    let mut stubborn = MirrorFile::new(bytes.clone());
    stubborn.cuts_left = 3;
    stubborn.cut_at = size / 3;
    mirror.add("acme/flaky", "flaky.gguf", stubborn);
    let cut = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-1", "model": "acme/flaky:flaky.gguf"}))
        .await;
    assert_eq!(recap(&cut), rows(&[("hive-1", "unreachable")]));
    assert!(
        narrations(&cut).join("\n").contains("broke off 3 time(s)"),
        "{:#?}",
        narrations(&cut)
    );
    let flaky_dir = install_dir(&lab, "hive-1").join("models/acme/flaky");
    let partial: Vec<PathBuf> = tree(&flaky_dir)
        .into_iter()
        .filter(|p| p.ends_with(".partial"))
        .map(|p| flaky_dir.join(p))
        .collect();
    assert_eq!(partial.len(), 1, "{:?}", tree(&flaky_dir));
    let kept = std::fs::metadata(&partial[0]).expect("partial").len();
    assert_eq!(kept, size / 3);
    let before = mirror.seen().len();
    let resumed = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-1", "model": "acme/flaky:flaky.gguf"}))
        .await;
    assert_eq!(
        recap(&resumed),
        rows(&[("hive-1", "changed")]),
        "{:#?}",
        narrations(&resumed)
    );
    let gets: Vec<_> = mirror.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET")
        .cloned()
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert!(std::fs::read(flaky_dir.join("flaky.gguf")).expect("resumed file") == *bytes);

    // Cancelling the job stops the agent on the hive (its stdin closes) and keeps the
    // partial file, which the next run resumes.
    let mut slow = MirrorFile::new(bytes.clone());
    slow.slow = true;
    mirror.add("acme/slow", "slow.gguf", slow);
    let slow_dir = install_dir(&lab, "hive-2").join("models/acme/slow");
    let download =
        json!({"operation": "model_download", "hive_id": "hive-2", "model": "acme/slow:slow.gguf"});
    let cancelled = tokio::join!(queen.run(download.clone()), async {
        let partial_size = || {
            tree(&slow_dir)
                .iter()
                .filter(|p| p.ends_with(".partial"))
                .filter_map(|p| std::fs::metadata(slow_dir.join(p)).ok())
                .map(|m| m.len())
                .next()
                .unwrap_or(0)
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while partial_size() < 1 << 20 {
            assert!(Instant::now() < deadline, "the slow download never started");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let jobs = queen.get_json("/v1/jobs").await;
        let job = jobs
            .as_array()
            .expect("jobs")
            .iter()
            .find(|j| j["state"] == "running")
            .expect("the running download")["job_id"]
            .as_str()
            .expect("id")
            .to_owned();
        queen
            .http
            .delete(format!("{}/v1/jobs/{job}", queen.url))
            .send()
            .await
            .expect("cancel");
    })
    .0;
    assert!(
        matches!(terminal(&cancelled), JobEvent::Cancelled { .. }),
        "{cancelled:?}"
    );
    let agent_gone = Instant::now() + std::time::Duration::from_secs(10);
    while agent_running("acme/slow") {
        assert!(
            Instant::now() < agent_gone,
            "the agent kept downloading after the cancel"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!slow_dir.join("slow.gguf").exists());
    let mut fast = MirrorFile::new(bytes.clone());
    fast.slow = false;
    mirror.add("acme/slow", "slow.gguf", fast);
    let finished = queen.run(download).await;
    assert_eq!(recap(&finished), rows(&[("hive-2", "changed")]));
    assert!(
        narrations(&finished)
            .iter()
            .any(|l| l.contains("resuming slow.gguf at byte")),
        "{:#?}",
        narrations(&finished)
    );
    assert!(std::fs::read(slow_dir.join("slow.gguf")).expect("resumed") == *bytes);

    // Two downloads of one model on one hive at once: one transfers, the other waits
    // for its lock and finds the file there; the file is whole.
    mirror.add("acme/twice", "twice.gguf", MirrorFile::new(bytes.clone()));
    let download = json!({"operation": "model_download", "hive_id": "hive-2", "model": "acme/twice:twice.gguf"});
    let (one, two) = tokio::join!(queen.run(download.clone()), queen.run(download));
    let mut outcomes = [recap(&one), recap(&two)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [rows(&[("hive-2", "changed")]), rows(&[("hive-2", "ok")])],
        "{:#?}",
        [narrations(&one), narrations(&two)]
    );
    let twice = install_dir(&lab, "hive-2").join("models/acme/twice/twice.gguf");
    assert!(std::fs::read(twice).expect("downloaded once") == *bytes);

    // A gated repository without the right token: refused, with the way out named.
    mirror.add(
        "acme/gated",
        "gated.gguf",
        MirrorFile::new(Arc::new(b"GGUF".to_vec())),
    );
    mirror.gate("acme/gated", "a-token-this-queen-does-not-have");
    let gated = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-1", "model": "acme/gated:gated.gguf"}))
        .await;
    assert_eq!(recap(&gated), rows(&[("hive-1", "failed")]));
    let said = narrations(&gated).join("\n");
    assert!(said.contains("401") && said.contains("HF_TOKEN"), "{said}");

    // Ids are validated before anything reaches a hive.
    let invalid = queen
        .run(json!({"operation": "model_download", "hive_id": "lab", "model": "x;rm -rf /"}))
        .await;
    assert!(matches!(terminal(&invalid), JobEvent::Error(e) if e.code == ErrorCode::BadRequest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_push_to_two_hives_once_and_the_catalog_shows_gguf_metadata() {
    let lab = Lab::up(2);
    let queen = installed_lab_queen(&lab, 9).await;
    let model = test_model();
    let size = std::fs::metadata(&model).expect("model").len();

    let pushed = queen
        .run(json!({"operation": "model_push", "hive_id": "lab", "path": model.display().to_string()}))
        .await;
    assert_eq!(
        terminal(&pushed),
        &JobEvent::Done,
        "{:#?}",
        narrations(&pushed)
    );
    assert_eq!(
        recap(&pushed),
        rows(&[("hive-1", "changed"), ("hive-2", "changed")])
    );
    for hive in ["hive-1", "hive-2"] {
        let progress = progress_of(&pushed, hive);
        assert_eq!(
            progress.last().map(|p| p.current),
            Some(size),
            "{progress:?}"
        );
        let file = install_dir(&lab, hive).join("models/local").join(FILE);
        assert_eq!(std::fs::metadata(&file).expect("pushed").len(), size);
    }
    let again = queen
        .run(json!({"operation": "model_push", "hive_id": "lab", "path": model.display().to_string()}))
        .await;
    assert_eq!(recap(&again), rows(&[("hive-1", "ok"), ("hive-2", "ok")]));
    assert!(
        !again
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Progress(_))),
        "nothing sent again"
    );

    let listed = queen
        .run(json!({"operation": "model_list", "hive_id": "all"}))
        .await;
    assert_eq!(terminal(&listed), &JobEvent::Done);
    let catalog = hive_results(&listed, "hive-2");
    let entries = catalog[0].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["id"], format!("local:{FILE}"));
    assert_eq!(entry["size"], size);
    let metadata = &entry["metadata"];
    assert_eq!(metadata["architecture"], "llama");
    assert_eq!(metadata["quantization"], "Q4_1");
    assert_eq!(metadata["context_length"], 8192);
    assert_eq!(metadata["chat_template"], true);
    // The engine a worker would run it on, as the hive's worker binary plans it.
    assert!(
        entry["engine"]
            .as_str()
            .is_some_and(|e| e.starts_with("cpu-")),
        "{entry}"
    );
    let parameters = metadata["parameters"].as_u64().expect("parameters");
    assert!(
        (130_000_000..140_000_000).contains(&parameters),
        "{parameters}"
    );

    // The OpenAI model list names what the hives hold.
    let openai = queen.get_json("/v1/models").await;
    let listed_models = openai["data"].as_array().expect("data");
    let held = listed_models
        .iter()
        .find(|m| m["id"] == format!("local:{FILE}"))
        .unwrap_or_else(|| panic!("{openai}"));
    assert_eq!(held["hives"], json!(["hive-1", "hive-2"]), "{openai}");

    // `get` takes the file stem when it is unique.
    let got = queen
        .run(json!({"operation": "model_get", "hive_id": "hive-1", "model": "SmolLM2-135M-Instruct.Q4_1"}))
        .await;
    assert_eq!(
        hive_results(&got, "hive-1")[0]["id"],
        format!("local:{FILE}")
    );
    assert_eq!(hive_results(&got, "hive-1")[0]["engine"], entry["engine"]);
    let missing = queen
        .run(json!({"operation": "model_get", "hive_id": "hive-1", "model": "nope"}))
        .await;
    let said = narrations(&missing).join("\n");
    assert!(
        said.contains(&format!("this hive holds: local:{FILE}")),
        "{said}"
    );

    // Delete refuses while a live worker's state file names the model.
    let workers = install_dir(&lab, "hive-1").join("workers");
    std::fs::create_dir_all(&workers).expect("workers dir");
    let held = install_dir(&lab, "hive-1").join("models/local").join(FILE);
    // A process whose command line names the worker, as a real worker's does.
    let mut worker = std::process::Command::new("sh")
        .args(["-c", "sleep 60; true", "w-1"])
        .spawn()
        .expect("spawn");
    std::fs::write(
        workers.join("w-1.json"),
        json!({
            "worker_id": "w-1", "pid": worker.id(), "model_path": held.display().to_string(),
            "model": format!("local:{FILE}"), "device": "cpu", "port": 1,
            "url": "http://127.0.0.1:1", "log": "/dev/null", "queen_url": "http://127.0.0.1:2",
            "started_unix_s": 0,
        })
        .to_string(),
    )
    .expect("state file");
    let refused = queen
        .run(json!({"operation": "model_delete", "hive_id": "hive-1", "model": format!("local:{FILE}")}))
        .await;
    assert_eq!(recap(&refused), rows(&[("hive-1", "failed")]));
    assert!(
        narrations(&refused)
            .join("\n")
            .contains("in use by worker(s) w-1")
    );
    assert!(held.is_file());
    worker.kill().expect("kill");
    worker.wait().expect("reap");
    std::fs::remove_file(workers.join("w-1.json")).expect("worker gone");
    let deleted = queen
        .run(json!({"operation": "model_delete", "hive_id": "lab", "model": FILE}))
        .await;
    assert_eq!(
        recap(&deleted),
        rows(&[("hive-1", "changed"), ("hive-2", "changed")])
    );
    let empty = queen
        .run(json!({"operation": "model_list", "hive_id": "hive-1"}))
        .await;
    assert_eq!(hive_results(&empty, "hive-1")[0], json!([]));
}

/// The in-process path (`local-hive`): a download with the queen's HF_TOKEN reaching a
/// gated repository, and a push.
#[cfg(feature = "local-hive")]
#[tokio::test]
async fn models_in_process_download_a_gated_repository_and_take_a_push() {
    let mirror = HubMirror::start("127.0.0.1:0").await;
    // As on the hub, the file's bytes come from a CDN the answer redirects to.
    let mut redirected = MirrorFile::new(model_bytes());
    redirected.redirect = true;
    mirror.add("acme/gated", FILE, redirected);
    mirror.gate("acme/gated", "hf_test_secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[hives.localhost]\nhost = \"127.0.0.1\"\nssh_port = 1\ninstall_dir = \"{}\"\nvars = {{ hf_endpoint = \"http://{}\" }}\n",
        dir.path().display(),
        mirror.addr
    );
    let inventory = Inventory::parse(Path::new("inventory.toml"), &text).expect("inventory");
    let mut config = rbee_config::Config::default();
    config.queen.hf_token = Some("hf_test_secret".to_owned());
    let queen = crate::support::start_queen(config, inventory).await;
    let events = queen
        .run(json!({"operation": "model_download", "hive_id": "localhost", "model": "acme/gated"}))
        .await;
    assert_eq!(
        terminal(&events),
        &JobEvent::Done,
        "{:#?}",
        narrations(&events)
    );
    assert!(dir.path().join("models/acme/gated").join(FILE).is_file());
    assert!(
        mirror.seen().iter().any(|s| s.path.starts_with("/cdn/")),
        "the bytes came through the redirect"
    );
    let verified = hive_results(&events, "localhost");
    assert_eq!(verified[0]["sha256"], MirrorFile::new(model_bytes()).sha256);
    assert!(
        mirror
            .seen()
            .iter()
            .filter(|s| s.path.contains("/resolve/"))
            .all(|s| s.authorization.as_deref() == Some("Bearer hf_test_secret"))
    );

    let model = test_model().display().to_string();
    let pushed = queen
        .run(json!({"operation": "model_push", "hive_id": "localhost", "path": model}))
        .await;
    assert_eq!(recap(&pushed), rows(&[("localhost", "changed")]));
    let progress = progress_of(&pushed, "localhost");
    let size = std::fs::metadata(test_model()).expect("model").len();
    assert_eq!(
        progress.last().map(|p| p.current),
        Some(size),
        "{progress:?}"
    );
    let again = queen
        .run(json!({"operation": "model_push", "hive_id": "localhost", "path": model}))
        .await;
    assert_eq!(recap(&again), rows(&[("localhost", "ok")]));
    let listed = queen
        .run(json!({"operation": "model_list", "hive_id": "localhost"}))
        .await;
    let ids: Vec<Value> = hive_results(&listed, "localhost")[0]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!(format!("acme/gated:{FILE}")),
            json!(format!("local:{FILE}"))
        ]
    );
    queen.state.shutdown.cancel();
}

/// A tmpfs mounted over a directory for the length of a test (root only; CI runs as
/// root), unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs the tests as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_download_with_a_hint_and_leaves_no_model_behind() {
    // The hive's model directory holds a third of the model. It is mounted before the
    // host starts: a lab host in a network namespace gets a copy of the mount table
    // when it starts, so a later mount would not reach it.
    let bytes = model_bytes();
    let lab = Lab::unstarted();
    let models = install_dir(&lab, "hive-1").join("models");
    let _disk = SmallDisk::mount(&models, &format!("{}k", bytes.len() / 3 / 1024));
    lab.script(&["up", "1"]);
    let mirror = HubMirror::start("0.0.0.0:0").await;
    mirror.add(REPO, FILE, MirrorFile::new(bytes.clone()));
    let queen = installed_lab_queen(&lab, mirror.addr.port()).await;

    let model = format!("{REPO}:{FILE}");
    let full = queen
        .run(json!({"operation": "model_download", "hive_id": "hive-1", "model": model}))
        .await;
    let JobEvent::Error(error) = terminal(&full) else {
        panic!("a full disk fails the job: {full:#?}");
    };
    assert_eq!(error.code, ErrorCode::AgentFailed, "{error:?}");
    assert_eq!(recap(&full), rows(&[("hive-1", "failed")]));
    let said = narrations(&full).join("\n");
    assert!(
        said.contains("is full") && said.contains("the partial file was deleted"),
        "{said}"
    );
    assert!(
        said.contains("df -h") && said.contains("install_dir"),
        "the hint says what to do: {said}"
    );
    // Nothing of it remains: the space is free again, and no model is listed.
    let left: Vec<String> = tree(&models)
        .into_iter()
        .filter(|p| models.join(p).is_file() && !p.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let listed = queen
        .run(json!({"operation": "model_list", "hive_id": "hive-1"}))
        .await;
    assert_eq!(hive_results(&listed, "hive-1")[0], json!([]));
    let got = queen
        .run(json!({"operation": "model_get", "hive_id": "hive-1", "model": model}))
        .await;
    assert_eq!(recap(&got), rows(&[("hive-1", "failed")]));
    assert!(
        narrations(&got).join("\n").contains("no model matches"),
        "{got:#?}"
    );
}
