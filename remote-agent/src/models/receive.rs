//! Models pushed from the operator's machine: `model-has` tells the queen whether the
//! hive already holds the file, `model-receive` reads exactly the announced number of
//! bytes from stdin into a partial file, checks the sha256 and renames.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rbee_protocol::models::{LOCAL_PREFIX, ModelPresence, ModelTransfer};
use rbee_protocol::validate;
use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::transfer::{self, FileLock, HashingWriter};
use crate::cancel::CancelFlag;
use crate::error::AgentError;

/// Where a pushed file named `file` lives; the name must be a plain `*.gguf` name.
pub(crate) fn local_path(install_dir: &Path, file: &str) -> Result<PathBuf, ModelError> {
    let plain = validate::is_valid_name(file) && file.to_ascii_lowercase().ends_with(".gguf");
    if !plain {
        return Err(ModelError::InvalidSpec {
            spec: file.to_owned(),
            reason: "a pushed model needs a plain file name ending in `.gguf` (letters, digits, `-`, `_`, `.`)",
        });
    }
    Ok(super::models_dir(install_dir)
        .join(super::LOCAL_DIR)
        .join(file))
}

/// Whether `local:<file>` is here with this size and sha256.
pub(crate) fn has(
    install_dir: &Path,
    file: &str,
    size: u64,
    sha256: &str,
) -> Result<ModelPresence, ModelError> {
    let target = local_path(install_dir, file)?;
    let same_size = std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size);
    let present = same_size && transfer::sha256_file(&target)?.eq_ignore_ascii_case(sha256);
    Ok(ModelPresence {
        present,
        model: present
            .then(|| super::entry(format!("{LOCAL_PREFIX}{file}"), file.to_owned(), &target)),
    })
}

/// Reads exactly `size` bytes from `input` into `local:<file>`. Input that ends early
/// fails (the queen went away); whatever follows the announced bytes is not read, so
/// the end of stdin after them changes nothing.
pub(crate) fn receive(
    install_dir: &Path,
    file: &str,
    size: u64,
    sha256: &str,
    input: &mut dyn Read,
    cancel: &CancelFlag,
) -> Result<ModelTransfer, AgentError> {
    let target = local_path(install_dir, file)?;
    // Another push of the same file waits rather than fails: the queen is already
    // streaming, and the bytes must be read for its upload to end cleanly.
    let _lock = FileLock::acquire(&target, cancel, || {})?;
    let partial = transfer::partial_path(&target, Some(sha256));
    transfer::remove_other_partials(&target, &partial);
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&partial)
        .map_err(ModelError::io("create", &partial))?;
    let mut hasher = Sha256::new();
    let copied = copy_exactly(input, &mut out, &mut hasher, size, cancel);
    drop(out);
    match copied {
        Ok(()) => {}
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(match error {
                Copy::Cancelled => AgentError::Cancelled,
                Copy::Short(received) => ModelError::SizeMismatch {
                    file: file.to_owned(),
                    expected: size,
                    actual: received,
                }
                .into(),
                Copy::Read(e) => ModelError::io("read the pushed bytes for", &partial)(e).into(),
                Copy::Write(written, e) => {
                    transfer::write_failed(&partial, file, written, Some(size), e).into()
                }
            });
        }
    }
    let actual = hex::encode(hasher.finalize());
    transfer::finish(&partial, &target, file, Some(size), Some(sha256), &actual)?;
    Ok(ModelTransfer {
        model: super::entry(format!("{LOCAL_PREFIX}{file}"), file.to_owned(), &target),
        changed: true,
        sha256: Some(actual),
    })
}

enum Copy {
    Short(u64),
    Read(io::Error),
    /// Bytes written before the write failed, and why it failed.
    Write(u64, io::Error),
    Cancelled,
}

fn copy_exactly(
    input: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    size: u64,
    cancel: &CancelFlag,
) -> Result<(), Copy> {
    let mut writer = HashingWriter { file: out, hasher };
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    while received < size {
        if cancel.is_cancelled() {
            return Err(Copy::Cancelled);
        }
        let want =
            usize::try_from(size - received).map_or(buffer.len(), |left| left.min(buffer.len()));
        let n = match input.read(&mut buffer[..want]) {
            Ok(0) => return Err(Copy::Short(received)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        writer
            .write_all(&buffer[..n])
            .map_err(|e| Copy::Write(received, e))?;
        received += n as u64;
    }
    writer.flush().map_err(|e| Copy::Write(received, e))
}
