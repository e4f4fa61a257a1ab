//! The worker's live status, shared by the HTTP routes, the engine and the heartbeat.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rbee_protocol::WorkerState;

/// One owner of the worker's counters; the state lock is never held across `.await`.
pub struct WorkerStatus {
    state: Mutex<WorkerState>,
    queue_depth: AtomicU32,
    tokens_generated: AtomicU64,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            state: Mutex::new(WorkerState::Loading),
            queue_depth: AtomicU32::new(0),
            tokens_generated: AtomicU64::new(0),
        }
    }
}

impl WorkerStatus {
    pub fn state(&self) -> WorkerState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `next` unless the worker is already shutting down, which only moves on
    /// to `Stopping`.
    pub fn set_state(&self, next: WorkerState) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = match (*state, next) {
            (WorkerState::Draining | WorkerState::Stopping, WorkerState::Stopping) => true,
            (WorkerState::Draining | WorkerState::Stopping, _) => false,
            _ => true,
        };
        if allowed {
            *state = next;
        }
    }

    pub fn queue_depth(&self) -> u32 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    pub fn enqueued(&self) {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dequeued(&self) {
        self.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn tokens_generated(&self) -> u64 {
        self.tokens_generated.load(Ordering::Relaxed)
    }

    pub fn add_tokens(&self, n: u64) {
        self.tokens_generated.fetch_add(n, Ordering::Relaxed);
    }
}

/// The resident memory of this process, or 0 where it cannot be read.
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a constant of the running system.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_states_are_sticky() {
        let status = WorkerStatus::default();
        status.set_state(WorkerState::Ready);
        status.set_state(WorkerState::Draining);
        status.set_state(WorkerState::Ready);
        assert_eq!(status.state(), WorkerState::Draining);
        status.set_state(WorkerState::Stopping);
        assert_eq!(status.state(), WorkerState::Stopping);
    }
}
