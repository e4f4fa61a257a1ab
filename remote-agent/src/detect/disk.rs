//! Free disk space for the model cache, `<install_dir>/models`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// Bytes an unprivileged user may still write on the file system that holds (or will
/// hold) `<install_dir>/models`.
///
/// Detection must leave a hive as it found it, so a missing cache directory is not
/// created: the nearest existing ancestor is measured instead, which is the file
/// system the directory will be created on unless a mount appears in between.
pub fn model_cache_free(install_dir: &Path) -> Result<u64, AgentError> {
    let models = install_dir.join("models");
    let probe = nearest_existing(&models);
    free_bytes(&probe).map_err(|source| AgentError::DiskSpace {
        path: probe,
        source,
    })
}

fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|candidate| !candidate.as_os_str().is_empty() && candidate.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn free_bytes(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data, filled by the call on success; `c_path` is a
    // valid NUL-terminated string that outlives the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between platforms (u32 or u64), hence the widening casts.
    #[allow(clippy::unnecessary_cast)]
    let free = (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64);
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cache_is_measured_at_its_nearest_parent_and_not_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let install_dir = dir.path().join("not").join("yet");
        let free = model_cache_free(&install_dir).expect("free space");
        assert!(free > 0);
        assert!(
            !install_dir.exists(),
            "detection must not create directories"
        );
        assert_eq!(nearest_existing(&install_dir.join("models")), dir.path());
    }

    #[test]
    fn a_relative_path_with_no_existing_parent_is_measured_here() {
        assert_eq!(
            nearest_existing(Path::new("no-such-dir-rbee/models")),
            PathBuf::from(".")
        );
    }
}
