//! `hive add` and `hive remove` as a script runs them (the real keeper, no terminal)
//! against a real lab host: an unknown host key is refused with its fingerprint
//! shown, the hive lands in the queen's inventory file with every other byte of the
//! file kept, the running queen installs and reports on it without a restart, and
//! removing it gives the file back as it was. A model name that two files match is an
//! error listing both. A reload of a file edited by hand keeps what the queen knows of
//! the hives that did not change.

use std::path::Path;

use rbee_config::Inventory;
use rbee_protocol::JobEvent;
use serde_json::{Value, json};

use crate::on_demand::keeper;
use crate::support::{Lab, start_queen_on};
use crate::workers::config;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_adds_a_lab_host_the_queen_then_serves_and_removes_it_leaving_the_file_as_it_was()
{
    let lab = Lab::up(2);
    let hosts = lab.inventory(None);
    let (first, second) = (&hosts.hives["hive-1"], &hosts.hives["hive-2"]);
    let dir = tempfile::tempdir().expect("queen dir");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").expect("known_hosts");
    // Hand-written: comments, blank lines, odd spacing and key order must all survive.
    let original = format!(
        "# The queen's hives, by hand.\n\
         [defaults]\n\
         ssh_user = \"root\"      # the lab logs in as root\n\
         identity_file = \"{}\"\n\
         known_hosts = \"{}\"   # starts empty: every key is new\n\
         \n\
         # The first lab host.\n\
         [hives.hive-1]\n\
         install_dir = \"{}\"\n\
         host = \"{}\"\n\
         groups = [ \"lab\" ]\n\
         \n\
         # Groups come last.\n\
         [groups.lab]\n\
         vars = {{ tier = \"test\" }}\n",
        lab.dir.path().join("id_ed25519").display(),
        known_hosts.display(),
        first.install_dir,
        first.host,
    );
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, &original).expect("inventory");
    let inventory = Inventory::load(&path, true).expect("inventory loads");
    // On every address, so the hive's workers could reach it (the worker spawn below).
    let queen = start_queen_on(config(&dir.path().join("state")), inventory, "0.0.0.0:0").await;
    let install_dir = second.install_dir.clone();
    let add = [
        "hive",
        "add",
        "hive-2",
        "--host",
        second.host.as_str(),
        "--install-dir",
        install_dir.as_str(),
        "--group",
        "lab",
    ];

    // An unknown host key without --accept-new-host-keys: refused, fingerprint shown,
    // nothing written or trusted.
    let refused = keeper(&queen, &add).await;
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("SHA256:"),
        "the fingerprint is shown: {stderr}"
    );
    assert!(stderr.contains("--accept-new-host-keys"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("inventory"), original);
    assert_eq!(std::fs::read_to_string(&known_hosts).expect("kh"), "");
    assert!(!queen.state.inventory().hives.contains_key("hive-2"));

    // With it: probed, trusted, written after the last hive, nothing else touched.
    let mut accepted = add.to_vec();
    accepted.push("--accept-new-host-keys");
    let added = keeper(&queen, &accepted).await;
    let stdout = text(&added.stdout);
    assert!(added.status.success(), "{stdout}{}", text(&added.stderr));
    assert!(
        stdout.contains("SHA256:") && stdout.contains("writable"),
        "{stdout}"
    );
    assert!(stdout.contains("added hive-2"), "{stdout}");
    let table = format!(
        "\n[hives.hive-2]\nhost = \"{}\"\ninstall_dir = \"{install_dir}\"\ngroups = [\"lab\"]\n",
        second.host
    );
    let at = original.find("\n# Groups come last.").expect("marker");
    let expected = format!("{}{table}{}", &original[..at], &original[at..]);
    assert_eq!(std::fs::read_to_string(&path).expect("inventory"), expected);
    let trusted = std::fs::read_to_string(&known_hosts).expect("kh");
    let keys: Vec<&str> = trusted.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(keys.len(), 1, "{trusted}");
    assert!(keys[0].starts_with(&second.host), "{trusted}");

    // The running queen knows it now: install and status, no restart.
    assert!(
        queen.state.inventory().hives["hive-2"]
            .groups
            .contains("lab")
    );
    queen
        .run_each(&["hive_install", "hive_status"], "hive-2")
        .await;
    let status = keeper(&queen, &["hive", "status", "hive-2"]).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("hive-2"));

    // Two files with one stem: a script is told both names and what to pass.
    let models = Path::new(&install_dir).join("models");
    for dir in ["local", "acme/twin"] {
        std::fs::create_dir_all(models.join(dir)).expect("models dir");
        std::fs::write(models.join(dir).join("twin.gguf"), b"not a model").expect("file");
    }
    let ambiguous = keeper(
        &queen,
        &["worker", "spawn", "--hive", "hive-2", "--model", "twin"],
    )
    .await;
    let stderr = text(&ambiguous.stderr);
    assert!(!ambiguous.status.success(), "{stderr}");
    assert!(
        stderr.contains("local:twin.gguf") && stderr.contains("acme/twin:twin.gguf"),
        "both choices are listed: {stderr}"
    );
    assert!(stderr.contains("full id"), "{stderr}");

    // Removing asks; a script must say --yes.
    let unconfirmed = keeper(&queen, &["hive", "remove", "hive-2"]).await;
    assert!(!unconfirmed.status.success());
    assert!(text(&unconfirmed.stderr).contains("--yes"));
    assert_eq!(std::fs::read_to_string(&path).expect("inventory"), expected);

    let removed = keeper(&queen, &["hive", "remove", "hive-2", "--yes", "--json"]).await;
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let change = text(&removed.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["kind"] == "inventory_change")
        .expect("an inventory_change result");
    assert_eq!(change["value"]["removed"], json!(["hive-2"]));
    assert_eq!(std::fs::read_to_string(&path).expect("inventory"), original);
    assert!(!queen.state.inventory().hives.contains_key("hive-2"));
    let gone = queen
        .run(json!({"operation": "hive_status", "hive_id": "hive-2"}))
        .await;
    assert!(
        matches!(&gone.last().expect("events").1, JobEvent::Error(e) if e.message.contains("hive-2")),
        "{gone:#?}"
    );
    queen.stop().await;
}

