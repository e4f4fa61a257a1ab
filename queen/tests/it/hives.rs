//! Hive operations against a lab of real OpenSSH hosts (`lab/lab.sh`), with the real
//! agent and worker binaries pushed over SSH.

use std::time::{Duration, Instant};

use rbee_config::{Config, Inventory};
use rbee_protocol::{ErrorCode, JobEvent, OperationResult};

use crate::support::{Lab, Queen, bin_dir, payload, start_queen};
use serde_json::json;

pub(crate) async fn queen(inventory: Inventory, configure: impl FnOnce(&mut Config)) -> Queen {
    let mut config = Config::default();
    config.queen.bin_dir = Some(bin_dir());
    config.queen.connect_timeout_secs = 3;
    config.queen.operation_timeout_secs = 60;
    configure(&mut config);
    start_queen(config, inventory).await
}

pub(crate) fn recap(events: &[(Instant, JobEvent)]) -> Vec<(String, String)> {
    let value = events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            JobEvent::Result { hive: None, result } => Some(payload(result)),
            _ => None,
        })
        .expect("a recap result");
    value
        .as_array()
        .expect("recap rows")
        .iter()
        .map(|r| {
            (
                r["hive"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

pub(crate) fn terminal(events: &[(Instant, JobEvent)]) -> &JobEvent {
    &events.last().expect("events").1
}

pub(crate) fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_pushes_once_then_reports_unchanged_and_start_detects_devices() {
    let lab = Lab::up(2);
    let queen = queen(lab.inventory(None), |_| {}).await;

    let first = queen
        .run(json!({"operation": "hive_install", "hive_id": "lab"}))
        .await;
    assert_eq!(terminal(&first), &JobEvent::Done, "{first:?}");
    assert_eq!(
        recap(&first),
        rows(&[("hive-1", "changed"), ("hive-2", "changed")])
    );
    // Events stream while the push runs, not in one burst at the end.
    let first_progress = first
        .iter()
        .find(|(_, e)| matches!(e, JobEvent::Progress(_)))
        .expect("progress events")
        .0;
    let end = first.last().expect("end").0;
    assert!(
        end.duration_since(first_progress) > Duration::from_millis(50),
        "progress arrived only at the end"
    );
    // Each hive's row says what crossed the wire: the binaries stripped, compressed.
    let messages: Vec<String> = first
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            JobEvent::Result { hive: None, result } => Some(payload(result)),
            _ => None,
        })
        .and_then(|rows| rows.as_array().cloned())
        .expect("recap rows")
        .iter()
        .map(|row| row["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let local_worker = std::fs::metadata(bin_dir().join("llm-worker-rbee"))
        .expect("local worker")
        .len();
    for message in &messages {
        let megabytes: f64 = message
            .split(" MB on the wire, ")
            .next()
            .and_then(|head| head.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no size on the wire in {message:?}"));
        assert!(
            megabytes * 1e6 < local_worker as f64 / 3.0,
            "{message}: not much less than the {local_worker}-byte worker as built"
        );
    }
    for hive in ["hive-1", "hive-2"] {
        let agent = lab
            .dir
            .path()
            .join(format!("hosts/{hive}/rbee/bin/rbee-hive"));
        assert!(agent.is_file(), "{} was pushed", agent.display());
        // Installed stripped: smaller than the build.
        let worker = agent.with_file_name("llm-worker-rbee");
        let installed = std::fs::metadata(&worker).expect("worker").len();
        assert!(installed < local_worker, "{installed} vs {local_worker}");
        let leftovers: Vec<_> = std::fs::read_dir(agent.parent().expect("bin"))
            .expect("bin dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "no partial files remain");
    }

    let second = queen
        .run(json!({"operation": "hive_install", "hive_id": "all"}))
        .await;
    assert_eq!(recap(&second), rows(&[("hive-1", "ok"), ("hive-2", "ok")]));
    assert!(
        !second
            .iter()
            .any(|(_, e)| matches!(e, JobEvent::Progress(_))),
        "nothing uploaded the second time"
    );

    // A damaged agent is noticed by its checksum and pushed again before it is used.
    // Replaced, not rewritten in place: the hive's agent session runs that file, and
    // Linux refuses writes to a running executable (ETXTBSY).
    let agent = lab.dir.path().join("hosts/hive-2/rbee/bin/rbee-hive");
    let tampered = agent.with_file_name("tampered");
    std::fs::write(&tampered, b"#!/bin/sh\necho tampered\n").expect("damage the agent");
    std::fs::rename(&tampered, &agent).expect("replace the agent");
    let third = queen
        .run(json!({"operation": "hive_install", "hive_id": "all"}))
        .await;
    assert_eq!(
        recap(&third),
        rows(&[("hive-1", "ok"), ("hive-2", "changed")])
    );
    let repaired = std::fs::read(&agent).expect("agent");
    assert!(repaired.len() > 1000, "the real agent is back");

    let started = queen
        .run(json!({"operation": "hive_start", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&started), &JobEvent::Done, "{started:?}");
    let caps = started
        .iter()
        .find_map(|(_, e)| match e {
            JobEvent::Result {
                hive: Some(h),
                result: OperationResult::Capabilities(caps),
            } if h == "hive-1" => Some(serde_json::to_value(caps).expect("json")),
            _ => None,
        })
        .expect("capabilities");
    let cores = std::thread::available_parallelism().expect("cores").get() as u64;
    assert_eq!(caps["devices"][0]["id"], "CPU-0");
    assert_eq!(caps["devices"][0]["cores"], cores);
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(caps["ram_total"], total_kib * 1024);
    assert_eq!(caps["hostname"], "hive-1");
    assert!(queen.state.hives.get("hive-1").is_some_and(|r| r.online));
    let status = queen.run(json!({"operation": "status"})).await;
    let hives = status
        .iter()
        .find_map(|(_, e)| match e {
            JobEvent::Result {
                result: OperationResult::ClusterStatus(status),
                ..
            } => Some(serde_json::to_value(&status.hives).expect("json")),
            _ => None,
        })
        .expect("status result");
    assert_eq!(hives[0]["alias"], "hive-1");
    assert_eq!(hives[0]["online"], true);
    assert_eq!(hives[0]["devices"], json!(["CPU-0"]));
    assert_eq!(
        hives[1]["online"], false,
        "hive-2 was installed but not started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_keys_need_the_flag_and_changed_keys_are_refused() {
    let lab = Lab::up(1);
    let known_hosts = lab.dir.path().join("rbee_known_hosts");
    std::fs::write(&known_hosts, "").expect("empty known_hosts");

    let queen_a = queen(lab.inventory(Some(&known_hosts)), |_| {}).await;
    let refused = queen_a
        .run(json!({"operation": "hive_start", "hive_id": "hive-1"}))
        .await;
    match terminal(&refused) {
        JobEvent::Error(e) => {
            assert_eq!(e.code, ErrorCode::HostKeyUnknown);
            assert!(
                e.hint
                    .as_deref()
                    .unwrap_or("")
                    .contains("--accept-new-host-keys")
            );
        }
        other => panic!("expected host_key_unknown, got {other:?}"),
    }
    let shown = refused
        .iter()
        .any(|(_, e)| matches!(e, JobEvent::Narration(n) if n.human.contains("SHA256:")));
    assert!(shown, "the fingerprint is shown: {refused:?}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("read"),
        "",
        "nothing recorded without the flag"
    );

    let accepted = queen_a
        .run(json!({"operation": "hive_start", "hive_id": "hive-1", "accept_new_host_keys": true}))
        .await;
    assert_eq!(terminal(&accepted), &JobEvent::Done, "{accepted:?}");
    let recorded = std::fs::read_to_string(&known_hosts).expect("read");
    assert!(
        recorded.contains("ssh-ed25519"),
        "the key was recorded: {recorded}"
    );

    // The host gets a new key: a fresh queen (no pooled connection) must refuse it.
    lab.script(&["rekey", "1"]);
    let queen_b = queen(lab.inventory(Some(&known_hosts)), |_| {}).await;
    let changed = queen_b
        .run(json!({"operation": "hive_start", "hive_id": "hive-1", "accept_new_host_keys": true}))
        .await;
    match terminal(&changed) {
        JobEvent::Error(e) => assert_eq!(e.code, ErrorCode::HostKeyChanged, "{e:?}"),
        other => panic!("expected host_key_changed, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("read"),
        recorded,
        "a changed key is never recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stopped_sshd_is_unreachable_and_the_others_succeed() {
    let lab = Lab::up(4);
    lab.script(&["stop-sshd", "3"]);
    let queen = queen(lab.inventory(None), |_| {}).await;
    let started = Instant::now();
    let events = queen
        .run(json!({"operation": "hive_install", "hive_id": "all"}))
        .await;
    assert_eq!(
        recap(&events),
        rows(&[
            ("hive-1", "changed"),
            ("hive-2", "changed"),
            ("hive-3", "unreachable"),
            ("hive-4", "changed")
        ])
    );
    match terminal(&events) {
        JobEvent::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unreachable);
            assert!(e.message.contains("hive-3 (unreachable)"), "{}", e.message);
        }
        other => panic!("expected an error naming hive-3, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // The next operation reaches it again once sshd is back.
    lab.script(&["start-sshd", "3"]);
    let again = queen
        .run(json!({"operation": "hive_install", "hive_id": "all"}))
        .await;
    assert_eq!(
        recap(&again),
        rows(&[
            ("hive-1", "ok"),
            ("hive-2", "ok"),
            ("hive-3", "changed"),
            ("hive-4", "ok")
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_unreachable_within_the_deadline_and_the_next_operation_reconnects() {
    let lab = Lab::up(2);
    let installer = queen(lab.inventory(None), |_| {}).await;
    let events = installer
        .run(json!({"operation": "hive_install", "hive_id": "lab"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:?}");
    let queen = queen(lab.inventory(None), |config| {
        config.queen.operation_timeout_secs = 3;
    })
    .await;
    let check = json!({"operation": "inventory_check", "hive_id": "lab"});
    let events = queen.run(check.clone()).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:?}");
    // Pooled connections exist now; the link under one of them goes down.
    lab.script(&["cut", "1"]);
    let started = Instant::now();
    let cut = queen.run(check.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        recap(&cut),
        rows(&[("hive-1", "unreachable"), ("hive-2", "ok")])
    );
    lab.script(&["restore", "1"]);
    let restored = queen.run(check).await;
    assert_eq!(terminal(&restored), &JobEvent::Done, "{restored:?}");
    assert_eq!(
        recap(&restored),
        rows(&[("hive-1", "ok"), ("hive-2", "ok")])
    );
}

/// Runs `ip` with `args`, failing the test on error.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_from_ssh_config_tunnels_through_another_host() {
    let lab = Lab::up(2);
    let inventory = lab.inventory(None);
    let (one, two) = (
        inventory.hives["hive-1"].host.clone(),
        inventory.hives["hive-2"].host.clone(),
    );
    let slot = std::fs::read_to_string(lab.dir.path().join("slot"))
        .expect("slot")
        .trim()
        .to_owned();
    let subnet = |host: &str| format!("{}.0/30", host.rsplit_once('.').expect("ipv4").0);
    let gateway = |host: &str| format!("{}.1", host.rsplit_once('.').expect("ipv4").0);
    // Route hive-1 and hive-2 to each other through this machine, so hive-1 can serve as
    // the jump host to hive-2.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding (needs root)");
    ip(&[
        "netns",
        "exec",
        &format!("rbee-lab{slot}-hive-1"),
        "ip",
        "route",
        "replace",
        &subnet(&two),
        "via",
        &gateway(&one),
    ]);
    ip(&[
        "netns",
        "exec",
        &format!("rbee-lab{slot}-hive-2"),
        "ip",
        "route",
        "replace",
        &subnet(&one),
        "via",
        &gateway(&two),
    ]);

    let key = lab.dir.path().join("id_ed25519");
    let ssh_config = lab.dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host {two}\n    ProxyJump root@{one}\n\nHost {one}\n    IdentityFile {}\n",
            key.display()
        ),
    )
    .expect("ssh config");
    let queen = queen(inventory, |config| {
        config.queen.ssh_config = Some(ssh_config);
        config.queen.connect_timeout_secs = 5;
    })
    .await;

    let events = queen
        .run(json!({"operation": "hive_install", "hive_id": "hive-2"}))
        .await;
    assert_eq!(recap(&events), rows(&[("hive-2", "changed")]), "{events:?}");
    let log =
        std::fs::read_to_string(lab.dir.path().join("hosts/hive-2/sshd.log")).expect("sshd log");
    assert!(
        log.contains(&format!("from {one} port")),
        "hive-2 saw the connection come from hive-1:\n{log}"
    );
}

/// The agent processes answering in a session for the hive installed in `dir`.
fn sessions(dir: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{dir}/bin/rbee-hive serve$")])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_operations_share_one_agent_session_that_ends_with_the_connection() {
    let lab = Lab::up(1);
    let inventory = lab.inventory(None);
    let dir = inventory.hives["hive-1"].install_dir.clone();
    let queen = queen(inventory, |_| {}).await;
    let events = queen
        .run(json!({"operation": "hive_install", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    assert_eq!(sessions(&dir), 0, "install runs no agent");
    for operation in [
        "inventory_check",
        "hive_start",
        "hive_status",
        "hive_refresh",
    ] {
        let events = queen
            .run(json!({"operation": operation, "hive_id": "hive-1"}))
            .await;
        assert_eq!(
            terminal(&events),
            &JobEvent::Done,
            "{operation}: {events:#?}"
        );
        assert_eq!(sessions(&dir), 1, "after {operation}: one agent session");
    }
    // `hive stop` drops the connection; the agent sees its stdin end and exits.
    let events = queen
        .run(json!({"operation": "hive_stop", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions(&dir) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sessions(&dir), 0, "the session outlived its connection");
    queen.stop().await;
}

/// The files of `dir` whose names end with `suffix`, with their sizes.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<(std::path::PathBuf, u64)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default()
}

/// The recap message of the run's one hive.
fn recap_message(events: &[(Instant, JobEvent)]) -> String {
    crate::support::Queen::result_of(events)
        .and_then(|rows| rows[0]["message"].as_str().map(str::to_owned))
        .expect("a recap row")
}

fn bytes_sent(message: &str) -> u64 {
    message
        .split(" bytes sent")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes sent in {message:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_binary_push_resumes_and_sends_only_the_rest() {
    let lab = Lab::up(1);
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = queen(lab.inventory(None), |config| {
        config.queen.state_dir = Some(state_dir.path().to_owned());
    })
    .await;
    let bin = lab.dir.path().join("hosts/hive-1/rbee/bin");
    let install = json!({"operation": "hive_install", "hive_id": "hive-1"});

    // Cut for real: the job is cancelled once the worker binary has begun to land on
    // the hive, which closes the channel under the upload.
    let cutter = {
        let (bin, state) = (bin.clone(), queen.state.clone());
        tokio::spawn(async move {
            loop {
                let landed = files_ending(&bin, ".wire.partial")
                    .iter()
                    .any(|(path, size)| {
                        *size >= 64 << 10
                            && path.file_name().is_some_and(|n| {
                                n.to_string_lossy().starts_with(".llm-worker-rbee.")
                            })
                    });
                if landed {
                    state.jobs.cancel_all("cut by the test");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let first = queen.run(install.clone()).await;
    cutter.abort();
    assert!(
        matches!(terminal(&first), JobEvent::Cancelled { .. }),
        "{first:?}"
    );
    assert!(
        !bin.join("llm-worker-rbee").exists(),
        "nothing half-installed"
    );
    let partials = files_ending(&bin, ".wire.partial");
    let [(partial, _)] = partials.as_slice() else {
        panic!("one partial upload is kept: {partials:?}");
    };
    // The hive may still be writing what was in flight when the channel closed.
    let mut kept = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = std::fs::metadata(partial).expect("partial").len();
        if now == kept {
            break;
        }
        kept = now;
    }
    assert!(kept > 0, "something arrived before the cut");
    // A stale partial of other bytes (an earlier build) is not resumed, and goes.
    let stale = bin.join(".llm-worker-rbee.0123456789abcdef.wire.partial");
    std::fs::write(&stale, b"an earlier build").expect("stale partial");

    // The next install sends only the rest: its progress starts where the cut left
    // off, and the hive's row reports the bytes this push sent.
    let second = queen.run(install.clone()).await;
    assert_eq!(terminal(&second), &JobEvent::Done, "{second:?}");
    let message = recap_message(&second);
    assert!(
        message.contains(&format!("llm-worker-rbee resumed at byte {kept}")),
        "{message}"
    );
    // Only the worker was left to push: what was kept and what was sent make its wire
    // form exactly.
    let push_dir = state_dir.path().join("push");
    let wire = if message.contains("zstd") {
        ".zst"
    } else {
        ".gz"
    };
    let wire_size = files_ending(&push_dir, wire)
        .into_iter()
        .find(|(path, _)| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llm-worker-rbee-"))
        })
        .map(|(_, size)| size)
        .expect("the worker's wire form");
    let sent = bytes_sent(&message);
    assert_eq!(
        sent + kept,
        wire_size,
        "{message}: {sent} sent after {kept} kept"
    );
    assert!(sent < wire_size, "{message}");
    let first_progress = second
        .iter()
        .find_map(|(_, e)| match e {
            JobEvent::Progress(p) if p.label == "llm-worker-rbee" => Some(p.current),
            _ => None,
        })
        .expect("progress of the rest");
    assert!(first_progress > kept, "{first_progress} after {kept}");
    assert!(!partial.exists() && !stale.exists(), "partials are gone");
    let stripped = files_ending(&push_dir, ".stripped")
        .into_iter()
        .find(|(path, _)| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llm-worker-rbee-"))
        })
        .expect("the stripped worker");
    assert_eq!(
        std::fs::read(bin.join("llm-worker-rbee")).expect("installed worker"),
        std::fs::read(&stripped.0).expect("stripped worker"),
        "the hive runs the stripped worker, byte for byte"
    );

    // A damaged partial is caught by the wire file's checksum and removed; the push
    // after it starts over and sends everything.
    std::fs::remove_file(bin.join("llm-worker-rbee")).expect("remove the worker");
    std::fs::write(
        bin.join(partial.file_name().expect("name")),
        vec![0u8; kept as usize],
    )
    .expect("damage a partial");
    let damaged = queen.run(install.clone()).await;
    assert_eq!(
        recap(&damaged),
        rows(&[("hive-1", "failed")]),
        "{damaged:?}"
    );
    let message = recap_message(&damaged);
    assert!(message.contains("does not match its checksum"), "{message}");
    assert!(files_ending(&bin, ".wire.partial").is_empty());
    let whole = queen.run(install).await;
    assert_eq!(terminal(&whole), &JobEvent::Done, "{whole:?}");
    let message = recap_message(&whole);
    assert_eq!(bytes_sent(&message), wire_size, "{message}");
    assert!(!message.contains("resumed"), "{message}");
}
