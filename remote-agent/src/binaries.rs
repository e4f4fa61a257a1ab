//! `binaries`: the files under `<install_dir>/bin` and their sha256, and the C library,
//! so `hive install` on a hive whose agent answers in a session needs no shell probe;
//! and where the worker binary is, for the commands that run it.
//!
//! Checksums are cached beside each file as `.NAME.sha256` holding `HASH SIZE MTIME`,
//! the format the queen's install probe writes too; a cache entry counts only while
//! the file's size and mtime (whole seconds) are unchanged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rbee_protocol::ErrorCode;
use rbee_protocol::agent::InstalledBinaries;
use sha2::{Digest, Sha256};

use crate::error::AgentError;

pub fn installed(bin: &Path) -> Result<InstalledBinaries, AgentError> {
    let version = crate::detect::agent_version();
    let mut sha256 = BTreeMap::new();
    let entries = match std::fs::read_dir(bin) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(InstalledBinaries {
                os: version.os,
                arch: version.arch,
                libc: Some(crate::detect::c_library::detect()),
                sha256,
            });
        }
        Err(e) => return Err(AgentError::io("list", bin, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AgentError::io("list", bin, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if name.starts_with('.') || !meta.is_file() {
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let stamp = format!("{} {mtime}", meta.len());
        let cache = bin.join(format!(".{name}.sha256"));
        let cached = std::fs::read_to_string(&cache).ok().and_then(|text| {
            let (hash, rest) = text.trim().split_once(' ')?;
            (rest == stamp).then(|| hash.to_owned())
        });
        let hash = match cached {
            Some(hash) => hash,
            None => {
                let hash = hash_file(&path).map_err(|e| AgentError::io("read", &path, e))?;
                // A cache that cannot be written only costs the next run a re-hash.
                let _ = std::fs::write(&cache, format!("{hash} {stamp}\n"));
                hash
            }
        };
        sha256.insert(name, hash);
    }
    Ok(InstalledBinaries {
        os: version.os,
        arch: version.arch,
        libc: Some(crate::detect::c_library::detect()),
        sha256,
    })
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// The installed worker binary, else the one beside this program (the queen's
/// in-process agent, or a development build).
pub(crate) fn worker_binary(install_dir: &Path) -> Result<PathBuf, AgentError> {
    let installed = install_dir.join("bin/llm-worker-rbee");
    if installed.is_file() {
        return Ok(installed);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("llm-worker-rbee")))
        .filter(|beside| beside.is_file())
        .ok_or_else(|| {
            AgentError::refused(
                ErrorCode::NotFound,
                format!("no worker binary at {}", installed.display()),
                "install it with `rbee-keeper hive install`",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_files_and_trusts_the_cache_only_while_the_stamp_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let bin = dir.path().join("bin");
        assert!(installed(&bin).expect("no bin dir").sha256.is_empty());
        std::fs::create_dir(&bin).expect("bin");
        std::fs::write(bin.join("rbee-hive"), b"agent").expect("write");
        let first = installed(&bin).expect("listed");
        let hash = hex::encode(Sha256::digest(b"agent"));
        assert_eq!(first.sha256.get("rbee-hive"), Some(&hash));
        assert_eq!(first.sha256.len(), 1, "the cache file is not listed");
        // A cache entry whose stamp matches is believed (that is what makes it cheap)...
        let cache = bin.join(".rbee-hive.sha256");
        let text = std::fs::read_to_string(&cache).expect("cache written");
        let stamp = text
            .trim()
            .split_once(' ')
            .expect("hash and stamp")
            .1
            .to_owned();
        std::fs::write(&cache, format!("cafe {stamp}\n")).expect("forge");
        assert_eq!(installed(&bin).expect("listed").sha256["rbee-hive"], "cafe");
        // ...and one whose stamp does not is not: a rewritten file is hashed again.
        std::fs::write(bin.join("rbee-hive"), b"agent, replaced").expect("rewrite");
        let again = installed(&bin).expect("listed");
        assert_eq!(
            again.sha256["rbee-hive"],
            hex::encode(Sha256::digest(b"agent, replaced"))
        );
    }
}
