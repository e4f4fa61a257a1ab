//! What a binary needs of the machine that runs it, read from its own ELF headers: the
//! architecture it is built for (`e_machine`), the newest glibc it links against
//! (the highest `GLIBC_x.y` among its version needs, `.gnu.version_r`, whose names
//! are in the string table that section links to) and its program interpreter
//! (`PT_INTERP`: the dynamic loader, `ld-musl-*` for a dynamically linked musl
//! binary). `hive install` compares them with the hive before pushing.
//!
//! Only the headers, the program header table and those sections are read, each checked against the file's
//! size first: a damaged or foreign file is an [`ElfError`], never a panic or a huge
//! allocation.

use std::path::Path;

use rbee_protocol::platform::GlibcVersion;

/// `SHT_GNU_verneed`: the section of version needs.
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file")]
    NotElf,
    #[error("damaged ELF file: {0}")]
    Damaged(&'static str),
}

/// What a binary needs: its architecture in Rust's names (`x86_64`, `aarch64`) and the
/// oldest glibc that has every symbol version it asks for (`None`: it asks for none,
/// as a static or musl binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub arch: String,
    pub glibc: Option<GlibcVersion>,
    /// The dynamic loader it names (`/lib64/ld-linux-x86-64.so.2`,
    /// `/lib/ld-musl-x86_64.so.1`); `None` for a static binary.
    pub interpreter: Option<String>,
}

impl Needs {
    /// Whether it is linked dynamically against musl, so only a musl hive runs it.
    pub fn dynamic_musl(&self) -> bool {
        self.interpreter.as_deref().is_some_and(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("ld-musl"))
        })
    }
}

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// The longest interpreter path read; a longer one is a damaged file.
const MAX_INTERPRETER: u64 = 4096;

/// Reads the needs of the file at `path`.
pub fn read(path: &Path) -> Result<Needs, ElfError> {
    use std::os::unix::fs::FileExt;
    let io = |source| ElfError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    needs(len, &mut |offset, size| {
        let mut bytes = vec![0; size];
        file.read_exact_at(&mut bytes, offset).map_err(io)?;
        Ok(bytes)
    })
}

/// A range of the file: `read(offset, size)`, called only for ranges inside it.
type ReadAt<'r> = dyn FnMut(u64, usize) -> Result<Vec<u8>, ElfError> + 'r;

fn needs(len: u64, read_at: &mut ReadAt<'_>) -> Result<Needs, ElfError> {
    let mut read = |offset: u64, size: u64, what: &'static str| {
        let end = offset.checked_add(size).ok_or(ElfError::Damaged(what))?;
        if end > len {
            return Err(ElfError::Damaged(what));
        }
        let size = usize::try_from(size).map_err(|_| ElfError::Damaged(what))?;
        read_at(offset, size)
    };
    if len < 64 {
        return Err(ElfError::NotElf);
    }
    let header = Header::parse(&read(0, 64, "header")?)?;
    let interpreter = match header.program_count {
        0 => None,
        count => {
            let table = read(
                header.program_offset,
                u64::from(header.program_size) * u64::from(count),
                "program header table out of the file",
            )?;
            let mut found = None;
            for entry in table.chunks_exact(usize::from(header.program_size)) {
                let (kind, offset, size) = header.program(entry)?;
                if kind == PT_INTERP {
                    if size > MAX_INTERPRETER {
                        return Err(ElfError::Damaged("interpreter path too long"));
                    }
                    let bytes = read(offset, size, "interpreter out of the file")?;
                    found = Some(string_at(&bytes, 0)?.to_owned());
                    break;
                }
            }
            found
        }
    };
    if header.section_count == 0 {
        // No sections: nothing names a version (a fully stripped or static file).
        return Ok(Needs {
            arch: arch_name(header.machine, header.wide),
            glibc: None,
            interpreter,
        });
    }
    let table = read(
        header.section_offset,
        u64::from(header.section_size) * u64::from(header.section_count),
        "section table out of the file",
    )?;
    let sections: Vec<Section> = table
        .chunks_exact(usize::from(header.section_size))
        .map(|entry| header.section(entry))
        .collect::<Result<_, _>>()?;
    let mut newest: Option<GlibcVersion> = None;
    for needs in sections.iter().filter(|s| s.kind == SHT_GNU_VERNEED) {
        let strings = sections
            .get(needs.link as usize)
            .ok_or(ElfError::Damaged("version needs link no string table"))?;
        let verneed = read(needs.offset, needs.size, "version needs out of the file")?;
        let strings = read(strings.offset, strings.size, "string table out of the file")?;
        for name in header.version_names(&verneed, &strings)? {
            let version = name.strip_prefix("GLIBC_").and_then(GlibcVersion::parse);
            newest = newest.max(version);
        }
    }
    Ok(Needs {
        arch: arch_name(header.machine, header.wide),
        glibc: newest,
        interpreter,
    })
}

