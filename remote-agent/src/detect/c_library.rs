//! The C library this machine's programs link against, asked the way the queen's
//! install probe asks (`rbee_protocol::platform::LIBC_PROBE`), so both read the same
//! answer: the agent's own build says nothing about what the machine has.

use rbee_protocol::platform::{LIBC_PROBE, Libc};

/// `Unknown` when no shell answers.
pub fn detect() -> Libc {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(LIBC_PROBE)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_or(Libc::Unknown, |out| {
            Libc::from_probe(&String::from_utf8_lossy(&out.stdout))
        })
}
