//! The operator's files: `config.toml` and the inventory, read by the queen and the
//! keeper alike, validated strictly (an unknown key is an error, not a silent default).

pub mod ansible;
pub mod inventory;
pub mod inventory_edit;
pub mod paths;
pub mod playbook;
pub mod settings;

pub use inventory::{Hive, Inventory, InventoryError};
pub use playbook::{Playbook, PlaybookError};
pub use settings::{Config, ConfigError, QueenConfig};

use std::path::{Path, PathBuf};

/// A TOML file that failed to parse, with the position toml reports.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TomlFileError {
    pub path: PathBuf,
    #[source]
    pub source: toml::de::Error,
}

/// Reads and deserialises a TOML file, naming the file in every error.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Box<FileError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        Box::new(FileError::Read {
            path: path.to_owned(),
            source,
        })
    })?;
    parse_toml(path, &text)
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, Box<FileError>> {
    toml::from_str(text).map_err(|source| {
        Box::new(FileError::Parse(TomlFileError {
            path: path.to_owned(),
            source,
        }))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(TomlFileError),
}