/// The parts of the ELF header this needs.
struct Header {
    wide: bool,
    little: bool,
    machine: u16,
    section_offset: u64,
    section_size: u16,
    section_count: u16,
    program_offset: u64,
    program_size: u16,
    program_count: u16,
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Header, ElfError> {
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        let wide = match bytes[4] {
            1 => false,
            2 => true,
            _ => return Err(ElfError::Damaged("unknown class")),
        };
        let little = match bytes[5] {
            1 => true,
            2 => false,
            _ => return Err(ElfError::Damaged("unknown byte order")),
        };
        let header = Header {
            wide,
            little,
            machine: 0,
            section_offset: 0,
            section_size: 0,
            section_count: 0,
            program_offset: 0,
            program_size: 0,
            program_count: 0,
        };
        let (offset, size, count) = if wide {
            (header.u64(bytes, 0x28)?, 0x3a, 0x3c)
        } else {
            (u64::from(header.u32(bytes, 0x20)?), 0x2e, 0x30)
        };
        let section_size = header.u16(bytes, size)?;
        let minimum = if wide { 64 } else { 40 };
        let section_count = header.u16(bytes, count)?;
        if section_count > 0 && section_size < minimum {
            return Err(ElfError::Damaged("section entries too small"));
        }
        let (program_offset, program_size, program_count) = if wide {
            (header.u64(bytes, 0x20)?, 0x36, 0x38)
        } else {
            (u64::from(header.u32(bytes, 0x1c)?), 0x2a, 0x2c)
        };
        let program_size = header.u16(bytes, program_size)?;
        let program_count = header.u16(bytes, program_count)?;
        if program_count > 0 && program_size < if wide { 56 } else { 32 } {
            return Err(ElfError::Damaged("program header entries too small"));
        }
        Ok(Header {
            machine: header.u16(bytes, 18)?,
            section_offset: offset,
            section_size,
            section_count,
            program_offset,
            program_size,
            program_count,
            ..header
        })
    }

    /// A program header's type, file offset and size in the file.
    fn program(&self, entry: &[u8]) -> Result<(u32, u64, u64), ElfError> {
        Ok(if self.wide {
            (
                self.u32(entry, 0)?,
                self.u64(entry, 8)?,
                self.u64(entry, 32)?,
            )
        } else {
            (
                self.u32(entry, 0)?,
                u64::from(self.u32(entry, 4)?),
                u64::from(self.u32(entry, 16)?),
            )
        })
    }

    fn section(&self, entry: &[u8]) -> Result<Section, ElfError> {
        Ok(if self.wide {
            Section {
                kind: self.u32(entry, 4)?,
                offset: self.u64(entry, 24)?,
                size: self.u64(entry, 32)?,
                link: self.u32(entry, 40)?,
            }
        } else {
            Section {
                kind: self.u32(entry, 4)?,
                offset: u64::from(self.u32(entry, 16)?),
                size: u64::from(self.u32(entry, 20)?),
                link: self.u32(entry, 24)?,
            }
        })
    }

