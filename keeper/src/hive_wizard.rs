//! `hive add`: the questions (each answered by a flag too), then two jobs on the
//! queen — `hive_probe` reaches the candidate as the inventory would and checks it,
//! `hive_add` writes it into the queen's inventory file and reloads it.
//!
//! Host keys are the queen's business (it speaks SSH and keeps known_hosts): an
//! unknown key fails the probe with its fingerprint, and an operator at a terminal is
//! asked whether to trust it; a script passes `--accept-new-host-keys`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rbee_protocol::inventory::HiveSpec;
use rbee_protocol::validate::is_valid_name;
use rbee_protocol::{ErrorCode, JobEvent, Operation};

use crate::cli::HiveAddArgs;
use crate::{Settings, prompt, submit_and_follow};

pub async fn add(settings: &Settings, args: HiveAddArgs) -> anyhow::Result<ExitCode> {
    let ask = !settings.json && prompt::at_terminal();
    let (alias, spec) = if ask {
        ask_for_the_rest(args.clone())?
    } else {
        from_flags(args.clone())?
    };
    let client = settings.client()?;
    let probe = |accept_new_host_keys| Operation::HiveProbe {
        alias: alias.clone(),
        hive: spec.clone(),
        accept_new_host_keys,
    };
    let (code, terminal) =
        submit_and_follow(settings, &client, &probe(args.accept_new_host_keys)).await?;
    match terminal {
        JobEvent::Done => {}
        JobEvent::Error(e)
            if e.code == ErrorCode::HostKeyUnknown
                && ask
                && prompt::proceed(
                    "Trust this host key (its fingerprint is shown above) and record it in known_hosts?",
                )? =>
        {
            let (code, terminal) = submit_and_follow(settings, &client, &probe(true)).await?;
            if terminal != JobEvent::Done {
                return Ok(code);
            }
        }
        _ => return Ok(code),
    }
    if ask
        && !settings.yes
        && !prompt::proceed(&format!("Write {alias} into the queen's inventory?"))?
    {
        anyhow::bail!("not confirmed; the inventory is unchanged");
    }
    let add = Operation::HiveAdd {
        alias: alias.clone(),
        hive: spec,
    };
    Ok(submit_and_follow(settings, &client, &add).await?.0)
}

/// A script's hive: the alias and `--host` are required, the rest is optional.
fn from_flags(args: HiveAddArgs) -> anyhow::Result<(String, HiveSpec)> {
    let alias = args
        .alias
        .ok_or_else(|| prompt::unanswerable("the hive's alias", "it as the first argument"))?;
    check_alias(&alias)?;
    let host = args
        .host
        .ok_or_else(|| prompt::unanswerable("the hive's host", "--host"))?;
    for group in &args.groups {
        check_group(group).map_err(|e| anyhow::anyhow!("--group {group}: {e}"))?;
    }
    let identity_file = args.identity_file.as_deref().map(absolute).transpose()?;
    Ok((
        alias,
        HiveSpec {
            host,
            ssh_user: args.user,
            ssh_port: args.port,
            identity_file,
            install_dir: args.install_dir,
            groups: args.groups,
        },
    ))
}

/// Asks, at a terminal, every question no flag answered.
fn ask_for_the_rest(args: HiveAddArgs) -> anyhow::Result<(String, HiveSpec)> {
    let host = match args.host {
        Some(host) => host,
        None => prompt::text("Host (name or address)", None, "--host")?,
    };
    let alias = match args.alias {
        Some(alias) => alias,
        None => {
            let offered: String = host
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            prompt::text("Alias in the inventory", Some(&offered), "ALIAS")?
        }
    };
    check_alias(&alias)?;
    let ssh_user = match args.user {
        Some(user) => Some(user),
        None => prompt::optional_text("SSH user (empty: the inventory's default)", |_| Ok(()))?,
    };
    let ssh_port = match args.port {
        Some(port) => Some(port),
        None => prompt::optional_text("SSH port (empty: the inventory's default, else 22)", |p| {
            match p.parse::<u16>() {
                _ if p.is_empty() => Ok(()),
                Ok(port) if port > 0 => Ok(()),
                _ => Err("a port is a number from 1 to 65535".to_owned()),
            }
        })?
        .and_then(|p| p.parse().ok()),
    };
    let identity_file = match args.identity_file {
        Some(file) => Some(absolute(&file)?),
        None => choose_identity()?,
    };
    let groups = if args.groups.is_empty() {
        let answer =
            prompt::optional_text("Groups, separated by commas (empty: none)", |answer| {
                split_groups(answer)
                    .iter()
                    .try_for_each(|g| check_group(g).map_err(|e| format!("{g}: {e}")))
            })?;
        split_groups(answer.as_deref().unwrap_or(""))
    } else {
        args.groups
    };
    let install_dir = match args.install_dir {
        Some(dir) => Some(dir),
        None => prompt::optional_text(
            "Install directory on the hive (empty: the inventory's default, else ~/.rbee)",
            |_| Ok(()),
        )?,
    };
    Ok((
        alias,
        HiveSpec {
            host,
            ssh_user,
            ssh_port,
            identity_file,
            install_dir,
            groups,
        },
    ))
}

