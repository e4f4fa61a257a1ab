//! Where and as whom the queen connects to a hive: its SSH target, jump hosts included.

use super::*;

/// Where and as whom to connect, after `~/.ssh/config` is applied to the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` from `~/.ssh/config`: the host to tunnel through, resolved alike.
    pub jump: Option<Box<SshTarget>>,
}

impl SshTarget {
    /// Inventory settings win over `~/.ssh/config`, which wins over ssh's defaults.
    pub fn resolve(hive: &Hive, settings: &SshSettings) -> SshTarget {
        let from_config = ssh_config::lookup(&settings.ssh_config, &hive.host);
        let jump = from_config
            .proxy_jump
            .as_deref()
            .and_then(|spec| jump_target(spec, settings))
            .map(Box::new);
        let identity_files = match &hive.identity_file {
            Some(file) => vec![file.clone()],
            None if !from_config.identity_files.is_empty() => from_config.identity_files,
            None => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| rbee_config::paths::expand_home(&format!("~/.ssh/{name}")))
                .collect(),
        };
        SshTarget {
            host: from_config.hostname.unwrap_or_else(|| hive.host.clone()),
            port: hive.ssh_port.or(from_config.port).unwrap_or(22),
            user: hive
                .ssh_user
                .clone()
                .or(from_config.user)
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".to_owned()),
            identity_files,
            jump,
        }
    }
}

/// A `ProxyJump` value (`[user@]host[:port]`, the first of a list) as a target, with
/// `~/.ssh/config` applied to that host in turn; one hop.
pub(super) fn jump_target(spec: &str, settings: &SshSettings) -> Option<SshTarget> {
    let first = spec.split(',').next()?.trim();
    if first.is_empty() || first.eq_ignore_ascii_case("none") {
        return None;
    }
    let (user, rest) = match first.split_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, first),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (rest, None),
    };
    let hop = Hive {
        alias: host.to_owned(),
        host: host.to_owned(),
        ssh_user: user,
        ssh_port: port,
        identity_file: None,
        install_dir: String::new(),
        groups: Default::default(),
        vars: Default::default(),
    };
    let mut target = SshTarget::resolve(&hop, settings);
    target.jump = None;
    Some(target)
}
