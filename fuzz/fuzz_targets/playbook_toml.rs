//! Playbooks: any text parses or fails with a place.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbee_config::playbook::Playbook;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Playbook::parse(Path::new("playbook.toml"), text);
});
