//! What downloads and pushes share so that no half-written model is ever used: a lock
//! per target file, a hidden partial file bound to the expected content, the sha256
//! check, and the atomic rename; plus the progress meter.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rbee_protocol::Progress;
use sha2::{Digest, Sha256};

use super::error::ModelError;
use crate::cancel::CancelFlag;
use crate::error::AgentError;

/// An exclusive `flock` on `.<file>.lock` beside the target. The kernel drops it when
/// the holder exits, however it exits, so a crashed transfer never blocks the next.
/// The lock file itself stays: removing it would let a waiter lock a file that no
/// longer has a name while a newcomer locks a fresh one.
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    fn open(target: &Path) -> Result<File, ModelError> {
        let path = hidden_sibling(target, "lock");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(ModelError::io("create", dir))?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ModelError::io("open the lock", &path))
    }

    /// The lock, or `None` when another process holds it.
    pub(crate) fn try_acquire(target: &Path) -> Result<Option<FileLock>, ModelError> {
        let file = FileLock::open(target)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(FileLock { _file: file }));
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(ModelError::io("lock", hidden_sibling(target, "lock"))(
                error,
            ))
        }
    }

    /// Waits for the lock, calling `waiting` once if it has to; cancellable.
    pub(crate) fn acquire(
        target: &Path,
        cancel: &CancelFlag,
        waiting: impl FnOnce(),
    ) -> Result<FileLock, AgentError> {
        let mut waiting = Some(waiting);
        loop {
            if let Some(lock) = FileLock::try_acquire(target)? {
                return Ok(lock);
            }
            if let Some(tell) = waiting.take() {
                tell();
            }
            cancel.check()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `dir/.<name>.<suffix>` for the target `dir/<name>`.
fn hidden_sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{suffix}"))
}

/// The partial file for `target` with the expected sha256: a partial of other content
/// (an older upload of the same name) gets another name and is never resumed.
pub(crate) fn partial_path(target: &Path, sha256: Option<&str>) -> PathBuf {
    let tag = sha256.map_or("unverified", |s| &s[..s.len().min(16)]);
    hidden_sibling(target, &format!("{tag}.partial"))
}

/// Deletes partial files of `target` other than `keep`. Call with the lock held.
pub(crate) fn remove_other_partials(target: &Path, keep: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(read) = fs::read_dir(dir) else { return };
    for item in read.flatten() {
        let child = item.file_name().to_string_lossy().into_owned();
        if child.starts_with(&prefix) && child.ends_with(".partial") && item.path() != keep {
            let _ = fs::remove_file(item.path());
        }
    }
}

/// What a failed write to `partial` becomes. A full disk deletes the partial file: it
/// could be resumed only once space is freed, and meanwhile it holds the space that
/// everything else on the hive (worker logs, state files) needs. Any other failure
/// keeps it for the next run.
pub(crate) fn write_failed(
    partial: &Path,
    file_label: &str,
    written: u64,
    expected: Option<u64>,
    source: std::io::Error,
) -> ModelError {
    let full = matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    );
    if !full {
        return ModelError::io("write", partial)(source);
    }
    let _ = fs::remove_file(partial);
    ModelError::DiskFull {
        file: file_label.to_owned(),
        dir: partial
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf),
        written,
        expected: expected.map_or_else(|| "an unknown number of".to_owned(), |e| e.to_string()),
        source,
    }
}

/// Feeds the first `len` bytes of `file` to `hasher` (the part a resumed download
/// already has).
pub(crate) fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<(), ModelError> {
    let file = File::open(path).map_err(ModelError::io("read", path))?;
    let mut limited = file.take(len);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = limited
            .read(&mut buffer)
            .map_err(ModelError::io("read", path))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}

