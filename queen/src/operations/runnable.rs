//! Whether a hive can run the binaries the queen holds, decided before anything is
//! pushed: the hive's OS and architecture (`uname -sm`) against the architecture the
//! binaries are built for, and its C library against the newest glibc they need (both
//! read from the binaries' own ELF headers, `elf.rs`).

use rbee_protocol::platform::Libc;
use rbee_protocol::{ErrorCode, ErrorDetail};

use super::elf::Needs;

/// The hive as the install probe found it.
pub struct HivePlatform<'p> {
    pub alias: &'p str,
    pub os: &'p str,
    pub arch: &'p str,
    pub libc: &'p Libc,
}

/// What the probe could not settle and the install goes on without.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsettled(pub String);

/// Refuses a hive that cannot run every binary of `binaries` (a name with its needs),
/// naming what the hive has and what the binary needs.
pub fn check(
    hive: &HivePlatform<'_>,
    binaries: &[(&str, &Needs)],
) -> Result<Option<Unsettled>, ErrorDetail> {
    let alias = hive.alias;
    if hive.os != "linux" {
        return Err(refusal(
            format!(
                "{alias} runs {}, but rbee's binaries are Linux programs",
                hive.os
            ),
            "a hive must be a Linux machine".to_owned(),
        ));
    }
    let mut unsettled = None;
    for (name, needs) in binaries {
        if needs.arch != hive.arch {
            return Err(refusal(
                format!(
                    "{alias} is {}, but this queen holds binaries for {} ({name} is an {} program); nothing was pushed",
                    hive.arch, needs.arch, needs.arch
                ),
                format!(
                    "build rbee for {}-unknown-linux-gnu and set bin_dir under [queen] in config.toml to where those binaries are",
                    hive.arch
                ),
            ));
        }
        if needs.dynamic_musl() {
            match hive.libc {
                Libc::Musl { .. } => {}
                Libc::Unknown => {
                    unsettled.get_or_insert_with(|| {
                        Unsettled(format!(
                            "{alias} did not say which C library it has; {name} is linked against musl"
                        ))
                    });
                }
                other => {
                    return Err(refusal(
                        format!(
                            "{alias}'s C library is {other}, but {name} is linked dynamically against musl; nothing was pushed"
                        ),
                        format!(
                            "build static binaries (--target {}-unknown-linux-musl with static linking) or glibc ones, and set bin_dir under [queen] in config.toml to them",
                            needs.arch
                        ),
                    ));
                }
            }
            continue;
        }
        let Some(needed) = needs.glibc else {
            continue;
        };
        match hive.libc {
            Libc::Glibc { version } if *version >= needed => {}
            Libc::Glibc { version } => {
                return Err(refusal(
                    format!(
                        "{alias} has glibc {version}, but {name} needs glibc {needed} or newer; nothing was pushed"
                    ),
                    format!(
                        "build the binaries against glibc {version} or older (e.g. `cargo zigbuild --target {}-unknown-linux-gnu.{version}`) and set bin_dir under [queen] in config.toml to them, or upgrade {alias}",
                        needs.arch
                    ),
                ));
            }
            Libc::Musl { .. } => {
                return Err(refusal(
                    format!(
                        "{alias}'s C library is {}, but {name} needs glibc {needed} or newer; nothing was pushed",
                        hive.libc
                    ),
                    format!(
                        "build static binaries (--target {}-unknown-linux-musl) and set bin_dir under [queen] in config.toml to them",
                        needs.arch
                    ),
                ));
            }
            Libc::Unknown => {
                unsettled.get_or_insert_with(|| {
                    Unsettled(format!(
                        "{alias} did not say which C library it has (neither `getconf GNU_LIBC_VERSION` nor `ldd --version` answered); {name} needs glibc {needed} or newer"
                    ))
                });
            }
        }
    }
    Ok(unsettled)
}

fn refusal(message: String, hint: String) -> ErrorDetail {
    ErrorDetail::new(ErrorCode::UnsupportedPlatform, message).with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_protocol::platform::GlibcVersion;

    fn needs(arch: &str, glibc: Option<&str>) -> Needs {
        Needs {
            arch: arch.to_owned(),
            glibc: glibc.and_then(GlibcVersion::parse),
            interpreter: glibc.map(|_| "/lib64/ld-linux-x86-64.so.2".to_owned()),
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
    fn each_mismatch_is_refused_naming_both_sides() {
        let worker = needs("x86_64", Some("2.34"));
        let agent = needs("x86_64", Some("2.17"));
        let binaries = [("rbee-hive", &agent), ("llm-worker-rbee", &worker)];
        let old = Libc::from_probe("glibc 2.17");
        let new = Libc::from_probe("glibc 2.36");
        let musl = Libc::from_probe("musl libc (x86_64) Version 1.2.4");
        assert_eq!(check(&hive("x86_64", &new), &binaries), Ok(None));
        assert_eq!(
            check(&hive("x86_64", &Libc::from_probe("glibc 2.34")), &binaries),
            Ok(None)
        );

        let refused = check(&hive("x86_64", &old), &binaries).expect_err("old glibc");
        assert_eq!(refused.code, ErrorCode::UnsupportedPlatform);
        assert_eq!(
            refused.message,
            "h1 has glibc 2.17, but llm-worker-rbee needs glibc 2.34 or newer; nothing was pushed"
        );
        assert!(
            refused
                .hint
                .expect("hint")
                .contains("x86_64-unknown-linux-gnu.2.17")
        );

        let refused = check(&hive("x86_64", &musl), &binaries).expect_err("musl");
        assert!(
            refused.message.contains("musl 1.2.4"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("needs glibc 2.17"),
            "{}",
            refused.message
        );

        let refused = check(&hive("aarch64", &new), &binaries).expect_err("arch");
        assert_eq!(
            refused.message,
            "h1 is aarch64, but this queen holds binaries for x86_64 (rbee-hive is an x86_64 program); nothing was pushed"
        );

        let mac = HivePlatform {
            os: "macos",
            ..hive("x86_64", &new)
        };
        assert!(check(&mac, &binaries).is_err());
    }

    #[test]
    fn an_unknown_libc_is_noted_and_static_binaries_need_none() {
        let worker = needs("x86_64", Some("2.34"));
        let unsettled = check(&hive("x86_64", &Libc::Unknown), &[("w", &worker)])
            .expect("goes on")
            .expect("noted");
        assert!(unsettled.0.contains("needs glibc 2.34"), "{}", unsettled.0);
        // Linked dynamically against musl: a musl hive only.
        let dynamic_musl = Needs {
            interpreter: Some("/lib/ld-musl-x86_64.so.1".to_owned()),
            ..needs("x86_64", None)
        };
        let glibc = Libc::from_probe("glibc 2.36");
        let refused =
            check(&hive("x86_64", &glibc), &[("w", &dynamic_musl)]).expect_err("glibc hive");
        assert_eq!(
            refused.message,
            "h1's C library is glibc 2.36, but w is linked dynamically against musl; nothing was pushed"
        );
        let musl = Libc::from_probe("musl libc (x86_64) Version 1.2.4");
        assert_eq!(
            check(&hive("x86_64", &musl), &[("w", &dynamic_musl)]),
            Ok(None)
        );
        assert!(
            check(&hive("x86_64", &Libc::Unknown), &[("w", &dynamic_musl)])
                .expect("goes on")
                .is_some()
        );
        let fully_static = needs("x86_64", None);
        let musl = Libc::Musl { version: None };
        assert_eq!(
            check(&hive("x86_64", &musl), &[("w", &fully_static)]),
            Ok(None)
        );
    }
}