    /// Every version name a `.gnu.version_r` section asks for: a chain of entries (one
    /// per library), each with a chain of auxiliary entries (one per version), linked by
    /// offsets relative to the entry. Offsets only move forward, so the walk ends.
    fn version_names<'s>(
        &self,
        verneed: &[u8],
        strings: &'s [u8],
    ) -> Result<Vec<&'s str>, ElfError> {
        let mut names = Vec::new();
        let mut entry = 0usize;
        loop {
            let count = self.u16(verneed, entry + 2)?;
            let mut aux = entry + self.u32(verneed, entry + 8)? as usize;
            for _ in 0..count {
                names.push(string_at(strings, self.u32(verneed, aux + 8)?)?);
                match self.u32(verneed, aux + 12)? {
                    0 => break,
                    next => aux += next as usize,
                }
            }
            match self.u32(verneed, entry + 12)? {
                0 => return Ok(names),
                next => entry += next as usize,
            }
        }
    }

    fn u16(&self, bytes: &[u8], at: usize) -> Result<u16, ElfError> {
        let b: [u8; 2] = field(bytes, at)?;
        Ok(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, bytes: &[u8], at: usize) -> Result<u32, ElfError> {
        let b: [u8; 4] = field(bytes, at)?;
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(&self, bytes: &[u8], at: usize) -> Result<u64, ElfError> {
        let b: [u8; 8] = field(bytes, at)?;
        Ok(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ElfError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or(ElfError::Damaged("a field runs past its section"))
}

/// The NUL-terminated name at `at` in a string table.
fn string_at(strings: &[u8], at: u32) -> Result<&str, ElfError> {
    let rest = strings
        .get(at as usize..)
        .ok_or(ElfError::Damaged("a name outside its string table"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(ElfError::Damaged("an unterminated name"))?;
    std::str::from_utf8(&rest[..end]).map_err(|_| ElfError::Damaged("a name that is not UTF-8"))
}

/// `e_machine` in the names Rust and `uname -m` (as the agent maps it) use.
fn arch_name(machine: u16, wide: bool) -> String {
    match (machine, wide) {
        (62, _) => "x86_64".to_owned(),
        (183, _) => "aarch64".to_owned(),
        (3, _) => "x86".to_owned(),
        (40, _) => "arm".to_owned(),
        (243, true) => "riscv64".to_owned(),
        (21, true) => "powerpc64".to_owned(),
        (22, true) => "s390x".to_owned(),
        (other, _) => format!("ELF machine {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the needs of a binary held in memory.
    fn parse(bytes: &[u8]) -> Result<Needs, ElfError> {
        needs(bytes.len() as u64, &mut |offset, size| {
            Ok(bytes[offset as usize..offset as usize + size].to_vec())
        })
    }

    /// A little ELF64 file with one `.gnu.version_r` naming two libraries' versions,
    /// and its string table.
    fn elf_with_versions(versions: &[(&str, &[&str])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |s: &str| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let mut verneed = Vec::new();
        for (i, (file, names)) in versions.iter().enumerate() {
            let entry_size = 16 + 16 * names.len() as u32;
            let next = if i + 1 == versions.len() {
                0
            } else {
                entry_size
            };
            verneed.extend_from_slice(&1u16.to_le_bytes());
            verneed.extend_from_slice(&(names.len() as u16).to_le_bytes());
            verneed.extend_from_slice(&name(file).to_le_bytes());
            verneed.extend_from_slice(&16u32.to_le_bytes());
            verneed.extend_from_slice(&next.to_le_bytes());
            for (j, version) in names.iter().enumerate() {
                let next = if j + 1 == names.len() { 0u32 } else { 16 };
                verneed.extend_from_slice(&0u32.to_le_bytes());
                verneed.extend_from_slice(&0u16.to_le_bytes());
                verneed.extend_from_slice(&0u16.to_le_bytes());
                verneed.extend_from_slice(&name(version).to_le_bytes());
                verneed.extend_from_slice(&next.to_le_bytes());
            }
        }
        let mut file = vec![0u8; 64];
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2;
        file[5] = 1;
        file[18..20].copy_from_slice(&62u16.to_le_bytes());
        let verneed_at = file.len() as u64;
        file.extend_from_slice(&verneed);
        let strings_at = file.len() as u64;
        file.extend_from_slice(&strings);
        let table_at = file.len() as u64;
        let section = |kind: u32, offset: u64, size: usize, link: u32| {
            let mut s = vec![0u8; 64];
            s[4..8].copy_from_slice(&kind.to_le_bytes());
            s[24..32].copy_from_slice(&offset.to_le_bytes());
            s[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            s[40..44].copy_from_slice(&link.to_le_bytes());
            s
        };
        file.extend(section(0, 0, 0, 0));
        file.extend(section(SHT_GNU_VERNEED, verneed_at, verneed.len(), 2));
        file.extend(section(3, strings_at, strings.len(), 0));
        file[0x28..0x30].copy_from_slice(&table_at.to_le_bytes());
        file[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        file[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        file
    }

    #[test]
    fn the_newest_glibc_version_named_is_the_need() {
        let file = elf_with_versions(&[
            ("libc.so.6", &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.17"]),
            ("libgcc_s.so.1", &["GCC_3.0", "GCC_4.2.0"]),
            ("libm.so.6", &["GLIBC_2.29"]),
        ]);
        let needs = parse(&file).expect("parses");
        assert_eq!(needs.arch, "x86_64");
        assert_eq!(needs.glibc, GlibcVersion::parse("2.34"));
        let none = parse(&elf_with_versions(&[("libgcc_s.so.1", &["GCC_3.0"])])).expect("ok");
        assert_eq!(none.glibc, None);
    }

    /// `file` with a program header table of one `PT_INTERP` naming `path`.
    fn with_interpreter(mut file: Vec<u8>, path: &str) -> Vec<u8> {
        let at = file.len() as u64;
        file.extend_from_slice(path.as_bytes());
        file.push(0);
        let table_at = file.len() as u64;
        let mut entry = vec![0u8; 56];
        entry[..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        entry[8..16].copy_from_slice(&at.to_le_bytes());
        entry[32..40].copy_from_slice(&(path.len() as u64 + 1).to_le_bytes());
        file.extend(entry);
        file[0x20..0x28].copy_from_slice(&table_at.to_le_bytes());
        file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        file[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        file
    }

    #[test]
    fn the_interpreter_tells_a_dynamic_musl_binary_from_a_glibc_one() {
        let musl = with_interpreter(
            elf_with_versions(&[("libgcc_s.so.1", &["GCC_3.0"])]),
            "/lib/ld-musl-x86_64.so.1",
        );
        let needs = parse(&musl).expect("parses");
        assert_eq!(
            needs.interpreter.as_deref(),
            Some("/lib/ld-musl-x86_64.so.1")
        );
        assert!(needs.dynamic_musl());
        assert_eq!(needs.glibc, None);
        let glibc = with_interpreter(
            elf_with_versions(&[("libc.so.6", &["GLIBC_2.17"])]),
            "/lib64/ld-linux-x86-64.so.2",
        );
        let needs = parse(&glibc).expect("parses");
        assert!(!needs.dynamic_musl());
        assert_eq!(needs.glibc, GlibcVersion::parse("2.17"));
        // No program headers: a static binary names no loader.
        let none = parse(&elf_with_versions(&[("libc.so.6", &["GLIBC_2.17"])])).expect("ok");
        assert_eq!(none.interpreter, None);
        // Damage in the program headers is an error, not a panic.
        for cut in 0..musl.len() {
            let _ = parse(&musl[..cut]);
        }
        for at in 0..musl.len() {
            let mut bad = musl.clone();
            bad[at] = 0xff;
            let _ = parse(&bad);
        }
    }

    #[test]
    fn this_test_binary_reads_as_what_objdump_says_it_needs() {
        let exe = std::env::current_exe().expect("exe");
        let needs = read(&exe).expect("reads");
        assert_eq!(needs.arch, std::env::consts::ARCH);
        let objdump = std::process::Command::new("objdump")
            .arg("-p")
            .arg(&exe)
            .output()
            .expect("objdump runs");
        let text = String::from_utf8_lossy(&objdump.stdout);
        let newest = text
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("GLIBC_").and_then(GlibcVersion::parse))
            .max();
        assert!(newest.is_some(), "a glibc build names glibc versions");
        assert_eq!(needs.glibc, newest);
        assert!(!needs.dynamic_musl());
        let interpreter = needs
            .interpreter
            .expect("a dynamic executable names its loader");
        assert!(interpreter.contains("/ld-linux"), "{interpreter}");
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let good = elf_with_versions(&[("libc.so.6", &["GLIBC_2.34"])]);
        assert!(matches!(parse(b"#!/bin/sh\n"), Err(ElfError::NotElf)));
        assert!(matches!(parse(&[0u8; 100]), Err(ElfError::NotElf)));
        // Every truncation, and every byte changed, is an answer: a need or an error.
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        for at in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = parse(&bad);
            }
        }
        let mut table_past_end = good.clone();
        table_past_end[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&table_past_end), Err(ElfError::Damaged(_))));
    }
}
