//! The parts of OpenSSH's client configuration (`~/.ssh/config`) rbee honours for a
//! host: HostName, User, Port, IdentityFile. First match wins per keyword, as in ssh.

use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub proxy_jump: Option<String>,
}

/// `$RBEE_SSH_CONFIG`, else `~/.ssh/config`.
pub fn default_path() -> PathBuf {
    match std::env::var_os("RBEE_SSH_CONFIG") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => rbee_config::paths::expand_home("~/.ssh/config"),
    }
}

/// What the file at `path` says about `alias`; an unreadable file says nothing.
pub fn lookup(path: &Path, alias: &str) -> HostConfig {
    std::fs::read_to_string(path)
        .map(|text| parse(&text, alias))
        .unwrap_or_default()
}

pub fn parse(text: &str, alias: &str) -> HostConfig {
    let mut config = HostConfig::default();
    let mut applies = true;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k.to_ascii_lowercase(),
                v.trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                    .trim(),
            ),
            None => continue,
        };
        let value = value.trim_matches('"');
        match keyword.as_str() {
            "host" => applies = host_matches(value, alias),
            "match" => applies = false,
            _ if !applies => {}
            "hostname" => {
                config
                    .hostname
                    .get_or_insert_with(|| value.replace("%h", alias));
            }
            "user" => {
                config.user.get_or_insert_with(|| value.to_owned());
            }
            "port" if config.port.is_none() => {
                config.port = value.parse().ok();
            }
            "identityfile" => config
                .identity_files
                .push(rbee_config::paths::expand_home(value)),
            "proxyjump" => {
                config.proxy_jump.get_or_insert_with(|| value.to_owned());
            }
            _ => {}
        }
    }
    config
}

/// `Host` patterns: whitespace-separated globs, `!` negates.
fn host_matches(patterns: &str, alias: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split_whitespace() {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, alias) {
                return false;
            }
        } else if glob(pattern, alias) {
            matched = true;
        }
    }
    matched
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => match pattern.split_once('?') {
            None => pattern == text,
            Some((head, tail)) => {
                text.len() > head.len()
                    && text.starts_with(head)
                    && text.is_char_boundary(head.len() + 1)
                    && glob(tail, &text[head.len() + 1..])
            }
        },
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len())
                    .any(|i| text.is_char_boundary(i) && glob(tail, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
# lab machines
Host gpu-*
    User rbee
    Port 2222
    IdentityFile ~/.ssh/lab_key

Host gpu-a
    HostName 10.0.0.11
    User ignored-because-first-wins

Host *.internal !bastion.internal
    ProxyJump bastion.internal

Host *
    IdentityFile ~/.ssh/id_ed25519
";

    #[test]
    fn first_match_wins_per_keyword() {
        let c = parse(CONFIG, "gpu-a");
        assert_eq!(c.hostname.as_deref(), Some("10.0.0.11"));
        assert_eq!(c.user.as_deref(), Some("rbee"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.identity_files.len(), 2);
        assert!(c.identity_files[0].ends_with(".ssh/lab_key"));
    }

    #[test]
    fn patterns_and_negation() {
        assert_eq!(
            parse(CONFIG, "db.internal").proxy_jump.as_deref(),
            Some("bastion.internal")
        );
        assert_eq!(parse(CONFIG, "bastion.internal").proxy_jump, None);
        let other = parse(CONFIG, "other");
        assert_eq!((other.hostname, other.user, other.port), (None, None, None));
        assert_eq!(other.identity_files.len(), 1);
        assert!(glob("h?st", "host") && !glob("h?st", "hst"));
    }
}
