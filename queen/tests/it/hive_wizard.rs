//! `hive add` and `hive remove` as a script runs them (the real keeper, no terminal)
//! against a real lab host: an unknown host key is refused with its fingerprint
//! shown, the hive lands in the queen's inventory file with every other byte of the
//! file kept, the running queen installs and reports on it without a restart, and
//! removing it gives the file back as it was. A model name that two files match is an
//! error listing both, and at a terminal a list to choose from. At a terminal the
//! wizard asks, shows the fingerprint and writes the hive. A reload of a file edited
//! by hand keeps what the queen knows of the hives that did not change.

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

    // Another known_hosts file needs a restart: refused, nothing taken.
    write("[defaults]\nknown_hosts = \"/elsewhere/known_hosts\"\n[hives.a]\nhost = \"10.0.0.1\"\n");
    let events = queen.run(json!({"operation": "inventory_reload"})).await;
    assert!(
        matches!(&events.last().expect("events").1, JobEvent::Error(e) if e.message.contains("known_hosts")),
        "{events:#?}"
    );
    assert_eq!(queen.state.inventory().hives.len(), 3);
    queen.stop().await;
}

/// The keeper at a terminal: a pseudo-terminal (`script`), read and typed into as a
/// person would, prompt by prompt.
struct Terminal {
    child: std::process::Child,
    input: std::process::ChildStdin,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
    /// How much of the screen earlier waits consumed.
    seen: usize,
}

