//! Parsers for Linux's `/proc/meminfo` and `/proc/cpuinfo`, kept pure so fixture text
//! from any machine can test them.

use std::path::Path;

use crate::error::AgentError;

pub const MEMINFO: &str = "/proc/meminfo";
pub const CPUINFO: &str = "/proc/cpuinfo";

/// Memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// The marketing name, when the kernel reports one (x86 does; many ARM kernels
    /// do not).
    pub model: Option<String>,
    /// Logical processors the kernel lists, online or not.
    pub processors: u32,
}

pub fn read_meminfo() -> Result<MemInfo, AgentError> {
    let text = read(MEMINFO)?;
    parse_meminfo(&text).map_err(|reason| AgentError::BadSystemFile {
        path: MEMINFO.into(),
        reason,
    })
}

pub fn read_cpuinfo() -> Result<CpuInfo, AgentError> {
    Ok(parse_cpuinfo(&read(CPUINFO)?))
}

fn read(path: &str) -> Result<String, AgentError> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| AgentError::ReadSystemFile {
        path: path.into(),
        source,
    })
}

/// Reads `MemTotal` and `MemAvailable`. Kernels before 3.14 lack `MemAvailable`; for
/// them free + buffers + page cache is the usual estimate.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, &'static str> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            if key.trim() != name {
                return None;
            }
            let mut parts = value.split_whitespace();
            let number: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") => number.checked_mul(1024),
                None => Some(number),
                Some(_) => None,
            }
        })
    };
    let total = field("MemTotal").ok_or("no MemTotal line")?;
    let available = match field("MemAvailable") {
        Some(available) => available,
        None => {
            let free = field("MemFree").ok_or("neither MemAvailable nor MemFree")?;
            free.saturating_add(field("Buffers").unwrap_or(0))
                .saturating_add(field("Cached").unwrap_or(0))
        }
    };
    Ok(MemInfo {
        total,
        available: available.min(total),
    })
}

/// Counts `processor` entries and finds the model name under the key each
/// architecture uses for it.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    // Keys are case-sensitive: old ARM kernels use `Processor` for the model and
    // `processor` for the index.
    const MODEL_KEYS: [&str; 5] = ["model name", "Processor", "Hardware", "cpu model", "cpu"];
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect();
    let processors = entries
        .iter()
        .filter(|(key, _)| *key == "processor")
        .count();
    let model = MODEL_KEYS.iter().find_map(|wanted| {
        entries
            .iter()
            .find(|(key, value)| key == wanted && !value.is_empty())
            .map(|(_, value)| (*value).to_owned())
    });
    CpuInfo {
        model,
        processors: u32::try_from(processors).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_MODERN: &str = "\
MemTotal:       16318412 kB
MemFree:         1209876 kB
MemAvailable:    9876543 kB
Buffers:          345678 kB
Cached:          7654321 kB
HugePages_Total:       0
";

    const MEMINFO_OLD_KERNEL: &str = "\
MemTotal:        2048000 kB
MemFree:          100000 kB
Buffers:           20000 kB
Cached:           300000 kB
";

    const CPUINFO_X86: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
";

    const CPUINFO_ARM64: &str = "\
processor\t: 0
BogoMIPS\t: 48.00
CPU implementer\t: 0x41
CPU part\t: 0xd0c

processor\t: 1
BogoMIPS\t: 48.00

processor\t: 2

processor\t: 3
";

    const CPUINFO_RASPBERRY: &str = "\
processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)

Hardware\t: BCM2835
Revision\t: a02082
";

    #[test]
    fn meminfo_reads_total_and_available_in_bytes() {
        assert_eq!(
            parse_meminfo(MEMINFO_MODERN),
            Ok(MemInfo {
                total: 16_318_412 * 1024,
                available: 9_876_543 * 1024
            })
        );
    }

    #[test]
    fn meminfo_without_available_estimates_it() {
        assert_eq!(
            parse_meminfo(MEMINFO_OLD_KERNEL),
            Ok(MemInfo {
                total: 2_048_000 * 1024,
                available: 420_000 * 1024
            })
        );
    }

    #[test]
    fn meminfo_without_total_is_an_error() {
        assert!(parse_meminfo("MemFree: 10 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\nMemFree: 1 kB\n").is_err());
        assert!(parse_meminfo("").is_err());
    }

    #[test]
    fn cpuinfo_counts_processors_and_finds_the_model() {
        let cases = [
            (CPUINFO_X86, Some("Intel(R) Xeon(R) CPU @ 2.20GHz"), 2),
            (CPUINFO_ARM64, None, 4),
            (CPUINFO_RASPBERRY, Some("ARMv7 Processor rev 4 (v7l)"), 1),
            ("", None, 0),
        ];
        for (text, model, processors) in cases {
            let parsed = parse_cpuinfo(text);
            assert_eq!(parsed.model.as_deref(), model, "fixture {text:?}");
            assert_eq!(parsed.processors, processors, "fixture {text:?}");
        }
    }

    #[test]
    fn this_machines_proc_files_parse() {
        let memory = read_meminfo().expect("/proc/meminfo parses");
        assert!(memory.total > 0 && memory.available <= memory.total);
        assert!(read_cpuinfo().expect("/proc/cpuinfo reads").processors >= 1);
    }
}
