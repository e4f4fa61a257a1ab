//! Playbooks and inventories on the lab of real sshd hosts: site.toml converging four
//! hives and changing nothing the second time, `--check` changing nothing, a rolling
//! run stopping at `max_fail_percentage`, and an Ansible inventory imported.

use std::path::Path;
use std::time::Instant;

use rbee_config::{Config, Inventory};
use rbee_protocol::{JobEvent, OperationResult};
use serde_json::{Value, json};

use crate::support::{Lab, Queen, bin_dir, repo, start_queen_on, test_model};

const TOKEN: &str = "lab-api-token";

fn config(state_dir: &Path) -> Config {
    let mut config = Config::default();
    config.queen.bin_dir = Some(bin_dir());
    config.queen.connect_timeout_secs = 3;
    config.queen.operation_timeout_secs = 60;
    config.queen.api_token = Some(TOKEN.to_owned());
    config.queen.state_dir = Some(state_dir.to_path_buf());
    config.queen.heartbeat_interval_ms = 500;
    config
}

fn terminal(events: &[(Instant, JobEvent)]) -> &JobEvent {
    &events.last().expect("events").1
}

/// The PLAY RECAP: hive to its counts.
fn recap(events: &[(Instant, JobEvent)]) -> Vec<(String, Value)> {
    let result = Queen::result_of(events).expect("a recap");
    result["play_recap"]
        .as_array()
        .expect("play_recap")
        .iter()
        .map(|row| (row["hive"].as_str().expect("hive").to_owned(), row.clone()))
        .collect()
}

