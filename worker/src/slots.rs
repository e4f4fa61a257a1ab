//! What each sequence slot is doing, as `/slots`, `/metrics` and the heartbeat show it.
//! The engine thread writes it; readers take a copy under a small lock.

use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotPhase {
    /// Free; its cache still holds the last sequence for prefix reuse.
    Idle,
    /// Running a request's prompt.
    Prompt,
    /// Generating a request's tokens.
    Generating,
}

/// One slot as `GET /slots` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    pub id: usize,
    pub state: SlotPhase,
    /// Tokens whose keys and values the slot's cache holds.
    pub tokens_cached: usize,
    /// The request it serves (the queen's job id), while it serves one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Every slot's view; empty until the model is loaded.
#[derive(Debug, Default)]
pub struct SlotTable {
    slots: Mutex<Vec<SlotView>>,
}

impl SlotTable {
    /// Sets up `count` idle slots.
    pub fn open(&self, count: usize) {
        *self.lock() = (0..count)
            .map(|id| SlotView {
                id,
                state: SlotPhase::Idle,
                tokens_cached: 0,
                request_id: None,
            })
            .collect();
    }

    pub fn update(&self, id: usize, state: SlotPhase, tokens_cached: usize, request: Option<&str>) {
        if let Some(slot) = self.lock().get_mut(id) {
            slot.state = state;
            slot.tokens_cached = tokens_cached;
            if slot.request_id.as_deref() != request {
                slot.request_id = request.map(str::to_owned);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<SlotView> {
        self.lock().clone()
    }

    /// Slots in all, and slots serving a request.
    pub fn counts(&self) -> (u32, u32) {
        let slots = self.lock();
        let busy = slots.iter().filter(|s| s.state != SlotPhase::Idle).count();
        (slots.len() as u32, busy as u32)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SlotView>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_updates() {
        let table = SlotTable::default();
        assert_eq!(table.counts(), (0, 0));
        table.open(3);
        table.update(1, SlotPhase::Prompt, 5, Some("job-1"));
        table.update(2, SlotPhase::Generating, 9, Some("job-2"));
        assert_eq!(table.counts(), (3, 2));
        table.update(2, SlotPhase::Idle, 12, None);
        let slots = table.snapshot();
        assert_eq!(table.counts(), (3, 1));
        assert_eq!(slots[2].tokens_cached, 12);
        assert_eq!(slots[2].request_id, None);
        assert_eq!(slots[1].request_id.as_deref(), Some("job-1"));
    }
}
