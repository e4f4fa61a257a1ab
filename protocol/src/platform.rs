//! A hive's C library, as the agent's `detect` and the queen's install probe read it
//! (`getconf GNU_LIBC_VERSION`, else `ldd --version`), and the glibc versions binaries
//! need: what `hive install` compares before it pushes anything.

use serde::{Deserialize, Serialize};

/// The shell words that ask a machine for its C library: their output is what
/// [`Libc::from_probe`] reads. glibc answers `getconf`; musl's `getconf` does not know
/// the name, and its `ldd` says `musl libc` on stderr.
pub const LIBC_PROBE: &str =
    "getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>&1 | head -n 2 | tr '\\n' ' '";

/// A glibc version as symbol versions name it (`GLIBC_2.34` is 2.34; a third number,
/// as in `GLIBC_2.3.4`, orders after the two before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlibcVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GlibcVersion {
    /// Reads `2.34` or `2.3.4`; anything else (a distribution suffix included) is `None`.
    pub fn parse(text: &str) -> Option<GlibcVersion> {
        let mut parts = text.split('.');
        let number = |part: Option<&str>| {
            part.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            None => 0,
            some => number(some)?,
        };
        parts.next().is_none().then_some(GlibcVersion {
            major,
            minor,
            patch,
        })
    }
}

impl std::fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.patch > 0 {
            write!(f, ".{}", self.patch)?;
        }
        Ok(())
    }
}

impl Serialize for GlibcVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GlibcVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GlibcVersion::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not a glibc version (2.N)"))
        })
    }
}

/// The C library a hive's programs link against.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Libc {
    Glibc {
        version: GlibcVersion,
    },
    Musl {
        /// As musl's `ldd` prints it, when it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Neither `getconf` nor `ldd` said (a minimal image, or an agent that predates the
    /// question).
    #[default]
    Unknown,
}

impl Libc {
    /// Reads what [`LIBC_PROBE`] printed: `glibc 2.36` from getconf, else `ldd
    /// --version`'s first lines (glibc's `ldd (Debian GLIBC 2.36-9) 2.36`, musl's `musl
    /// libc (x86_64) Version 1.2.4`).
    pub fn from_probe(text: &str) -> Libc {
        let text = text.trim();
        if let Some(version) = text
            .strip_prefix("glibc ")
            .and_then(|v| GlibcVersion::parse(v.trim()))
        {
            return Libc::Glibc { version };
        }
        if text.to_ascii_lowercase().contains("musl") {
            let mut words = text.split_whitespace();
            let version = words
                .by_ref()
                .find(|w| *w == "Version")
                .and_then(|_| words.next())
                .map(str::to_owned);
            return Libc::Musl { version };
        }
        if text.contains("GLIBC") || text.contains("GNU libc") {
            // `ldd (GNU libc) 2.17` and `ldd (Ubuntu GLIBC 2.35-0ubuntu3) 2.35`, then the
            // copyright line: the version is the word after the parentheses.
            if let Some(version) = text
                .split_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(GlibcVersion::parse)
            {
                return Libc::Glibc { version };
            }
        }
        Libc::Unknown
    }
}

impl std::fmt::Display for Libc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Libc::Glibc { version } => write!(f, "glibc {version}"),
            Libc::Musl {
                version: Some(version),
            } => write!(f, "musl {version}"),
            Libc::Musl { version: None } => f.write_str("musl"),
            Libc::Unknown => f.write_str("libc unknown"),
        }
    }
}

/// What a hive runs: OS and machine in Rust's names, and its C library. `model list`
/// reports it beside each hive's models.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub libc: Libc,
}

impl std::fmt::Display for Platform {
    /// `linux/x86_64, glibc 2.36`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}, {}", self.os, self.arch, self.libc)
    }
}

impl crate::HiveCapabilities {
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            arch: self.arch.clone(),
            libc: self.libc.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glibc(text: &str) -> Libc {
        Libc::Glibc {
            version: GlibcVersion::parse(text).expect("version"),
        }
    }

    #[test]
    fn probes_read_as_the_library_they_name() {
        let cases = [
            ("glibc 2.36\n", glibc("2.36")),
            ("glibc 2.17", glibc("2.17")),
            (
                "ldd (Debian GLIBC 2.31-13+deb11u5) 2.31 Copyright (C) 2020 ",
                glibc("2.31"),
            ),
            ("ldd (GNU libc) 2.17\nCopyright", glibc("2.17")),
            (
                "musl libc (x86_64) Version 1.2.4 ",
                Libc::Musl {
                    version: Some("1.2.4".into()),
                },
            ),
            ("musl libc (aarch64)", Libc::Musl { version: None }),
            ("", Libc::Unknown),
            ("sh: ldd: not found", Libc::Unknown),
            ("glibc two", Libc::Unknown),
            ("ldd (GNU libc) 2.x", Libc::Unknown),
        ];
        for (probe, expected) in cases {
            assert_eq!(Libc::from_probe(probe), expected, "{probe:?}");
        }
    }

    #[test]
    fn versions_order_as_numbers_and_survive_the_wire() {
        let v = |t| GlibcVersion::parse(t).expect(t);
        assert!(v("2.9") < v("2.17"));
        assert!(v("2.3") < v("2.3.4") && v("2.3.4") < v("2.4"));
        assert_eq!(v("2.3.4").to_string(), "2.3.4");
        for bad in ["", "2", "2.", "2.x", "2.3.4.5", "-2.3", "2.3-1"] {
            assert_eq!(GlibcVersion::parse(bad), None, "{bad:?}");
        }
        let libc = glibc("2.36");
        let json = serde_json::to_string(&libc).expect("json");
        assert_eq!(json, r#"{"kind":"glibc","version":"2.36"}"#);
        assert_eq!(serde_json::from_str::<Libc>(&json).expect("back"), libc);
        assert!(serde_json::from_str::<Libc>(r#"{"kind":"glibc","version":"new"}"#).is_err());
        assert_eq!(libc.to_string(), "glibc 2.36");
    }
}