/// Each task's outcome on each hive: (hive, task, status).
fn outcomes(events: &[(Instant, JobEvent)]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::Result {
                hive: Some(hive),
                result: OperationResult::PlaybookTask(outcome),
            } => Some((
                hive.clone(),
                outcome.task.clone(),
                outcome.status.as_str().to_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn play(name: &str, content: &str, check: bool, dir: &Path) -> Value {
    json!({
        "operation": "playbook_run",
        "name": name,
        "content": content,
        "check": check,
        "dir": dir.display().to_string(),
    })
}

/// site.toml as shipped, pushing the test model from wherever the tests found it.
fn site() -> String {
    let text = std::fs::read_to_string(repo().join("playbooks/site.toml")).expect("site.toml");
    let line = text
        .lines()
        .find(|l| l.starts_with("model_file = "))
        .expect("site.toml sets model_file");
    text.replace(
        line,
        &format!("model_file = {:?}", test_model().display().to_string()),
    )
}

fn count(row: &Value, key: &str) -> u64 {
    row[key].as_u64().unwrap_or(u64::MAX)
}

/// Runs the keeper binary; its exit status, stdout and stderr.
fn keeper(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin_dir().join("rbee-keeper"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RBEE_QUEEN_URL")
        .env_remove("RBEE_API_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("keeper runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn site_converges_four_hives_and_the_second_run_changes_nothing() {
    let started = Instant::now();
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", started.elapsed().as_secs_f64());
    let lab = Lab::up(4);
    let inventory = lab.inventory(None);
    let state_dir = tempfile::tempdir().expect("state dir");
    // Workers on the hives must reach the queen: not loopback only, so a token.
    let queen = start_queen_on(config(state_dir.path()), inventory.clone(), "0.0.0.0:0").await;
    let playbooks = repo().join("playbooks");
    let site = site();

    // --check on a fresh lab: every hive would change, nothing does.
    let events = queen.run(play("site.toml", &site, true, &playbooks)).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    let rows = recap(&events);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (hive, row) in &rows {
        assert!(count(row, "changed") >= 3, "{hive} would change: {row}");
        assert_eq!(count(row, "failed") + count(row, "unreachable"), 0, "{row}");
    }
    for hive in inventory.hives.values() {
        let bin = Path::new(&hive.install_dir).join("bin");
        assert!(!bin.exists(), "--check pushed to {}", bin.display());
    }
    step("--check on the fresh lab changed nothing");

    let events = queen.run(play("site.toml", &site, false, &playbooks)).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    for (hive, row) in recap(&events) {
        assert_eq!(
            count(&row, "failed") + count(&row, "unreachable"),
            0,
            "{row}"
        );
        assert!(count(&row, "changed") >= 3, "{hive}: {row}");
    }
    let workers: Vec<Value> = queen
        .state
        .workers
        .list()
        .iter()
        .map(|w| json!(w))
        .collect();
    let mut hives: Vec<&str> = workers
        .iter()
        .filter(|w| w["status"] == "ready")
        .filter_map(|w| w["hive_id"].as_str())
        .collect();
    hives.sort();
    assert_eq!(
        hives,
        ["hive-1", "hive-2", "hive-3", "hive-4"],
        "{workers:#?}"
    );
    step("site.toml converged: agent, model and one ready worker on each hive");

    let events = queen.run(play("site.toml", &site, false, &playbooks)).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    for (hive, row) in recap(&events) {
        assert_eq!(
            count(&row, "changed"),
            0,
            "{hive} changed again: {row}\n{events:#?}"
        );
        assert_eq!(count(&row, "ok"), 5, "{hive}: {row}");
    }
    assert_eq!(queen.state.workers.list().len(), 4);
    step("the second run changed nothing");

    // Two workers on hive-1 through a play var, then back to one: worker_ensure moves
    // both ways.
    let two = site.replace("workers_per_hive = 1", "workers_per_hive = 2");
    let limited = |content: &str| {
        let mut op = play("site.toml", content, false, &playbooks);
        op["limit"] = json!("hive-1");
        op
    };
    let events = queen.run(limited(&two)).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    let rows = recap(&events);
    assert_eq!(rows.len(), 1, "--limit hive-1: {rows:?}");
    assert_eq!(count(&rows[0].1, "changed"), 1, "{rows:?}");
    let on_hive_1 = |queen: &Queen| {
        queen
            .state
            .workers
            .list()
            .iter()
            .filter(|w| w.heartbeat.hive_id == "hive-1")
            .count()
    };
    assert_eq!(on_hive_1(&queen), 2);
    let events = queen.run(limited(&site)).await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    assert_eq!(on_hive_1(&queen), 1);
    step("worker_ensure scaled hive-1 to two workers and back");

    // Teardown stops every worker, through the keeper binary; then nothing is left.
    let keeper_dir = tempfile::tempdir().expect("keeper dir");
    let keeper_config = keeper_dir.path().join("config.toml");
    let port = queen.state.listen_addr().port();
    std::fs::write(
        &keeper_config,
        format!("[queen]\nport = {port}\napi_token = \"{TOKEN}\"\n"),
    )
    .expect("keeper config");
    let teardown = playbooks.join("teardown.toml");
    let teardown = teardown.display().to_string();
    let (ok, stdout, stderr) = keeper(&keeper_config, &["play", &teardown]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    assert!(stderr.contains("changed: [hive-3]"), "{stderr}");
    assert!(
        queen
            .state
            .workers
            .list()
            .iter()
            .all(|w| !w.is_schedulable()),
        "a worker still serves after teardown"
    );
    let (ok, stdout, stderr) = keeper(&keeper_config, &["play", &teardown, "--json"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"changed\":0"), "{stdout}");
    assert!(!stdout.contains("\"changed\":1"), "{stdout}");
    step("teardown stopped every worker; again, it changed nothing");
    queen.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_run_stops_at_max_fail_percentage() {
    let lab = Lab::up(3);
    lab.script(&["stop-sshd", "2"]);
    let inventory = lab.inventory(None);
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), inventory.clone(), "127.0.0.1:0").await;
    let port = queen.state.listen_addr().port();
    let dir = tempfile::tempdir().expect("playbook dir");
    let book = dir.path().join("rolling.toml");
    std::fs::write(
        &book,
        r#"
[[play]]
name = "rolling install"
hosts = "lab"
serial = 1
max_fail_percentage = 0

[[play.tasks]]
name = "install"
hive_install = {}
retries = 1
delay = 1

[[play.tasks]]
name = "never here"
hive_start = {}
when = "inventory_hostname == 'hive-9'"
"#,
    )
    .expect("playbook");
    let keeper_config = dir.path().join("config.toml");
    std::fs::write(
        &keeper_config,
        format!("[queen]\nport = {port}\napi_token = \"{TOKEN}\"\n"),
    )
    .expect("keeper config");
    let path = book.display().to_string();
    let (ok, stdout, stderr) = keeper(&keeper_config, &["play", &path]);
    assert!(!ok, "a failed run exits non-zero:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    assert!(
        stderr.contains("attempt 1 of 2"),
        "the retry is shown: {stderr}"
    );
    assert!(stderr.contains("max_fail_percentage"), "{stderr}");
    assert!(stdout.contains("hive-2 : ok=0"), "{stdout}");
    assert!(!stdout.contains("hive-3"), "hive-3 never ran: {stdout}");

    let (ok, stdout, stderr) = keeper(&keeper_config, &["play", &path, "--json"]);
    assert!(!ok, "{stdout}\n{stderr}");
    let events: Vec<JobEvent> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect();
    let timed: Vec<(Instant, JobEvent)> = events.into_iter().map(|e| (Instant::now(), e)).collect();
    assert_eq!(
        outcomes(&timed),
        [
            ("hive-1".into(), "install".into(), "ok".into()),
            ("hive-1".into(), "never here".into(), "skipped".into()),
            ("hive-2".into(), "install".into(), "unreachable".into()),
        ],
        "{timed:#?}"
    );
    let rows = recap(&timed);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(count(&rows[1].1, "unreachable"), 1);
    let hive_3 = Path::new(&inventory.hives["hive-3"].install_dir).join("bin");
    assert!(!hive_3.exists(), "hive-3 was installed after the abort");
    assert!(matches!(timed.last(), Some((_, JobEvent::Error(_)))));
    queen.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ansible_ini_inventory_imports_to_the_same_hives_and_works() {
    let lab = Lab::up(2);
    let original = lab.inventory(None);
    let dir = tempfile::tempdir().expect("dir");
    let mut ini = String::from("[lab]\n");
    for hive in original.hives.values() {
        ini.push_str(&format!(
            "{} ansible_host={} ansible_port={} rack=r1\n",
            hive.alias,
            hive.host,
            hive.ssh_port.expect("lab port")
        ));
    }
    let first = original.hives.values().next().expect("a hive");
    ini.push_str(&format!(
        "\n[lab:vars]\nansible_user={}\nansible_ssh_private_key_file={}\nworker_device=cpu\n",
        first.ssh_user.as_deref().expect("lab user"),
        first.identity_file.as_deref().expect("lab key").display()
    ));
    let hosts = dir.path().join("hosts.ini");
    std::fs::write(&hosts, ini).expect("hosts.ini");
    let imported_path = dir.path().join("imported.toml");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, "").expect("config");
    let (ok, stdout, stderr) = keeper(
        &config_path,
        &[
            "inventory",
            "import",
            &hosts.display().to_string(),
            "--output",
            &imported_path.display().to_string(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    // The lab's install dirs and known_hosts file are rbee settings Ansible lacks.
    let mut text = std::fs::read_to_string(&imported_path).expect("imported");
    text.push_str(&format!(
        "\n# added for the lab\n[defaults]\nknown_hosts = {:?}\n",
        original
            .known_hosts
            .as_deref()
            .expect("lab known_hosts")
            .display()
            .to_string()
    ));
    for hive in original.hives.values() {
        text = text.replace(
            &format!("[hives.{}]\n", hive.alias),
            &format!(
                "[hives.{}]\ninstall_dir = {:?}\n",
                hive.alias, hive.install_dir
            ),
        );
    }
    let imported = Inventory::parse(&imported_path, &text).expect("imported parses");
    assert_eq!(imported.hives.len(), original.hives.len());
    for (alias, hive) in &original.hives {
        let got = &imported.hives[alias];
        assert_eq!(
            (
                &got.host,
                got.ssh_port,
                &got.ssh_user,
                &got.identity_file,
                &got.groups
            ),
            (
                &hive.host,
                hive.ssh_port,
                &hive.ssh_user,
                &hive.identity_file,
                &hive.groups
            ),
            "{alias}"
        );
        assert_eq!(got.vars["rack"].as_str(), Some("r1"));
        assert_eq!(got.vars["worker_device"].as_str(), Some("cpu"));
    }

    // The graph draws it, and the queen reaches every hive with it over real SSH.
    std::fs::write(&imported_path, &text).expect("rewrite");
    std::fs::write(
        &config_path,
        format!(
            "[queen]\ninventory = {:?}\n",
            imported_path.display().to_string()
        ),
    )
    .expect("config");
    let (ok, stdout, stderr) = keeper(&config_path, &["inventory", "graph"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "@all:\n  |--@lab:\n  |  |--hive-1\n  |  |--hive-2\n"
    );
    let state_dir = tempfile::tempdir().expect("state dir");
    let queen = start_queen_on(config(state_dir.path()), imported, "127.0.0.1:0").await;
    let events = queen
        .run(json!({"operation": "hive_install", "hive_id": "lab"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    let events = queen
        .run(json!({"operation": "inventory_check", "hive_id": "all"}))
        .await;
    assert_eq!(terminal(&events), &JobEvent::Done, "{events:#?}");
    queen.stop().await;
}

/// The Vagrant lab's Vagrantfile is valid (`vagrant validate`, Debian's vagrant,
/// installed by scripts/install-deps.sh); nothing is written into the repository.
#[test]
fn the_vagrant_lab_validates() {
    let state = repo().join("vagrant/.rbee");
    let had_state = state.exists();
    let home = tempfile::tempdir().expect("vagrant home");
    let dotfiles = tempfile::tempdir().expect("vagrant dotfiles");
    let out = std::process::Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(repo().join("vagrant"))
        .env("VAGRANT_HOME", home.path())
        .env("VAGRANT_DOTFILE_PATH", dotfiles.path())
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap_or_else(|e| panic!("vagrant: {e}; install it with scripts/install-deps.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("validated successfully"), "{text}");
    assert_eq!(state.exists(), had_state, "validate wrote vagrant/.rbee");
}
