//! Cancellation: a flag that long work checks, set when the queen closes the
//! channel (stdin EOF) or the session hangs up (SIGHUP).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::error::AgentError;

/// Shared by the work and whoever may cancel it; cloning shares the same flag.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        CancelFlag::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once cancelled: long work calls this between steps.
    pub fn check(&self) -> Result<(), AgentError> {
        if self.is_cancelled() {
            Err(AgentError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Cancels `flag` when `input` reaches end of file or fails. Whatever the queen
/// writes before closing is ignored: no command reads stdin.
pub fn cancel_on_eof<R: Read + Send + 'static>(
    mut input: R,
    flag: CancelFlag,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok(read) = input.read(&mut buffer) {
            if read == 0 {
                break;
            }
        }
        flag.cancel();
    })
}

/// Cancels `flag` when the process receives SIGHUP.
///
/// SIGHUP is blocked in the calling thread and waited for by a dedicated thread, so no
/// code runs in signal context. Threads inherit the mask of the thread that spawns
/// them, so this must be called on the main thread before any other thread starts;
/// child processes do not inherit it (the standard library resets the mask on spawn).
pub fn cancel_on_sighup(flag: CancelFlag) -> std::io::Result<thread::JoinHandle<()>> {
    let set = sighup_set();
    // SAFETY: `set` is an initialised signal set; a null old-mask pointer is allowed.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if result != 0 {
        return Err(std::io::Error::from_raw_os_error(result));
    }
    Ok(thread::spawn(move || {
        let set = sighup_set();
        let mut received: libc::c_int = 0;
        // SAFETY: both pointers point to live locals of the right types.
        // sigwait fails only for an invalid set; then SIGHUP stays blocked and
        // cancellation falls back to stdin EOF.
        if unsafe { libc::sigwait(&set, &mut received) } == 0 {
            flag.cancel();
        }
    }))
}

fn sighup_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset adds to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    #[test]
    fn closing_the_input_cancels_and_data_does_not() {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let flag = CancelFlag::new();
        let watcher = cancel_on_eof(reader, flag.clone());

        writer.write_all(b"keep going\n").expect("write");
        thread::sleep(Duration::from_millis(50));
        assert!(!flag.is_cancelled(), "data on stdin must not cancel");
        assert!(flag.check().is_ok());

        drop(writer);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !flag.is_cancelled() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(flag.check(), Err(AgentError::Cancelled)));
        watcher.join().expect("watcher thread");
    }
}