/// The key to log in with: the inventory's default, a key pair in `~/.ssh`, a key
/// ssh-agent holds (no file then: the queen tries the agent's keys), or a path typed.
fn choose_identity() -> anyhow::Result<Option<String>> {
    let files = key_files(&rbee_config::paths::expand_home("~/.ssh"));
    let agent = agent_keys();
    let mut items = vec!["the inventory's default".to_owned()];
    items.extend(files.iter().map(|f| f.display().to_string()));
    items.extend(
        agent
            .iter()
            .map(|key| format!("ssh-agent: {key} (the queen's ssh-agent must hold it)")),
    );
    items.push("another file…".to_owned());
    let picked = prompt::select("Identity to log in with", &items)?;
    let (first_agent_key, another_file) = (1 + files.len(), items.len() - 1);
    Ok(match picked {
        0 => None,
        i if i < first_agent_key => Some(files[i - 1].display().to_string()),
        // The queen offers ssh-agent's keys itself, after any file.
        i if i < another_file => None,
        _ => {
            let typed = prompt::text("Private key file", None, "--identity-file")?;
            Some(absolute(&rbee_config::paths::expand_home(&typed))?)
        }
    })
}

/// The private keys in `dir`: files with a `.pub` beside them, by name.
fn key_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut keys: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_none_or(|ext| ext != "pub")
                && path.is_file()
                && path.with_extension("pub").is_file()
        })
        .collect();
    keys.sort();
    keys
}

/// ssh-agent's keys as `ssh-add -l` lists them (bits, fingerprint, comment, type);
/// none when there is no agent or no `ssh-add`.
fn agent_keys() -> Vec<String> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        return Vec::new();
    }
    let Ok(out) = std::process::Command::new("ssh-add")
        .arg("-l")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A key path as the queen must read it: relative paths in the inventory would start
/// at the inventory's directory, so what the operator typed here is made absolute.
fn absolute(path: &Path) -> anyhow::Result<String> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    };
    if !absolute.is_file() {
        anyhow::bail!(
            "the identity file {} does not exist\nhint: name a private key file (not its .pub)",
            absolute.display()
        );
    }
    Ok(absolute.display().to_string())
}

fn split_groups(answer: &str) -> Vec<String> {
    answer
        .split([',', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_alias(alias: &str) -> anyhow::Result<()> {
    if !is_valid_name(alias) || alias == "all" {
        anyhow::bail!(
            "{alias:?} is not a valid hive alias\nhint: letters, digits, '-', '_' and '.', and not \"all\""
        );
    }
    Ok(())
}

fn check_group(group: &str) -> Result<(), String> {
    if is_valid_name(group) && group != "all" {
        Ok(())
    } else {
        Err("a group name has letters, digits, '-', '_' and '.', and is not \"all\"".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_must_name_the_alias_and_the_host_and_gets_the_flag_named() {
        let none = from_flags(HiveAddArgs::default()).expect_err("no alias");
        assert!(format!("{none:#}").contains("first argument"), "{none:#}");
        let no_host = from_flags(HiveAddArgs {
            alias: Some("a".to_owned()),
            ..HiveAddArgs::default()
        })
        .expect_err("no host");
        assert!(
            format!("{no_host:#}").contains("pass --host"),
            "{no_host:#}"
        );
        let bad_group = from_flags(HiveAddArgs {
            alias: Some("a".to_owned()),
            host: Some("h".to_owned()),
            groups: vec!["all".to_owned()],
            ..HiveAddArgs::default()
        })
        .expect_err("group all");
        assert!(
            format!("{bad_group:#}").contains("--group all"),
            "{bad_group:#}"
        );
        let (alias, spec) = from_flags(HiveAddArgs {
            alias: Some("a".to_owned()),
            host: Some("h".to_owned()),
            port: Some(2222),
            groups: vec!["lab".to_owned()],
            ..HiveAddArgs::default()
        })
        .expect("enough");
        assert_eq!(alias, "a");
        assert_eq!(spec.ssh_port, Some(2222));
        assert_eq!(spec.ssh_user, None, "left to the inventory's defaults");
    }

    #[test]
    fn key_files_are_the_private_halves_of_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "id_ed25519",
            "id_ed25519.pub",
            "lonely",
            "known_hosts",
            "b.pub",
            "b",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let names: Vec<String> = key_files(dir.path())
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names, ["b", "id_ed25519"]);
    }

    #[test]
    fn groups_split_on_commas_and_spaces() {
        assert_eq!(split_groups(" lab, gpu  rack2,"), ["lab", "gpu", "rack2"]);
        assert!(split_groups("").is_empty());
    }
}
