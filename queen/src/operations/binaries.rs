//! The binaries `hive install` pushes, as sets: the queen's `bin_dir` holds one set
//! (`rbee-hive` and `llm-worker-rbee`, usually this machine's own build) and any number
//! of further sets in its subdirectories, one per target (`scripts/release.sh` writes
//! `<bin_dir>/x86_64-unknown-linux-gnu/` built against glibc 2.17, for instance). Each
//! hive gets the first set it can run (the `bin_dir`'s own set first, then the
//! subdirectories by name), judged from the sets' ELF headers before anything is
//! pushed; a set is stripped, compressed and hashed only when a hive needs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbee_protocol::{ErrorCode, ErrorDetail};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::JobContext;
use super::elf;
use super::push::{self, Forms};
use super::runnable::{self, HivePlatform, Unsettled};

/// The binaries of one set, by the names the hive runs them as.
pub(super) const NAMES: [&str; 2] = ["rbee-hive", "llm-worker-rbee"];

/// One binary of a set, ready to push.
pub(super) struct LocalBinary {
    pub name: &'static str,
    /// The sha256 of the file as the hive gets it (stripped).
    pub sha256: String,
    pub forms: Forms,
}

/// One directory holding every binary of [`NAMES`].
pub(super) struct BinarySet {
    dir: PathBuf,
    /// The architecture and glibc each binary needs, read from its ELF headers.
    needs: Vec<(&'static str, elf::Needs)>,
    prepared: OnceCell<Result<Arc<Vec<LocalBinary>>, ErrorDetail>>,
    forms_dir: PathBuf,
}

/// Every set the queen holds, found once per job.
pub(super) struct Binaries {
    bin_dir: PathBuf,
    sets: Vec<BinarySet>,
}

/// Hashes a file, reusing the last hash while its size and mtime stay the same.
pub(super) fn sha256_cached(path: &Path) -> std::io::Result<String> {
    type Cache =
        std::sync::Mutex<std::collections::HashMap<PathBuf, (std::time::SystemTime, u64, String)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let stamp = (meta.modified()?, meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some((modified, len, hash)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path)
        && (*modified, *len) == stamp
    {
        return Ok(hash.clone());
    }
    // Streamed: a model pushed from here can be larger than this machine's memory.
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    let hash = hex::encode(hasher.finalize());
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_owned(), (stamp.0, stamp.1, hash.clone()));
    Ok(hash)
}

fn internal(e: impl std::fmt::Display) -> ErrorDetail {
    ErrorDetail::new(ErrorCode::Internal, e.to_string())
}

impl Binaries {
    /// Finds the sets under the configured `bin_dir` (the directory queen-rbee runs
    /// from when none is set) and reads what each binary needs.
    pub async fn find(ctx: &JobContext) -> Result<Arc<Binaries>, ErrorDetail> {
        let bin_dir = match &ctx.state.config.queen.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(PathBuf::from))
                .ok_or_else(|| internal("cannot tell where queen-rbee runs from"))?,
        };
        let forms_dir = ctx
            .state
            .config
            .queen
            .state_dir
            .clone()
            .unwrap_or_else(rbee_config::paths::state_dir)
            .join("push");
        tokio::task::spawn_blocking(move || Binaries::scan(bin_dir, &forms_dir))
            .await
            .map_err(internal)?
            .map(Arc::new)
    }

    fn scan(bin_dir: PathBuf, forms_dir: &Path) -> Result<Binaries, ErrorDetail> {
        let mut dirs = vec![bin_dir.clone()];
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&bin_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| NAMES.iter().all(|name| p.join(name).is_file()))
                    .collect()
            })
            .unwrap_or_default();
        subdirs.sort();
        dirs.extend(subdirs);
        let mut sets = Vec::new();
        for dir in dirs {
            // Subdirectories were taken only holding both binaries.
            let own = dir == bin_dir;
            let mut needs = Vec::new();
            for name in NAMES {
                let path = dir.join(name);
                match elf::read(&path) {
                    Ok(need) => needs.push((name, need)),
                    // The bin_dir's own set is the one users mean; its faults are
                    // theirs to see. Another directory that is not a set is skipped.
                    Err(e) if own && path.exists() => {
                        return Err(ErrorDetail::new(
                            ErrorCode::NotFound,
                            format!("cannot tell what {} needs to run: {e}", path.display()),
                        )
                        .with_hint("bin_dir under [queen] in config.toml must hold Linux (ELF) builds of rbee-hive and llm-worker-rbee"));
                    }
                    Err(_) => break,
                }
            }
            if needs.len() == NAMES.len() {
                sets.push(BinarySet {
                    dir,
                    needs,
                    prepared: OnceCell::new(),
                    forms_dir: forms_dir.to_owned(),
                });
            }
        }
        if sets.is_empty() {
            let missing = bin_dir.join(NAMES[0]);
            return Err(ErrorDetail::new(
                ErrorCode::NotFound,
                format!(
                    "cannot read {}: no rbee-hive and llm-worker-rbee in {} or its subdirectories",
                    missing.display(),
                    bin_dir.display()
                ),
            )
            .with_hint(
                "build the binaries (`cargo build --release --workspace`, or scripts/release.sh for portable ones) or set bin_dir under [queen] in config.toml",
            ));
        }
        Ok(Binaries { bin_dir, sets })
    }

    /// The first set `hive` can run, with what the check could not settle; when none
    /// fits, the refusal of the `bin_dir`'s own set (or the first), naming the others.
    pub fn pick(
        &self,
        hive: &HivePlatform<'_>,
    ) -> Result<(&BinarySet, Option<Unsettled>), ErrorDetail> {
        let mut refusal = None;
        for set in &self.sets {
            let needs: Vec<(&str, &elf::Needs)> =
                set.needs.iter().map(|(name, n)| (*name, n)).collect();
            match runnable::check(hive, &needs) {
                Ok(unsettled) => return Ok((set, unsettled)),
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        let mut refusal = refusal.expect("a queen's binaries are at least one set");
        if self.sets.len() > 1 {
            let held: Vec<String> = self
                .sets
                .iter()
                .map(|s| s.describe(&self.bin_dir))
                .collect();
            let hint = refusal.hint.take().unwrap_or_default();
            refusal = refusal.with_hint(format!("{hint} (this queen holds: {})", held.join("; ")));
        }
        Err(refusal)
    }
}

impl BinarySet {
    /// Where the set is, relative to `bin_dir`, with what it needs.
    pub fn describe(&self, bin_dir: &Path) -> String {
        let place = match self.dir.strip_prefix(bin_dir) {
            Ok(sub) if !sub.as_os_str().is_empty() => format!("bin_dir/{}", sub.display()),
            _ => "bin_dir".to_owned(),
        };
        let arch = self.needs.first().map_or("", |(_, n)| n.arch.as_str());
        match self.needs.iter().filter_map(|(_, n)| n.glibc).max() {
            Some(glibc) => format!("{place}: {arch}, glibc {glibc} or newer"),
            None => format!("{place}: {arch}, static"),
        }
    }

    /// Whether this is the `bin_dir`'s own set.
    pub fn is_in(&self, bin_dir: &Path) -> bool {
        self.dir == bin_dir
    }

    /// The set's binaries stripped, compressed and hashed, once per job.
    pub async fn prepared(&self) -> Result<Arc<Vec<LocalBinary>>, ErrorDetail> {
        self.prepared
            .get_or_init(|| async {
                let dir = self.dir.clone();
                let forms_dir = self.forms_dir.clone();
                tokio::task::spawn_blocking(move || prepare(&dir, &forms_dir))
                    .await
                    .map_err(internal)?
                    .map(Arc::new)
            })
            .await
            .clone()
    }
}

impl Binaries {
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

fn prepare(dir: &Path, forms_dir: &Path) -> Result<Vec<LocalBinary>, ErrorDetail> {
    NAMES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let unreadable = |e: std::io::Error| {
                ErrorDetail::new(ErrorCode::NotFound, format!("cannot read {}: {e}", path.display()))
                    .with_hint("build the binaries (`cargo build --release --workspace`) or set bin_dir under [queen] in config.toml")
            };
            let built = sha256_cached(&path).map_err(unreadable)?;
            let forms = push::prepare(&path, name, &built, forms_dir);
            let sha256 = sha256_cached(&forms.installed).map_err(unreadable)?;
            Ok(LocalBinary {
                name,
                sha256,
                forms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_protocol::platform::{GlibcVersion, Libc};

    fn set(dir: &str, arch: &str, glibc: Option<&str>) -> BinarySet {
        let needs = elf::Needs {
            arch: arch.to_owned(),
            glibc: glibc.and_then(GlibcVersion::parse),
            interpreter: None,
        };
        BinarySet {
            dir: PathBuf::from(dir),
            needs: NAMES.iter().map(|name| (*name, needs.clone())).collect(),
            prepared: OnceCell::new(),
            forms_dir: PathBuf::new(),
        }
    }

    fn hive<'p>(arch: &'p str, libc: &'p Libc) -> HivePlatform<'p> {
        HivePlatform {
            alias: "h1",
            os: "linux",
            arch,
            libc,
        }
    }

    #[test]
    fn each_hive_gets_the_first_set_it_can_run() {
        let binaries = Binaries {
            bin_dir: PathBuf::from("/b"),
            sets: vec![
                set("/b", "x86_64", Some("2.34")),
                set("/b/aarch64-unknown-linux-gnu", "aarch64", Some("2.17")),
                set("/b/x86_64-unknown-linux-gnu", "x86_64", Some("2.17")),
            ],
        };
        let picked = |arch: &str, libc: &str| {
            let libc = Libc::from_probe(libc);
            binaries
                .pick(&hive(arch, &libc))
                .map(|(set, _)| set.describe(binaries.bin_dir()))
        };
        assert_eq!(
            picked("x86_64", "glibc 2.36"),
            Ok("bin_dir: x86_64, glibc 2.34 or newer".to_owned())
        );
        assert_eq!(
            picked("x86_64", "glibc 2.31"),
            Ok("bin_dir/x86_64-unknown-linux-gnu: x86_64, glibc 2.17 or newer".to_owned())
        );
        assert_eq!(
            picked("aarch64", "glibc 2.36"),
            Ok("bin_dir/aarch64-unknown-linux-gnu: aarch64, glibc 2.17 or newer".to_owned())
        );

        // Nothing fits: the own set's refusal, with every set named in the hint.
        let refused = picked("x86_64", "glibc 2.12").expect_err("too old for all");
        assert_eq!(
            refused.message,
            "h1 has glibc 2.12, but rbee-hive needs glibc 2.34 or newer; nothing was pushed"
        );
        let hint = refused.hint.expect("hint");
        assert!(
            hint.contains("this queen holds: bin_dir: x86_64, glibc 2.34 or newer; bin_dir/aarch64-unknown-linux-gnu: aarch64, glibc 2.17 or newer; bin_dir/x86_64-unknown-linux-gnu: x86_64, glibc 2.17 or newer"),
            "{hint}"
        );
        let refused = picked("riscv64", "glibc 2.36").expect_err("no riscv64 set");
        assert!(
            refused.message.starts_with("h1 is riscv64"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_bin_dir_without_binaries_is_an_error_with_a_hint_and_subdirectories_are_sets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let forms = dir.path().join("forms");
        let missing = Binaries::scan(dir.path().to_path_buf(), &forms)
            .err()
            .expect("no binaries");
        assert_eq!(missing.code, ErrorCode::NotFound);
        assert!(
            missing.message.contains("no rbee-hive and llm-worker-rbee"),
            "{}",
            missing.message
        );
        assert!(
            missing
                .hint
                .is_some_and(|h| h.contains("scripts/release.sh"))
        );

        // This test's own executable stands in for both binaries of a subdirectory set.
        let exe = std::env::current_exe().expect("test exe");
        let sub = dir.path().join("x86_64-unknown-linux-gnu");
        std::fs::create_dir_all(&sub).expect("subdir");
        for name in NAMES {
            std::fs::copy(&exe, sub.join(name)).expect("copy");
        }
        // A subdirectory with only one binary, or none, is not a set.
        std::fs::create_dir_all(dir.path().join("half")).expect("half");
        std::fs::copy(&exe, dir.path().join("half/rbee-hive")).expect("copy");
        let binaries = Binaries::scan(dir.path().to_path_buf(), &forms).expect("one set");
        assert_eq!(binaries.sets.len(), 1);
        assert_eq!(binaries.sets[0].needs[0].1.arch, std::env::consts::ARCH);
        assert!(!binaries.sets[0].is_in(binaries.bin_dir()));
    }
}