impl Terminal {
    /// Runs `command` with `home` as its home directory (its `~/.ssh`).
    fn start(command: &str, home: &Path) -> Terminal {
        use std::io::Read;
        let mut child = std::process::Command::new("script")
            .args(["-qfec", command, "/dev/null"])
            .env("TERM", "xterm")
            .env("HOME", home)
            .env_remove("RBEE_QUEEN_URL")
            .env_remove("RBEE_API_TOKEN")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script runs");
        let input = child.stdin.take().expect("stdin");
        let mut output = child.stdout.take().expect("stdout");
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = output.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                shared.lock().expect("screen").push_str(&text);
            }
        });
        Terminal {
            child,
            input,
            screen,
            seen: 0,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }

    /// Waits until `prompt` appears after what earlier waits saw, then types `keys`.
    fn answer(&mut self, prompt: &str, keys: &str) {
        use std::io::Write;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if let Some(at) = screen[self.seen..].find(prompt) {
                self.seen += at + prompt.len();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {prompt:?} on the screen:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The prompt is drawn before the terminal is put in raw mode for its keys.
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.input.write_all(keys.as_bytes()).expect("type");
        self.input.flush().expect("flush");
    }

    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(std::time::Duration::from_millis(100));
                return (status, self.screen());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the keeper did not exit:\n{}",
                self.screen()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_at_a_terminal_asks_shows_the_fingerprint_and_adds_the_hive() {
    let lab = Lab::up(1);
    let host = lab.inventory(None).hives["hive-1"].clone();
    let dir = tempfile::tempdir().expect("queen dir");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").expect("known_hosts");
    let path = dir.path().join("inventory.toml");
    std::fs::write(
        &path,
        format!(
            "[defaults]\nssh_user = \"root\"\nknown_hosts = \"{}\"\n",
            known_hosts.display()
        ),
    )
    .expect("inventory");
    let inventory = Inventory::load(&path, true).expect("inventory loads");
    let queen = start_queen_on(config(&dir.path().join("state")), inventory, "127.0.0.1:0").await;
    let keeper_config = dir.path().join("keeper.toml");
    std::fs::write(
        &keeper_config,
        format!(
            "[queen]\nport = {}\napi_token = \"{}\"\n",
            queen.state.listen_addr().port(),
            crate::workers::TOKEN
        ),
    )
    .expect("keeper config");
    let command = format!(
        "{} --config {} hive add",
        crate::support::bin_dir().join("rbee-keeper").display(),
        keeper_config.display()
    );
    // The operator's ~/.ssh holds the lab's key pair, which the wizard offers.
    let home = dir.path().join("home");
    let key = home.join(".ssh/lab_key");
    std::fs::create_dir_all(home.join(".ssh")).expect("~/.ssh");
    std::fs::copy(lab.dir.path().join("id_ed25519"), &key).expect("key");
    std::fs::copy(
        lab.dir.path().join("id_ed25519.pub"),
        key.with_extension("pub"),
    )
    .expect("pub");
    let install_dir = host.install_dir.clone();
    let expected_dir = install_dir.clone();
    let (status, screen) = tokio::task::spawn_blocking(move || {
        let mut terminal = Terminal::start(&command, &home);
        terminal.answer("Host", &format!("{}\r", host.host));
        terminal.answer("Alias", "lab-one\r");
        terminal.answer("SSH user", "\r");
        terminal.answer("SSH port", "\r");
        // Down to the first key of ~/.ssh, below the inventory's default.
        terminal.answer("lab_key", "\x1b[B\r");
        terminal.answer("Groups", "lab, wizard\r");
        terminal.answer("Install directory", &format!("{install_dir}\r"));
        terminal.answer("Trust this host key", "y");
        terminal.answer("Write lab-one", "y");
        terminal.wait()
    })
    .await
    .expect("join");
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("SHA256:"),
        "the fingerprint is shown: {screen}"
    );
    assert!(screen.contains("added lab-one"), "{screen}");
    let hive = queen.state.inventory().hives["lab-one"].clone();
    assert_eq!(hive.install_dir, expected_dir);
    assert_eq!(hive.ssh_user.as_deref(), Some("root"), "left to [defaults]");
    assert_eq!(hive.identity_file.as_deref(), Some(key.as_path()));
    assert!(hive.groups.contains("wizard"), "{hive:?}");
    assert!(
        std::fs::read_to_string(&known_hosts)
            .expect("kh")
            .contains("ssh-ed25519"),
        "the key is recorded"
    );
    queen.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_a_model_stem_two_files_match_is_chosen_from_a_list() {
    let lab = Lab::up(1);
    let inventory = lab.inventory(None);
    let install_dir = inventory.hives["hive-1"].install_dir.clone();
    let dir = tempfile::tempdir().expect("queen dir");
    let queen = start_queen_on(config(&dir.path().join("state")), inventory, "0.0.0.0:0").await;
    queen.run_each(&["hive_install"], "hive-1").await;
    let models = Path::new(&install_dir).join("models");
    for dir in ["local", "acme/twin"] {
        std::fs::create_dir_all(models.join(dir)).expect("models dir");
        std::fs::write(models.join(dir).join("twin.gguf"), b"not a model").expect("file");
    }
    let keeper_config = dir.path().join("keeper.toml");
    std::fs::write(
        &keeper_config,
        format!(
            "[queen]\nport = {}\napi_token = \"{}\"\n",
            queen.state.listen_addr().port(),
            crate::workers::TOKEN
        ),
    )
    .expect("keeper config");
    let home = dir.path().to_path_buf();
    let command = format!(
        "{} --config {} worker spawn --hive hive-1 --model twin",
        crate::support::bin_dir().join("rbee-keeper").display(),
        keeper_config.display()
    );
    let (status, screen) = tokio::task::spawn_blocking(move || {
        let mut terminal = Terminal::start(&command, &home);
        terminal.answer("Which model?", "\r");
        terminal.wait()
    })
    .await
    .expect("join");
    assert!(screen.contains("Which model?"), "{screen}");
    // The retry names the file chosen (the first offered) by its full id.
    assert!(screen.contains("for acme/twin:twin.gguf"), "{screen}");
    assert_eq!(
        screen.matches("matches more than one model").count(),
        1,
        "{screen}"
    );
    assert!(!status.success(), "the chosen file is no model: {screen}");
    queen.stop().await;
}

/// A localhost hive of a `local-hive` queen is probed on this machine, with no SSH
/// (and so no host key), and leaves nothing of itself in the running inventory.
#[cfg(feature = "local-hive")]
#[tokio::test]
async fn a_local_hive_candidate_is_probed_without_ssh() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, "# empty for now\n").expect("inventory");
    let inventory = Inventory::load(&path, true).expect("loads");
    let queen = start_queen_on(config(&dir.path().join("state")), inventory, "127.0.0.1:0").await;
    let install_dir = dir.path().join("local-rbee");
    let events = queen
        .run(json!({
            "operation": "hive_probe", "alias": "localhost", "host": "127.0.0.1",
            "install_dir": install_dir.display().to_string(),
        }))
        .await;
    assert_eq!(
        events.last().expect("events").1,
        JobEvent::Done,
        "{events:#?}"
    );
    let probe = crate::support::Queen::result_of(&events).expect("a result");
    assert!(
        probe["fingerprint"]
            .as_str()
            .is_some_and(|f| f.contains("in-process")),
        "{probe}"
    );
    assert_eq!(probe["os"], std::env::consts::OS);
    assert_eq!(probe["writable"], true);
    assert!(install_dir.is_dir(), "made when missing");
    assert!(
        probe["free_disk_bytes"].as_u64().is_some_and(|b| b > 0),
        "{probe}"
    );
    assert!(queen.state.inventory().hives.is_empty());
    assert_eq!(
        std::fs::read_to_string(&path).expect("inventory"),
        "# empty for now\n"
    );
    queen.stop().await;
}
