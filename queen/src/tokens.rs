//! Worker tokens: HMAC-SHA256 of the worker id under a key only the queen holds. The
//! queen hands a worker its token when it spawns it, checks it on every heartbeat and
//! sends it with every request; a restarted queen derives the same tokens from the
//! same key, so adopted workers need nothing new.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BLOCK: usize = 64;

/// Reads the 32-byte key at `path`, or creates it (mode 0600) from the OS's random
/// source when there is none.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    match fs::read(path) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} holds {} bytes, not a 32-byte key; delete it and restart the queen (workers it spawned must then be respawned)",
                    path.display(),
                    bytes.len()
                )
            })?;
            if fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(path = %path.display(), "the worker-token key is readable by others; chmod 600 it");
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(path),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| io::Read::read_exact(&mut random, &mut key))
        .context("cannot read /dev/urandom")?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written beside and renamed, so two queens starting at once agree on one key.
    let partial = path.with_extension(format!("partial.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    if let Err(e) = fs::hard_link(&partial, path) {
        let _ = fs::remove_file(&partial);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return load_or_create_key(path);
        }
        return Err(e).with_context(|| format!("cannot create {}", path.display()));
    }
    let _ = fs::remove_file(&partial);
    Ok(key)
}

/// The token of worker `worker_id`, as lower-case hex.
pub fn worker_token(key: &[u8; 32], worker_id: &str) -> String {
    hex::encode(hmac_sha256(key, worker_id.as_bytes()))
}

/// Whether `presented` is the token of `worker_id`, compared in constant time.
pub fn is_worker_token(key: &[u8; 32], worker_id: &str, presented: &str) -> bool {
    bool::from(
        worker_token(key, worker_id)
            .as_bytes()
            .ct_eq(presented.as_bytes()),
    )
}

/// HMAC (RFC 2104) over SHA-256, for keys no longer than one block.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let inner_pad: Vec<u8> = padded.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = padded.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_1() {
        // RFC 4231 case 1 uses a 20-byte key; padded with zeros to 32 bytes it is the
        // same HMAC key, since HMAC pads short keys with zeros to the block size.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn the_key_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/worker-key");
        let first = load_or_create_key(&path).expect("create");
        let second = load_or_create_key(&path).expect("read");
        assert_eq!(first, second);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(is_worker_token(&first, "w-1", &worker_token(&first, "w-1")));
        assert!(!is_worker_token(
            &first,
            "w-2",
            &worker_token(&first, "w-1")
        ));
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worker-key");
        fs::write(&path, b"short").expect("write");
        let error = load_or_create_key(&path).expect_err("bad key");
        assert!(error.to_string().contains("worker-key"), "{error}");
    }
}
