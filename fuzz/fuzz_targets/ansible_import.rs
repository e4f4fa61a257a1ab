//! `inventory import`: any Ansible INI or YAML text converts or fails cleanly, and what
//! it converts to is an rbee inventory that parses.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbee_config::Inventory;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the format, as the file's extension would.
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let path = Path::new(if format % 2 == 0 {
        "hosts.ini"
    } else {
        "hosts.yml"
    });
    if let Ok(converted) = rbee_config::ansible::import(path, text) {
        if let Err(e) = Inventory::parse(Path::new("inventory.toml"), &converted) {
            panic!("the import is not an inventory: {e}\n{converted}");
        }
    }
});
