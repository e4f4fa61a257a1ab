//! The kernel's name for this machine (uname): OS, architecture and hostname, in the
//! names Rust targets use so the queen can compare them with its binaries.

use std::ffi::CStr;

pub struct Uname {
    pub os: String,
    pub arch: String,
    pub hostname: String,
}

/// Asks the kernel; falls back to the target this binary was built for, which is
/// right unless the binary runs under emulation.
pub fn uname() -> Uname {
    // SAFETY: utsname is plain old data; uname fills it and returns 0, or fails and
    // leaves it zeroed, which reads as empty strings.
    let mut raw: libc::utsname = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::uname(&mut raw) } == 0;
    if !ok {
        return Uname {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            hostname: "unknown".to_owned(),
        };
    }
    Uname {
        os: rust_os_name(&field(&raw.sysname)),
        arch: rust_arch_name(&field(&raw.machine)),
        hostname: field(&raw.nodename),
    }
}

fn field(chars: &[libc::c_char]) -> String {
    // A utsname field is NUL-terminated within its array; a field that fills the
    // array without one is read as empty rather than past its end.
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rust_os_name(sysname: &str) -> String {
    match sysname {
        "Darwin" => "macos".to_owned(),
        other => other.to_lowercase(),
    }
}

fn rust_arch_name(machine: &str) -> String {
    match machine {
        "arm64" => "aarch64".to_owned(),
        "amd64" => "x86_64".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_rust_targets() {
        let cases = [
            ("Linux", "linux"),
            ("Darwin", "macos"),
            ("FreeBSD", "freebsd"),
        ];
        for (sysname, os) in cases {
            assert_eq!(rust_os_name(sysname), os);
        }
        let cases = [
            ("x86_64", "x86_64"),
            ("arm64", "aarch64"),
            ("aarch64", "aarch64"),
            ("amd64", "x86_64"),
        ];
        for (machine, arch) in cases {
            assert_eq!(rust_arch_name(machine), arch);
        }
    }

    #[test]
    fn this_machine_reads_as_the_target_it_was_built_for() {
        let uname = uname();
        assert_eq!(uname.os, std::env::consts::OS);
        assert_eq!(uname.arch, std::env::consts::ARCH);
        assert!(!uname.hostname.is_empty());
    }
}
