//! What `hive install` sends: each binary stripped of its symbols (the file the hive
//! runs, whose sha256 the hive checks after the transfer) and compressed for the wire,
//! made once per build and kept in the queen's state directory (`push/`).
//!
//! Both steps use the tools a build machine has (`strip`, `zstd`, `gzip`); without
//! `strip` the binary goes as built, without a compressor it goes as it is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a binary's bytes travel: the decompressor the hive runs on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Gzip,
    Raw,
}

impl Codec {
    /// The word the push script reads (`$c`).
    pub fn word(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::Raw => "raw",
        }
    }

    /// The best codec both sides have, from what `command -v zstd gzip` printed on the
    /// hive.
    pub fn pick(hive_has: &str, forms: &Forms) -> Codec {
        let has = |tool: &str| hive_has.lines().any(|l| l.trim().ends_with(tool));
        if forms.zstd.is_some() && has("zstd") {
            Codec::Zstd
        } else if forms.gzip.is_some() && has("gzip") {
            Codec::Gzip
        } else {
            Codec::Raw
        }
    }
}

/// One binary as it can be pushed.
#[derive(Debug, Clone)]
pub struct Forms {
    /// The file the hive ends up with (stripped when `strip` worked).
    pub installed: PathBuf,
    pub zstd: Option<PathBuf>,
    pub gzip: Option<PathBuf>,
}

impl Forms {
    /// The file to send for `codec`.
    pub fn wire(&self, codec: Codec) -> &Path {
        match codec {
            Codec::Zstd => self.zstd.as_deref().unwrap_or(&self.installed),
            Codec::Gzip => self.gzip.as_deref().unwrap_or(&self.installed),
            Codec::Raw => &self.installed,
        }
    }
}

/// Makes (or finds, from an earlier job) the forms of `source`, whose sha256 is
/// `source_sha256`, in `dir`. Blocking: run it off the async runtime.
pub fn prepare(source: &Path, name: &str, source_sha256: &str, dir: &Path) -> Forms {
    let stem = dir.join(format!(
        "{name}-{}",
        &source_sha256[..16.min(source_sha256.len())]
    ));
    if std::fs::create_dir_all(dir).is_err() {
        return as_built(source);
    }
    let stripped = stem.with_extension("stripped");
    let installed = if stripped.is_file()
        || produce(&stripped, |tmp| {
            let mut command = Command::new("strip");
            command.arg("--strip-all").arg("-o").arg(tmp).arg(source);
            command
        }) {
        stripped
    } else {
        tracing::warn!(binary = %source.display(), "strip failed; pushing the binary as built");
        source.to_owned()
    };
    let compressed = |extension: &str, tool: &str, args: &[&str]| {
        let path = stem.with_extension(extension);
        let made = path.is_file()
            || produce(&path, |tmp| {
                let mut command = Command::new(tool);
                command.args(args).arg(&installed).arg("-o").arg(tmp);
                command
            });
        made.then_some(path)
    };
    let zstd = compressed("zst", "zstd", &["-q", "-f", "-T0"]);
    let gzip = {
        let path = stem.with_extension("gz");
        let made =
            path.is_file() || produce_piped(&path, Command::new("gzip").arg("-c").arg(&installed));
        made.then_some(path)
    };
    prune(dir, name, &stem);
    Forms {
        installed,
        zstd,
        gzip,
    }
}

fn as_built(source: &Path) -> Forms {
    Forms {
        installed: source.to_owned(),
        zstd: None,
        gzip: None,
    }
}

/// Runs the command `make(tmp)` builds, which writes `tmp`, and renames it to `path`
/// when it succeeded: a half-written form never has the final name.
fn produce(path: &Path, make: impl FnOnce(&Path) -> Command) -> bool {
    let tmp = partial(path);
    let ok = make(&tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    finish(ok, &tmp, path)
}

/// As [`produce`], for a command that writes the form on its stdout.
fn produce_piped(path: &Path, command: &mut Command) -> bool {
    let tmp = partial(path);
    let Ok(file) = std::fs::File::create(&tmp) else {
        return false;
    };
    let ok = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    finish(ok, &tmp, path)
}

/// A temporary name beside `path`, its own for each call (two jobs may make the same
/// form at once).
fn partial(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".partial.{}.{n}", std::process::id()));
    PathBuf::from(name)
}

fn finish(ok: bool, tmp: &Path, path: &Path) -> bool {
    if ok && std::fs::rename(tmp, path).is_ok() {
        return true;
    }
    let _ = std::fs::remove_file(tmp);
    false
}

/// Removes the forms of earlier builds of `name`.
fn prune(dir: &Path, name: &str, keep: &Path) {
    let Some(keep) = keep.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!("{name}-");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && !file.starts_with(keep) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_stripped_and_compressed_once_and_decompresses_to_the_stripped_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // This test's own executable: an ELF file with symbols.
        let source = std::env::current_exe().expect("exe");
        let forms = prepare(&source, "probe", "0123456789abcdef0123", dir.path());
        let size = |p: &Path| std::fs::metadata(p).expect("meta").len();
        assert_ne!(forms.installed, source, "strip ran");
        assert!(size(&forms.installed) < size(&source));
        for (codec, tool) in [(Codec::Zstd, "zstd"), (Codec::Gzip, "gzip")] {
            let wire = forms.wire(codec);
            assert!(size(wire) < size(&forms.installed), "{codec:?}");
            let out = Command::new(tool)
                .args(["-dc"])
                .arg(wire)
                .output()
                .expect("decompress");
            assert!(out.status.success());
            assert_eq!(out.stdout, std::fs::read(&forms.installed).expect("read"));
        }
        // A second job finds them; an earlier build's forms are removed.
        let again = prepare(&source, "probe", "0123456789abcdef0123", dir.path());
        assert_eq!(again.installed, forms.installed);
        std::fs::write(dir.path().join("probe-ffffffffffffffff.stripped"), b"old").expect("old");
        prepare(&source, "probe", "0123456789abcdef0123", dir.path());
        assert!(!dir.path().join("probe-ffffffffffffffff.stripped").exists());
        assert_eq!(
            Codec::pick("/usr/bin/zstd\n/usr/bin/gzip\n", &forms),
            Codec::Zstd
        );
        assert_eq!(Codec::pick("/bin/gzip\n", &forms), Codec::Gzip);
        assert_eq!(Codec::pick("", &forms), Codec::Raw);
    }
}
