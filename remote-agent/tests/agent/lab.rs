//! The agent over real SSH: `lab/lab.sh` starts OpenSSH hosts, the test runs this
//! build's agent on each of them through `ssh`, then tears the lab down.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rbee_config::{Hive, Inventory};
use rbee_protocol::OperationResult;

use crate::support::{AGENT, events_of, mem_total, result_of};

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/lab.sh")
}

fn lab(args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new("bash")
        .arg(lab_script())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run lab/lab.sh");
    assert!(
        output.status.success(),
        "lab.sh {args:?} failed: {output:?}"
    );
    output
}

/// Tears the lab down even when an assertion fails half-way.
struct Lab {
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(lab_script())
            .arg("down")
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}

fn sshd_pids(dir: &Path) -> Vec<String> {
    let mut pids: Vec<String> = std::fs::read_dir(dir.join("hosts"))
        .expect("hosts dir")
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("sshd.pid")).ok())
        .map(|pid| pid.trim().to_owned())
        .collect();
    pids.sort();
    pids
}

/// A zombie has exited; only its parent has yet to collect it.
fn is_running(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            != Some("Z")
    })
}

fn single_quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs the agent on `hive` through the ssh client, with the lab's key and host keys.
/// Stdin stays open until the agent is done: closing it would cancel the agent's work.
fn agent_over_ssh(hive: &Hive, inventory: &Inventory, agent_args: &[&str]) -> std::process::Output {
    let remote: Vec<String> = std::iter::once(AGENT)
        .chain(agent_args.iter().copied())
        .map(single_quoted)
        .collect();
    let known_hosts = inventory
        .known_hosts
        .as_ref()
        .expect("the lab's inventory names its known_hosts");
    let identity = hive
        .identity_file
        .as_ref()
        .expect("the lab's inventory names its key");
    let user = hive
        .ssh_user
        .as_deref()
        .expect("the lab's inventory names the user");
    let mut child = Command::new("ssh")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-F",
            "/dev/null",
        ])
        .arg("-p")
        .arg(hive.ssh_port.unwrap_or(22).to_string())
        .arg(format!("{user}@{}", hive.host))
        .arg(remote.join(" "))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let stdin = child.stdin.take();
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("read ssh stdout");
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut stderr)
        .expect("read ssh stderr");
    let status = child.wait().expect("wait for ssh");
    drop(stdin);
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn lab_hosts_run_the_agent_over_real_ssh() {
    let lab_dir = Lab {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let dir = lab_dir.dir.path();
    lab(&["up", "2"], dir);
    let first_pids = sshd_pids(dir);
    assert_eq!(first_pids.len(), 2);

    // A second `up` finds both hosts running and leaves them alone.
    lab(&["up", "2"], dir);
    assert_eq!(sshd_pids(dir), first_pids);

    let inventory =
        Inventory::load(&dir.join("inventory.toml"), true).expect("the lab's inventory loads");
    assert_eq!(inventory.hives.len(), 2);
    let netns = std::fs::read_to_string(dir.join("mode"))
        .expect("mode file")
        .trim()
        == "netns";
    for hive in inventory.hives.values() {
        assert!(hive.groups.contains("lab"));
        let output = agent_over_ssh(
            hive,
            &inventory,
            &[
                "--install-dir",
                &hive.install_dir,
                "--hive-id",
                &hive.alias,
                "detect",
            ],
        );
        assert!(output.status.success(), "{}: {output:?}", hive.alias);
        let OperationResult::Capabilities(capabilities) = result_of(&events_of(&output)) else {
            panic!("not the agent's answer");
        };
        assert_eq!(capabilities.ram_total, mem_total(), "{}", hive.alias);
        if netns {
            // Each namespaced host has its own hostname, like a machine.
            assert_eq!(capabilities.hostname, hive.alias);
        }
    }

    lab(&["down"], dir);
    for pid in first_pids {
        assert!(!is_running(&pid), "sshd {pid} still runs after down");
    }
    // `down` with nothing up is safe.
    lab(&["down"], dir);
}
