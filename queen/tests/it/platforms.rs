//! Hives as they come: one whose C library is older than the binaries need is refused
//! before anything is pushed, each hive's OS, architecture and C library are reported,
//! a hive whose SSH user is not root works end to end within its home directory, a
//! Debian 11 hive (glibc 2.31) runs the main path on the portable binaries the queen
//! holds beside its own build, and so does an aarch64 hive (Debian 11 for arm64, under
//! QEMU) on the aarch64 set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rbee_protocol::platform::{GlibcVersion, Libc};
use rbee_protocol::{JobEvent, OperationResult};
use serde_json::{Value, json};

use crate::hives::{queen, recap, rows, terminal};
use crate::support::{Lab, bin_dir, repo, start_queen_on, test_model};
use crate::workers::{MODEL, config};

/// The newest `GLIBC_x.y` that `objdump` finds in a binary's version needs.
fn glibc_needed(binary: &Path) -> GlibcVersion {
    let out = std::process::Command::new("objdump")
        .arg("-p")
        .arg(binary)
        .output()
        .expect("objdump runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_").and_then(GlibcVersion::parse))
        .max()
        .expect("the binary names glibc versions")
}

/// A lab host whose PATH starts with `getconf` and `ldd` wrappers that report glibc
/// 2.17, as an older distribution's do.
fn host_with_old_glibc(lab: &Lab, index: u32) {
    let host = lab.dir.path().join(format!("hosts/hive-{index}"));
    let wrappers = host.join("old-glibc");
    std::fs::create_dir_all(&wrappers).expect("wrapper dir");
    let scripts = [
        (
            "getconf",
            "#!/bin/sh\nif [ \"$1\" = GNU_LIBC_VERSION ]; then echo 'glibc 2.17'; exit 0; fi\nexec /usr/bin/getconf \"$@\"\n",
        ),
        (
            "ldd",
            "#!/bin/sh\necho 'ldd (GNU libc) 2.17'\necho 'Copyright (C) 2012 Free Software Foundation, Inc.'\n",
        ),
    ];
    for (name, text) in scripts {
        let path = wrappers.join(name);
        std::fs::write(&path, text).expect("wrapper");
        std::process::Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .expect("chmod");
    }
    std::fs::write(
        host.join("environment"),
        format!(
            "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
            wrappers.display()
        ),
    )
    .expect("environment");
}

