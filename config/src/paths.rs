//! Where rbee keeps the operator's files, following the XDG base directories.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().join(fallback),
    }
}

/// `$RBEE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/rbee`, else `~/.config/rbee`.
pub fn config_dir() -> PathBuf {
    match std::env::var_os("RBEE_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => xdg("XDG_CONFIG_HOME", ".config").join("rbee"),
    }
}

/// `$RBEE_STATE_DIR`, else `$XDG_STATE_HOME/rbee`, else `~/.local/state/rbee`: the
/// queen's log and pid file.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("RBEE_STATE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => xdg("XDG_STATE_HOME", ".local/state").join("rbee"),
    }
}

pub fn default_config_file() -> PathBuf {
    config_dir().join("config.toml")
}

pub fn default_inventory_file() -> PathBuf {
    config_dir().join("inventory.toml")
}

/// Expands a leading `~/` to the home directory of the user running this process.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if path == "~" => home(),
        None => PathBuf::from(path),
    }
}
