//! Changing the inventory through the queen: a hive as the operator describes it
//! (`hive add`), what a probe of a candidate hive found, and what an edit or a reload
//! changed.

use serde::{Deserialize, Serialize};

/// A hive as `hive add` writes it into the inventory: only what the operator gave;
/// everything left out comes from the inventory's `[defaults]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HiveSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// A path on the queen's machine; relative paths start at the inventory's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// On the hive; a leading `~/` is the remote user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What `hive_probe` found on a candidate hive, reached as the inventory would reach it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HiveProbe {
    pub alias: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The host key's SHA256 fingerprint, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The platform in Rust's names (`linux`, `x86_64`), as `hive install` compares it.
    pub os: String,
    pub arch: String,
    /// The C library, as `hive install` judges it (absent from older queens' probes).
    #[serde(default)]
    pub libc: crate::platform::Libc,
    /// The install directory as the hive's shell expands it.
    pub install_dir: String,
    /// Whether the install directory exists (or could be made) and is writable.
    pub writable: bool,
    /// Free bytes on the install directory's file system, when `df` told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_disk_bytes: Option<u64>,
}

/// The hives an inventory edit or reload added, removed or changed, and the file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryChange {
    pub path: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}