fn recap_rows(events: &[(Instant, JobEvent)]) -> Vec<Value> {
    crate::support::Queen::result_of(events)
        .and_then(|v| v.as_array().cloned())
        .expect("a recap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hive_with_an_older_glibc_is_refused_before_any_byte_is_pushed() {
    let lab = Lab::unstarted();
    host_with_old_glibc(&lab, 1);
    lab.script(&["up", "2"]);
    let inventory = lab.inventory(None);
    let old_dir = PathBuf::from(&inventory.hives["hive-1"].install_dir);
    let new_dir = PathBuf::from(&inventory.hives["hive-2"].install_dir);
    let old_host = inventory.hives["hive-1"].host.clone();
    let queen = queen(inventory, |_| {}).await;

    // `hive add`'s probe already says so, before the hive is even in the inventory.
    let probed = queen
        .run(
            json!({"operation": "hive_probe", "alias": "candidate", "host": old_host,
                     "install_dir": old_dir.display().to_string()}),
        )
        .await;
    assert_eq!(terminal(&probed), &JobEvent::Done, "{probed:#?}");
    let probe = crate::support::Queen::result_of(&probed).expect("a probe");
    assert_eq!(
        probe["libc"],
        json!({"kind": "glibc", "version": "2.17"}),
        "{probe}"
    );
    assert!(
        probed.iter().any(|(_, e)| format!("{e:?}")
            .contains("`hive install` will refuse it: candidate has glibc 2.17, but")),
        "{probed:#?}"
    );

    let events = queen
        .run(json!({"operation": "hive_install", "hive_id": "lab"}))
        .await;
    assert_eq!(
        recap(&events),
        rows(&[("hive-1", "failed"), ("hive-2", "changed")]),
        "{events:#?}"
    );
    let refused = recap_rows(&events)
        .into_iter()
        .find(|r| r["hive"] == "hive-1")
        .expect("hive-1's row");
    assert_eq!(refused["code"], "unsupported_platform", "{refused}");
    // Both versions are named: the hive's, and the one read from the first binary
    // (in push order) that needs a newer one.
    let old = GlibcVersion::parse("2.17").expect("version");
    let (name, needed) = ["rbee-hive", "llm-worker-rbee"]
        .into_iter()
        .map(|name| (name, glibc_needed(&bin_dir().join(name))))
        .find(|(_, needed)| *needed > old)
        .expect("a binary built here needs a glibc newer than 2.17");
    assert_eq!(
        refused["message"],
        format!(
            "hive-1 has glibc 2.17, but {name} needs glibc {needed} or newer; nothing was pushed"
        ),
    );
    let JobEvent::Error(error) = terminal(&events) else {
        panic!("{events:#?}")
    };
    assert!(error.message.contains("hive-1"), "{error:?}");
    // Not one byte landed: the install directory is as the lab made it, empty.
    let left: Vec<_> = std::fs::read_dir(&old_dir)
        .expect("install dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The hive beside it, on this machine's glibc, installed.
    assert!(new_dir.join("bin/rbee-hive").is_file());
    assert!(new_dir.join("bin/llm-worker-rbee").is_file());
    queen.stop().await;
}

/// The platform results a job's events carry, by hive.
fn platforms(events: &[(Instant, JobEvent)]) -> Vec<(String, String, String, Libc)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Result {
                hive: Some(hive),
                result: OperationResult::Platform(p),
            } => Some((hive.clone(), p.os.clone(), p.arch.clone(), p.libc.clone())),
            JobEvent::Result {
                hive: Some(hive),
                result: OperationResult::AgentStatus(status),
            } => {
                let caps = &status.capabilities;
                Some((
                    hive.clone(),
                    caps.os.clone(),
                    caps.arch.clone(),
                    caps.libc.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// This machine's glibc, as `getconf` says.
fn local_glibc() -> Libc {
    let out = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .expect("getconf");
    Libc::from_probe(&String::from_utf8_lossy(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_status_and_model_list_name_each_hives_os_architecture_and_libc() {
    let lab = Lab::up(1);
    let queen = queen(lab.inventory(None), |_| {}).await;
    queen.run_each(&["hive_install"], "hive-1").await;
    let expected = vec![(
        "hive-1".to_owned(),
        std::env::consts::OS.to_owned(),
        std::env::consts::ARCH.to_owned(),
        local_glibc(),
    )];
    assert!(matches!(expected[0].3, Libc::Glibc { .. }));
    // Before `hive start` the queen asks the agent; after it, it knows.
    for operation in ["model_list", "hive_start", "hive_status", "model_list"] {
        let events = queen
            .run(json!({"operation": operation, "hive_id": "hive-1"}))
            .await;
        assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
        if operation != "hive_start" {
            assert_eq!(platforms(&events), expected, "{operation}: {events:#?}");
            let row = &recap_rows(&events)[0];
            let libc = expected[0].3.to_string();
            assert!(
                row["message"].as_str().is_some_and(|m| m.contains(&libc)),
                "{operation}: {row}"
            );
        }
    }
    queen.stop().await;
}

/// The account the lab logs in as on its unprivileged host.
const USER: &str = "rbee-lab-user";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hive_whose_user_is_not_root_works_within_its_home_directory() {
    let lab = Lab::unstarted();
    let host = lab.dir.path().join("hosts/hive-1");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("user"), format!("{USER}\n")).expect("user file");
    lab.script(&["up", "1"]);
    let inventory = lab.inventory(None);
    assert_eq!(inventory.hives["hive-1"].ssh_user.as_deref(), Some(USER));
    assert_eq!(inventory.hives["hive-1"].install_dir, "~/.rbee");
    let home = PathBuf::from(format!("/home/{USER}"));
    let install_dir = home.join(".rbee");
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), inventory, "0.0.0.0:0").await;

    queen
        .run_each(&["hive_install", "hive_start"], "hive-1")
        .await;
    let model = test_model();
    let pushed = queen
        .run(json!({"operation": "model_push", "hive_id": "hive-1",
                     "path": model.display().to_string()}))
        .await;
    assert_eq!(terminal(&pushed), &JobEvent::Done, "{pushed:#?}");
    let spawned = queen
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1",
                     "model": MODEL, "device": "cpu"}))
        .await;
    assert_eq!(terminal(&spawned), &JobEvent::Done, "{spawned:#?}");

    // Everything landed in the user's home, owned by the user.
    let uid = owner_uid(&home);
    assert_ne!(uid, 0);
    for path in [
        install_dir.join("bin/rbee-hive"),
        install_dir.join("bin/llm-worker-rbee"),
        install_dir.join(format!("models/local/{MODEL}.gguf")),
    ] {
        assert_eq!(owner_uid(&path), uid, "{}", path.display());
    }
    let worker_files: Vec<_> = std::fs::read_dir(install_dir.join("workers"))
        .expect("workers dir")
        .flatten()
        .collect();
    assert_eq!(worker_files.len(), 1, "{worker_files:?}");

    assert_answers_paris(&queen).await;

    let removed = queen
        .run(json!({"operation": "hive_uninstall", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&removed), &JobEvent::Done, "{removed:#?}");
    assert_eq!(
        recap(&removed),
        [("hive-1".to_owned(), "changed".to_owned())]
    );
    assert!(!install_dir.join("bin").exists());
    assert!(!install_dir.join("workers").exists());
    // Models are kept, as uninstall promises.
    assert!(
        install_dir
            .join(format!("models/local/{MODEL}.gguf"))
            .is_file()
    );
    queen.stop().await;
}

fn owner_uid(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// Runs a repository script that prints a path on its last line, and returns the path.
fn script_output(script: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let out = std::process::Command::new(repo().join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("script runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

/// A queen bin_dir as `scripts/release.sh` and a build leave it: this machine's own
/// build (needing its glibc) in the directory, the portable build (glibc 2.17) in
/// `x86_64-unknown-linux-gnu/`. The test command makes both beforehand; run alone, the
/// test makes what is missing (minutes, once).
fn bin_dir_with_portable_set(dir: &Path) -> PathBuf {
    let portable = script_output(
        "scripts/release.sh",
        &[&repo().join("target/portable-bin").display().to_string()],
        &[("RBEE_PROFILE", "lab")],
    );
    for name in ["rbee-hive", "llm-worker-rbee"] {
        std::os::unix::fs::symlink(bin_dir().join(name), dir.join(name)).expect("symlink");
    }
    let target = portable.file_name().expect("a target directory");
    std::os::unix::fs::symlink(&portable, dir.join(target)).expect("symlink");
    portable
}

/// A lab of one host, hive-1, that is the distribution in `root` (lab/README.md).
fn rooted_lab(root: &Path) -> (Lab, PathBuf) {
    let lab = Lab::unstarted();
    let host = lab.dir.path().join("hosts/hive-1");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("root"), format!("{}\n", root.display())).expect("root file");
    lab.script(&["up", "1"]);
    (lab, host)
}

/// The main path on hive-1 of a rooted lab `host` whose bin_dir is `bins`: install
/// pushes `set`'s bytes and says `picked`; the started hive reports linux, `arch` and
/// glibc 2.31; the test model is pushed and a worker spawned on it (`engine`, when
/// given, is the one it reports); the queen's answer says Paris.
async fn main_path_on_rooted_host(
    lab: &Lab,
    host: &Path,
    bins: &Path,
    set: &Path,
    picked: &str,
    arch: &str,
    engine: Option<&str>,
) {
    let state_dir = tempfile::tempdir().expect("state dir");
    let mut config = config(state_dir.path());
    config.queen.bin_dir = Some(bins.to_path_buf());
    let queen = start_queen_on(config, lab.inventory(None), "0.0.0.0:0").await;

    let installed = queen
        .run(json!({"operation": "hive_install", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&installed), &JobEvent::Done, "{installed:#?}");
    assert_eq!(recap(&installed), rows(&[("hive-1", "changed")]));
    assert!(
        installed
            .iter()
            .any(|(_, e)| format!("{e:?}").contains(picked)),
        "{installed:#?}"
    );
    let upper = host.join("upper/root/.rbee/bin");
    for name in ["rbee-hive", "llm-worker-rbee"] {
        let pushed = std::fs::read(upper.join(name)).expect("pushed binary");
        let built = std::fs::read(set.join(name)).expect("the set's binary");
        assert!(
            pushed == built,
            "{name} on the hive is not {}'s",
            set.display()
        );
    }

    let started = queen
        .run(json!({"operation": "hive_start", "hive_id": "hive-1"}))
        .await;
    assert_eq!(terminal(&started), &JobEvent::Done, "{started:#?}");
    let status = queen
        .run(json!({"operation": "hive_status", "hive_id": "hive-1"}))
        .await;
    assert_eq!(
        platforms(&status),
        vec![(
            "hive-1".to_owned(),
            "linux".to_owned(),
            arch.to_owned(),
            Libc::from_probe("glibc 2.31")
        )],
        "{status:#?}"
    );
    let pushed = queen
        .run(json!({"operation": "model_push", "hive_id": "hive-1",
                     "path": test_model().display().to_string()}))
        .await;
    assert_eq!(terminal(&pushed), &JobEvent::Done, "{pushed:#?}");
    let spawned = queen
        .run(json!({"operation": "worker_spawn", "hive_id": "hive-1",
                     "model": MODEL, "device": "cpu"}))
        .await;
    assert_eq!(terminal(&spawned), &JobEvent::Done, "{spawned:#?}");
    if let Some(engine) = engine {
        let listed = queen.run(json!({"operation": "worker_list"})).await;
        let engines: Vec<Option<String>> = listed
            .iter()
            .filter_map(|(_, e)| match e {
                JobEvent::Result {
                    result: OperationResult::Workers(workers),
                    ..
                } => Some(workers.iter().map(|w| w.heartbeat.engine.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(engines, [Some(engine.to_owned())], "{listed:#?}");
    }
    assert_answers_paris(&queen).await;
    queen.stop().await;
}

/// The queen's greedy answer to the capital question, in 8 tokens, says Paris.
async fn assert_answers_paris(queen: &crate::support::Queen) {
    let answer = queen
        .run(json!({
            "operation": "infer",
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            "max_tokens": 8,
            "temperature": 0.0,
        }))
        .await;
    assert_eq!(terminal(&answer), &JobEvent::Done, "{answer:#?}");
    let text: String = answer
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Token { t, .. } => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(text.contains("Paris"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debian_11_hive_runs_the_main_path_on_the_portable_binaries() {
    let root = script_output("lab/debian-root.sh", &["bullseye"], &[]);
    let (lab, host) = rooted_lab(&root);
    let bins = tempfile::tempdir().expect("bin dir");
    let portable = bin_dir_with_portable_set(bins.path());
    // The hive's glibc is older than this machine's build needs, so the portable set
    // goes, and the operator is told so.
    main_path_on_rooted_host(
        &lab,
        &host,
        bins.path(),
        &portable,
        "cannot run the queen's own build; using bin_dir/x86_64-unknown-linux-gnu: x86_64, glibc 2.17 or newer",
        "x86_64",
        None,
    )
    .await;
}

/// The aarch64 set, as `scripts/release.sh --targets aarch64` leaves it: built by Debian
/// sid's rustc in the cross toolchain's root (scripts/cross-toolchain.sh) against glibc
/// 2.17. The test command makes it beforehand; run alone, the test makes what is missing
/// (minutes, once).
fn aarch64_set() -> PathBuf {
    script_output(
        "scripts/release.sh",
        &[
            "--targets",
            "aarch64",
            &repo().join("target/portable-bin").display().to_string(),
        ],
        &[("RBEE_PROFILE", "lab")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aarch64_hive_runs_the_main_path_on_the_aarch64_binaries() {
    let root = script_output("lab/debian-root.sh", &["--arch", "arm64", "bullseye"], &[]);
    let (lab, host) = rooted_lab(&root);
    // The queen holds three sets: its own build and the portable x86-64 one, which the
    // hive cannot run, and the aarch64 one.
    let bins = tempfile::tempdir().expect("bin dir");
    bin_dir_with_portable_set(bins.path());
    let arm = aarch64_set();
    let target = arm.file_name().expect("a target directory");
    assert_eq!(target, "aarch64-unknown-linux-gnu");
    std::os::unix::fs::symlink(&arm, bins.path().join(target)).expect("symlink");
    let needed = ["rbee-hive", "llm-worker-rbee"]
        .into_iter()
        .map(|name| glibc_needed(&arm.join(name)))
        .max()
        .expect("two binaries");
    assert!(
        needed <= GlibcVersion::parse("2.31").expect("version"),
        "{needed}"
    );
    // The worker computes with its NEON kernels, which QEMU runs as an ARM core would.
    main_path_on_rooted_host(
        &lab,
        &host,
        bins.path(),
        &arm,
        &format!(
            "hive-1 cannot run the queen's own build; using bin_dir/aarch64-unknown-linux-gnu: aarch64, glibc {needed} or newer"
        ),
        "aarch64",
        Some("cpu-neon"),
    )
    .await;
}