/// The sha256 of a whole file, as lowercase hex: from the note a transfer left beside
/// it (`.<file>.sha256`) while the file's size and mtime are still those noted, else
/// read and hashed (a large model takes a while).
pub(crate) fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let stamp = file_stamp(path);
    if let (Some(stamp), Ok(note)) = (&stamp, fs::read_to_string(hidden_sibling(path, "sha256")))
        && let Some((sha, noted)) = note.trim().split_once(' ')
        && noted == stamp
    {
        return Ok(sha.to_owned());
    }
    let mut hasher = Sha256::new();
    hash_prefix(path, u64::MAX, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// `size:mtime_ns` of a file, which any rewrite changes.
fn file_stamp(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{}:{}", meta.len(), modified.as_nanos()))
}

/// Notes `sha256` beside a file just verified, for [`sha256_file`]. A note that cannot
/// be written only costs a rehash later.
fn note_sha256(target: &Path, sha256: &str) {
    if let Some(stamp) = file_stamp(target) {
        let _ = fs::write(
            hidden_sibling(target, "sha256"),
            format!("{} {stamp}\n", sha256.to_ascii_lowercase()),
        );
    }
}

/// Removes the notes kept beside a deleted model file (the lock stays; see
/// [`FileLock`]).
pub(crate) fn remove_notes(target: &Path) {
    let _ = fs::remove_file(hidden_sibling(target, "sha256"));
}

/// Checks the complete partial file against the expected size and sha256, then makes
/// it the target in one rename. A mismatch deletes the partial file.
pub(crate) fn finish(
    partial: &Path,
    target: &Path,
    file_label: &str,
    expected_size: Option<u64>,
    expected_sha256: Option<&str>,
    actual_sha256: &str,
) -> Result<(), ModelError> {
    let actual_size = fs::metadata(partial)
        .map_err(ModelError::io("read", partial))?
        .len();
    if let Some(expected) = expected_size.filter(|&e| e != actual_size) {
        let _ = fs::remove_file(partial);
        return Err(ModelError::SizeMismatch {
            file: file_label.to_owned(),
            expected,
            actual: actual_size,
        });
    }
    if let Some(expected) = expected_sha256.filter(|e| !e.eq_ignore_ascii_case(actual_sha256)) {
        let _ = fs::remove_file(partial);
        return Err(ModelError::ChecksumMismatch {
            file: file_label.to_owned(),
            expected: expected.to_owned(),
            actual: actual_sha256.to_owned(),
        });
    }
    File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| write_failed(partial, file_label, actual_size, expected_size, e))?;
    fs::rename(partial, target).map_err(ModelError::io("rename into place", target))?;
    note_sha256(target, actual_sha256);
    if let Some(dir) = target.parent()
        && let Ok(dir) = File::open(dir)
    {
        // The rename is durable once the directory is synced; a failure here loses
        // nothing that is not already on its way to disk.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes to `out` while hashing, so a resumed download need not read its file twice.
pub(crate) struct HashingWriter<'a> {
    pub file: &'a mut File,
    pub hasher: &'a mut Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Turns byte counts into `progress` events: at most a few per second, with a rate
/// over the last few seconds and the time left at that rate.
pub struct Meter {
    label: String,
    total: Option<u64>,
    samples: VecDeque<(Instant, u64)>,
    last_sent: Option<Instant>,
}

const METER_INTERVAL: Duration = Duration::from_millis(250);
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Meter {
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Self {
        Meter {
            label: label.into(),
            total,
            samples: VecDeque::new(),
            last_sent: None,
        }
    }

    /// The event for `current` bytes, when one is due (always at the end).
    pub fn update(&mut self, current: u64) -> Option<Progress> {
        let now = Instant::now();
        self.samples.push_back((now, current));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
        let finished = self.total == Some(current);
        let due = self
            .last_sent
            .is_none_or(|at| now.duration_since(at) >= METER_INTERVAL);
        if !(due || finished) {
            return None;
        }
        self.last_sent = Some(now);
        let rate = self.samples.front().and_then(|(at, bytes)| {
            let seconds = now.duration_since(*at).as_secs_f64();
            (seconds > 0.05).then(|| ((current.saturating_sub(*bytes)) as f64 / seconds) as u64)
        });
        let eta_s = match (self.total, rate) {
            (Some(total), Some(rate)) if rate > 0 => {
                Some(total.saturating_sub(current).div_ceil(rate))
            }
            (Some(total), _) if total == current => Some(0),
            _ => None,
        };
        Some(Progress {
            label: self.label.clone(),
            current,
            total: self.total,
            unit: "bytes".to_owned(),
            rate,
            eta_s,
            hive: None,
        })
    }
}
