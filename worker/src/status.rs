//! The worker's live status, shared by the HTTP routes, the engine and the heartbeat.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use rbee_protocol::WorkerState;

use crate::slots::SlotTable;

/// One owner of the worker's counters; the state lock is never held across `.await`.
pub struct WorkerStatus {
    state: Mutex<WorkerState>,
    /// How much of the weights the load has read, 0 to 100; `NO_PERCENT` when the
    /// engine cannot tell.
    load_percent: AtomicU8,
    queue_depth: AtomicU32,
    tokens_generated: AtomicU64,
    requests_done: AtomicU64,
    prompt_tokens_reused: AtomicU64,
    steps: AtomicU64,
    step_tokens: AtomicU64,
    /// Steps by the number of sequences they ran: `[i]` counts steps with at most
    /// `STEP_SEQUENCE_BUCKETS[i]`, the last one every other.
    step_sequences: [AtomicU64; STEP_SEQUENCE_BUCKETS.len() + 1],
    step_sequences_sum: AtomicU64,
    slots: SlotTable,
    /// The engine computing the tokens, once the model is loaded.
    engine: std::sync::OnceLock<String>,
}

const NO_PERCENT: u8 = u8::MAX;

/// Upper bounds of the sequences-per-step histogram's buckets.
pub const STEP_SEQUENCE_BUCKETS: [u64; 6] = [1, 2, 4, 8, 16, 32];

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            state: Mutex::new(WorkerState::Loading),
            load_percent: AtomicU8::new(NO_PERCENT),
            queue_depth: AtomicU32::new(0),
            tokens_generated: AtomicU64::new(0),
            requests_done: AtomicU64::new(0),
            prompt_tokens_reused: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_tokens: AtomicU64::new(0),
            step_sequences: Default::default(),
            step_sequences_sum: AtomicU64::new(0),
            slots: SlotTable::default(),
            engine: std::sync::OnceLock::new(),
        }
    }
}

/// A copy of the counters, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub queue_depth: u32,
    pub tokens_generated: u64,
    pub requests_done: u64,
    pub prompt_tokens_reused: u64,
    pub steps: u64,
    pub step_tokens: u64,
    /// Cumulative counts per bucket of [`STEP_SEQUENCE_BUCKETS`], then `+Inf`.
    pub step_sequences: Vec<u64>,
    pub step_sequences_sum: u64,
}

impl WorkerStatus {
    /// Notes the engine the loaded model runs on.
    pub fn set_engine(&self, engine: &str) {
        let _ = self.engine.set(engine.to_owned());
    }

    /// The engine the loaded model runs on; `None` while loading.
    pub fn engine(&self) -> Option<&str> {
        self.engine.get().map(String::as_str)
    }

    /// Notes how far the load has come: `done` of `total` bytes.
    pub fn set_load_progress(&self, done: u64, total: u64) {
        let percent = (done.min(total) * 100).checked_div(total).unwrap_or(100) as u8;
        self.load_percent.store(percent, Ordering::Relaxed);
    }

    /// How far the load has come while loading, if the engine said.
    pub fn load_percent(&self) -> Option<u8> {
        let percent = self.load_percent.load(Ordering::Relaxed);
        (percent != NO_PERCENT && self.state() == WorkerState::Loading).then_some(percent)
    }

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

    /// What each sequence slot is doing.
    pub fn slots(&self) -> &SlotTable {
        &self.slots
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

    pub fn requests_done(&self, n: u64) {
        self.requests_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn reused_prompt_tokens(&self, n: u64) {
        self.prompt_tokens_reused.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one engine step that ran `sequences` sequences and `tokens` tokens.
    pub fn stepped(&self, sequences: u64, tokens: u64) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_tokens.fetch_add(tokens, Ordering::Relaxed);
        self.step_sequences_sum
            .fetch_add(sequences, Ordering::Relaxed);
        let bucket = STEP_SEQUENCE_BUCKETS
            .iter()
            .position(|&bound| sequences <= bound)
            .unwrap_or(STEP_SEQUENCE_BUCKETS.len());
        self.step_sequences[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> Counters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let step_sequences = self
            .step_sequences
            .iter()
            .map(|b| {
                cumulative += load(b);
                cumulative
            })
            .collect();
        Counters {
            queue_depth: self.queue_depth(),
            tokens_generated: load(&self.tokens_generated),
            requests_done: load(&self.requests_done),
            prompt_tokens_reused: load(&self.prompt_tokens_reused),
            steps: load(&self.steps),
            step_tokens: load(&self.step_tokens),
            step_sequences,
            step_sequences_sum: load(&self.step_sequences_sum),
        }
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
    fn load_progress_shows_only_while_loading() {
        let status = WorkerStatus::default();
        assert_eq!(status.load_percent(), None, "nothing said yet");
        status.set_load_progress(1, 3);
        assert_eq!(status.load_percent(), Some(33));
        status.set_load_progress(5, 3);
        assert_eq!(status.load_percent(), Some(100));
        status.set_load_progress(0, 0);
        assert_eq!(status.load_percent(), Some(100));
        status.set_state(WorkerState::Ready);
        assert_eq!(status.load_percent(), None);
    }

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

    #[test]
    fn step_histogram_is_cumulative() {
        let status = WorkerStatus::default();
        status.stepped(1, 10);
        status.stepped(3, 3);
        status.stepped(40, 40);
        let c = status.counters();
        assert_eq!(c.steps, 3);
        assert_eq!(c.step_tokens, 53);
        assert_eq!(c.step_sequences_sum, 44);
        assert_eq!(c.step_sequences, vec![1, 1, 2, 2, 2, 2, 3]);
    }
}
