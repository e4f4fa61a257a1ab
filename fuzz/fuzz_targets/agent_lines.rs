//! What the queen reads from an agent's stdout: JSON lines, each a `JobEvent` or a line
//! the queen narrates as not one; and what the agent reads first on its stdin (the hub
//! settings line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbee_protocol::JobEvent;
use rbee_protocol::models::HubAccess;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(event) = serde_json::from_str::<JobEvent>(line) {
            let _ = serde_json::to_string(&event).expect("an event serializes");
        }
    }
    if let Some(first) = text.lines().next() {
        let _ = serde_json::from_str::<HubAccess>(first);
    }
});