/// A file edited by hand and reloaded: the hive that did not change keeps what the
/// queen knew of it, a changed one is listed as changed, a removed one is forgotten,
/// and a file that no longer parses leaves the running inventory as it was.
#[tokio::test]
async fn a_reload_keeps_unchanged_hives_and_forgets_removed_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("inventory.toml");
    let write = |text: &str| std::fs::write(&path, text).expect("inventory");
    write(
        "[hives.a]\nhost = \"10.0.0.1\"\n\n[hives.b]\nhost = \"10.0.0.2\"\n\n[hives.c]\nhost = \"10.0.0.3\"\n",
    );
    let inventory = Inventory::load(&path, true).expect("loads");
    let queen = start_queen_on(config(&dir.path().join("state")), inventory, "127.0.0.1:0").await;
    for alias in ["a", "c"] {
        queen
            .state
            .hives
            .mark_online(alias, "0.1.0".to_owned(), None);
    }
    write(
        "# c went away, b moved, d came.\n[hives.a]\nhost = \"10.0.0.1\"\n\n[hives.b]\nhost = \"10.0.0.20\"\n\n[hives.d]\nhost = \"10.0.0.4\"\n",
    );
    let events = queen.run(json!({"operation": "inventory_reload"})).await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    let change = crate::support::Queen::result_of(&events).expect("a result");
    assert_eq!(change["added"], json!(["d"]));
    assert_eq!(change["removed"], json!(["c"]));
    assert_eq!(change["changed"], json!(["b"]));
    assert!(
        queen.state.hives.get("a").is_some_and(|r| r.online),
        "a is kept"
    );
    assert!(queen.state.hives.get("c").is_none(), "c is forgotten");
    assert_eq!(queen.state.inventory().hives["b"].host, "10.0.0.20");

    write("[hives.a]\nhost = \n");
    let events = queen.run(json!({"operation": "inventory_reload"})).await;
    assert!(
        matches!(&events.last().expect("events").1, JobEvent::Error(e) if e.message.contains("inventory.toml")),
        "{events:#?}"
    );
    assert_eq!(
        queen.state.inventory().hives.len(),
        3,
        "the old inventory stays"
    );
    queen.stop().await;
}
