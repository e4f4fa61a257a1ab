//! The inventory: any text parses or fails with a place, and every host pattern over a
//! parsed inventory selects or fails cleanly.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbee_config::Inventory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line doubles as a host pattern.
    let pattern = text.lines().last().unwrap_or("all");
    if let Ok(inventory) = Inventory::parse(Path::new("inventory.toml"), text) {
        let _ = inventory.select(pattern);
        let _ = inventory.select("all");
    }
});
